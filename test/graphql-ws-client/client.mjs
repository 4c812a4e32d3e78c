// Subscribes to the live audit log with the npm graphql-ws client, as a
// browser or Node service would, and prints what it receives as JSON lines
// on stdout:
//
//   {"connected":true}                    once connection_ack arrives
//   {"cursor":"…","id":"…","action":"…"}  one line per event
//   {"error":[…]}                         if the server ends the stream
//
// It exits 0 after COUNT events (closing the connection), 1 on any error.
//
// Environment: URL (ws://host/query), TOKEN (a bearer token), COUNT (how
// many events before it leaves), AFTER (optional cursor to resume after).
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const { URL: url, TOKEN: token, AFTER: after, COUNT: count } = process.env;
if (!url || !token || !(Number(count) > 0)) {
  console.error('set URL, TOKEN and COUNT (and AFTER to resume)');
  process.exit(2);
}

const print = (v) => process.stdout.write(JSON.stringify(v) + '\n');

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
  lazy: false,
  on: { connected: () => print({ connected: true }) },
  onNonLazyError: (err) => fail(err),
});

let received = 0;
let done = false;

function finish(code) {
  if (done) return;
  done = true;
  client.dispose();
  // dispose closes the socket; let the close frame go out.
  setTimeout(() => process.exit(code), 50);
}

function fail(err) {
  print({ error: describe(err) });
  finish(1);
}

function describe(err) {
  if (Array.isArray(err)) return err;
  if (err && typeof err === 'object' && 'code' in err && 'reason' in err) {
    return { closeCode: err.code, reason: err.reason }; // a CloseEvent
  }
  return String(err && err.message ? err.message : err);
}

client.subscribe(
  {
    query: `subscription($after: String) {
      auditEventAdded(after: $after) { cursor node { id action } }
    }`,
    variables: after ? { after } : {},
  },
  {
    next: (result) => {
      if (result.errors) {
        fail(result.errors);
        return;
      }
      const { cursor, node } = result.data.auditEventAdded;
      print({ cursor, id: node.id, action: node.action });
      if (++received === Number(count)) finish(0);
    },
    error: fail,
    complete: () => {
      if (received < Number(count)) fail(`stream completed after ${received} of ${count} events`);
    },
  },
);
