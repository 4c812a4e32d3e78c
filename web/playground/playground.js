// GraphiQL against this service: queries and mutations over POST,
// subscriptions (named or anonymous) over graphql-transport-ws with the
// Headers pane's Authorization in connection_init.
import { pageConfig } from '/assets/shared/session.js';
import { operationType, websocketURL } from '/assets/shared/graphql.js';

const cfg = pageConfig();
const startHeaders = cfg.token ? { Authorization: 'Bearer ' + cfg.token } : {};

// One socket per distinct Authorization, so editing the Headers pane
// takes effect on the next subscription.
const sockets = new Map();
function socketFor(authorization) {
  const key = authorization || '';
  if (!sockets.has(key)) {
    sockets.set(key, globalThis.graphqlWs.createClient({
      url: websocketURL(cfg.endpoint),
      connectionParams: authorization ? { Authorization: authorization } : {},
      lazy: true,
      retryAttempts: 0,
    }));
  }
  return sockets.get(key);
}

function header(headers, name) {
  for (const [k, v] of Object.entries(headers || {})) {
    if (k.toLowerCase() === name) return String(v);
  }
  return '';
}

// fetcher: the Headers pane's headers win over the page's token; the very
// first introspection already carries the token.
function fetcher(params, opts) {
  const headers = Object.assign({}, startHeaders, opts && opts.headers);
  if (operationType(params.query, params.operationName) === 'subscription') {
    return socketFor(header(headers, 'authorization')).iterate(params);
  }
  return fetch(cfg.endpoint, {
    method: 'POST',
    headers: Object.assign({ 'Content-Type': 'application/json', Accept: 'application/json' }, headers),
    body: JSON.stringify(params),
  }).then((res) => res.json());
}

const defaultQuery = `# Two-factor service. Docs: the book icon, top left.
# ${cfg.token
  ? 'You act as the demo admin (token in Headers).'
  : 'Put {"Authorization": "Bearer <token>"} in Headers.'}
{
  twoFactorSettings {
    general { deliveryMethod contactPerson { name email phone } }
    defaults { web manager }
  }
}
`;

const root = ReactDOM.createRoot(document.getElementById('graphiql'));
root.render(React.createElement(GraphiQL, {
  fetcher,
  defaultQuery,
  headers: JSON.stringify(startHeaders, null, 2),
  defaultEditorToolsVisibility: 'headers',
  shouldPersistHeaders: false,
}));
