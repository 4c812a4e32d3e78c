// Small helpers shared by the console's tabs: building elements, labels
// for the API's enum values, and time elements.
import { showTime } from '/assets/shared/time.js';

// el creates an element: attrs are attributes (class, id, aria-*, data-*),
// except that `text` sets textContent and on* keys add listeners. Children
// may be nodes or strings; null and false are skipped.
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// The wording the seed uses for the delivery options.
export const deliveryLabels = {
  SMS_WITH_EMAIL_BACKUP: 'SMS first, email as a backup',
  EMAIL_ONLY: 'Email only',
};

export const appLabels = { WEB: 'Web application', MANAGER: 'Manager app' };

export const actionLabels = {
  USER_CREATED: 'User created',
  USER_UPDATED: 'User updated',
  USER_DELETED: 'User deleted',
  USER_TWO_FACTOR_ENABLED: '2FA switched on',
  USER_TWO_FACTOR_DISABLED: '2FA switched off',
  GENERAL_SETTINGS_CHANGED: 'General settings changed',
  DEFAULT_SETTINGS_CHANGED: 'Default settings changed',
  FAILED_ATTEMPTS_LIMIT_REACHED: 'Locked after failed attempts',
  USER_TWO_FACTOR_UNLOCKED: '2FA unlocked',
  CODE_SENT: 'Code sent',
  CODE_DELIVERY_FAILED: 'Code not delivered',
  CODE_VERIFIED: 'Code verified',
  CODE_REJECTED: 'Wrong code',
  CODE_EXPIRED: 'Code expired',
};

// The sign-in steps: many per login, so the log shows them only when asked.
export const signInActions = ['CODE_SENT', 'CODE_DELIVERY_FAILED', 'CODE_VERIFIED', 'CODE_REJECTED', 'CODE_EXPIRED'];

// What the Audit log shows first: changes by people, and lockouts.
export const changeActions = Object.keys(actionLabels).filter((a) => !signInActions.includes(a));

// humanise turns an enum value or a camelCase key into words:
// SOME_NEW_ACTION → "Some new action", contactPerson → "Contact person".
export function humanise(s) {
  const words = String(s)
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/[_\s]+/g, ' ')
    .trim()
    .toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function actionLabel(action) {
  return actionLabels[action] || humanise(action || 'unknown');
}

export function appLabel(app) {
  return app ? appLabels[app] || humanise(app) : '';
}

// timeElement is a <time> showing iso (see shared/time.js); short is the
// compact form.
export function timeElement(iso, short) {
  const t = el('time');
  showTime(t, iso, { short });
  return t;
}

// localDate is the yyyy-mm-dd of d in the browser's time zone.
export function localDate(d) {
  const p = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate());
}

// startOfDay is the ISO instant of the local midnight starting the date
// value of an <input type=date> (yyyy-mm-dd), plus addDays days.
export function startOfDay(value, addDays = 0) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || '');
  if (!m) return null;
  return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]) + addDays).toISOString();
}

// fieldKey turns a userError field path into a key: ["input",
// "contactPerson", "email"] → "contactPerson.email".
export function fieldKey(path) {
  return (path || []).filter((p, i) => !(i === 0 && p === 'input')).join('.');
}

// authProblem tells whether err means the token is no good for the
// console (so the sign-in form should come back).
export function authProblem(err) {
  return !!err && ['UNAUTHENTICATED', 'FORBIDDEN', 'TOKEN_EXPIRED'].includes(err.code);
}

export function describeError(err) {
  if (!err) return 'Something went wrong.';
  if (err.code === 'NETWORK') return 'The service cannot be reached. Check the connection and try again.';
  return err.message || String(err);
}
