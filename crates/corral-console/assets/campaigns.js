// Campaigns: firmware and configuration rollouts. Two views of one page, switched without a
// reload: the list (newest first, a page at a time by the API's "next" cursor) and one campaign
// (its plan, progress in all and per wave as bars stacked by device state, the failure reasons,
// its devices by state, and the actions its state allows, for operators and administrators).
// A campaign that is running or paused is polled every 2 s until it ends, the view is left or
// the tab is hidden; a slower answer to an earlier request never overwrites a later one.
'use strict';
(() => {
  const { api, el, fill, number, ago, badge, stack, canWrite } = Corral;
  const $ = (id) => document.getElementById(id);
  const CAMPAIGN_PAGE = 25;
  const DEVICE_PAGE = 50;
  const POLL_MS = 2000;
  const LIST_POLL_MS = 5000;
  // A device's states in the order of its steps; the bars draw the final ones first.
  const STEPS = ['pending', 'notified', 'downloading', 'downloaded', 'installing', 'succeeded', 'failed', 'rolled-back', 'timed-out'];
  const BAR_ORDER = ['succeeded', 'failed', 'rolled-back', 'timed-out', 'installing', 'downloaded', 'downloading', 'notified', 'pending'];
  const FAILURES = ['failed', 'rolled-back', 'timed-out'];
  const FINAL = ['succeeded', ...FAILURES];
  // The campaign states in which it still changes by itself (polled).
  const LIVE = ['running', 'paused'];

  const count = (states, key) => Number(states?.[key]) || 0;
  const sumOf = (states, keys) => keys.reduce((sum, key) => sum + count(states, key), 0);
  /** States this page does not know (a newer server) are counted together as "other". */
  const other = (states) => Object.entries(states || {}).filter(([k]) => !STEPS.includes(k)).reduce((sum, [, n]) => sum + (Number(n) || 0), 0);
  const parts = (states) => [...BAR_ORDER.map((k) => [k, count(states, k)]), ['other', other(states)]];
  const percent = (n, total) => (total ? `${Math.floor((100 * n) / total)}%` : '–');
  const ratio = (r) => `${Math.round(r * 1000) / 10}%`;
  const sizeText = (size) => (size === null || size === undefined ? '–' : typeof size === 'number' ? `${number(size)} devices` : String(size));

  /** The counts by state as text with the bars' colours, in the order of the steps. */
  function breakdown(states) {
    const shown = [...STEPS.map((k) => [k, count(states, k)]), ['other', other(states)]].filter(([, n]) => n > 0);
    if (!shown.length) return el('span', { class: 'muted' }, 'no devices');
    return el('span', { class: 'counts' }, shown.map(([k, n]) => el('span', { 'data-state': k }, el('span', { class: `swatch seg-${k}` }), `${number(n)} ${k}`)));
  }

  function at(ms) {
    if (ms === null || ms === undefined) return '–';
    const iso = new Date(ms).toISOString();
    return el('time', { datetime: iso, title: iso }, ago(iso));
  }

  function duration(s) {
    if (s % 86400 === 0) return `${s / 86400} d`;
    if (s % 3600 === 0) return `${s / 3600} h`;
    if (s % 60 === 0) return `${s / 60} min`;
    return `${s} s`;
  }

  function facts(container, pairs) {
    fill(container, pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v === null || v === undefined || v === '' ? '–' : v)]));
  }

  /** What a campaign rolls out, short: the artifact's name and version, or the patched keys. */
  function rollsOut(c, artifact) {
    if (c.kind === 'firmware') {
      return [artifact ? `${artifact.name} ` : '', el('strong', {}, c.version || '?'), artifact ? '' : el('div', { class: 'muted small' }, c.artifact)];
    }
    const patch = JSON.stringify(c.configuration ?? {});
    return el('code', { title: patch }, patch.length > 60 ? `${patch.slice(0, 59)}…` : patch);
  }

  function targetText(target = {}) {
    const out = ['profile', 'site', 'tag', 'tenant'].filter((k) => target[k]).map((k) => `${k} ${target[k]}`).join(' · ');
    if (!target.where) return out;
    return [out ? `${out} · where ` : 'where ', el('code', {}, target.where)];
  }

  function planFacts(plan = {}) {
    const waves = (plan.waves || []).map(sizeText).join(' → ');
    const abort = [
      plan.abort?.failure_ratio !== undefined && plan.abort?.failure_ratio !== null ? `more than ${ratio(plan.abort.failure_ratio)} of a wave failed` : null,
      plan.abort?.failures !== undefined && plan.abort?.failures !== null ? `${number(plan.abort.failures)} devices of a wave failed` : null,
    ].filter(Boolean).join(', or ');
    return [
      ['Waves', waves ? `${waves} (cumulative)` : '–'],
      ['Concurrency', `at most ${number(plan.concurrency)} devices at a time`],
      ['Pace', plan.max_per_minute ? `at most ${number(plan.max_per_minute)} devices notified a minute` : 'no limit'],
      ['Each wave needs', plan.min_success_ratio ? `${ratio(plan.min_success_ratio)} successes before the next starts` : 'no minimum of successes'],
      ['Aborts once', abort || 'never (no failure threshold)'],
      ['Device timeout', plan.device_timeout_s ? duration(plan.device_timeout_s) : '–'],
      ['Window', plan.window ? `${plan.window.start}–${plan.window.end} UTC, daily` : 'any time'],
    ];
  }

  // Artifacts by id, for their names in the list: fetched when the list is (re)entered or paged.
  let artifactCache = null;
  function artifactNames(fresh) {
    if (fresh || !artifactCache) {
      artifactCache = api('GET', '/api/v1/artifacts?limit=1000').then((out) => new Map(out.artifacts.map((a) => [a.id, a]))).catch(() => new Map());
    }
    return artifactCache;
  }

  // The list of campaigns. The cursors of the pages before this one are kept in the history
  // entry, so "Newer" and the browser's Back both return to them.
  function listView() {
    const controller = new AbortController();
    const on = (node, type, fn) => node.addEventListener(type, fn, { signal: controller.signal });
    let left = false, ticket = 0, timer = null, live = false, next = null;
    const after = () => new URLSearchParams(location.search).get('after');
    const trail = () => history.state?.trail || [];
    document.title = 'Campaigns · Corral';

    async function load(fresh = true) {
      const mine = ++ticket;
      clearTimeout(timer);
      const query = new URLSearchParams({ limit: CAMPAIGN_PAGE });
      if (after()) query.set('after', after());
      const tbody = $('campaigns').tBodies[0];
      try {
        const [page, names] = await Promise.all([api('GET', `/api/v1/campaigns?${query}`), artifactNames(fresh)]);
        if (left || mine !== ticket) return;
        fill(tbody, page.campaigns.map((c) => {
          const failed = sumOf(c.states, FAILURES);
          return el('tr', { 'data-campaign': c.id },
            el('td', {}, el('a', { href: `/campaigns/${encodeURIComponent(c.id)}`, 'data-view': 'campaign' }, c.name), el('div', { class: 'muted small' }, c.id)),
            el('td', {}, c.kind),
            el('td', {}, rollsOut(c, names.get(c.artifact))),
            el('td', {}, badge(c.state), c.reason ? el('div', { class: 'muted small clip', title: c.reason }, c.reason) : ''),
            el('td', { class: 'num' }, number(c.devices)),
            el('td', { class: 'num' }, number(count(c.states, 'succeeded'))),
            el('td', { class: failed ? 'num bad' : 'num' }, number(failed)),
            el('td', {}, el('div', { class: 'progress' }, stack(parts(c.states), c.devices), el('span', { class: 'muted small' }, percent(sumOf(c.states, FINAL), c.devices)))),
            el('td', {}, at(c.created_at_ms)));
        }));
        if (!page.campaigns.length) {
          fill(tbody, el('tr', {}, el('td', { colspan: 9, class: 'empty' }, after() ? 'No older campaigns.' : 'No campaigns yet. Create one with POST /api/v1/campaigns.')));
        }
        next = page.next;
        $('campaigns-summary').textContent = `${page.campaigns.length}${page.next ? '+' : ''} campaigns${after() ? ' (older ones)' : ''}`;
        $('campaigns-page').textContent = `Page ${trail().length + 1}`;
        $('campaigns-prev').disabled = !after();
        $('campaigns-next').disabled = !next;
        live = page.campaigns.some((c) => LIVE.includes(c.state));
      } catch (e) {
        if (left || mine !== ticket) return;
        fill(tbody, el('tr', {}, el('td', { colspan: 9, class: 'error' }, `Could not load campaigns: ${e.message}`)));
      }
      schedule();
    }

    // While a campaign on screen runs, its progress follows.
    function schedule() {
      clearTimeout(timer);
      timer = null;
      if (!left && live && !document.hidden) timer = setTimeout(() => load(false), LIST_POLL_MS);
    }

    on($('campaigns-next'), 'click', () => {
      if (!next) return;
      history.pushState({ trail: [...trail(), after() || ''] }, '', `/campaigns?after=${encodeURIComponent(next)}`);
      load();
    });
    on($('campaigns-prev'), 'click', () => {
      const before = trail();
      const cursor = before.length ? before[before.length - 1] : '';
      history.pushState({ trail: before.slice(0, -1) }, '', cursor ? `/campaigns?after=${encodeURIComponent(cursor)}` : '/campaigns');
      load();
    });
    load();
    return {
      leave() { left = true; clearTimeout(timer); controller.abort(); },
      wake() { if (!left && live && !timer) load(false); },
    };
  }

  // One campaign. Its devices' filter (state) is in the URL; their pages are cursors kept here.
  function detailView(id) {
    const controller = new AbortController();
    const on = (node, type, fn) => node.addEventListener(type, fn, { signal: controller.signal });
    const path = `/api/v1/campaigns/${encodeURIComponent(id)}`;
    const select = $('device-state');
    const buttons = ['campaign-start', 'campaign-pause', 'campaign-resume', 'campaign-cancel'].map($);
    let left = false, timer = null, acting = false, campaign = null, artifact;
    let campaignTicket = 0, deviceTicket = 0;
    let cursor = null, next = null, trail = [], shown = 0;

    // Nothing of a campaign shown before stays on screen.
    document.title = 'Campaign · Corral';
    $('campaign-name').textContent = id;
    $('campaign-state').textContent = '';
    $('campaign-reason').textContent = '';
    $('campaign-error').textContent = '';
    $('campaign-updated').textContent = 'Loading…';
    for (const b of buttons) b.hidden = true;
    for (const box of ['campaign-facts', 'campaign-plan', 'campaign-progress', 'failures']) fill($(box));
    fill($('waves').tBodies[0]);
    fill($('campaign-devices').tBodies[0]);
    $('devices-summary').textContent = '';
    const wanted = new URLSearchParams(location.search).get('state');
    select.value = STEPS.includes(wanted) ? wanted : '';

    function show(c) {
      campaign = c;
      document.title = `${c.name} · Campaigns · Corral`;
      $('campaign-view').dataset.state = c.state;
      $('campaign-name').textContent = c.name;
      $('campaign-state').textContent = c.state;
      $('campaign-state').className = `badge ${c.state}`;
      $('campaign-reason').textContent = c.reason ? `${c.state === 'aborted' ? 'Aborted' : 'Reason'}: ${c.reason}` : '';
      const allow = (button, states) => { $(button).hidden = !canWrite || !states.includes(c.state); };
      allow('campaign-start', ['draft']);
      allow('campaign-pause', ['running']);
      allow('campaign-resume', ['paused']);
      allow('campaign-cancel', ['draft', 'running', 'paused']);
      showFacts();
      deviceSummary();
      facts($('campaign-plan'), planFacts(c.plan));

      const done = sumOf(c.states, FINAL), failed = sumOf(c.states, FAILURES);
      fill($('campaign-progress'),
        el('div', { class: 'progress big' }, stack(parts(c.states), c.devices), el('strong', {}, percent(done, c.devices))),
        el('p', { class: 'small' }, `${number(done)} of ${number(c.devices)} devices final: ${number(count(c.states, 'succeeded'))} succeeded, ${number(failed)} failed.`),
        breakdown(c.states));

      fill($('waves').tBodies[0], (c.waves || []).map((w) => el('tr', { 'data-wave': w.wave },
        el('th', { scope: 'row' }, `Wave ${w.wave}`),
        el('td', {}, sizeText(w.size)),
        el('td', { class: 'num' }, number(w.devices)),
        el('td', {}, el('div', { class: 'progress' }, stack(parts(w.states), w.devices), el('span', { class: 'muted small' }, percent(sumOf(w.states, FINAL), w.devices)))),
        el('td', { class: 'states' }, breakdown(w.states)))));

      fill($('failures'), c.failures?.length
        ? el('table', { class: 'data tally', id: 'failure-reasons' },
          el('thead', {}, el('tr', {}, el('th', {}, 'Reason'), el('th', { class: 'num' }, 'Devices'))),
          el('tbody', {}, c.failures.map((f) => el('tr', {}, el('td', { class: 'reason' }, f.reason), el('td', { class: 'num' }, number(f.devices))))))
        : el('p', { class: 'empty' }, failed ? 'The failed devices gave no reason.' : 'No device has failed.'));

      const now = new Date().toLocaleTimeString();
      $('campaign-updated').textContent = LIVE.includes(c.state)
        ? `Updated ${now}; refreshes every ${POLL_MS / 1000} s while it is ${c.state}.`
        : c.state === 'draft' ? `Updated ${now}. A draft: nothing is sent until it is started.` : `Updated ${now}. The campaign is ${c.state}; it changes no more.`;
    }

    function showFacts() {
      const c = campaign;
      let what;
      if (c.kind === 'firmware') {
        what = [el('strong', {}, artifact ? `${artifact.name} ${c.version}` : c.version || '?'),
          el('div', { class: 'muted small' }, artifact ? `${c.artifact} · ${number(artifact.size)} bytes · sha256 ${artifact.sha256.slice(0, 16)}… · signed by ${artifact.signed_by}` : c.artifact)];
        if (artifact === undefined) {
          artifact = null;
          api('GET', `/api/v1/artifacts/${encodeURIComponent(c.artifact)}`).then((a) => { if (!left) { artifact = a; showFacts(); } }).catch(() => {});
        }
      } else {
        what = el('code', { class: 'patch' }, JSON.stringify(c.configuration ?? {}, null, 1));
      }
      facts($('campaign-facts'), [
        ['Id', c.id],
        [c.kind === 'firmware' ? 'Firmware' : 'Configuration', what],
        ['Target', targetText(c.target)],
        ['Dynamic', c.dynamic ? 'yes: devices that join the target are added to its last wave' : 'no: the devices selected when it was created'],
        ['Tenant', c.tenant],
        ['Created', [c.created_by ? `by ${c.created_by}, ` : '', at(c.created_at_ms)]],
        ['Started', at(c.started_at_ms)],
        ['Finished', at(c.finished_at_ms)],
      ]);
    }

    async function loadCampaign() {
      const mine = ++campaignTicket;
      try {
        const progress = await api('GET', path);
        if (left || mine !== campaignTicket) return;
        $('campaign-error').textContent = '';
        show(progress);
      } catch (e) {
        if (left || mine !== campaignTicket) return;
        if (e.status === 404) {
          campaign = null;
          $('campaign-updated').textContent = '';
        }
        $('campaign-error').textContent = e.status === 404 ? `No campaign ${id} (or not in your tenant).` : `Could not load the campaign: ${e.message}`;
      }
    }

    async function loadDevices() {
      const mine = ++deviceTicket;
      const query = new URLSearchParams({ limit: DEVICE_PAGE });
      if (select.value) query.set('state', select.value);
      if (cursor) query.set('after', cursor);
      const tbody = $('campaign-devices').tBodies[0];
      try {
        const page = await api('GET', `${path}/devices?${query}`);
        if (left || mine !== deviceTicket) return;
        fill(tbody, page.devices.map((d) => el('tr', { 'data-device': d.device },
          el('td', {}, el('a', { href: `/devices/${encodeURIComponent(d.device)}` }, d.device)),
          el('td', { class: 'num' }, number(d.wave)),
          el('td', {}, badge(d.state)),
          el('td', { class: 'reason' }, d.reason ?? ''),
          el('td', {}, d.command ? el('code', {}, d.command) : ''),
          el('td', {}, at(d.notified_at_ms)),
          el('td', {}, at(d.updated_at_ms)))));
        if (!page.devices.length) {
          fill(tbody, el('tr', {}, el('td', { colspan: 7, class: 'empty' }, cursor ? 'No more devices.' : select.value ? `No device is ${select.value}.` : 'No devices.')));
        }
        next = page.next;
        shown = page.devices.length;
        deviceSummary();
        $('devices-page').textContent = `Page ${trail.length + 1}`;
        $('devices-prev').disabled = !cursor;
        $('devices-next').disabled = !next;
      } catch (e) {
        if (left || mine !== deviceTicket) return;
        fill(tbody, el('tr', {}, el('td', { colspan: 7, class: 'error' }, `Could not load the devices: ${e.message}`)));
      }
    }

    // "51–100 of 240 failed": the total is the campaign's count, which may arrive after the page.
    function deviceSummary() {
      const first = trail.length * DEVICE_PAGE;
      const total = campaign ? (select.value ? count(campaign.states, select.value) : campaign.devices) : null;
      $('devices-summary').textContent = shown
        ? `${number(first + 1)}–${number(first + shown)}${total === null ? '' : ` of ${number(total)}`}${select.value ? ` ${select.value}` : ''}`
        : '';
    }

    async function refresh() {
      clearTimeout(timer);
      timer = null;
      if (left || acting) return;
      await Promise.all([loadCampaign(), loadDevices()]);
      schedule();
    }

    function schedule() {
      clearTimeout(timer);
      timer = null;
      if (!left && !acting && !document.hidden && campaign && LIVE.includes(campaign.state)) timer = setTimeout(refresh, POLL_MS);
    }

    // An action's answer is the campaign after it: it is shown whatever a poll sent before it
    // brings back (that answer is dropped), and no poll runs meanwhile.
    async function act(action, question) {
      if (!campaign || (question && !confirm(question))) return;
      acting = true;
      clearTimeout(timer);
      const mine = ++campaignTicket;
      for (const b of buttons) b.disabled = true;
      $('campaign-error').textContent = '';
      try {
        const progress = await api('POST', `${path}/${action}`);
        if (left) return;
        if (mine === campaignTicket) show(progress);
      } catch (e) {
        if (left) return;
        await loadCampaign();
        $('campaign-error').textContent = e.status === 409 ? `${e.message} (reloaded: it is ${campaign?.state ?? 'gone'})` : e.message;
      } finally {
        for (const b of buttons) b.disabled = false;
        acting = false;
      }
      await loadDevices();
      schedule();
    }

    on($('campaign-start'), 'click', () => act('start', `Start campaign "${campaign.name}"? Its ${number(campaign.devices)} devices are notified wave by wave.`));
    on($('campaign-pause'), 'click', () => act('pause'));
    on($('campaign-resume'), 'click', () => act('resume'));
    on($('campaign-cancel'), 'click', () => act('cancel', `Cancel campaign "${campaign.name}"? No more devices are notified, and it cannot be resumed.`));
    on(select, 'change', () => {
      cursor = null;
      trail = [];
      const query = select.value ? `?state=${encodeURIComponent(select.value)}` : '';
      history.replaceState(history.state, '', `/campaigns/${encodeURIComponent(id)}${query}`);
      loadDevices();
    });
    on($('devices-next'), 'click', () => { if (next) { trail.push(cursor); cursor = next; loadDevices(); } });
    on($('devices-prev'), 'click', () => { cursor = trail.length ? trail.pop() : null; loadDevices(); });

    refresh();
    return {
      leave() { left = true; clearTimeout(timer); timer = null; controller.abort(); },
      wake() { if (!left && !timer && !acting && campaign && LIVE.includes(campaign.state)) refresh(); },
    };
  }

  fill($('device-state'), el('option', { value: '' }, 'any'), STEPS.map((s) => el('option', { value: s }, s)));

  // The view follows the address: /campaigns is the list, /campaigns/{id} one campaign. Leaving
  // a view stops its polling, and its answers still on the way are dropped.
  let view = null;
  function route() {
    view?.leave();
    const match = location.pathname.match(/^\/campaigns\/([^/]+)\/?$/);
    $('campaigns-view').hidden = Boolean(match);
    $('campaign-view').hidden = !match;
    view = match ? detailView(decodeURIComponent(match[1])) : listView();
    window.scrollTo(0, 0);
  }
  document.addEventListener('click', (event) => {
    const link = event.target.closest('a[data-view]');
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    history.pushState(null, '', link.getAttribute('href'));
    route();
  });
  window.addEventListener('popstate', route);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) view?.wake(); });
  window.addEventListener('pagehide', () => view?.leave());
  window.addEventListener('pageshow', (event) => { if (event.persisted) route(); });
  route();
})();
