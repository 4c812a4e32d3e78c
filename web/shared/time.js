// Times as every page shows them: in the visitor's own locale and time
// zone (a lock that ends at 10:00 UTC reads 12:00 in Riga), the exact
// instant in a <time>'s datetime, and UTC on hover. A moment today needs
// no date.

const full = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const brief = new Intl.DateTimeFormat(undefined, { dateStyle: 'short', timeStyle: 'short' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

// toDate reads an RFC 3339 string (the API's DateTime) or seconds since
// 1970 (a JWT's iat and exp); anything else is an invalid Date.
function toDate(value) {
  if (typeof value === 'number') return new Date(value * 1000);
  return new Date(typeof value === 'string' ? value : NaN);
}

// formatTime is value as local text; short is the compact form for tight
// places. A value that is not a time comes back as it is.
export function formatTime(value, { short = false } = {}) {
  const d = toDate(value);
  if (Number.isNaN(d.getTime())) return value === null || value === undefined ? '' : String(value);
  if (short) return brief.format(d);
  return (d.toDateString() === new Date().toDateString() ? timeOnly : full).format(d);
}

// showTime fills a <time> element with value: local text, the instant in
// datetime and UTC in the hover title.
export function showTime(el, value, opts) {
  el.textContent = formatTime(value, opts);
  const d = toDate(value);
  if (Number.isNaN(d.getTime())) {
    el.removeAttribute('datetime');
    el.removeAttribute('title');
    return;
  }
  el.dateTime = d.toISOString();
  el.title = d.toISOString() + ' UTC';
}
