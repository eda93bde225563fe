// Alarms: the open ones first, with acknowledge, clear and comment for operators.
'use strict';
(() => {
  const { api, el, fill, ago, badge, canWrite } = Corral;
  const $ = (id) => document.getElementById(id);
  const select = $('status');
  select.value = new URLSearchParams(location.search).get('status') ?? 'open';

  async function load() {
    const status = select.value;
    const query = status === 'open' ? 'open=true' : status ? `status=${status}` : '';
    const tbody = $('alarms').tBodies[0];
    try {
      const out = await api('GET', `/api/v1/alarms?limit=200&${query}`);
      $('summary').textContent = `${out.alarms.length}${out.next_before ? '+' : ''} alarms`;
      fill(tbody, out.alarms.map((a) => el('tr', { 'data-alarm': a.id },
        el('td', {}, badge(a.severity)),
        el('td', {}, el('strong', {}, a.rule), el('div', { class: 'muted small' }, a.message)),
        el('td', {}, el('a', { href: `/devices/${encodeURIComponent(a.device)}` }, a.device)),
        el('td', {}, badge(a.status), a.acknowledged_by ? el('div', { class: 'muted small' }, `by ${a.acknowledged_by}`) : ''),
        el('td', { title: a.first_at }, ago(a.first_at), a.count > 1 ? el('div', { class: 'muted small' }, `${a.count} times`) : ''),
        el('td', {}, JSON.stringify(a.last_values)),
        canWrite ? el('td', {}, actions(a)) : null)));
      if (!out.alarms.length) fill(tbody, el('tr', {}, el('td', { colspan: 7, class: 'empty' }, 'No alarms here. Rules raise them (corral rule add).')));
    } catch (e) {
      fill(tbody, el('tr', {}, el('td', { colspan: 7, class: 'error' }, e.message)));
    }
  }

  function actions(alarm) {
    const run = (fn) => async () => { try { await fn(); load(); } catch (e) { $('summary').textContent = e.message; } };
    return [
      alarm.status === 'active' ? el('button', { type: 'button', onclick: run(() => api('POST', `/api/v1/alarms/${alarm.id}/ack`)) }, 'Acknowledge') : '',
      alarm.status !== 'cleared' ? el('button', { type: 'button', onclick: run(() => api('POST', `/api/v1/alarms/${alarm.id}/clear`)) }, 'Clear') : '',
      el('button', { type: 'button', onclick: run(async () => {
        const text = prompt(`Comment on alarm ${alarm.id}`);
        if (text) await api('POST', `/api/v1/alarms/${alarm.id}/comments`, { text });
      }) }, 'Comment'),
    ];
  }

  select.addEventListener('change', () => { history.replaceState(null, '', `/alarms?status=${select.value}`); load(); });
  load();
  setInterval(load, 15000);
})();
