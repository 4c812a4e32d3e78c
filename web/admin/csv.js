// The audit log as CSV (RFC 4180), safe to open in a spreadsheet.
import { actionLabel, appLabel } from './util.js';

export const csvHeader = ['Time (UTC)', 'User id', 'User', 'Target id', 'Target', 'Action', 'App', 'Details'];

// csvRow is one audit event's cells, in csvHeader's order.
export function csvRow(n) {
  const a = n.actor || {};
  const t = n.targetUser || {};
  return [
    n.createdAt,
    a.id || '',
    a.displayName || '',
    t.id || '',
    t.displayName || '',
    actionLabel(n.action),
    appLabel(n.app),
    n.details === null || n.details === undefined ? '' : JSON.stringify(n.details),
  ];
}

// neutralise keeps a spreadsheet from running a cell as a formula: a cell
// starting with = + - @, a tab or a carriage return gets a leading quote.
export function neutralise(v) {
  const s = v === null || v === undefined ? '' : String(v);
  return /^[=+\-@\t\r]/.test(s) ? "'" + s : s;
}

// quote quotes a cell when it holds a comma, a quote or a line break,
// doubling its quotes.
export function quote(s) {
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

// toCSV joins rows of cells with CRLF line ends.
export function toCSV(rows) {
  return rows.map((r) => r.map((c) => quote(neutralise(c))).join(',')).join('\r\n') + '\r\n';
}
