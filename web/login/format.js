// Small formatting helpers for the login screen: countdowns and waits in
// words (times are shared/time.js).

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
