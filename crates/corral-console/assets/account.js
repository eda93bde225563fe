// Account: who is signed in, changing one's own password (the current one is needed), and for
// administrators the users of their scope — console users and MQTT broker users: add (a
// generated password shown once), reset, remove.
'use strict';
(() => {
  const { api, el, fill, ago, role } = Corral;
  const $ = (id) => document.getElementById(id);
  const me = document.body.dataset.user;
  const tenant = document.body.dataset.tenant || '';

  fill($('me'), [['Name', me], ['Role', role], ['Tenant', tenant || 'all tenants']].flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));

  $('password-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    $('password-error').textContent = '';
    if (f.password.value !== f.again.value) { $('password-error').textContent = 'The two new passwords differ.'; return; }
    try {
      await api('PUT', `/api/v1/users/${encodeURIComponent(me)}/password`, { password: f.password.value, current_password: f.current.value });
    } catch (e) {
      $('password-error').textContent = e.message;
      return;
    }
    // The change ended this session too.
    location.href = '/login?changed=1';
  });

  if (role !== 'admin') return;
  $('users-card').hidden = false;

  // Shared by the console users' card and the broker users' card, each with its own elements.
  function showPassword(id, who, password) {
    $(id).hidden = false;
    $(id).textContent = `Password of ${who} (shown once): ${password}`;
  }

  async function run(errorId, action) {
    $(errorId).textContent = '';
    try { return await action(); } catch (e) { $(errorId).textContent = e.message; return null; }
  }

  async function load() {
    const out = await run('users-error', () => api('GET', '/api/v1/users'));
    if (!out) return;
    fill($('users').tBodies[0], out.users.map((u) => el('tr', { 'data-user': u.name },
      el('td', {}, u.name), el('td', {}, u.role), el('td', {}, u.tenant || 'all'),
      el('td', { title: u.created_at }, `${ago(u.created_at)} by ${u.created_by}`), el('td', { title: u.password_changed_at }, ago(u.password_changed_at)),
      el('td', {}, u.name === me ? el('span', { class: 'muted' }, 'you') : [
        el('button', { type: 'button', onclick: () => reset(u.name) }, 'Reset password'), ' ',
        el('button', { type: 'button', class: 'danger', onclick: () => remove(u.name) }, 'Remove')]))));
  }

  async function reset(name) {
    if (!confirm(`Give ${name} a new generated password? Their sessions end.`)) return;
    const out = await run('users-error', () => api('PUT', `/api/v1/users/${encodeURIComponent(name)}/password`, {}));
    if (out) { showPassword('user-password', name, out.password); load(); }
  }

  async function remove(name) {
    if (!confirm(`Remove user ${name}? Their sessions end.`)) return;
    if (await run('users-error', () => api('DELETE', `/api/v1/users/${encodeURIComponent(name)}`)) !== null) load();
  }

  const dialog = $('user-add');
  $('user-add-open').addEventListener('click', () => { $('user-add-form').reset(); $('user-add-error').textContent = ''; dialog.showModal(); });
  $('user-add-cancel').addEventListener('click', () => dialog.close());
  $('user-add-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    const body = { name: f.name.value.trim(), role: f.role.value };
    if (f.tenant.value.trim()) body.tenant = f.tenant.value.trim();
    try {
      const out = await api('POST', '/api/v1/users', body);
      dialog.close();
      showPassword('user-password', out.user.name, out.password);
      load();
    } catch (e) {
      $('user-add-error').textContent = e.message;
    }
  });
  load();
  brokerUsers();

  // Broker users: the same, with topic rules instead of a role.
  function brokerUsers() {
    $('broker-users-card').hidden = false;
    const rulesText = (rules) => rules.map((r) => `${r.access} ${r.pattern}`).join('\n');
    const runB = (action) => run('broker-users-error', action);
    const shown = (name, password) => showPassword('broker-user-password', `broker user ${name}`, password);
    async function loadB() {
      const out = await runB(() => api('GET', '/api/v1/broker-users'));
      if (!out) return;
      fill($('broker-users').tBodies[0], out.users.map((u) => el('tr', { 'data-broker-user': u.name },
        el('td', {}, u.name), el('td', {}, u.tenant || 'all'),
        el('td', {}, u.rules.length ? el('pre', { class: 'rules' }, rulesText(u.rules)) : el('span', { class: 'muted' }, 'no topics')),
        el('td', { title: u.updated_at }, ago(u.updated_at)),
        el('td', {}, [
          el('button', { type: 'button', onclick: () => resetB(u.name) }, 'New password'), ' ',
          el('button', { type: 'button', class: 'danger', onclick: () => removeB(u.name) }, 'Remove')]))));
    }
    async function resetB(name) {
      if (!confirm(`Give broker user ${name} a new password? Its connections end.`)) return;
      // 144 random bits from the browser's CSPRNG, as text a client configuration takes.
      const bytes = crypto.getRandomValues(new Uint8Array(18));
      const password = btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_');
      const out = await runB(() => api('PATCH', `/api/v1/broker-users/${encodeURIComponent(name)}`, { password }));
      if (out) { shown(name, password); loadB(); }
    }
    async function removeB(name) {
      if (!confirm(`Remove broker user ${name}? Its connections end.`)) return;
      if (await runB(() => api('DELETE', `/api/v1/broker-users/${encodeURIComponent(name)}`)) !== null) loadB();
    }
    const dialogB = $('broker-user-add');
    $('broker-user-add-open').addEventListener('click', () => { $('broker-user-add-form').reset(); $('broker-user-add-error').textContent = ''; dialogB.showModal(); });
    $('broker-user-add-cancel').addEventListener('click', () => dialogB.close());
    $('broker-user-add-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const f = event.target.elements;
      const rules = f.rules.value.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
        const [access, ...pattern] = l.split(/\s+/);
        return { access, pattern: pattern.join(' ') };
      });
      const body = { name: f.name.value.trim(), rules };
      if (f.tenant.value.trim()) body.tenant = f.tenant.value.trim();
      try {
        const out = await api('POST', '/api/v1/broker-users', body);
        dialogB.close();
        shown(out.user.name, out.password);
        loadB();
      } catch (e) {
        $('broker-user-add-error').textContent = e.message;
      }
    });
    loadB();
  }
})();
