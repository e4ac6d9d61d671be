/**
 * Which executions graphql-jit runs, worked out once per document: compiled execution pays only for
 * documents sent again, and never for what graphql-jit would answer differently from graphql-js.
 */
import { useGraphQlJit } from '@envelop/graphql-jit';
import {
  getNamedType,
  isInputObjectType,
  isListType,
  isNonNullType,
  Kind,
  OperationTypeNode,
  typeFromAST,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLInputObjectType,
  type GraphQLInputType,
  type GraphQLSchema,
  type OperationDefinitionNode,
} from 'graphql';
import { isAsyncIterable, type Plugin, type PromiseOrValue } from 'graphql-yoga';

/** An executor as envelop hands it over: graphql-js's, or one that stands in for it. */
type Execute = (args: ExecutionArgs) => PromiseOrValue<ExecutionResult>;

/** Per input object type, its fields whose type holds a `@oneOf` input object somewhere: all a check walks. */
const oneOfFields = new WeakMap<GraphQLInputObjectType, ReadonlyArray<readonly [string, GraphQLInputType]>>();
/** Input object types whose `oneOfFields` are being worked out (input types may be recursive). */
const working = new Set<GraphQLInputObjectType>();

function fieldsHoldingOneOf(type: GraphQLInputObjectType): ReadonlyArray<readonly [string, GraphQLInputType]> {
  let fields = oneOfFields.get(type);
  if (fields === undefined) {
    working.add(type);
    fields = Object.values(type.getFields())
      .filter((f) => holdsOneOf(f.type))
      .map((f) => [f.name, f.type] as const);
    working.delete(type);
    oneOfFields.set(type, fields);
  }
  return fields;
}

function holdsOneOf(type: GraphQLInputType): boolean {
  const named = getNamedType(type);
  if (!isInputObjectType(named)) return false;
  // A type met again inside itself counts as holding one: walking it is only wasted, skipping it could miss one.
  return named.isOneOf || working.has(named) || fieldsHoldingOneOf(named).length > 0;
}

/**
 * Whether an input value breaks a `@oneOf` input object anywhere inside it (not exactly one field, or that
 * field null). graphql-js refuses such variables while coercing them; graphql-jit's compiled coercion does
 * not check `@oneOf`, so such a request is left to graphql-js, which answers it as before.
 */
function breaksOneOf(type: GraphQLInputType, value: unknown): boolean {
  if (value === null || value === undefined) return false;
  if (isNonNullType(type)) return breaksOneOf(type.ofType, value);
  if (isListType(type)) {
    const item = type.ofType;
    return Array.isArray(value) ? value.some((v) => breaksOneOf(item, v)) : breaksOneOf(item, value);
  }
  if (!isInputObjectType(type) || typeof value !== 'object') return false;
  const given = value as Record<string, unknown>;
  if (type.isOneOf) {
    let count = 0;
    for (const name in given) {
      if (++count > 1 || given[name] === null || type.getFields()[name] === undefined) return true;
    }
    if (count !== 1) return true;
  }
  for (const [name, fieldType] of fieldsHoldingOneOf(type)) if (breaksOneOf(fieldType, given[name])) return true;
  return false;
}

/** What deciding on graphql-jit needs of a document, worked out once per document. */
interface JitPlan {
  /** The document's operation when it holds exactly one that is a query or a mutation. */
  readonly operation: OperationDefinitionNode | undefined;
  /** Its variables whose type holds a `@oneOf` input object: their values are checked per request. */
  readonly oneOfVariables: ReadonlyArray<readonly [string, GraphQLInputType]>;
  /** Executions so far. */
  runs: number;
}
const jitPlans = new WeakMap<DocumentNode, JitPlan>();

function jitPlanOf(schema: GraphQLSchema, document: DocumentNode): JitPlan {
  let plan = jitPlans.get(document);
  if (plan === undefined) {
    const op = soleOperation(document);
    const operation = op && op.operation !== OperationTypeNode.SUBSCRIPTION ? op : undefined;
    const oneOfVariables = (operation?.variableDefinitions ?? []).flatMap((def) => {
      const type = typeFromAST(schema, def.type) as GraphQLInputType | undefined;
      return type && holdsOneOf(type) ? [[def.variable.name.value, type] as const] : [];
    });
    plan = { operation, oneOfVariables, runs: 0 };
    jitPlans.set(document, plan);
  }
  return plan;
}

