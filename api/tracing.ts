// One span per GraphQL query or mutation (issue 22): `graphql.mutation startPipeline`, with the
// operation's name and type. Resolvers run inside it, so the Temporal client's StartWorkflow span
// (and through it the run's workflow) is its child. Subscriptions are long streams, not requests:
// they get no span. With tracing off the plugin passes execution through untouched.
import { getOperationAST, Kind, type OperationDefinitionNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { tracingEnabled, withSpan } from '../lib/telemetry/tracing.js';

export function traceOperations(): Plugin {
  return {
    onExecute({ args, executeFn, setExecuteFn }) {
      if (!tracingEnabled()) return;
      const op = getOperationAST(args.document, args.operationName);
      if (!op || op.operation === 'subscription') return;
      const name = operationName(op);
      setExecuteFn((a) =>
        withSpan(
          `graphql.${op.operation} ${name}`,
          { 'graphql.operation.type': op.operation, 'graphql.operation.name': name },
          async () => executeFn(a) as never,
        ),
      );
    },
  };
}

/** The operation's own name; an anonymous one is named after its first root field (`mutation { startPipeline … }`). */
function operationName(op: OperationDefinitionNode): string {
  if (op.name) return op.name.value;
  const first = op.selectionSet.selections.find((s) => s.kind === Kind.FIELD);
  return first && first.kind === Kind.FIELD ? first.name.value : 'anonymous';
}
