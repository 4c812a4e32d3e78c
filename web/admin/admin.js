// The admin console: signs in with a bearer token, then runs four tabs on
// the GraphQL API. The token comes from the page (minted for a visitor on
// this machine in embedded mode) or from the sign-in form, and is kept in
// this tab's sessionStorage only.
import { pageConfig, tokenStore, claims } from '/assets/shared/session.js';
import { createClient } from '/assets/shared/graphql.js';
import { $, $$, authProblem, describeError } from './util.js';
import { generalTab, defaultsTab } from './settings.js';
import { auditTab } from './audit.js';
import { usersTab } from './users.js';

const cfg = pageConfig();
const store = tokenStore('twofactor.admin.token');
// Set by "Sign out", so that the token minted for this page is not used
// again on reload in this tab.
const signedOut = tokenStore('twofactor.admin.signedOut');

let session = null; // { client, tabs, claims }

// tokenProblem explains why a token cannot run the console, or returns ''.
function tokenProblem(token) {
  const c = claims(token);
  if (!c || typeof c !== 'object') {
    return 'That is not a token of this service: it cannot be read. Paste the whole token (three parts separated by dots).';
  }
  const who = (c.name ? c.name + ' (' + (c.sub || '?') + ')' : c.sub || 'someone') + (c.company ? ' of company "' + c.company + '"' : '');
  if (c.role !== 'admin') {
    const role = c.role ? 'a ' + c.role + ' token' : 'a token without a role';
    return 'This is ' + role + ' for ' + who + '. The admin console needs a token with the admin role; ' +
      'ask for one, or create it with go run . token --role admin.';
  }
  if (typeof c.exp === 'number' && c.exp * 1000 <= Date.now()) {
    return 'The token for ' + who + ' expired on ' + new Date(c.exp * 1000).toLocaleString() + '. Sign in with a fresh one.';
  }
  return '';
}

function showSignIn(message) {
  stopSession();
  $('#booting').hidden = true;
  $('#console').hidden = true;
  $('#whoami').hidden = true;
  $('#signin').hidden = false;
  const msg = $('#signin-message');
  msg.textContent = message || '';
  msg.hidden = !message;
  $('#use-page-token').hidden = !cfg.token;
  const input = $('#token-input');
  input.value = '';
  input.setAttribute('aria-invalid', message ? 'true' : 'false');
  if (message) input.setAttribute('aria-describedby', 'signin-message token-hint');
  else input.setAttribute('aria-describedby', 'token-hint');
  input.focus();
}

function stopSession() {
  if (!session) return;
  for (const t of Object.values(session.tabs)) t.stop && t.stop();
  session.client.close();
  session = null;
}

// signIn starts the console with token, or shows why it cannot.
function signIn(token) {
  const problem = tokenProblem(token);
  if (problem) {
    store.clear();
    showSignIn(problem);
    return;
  }
  store.set(token);
  signedOut.clear();
  stopSession();
  const c = claims(token);
  const on = {
    connected: () => session && session.tabs.audit.socketConnected(),
    closed: () => session && session.tabs.audit.socketClosed(),
  };
  const client = createClient({ endpoint: cfg.endpoint, token, on });
  // Every tab reports an error here: a token the API refuses brings the
  // sign-in form back, anything else shows in the banner.
  const fail = (err) => {
    if (authProblem(err)) {
      store.clear();
      const why = err.code === 'FORBIDDEN'
        ? 'The service refused this token for the admin console (' + describeError(err) + '). Sign in with an admin token.'
        : 'The service no longer accepts this token (' + describeError(err) + '). Sign in again.';
      showSignIn(why);
      return true;
    }
    const banner = $('#banner');
    banner.textContent = describeError(err);
    banner.hidden = false;
    return false;
  };
  const ctx = { client, fail, clearBanner: () => { $('#banner').hidden = true; } };
  session = {
    client,
    claims: c,
    tabs: {
      general: generalTab(ctx),
      defaults: defaultsTab(ctx),
      audit: auditTab(ctx),
      users: usersTab(ctx),
    },
  };
  $('#who-name').textContent = c.name ? c.name + ' (' + c.sub + ')' : c.sub || 'admin';
  $('#who-company').textContent = c.company || '?';
  $('#booting').hidden = true;
  $('#signin').hidden = true;
  $('#whoami').hidden = false;
  $('#console').hidden = false;
  $('#banner').hidden = true;
  selectTab(tabFromHash(), false);
}

// Tabs: ARIA tabs with automatic activation, arrow keys, Home/End, and the
// selected tab in location.hash so a reload keeps it.
const tabs = () => $$('[role="tab"]');

function tabFromHash() {
  const h = location.hash.replace(/^#/, '');
  const t = tabs().find((b) => b.dataset.hash === h);
  return t ? t.dataset.hash : 'general';
}

function selectTab(name, focus) {
  for (const t of tabs()) {
    const on = t.dataset.hash === name;
    t.setAttribute('aria-selected', on ? 'true' : 'false');
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
    if (on && focus) t.focus();
  }
  if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
  if (session) session.tabs[name].show();
}

function setupTabs() {
  const list = $('[role="tablist"]');
  list.addEventListener('click', (e) => {
    const t = e.target.closest('[role="tab"]');
    if (t) selectTab(t.dataset.hash, true);
  });
  list.addEventListener('keydown', (e) => {
    const all = tabs();
    const i = all.indexOf(document.activeElement);
    if (i < 0) return;
    let j = null;
    if (e.key === 'ArrowRight') j = (i + 1) % all.length;
    else if (e.key === 'ArrowLeft') j = (i - 1 + all.length) % all.length;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = all.length - 1;
    if (j === null) return;
    e.preventDefault();
    selectTab(all[j].dataset.hash, true);
  });
  window.addEventListener('hashchange', () => {
    if (session) selectTab(tabFromHash(), false);
  });
}

function setup() {
  setupTabs();
  $('#signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('#token-input').value.trim().replace(/^Bearer\s+/i, '');
    if (!token) {
      showSignIn('Paste a token first.');
      return;
    }
    signIn(token);
  });
  $('#use-page-token').addEventListener('click', () => cfg.token && signIn(cfg.token));
  $('#sign-out').addEventListener('click', () => {
    store.clear();
    signedOut.set('1');
    showSignIn('');
  });

  const stored = store.get();
  if (cfg.token && !signedOut.get()) signIn(cfg.token);
  else if (stored) signIn(stored);
  else showSignIn('');
}

setup();
