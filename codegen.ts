import type { CodegenConfig } from '@graphql-codegen/cli';
import { printSchema } from 'graphql';
import { schema } from './schema/index';

/**
 * `npm run codegen`: prints the Pothos schema to `schema/schema.graphql` (types and fields in lexicographic
 * order) and types the test suite's operations. CI runs it and fails if either file changes, so the output
 * depends on nothing but the code: no timestamps, no environment.
 */
const config: CodegenConfig = {
  overwrite: true,
  // Codegen loads this file, and the Pothos schema it imports, through its own TypeScript loader (jiti): no
  // build step, no ts-node. The schema reaches codegen as SDL text, already sorted by `schema/index.ts`.
  schema: printSchema(schema),
  documents: ['test/graphql/operations.graphql'],
  generates: {
    'schema/schema.graphql': {
      plugins: ['schema-ast'],
    },
    'test/generated/graphql.ts': {
      plugins: ['typescript-operations', 'typed-document-node'],
      config: {
        strictScalars: true,
        scalars: { DateTime: 'string', SafeInt: 'number' },
        enumsAsTypes: true,
        useTypeImports: true,
        avoidOptionals: { field: true, inputValue: false, object: true, defaultValue: false },
        skipTypename: false,
        nonOptionalTypename: false,
      },
    },
  },
};

export default config;
