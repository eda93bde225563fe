// Shared by every console page: API calls with the session's CSRF token, safe DOM building,
// formatting, and hiding write actions from viewers (the API refuses them anyway).
'use strict';
const Corral = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || '';
  const role = document.body.dataset.role || 'viewer';
  const canWrite = role === 'admin' || role === 'operator';
  if (!canWrite) document.querySelectorAll('.write').forEach((e) => { e.hidden = true; });

  /** fetch() against the API; JSON in and out; throws Error(message) with .status on failure. */
  async function api(method, path, body, headers = {}) {
    const init = { method, credentials: 'same-origin', headers: { 'x-csrf-token': csrf, ...headers } };
    if (body !== undefined) {
      if (typeof body === 'string') init.body = body;
      else { init.body = JSON.stringify(body); init.headers['content-type'] = 'application/json'; }
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      location.href = '/login?next=' + encodeURIComponent(location.pathname + location.search);
      throw new Error('signed out');
    }
    const text = await response.text();
    let data = text;
    if ((response.headers.get('content-type') || '').includes('json')) { try { data = JSON.parse(text); } catch { /* keep text */ } }
    if (!response.ok) {
      const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  const sql = (query) => api('POST', '/api/v1/query', { sql: query });
  /** A SQL string literal. */
  const quote = (s) => "'" + String(s).replaceAll("'", "''") + "'";

  /** Builds an element; children are nodes or text (never parsed as HTML). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k === 'class') node.className = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  function fill(container, ...children) { container.replaceChildren(...children.flat()); }

  function number(n) {
    if (typeof n !== 'number') return n === null || n === undefined ? '–' : String(n);
    if (Number.isInteger(n)) return n.toLocaleString('en-US');
    return Math.abs(n) >= 100 ? n.toFixed(1) : n.toPrecision(4).replace(/\.?0+$/, '');
  }

  function ago(iso) {
    if (!iso) return 'never';
    const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 5) return 'just now';
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  /** A time as a person reads it: the browser's local date and time, to the second. The API's
   *  RFC 3339 text may carry nanoseconds, which Date does not take: cut to milliseconds. */
  function when(iso) {
    if (!iso) return '';
    const date = new Date(String(iso).replace(/(\.\d{3})\d+/, '$1'));
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  /** Horizontal bars: rows of [label, count, href?]. */
  function bars(container, rows, empty = 'Nothing yet.') {
    if (!rows.length) return fill(container, el('p', { class: 'empty' }, empty));
    const max = Math.max(...rows.map((r) => r[1]), 1);
    fill(container, rows.map(([label, n, href]) => el('div', { class: 'bar' },
      el('span', { title: label }, href ? el('a', { href }, label) : label),
      el('div', { class: 'fill', style: `width:${(100 * n) / max}%` }),
      el('span', {}, number(n)))));
  }

  const badge = (text) => el('span', { class: `badge ${text}` }, text);

  /**
   * A stacked bar: parts of [key, count], each a segment as wide as its share of `total` (the sum
   * when omitted), styled by the class `seg-<key>` (keys are the page's own names, not data).
   */
  function stack(parts, total) {
    const sum = Math.max(total ?? parts.reduce((s, [, n]) => s + n, 0), 1);
    const shown = parts.filter(([, n]) => n > 0);
    const label = shown.map(([k, n]) => `${k} ${number(n)}`).join(', ') || 'none';
    return el('div', { class: 'stack', role: 'img', 'aria-label': label, title: label },
      shown.map(([k, n]) => el('span', { class: `seg seg-${k}`, 'data-state': k, style: `width:${((100 * n) / sum).toFixed(2)}%` })));
  }

  return { api, sql, quote, el, fill, number, ago, when, bars, badge, stack, canWrite, role, csrf };
})();
