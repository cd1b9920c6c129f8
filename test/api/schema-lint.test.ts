// Lints the served GraphQL schema with graphql-schema-linter: every type, field, argument, enum
// value and input field has a description, and the connections follow the Relay spec.
import { createRequire } from 'node:module';
import { buildASTSchema, concatAST, parse, printSchema } from 'graphql';
import { describe, expect, it } from 'vitest';
import { apiTypeDefs } from '../../api/schema/index.js';

// graphql-schema-linter is CommonJS without types: load it with require and type what we use.
// It only ever receives SDL text, so its CommonJS copy of graphql and the ESM copy used here never meet.
interface Violation {
  ruleName?: string;
  message: string;
  locations?: { line: number; column: number }[];
}
interface AstNode {
  kind: string;
  name?: { value: string };
  type?: AstNode;
  fields?: AstNode[];
  loc?: unknown;
}
interface LintContext {
  reportError(e: Violation): void;
  getSchema(): { getType(name: string): { astNode?: AstNode | null } | undefined | null };
}
type LintRule = ((context: LintContext) => Record<string, unknown>) | ((configuration: unknown, context: LintContext) => Record<string, unknown>);
interface LinterConfiguration {
  getRules(): LintRule[];
  validate(): { message: string; type: string }[];
}
interface Linter {
  configuration: { Configuration: new (schema: LinterSchema, options: { rules: string[] }) => LinterConfiguration };
  validator: { validateSchemaDefinition(schema: LinterSchema, rules: LintRule[], configuration: LinterConfiguration): Violation[] };
  ValidationError: new (ruleName: string, message: string, nodes: unknown[]) => Violation;
}
interface LinterSchema {
  definition: string;
  sourceMap: unknown;
}

const require = createRequire(import.meta.url);
const linter = require('graphql-schema-linter') as Linter;
const { SourceMap } = require('graphql-schema-linter/lib/source_map.js') as { SourceMap: new (files: Record<string, string>) => unknown };

/** The linter's own rules: descriptions everywhere, and its three Relay rules. */
const BUILT_IN_RULES = [
  'types-have-descriptions',
  'fields-have-descriptions',
  'arguments-have-descriptions',
  'enum-values-have-descriptions',
  'input-object-values-have-descriptions',
  'relay-connection-types-spec',
  'relay-connection-arguments-spec',
  'relay-page-info-spec',
];

/** Unwraps NonNull; returns the inner node. */
const nullable = (t: AstNode): AstNode => (t.kind === 'NonNullType' ? t.type! : t);
const printType = (t: AstNode): string =>
  t.kind === 'NonNullType' ? `${printType(t.type!)}!` : t.kind === 'ListType' ? `[${printType(t.type!)}]` : t.name!.value;

/**
 * Relay edge types (the linter has no rule for them): the list items of a `…Connection.edges`
 * are an object type with a `node` that is not a list and a `cursor` that is a String.
 * https://relay.dev/graphql/connections.htm#sec-Edge-Types
 */
function RelayEdgeTypesSpec(context: LintContext) {
  const report = (message: string, node: AstNode) => context.reportError(new linter.ValidationError('relay-edge-types-spec', message, [node]));
  return {
    ObjectTypeDefinition(node: AstNode) {
      const typeName = node.name!.value;
      if (!typeName.endsWith('Connection')) return;
      const edges = node.fields?.find((f) => f.name!.value === 'edges');
      if (!edges) return; // relay-connection-types-spec reports it
      const list = nullable(edges.type!);
      if (list.kind !== 'ListType') return; // relay-connection-types-spec reports it
      const item = nullable(list.type!);
      if (item.kind !== 'NamedType') return report(`\`${typeName}.edges\` must be a list of edge objects, not \`${printType(edges.type!)}\`.`, edges);
      const edgeName = item.name!.value;
      const edgeType = context.getSchema().getType(edgeName)?.astNode;
      if (edgeType?.kind !== 'ObjectTypeDefinition') return report(`The edge type \`${edgeName}\` of \`${typeName}\` must be an object type.`, edges);
      const field = (n: string) => edgeType.fields?.find((f) => f.name!.value === n);
      const nodeField = field('node');
      if (!nodeField) report(`The edge type \`${edgeName}\` must have a \`node\` field.`, edgeType);
      else if (nullable(nodeField.type!).kind === 'ListType') report(`\`${edgeName}.node\` must not be a list.`, nodeField);
      const cursor = field('cursor');
      if (!cursor) report(`The edge type \`${edgeName}\` must have a \`cursor\` field.`, edgeType);
      else if (!['String', 'String!'].includes(printType(cursor.type!)))
        report(`\`${edgeName}.cursor\` must be a String, not \`${printType(cursor.type!)}\`.`, cursor);
    },
  };
}

/**
 * The cursor half of Relay's PageInfo (the linter's relay-page-info-spec checks only the two
 * booleans): `startCursor` and `endCursor`, each a String, null when the page is empty.
 * https://relay.dev/graphql/connections.htm#sec-undefined.PageInfo
 */
