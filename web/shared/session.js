// What every page shares: the config the server put in the page, and a
// token kept for this tab only (sessionStorage, never localStorage).

// pageConfig is the JSON in <meta name="twofactor-config">: the GraphQL
// endpoint, and a token when the server minted one for this page load.
export function pageConfig() {
  const meta = document.querySelector('meta[name="twofactor-config"]');
  try {
    return Object.assign({ endpoint: '/query' }, JSON.parse(meta ? meta.content : '{}'));
  } catch {
    return { endpoint: '/query' };
  }
}

// tokenStore keeps a bearer token in this tab's sessionStorage under key.
export function tokenStore(key) {
  return {
    get: () => sessionStorage.getItem(key) || '',
    set: (t) => sessionStorage.setItem(key, t),
    clear: () => sessionStorage.removeItem(key),
  };
}

// claims decodes a JWT's payload without checking it, to show who a token
// is for and to spot a wrong role early. The server still decides.
export function claims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}