/** The operations of a document, in order. */
export const operationsOf = (document: DocumentNode): OperationDefinitionNode[] =>
  document.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);

/** The one operation of a document, if it holds exactly one; undefined otherwise. */
function soleOperation(document: DocumentNode): OperationDefinitionNode | undefined {
  const ops = operationsOf(document);
  return ops.length === 1 ? ops[0] : undefined;
}

/**
 * Which executions graphql-jit runs: queries and mutations of a document holding just that operation, from
 * its second execution on (compiling costs about what parsing and validating do, a millisecond: a document
 * sent once, as every one of a flood of distinct documents is, is not worth it). The plugin keeps one
 * compiled query per document, whatever the operation name, so a document with several operations (or an
 * operation name it does not hold) stays on graphql-js; subscriptions too (their source streams and the
 * live feeds stay on the path they were built and tested with). Variables that break a `@oneOf` input also
 * stay on graphql-js, whose coercion refuses them (see `breaksOneOf`).
 */
export function jitFits(args: ExecutionArgs): boolean {
  const plan = jitPlanOf(args.schema, args.document);
  const { operation, oneOfVariables } = plan;
  if (!operation || ++plan.runs < 2) return false;
  if (args.operationName != null && args.operationName !== operation.name?.value) return false;
  const variables = args.variableValues;
  if (variables) for (const [name, type] of oneOfVariables) if (breaksOneOf(type, variables[name])) return false;
  return true;
}

/**
 * Whether graphql-jit refused a request before running anything: errors and no `data` at all, which it
 * answers only when the variables do not coerce (or the document did not compile).
 */
const refusedBeforeRunning = (result: unknown): boolean =>
  !isAsyncIterable(result) &&
  typeof result === 'object' &&
  result !== null &&
  !('data' in result) &&
  ((result as ExecutionResult).errors?.length ?? 0) > 0;

/**
 * A result with its `errors` ahead of its `data`, as graphql-js builds it; graphql-jit puts them after. An
 * answer with errors is never kept, so each is executed again, and its bytes (and its ETag, for a GET)
 * must not change between its first execution, by graphql-js, and the later ones, by graphql-jit.
 */
const inGraphQlJsOrder = <R>(result: R): R => {
  if (typeof result !== 'object' || result === null || !('errors' in result) || isAsyncIterable(result)) return result;
  const { errors, ...rest } = result;
  return { errors, ...rest } as R;
};

/**
 * graphql-jit for the executions `jitFits` chooses, answering as graphql-js does when it refuses the
 * variables. graphql-jit's compiled coercion words a refusal its own way: it names the innermost field
 * as if it were a variable (`Variable "$messageNumber"` for the `messageNumber` of `$metadata`) and
 * drops where in the variable the value was and why the scalar refused it. Such an answer is given up
 * and the request run by the executor graphql-jit replaced, so a request is answered alike on its
 * first execution and every later one; only a refused request pays for the second run.
 */
export function useGraphQlJitWhereItFits(onError: (compilation: unknown) => void): Plugin {
  const jit = useGraphQlJit({}, { enableIf: jitFits, onError });
  return {
    onExecute(payload) {
      const before: Execute = payload.executeFn;
      return jit.onExecute?.({
        ...payload,
        setExecuteFn: (compiled: Execute) => {
          payload.setExecuteFn((args: ExecutionArgs) => {
            const result = compiled(args);
            if (result instanceof Promise)
              return result.then((r) => (refusedBeforeRunning(r) ? before(args) : inGraphQlJsOrder(r)));
            return refusedBeforeRunning(result) ? before(args) : inGraphQlJsOrder(result);
          });
        },
      });
    },
    onSubscribe: jit.onSubscribe,
  };
}
