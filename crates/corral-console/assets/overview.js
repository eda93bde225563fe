// Overview: the fleet at a glance, from SQL over the devices and alarms tables, and the ingest
// rate from the platform's own counters. Refreshes every 10 s.
'use strict';
(() => {
  const { sql, fill, el, bars, number, ago } = Corral;
  const $ = (id) => document.getElementById(id);
  const rows = async (query) => (await sql(query)).rows;
  const filterLink = (key, value) => `/devices?${key}=${encodeURIComponent(value)}`;

  async function groups(column, target) {
    const data = await rows(`SELECT COALESCE(${column}, '(none)') AS k, count(*) AS n FROM devices WHERE status <> 'decommissioned' GROUP BY 1 ORDER BY n DESC, k LIMIT 8`);
    bars($(target), data.map(([k, n]) => [k, n, k === '(none)' ? undefined : filterLink(column, k)]), 'No devices yet.');
  }

  let lastRows = null;
  async function ingestRate() {
    // The counter of readings stored, sampled at each refresh: the difference is the rate.
    const text = await fetch('/metrics').then((r) => r.text());
    const total = text.split('\n').filter((l) => l.startsWith('corral_ingest_rows_total')).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    const now = Date.now();
    if (lastRows) $('t-rate').textContent = number(Math.max(0, Math.round(((total - lastRows.total) * 1000) / (now - lastRows.at))));
    lastRows = { total, at: now };
  }

  async function refresh() {
    try {
      const [counts] = await rows(`SELECT count(*) FILTER (WHERE status <> 'decommissioned'),
          count(*) FILTER (WHERE status = 'active' AND online), count(*) FILTER (WHERE status = 'active' AND NOT online) FROM devices`);
      $('t-devices').textContent = number(counts[0]);
      $('t-online').textContent = number(counts[1]);
      $('t-offline').textContent = number(counts[2]);
      const status = await rows(`SELECT status, count(*) FROM devices GROUP BY status ORDER BY 2 DESC`);
      bars($('by-status'), status.map(([s, n]) => [s, n, filterLink('status', s)]), 'No devices yet.');
      await Promise.all([groups('profile', 'by-profile'), groups('site', 'by-site'), groups('tenant', 'by-tenant')]);
      const alarms = await Corral.api('GET', '/api/v1/alarms?open=true&limit=1000');
      $('t-alarms').textContent = number(alarms.alarms.length) + (alarms.next_before ? '+' : '');
      const bySeverity = {};
      for (const a of alarms.alarms) bySeverity[a.severity] = (bySeverity[a.severity] || 0) + 1;
      const order = ['critical', 'major', 'minor', 'warning', 'info'];
      bars($('by-severity'), order.filter((s) => bySeverity[s]).map((s) => [s, bySeverity[s], '/alarms']), 'No open alarms.');
      const recent = await rows(`SELECT device, profile, site, created_at FROM devices ORDER BY created_at DESC LIMIT 8`);
      fill($('recent'), recent.length
        ? el('table', { class: 'data' }, el('tbody', {}, recent.map(([id, profile, site, created]) => el('tr', {},
            el('td', {}, el('a', { href: `/devices/${encodeURIComponent(id)}` }, id)), el('td', {}, profile || ''), el('td', {}, site || ''),
            el('td', { title: created }, ago(created))))))
        : el('p', { class: 'empty' }, 'No devices yet. Register one from the inventory.'));
      await ingestRate();
      $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      $('updated').textContent = `Could not load the overview: ${e.message}`;
    }
  }
  refresh();
  setInterval(refresh, 10000);
})();
