// The reference two-factor login screen: the "authorization screen" that
// the Web and Manager apps copy. It signs one user in with a code:
//
//   1. pick the app and ask for a code        (issueChallenge)
//   2. type the code                          (verifyChallenge)
//   3. APPROVED: check the signed assertion   (jose + /.well-known/jwks.json)
//      or LOCKED: show whom to contact and when the lock ends.
//
// Everything the service refuses comes back as a userError with a code
// (README, "Errors"); each one gets a readable message here. The service
// decides every rule (cooldowns, attempts, channels); the page only shows
// what it was told, so it never disagrees with the server.
//
// The page acts with a user-role token: the user asks for their own code,
// so issueChallenge needs no userId. An app whose backend talks to the
// service instead uses a service token and names the user (userId); the
// payloads, and so the screen, are the same.

import { claims, pageConfig, tokenStore } from '/assets/shared/session.js';
import { createClient } from '/assets/shared/graphql.js';
import { createRemoteJWKSet, jwtVerify } from '/assets/vendor/dist/jose/index.js';
import { clock, plural, wait } from '/assets/login/format.js';
import { showTime } from '/assets/shared/time.js';

// ---- GraphQL operations -------------------------------------------------

const CHALLENGE_FIELDS = `
  id app channel destination expiresAt resendAvailableAt
  availableChannels attemptsRemaining status`;

const ME = `query Me { me { id displayName } }`;

const ISSUE = `mutation IssueChallenge($input: IssueChallengeInput!) {
  issueChallenge(input: $input) {
    challenge { ${CHALLENGE_FIELDS} }
    retryAfter
    lockedUntil
    contactPerson { name email phone }
    availableChannels
    userErrors { field code message }
  }
}`;

const VERIFY = `mutation VerifyChallenge($input: VerifyChallengeInput!) {
  verifyChallenge(input: $input) {
    status
    attemptsRemaining
    assertion
    lockedUntil
    contactPerson { name email phone }
    userErrors { field code message }
  }
}`;

const CHALLENGE = `query Challenge($id: ID!) { challenge(id: $id) { ${CHALLENGE_FIELDS} } }`;

// ---- Constants and state ------------------------------------------------

// The assertion's issuer: the service's ASSERTION_ISSUER, which the
// server puts in the page's config ("twofactor" unless changed).
const ISSUER = pageConfig().issuer || 'twofactor';
const JWKS_PATH = '/.well-known/jwks.json';

const APP_NAMES = { WEB: 'Web application', MANAGER: 'Manager app' };
const CHANNEL_NAMES = { SMS: 'SMS', EMAIL: 'email' };

// The page's sections, one per step; show() reveals one of them.
const STEPS = { token: 'token-step', send: 'send-step', code: 'code-step', locked: 'locked', approved: 'approved' };

// What each claim means (internal/assertion). Others are shown as they are.
const CLAIMS = [
  ['sub', 'User'],
  ['company', 'Company'],
  ['app', 'App'],
  ['amr', 'How (authentication methods)'],
  ['iss', 'Issuer'],
  ['iat', 'Issued at'],
  ['exp', 'Expires at'],
  ['jti', 'Assertion id (the challenge)'],
];
const TIME_CLAIMS = new Set(['iat', 'exp', 'nbf']);

const cfg = pageConfig();
// A token typed into the form lives in this tab's sessionStorage only:
// it is a bearer credential, and must not outlive the tab.
const savedToken = tokenStore('twofactor.login.token');

// The public keys, fetched on first use and cached by jose; a token signed
// with a key id it has not seen makes it fetch again (key rotation).
const jwks = createRemoteJWKSet(new URL(JWKS_PATH, location.href));

const state = {
  client: null, // GraphQL client with the user's token
  step: '', // which section is showing (see show)
  challenge: null, // the code waiting to be typed, or null
  channel: null, // the channel last asked for; null is the service's default (SMS first)
  available: [], // channels the service allows for a new code in this login
  resendAt: 0, // when a new code may be asked for, on the server's clock (ms)
  timer: 0, // the resend countdown's interval
  busy: false, // a request is in flight
  clockOffset: 0, // the server's clock minus this browser's (ms)
};

