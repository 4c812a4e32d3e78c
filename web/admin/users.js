// The "Users" tab: search the company's users, switch 2FA per app, and
// lift a lock left by too many failed code attempts.
import { $, el, appLabels, timeElement, describeError } from './util.js';

const FIELDS = (locks) => `id email phone displayName
  twoFactor { web manager ${locks ? 'lockedUntil { web manager }' : ''} }`;

const LIST = (locks) => `query AdminUsers($first: Int, $after: String, $query: String) {
  users(first: $first, after: $after, query: $query) {
    edges { cursor node { ${FIELDS(locks)} } }
    pageInfo { hasNextPage endCursor }
  }
}`;

const ONE = `query AdminUser($id: ID!) { user(id: $id) { ${FIELDS(true)} } }`;

const SET = `mutation AdminSetUserTwoFactor($input: SetUserTwoFactorInput!) {
  setUserTwoFactor(input: $input) { user { ${FIELDS(true)} } userErrors { field code message } }
}`;

const UNLOCK = `mutation AdminUnlock($input: UnlockUserTwoFactorInput!) {
  unlockUserTwoFactor(input: $input) { user { id } userErrors { field code message } }
}`;

const PAGE_SIZE = 25;
const APPS = [['WEB', 'web'], ['MANAGER', 'manager']];

