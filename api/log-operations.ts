import { getOperationAST, Kind, type DocumentNode, type OperationDefinitionNode } from 'graphql';
import { isAsyncIterable, type Plugin } from 'graphql-yoga';
import type { Logger } from '../lib/logger.js';
import { addLogContext } from '../lib/telemetry/log-context.js';

/**
 * Puts the GraphQL operation (and the run it is about, when its variables or a mutation's result
 * name one) into the request's log context, so every line logged while it runs carries them; then
 * logs the operation: mutations (what operators change) at info, queries and subscriptions at debug.
 * Never logs variables or results (they may hold anything, tokens included).
 */
export function logOperations(logger: Logger): Plugin {
  const begin = (document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | null | undefined) => {
    const op = getOperationAST(document, operationName);
    const operation = operationLabel(op);
    const runId = runIdIn(variables);
    addLogContext({ ...(operation ? { operation } : {}), ...(runId ? { runId } : {}) });
    return { kind: op?.operation ?? 'query', operation };
  };
  return {
    onExecute({ args }) {
      const { kind, operation } = begin(args.document, args.operationName, args.variableValues);
      const t0 = performance.now();
      return {
        onExecuteDone({ result }) {
          if (isAsyncIterable(result)) return;
          // A mutation that started or changed a run answers with it: the line names it.
          const first = kind === 'mutation' && result.data ? Object.values(result.data)[0] : undefined;
          const runId = first && typeof first === 'object' ? runIdIn(first as Record<string, unknown>) : undefined;
          if (runId) addLogContext({ runId });
          const meta = {
            ms: Math.round(performance.now() - t0),
            ...(result.errors?.length
              ? { errors: result.errors.length, codes: [...new Set(result.errors.map((e) => String(e.extensions?.code ?? 'none')))] }
              : {}),
          };
          logger[kind === 'mutation' ? 'info' : 'debug'](`graphql ${kind} ${operation ?? '(anonymous)'}`, meta);
        },
      };
    },
    onSubscribe({ args }) {
      const { operation } = begin(args.document, args.operationName, args.variableValues);
      logger.debug(`graphql subscription ${operation ?? '(anonymous)'}`);
    },
  };
}

/** The operation's name, else its root fields (`{ run … }` → `run`). */
function operationLabel(op: OperationDefinitionNode | null | undefined): string | undefined {
  if (!op) return undefined;
  if (op.name) return op.name.value;
  const fields = op.selectionSet.selections.flatMap((s) => (s.kind === Kind.FIELD ? [s.name.value] : []));
  return fields.length ? fields.slice(0, 3).join(',') : undefined;
}

/** A run id among `id`/`runId` values (run ids are pipeline workflow ids: `pipeline/<name>/<id>`). */
function runIdIn(values: Record<string, unknown> | null | undefined): string | undefined {
  if (!values) return undefined;
  for (const k of ['runId', 'id']) {
    const v = values[k];
    if (typeof v === 'string' && /^pipeline\/[^/]+\/[^/]+$/.test(v) && !v.endsWith('/scheduled')) return v;
  }
  return undefined;
}
