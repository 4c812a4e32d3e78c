// The "General settings" and "Default settings" tabs: forms over
// twoFactorSettings, saved with updateGeneralSettings and
// updateDefaultSettings. Each form tracks what was loaded, so Save is only
// enabled when something changed, and says "Saved" once it is.
import { $, fieldKey, describeError, formatTime } from './util.js';

const SETTINGS = `
  general { deliveryMethod contactPerson { name email phone } }
  defaults { web manager }
  updatedAt`;

const QUERY = `query AdminSettings { twoFactorSettings { ${SETTINGS} } }`;

// The two tabs of one session (one client) share one load of the
// settings, and each saves its newer copy for the other.
const cache = new WeakMap();
function loadSettings(client) {
  let p = cache.get(client);
  if (!p) {
    p = client.request(QUERY).then((d) => d.twoFactorSettings);
    p.catch(() => cache.delete(client));
    cache.set(client, p);
  }
  return p;
}
const remember = (client, settings) => cache.set(client, Promise.resolve(settings));

// expectedAt is the updatedAt this session last saw, sent with a save so
// that a change made elsewhere since is refused (CONFLICT), not overwritten.
// Saves of this session update it, so one tab's save never blocks the other.
const expectedAt = (client) => loadSettings(client).then((s) => s.updatedAt, () => undefined);

// CONFLICT_TEXT is shown when someone else changed the settings first: the
// form then shows the settings as they are now, for the change to be redone.
const CONFLICT_TEXT = 'Not saved: someone else changed these settings; they are reloaded below.';
const conflicted = (p) => p.userErrors.some((e) => e.code === 'CONFLICT');

// formState runs a form's Save button and status line.
function formState(prefix) {
  const save = $('#' + prefix + '-save');
  const reset = $('#' + prefix + '-reset');
  const status = $('#' + prefix + '-status');
  return {
    set(state, text) {
      status.dataset.state = state;
      status.textContent = text || '';
      save.disabled = state !== 'dirty';
      reset.disabled = state !== 'dirty';
      save.setAttribute('aria-busy', state === 'saving' ? 'true' : 'false');
    },
  };
}

