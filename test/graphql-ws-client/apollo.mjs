// Uses the service as a frontend does, with Apollo Client 3: one client
// whose HttpLink carries queries and mutations and whose GraphQLWsLink
// (the npm graphql-ws client) carries subscriptions. It prints what it gets
// as JSON lines on stdout:
//
//   {"headers":{…}}          client-awareness headers of the first request
//   {"query":{…}}            data of twoFactorSettings
//   {"connected":true}       once the websocket's connection_ack arrives
//   {"subscribed":{…}}       the event replayed after the older cursor: the
//                            stream runs, whatever is written now arrives
//   {"mutation":{…}}         data of updateDefaultSettings(input:{web:true})
//   {"event":{…}}            the DEFAULT_SETTINGS_CHANGED event it caused
//   {"forbidden":{…}}        the ApolloError of a user-role twoFactorSettings
//   {"error":…}              anything unexpected (then it exits 1)
//
// It exits 0 after the forbidden line, 1 on anything unexpected, and 1
// after 20 seconds whatever happens.
//
// The company's log needs at least two events (the Go test writes them):
// the subscription resumes after the older one, so the newer one is
// replayed, and once it has arrived the stream is live. The mutation is
// sent only then, so its event cannot be missed, with no sleep or retry.
//
// Environment: URL (http://host/query), WS_URL (ws://host/query), TOKEN
// (an admin's bearer token, for a company whose defaults.web is false),
// USER_TOKEN (a user-role token of the same company).
import { ApolloClient, HttpLink, InMemoryCache, gql, isApolloError, split } from '@apollo/client/core/index.js';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions/index.js';
import { getMainDefinition } from '@apollo/client/utilities/index.js';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const { URL: url, WS_URL: wsURL, TOKEN: token, USER_TOKEN: userToken } = process.env;
if (!url || !wsURL || !token || !userToken) {
  console.error('set URL, WS_URL, TOKEN and USER_TOKEN');
  process.exit(2);
}

const CLIENT_NAME = 'apollo-client-check';
const CLIENT_VERSION = '1.0.0';

const print = (v) => process.stdout.write(JSON.stringify(v) + '\n');

const cleanups = [];
let done = false;

function finish(code) {
  if (done) return;
  done = true;
  for (const f of cleanups) {
    try {
      f();
    } catch {
      // leaving anyway
    }
  }
  // Let the websocket's close frame go out.
  setTimeout(() => process.exit(code), 50);
}

function fail(err) {
  if (done) return;
  print({ error: describe(err) });
  finish(1);
}

function describe(err) {
  if (err && isApolloError(err)) {
    return {
      message: err.message,
      graphQLErrors: err.graphQLErrors,
      networkError: err.networkError ? String(err.networkError.message ?? err.networkError) : null,
    };
  }
  if (Array.isArray(err)) return err;
  if (err && typeof err === 'object' && 'code' in err && 'reason' in err) {
    return { closeCode: err.code, reason: err.reason }; // a CloseEvent
  }
  return String(err && err.message ? err.message : err);
}

const timer = setTimeout(() => fail('timed out after 20s'), 20_000);
cleanups.push(() => clearTimeout(timer));

// Records the headers of the first HTTP request, as the server got them.
let firstHeaders = null;
const recordingFetch = (input, init) => {
  if (!firstHeaders) {
    const h = new Headers(init?.headers);
    firstHeaders = {
      'apollographql-client-name': h.get('apollographql-client-name'),
      'apollographql-client-version': h.get('apollographql-client-version'),
      authorization: h.get('authorization') ? 'Bearer …' : null,
    };
  }
  return fetch(input, init);
};

function apolloClient(link) {
  return new ApolloClient({
    link,
    cache: new InMemoryCache(),
    // Apollo 3.14's spelling of the name/version options (the top-level
    // name and version are deprecated); both send the same headers.
    clientAwareness: { name: CLIENT_NAME, version: CLIENT_VERSION },
    defaultOptions: { query: { fetchPolicy: 'network-only' } },
  });
}

const httpLink = (bearer) =>
  new HttpLink({ uri: url, headers: { Authorization: `Bearer ${bearer}` }, fetch: recordingFetch });

