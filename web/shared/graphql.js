// A small GraphQL client for the pages: queries and mutations over POST,
// subscriptions over graphql-transport-ws (the graphql-ws library, loaded
// as the global graphqlWs by a <script> before this module).

// GraphQLRequestError carries the errors of a failed request; code is the
// first error's extensions.code.
export class GraphQLRequestError extends Error {
  constructor(errors, status) {
    super((errors[0] && errors[0].message) || 'request failed');
    this.errors = errors;
    this.status = status;
    this.code = (errors[0] && errors[0].extensions && errors[0].extensions.code) || 'UNKNOWN';
  }
}

// websocketURL is the ws(s):// address of endpoint on this page's host.
export function websocketURL(endpoint) {
  const u = new URL(endpoint, location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

// createClient returns a client that sends token on every request.
// request resolves with data or rejects with GraphQLRequestError (a partial
// result's errors reject too). subscribe returns a function that stops it.
// on, if given, is graphql-ws's event listeners for the socket (e.g.
// { connected() {}, closed(ev) {} }), to show a connection's state.
export function createClient({ endpoint, token, on }) {
  let ws = null;
  const auth = token ? { Authorization: 'Bearer ' + token } : {};
  return {
    async request(query, variables) {
      let res;
      try {
        res = await fetch(endpoint, {
          method: 'POST',
          headers: Object.assign({ 'Content-Type': 'application/json' }, auth),
          body: JSON.stringify({ query, variables }),
        });
      } catch (e) {
        throw new GraphQLRequestError([{ message: 'the service cannot be reached', extensions: { code: 'NETWORK' } }], 0);
      }
      let body;
      try {
        body = await res.json();
      } catch {
        throw new GraphQLRequestError([{ message: 'unexpected answer (HTTP ' + res.status + ')', extensions: { code: 'BAD_RESPONSE' } }], res.status);
      }
      if (body.errors && body.errors.length) throw new GraphQLRequestError(body.errors, res.status);
      return body.data;
    },
    // download GETs path on the endpoint's server with the token and
    // resolves with the body; an error answer rejects as request does, and
    // so does a transfer the server cut off (a failed export).
    async download(path) {
      const url = new URL(path, new URL(endpoint, location.href));
      let res;
      try {
        res = await fetch(url, { headers: auth });
      } catch (e) {
        throw new GraphQLRequestError([{ message: 'the service cannot be reached', extensions: { code: 'NETWORK' } }], 0);
      }
      if (!res.ok) {
        let body = null;
        try {
          body = await res.json();
        } catch {
          // not the service's JSON error
        }
        const errors = body && body.errors && body.errors.length ? body.errors
          : [{ message: 'unexpected answer (HTTP ' + res.status + ')', extensions: { code: 'BAD_RESPONSE' } }];
        throw new GraphQLRequestError(errors, res.status);
      }
      try {
        return await res.blob();
      } catch {
        throw new GraphQLRequestError([{ message: 'The download was cut off by the service; nothing was saved. Try again.', extensions: { code: 'DOWNLOAD_CUT_OFF' } }], res.status);
      }
    },
    // subscribe runs one subscription; sink gets next(data), error(err)
    // and complete(). The socket does not retry on its own: a caller that
    // resumes must resubscribe from its last cursor, or it would replay.
    subscribe(query, variables, sink) {
      if (!ws) {
        ws = globalThis.graphqlWs.createClient({
          url: websocketURL(endpoint),
          connectionParams: auth,
          retryAttempts: 0,
          lazy: true,
          on,
        });
      }
      return ws.subscribe({ query, variables }, {
        next: (r) => (r.errors && r.errors.length ? sink.error(new GraphQLRequestError(r.errors, 200)) : sink.next(r.data)),
        error: (e) => sink.error(Array.isArray(e) ? new GraphQLRequestError(e, 200) : e instanceof Error ? e : closeError(e)),
        complete: () => sink.complete(),
      });
    },
    close() {
      if (ws) ws.dispose();
      ws = null;
    },
  };
}

// closeError describes a websocket CloseEvent.
function closeError(ev) {
  const code = ev && ev.code;
  const reason = (ev && ev.reason) || 'connection closed';
  const err = new GraphQLRequestError([{ message: reason, extensions: { code: code === 4403 ? 'FORBIDDEN' : 'DISCONNECTED' } }], 0);
  err.closeCode = code;
  return err;
}

// operationType tells which kind of operation in document runs under
// operationName ("query", "mutation" or "subscription"), without a full
// parser: comments and strings are blanked, then only top-level tokens
// are read.
export function operationType(document, operationName) {
  const src = String(document).replace(/"""[\s\S]*?"""|"(?:[^"\\\n]|\\.)*"|#[^\n\r]*/g, ' ');
  const ops = [];
  let braces = 0;
  let parens = 0;
  let cur = null;
  let wantName = false;
  for (const [t] of src.matchAll(/[{}()]|[_A-Za-z][_0-9A-Za-z]*/g)) {
    if (t === '(') { parens++; wantName = false; continue; }
    if (t === ')') { parens--; continue; }
    if (parens > 0) continue;
    if (t === '{') {
      if (braces === 0 && !cur) { cur = { type: 'query', name: null }; ops.push(cur); }
      braces++;
      wantName = false;
      continue;
    }
    if (t === '}') { if (--braces === 0) cur = null; continue; }
    if (braces > 0) continue;
    if (wantName) { cur.name = t; wantName = false; continue; }
    if (!cur && /^(query|mutation|subscription|fragment)$/.test(t)) {
      cur = { type: t, name: null };
      wantName = true;
      if (t !== 'fragment') ops.push(cur);
    }
  }
  const op = operationName ? ops.find((o) => o.name === operationName) : ops.length === 1 ? ops[0] : null;
  return op ? op.type : 'query';
}