// showErrors puts userErrors next to their fields: the error's text in the
// field's error paragraph, aria-invalid and aria-describedby on the input.
// Errors without a known place go to fallback.
function showErrors(errors, places, fallback) {
  for (const { input, error } of Object.values(places)) {
    error.hidden = true;
    error.textContent = '';
    if (input) {
      input.removeAttribute('aria-invalid');
      const rest = (input.getAttribute('aria-describedby') || '').split(' ').filter((id) => id && id !== error.id);
      if (rest.length) input.setAttribute('aria-describedby', rest.join(' '));
      else input.removeAttribute('aria-describedby');
    }
  }
  const unplaced = [];
  let first = null;
  for (const e of errors || []) {
    const p = places[fieldKey(e.field)];
    if (!p) {
      unplaced.push(e.message);
      continue;
    }
    p.error.hidden = false;
    p.error.textContent = p.error.textContent ? p.error.textContent + ' ' + e.message : e.message;
    if (p.input) {
      p.input.setAttribute('aria-invalid', 'true');
      const ids = (p.input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
      if (!ids.includes(p.error.id)) ids.push(p.error.id);
      p.input.setAttribute('aria-describedby', ids.join(' '));
      if (!first) first = p.input;
    }
  }
  return { unplaced, first };
}

export function generalTab({ client, fail, clearBanner }) {
  const form = $('#general-form');
  const radios = () => Array.from(form.querySelectorAll('input[name="deliveryMethod"]'));
  const name = $('#cp-name');
  const email = $('#cp-email');
  const phone = $('#cp-phone');
  const state = formState('general');
  const places = {
    deliveryMethod: { input: null, error: $('#err-deliveryMethod') },
    contactPerson: { input: null, error: $('#err-contactPerson') },
    'contactPerson.name': { input: name, error: $('#err-contactPerson-name') },
    'contactPerson.email': { input: email, error: $('#err-contactPerson-email') },
    'contactPerson.phone': { input: phone, error: $('#err-contactPerson-phone') },
  };
  let saved = null; // { deliveryMethod, contact } as loaded or last saved
  let loaded = false;
  let busy = false;

  // current is the form's value; a contact person with all fields empty
  // is none.
  function current() {
    const checked = radios().find((r) => r.checked);
    const cp = { name: name.value.trim(), email: email.value.trim(), phone: phone.value.trim() };
    const none = !cp.name && !cp.email && !cp.phone;
    return { deliveryMethod: checked ? checked.value : null, contact: none ? null : cp };
  }
  const sameContact = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  function fill(s) {
    const g = s.general;
    const cp = g.contactPerson;
    saved = {
      deliveryMethod: g.deliveryMethod,
      contact: cp ? { name: cp.name || '', email: cp.email || '', phone: cp.phone || '' } : null,
    };
    for (const r of radios()) r.checked = r.value === g.deliveryMethod;
    name.value = cp ? cp.name || '' : '';
    email.value = cp ? cp.email || '' : '';
    phone.value = cp ? cp.phone || '' : '';
    $('#cp-remove').hidden = !cp;
    $('#general-updated').textContent = s.updatedAt ? 'Settings last changed ' + formatTime(s.updatedAt) + '.' : '';
  }

  function changed() {
    if (!saved) return false;
    const c = current();
    return c.deliveryMethod !== saved.deliveryMethod || !sameContact(c.contact, saved.contact);
  }

  function refresh() {
    if (busy || !saved) return;
    if (changed()) {
      const c = current();
      const removing = saved.contact && !c.contact;
      state.set('dirty', removing ? 'Unsaved changes: the contact person will be removed.' : 'Unsaved changes');
    } else {
      state.set('clean', '');
    }
  }

  form.addEventListener('input', refresh);
  form.addEventListener('change', refresh);
  $('#cp-remove').addEventListener('click', () => {
    name.value = email.value = phone.value = '';
    refresh();
    name.focus();
  });
  $('#general-reset').addEventListener('click', () => {
    loadSettings(client).then((s) => {
      fill(s);
      showErrors([], places);
      refresh();
    });
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (busy || !changed()) return;
    const c = current();
    const input = {};
    if (c.deliveryMethod !== saved.deliveryMethod) input.deliveryMethod = c.deliveryMethod;
    if (!sameContact(c.contact, saved.contact)) {
      input.contactPerson = c.contact
        ? { name: c.contact.name, email: c.contact.email || null, phone: c.contact.phone || null }
        : null;
    }
    busy = true;
    state.set('saving', 'Saving…');
    try {
      input.expectedUpdatedAt = await expectedAt(client);
      const d = await client.request(
        `mutation AdminUpdateGeneral($input: UpdateGeneralSettingsInput!) {
          updateGeneralSettings(input: $input) {
            settings { ${SETTINGS} }
            userErrors { field code message }
          }
        }`, { input });
      busy = false;
      clearBanner();
      const p = d.updateGeneralSettings;
      if (conflicted(p)) {
        remember(client, p.settings);
        fill(p.settings);
        showErrors([], places);
        state.set('clean', CONFLICT_TEXT);
        return;
      }
      const { unplaced, first } = showErrors(p.userErrors, places);
      if (p.userErrors.length) {
        state.set('dirty', unplaced.length ? 'Not saved: ' + unplaced.join(' ') : 'Not saved: check the marked fields.');
        if (first) first.focus();
        return;
      }
      remember(client, p.settings);
      fill(p.settings);
      state.set('saved', 'Saved');
    } catch (err) {
      busy = false;
      state.set('dirty', 'Not saved: ' + describeError(err));
      fail(err);
    }
  });

  return {
    show() {
      if (loaded) return;
      loaded = true;
      state.set('loading', 'Loading…');
      loadSettings(client).then((s) => {
        fill(s);
        state.set('clean', '');
      }, (err) => {
        loaded = false;
        state.set('error', 'Could not load the settings.');
        fail(err);
      });
    },
  };
}

export function defaultsTab({ client, fail, clearBanner }) {
  const form = $('#defaults-form');
  const web = $('#def-web');
  const manager = $('#def-manager');
  const state = formState('defaults');
  let saved = null;
  let loaded = false;
  let busy = false;

  function fill(s) {
    saved = { web: s.defaults.web, manager: s.defaults.manager };
    web.checked = saved.web;
    manager.checked = saved.manager;
  }
  const changed = () => saved && (web.checked !== saved.web || manager.checked !== saved.manager);
  function refresh() {
    if (busy || !saved) return;
    if (changed()) state.set('dirty', 'Unsaved changes');
    else state.set('clean', '');
  }
  form.addEventListener('change', refresh);
  $('#defaults-reset').addEventListener('click', () => {
    if (saved) {
      web.checked = saved.web;
      manager.checked = saved.manager;
    }
    refresh();
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (busy || !changed()) return;
    const input = {};
    if (web.checked !== saved.web) input.web = web.checked;
    if (manager.checked !== saved.manager) input.manager = manager.checked;
    busy = true;
    state.set('saving', 'Saving…');
    const err = $('#err-defaults');
    try {
      input.expectedUpdatedAt = await expectedAt(client);
      const d = await client.request(
        `mutation AdminUpdateDefaults($input: UpdateDefaultSettingsInput!) {
          updateDefaultSettings(input: $input) {
            settings { ${SETTINGS} }
            userErrors { field code message }
          }
        }`, { input });
      busy = false;
      clearBanner();
      const p = d.updateDefaultSettings;
      if (conflicted(p)) {
        remember(client, p.settings);
        fill(p.settings);
        err.hidden = true;
        state.set('clean', CONFLICT_TEXT);
        return;
      }
      if (p.userErrors.length) {
        err.textContent = p.userErrors.map((u) => u.message).join(' ');
        err.hidden = false;
        state.set('dirty', 'Not saved.');
        return;
      }
      err.hidden = true;
      remember(client, p.settings);
      fill(p.settings);
      state.set('saved', 'Saved');
    } catch (e2) {
      busy = false;
      state.set('dirty', 'Not saved: ' + describeError(e2));
      fail(e2);
    }
  });

  return {
    show() {
      if (loaded) return;
      loaded = true;
      state.set('loading', 'Loading…');
      loadSettings(client).then((s) => {
        // The general tab may have saved since: take its newer copy.
        fill(s);
        state.set('clean', '');
      }, (e) => {
        loaded = false;
        state.set('error', 'Could not load the settings.');
        fail(e);
      });
    },
  };
}