const $ = (id) => document.getElementById(id);

// ---- Start: who is signing in -------------------------------------------

function start() {
  // In embedded mode nothing is really sent: say where the codes are.
  $('dev-hint').hidden = !cfg.embedded;
  wireEvents();
  measureClockOffset();
  // A token typed into this tab wins over the one the server filled in, so
  // "Use another token" survives a reload.
  const token = savedToken.get() || cfg.token;
  if (token) signIn(token);
  else showTokenForm();
}

function wireEvents() {
  $('token-step').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token').value.trim(), { remember: true });
  });
  $('change-token').addEventListener('click', () => {
    savedToken.clear();
    showTokenForm();
  });
  $('send-step').addEventListener('submit', (e) => {
    e.preventDefault();
    sendCode(null);
  });
  $('code-step').addEventListener('submit', (e) => {
    e.preventDefault();
    verifyCode();
  });
  $('resend').addEventListener('click', () => sendCode(state.challenge.channel));
  $('email-instead').addEventListener('click', () => sendCode('EMAIL'));
  for (const radio of document.querySelectorAll('input[name="app"]')) {
    // Each app is a separate login with its own channels: forget the
    // other app's.
    radio.addEventListener('change', () => {
      state.available = [];
      renderAlternatives();
    });
  }
  for (const button of document.querySelectorAll('.start-over')) button.addEventListener('click', startOver);
}

// signIn checks the token before using it: the page decodes it to catch a
// wrong role early (the server still decides), then asks the service who
// it is for.
function signIn(token, { remember = false } = {}) {
  return busy(async () => {
    const c = claims(token);
    if (!c) return showTokenForm('That is not a token. A token is a JWT: three parts joined by dots.');
    if (c.role !== 'user') {
      const what = { admin: 'an admin token', service: 'a service token' }[c.role] || 'not a user-role token';
      return showTokenForm(`This is ${what}. The login screen signs in one user, so it needs that user's ` +
        'user-role token.');
    }
    state.client = createClient({ endpoint: cfg.endpoint, token });
    try {
      const { me } = await state.client.request(ME);
      if (!me) return showTokenForm(`The token is for “${c.sub}”, who is not a user of company “${c.company}”.`);
      if (remember) savedToken.set(token);
      $('who').textContent = me.displayName ? `${me.displayName} (${me.id})` : me.id;
      clearAlert();
      show('send');
    } catch (err) {
      failed(err);
    }
  });
}

function showTokenForm(message) {
  state.client = null;
  state.challenge = null;
  stopCountdown();
  show('token');
  if (message) say(message);
  else clearAlert();
  $('token').focus();
}

// ---- Step 1: ask for a code ---------------------------------------------

// sendCode asks for a code for the chosen app. channel is null for the
// service's default (SMS first, where the company allows it), or EMAIL.
function sendCode(channel) {
  return busy(async () => {
    clearAlert();
    state.channel = channel;
    const input = { app: selectedApp() };
    if (channel) input.channel = channel;
    try {
      const { issueChallenge: p } = await state.client.request(ISSUE, { input });
      if (p.challenge) showCodeStep(p.challenge);
      else issueRefused(p);
    } catch (err) {
      failed(err);
    }
  });
}

function selectedApp() {
  return document.querySelector('input[name="app"]:checked').value;
}