export function usersTab({ client, fail, clearBanner }) {
  const tbody = $('#users-table tbody');
  const more = $('#users-more');
  const status = $('#users-status');
  const message = $('#users-message');
  const empty = $('#users-empty');
  const query = $('#u-query');

  let started = false;
  let gen = 0;
  let q = '';
  let endCursor = null;
  let hasMore = false;
  let locks = true; // false while the lock store cannot be read
  let seq = 0;
  let debounce = null;

  const nameOf = (u) => u.displayName || u.id;

  function say(text) {
    message.textContent = text;
  }

  function row(u) {
    const tr = el('tr', { 'data-user-id': u.id });
    tr.append(
      el('th', { scope: 'row', class: 'cell-user' },
        el('span', { class: 'user-name', text: nameOf(u) }),
        u.displayName ? el('span', { class: 'user-id muted', text: u.id }) : null),
      el('td', { class: 'cell-email', text: u.email || '—' }),
      el('td', { class: 'cell-phone', text: u.phone || '—' }),
    );
    for (const [app, key] of APPS) tr.append(appCell(u, app, key));
    return tr;
  }

  function appCell(u, app, key) {
    const id = 'u' + ++seq + '-' + key;
    const sw = el('input', {
      type: 'checkbox', role: 'switch', class: 'switch', id,
      'data-app': app, 'data-focus': 'switch-' + key,
    });
    sw.checked = !!u.twoFactor[key];
    sw.addEventListener('change', () => setTwoFactor(u, app, sw));
    const cell = el('td', { class: 'cell-app', 'data-app': app },
      el('div', { class: 'switch-row compact' }, sw,
        el('label', { for: id }, '2FA', el('span', { class: 'visually-hidden', text: ' in the ' + appLabels[app] + ' for ' + nameOf(u) }))));
    const lockedUntil = u.twoFactor.lockedUntil && u.twoFactor.lockedUntil[key];
    if (lockedUntil) {
      cell.append(el('div', { class: 'lock' },
        el('span', { class: 'badge badge-locked' }, 'Locked until ', timeElement(lockedUntil, true)),
        el('button', {
          type: 'button', class: 'btn btn-small', 'data-focus': 'unlock-' + key, 'data-unlock': app,
          'aria-label': 'Unlock the ' + appLabels[app] + ' for ' + nameOf(u),
          onclick: (e) => unlock(u, app, e.currentTarget),
        }, 'Unlock')));
    } else if (!locks) {
      cell.append(el('div', { class: 'lock muted small', text: 'Lock state unknown' }));
    }
    return cell;
  }

  // replace swaps a user's row for a fresh one, keeping the focus on the
  // same control (or the app's switch when that control is gone).
  function replace(u, focusKey) {
    const old = tbody.querySelector(`tr[data-user-id="${CSS.escape(u.id)}"]`);
    const tr = row(u);
    if (old) old.replaceWith(tr);
    else return;
    if (focusKey) {
      const target = tr.querySelector(`[data-focus="${focusKey}"]`) ||
        tr.querySelector(`[data-focus="switch-${focusKey.split('-')[1]}"]`);
      if (target) target.focus();
    }
  }

  async function setTwoFactor(u, app, sw) {
    const enabled = sw.checked;
    sw.disabled = true;
    const where = appLabels[app];
    say('Saving…');
    try {
      const d = await client.request(SET, { input: { userId: u.id, app, enabled } });
      clearBanner();
      const p = d.setUserTwoFactor;
      if (p.userErrors.length) {
        sw.checked = !enabled;
        sw.disabled = false;
        say('Not changed: ' + p.userErrors.map((e) => e.message).join(' '));
        return;
      }
      replace(p.user, 'switch-' + app.toLowerCase());
      say('2FA ' + (enabled ? 'switched on' : 'switched off') + ' for ' + nameOf(p.user) + ' in the ' + where + '.');
    } catch (err) {
      sw.checked = !enabled;
      sw.disabled = false;
      say('Not changed: ' + describeError(err));
      fail(err);
    }
  }

  async function unlock(u, app, button) {
    button.disabled = true;
    say('Unlocking…');
    try {
      const d = await client.request(UNLOCK, { input: { userId: u.id, app } });
      const p = d.unlockUserTwoFactor;
      if (p.userErrors.length) {
        button.disabled = false;
        say('Not unlocked: ' + p.userErrors.map((e) => e.message).join(' '));
        return;
      }
      // Read the row again: the lock state comes fresh from the lock store.
      const fresh = await client.request(ONE, { id: u.id });
      clearBanner();
      if (fresh.user) replace(fresh.user, 'unlock-' + app.toLowerCase());
      say('Unlocked ' + nameOf(u) + ' in the ' + appLabels[app] + '.');
    } catch (err) {
      button.disabled = false;
      say('Not unlocked: ' + describeError(err));
      fail(err);
    }
  }

  async function page(after) {
    try {
      return await client.request(LIST(locks), { first: PAGE_SIZE, after, query: q || null });
    } catch (err) {
      if (locks && err.code === 'UNAVAILABLE') {
        // The lock store is unreachable: list the users without locks.
        locks = false;
        return client.request(LIST(false), { first: PAGE_SIZE, after, query: q || null });
      }
      throw err;
    }
  }

  function render(d, reset) {
    if (reset) tbody.replaceChildren();
    const frag = document.createDocumentFragment();
    for (const e of d.users.edges) frag.append(row(e.node));
    tbody.append(frag);
    endCursor = d.users.pageInfo.endCursor;
    hasMore = d.users.pageInfo.hasNextPage;
    more.hidden = !hasMore;
    empty.hidden = tbody.children.length > 0;
    empty.textContent = q ? 'No users match "' + q + '".' : 'No users yet.';
    if (!locks) say('Lock states cannot be read right now: the lock store is unreachable.');
  }

  async function search(text) {
    const my = ++gen;
    q = text.trim();
    locks = true;
    status.textContent = 'Loading…';
    try {
      const d = await page(null);
      if (my !== gen) return;
      status.textContent = '';
      render(d, true);
    } catch (err) {
      if (my !== gen) return;
      status.textContent = 'Could not load the users.';
      fail(err);
    }
  }

  async function loadMore() {
    const my = gen;
    more.disabled = true;
    status.textContent = 'Loading more…';
    try {
      const d = await page(endCursor);
      if (my !== gen) return;
      status.textContent = '';
      render(d, false);
      if (more.hidden) query.focus();
    } catch (err) {
      status.textContent = 'Could not load more users.';
      fail(err);
    } finally {
      more.disabled = false;
    }
  }

  $('#users-search').addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(debounce);
    search(query.value);
  });
  query.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => search(query.value), 300);
  });
  more.addEventListener('click', loadMore);

  return {
    show() {
      if (started) return;
      started = true;
      search(query.value);
    },
    stop() {
      gen++;
      clearTimeout(debounce);
    },
  };
}
