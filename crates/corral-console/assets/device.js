// Device page: identity, attributes, credentials, status changes, latest values, the twin
// (desired, reported, the delta; operators change desired with a merge patch), and a chart of
// its telemetry that gains each reading as it is acknowledged (server-sent events).
'use strict';
(() => {
  const { api, sql, quote, el, fill, number, ago, when, badge, canWrite } = Corral;
  const $ = (id) => document.getElementById(id);
  const id = decodeURIComponent(location.pathname.split('/').pop());
  const path = `/api/v1/devices/${encodeURIComponent(id)}`;
  const ident = (name) => '"' + name.replaceAll('"', '""') + '"';
  const RANGES = { '15m': 900e3, '1h': 3600e3, '6h': 6 * 3600e3, '24h': 86400e3, '7d': 7 * 86400e3 };
  let device = null;
  let points = [];

  function facts(container, pairs) {
    fill(container, pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v === null || v === undefined || v === '' ? '–' : v)]));
  }

  async function loadDevice() {
    device = await api('GET', path);
    document.title = `${device.id} · Corral`;
    $('device-id').textContent = device.id;
    $('device-commands').href = `/commands?device=${encodeURIComponent(device.id)}`;
    fill($('device-status'), device.status);
    $('device-status').className = `badge ${device.status}`;
    $('device-online').textContent = device.status === 'active' ? (device.online ? 'online' : 'offline') : '';
    $('device-online').className = `badge ${device.online ? 'online' : 'offline'}`;
    facts($('identity'), [['Profile', device.profile], ['Site', device.site], ['Tenant', device.tenant], ['Gateway', device.gateway],
      ['Tags', device.tags.join(', ')], ['Last seen', device.last_seen ? `${ago(device.last_seen)} (${when(device.last_seen)})` : 'never'], ['Registered', when(device.created_at)]]);
    facts($('attributes'), Object.entries(device.attributes).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)]));
    if (!Object.keys(device.attributes).length) fill($('attributes'), el('p', { class: 'empty' }, 'No attributes.'));
    const decommissioned = device.status === 'decommissioned';
    $('quarantine').hidden = !canWrite || device.status !== 'active';
    $('activate').hidden = !canWrite || device.status !== 'quarantined';
    $('rotate').hidden = !canWrite || decommissioned;
    $('decommission').hidden = !canWrite || decommissioned;
    $('twin-editor').hidden = !canWrite || decommissioned;
  }

  async function loadCredentials() {
    const parts = [el('p', {}, 'Access token: shown once at registration; rotate to issue a new one.')];
    try {
      const psk = await api('GET', `${path}/psk`);
      const writable = canWrite && device.status !== 'decommissioned';
      parts.push(el('p', {}, `Pre-shared key (CoAP over DTLS): ${psk.has_psk ? 'set' : 'none'}. `,
        writable ? el('button', { type: 'button', id: 'psk-generate', onclick: generatePsk }, psk.has_psk ? 'Replace key' : 'Generate key') : null, ' ',
        writable && psk.has_psk ? el('button', { type: 'button', id: 'psk-remove', class: 'danger', onclick: removePsk }, 'Remove key') : null));
    } catch { /* not visible */ }
    try {
      const certs = await api('GET', `${path}/certificates`);
      if (certs.certificates.length) {
        parts.push(el('table', { class: 'data' }, el('thead', {}, el('tr', {}, el('th', {}, 'Certificate'), el('th', {}, 'Expires'), el('th', {}, 'State'), canWrite ? el('th', {}, '') : null)),
          el('tbody', {}, certs.certificates.map((c) => el('tr', {}, el('td', { title: c.fingerprint }, c.serial.slice(0, 16)), el('td', {}, c.not_after.slice(0, 10)),
            el('td', {}, c.revoked_at ? badge('revoked') : badge('valid')),
            canWrite ? el('td', {}, c.revoked_at ? '' : el('button', { type: 'button', class: 'danger', onclick: () => revoke(c.serial) }, 'Revoke')) : null)))));
      } else parts.push(el('p', { class: 'muted' }, 'No X.509 certificate.'));
    } catch { /* not visible */ }
    fill($('credentials'), parts);
  }

  // A generated key is shown once, with the coap-client line that uses it (PSK identity = id).
  async function generatePsk() {
    if (!confirm('Generate a new pre-shared key? A key already set stops working at once.')) return;
    const out = await act(() => api('PUT', `${path}/psk`));
    if (!out) return;
    await loadCredentials();
    const port = document.body.dataset.coapsPort;
    const snippet = port
      ? `\n\ncoap-client -m post -t 50 -u '${id}' -k '${out.key}' -e '{"temperature": 21.5}' \\\n  'coaps://${location.hostname}:${port}/devices/${id}/telemetry'`
      : '\n\n(CoAP over DTLS is off on this server.)';
    $('new-psk').hidden = false;
    $('new-psk').textContent = `New pre-shared key (shown once): ${out.key}${snippet}`;
  }

  async function removePsk() {
    if (!confirm('Remove the pre-shared key? DTLS sessions using it are closed.')) return;
    await act(() => api('DELETE', `${path}/psk`));
    $('new-psk').hidden = true;
    loadCredentials();
  }

  async function revoke(serial) {
    if (!confirm(`Revoke certificate ${serial}? Connections using it are closed.`)) return;
    await act(() => api('DELETE', `${path}/certificate/${serial}`));
    loadCredentials();
  }

  async function act(action) {
    $('device-error').textContent = '';
    try { return await action(); } catch (e) { $('device-error').textContent = e.message; return null; }
  }

  $('rotate').addEventListener('click', async () => {
    if (!confirm('Issue a new token? The current one stops working at once.')) return;
    const out = await act(() => api('POST', `${path}/token`));
    if (out) { $('new-token').hidden = false; $('new-token').textContent = `New token (shown once): ${out.token}`; }
  });
  $('quarantine').addEventListener('click', async () => { if (await act(() => api('PATCH', path, { status: 'quarantined' }))) loadDevice(); });
  $('activate').addEventListener('click', async () => { if (await act(() => api('PATCH', path, { status: 'active' }))) loadDevice(); });
  $('decommission').addEventListener('click', async () => {
    if (!confirm(`Decommission ${id}? Its credentials stop working; its data stays.`)) return;
    if (await act(() => api('DELETE', path))) loadDevice();
  });

  // Latest values and the fields the chart can show.
  async function loadLatest() {
    try {
      // Before the fleet's first reading there is no telemetry table, and querying it is a 400.
      const table = await sql("SELECT table_name FROM information_schema.tables WHERE table_name = 'telemetry'");
      if (!table.rows.length) throw new Error('none');
      const result = await sql(`SELECT * FROM telemetry WHERE device = ${quote(id)} ORDER BY time DESC LIMIT 1`);
      if (!result.rows.length) throw new Error('none');
      const row = result.rows[0];
      const values = result.columns.map((c, i) => [c, row[i]]).filter(([c, v]) => c !== 'device' && v !== null);
      facts($('latest'), values.map(([c, v]) => [c, c === 'time' ? when(v) : typeof v === 'number' ? number(v) : String(v)]));
      const numeric = result.columns.filter((c, i) => result.types[i] && /^(integer|unsigned|float|decimal)/.test(result.types[i]));
      const select = $('field');
      const current = select.value;
      fill(select, numeric.map((c) => el('option', { value: c, selected: c === current }, c)));
    } catch {
      fill($('latest'), el('p', { class: 'empty' }, 'No telemetry yet. Send a reading and it appears here.'));
    }
  }

  async function loadSeries() {
    const field = $('field').value;
    const span = RANGES[$('range').value];
    if (!field) { points = []; return draw(); }
    const since = new Date(Date.now() - span).toISOString();
    const binned = span > RANGES['6h'];
    const query = binned
      ? `SELECT date_bin(INTERVAL '${span > RANGES['24h'] ? '30 minutes' : '5 minutes'}', time) AS t, avg(${ident(field)}) AS v FROM telemetry WHERE device = ${quote(id)} AND time >= ${quote(since)} AND ${ident(field)} IS NOT NULL GROUP BY 1 ORDER BY 1`
      : `SELECT time, ${ident(field)} FROM telemetry WHERE device = ${quote(id)} AND time >= ${quote(since)} AND ${ident(field)} IS NOT NULL ORDER BY time LIMIT 10000`;
    try {
      points = (await sql(query)).rows.map(([t, v]) => [Date.parse(t), Number(v)]);
    } catch { points = []; }
    draw();
  }

  function draw() {
    const span = RANGES[$('range').value];
    Corral.chart.draw($('chart'), [{ name: $('field').value, points }], { from: Date.now() - span, to: Date.now() });
  }

  // Live: every durable reading of this device, as it happens.
  function live() {
    const source = new EventSource(`${path}/live`);
    source.addEventListener('open', () => { $('live').textContent = 'live'; $('live').className = 'badge online'; });
    source.addEventListener('error', () => { $('live').textContent = 'reconnecting…'; $('live').className = 'badge offline'; });
    source.addEventListener('reading', async (event) => {
      const reading = JSON.parse(event.data);
      if (reading.table !== 'telemetry') return;
      if (!$('field').value) { await loadLatest(); }
      const field = $('field').value;
      const value = reading.values[field];
      if (typeof value === 'number') { points.push([Date.parse(reading.time), value]); draw(); }
      const facts = Object.entries(reading.values).map(([k, v]) => [k, typeof v === 'number' ? number(v) : String(v)]);
      fill($('latest'), [['time', when(reading.time)], ...facts].flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
      $('chart').dataset.lastReading = reading.time;
    });
  }

  async function loadAlarms() {
    try {
      const out = await api('GET', `/api/v1/alarms?device=${encodeURIComponent(id)}&limit=20`);
      fill($('device-alarms'), out.alarms.length
        ? el('table', { class: 'data' }, el('tbody', {}, out.alarms.map((a) => el('tr', {}, el('td', {}, badge(a.severity)), el('td', {}, a.rule),
            el('td', {}, a.message), el('td', {}, badge(a.status)), el('td', { title: a.first_at }, ago(a.first_at))))))
        : el('p', { class: 'empty' }, 'No alarms for this device.'));
    } catch (e) {
      fill($('device-alarms'), el('p', { class: 'error' }, e.message));
    }
  }

  // The twin: one row per key of desired or reported. Reported values come from the device, so
  // everything goes in as text (el), never as HTML. The desired version shown is the one an edit
  // is sent against (If-Match), so a change made meanwhile by someone else is refused, not lost.
  let twinVersion = null;

  function twinValue(side, key, note) {
    if (!Object.hasOwn(side.document, key)) return el('span', { class: 'muted' }, '–');
    const ms = side.updated_at_ms[key];
    const at = ms === undefined ? null : new Date(ms).toISOString();
    return [el('code', {}, JSON.stringify(side.document[key])),
      el('div', { class: 'muted small' }, at ? el('time', { datetime: at, title: at }, ago(at)) : '', note ? ` · ${note}` : '')];
  }

  async function loadTwin() {
    let twin;
    try {
      twin = await api('GET', `${path}/twin`);
    } catch (e) {
      $('twin-error').textContent = e.message;
      return;
    }
    $('twin-error').textContent = '';
    twinVersion = twin.desired.version;
    $('twin-desired-version').textContent = `v${twin.desired.version}`;
    $('twin-reported-version').textContent = `v${twin.reported.version}`;
    $('twin-base-version').textContent = twin.desired.version;
    $('twin').dataset.desiredVersion = twin.desired.version;
    const pending = Object.keys(twin.delta).length;
    $('twin-sync').textContent = pending ? `${pending} to apply` : 'in sync';
    $('twin-sync').className = `badge ${pending ? 'delta' : 'online'}`;
    const keys = [...new Set([...Object.keys(twin.desired.document), ...Object.keys(twin.reported.document)])].sort();
    const fromProfile = (key) => twin.profile && Object.hasOwn(twin.desired.document, key) && !Object.hasOwn(twin.desired_overrides, key);
    fill($('twin').tBodies[0], keys.length
      ? keys.map((key) => {
        const delta = Object.hasOwn(twin.delta, key);
        return el('tr', { 'data-key': key, class: delta ? 'delta' : null },
          el('th', { scope: 'row' }, key, delta ? [' ', el('span', { class: 'badge delta', title: 'desired differs from reported: the device has yet to apply it' }, 'delta')] : ''),
          el('td', {}, twinValue(twin.desired, key, fromProfile(key) ? `default of profile ${twin.profile}` : '')),
          el('td', {}, twinValue(twin.reported, key, '')));
      })
      : el('tr', {}, el('td', { colspan: 3, class: 'empty' }, 'Nothing desired or reported yet. The device reports with PATCH …/twin/reported.')));
  }

  $('twin-reload').addEventListener('click', () => { $('twin-edit-notice').textContent = ''; loadTwin(); });
  $('twin-editor').addEventListener('submit', async (event) => {
    event.preventDefault();
    const patch = $('twin-patch').value.trim();
    $('twin-edit-error').textContent = '';
    $('twin-edit-notice').textContent = '';
    if (!patch) { $('twin-edit-error').textContent = 'Write a merge patch first, like {"interval_s": 30}.'; return; }
    const base = twinVersion;
    $('twin-apply').disabled = true;
    try {
      const out = await api('PATCH', `${path}/twin/desired`, patch, { 'content-type': 'application/json', 'if-match': `"${base}"` });
      $('twin-patch').value = '';
      $('twin-edit-notice').textContent = out.version === base ? `Nothing changed: desired stays at version ${base}.` : `Saved: desired is now version ${out.version}.`;
      await loadTwin();
    } catch (e) {
      if (e.status === 412) {
        // Keep the operator's patch: they look at the new desired and apply it again if it still fits.
        await loadTwin();
        $('twin-edit-error').textContent = `Desired was changed by someone else since you loaded it — reloaded: it is now version ${twinVersion}. Check it, then apply your patch again.`;
      } else {
        $('twin-edit-error').textContent = e.message;
      }
    } finally {
      $('twin-apply').disabled = false;
    }
  });

  $('field').addEventListener('change', loadSeries);
  $('range').addEventListener('change', loadSeries);
  window.addEventListener('resize', draw);

  (async () => {
    try {
      await loadDevice();
    } catch (e) {
      $('device-error').textContent = e.status === 404 ? `No device ${id} (or not in your tenant).` : e.message;
      return;
    }
    live();
    await Promise.all([loadCredentials(), loadTwin(), loadLatest(), loadAlarms()]);
    await loadSeries();
  })();
})();