// issueRefused explains why no code was sent.
function issueRefused(p) {
  const e = p.userErrors[0] || { code: 'UNKNOWN', message: 'no code was sent' };
  if (p.availableChannels) state.available = p.availableChannels;
  // A failure of the delivery itself (DELIVERY_FAILED, or the company's
  // SMS cap: RATE_LIMITED with availableChannels) comes after the new code
  // replaced the old one, so no code is waiting any more: back to step 1,
  // where "Send code" tries again. Other refusals leave an earlier code
  // valid.
  if (e.code === 'DELIVERY_FAILED' || (e.code === 'RATE_LIMITED' && p.availableChannels)) {
    state.challenge = null;
    stopCountdown();
    show('send');
  }
  const orEmail = emailOffered() ? ', or send the code by email instead.' : '.';
  switch (e.code) {
    case 'LOCKED':
      return showLocked(p.lockedUntil, p.contactPerson);
    case 'RESEND_TOO_SOON':
      startCountdown(serverNow() + p.retryAfter * 1000);
      return say(`A code was sent a moment ago. You can ask for another in ${wait(p.retryAfter)}.`);
    case 'RATE_LIMITED':
      // With availableChannels it is the company's hourly SMS cap, which
      // email gets around; without, the user's own limit on codes.
      if (p.availableChannels) return say(`No more codes can go by SMS for now. Try again in ${wait(p.retryAfter)}${orEmail}`);
      return say(`Too many codes were asked for. Try again in ${wait(p.retryAfter)}.`);
    case 'DELIVERY_FAILED':
      return say(`The code could not be delivered${state.channel === 'EMAIL' ? ' by email' : ''}. Try again${orEmail}`);
    case 'CHANNEL_NOT_AVAILABLE':
      return say('Email is not available for this code yet: it opens after an unsuccessful attempt.');
    case 'TWO_FACTOR_NOT_ENABLED':
      return say(`Two-factor sign-in is off for you in the ${APP_NAMES[selectedApp()]}, so there is no code to send. ` +
        'An administrator can switch it on.');
    case 'NO_DELIVERY_ADDRESS':
      return say('There is no phone number or email address to send your code to. Ask your administrator to add one.');
    default:
      return say(sentence(e.message));
  }
}

// ---- Step 2: type the code ----------------------------------------------

function showCodeStep(ch) {
  state.challenge = ch;
  state.available = ch.availableChannels;
  $('sent-app').textContent = APP_NAMES[ch.app];
  $('sent-channel').textContent = CHANNEL_NAMES[ch.channel];
  $('sent-destination').textContent = ch.destination; // masked by the service
  showTime($('code-expires'), ch.expiresAt);
  $('code').value = '';
  show('code');
  startCountdown(Date.parse(ch.resendAvailableAt));
  $('code').focus();
}

function verifyCode() {
  return busy(async () => {
    clearAlert();
    const code = $('code').value.replace(/\s+/g, '');
    if (!/^[0-9]+$/.test(code)) {
      say('Type the digits of the code you received.');
      return $('code').focus();
    }
    const id = state.challenge.id;
    try {
      const { verifyChallenge: p } = await state.client.request(VERIFY, { input: { challengeId: id, code } });
      await verified(id, p);
    } catch (err) {
      // The service forgets a challenge some time after its login ends.
      if (err.code === 'NOT_FOUND') return codeGone('This code is no longer known to the service.');
      failed(err);
    }
  });
}

// verified acts on the outcome of a verify.
function verified(id, p) {
  const e = p.userErrors[0];
  if (e && e.code === 'ALREADY_USED') return codeGone('This code was already used.');
  if (e) {
    // INVALID_CODE: not a code at all ("the code is 6 digits"); it does not
    // count as an attempt.
    say(sentence(e.message));
    return $('code').focus();
  }
  switch (p.status) {
    case 'APPROVED':
      return showApproved(p.assertion);
    case 'LOCKED':
      return showLocked(p.lockedUntil, p.contactPerson);
    case 'REJECTED':
      return wrongCode(id, p.attemptsRemaining);
    case 'EXPIRED':
      refreshChallenge(id);
      return codeGone('This code has expired, or a newer code replaced it.');
  }
  return say(`Unexpected answer from the service (status ${p.status}).`);
}

function wrongCode(id, attemptsLeft) {
  say(`Wrong code. ${plural(attemptsLeft, 'attempt')} left.`);
  $('code').value = '';
  $('code').focus();
  // A wrong code is an unsuccessful attempt: the service now allows email
  // and a new code at once. Ask it, rather than guess.
  refreshChallenge(id);
}