function RelayPageInfoCursors(context: LintContext) {
  return {
    ObjectTypeDefinition(node: AstNode) {
      if (node.name!.value !== 'PageInfo') return;
      for (const name of ['startCursor', 'endCursor']) {
        const f = node.fields?.find((x) => x.name!.value === name);
        const printed = f ? printType(f.type!) : undefined;
        if (printed !== 'String' && printed !== 'String!') {
          context.reportError(
            new linter.ValidationError(
              'relay-page-info-cursors',
              `\`PageInfo.${name}\` must exist and return a String (null when the page is empty), ${f ? `not \`${printed}\`` : 'but is missing'}.`,
              [f ?? node],
            ),
          );
        }
      }
    },
  };
}

const CUSTOM_RULES: LintRule[] = [RelayEdgeTypesSpec, RelayPageInfoCursors];

/** Builds the schema the API serves from SDL documents (with their `extend type`s) and prints it. */
function printServedSchema(typeDefs: string[]): string {
  return printSchema(buildASTSchema(concatAST(typeDefs.map((t) => parse(t)))));
}

/**
 * Lints SDL; one line per violation: `rule: message (printed schema line N)`. Inline `# lint-disable`
 * comments cannot hide anything: the SDL linted is the printed schema, which has no comments.
 */
function lint(sdl: string): string[] {
  const schema: LinterSchema = { definition: sdl, sourceMap: new SourceMap({ 'schema.graphql': sdl }) };
  const configuration = new linter.configuration.Configuration(schema, { rules: BUILT_IN_RULES });
  const problems = configuration.validate();
  if (problems.length) throw new Error(`graphql-schema-linter configuration: ${problems.map((p) => p.message).join('; ')}`);
  const rules = configuration.getRules();
  if (rules.length !== BUILT_IN_RULES.length) throw new Error(`graphql-schema-linter loaded ${rules.length} of the ${BUILT_IN_RULES.length} rules`);
  return linter.validator
    .validateSchemaDefinition(schema, [...rules, ...CUSTOM_RULES], configuration)
    .map((v) => `${v.ruleName ?? 'graphql'}: ${v.message}${v.locations?.[0] ? ` (printed schema line ${v.locations[0].line})` : ''}`);
}

describe('the served GraphQL schema', () => {
  it('describes every type, field, argument, enum value and input field, and follows the Relay connection spec', () => {
    const sdl = printServedSchema(apiTypeDefs);
    const violations = lint(sdl);
    expect(violations, `graphql-schema-linter found ${violations.length} violation(s):\n${violations.join('\n')}`).toEqual([]);
  });

  it('has PageInfo per the Relay spec', () => {
    const sdl = printServedSchema(apiTypeDefs);
    expect(sdl).toMatch(/hasPreviousPage: Boolean!/);
    expect(sdl).toMatch(/hasNextPage: Boolean!/);
    expect(sdl).toMatch(/startCursor: String\n/);
    expect(sdl).toMatch(/endCursor: String\n/);
  });
});

describe('the linter (so the test above cannot pass vacuously)', () => {
  const undescribed = /* GraphQL */ `
    type Query { things(first: Int, after: String, filter: Filter): ThingConnection! }
    enum Colour { RED }
    input Filter { colour: Colour }
    type Thing { id: ID! colour: Colour }
    type ThingEdge { node: [Thing!]! cursor: Int! }
    type ThingConnection { edges: [ThingEdge!]! }
    type PageInfo { hasNextPage: Boolean! endCursor: Int }
  `;

  it('reports each kind of violation in a deliberately undescribed, non-Relay SDL', () => {
    const violations = lint(printServedSchema([undescribed]));
    const rules = new Set(violations.map((v) => v.slice(0, v.indexOf(':'))));
    expect([...rules].sort()).toEqual(
      [
        'types-have-descriptions',
        'fields-have-descriptions',
        'arguments-have-descriptions',
        'enum-values-have-descriptions',
        'input-object-values-have-descriptions',
        'relay-connection-types-spec',
        'relay-page-info-spec',
        'relay-edge-types-spec',
        'relay-page-info-cursors',
      ].sort(),
    );
    expect(violations).toContainEqual(expect.stringContaining('fields-have-descriptions: The field `Query.things` is missing a description.'));
    expect(violations.filter((v) => v.startsWith('relay-edge-types-spec'))).toHaveLength(2);
  });

  it('reports a connection field without first/after or last/before', () => {
    const violations = lint(printServedSchema([`"q" type Query { "x" things: ThingConnection! } ${RELAY_OK}`]));
    expect(violations.map((v) => v.slice(0, v.indexOf(':')))).toEqual(['relay-connection-arguments-spec']);
  });

  it('passes a described Relay-conforming SDL', () => {
    const violations = lint(printServedSchema([`"q" type Query { "x" things("n" first: Int, "c" after: String): ThingConnection! } ${RELAY_OK}`]));
    expect(violations).toEqual([]);
  });
});

const RELAY_OK = /* GraphQL */ `
  "t" type Thing { "i" id: ID! }
  "e" type ThingEdge { "n" node: Thing! "c" cursor: String! }
  "c" type ThingConnection { "e" edges: [ThingEdge!]! "p" pageInfo: PageInfo! }
  "p" type PageInfo { "a" hasNextPage: Boolean! "b" hasPreviousPage: Boolean! "c" startCursor: String "d" endCursor: String }
`;
