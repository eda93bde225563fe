// Overview: the fleet at a glance, from SQL over the devices and alarms tables, and the ingest
// rate from the platform's own counters. Refreshes every 15 s.
'use strict';
(() => {
  const { sql, fill, el, bars, number, ago } = Corral;
  const $ = (id) => document.getElementById(id);
  const filterLink = (key, value) => `/devices?${key}=${encodeURIComponent(value)}`;

  let lastRows = null;
  // The rate needs two samples: the first at load, the second two seconds later (not at the
  // next refresh, 15 s on), then one per refresh.
  async function ingestRate() {
    // The counter of readings stored, sampled at each refresh: the difference is the rate.
    const text = await fetch('/metrics').then((r) => r.text());
    const total = text.split('\n').filter((l) => l.startsWith('corral_ingest_rows_total')).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    const now = Date.now();
    if (lastRows) $('t-rate').textContent = number(Math.max(0, Math.round(((total - lastRows.total) * 1000) / (now - lastRows.at))));
    lastRows = { total, at: now };
  }

  // Who changed what (the audit log is for administrators).
  async function changes() {
    const entries = (await Corral.api('GET', '/api/v1/audit?limit=40')).entries.filter((e) => e.action !== 'user.sign_in').slice(0, 8);
    document.querySelector('.admin-only').hidden = false;
    fill($('changes'), entries.length
      ? el('table', { class: 'data fit' }, el('tbody', {}, entries.map((e) => el('tr', {},
          el('td', {}, e.action), el('td', {}, e.action.startsWith('device.') ? el('a', { href: `/devices/${encodeURIComponent(e.target)}` }, e.target) : e.target),
          el('td', {}, e.actor), el('td', { title: e.at }, ago(e.at))))))
      : el('p', { class: 'empty' }, 'Nothing changed yet.'));
  }

  // One pass over the devices answers every grouping (GROUPING SETS): with a large fleet the
  // devices table is the expensive part, so it is read once per refresh.
  const GROUPS = `SELECT status, profile, site, tenant, online, count(*) AS n,
      count(*) FILTER (WHERE status <> 'decommissioned') AS live,
      grouping(status) AS g_status, grouping(profile) AS g_profile, grouping(site) AS g_site,
      grouping(tenant) AS g_tenant, grouping(online) AS g_online
    FROM devices GROUP BY GROUPING SETS ((status), (profile), (site), (tenant), (status, online))`;

  async function refresh() {
    try {
      const result = await sql(GROUPS);
      const col = Object.fromEntries(result.columns.map((c, i) => [c, i]));
      const rowsOf = (dimension) => result.rows.filter((r) => r[col[`g_${dimension}`]] === 0 && (dimension !== 'status' || r[col.g_online] === 1));
      const top = (dimension) => rowsOf(dimension).map((r) => [r[col[dimension]] ?? '(none)', r[col.live]]).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0]))).slice(0, 8);
      const byStatus = rowsOf('status').map((r) => [r[col.status], r[col.n]]).sort((a, b) => b[1] - a[1]);
      const activeOnline = (flag) => result.rows.filter((r) => r[col.g_online] === 0 && r[col.status] === 'active' && r[col.online] === flag).reduce((s, r) => s + r[col.n], 0);
      $('t-devices').textContent = number(byStatus.filter(([s]) => s !== 'decommissioned').reduce((s, [, n]) => s + n, 0));
      $('t-online').textContent = number(activeOnline(true));
      $('t-offline').textContent = number(activeOnline(false));
      bars($('by-status'), byStatus.map(([s, n]) => [s, n, filterLink('status', s)]), 'No devices yet.');
      for (const dimension of ['profile', 'site', 'tenant']) {
        bars($(`by-${dimension}`), top(dimension).map(([k, n]) => [k, n, k === '(none)' ? undefined : filterLink(dimension, k)]), 'No devices yet.');
      }
      const alarms = await Corral.api('GET', '/api/v1/alarms?open=true&limit=1000');
      $('t-alarms').textContent = number(alarms.alarms.length) + (alarms.next_before ? '+' : '');
      const bySeverity = {};
      for (const a of alarms.alarms) bySeverity[a.severity] = (bySeverity[a.severity] || 0) + 1;
      const order = ['critical', 'major', 'minor', 'warning', 'info'];
      bars($('by-severity'), order.filter((s) => bySeverity[s]).map((s) => [s, bySeverity[s], '/alarms']), 'No open alarms.');
      const recent = (await Corral.api('GET', '/api/v1/devices?sort=created_at&desc=true&limit=8')).devices;
      fill($('recent'), recent.length
        ? el('table', { class: 'data fit' }, el('tbody', {}, recent.map((d) => el('tr', {},
            el('td', {}, el('a', { href: `/devices/${encodeURIComponent(d.id)}` }, d.id)), el('td', {}, d.profile || ''), el('td', {}, d.site || ''),
            el('td', { title: d.created_at }, ago(d.created_at))))))
        : el('p', { class: 'empty' }, 'No devices yet. Register one from the inventory.'));
      if (Corral.role === 'admin') await changes();
      await ingestRate();
      $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      $('updated').textContent = `Could not load the overview: ${e.message}`;
    }
  }
  refresh().then(() => setTimeout(() => ingestRate().catch(() => {}), 2000));
  setInterval(refresh, 15000);
})();