// codeGone: the code cannot be used any more; a new one is needed.
function codeGone(why) {
  state.challenge = null;
  stopCountdown();
  show('send');
  say(`${why} Send a new code.`);
  $('send').focus();
}

// refreshChallenge reads the challenge again after an unsuccessful attempt,
// for the channels and resend time the service allows now. It runs beside
// the user's next step, not blocking it.
async function refreshChallenge(id) {
  try {
    const { challenge: ch } = await state.client.request(CHALLENGE, { id });
    if (!ch) return;
    state.available = ch.availableChannels;
    if (state.challenge && state.challenge.id === id) startCountdown(Date.parse(ch.resendAvailableAt));
    renderAlternatives();
  } catch {
    // Only a refinement: the buttons stay as they were, and the service
    // still answers a too-early resend with RESEND_TOO_SOON.
  }
}

// ---- Resend and "Send by email instead" ---------------------------------

// startCountdown disables Resend until at (ms on the server's clock),
// showing the time left: "Resend in 0:27".
function startCountdown(at) {
  state.resendAt = at;
  clearInterval(state.timer);
  state.timer = setInterval(tick, 250);
  tick();
}

function tick() {
  const left = (state.resendAt - serverNow()) / 1000;
  const button = $('resend');
  if (left > 0) {
    button.disabled = true;
    button.textContent = `Resend in ${clock(left)}`;
    return;
  }
  clearInterval(state.timer);
  button.disabled = false;
  button.textContent = 'Resend code';
}

function stopCountdown() {
  clearInterval(state.timer);
}

// emailOffered: the service allows email for a new code (after an
// unsuccessful attempt, with SMS_WITH_EMAIL_BACKUP) and the code did not
// already go by email. With EMAIL_ONLY every code goes by email anyway.
function emailOffered() {
  const current = state.challenge ? state.challenge.channel : state.channel || 'SMS';
  return state.available.includes('SMS') && state.available.includes('EMAIL') && current !== 'EMAIL';
}

function renderAlternatives() {
  const asking = state.step === 'send' || state.step === 'code';
  $('resend').hidden = state.step !== 'code';
  $('email-instead').hidden = !(asking && emailOffered());
  $('alternatives').hidden = $('resend').hidden && $('email-instead').hidden;
}

// ---- Outcomes -----------------------------------------------------------

// showLocked: too many wrong codes. The lock is per user and app; the
// company's contact person can have an administrator lift it sooner.
function showLocked(until, contact) {
  state.challenge = null;
  stopCountdown();
  clearAlert();
  if (until) showTime($('locked-until'), until);
  $('contact').hidden = !contact;
  $('no-contact').hidden = Boolean(contact);
  if (contact) {
    $('contact-name').textContent = contact.name;
    setLink($('contact-email'), contact.email, 'mailto:');
    setLink($('contact-phone'), contact.phone, 'tel:');
  }
  show('locked');
  $('locked-title').focus();
}

function setLink(a, value, scheme) {
  a.hidden = !value;
  a.textContent = value || '';
  if (value) a.href = scheme + value;
  else a.removeAttribute('href');
}

// showApproved: the right code. The service returns an assertion, a
// short-lived EdDSA JWT that the platform checks offline with the public
// keys at /.well-known/jwks.json. The page does the same check, to show
// how: signature, issuer and expiry.
async function showApproved(assertion) {
  state.challenge = null;
  stopCountdown();
  $('assertion').textContent = assertion;
  show('approved');
  $('approved-title').focus();
  try {
    const { payload } = await jwtVerify(assertion, jwks, {
      issuer: ISSUER,
      algorithms: ['EdDSA'], // accept only what the service signs with
      currentDate: new Date(serverNow()), // judge exp by the server's clock
    });
    showClaims(payload);
    $('verified').hidden = false;
  } catch (err) {
    say(`The assertion could not be verified against ${JWKS_PATH}: ${err.message}`);
  }
}

