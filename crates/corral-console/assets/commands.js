// Commands: the newest first, filtered by device and state, with each one's steps and the
// device's answer; operators send a command to a device and see its answer arrive.
'use strict';
(() => {
  const { api, sql, quote, el, fill, ago, badge, canWrite } = Corral;
  const $ = (id) => document.getElementById(id);
  const LIMIT = 200;
  const OPEN = ['queued', 'sent', 'delivered'];
  const params = new URLSearchParams(location.search);
  $('device').value = params.get('device') ?? '';
  $('state').value = params.get('state') ?? '';
  $('send-device').value = params.get('device') ?? '';
  $('send').hidden = !canWrite;

  function condition() {
    const where = [];
    const device = $('device').value.trim();
    if (device) where.push(`device = ${quote(device)}`);
    const state = $('state').value;
    if (state === 'open') where.push(`state IN (${OPEN.map(quote).join(', ')})`);
    else if (state) where.push(`state = ${quote(state)}`);
    return where.length ? `WHERE ${where.join(' AND ')}` : '';
  }

  /** The steps a command took, each with its time on hover. */
  function steps(c) {
    const at = (label, iso) => (iso ? el('time', { datetime: iso, title: iso }, `${label} ${ago(iso)}`) : null);
    const parts = [at('sent', c.sent_at), at('delivered', c.delivered_at), at('finished', c.finished_at)].filter(Boolean);
    if (!c.finished_at) parts.push(el('span', { class: 'muted', title: c.expires_at }, `expires ${c.expires_at.slice(0, 19).replace('T', ' ')} UTC`));
    return [c.door ? el('div', { class: 'muted small' }, `via ${c.door}`) : null, ...parts.map((p) => el('div', { class: 'small' }, p))];
  }

  async function load() {
    const tbody = $('commands').tBodies[0];
    try {
      const out = await sql(`SELECT id, device, name, payload, state, door, created_at, sent_at, delivered_at, finished_at, expires_at, response, reason, job
        FROM commands ${condition()} ORDER BY created_at DESC, id DESC LIMIT ${LIMIT + 1}`);
      const commands = out.rows.slice(0, LIMIT).map((row) => Object.fromEntries(out.columns.map((c, i) => [c, row[i]])));
      $('summary').textContent = `${commands.length}${out.rows.length > LIMIT ? '+' : ''} commands`;
      fill(tbody, commands.map((c) => el('tr', { 'data-command': c.id },
        el('td', { title: c.created_at }, ago(c.created_at), el('div', { class: 'muted small' }, c.id)),
        el('td', {}, el('a', { href: `/devices/${encodeURIComponent(c.device)}` }, c.device)),
        el('td', {}, el('strong', {}, c.name), c.payload && c.payload !== 'null' ? el('div', { class: 'muted small mono' }, c.payload) : '',
          c.job ? el('div', { class: 'muted small' }, `job ${c.job}`) : ''),
        el('td', {}, badge(c.state)),
        el('td', {}, steps(c)),
        el('td', { class: 'mono small' }, c.reason ?? c.response ?? ''))));
      if (!commands.length) fill(tbody, el('tr', {}, el('td', { colspan: 6, class: 'empty' }, 'No commands here.')));
    } catch (e) {
      fill(tbody, el('tr', {}, el('td', { colspan: 6, class: 'error' }, e.message)));
    }
  }

  async function send(event) {
    event.preventDefault();
    $('send-error').textContent = '';
    $('send-notice').textContent = '';
    const text = $('send-payload').value.trim();
    let payload = null;
    try {
      payload = text ? JSON.parse(text) : null;
    } catch (e) {
      $('send-error').textContent = `The payload is not JSON: ${e.message}`;
      return;
    }
    const device = $('send-device').value.trim();
    const wait = Number($('send-wait').value) || 0;
    const body = { name: $('send-name').value.trim(), payload, timeout: Number($('send-timeout').value) || undefined, wait: wait || undefined };
    $('send-button').disabled = true;
    $('send-notice').textContent = wait ? `Sent; waiting up to ${wait} s for ${device} to answer…` : 'Sending…';
    try {
      const c = await api('POST', `/api/v1/devices/${encodeURIComponent(device)}/commands`, body);
      const answer = c.reason ?? (c.response === null || c.response === undefined ? '' : JSON.stringify(c.response));
      $('send-notice').textContent = OPEN.includes(c.state)
        ? `${c.id} is ${c.state}: no answer yet; it waits for the device until it expires.`
        : `${c.id} ${c.state}${answer ? `: ${answer}` : ''}`;
    } catch (e) {
      $('send-notice').textContent = '';
      $('send-error').textContent = e.message;
    } finally {
      $('send-button').disabled = false;
    }
    load();
  }

  function filtered() {
    const query = new URLSearchParams();
    if ($('device').value.trim()) query.set('device', $('device').value.trim());
    if ($('state').value) query.set('state', $('state').value);
    history.replaceState(null, '', `/commands${query.size ? `?${query}` : ''}`);
    load();
  }

  $('send').addEventListener('submit', send);
  $('state').addEventListener('change', filtered);
  $('device').addEventListener('change', filtered);
  load();
  setInterval(load, 10000);
})();