const wsClient = createClient({
  url: wsURL,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
  on: { connected: () => print({ connected: true }) },
});
cleanups.push(() => wsClient.dispose());

const isSubscription = ({ query }) => {
  const def = getMainDefinition(query);
  return def.kind === 'OperationDefinition' && def.operation === 'subscription';
};

const client = apolloClient(split(isSubscription, new GraphQLWsLink(wsClient), httpLink(token)));
cleanups.push(() => client.stop());

const SETTINGS = gql`
  query Settings {
    twoFactorSettings {
      general { deliveryMethod }
      defaults { web manager }
    }
  }
`;

// The log is newest first.
const NEWEST_TWO = gql`
  query NewestTwo {
    auditLog(first: 2) { edges { cursor node { id } } }
  }
`;

const EVENTS = gql`
  subscription Events($after: String) {
    auditEventAdded(after: $after) { cursor node { id action } }
  }
`;

const WEB_ON = gql`
  mutation WebOn {
    updateDefaultSettings(input: { web: true }) {
      settings { defaults { web } }
      userErrors { code }
    }
  }
`;

// Apollo adds __typename to every selection; the lines leave it out.
const plain = (v) => JSON.parse(JSON.stringify(v, (k, x) => (k === '__typename' ? undefined : x)));

async function main() {
  const settings = await client.query({ query: SETTINGS });
  print({ headers: firstHeaders });
  print({ query: plain(settings.data) });

  const { data: log } = await client.query({ query: NEWEST_TWO });
  const edges = log.auditLog.edges;
  if (edges.length !== 2) {
    throw new Error(`the audit log has ${edges.length} events, want at least 2 to resume from`);
  }
  const [newer, older] = edges;

  // The mutation goes out once the replayed event has arrived; the event it
  // causes and its own response may come in either order.
  let mutated;
  const event = await new Promise((resolve, reject) => {
    const sub = client.subscribe({ query: EVENTS, variables: { after: older.cursor } }).subscribe({
      next: (result) => {
        if (result.errors?.length) {
          reject(result.errors);
          return;
        }
        const { cursor, node } = result.data.auditEventAdded;
        const line = { cursor, id: node.id, action: node.action };
        if (mutated) {
          sub.unsubscribe();
          resolve(line);
          return;
        }
        if (node.id !== newer.node.id) {
          reject(new Error(`first event ${node.id}, want the replayed ${newer.node.id}`));
          return;
        }
        print({ subscribed: line });
        mutated = client.mutate({ mutation: WEB_ON });
        mutated.catch(reject);
      },
      error: reject,
      complete: () => reject(new Error('the subscription completed')),
    });
    cleanups.push(() => sub.unsubscribe());
  });

  const { data } = await mutated;
  print({ mutation: plain(data) });
  const payload = data.updateDefaultSettings;
  if (payload.userErrors.length || payload.settings?.defaults?.web !== true) {
    throw new Error('the mutation did not turn web on');
  }
  print({ event });
  if (event.action !== 'DEFAULT_SETTINGS_CHANGED') {
    throw new Error(`event ${event.action}, want DEFAULT_SETTINGS_CHANGED`);
  }

  // A user may not read the company settings: Apollo rejects with an
  // ApolloError carrying the server's extensions.code.
  const userClient = apolloClient(httpLink(userToken));
  cleanups.push(() => userClient.stop());
  let refused;
  try {
    await userClient.query({ query: SETTINGS });
  } catch (err) {
    refused = err;
  }
  if (!refused || !isApolloError(refused)) {
    throw new Error(`a user's twoFactorSettings gave ${refused ? JSON.stringify(describe(refused)) : 'data'}, want an ApolloError`);
  }
  const first = refused.graphQLErrors?.[0];
  print({
    forbidden: {
      name: refused.name,
      code: first?.extensions?.code ?? null,
      path: first?.path ?? null,
      message: first?.message ?? null,
    },
  });
  if (first?.extensions?.code !== 'FORBIDDEN') {
    throw new Error(`code ${first?.extensions?.code}, want FORBIDDEN`);
  }
}

main().then(() => finish(0), fail);
