// Inventory: the devices as a searchable, filterable, sortable, paginated table; CSV export of
// the current filter and CSV import with a preview; registering a device with ready-to-paste
// connection snippets. The filter lives in the URL, so a view can be bookmarked and shared.
'use strict';
(() => {
  const { api, el, fill, number, ago, badge, canWrite } = Corral;
  const $ = (id) => document.getElementById(id);
  const PAGE = 50;
  const FILTERS = ['q', 'tenant', 'site', 'profile', 'tag', 'status'];
  const form = $('filters');

  const params = () => new URLSearchParams(location.search);
  for (const name of FILTERS) if (params().get(name)) form.elements[name].value = params().get(name);

  function query(extra = {}) {
    const p = params();
    for (const [k, v] of Object.entries(extra)) { if (v === null || v === '') p.delete(k); else p.set(k, v); }
    return p;
  }

  function navigate(extra) {
    history.pushState(null, '', '/devices?' + query(extra).toString());
    load();
  }

  // Each load answers one click; a slower answer to an earlier click must not overwrite a later
  // one (two quick clicks on a column would otherwise show the first order under the second's
  // arrow).
  let latest = 0;

  async function load() {
    const ticket = ++latest;
    const p = params();
    const offset = Number(p.get('offset') || 0);
    const api_params = new URLSearchParams();
    for (const name of [...FILTERS, 'sort', 'desc']) if (p.get(name)) api_params.set(name, p.get(name));
    api_params.set('limit', PAGE);
    api_params.set('offset', offset);
    const tbody = $('devices').tBodies[0];
    try {
      const page = await api('GET', '/api/v1/devices?' + api_params.toString());
      if (ticket !== latest) return;
      // The arrow follows the rows on screen, not the click.
      document.querySelectorAll('th button[data-sort]').forEach((b) => {
        const sorted = (p.get('sort') || 'id') === b.dataset.sort;
        if (sorted) b.setAttribute('aria-sort', p.get('desc') === 'true' ? 'descending' : 'ascending'); else b.removeAttribute('aria-sort');
      });
      fill(tbody, page.devices.map((d) => el('tr', {},
        el('td', {}, el('a', { href: `/devices/${encodeURIComponent(d.id)}` }, d.id)),
        el('td', {}, badge(d.status), ' ', d.status === 'active' ? badge(d.online ? 'online' : 'offline') : ''),
        el('td', {}, d.profile || ''),
        el('td', {}, d.site || ''),
        el('td', {}, d.tenant),
        el('td', {}, d.tags.join(', ')),
        el('td', { title: d.last_seen || '' }, ago(d.last_seen)))));
      if (!page.devices.length) fill(tbody, el('tr', {}, el('td', { colspan: 7, class: 'empty' }, page.total ? 'No more devices.' : 'No devices match. Clear the filter, or register one.')));
      const first = page.total ? offset + 1 : 0;
      $('summary').textContent = `${number(first)}–${number(offset + page.devices.length)} of ${number(page.total)} devices`;
      $('page').textContent = `Page ${Math.floor(offset / PAGE) + 1} of ${Math.max(1, Math.ceil(page.total / PAGE))}`;
      $('prev').disabled = offset === 0;
      $('next').disabled = !page.next;
    } catch (e) {
      if (ticket !== latest) return;
      fill(tbody, el('tr', {}, el('td', { colspan: 7, class: 'error' }, `Could not load devices: ${e.message}`)));
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const extra = { offset: null };
    for (const name of FILTERS) extra[name] = form.elements[name].value.trim();
    navigate(extra);
  });
  document.querySelectorAll('th button[data-sort]').forEach((b) => b.addEventListener('click', () => {
    const p = params();
    const same = (p.get('sort') || 'id') === b.dataset.sort;
    navigate({ sort: b.dataset.sort, desc: same && p.get('desc') !== 'true' ? 'true' : null, offset: null });
  }));
  $('prev').addEventListener('click', () => navigate({ offset: Math.max(0, Number(params().get('offset') || 0) - PAGE) || null }));
  $('next').addEventListener('click', () => navigate({ offset: Number(params().get('offset') || 0) + PAGE }));
  window.addEventListener('popstate', load);

  function download(name, text, type = 'text/csv') {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el('a', { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  $('export').addEventListener('click', async (event) => {
    event.preventDefault();
    const p = new URLSearchParams();
    for (const name of [...FILTERS, 'sort', 'desc']) if (params().get(name)) p.set(name, params().get(name));
    try {
      download('devices.csv', await api('GET', '/api/v1/devices?' + p.toString(), undefined, { accept: 'text/csv' }));
    } catch (e) {
      $('summary').textContent = `Export failed: ${e.message}`;
    }
  });

  // Register a device: token shown once, with snippets for three doors.
  const dialog = $('register');
  $('register-open').addEventListener('click', () => {
    $('register-form').hidden = false;
    $('registered').hidden = true;
    $('register-form').reset();
    $('register-error').textContent = '';
    dialog.showModal();
  });
  $('register-cancel').addEventListener('click', () => dialog.close());
  $('registered-close').addEventListener('click', () => { dialog.close(); load(); });
  $('register-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    const body = { id: f.id.value.trim() };
    for (const k of ['profile', 'site', 'tenant']) if (f[k].value.trim()) body[k] = f[k].value.trim();
    if (f.tags.value.trim()) body.tags = f.tags.value.split(',').map((t) => t.trim()).filter(Boolean);
    try {
      const created = await api('POST', '/api/v1/devices', body);
      showRegistered(created.device.id, created.token);
    } catch (e) {
      $('register-error').textContent = e.message;
    }
  });

  function showRegistered(id, token) {
    // The ports are those the server bound (the shell carries them); the host is the one this page
    // came from. A listener that is off gets no snippet.
    const ports = document.body.dataset;
    const http = location.origin, host = location.hostname, bareHost = host.replace(/^\[|\]$/g, '');
    const reading = `{"temperature": 21.5}`;
    $('registered-id').textContent = id;
    $('registered-token').textContent = token;
    $('snippet-curl').textContent = `curl -X POST ${http}/api/v1/ingest \\\n  -H 'Authorization: Bearer ${token}' \\\n  -H 'Content-Type: application/json' -d '${reading}'`;
    const mqtt = ports.mqttPort
      ? `mosquitto_pub -h ${bareHost} -p ${ports.mqttPort}`
      : ports.mqttsPort && `mosquitto_pub -h ${bareHost} -p ${ports.mqttsPort} --cafile server-ca.pem`;
    $('snippet-mqtt').textContent = mqtt ? `${mqtt} -i ${id} -u ${id} -P '${token}' \\\n  -t devices/${id}/telemetry -q 1 -m '${reading}'` : '';
    $('snippet-mqtt-section').hidden = !mqtt;
    $('snippet-coap').textContent = ports.coapPort
      ? `coap-client -m post -t 50 -e '${reading}' \\\n  'coap://${host}:${ports.coapPort}/devices/${id}/telemetry?t=${token}'`
      : '';
    $('snippet-coap-section').hidden = !ports.coapPort;
    $('registered-open').href = `/devices/${encodeURIComponent(id)}`;
    $('register-form').hidden = true;
    $('registered').hidden = false;
  }

  // Import: preview (dry run), then import, then a report of every rejected line.
  const importDialog = $('import');
  let csvText = '';
  $('import-file').addEventListener('change', async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    csvText = await file.text();
    event.target.value = '';
    $('import-report').textContent = '';
    $('import-go').hidden = false;
    importDialog.showModal();
    try {
      const preview = await api('POST', '/api/v1/devices/import?dry_run=true', csvText, { 'content-type': 'text/csv' });
      fill($('import-preview'), report(preview, 'would be registered'));
      $('import-go').disabled = !preview.accepted.length;
      $('import-go').textContent = `Import ${preview.accepted.length} devices`;
    } catch (e) {
      fill($('import-preview'), el('p', { class: 'error' }, e.message));
      $('import-go').disabled = true;
    }
  });
  $('import-go').addEventListener('click', async () => {
    try {
      const done = await api('POST', '/api/v1/devices/import', csvText, { 'content-type': 'text/csv' });
      fill($('import-preview'), report(done, 'registered'));
      $('import-report').textContent = `${done.accepted.length} registered, ${done.rejected.length} rejected.`;
      $('import-go').hidden = true;
      if (done.accepted.length) {
        const tokens = 'id,token\r\n' + done.accepted.map((a) => `${a.id},${a.token}`).join('\r\n') + '\r\n';
        $('import-report').append(' ', el('a', { href: '#', id: 'import-tokens', onclick: (e) => { e.preventDefault(); download('device-tokens.csv', tokens); } }, 'Download their tokens (shown once)'));
      }
      load();
    } catch (e) {
      $('import-report').textContent = e.message;
    }
  });
  $('import-close').addEventListener('click', () => importDialog.close());

  function report(result, verb) {
    const rejected = result.rejected.length
      ? el('table', { class: 'data', id: 'import-rejected' }, el('thead', {}, el('tr', {}, el('th', {}, 'Line'), el('th', {}, 'Id'), el('th', {}, 'Why rejected'))),
          el('tbody', {}, result.rejected.map((r) => el('tr', {}, el('td', {}, r.line), el('td', {}, r.id || ''), el('td', {}, r.error)))))
      : el('p', {}, 'No line was rejected.');
    return [el('p', { id: 'import-accepted' }, `${result.accepted.length} devices ${verb}: ${result.accepted.slice(0, 10).map((a) => a.id).join(', ')}${result.accepted.length > 10 ? ', …' : ''}`), rejected];
  }

  // Tenant names to pick from (those the user may see).
  api('GET', '/api/v1/tenants').then((out) => fill($('tenants'), out.tenants.map((t) => el('option', { value: t.id })))).catch(() => {});

  if (!canWrite) { $('register-open').hidden = true; }
  load();
})();