function showClaims(payload) {
  const body = $('claims').tBodies[0];
  body.replaceChildren();
  const known = CLAIMS.map(([name]) => name);
  const rest = Object.keys(payload).filter((k) => !known.includes(k)).map((k) => [k, '']);
  for (const [name, meaning] of CLAIMS.concat(rest)) {
    if (!(name in payload)) continue;
    const row = body.insertRow();
    row.dataset.claim = name;
    const th = document.createElement('th');
    th.scope = 'row';
    th.append(Object.assign(document.createElement('code'), { textContent: name }));
    if (meaning) th.append(Object.assign(document.createElement('span'), { className: 'meaning', textContent: meaning }));
    row.append(th);
    const td = row.insertCell();
    const value = payload[name];
    if (TIME_CLAIMS.has(name)) {
      const t = document.createElement('time');
      showTime(t, value);
      td.append(t);
    } else {
      td.textContent = Array.isArray(value) ? value.join(', ') : String(value);
    }
  }
  $('claims').hidden = false;
}

// startOver forgets this login on the page (the service keeps its own
// count of attempts) and goes back to step 1, e.g. to try the other app.
function startOver() {
  state.challenge = null;
  state.channel = null;
  state.available = [];
  stopCountdown();
  clearAlert();
  $('verified').hidden = true;
  $('claims').hidden = true;
  show('send');
  $('send').focus();
}

// ---- Showing things -----------------------------------------------------

// show makes one step visible and hides the others.
function show(step) {
  state.step = step;
  $('loading').hidden = true;
  for (const [name, id] of Object.entries(STEPS)) $(id).hidden = name !== step;
  $('identity').hidden = step === 'token';
  renderAlternatives();
}

// say shows a message in the alert region; screen readers read it out.
function say(message) {
  $('alert').textContent = message;
}

function clearAlert() {
  $('alert').textContent = '';
}

// failed explains a request that failed as a whole (not a userError).
function failed(err) {
  switch (err.code) {
    case 'UNAUTHENTICATED':
      savedToken.clear();
      return showTokenForm('The service did not accept the token: it has expired, or was signed with another secret. ' +
        (cfg.embedded ? 'Reload the page for a fresh one, or paste another.' : 'Paste a new one.'));
    case 'FORBIDDEN':
      return showTokenForm('This token may not ask for codes: the screen needs a user-role token.');
    case 'NETWORK':
      return say('The service cannot be reached. Check the connection and try again.');
    case 'UNAVAILABLE':
      return say('Two-factor sign-in is unavailable for a moment. Try again shortly.');
    default:
      return say(`Something went wrong: ${sentence(err.message || String(err))}`);
  }
}

// busy runs one request at a time: a second click while one is in flight
// is ignored, so a double click cannot ask for two codes.
async function busy(fn) {
  if (state.busy) return;
  state.busy = true;
  document.querySelector('main').setAttribute('aria-busy', 'true');
  try {
    await fn();
  } finally {
    state.busy = false;
    document.querySelector('main').removeAttribute('aria-busy');
  }
}

// sentence turns a service message ("the code is 6 digits") into one.
function sentence(s) {
  const t = String(s).trim();
  return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
}

// ---- The server's clock -------------------------------------------------

// Times from the service (resendAvailableAt, an assertion's exp) are on
// the server's clock, and a visitor's clock may be minutes off. The Date
// header of a response tells the difference, to a second.
async function measureClockOffset() {
  try {
    const sent = Date.now();
    const res = await fetch(JWKS_PATH, { cache: 'no-store' });
    const received = Date.now();
    const server = Date.parse(res.headers.get('Date'));
    if (Number.isNaN(server)) return;
    const offset = server - (sent + received) / 2;
    // The header has whole seconds: smaller differences are noise.
    state.clockOffset = Math.abs(offset) < 2000 ? 0 : offset;
  } catch {
    // Without it, the countdown trusts this browser's clock.
  }
}

function serverNow() {
  return Date.now() + state.clockOffset;
}

// Go, now that everything above is defined.
start();
