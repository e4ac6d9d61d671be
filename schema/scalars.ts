import { DateTimeResolver, SafeIntResolver } from 'graphql-scalars';
import { builder } from './builder';

export const DateTime = builder.addScalarType('DateTime', DateTimeResolver);
export const SafeInt = builder.addScalarType('SafeInt', SafeIntResolver);
