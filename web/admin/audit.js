// The "Audit log" tab: the company's audit log, newest first, with
// filters, "Load older" paging, live rows from the auditEventAdded
// subscription (resumed from the last cursor after a dropped connection,
// with no gap and no duplicate) and a CSV download of the filtered log.
import {
  $, el, actionLabels, actionLabel, changeActions, appLabel, deliveryLabels, humanise, timeElement,
  startOfDay, localDate, authProblem, describeError,
} from './util.js';
import { formatTime } from '/assets/shared/time.js';

const NODE = `id action app details createdAt
  actor { id displayName role }
  targetUser { id displayName }`;

const PAGE = `query AdminAuditLog($first: Int, $after: String, $filter: AuditLogFilter) {
  auditLog(first: $first, after: $after, filter: $filter) {
    edges { cursor node { ${NODE} } }
    pageInfo { hasNextPage endCursor }
  }
}`;

// HEAD is the newest cursor of the whole log: where the live stream
// starts when the filtered page is empty.
const HEAD = `query AdminAuditHead { auditLog(first: 1) { edges { cursor } } }`;

const LIVE = `subscription AdminAuditLive($filter: AuditLogFilter, $after: String) {
  auditEventAdded(filter: $filter, after: $after) { cursor node { ${NODE} } }
}`;

const PAGE_SIZE = 50;

// Errors after which subscribing again cannot help.
const FINAL = ['BAD_USER_INPUT', 'BAD_CURSOR', 'GRAPHQL_VALIDATION_FAILED', 'GRAPHQL_PARSE_FAILED'];

export function partyName(p) {
  return p ? p.displayName || p.id : '';
}

// describeDetails turns an event's details into one readable line:
// "Delivery method: SMS first, email as a backup → Email only".
const keyLabels = { twoFactor: '2FA', deliveryMethod: 'Delivery method', lockedUntil: 'Locked until', failedAttempts: 'Failed attempts' };
const keyLabel = (k) => keyLabels[k] || humanise(k);

export function describeDetails(d) {
  if (d === null || d === undefined) return '';
  if (typeof d !== 'object') return String(d);
  const val = (k, v) => {
    if (v === null || v === undefined || v === '') return 'none';
    if (typeof v === 'boolean') return v ? 'on' : 'off';
    if (k === 'deliveryMethod') return deliveryLabels[v] || humanise(v);
    if (/until$/i.test(k) && typeof v === 'string' && !Number.isNaN(Date.parse(v))) return formatTime(v);
    if (typeof v === 'object') {
      return Object.entries(v)
        .filter(([, x]) => x !== null && x !== undefined && x !== '')
        .map(([kk, x]) => (typeof x === 'boolean' ? kk + ' ' + (x ? 'on' : 'off') : typeof x === 'object' ? JSON.stringify(x) : String(x)))
        .join(', ') || 'none';
    }
    return String(v);
  };
  const isChange = d.before && d.after && typeof d.before === 'object' && typeof d.after === 'object';
  if (!isChange) {
    return Object.entries(d).map(([k, v]) => keyLabel(k) + ': ' + val(k, v)).join('; ');
  }
  const keys = [...new Set([...Object.keys(d.after), ...Object.keys(d.before)])];
  return keys.map((k) => {
    if (!(k in d.before)) return keyLabel(k) + ': ' + val(k, d.after[k]);
    return keyLabel(k) + ': ' + val(k, d.before[k]) + ' → ' + val(k, d.after[k]);
  }).join('; ');
}

// exportParams is an auditLog filter as /audit/export's query string.
export function exportParams(f) {
  const q = new URLSearchParams({ format: 'csv' });
  if (f && f.actions) q.set('actions', f.actions.join(','));
  for (const k of ['category', 'userId', 'app', 'from', 'to']) {
    if (f && f[k]) q.set(k, f[k]);
  }
  return q.toString();
}

// formatSize is a byte count for people: 812 bytes, 14 KB, 3.2 MB.
function formatSize(n) {
  if (n < 1000) return n + (n === 1 ? ' byte' : ' bytes');
  if (n < 1e6) return Math.round(n / 1000) + ' KB';
  return (n / 1e6).toFixed(1) + ' MB';
}

