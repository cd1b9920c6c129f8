import { z } from 'zod';

/** The stage protocol this worker speaks (docs/stage-protocol.md). */
export const STAGE_PROTOCOL_VERSION = 1;

/** Longest message line read from a stage process. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Largest `details` a checkpoint or heartbeat may carry (they travel through Temporal). */
export const MAX_DETAILS_BYTES = 64 * 1024;

const smallObject = z
  .record(z.string(), z.unknown())
  .refine((o) => JSON.stringify(o).length <= MAX_DETAILS_BYTES, { message: `must be at most ${MAX_DETAILS_BYTES} bytes as JSON` });
const finite = z.number().refine(Number.isFinite, { message: 'must be a finite number' });

export const stageMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('open'), protocol: z.number().int(), sdk: z.string().max(200).optional() }),
  z.object({
    type: z.literal('log'),
    level: z.enum(['debug', 'info', 'warn', 'warning', 'error']).default('info'),
    message: z.string().max(64 * 1024),
    fields: z.record(z.string(), z.unknown()).optional(),
  }),
  z.object({
    type: z.literal('epoch'),
    epoch: z.number().int().min(1),
    epochs: z.number().int().min(1).optional(),
    metrics: z.record(z.string(), z.number()).default({}),
  }),
  z.object({ type: z.literal('checkpoint'), path: z.string().min(1).max(4096), details: smallObject.default({}) }),
  z.object({ type: z.literal('heartbeat'), details: smallObject.optional() }),
  z.object({ type: z.literal('metrics'), metrics: z.record(z.string(), z.union([z.number(), z.string().max(1000), z.boolean()])) }),
  z.object({ type: z.literal('usage'), gpuSeconds: finite.min(0).optional() }),
  z.object({ type: z.literal('output'), kind: z.string().min(1).max(100), meta: smallObject.optional() }),
  z.object({
    type: z.literal('error'),
    error: z.object({
      type: z.string().min(1).max(200).default('StageError'),
      message: z.string().max(64 * 1024),
      retryable: z.boolean().default(true),
      badInput: z.boolean().default(false),
      traceback: z
        .string()
        .max(64 * 1024)
        .optional(),
    }),
  }),
]);

export type StageMessage = z.infer<typeof stageMessageSchema>;

/** What one line on the message pipe says: a message, a type this worker does not know, or a protocol error. */
export type ParsedLine = { ok: true; message: StageMessage } | { ok: true; unknownType: string } | { ok: false; problem: string };

const KNOWN = new Set(stageMessageSchema.options.map((o) => o.shape.type.value as string));

export function parseMessageLine(line: string): ParsedLine {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { ok: false, problem: `a message line is not JSON: ${JSON.stringify(line.slice(0, 120))}` };
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return { ok: false, problem: 'a message is not a JSON object' };
  const type = (raw as { type?: unknown }).type;
  if (typeof type !== 'string') return { ok: false, problem: 'a message has no "type"' };
  if (!KNOWN.has(type)) return { ok: true, unknownType: type.slice(0, 100) };
  const parsed = stageMessageSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { ok: false, problem: `a "${type}" message is malformed: ${issue.path.join('.') || '(message)'}: ${issue.message}` };
  }
  return { ok: true, message: parsed.data };
}
