// A small JSON Schema check (the subset zod's JSON Schema output uses) so the decision form can
// say what is wrong with edited params before they are sent; the API checks them again.

export interface SchemaIssue {
  path: string;
  message: string;
}

type Schema = Record<string, unknown>;

export function validate(schema: Schema, value: unknown, path = 'params'): SchemaIssue[] {
  const out: SchemaIssue[] = [];
  check(schema, value, path, out);
  return out;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeMatches(want: string, got: string): boolean {
  return want === got || (want === 'number' && got === 'integer');
}

function check(s: Schema | boolean, v: unknown, path: string, out: SchemaIssue[]): void {
  if (s === true || s === undefined) return;
  if (s === false) return void out.push({ path, message: 'is not allowed' });
  for (const key of ['anyOf', 'oneOf'] as const) {
    if (Array.isArray(s[key])) {
      const ok = (s[key] as Schema[]).some((x) => validate(x, v, path).length === 0);
      if (!ok) out.push({ path, message: 'matches none of the allowed shapes' });
    }
  }
  if (Array.isArray(s.allOf)) for (const x of s.allOf) check(x, v, path, out);
  const got = typeOf(v);
  if (s.type !== undefined) {
    const types: string[] = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => typeMatches(t, got))) return void out.push({ path, message: `must be ${types.join(' or ')}, not ${got}` });
  }
  if (s.const !== undefined && JSON.stringify(s.const) !== JSON.stringify(v)) out.push({ path, message: `must be ${JSON.stringify(s.const)}` });
  if (Array.isArray(s.enum) && !s.enum.some((e: unknown) => JSON.stringify(e) === JSON.stringify(v)))
    out.push({ path, message: `must be one of ${s.enum.map((e: unknown) => JSON.stringify(e)).join(', ')}` });
  if (typeof v === 'number') {
    if (typeof s.minimum === 'number' && v < s.minimum) out.push({ path, message: `must be ≥ ${s.minimum}` });
    if (typeof s.maximum === 'number' && v > s.maximum) out.push({ path, message: `must be ≤ ${s.maximum}` });
    if (typeof s.exclusiveMinimum === 'number' && v <= s.exclusiveMinimum) out.push({ path, message: `must be > ${s.exclusiveMinimum}` });
    if (typeof s.exclusiveMaximum === 'number' && v >= s.exclusiveMaximum) out.push({ path, message: `must be < ${s.exclusiveMaximum}` });
  }
  if (typeof v === 'string') {
    if (typeof s.minLength === 'number' && v.length < s.minLength) out.push({ path, message: `must have at least ${s.minLength} characters` });
    if (typeof s.maxLength === 'number' && v.length > s.maxLength) out.push({ path, message: `must have at most ${s.maxLength} characters` });
    if (typeof s.pattern === 'string' && !new RegExp(s.pattern, 'u').test(v)) out.push({ path, message: `must match ${s.pattern}` });
  }
  if (Array.isArray(v)) {
    if (typeof s.minItems === 'number' && v.length < s.minItems) out.push({ path, message: `must have at least ${s.minItems} items` });
    if (typeof s.maxItems === 'number' && v.length > s.maxItems) out.push({ path, message: `must have at most ${s.maxItems} items` });
    if (s.items && typeof s.items === 'object') v.forEach((x, i) => check(s.items as Schema, x, `${path}[${i}]`, out));
  }
  if (got === 'object') {
    const o = v as Record<string, unknown>;
    const props = (s.properties as Record<string, Schema> | undefined) ?? {};
    for (const r of (s.required as string[] | undefined) ?? []) if (!(r in o)) out.push({ path: `${path}.${r}`, message: 'is required' });
    for (const [k, x] of Object.entries(o)) {
      if (props[k]) check(props[k]!, x, `${path}.${k}`, out);
      else if (s.additionalProperties === false) out.push({ path: `${path}.${k}`, message: 'is not a known param' });
      else if (s.additionalProperties && typeof s.additionalProperties === 'object') check(s.additionalProperties as Schema, x, `${path}.${k}`, out);
    }
  }
}
