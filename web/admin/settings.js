// The "General settings" and "Default settings" tabs: forms over
// twoFactorSettings, saved with updateGeneralSettings and
// updateDefaultSettings. Each form tracks what was loaded, so Save is only
// enabled when something changed, and says "Saved" once it is.
import { $, fieldKey, describeError } from './util.js';
import { formatTime } from '/assets/shared/time.js';

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

// formState runs a form's Save button and status line. A form is busy
// while its status is "saving".
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
    get busy() {
      return status.dataset.state === 'saving';
    },
  };
}

// saveMutation is the mutation that saves one form's part of the settings.
const saveMutation = (operation, field, inputType) => `mutation ${operation}($input: ${inputType}!) {
  ${field}(input: $input) {
    settings { ${SETTINGS} }
    userErrors { field code message }
  }
}`;

// save runs one Save of a form: it sends input (with the updatedAt this
// session last saw) as mutation, then shows the answer. On a conflict the
// form shows the settings as they are now; userErrors go to
// form.showErrors, which returns the status text (and, given none, clears
// the form's errors); otherwise the saved settings are filled in.
async function save({ client, fail, clearBanner }, form, mutation, field, input) {
  form.state.set('saving', 'Saving…');
  try {
    input.expectedUpdatedAt = await expectedAt(client);
    const p = (await client.request(mutation, { input }))[field];
    clearBanner();
    if (conflicted(p)) {
      remember(client, p.settings);
      form.fill(p.settings);
      form.showErrors([]);
      form.state.set('clean', CONFLICT_TEXT);
      return;
    }
    const problem = form.showErrors(p.userErrors);
    if (p.userErrors.length) {
      form.state.set('dirty', problem);
      return;
    }
    remember(client, p.settings);
    form.fill(p.settings);
    form.state.set('saved', 'Saved');
  } catch (err) {
    form.state.set('dirty', 'Not saved: ' + describeError(err));
    fail(err);
  }
}

// loader returns a tab's show(): the first time, it loads the settings
// (shared by the session's tabs, so one saved by the other tab is the
// newer copy) into the form.
function loader({ client, fail }, state, fill) {
  let loaded = false;
  return function show() {
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

const SAVE_GENERAL = saveMutation('AdminUpdateGeneral', 'updateGeneralSettings', 'UpdateGeneralSettingsInput');
const SAVE_DEFAULTS = saveMutation('AdminUpdateDefaults', 'updateDefaultSettings', 'UpdateDefaultSettingsInput');

export function generalTab(ctx) {
  const { client } = ctx;
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
    if (state.busy || !saved) return;
    if (changed()) {
      const c = current();
      const removing = saved.contact && !c.contact;
      state.set('dirty', removing ? 'Unsaved changes: the contact person will be removed.' : 'Unsaved changes');
    } else {
      state.set('clean', '');
    }
  }

  // The form's errors beside their fields, the first of them focused.
  function fieldErrors(errors) {
    const { unplaced, first } = showErrors(errors, places);
    if (first) first.focus();
    return unplaced.length ? 'Not saved: ' + unplaced.join(' ') : 'Not saved: check the marked fields.';
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

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (state.busy || !changed()) return;
    const c = current();
    const input = {};
    if (c.deliveryMethod !== saved.deliveryMethod) input.deliveryMethod = c.deliveryMethod;
    if (!sameContact(c.contact, saved.contact)) {
      input.contactPerson = c.contact
        ? { name: c.contact.name, email: c.contact.email || null, phone: c.contact.phone || null }
        : null;
    }
    save(ctx, { state, fill, showErrors: fieldErrors }, SAVE_GENERAL, 'updateGeneralSettings', input);
  });

  return { show: loader(ctx, state, fill) };
}

export function defaultsTab(ctx) {
  const form = $('#defaults-form');
  const web = $('#def-web');
  const manager = $('#def-manager');
  const err = $('#err-defaults');
  const state = formState('defaults');
  let saved = null;

  function fill(s) {
    saved = { web: s.defaults.web, manager: s.defaults.manager };
    web.checked = saved.web;
    manager.checked = saved.manager;
  }
  const changed = () => saved && (web.checked !== saved.web || manager.checked !== saved.manager);
  function refresh() {
    if (state.busy || !saved) return;
    if (changed()) state.set('dirty', 'Unsaved changes');
    else state.set('clean', '');
  }
  // The form's errors, all in one line under the switches.
  function showErrors(errors) {
    err.textContent = errors.map((u) => u.message).join(' ');
    err.hidden = !errors.length;
    return 'Not saved.';
  }

  form.addEventListener('change', refresh);
  $('#defaults-reset').addEventListener('click', () => {
    if (saved) {
      web.checked = saved.web;
      manager.checked = saved.manager;
    }
    refresh();
  });

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (state.busy || !changed()) return;
    const input = {};
    if (web.checked !== saved.web) input.web = web.checked;
    if (manager.checked !== saved.manager) input.manager = manager.checked;
    save(ctx, { state, fill, showErrors }, SAVE_DEFAULTS, 'updateDefaultSettings', input);
  });

  return { show: loader(ctx, state, fill) };
}
