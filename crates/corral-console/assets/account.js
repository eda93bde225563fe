// Account: who is signed in, changing one's own password (the current one is needed), and for
// administrators the users of their scope: add (a generated password shown once), reset, remove.
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

  function showPassword(name, password) {
    $('user-password').hidden = false;
    $('user-password').textContent = `Password of ${name} (shown once): ${password}`;
  }

  async function run(action) {
    $('users-error').textContent = '';
    try { return await action(); } catch (e) { $('users-error').textContent = e.message; return null; }
  }

  async function load() {
    const out = await run(() => api('GET', '/api/v1/users'));
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
    const out = await run(() => api('PUT', `/api/v1/users/${encodeURIComponent(name)}/password`, {}));
    if (out) { showPassword(name, out.password); load(); }
  }

  async function remove(name) {
    if (!confirm(`Remove user ${name}? Their sessions end.`)) return;
    if (await run(() => api('DELETE', `/api/v1/users/${encodeURIComponent(name)}`)) !== null) load();
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
      showPassword(out.user.name, out.password);
      load();
    } catch (e) {
      $('user-add-error').textContent = e.message;
    }
  });
  load();
})();
