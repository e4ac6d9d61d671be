// B1, what a user would pick instead: fastify + mercurius with graphql-jit, serving our committed SDL
// with an in-memory `submitMessage` (same signature and answer) that stores into a Map. graphql-ws is
// enabled with queries and mutations over the socket (fullWsTransport), for the WebSocket row.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Fastify from 'fastify';
import mercurius from 'mercurius';

interface SubmitArgs {
  metadata: { channel: string; messageNumber: number };
  message: Record<string, unknown>;
}

const store = new Map<string, unknown>();
const app = Fastify({ logger: false });
void app.register(mercurius, {
  schema: readFileSync(join(__dirname, '..', '..', '..', 'schema', 'schema.graphql'), 'utf8'),
  resolvers: {
    Mutation: {
      submitMessage: (_root: unknown, { metadata, message }: SubmitArgs) => {
        store.set(`${metadata.channel}#${metadata.messageNumber}`, message);
        return { status: 'APPLIED', channel: metadata.channel, messageNumber: metadata.messageNumber };
      },
    },
  },
  jit: 1,
  subscription: { fullWsTransport: true },
});
app.listen({ port: 0, host: '127.0.0.1' }).then(
  () => {
    const address = app.server.address();
    console.log(JSON.stringify({ msg: 'listening', port: typeof address === 'object' ? address?.port : undefined }));
  },
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
