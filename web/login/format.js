// Small formatting helpers for the login screen: times in the visitor's
// own time zone (UTC on hover), countdowns and waits in words.

// The visitor's locale and time zone: a lock that ends at 10:00 UTC reads
// 12:00 in Riga. A moment today needs no date.
const localFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const todayFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

// showTime fills a <time> element with a moment: local time as its text,
// the machine-readable value in datetime, and UTC in the hover title.
// value is an RFC 3339 string (the API's DateTime) or seconds since 1970
// (a JWT's iat and exp).
export function showTime(el, value) {
  const d = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) {
    el.textContent = String(value);
    return;
  }
  el.dateTime = d.toISOString();
  const today = d.toDateString() === new Date().toDateString();
  el.textContent = (today ? todayFormat : localFormat).format(d);
  el.title = d.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
}

// clock formats a number of seconds as m:ss (or h:mm:ss): "0:27".
export function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

// wait says how long a wait is, rounded up: "12 seconds", "4 minutes".
export function wait(seconds) {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return plural(s, 'second');
  if (s < 3600) return plural(Math.ceil(s / 60), 'minute');
  return plural(Math.ceil(s / 3600), 'hour');
}

// plural: "1 attempt", "2 attempts".
export function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
