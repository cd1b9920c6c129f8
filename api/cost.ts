// A document's cost with list sizes counted: what one request can make the server fetch. GraphQL
// Armor's costLimit adds a fixed cost per field whatever the page size, so `runs(first: 100)` with
// nested `stages { params }` under 20 aliases costs the same as `runs(first: 1)`. Here a field that
// takes a size argument (first, last, limit) multiplies what is selected under it by that size
// (its schema default when the argument is left out), and any other list multiplies by
// DEFAULT_LIST_SIZE. It is checked when the operation runs, with its variables, so a size passed
// as `$n` counts too.
// graphql's own type predicates (isObjectType, valueFromAST…) are not used: graphql ships CJS and
// ESM builds and yoga's schema may come from the other one, which those predicates refuse.
import {
  Kind,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLType,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValueNode,
} from 'graphql';

/** Arguments that bound how many items a list field returns. */
const SIZE_ARGS = ['first', 'last', 'limit'];

/** What an unsized list (e.g. a run's stages) is assumed to hold. */
export const DEFAULT_LIST_SIZE = 10;

interface Walk {
  schema: GraphQLSchema;
  fragments: Map<string, FragmentDefinitionNode>;
  variables: Record<string, unknown>;
}

/** The cost of the operation that would run (named, or the only one); 0 when there is none. */
export function listCost(schema: GraphQLSchema, document: DocumentNode, variables: Record<string, unknown> = {}, operationName?: string | null): number {
  const ops = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const op = operationName ? ops.find((o) => o.name?.value === operationName) : ops.length === 1 ? ops[0] : undefined;
  if (!op) return 0;
  const root = op.operation === 'query' ? schema.getQueryType() : op.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();
  if (!root) return 0;
  const fragments = new Map(document.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION).map((f) => [f.name.value, f]));
  // An omitted variable takes its default from the operation.
  const values: Record<string, unknown> = {};
  for (const v of op.variableDefinitions ?? []) if (v.defaultValue?.kind === Kind.INT) values[v.variable.name.value] = Number(v.defaultValue.value);
  return selectionCost({ schema, fragments, variables: { ...values, ...variables } }, op.selectionSet, root, false, new Set());
}

/**
 * Each field costs 1 plus its selection times its size. `sizedParent`: the field above took a
 * size argument but returns an object (a connection): its edges/nodes list is that size, counted once.
 */
function selectionCost(w: Walk, set: SelectionSetNode, type: GraphQLType, sizedParent: boolean, seen: Set<string>): number {
  let sum = 0;
  for (const sel of set.selections) {
    if (sel.kind === Kind.FIELD) {
      if (sel.name.value.startsWith('__')) continue; // introspection: fixed size, and Armor bounds its depth
      const field = fieldsOf(type)?.[sel.name.value];
      if (!field) continue;
      const size = sizeOf(w, field, sel.arguments ?? []);
      const list = String(field.type).startsWith('[');
      const mult = size ?? (list ? (sizedParent ? 1 : DEFAULT_LIST_SIZE) : 1);
      const inner = sel.selectionSet ? selectionCost(w, sel.selectionSet, namedType(field.type), size !== undefined && !list, seen) : 0;
      sum += 1 + mult * inner;
    } else if (sel.kind === Kind.INLINE_FRAGMENT) {
      const t = sel.typeCondition ? (w.schema.getType(sel.typeCondition.name.value) ?? type) : type;
      sum += selectionCost(w, sel.selectionSet, t, sizedParent, seen);
    } else {
      const f = w.fragments.get(sel.name.value);
      if (!f || seen.has(f.name.value)) continue; // a cycle is a validation error already
      const t = w.schema.getType(f.typeCondition.name.value) ?? type;
      sum += selectionCost(w, f.selectionSet, t, sizedParent, new Set([...seen, f.name.value]));
    }
  }
  return sum;
}

/** The fields of an object or interface type; undefined for a union (only __typename is selectable on it). */
function fieldsOf(type: GraphQLType): Record<string, GraphQLField<unknown, unknown>> | undefined {
  return 'getFields' in type ? (type.getFields() as Record<string, GraphQLField<unknown, unknown>>) : undefined;
}

/** The named type under list and non-null wrappers. */
function namedType(type: GraphQLType): GraphQLType {
  let t = type;
  while ('ofType' in t && t.ofType) t = t.ofType as GraphQLType;
  return t;
}

/** The field's size argument as given (literal or variable), else its default; undefined when it takes none. */
function sizeOf(w: Walk, field: GraphQLField<unknown, unknown>, args: readonly { name: { value: string }; value: ValueNode }[]): number | undefined {
  for (const name of SIZE_ARGS) {
    const def = field.args.find((a) => a.name === name);
    if (!def) continue;
    const given = args.find((a) => a.name.value === name);
    const v = given
      ? given.value.kind === Kind.INT
        ? Number(given.value.value)
        : given.value.kind === Kind.VARIABLE
          ? w.variables[given.value.name.value]
          : undefined
      : undefined;
    const size = v ?? def.defaultValue;
    return typeof size === 'number' && Number.isFinite(size) && size > 0 ? size : 1;
  }
  return undefined;
}