export function auditTab({ client, fail }) {
  const tbody = $('#audit-table tbody');
  const older = $('#load-older');
  const status = $('#audit-status');
  const summary = $('#audit-summary');
  const live = $('#live-status');
  const empty = $('#audit-empty');
  const form = $('#audit-filters');
  const fKind = $('#f-kind');
  const fAction = $('#f-action');
  const fUser = $('#f-user');
  const fApp = $('#f-app');
  const fFrom = $('#f-from');
  const fTo = $('#f-to');
  const filterError = $('#err-filters');
  const csvButton = $('#csv-download');
  const csvStatus = $('#csv-status');

  for (const [value, label] of Object.entries(actionLabels)) fAction.append(el('option', { value, text: label }));

  let started = false;
  let gen = 0; // bumped on every reload; stale answers are dropped
  let filter = null; // the applied filter, as sent to the API
  const seen = new Set(); // event ids in the table
  let newestCursor = null; // where the live stream resumes
  let endCursor = null;
  let hasOlder = false;
  let unsubscribe = null;
  let retryTimer = null;
  let attempt = 0;
  let streaming = false;
  let catchUpPending = false;
  let catchUpTimer = null;

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  function row(edge, fresh) {
    const n = edge.node;
    const who = partyName(n.actor);
    const target = partyName(n.targetUser);
    const userCell = el('td', { class: 'cell-user', title: [n.actor && 'actor id: ' + n.actor.id, n.targetUser && 'target id: ' + n.targetUser.id].filter(Boolean).join('\n') },
      el('span', { class: 'actor', text: who }),
      target ? [el('span', { class: 'arrow', 'aria-hidden': 'true', text: ' → ' }), el('span', { class: 'visually-hidden', text: ' to ' }), el('span', { class: 'target', text: target })] : null);
    const details = describeDetails(n.details);
    return el('tr', { 'data-id': n.id, 'data-cursor': edge.cursor, 'data-action': n.action, class: fresh ? 'fresh' : null },
      userCell,
      el('td', { class: 'cell-action' }, el('span', { class: 'action action-' + n.action.toLowerCase().replace(/_/g, '-'), text: actionLabel(n.action) })),
      el('td', { class: 'cell-time' }, timeElement(n.createdAt)),
      el('td', { class: 'cell-app', text: appLabel(n.app) }),
      el('td', { class: 'cell-details', title: n.details ? JSON.stringify(n.details) : null, text: details }));
  }

  function updateSummary() {
    const n = seen.size;
    empty.hidden = n > 0;
    older.hidden = !hasOlder;
    summary.textContent = n === 0 ? '' : n === 1 ? '1 event' : n + ' events' + (hasOlder ? ' shown (older ones not loaded yet)' : '');
  }

  function append(edges) {
    const frag = document.createDocumentFragment();
    for (const e of edges) {
      if (seen.has(e.node.id)) continue;
      seen.add(e.node.id);
      frag.append(row(e, false));
    }
    tbody.append(frag);
  }

  function prepend(edge) {
    if (seen.has(edge.node.id)) return;
    seen.add(edge.node.id);
    const tr = row(edge, true);
    tbody.prepend(tr);
    setTimeout(() => tr.classList.remove('fresh'), 4000);
    updateSummary();
  }

  // readFilter turns the form into an AuditLogFilter, or throws with a
  // message for the user.
  function readFilter() {
    const f = {};
    // A picked action wins over the kind; otherwise the kind narrows.
    if (fAction.value) f.actions = [fAction.value];
    else if (fKind.value === 'changes') f.actions = changeActions;
    else if (fKind.value === 'signins') f.category = 'AUTHENTICATION';
    const user = fUser.value.trim();
    if (user) f.userId = user;
    if (fApp.value) f.app = fApp.value;
    if (fFrom.value) f.from = startOfDay(fFrom.value);
    // The API's "to" is exclusive: the day after the picked one.
    if (fTo.value) f.to = startOfDay(fTo.value, 1);
    if (f.from && f.to && f.from >= f.to) throw new Error('"From" must not be after "To".');
    return Object.keys(f).length ? f : null;
  }

  function stopLive() {
    clearTimeout(retryTimer);
    retryTimer = null;
    clearTimeout(catchUpTimer);
    catchUpTimer = null;
    catchUpPending = false;
    streaming = false;
    if (unsubscribe) {
      const u = unsubscribe;
      unsubscribe = null;
      u();
    }
  }

  function startLive(my) {
    if (my !== gen) return;
    stopLive();
    streaming = true;
    if (!newestCursor) {
      catchUpPending = true;
      // In case the socket was already up (no "connected" to wait for).
      catchUpTimer = setTimeout(() => catchUp(my), 3000);
    }
    setLive(attempt > 0 ? 'reconnecting' : 'connecting', attempt > 0 ? 'Reconnecting…' : 'Connecting…');
    let ended = false;
    const end = () => {
      if (ended || my !== gen) return false;
      ended = true;
      unsubscribe = null;
      streaming = false;
      return true;
    };
    const stop = client.subscribe(LIVE, { filter, after: newestCursor }, {
      next(data) {
        if (ended || my !== gen) return;
        const edge = data.auditEventAdded;
        newestCursor = edge.cursor;
        attempt = 0;
        setLive('live', 'Live');
        prepend(edge);
      },
      error(err) {
        if (!end()) return;
        if (authProblem(err)) {
          setLive('off', 'Not connected');
          fail(err);
          return;
        }
        if (FINAL.includes(err && err.code)) {
          setLive('off', 'Live updates stopped: ' + describeError(err));
          return;
        }
        retry(my);
      },
      complete() {
        if (end()) retry(my);
      },
    });
    // Stopped on purpose: its callbacks no longer count.
    unsubscribe = () => {
      ended = true;
      stop();
    };
  }

  // retry subscribes again from the newest cursor received, after a
  // backoff that grows while attempts keep failing.
  function retry(my) {
    setLive('reconnecting', 'Reconnecting…');
    const delay = Math.min(10000, 500 * 2 ** attempt) + Math.floor(Math.random() * 250);
    attempt++;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => startLive(my), delay);
  }

  // catchUp covers a stream that started without a cursor (the whole
  // log was empty when the page read it): such a stream only carries
  // events from when the server took the subscription, so once the socket
  // is up the newest rows are read again and merged, by id.
  async function catchUp(my) {
    clearTimeout(catchUpTimer);
    catchUpTimer = null;
    if (!catchUpPending || my !== gen) return;
    catchUpPending = false;
    try {
      const d = await client.request(PAGE, { first: PAGE_SIZE, filter });
      if (my !== gen) return;
      const edges = d.auditLog.edges;
      const ids = new Set(edges.map((e) => e.node.id));
      if (edges.some((e) => !seen.has(e.node.id))) {
        if ([...seen].every((id) => ids.has(id))) {
          // Everything shown is in this page: show the page, in order.
          tbody.replaceChildren();
          seen.clear();
          append(edges);
          endCursor = d.auditLog.pageInfo.endCursor;
          hasOlder = d.auditLog.pageInfo.hasNextPage;
        } else {
          for (const e of edges.slice().reverse()) prepend(e);
        }
        updateSummary();
      }
      if (!newestCursor && edges.length) newestCursor = edges[0].cursor;
    } catch (err) {
      if (my !== gen) return;
      if (authProblem(err)) fail(err);
      // Otherwise the next reconnect tries again.
      else catchUpPending = !newestCursor;
    }
  }

  async function reload() {
    const my = ++gen;
    stopLive();
    attempt = 0;
    tbody.replaceChildren();
    seen.clear();
    newestCursor = null;
    endCursor = null;
    hasOlder = false;
    older.hidden = true;
    empty.hidden = true;
    summary.textContent = '';
    status.textContent = 'Loading…';
    setLive('idle', 'Not connected');
    try {
      // The whole log's newest cursor first: if the filtered page is
      // empty, the stream starts there, so nothing written between the
      // two requests is missed.
      const head = await client.request(HEAD);
      if (my !== gen) return;
      const d = await client.request(PAGE, { first: PAGE_SIZE, filter });
      if (my !== gen) return;
      const edges = d.auditLog.edges;
      newestCursor = edges.length ? edges[0].cursor : head.auditLog.edges.length ? head.auditLog.edges[0].cursor : null;
      append(edges);
      endCursor = d.auditLog.pageInfo.endCursor;
      hasOlder = d.auditLog.pageInfo.hasNextPage;
      status.textContent = '';
      updateSummary();
      startLive(my);
    } catch (err) {
      if (my !== gen) return;
      status.textContent = 'Could not load the audit log.';
      fail(err);
    }
  }

  async function loadOlder() {
    const my = gen;
    if (!hasOlder || older.disabled) return;
    older.disabled = true;
    older.setAttribute('aria-busy', 'true');
    status.textContent = 'Loading older events…';
    try {
      const d = await client.request(PAGE, { first: PAGE_SIZE, after: endCursor, filter });
      if (my !== gen) return;
      append(d.auditLog.edges);
      endCursor = d.auditLog.pageInfo.endCursor;
      hasOlder = d.auditLog.pageInfo.hasNextPage;
      status.textContent = hasOlder ? '' : 'That is the oldest event.';
      const hadFocus = document.activeElement === older;
      updateSummary();
      if (hadFocus && older.hidden) $('#audit-table').focus();
    } catch (err) {
      status.textContent = 'Could not load older events.';
      fail(err);
    } finally {
      older.disabled = false;
      older.removeAttribute('aria-busy');
    }
  }

  function applyFilters() {
    try {
      filter = readFilter();
    } catch (err) {
      filterError.textContent = err.message;
      filterError.hidden = false;
      fTo.setAttribute('aria-invalid', 'true');
      fTo.setAttribute('aria-describedby', 'err-filters');
      return;
    }
    filterError.hidden = true;
    fTo.removeAttribute('aria-invalid');
    fTo.removeAttribute('aria-describedby');
    reload();
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    applyFilters();
  });
  for (const f of [fKind, fAction, fApp, fFrom, fTo]) f.addEventListener('change', applyFilters);
  // The user id applies on Enter (submit) or when the field is left.
  fUser.addEventListener('change', applyFilters);
  $('#f-clear').addEventListener('click', () => {
    fAction.value = fApp.value = fFrom.value = fTo.value = fUser.value = '';
    fKind.value = 'changes';
    applyFilters();
  });
  older.addEventListener('click', loadOlder);

  // downloadCSV saves the server's CSV export of the applied filter
  // (GET /audit/export, oldest first): one CSV writer, the server's.
  async function downloadCSV() {
    if (csvButton.disabled) return;
    csvButton.disabled = true;
    csvButton.setAttribute('aria-busy', 'true');
    csvStatus.textContent = 'Preparing the CSV…';
    try {
      const blob = await client.download('/audit/export?' + exportParams(filter));
      const name = 'audit-log-' + localDate(new Date()) + '.csv';
      const url = URL.createObjectURL(blob);
      const a = el('a', { href: url, download: name, class: 'visually-hidden', tabindex: '-1' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      csvStatus.textContent = 'Saved ' + name + ' (' + formatSize(blob.size) + ').';
    } catch (err) {
      csvStatus.textContent = 'Could not prepare the CSV.';
      fail(err);
    } finally {
      csvButton.disabled = false;
      csvButton.removeAttribute('aria-busy');
    }
  }
  csvButton.addEventListener('click', downloadCSV);

  return {
    show() {
      if (started) return;
      started = true;
      try {
        filter = readFilter();
      } catch {
        filter = null;
      }
      reload();
    },
    stop() {
      gen++;
      stopLive();
    },
    // The socket's state, from the client's connection events.
    socketConnected() {
      if (!streaming) return;
      attempt = 0;
      setLive('live', 'Live');
      if (catchUpPending) catchUp(gen);
    },
    socketClosed() {
      if (streaming) setLive('reconnecting', 'Reconnecting…');
    },
  };
}
