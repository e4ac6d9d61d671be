import { lexicographicSortSchema } from 'graphql';
import { builder } from './builder';
import './scalars';
import './event';
import './rocket';
import './submit';

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});

/** The whole GraphQL schema, types in lexicographic order (as `schema.graphql` prints it). */
export const schema = lexicographicSortSchema(builder.toSchema());
