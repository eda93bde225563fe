// The console in headless Chromium (Debian's, driven by playwright-core), against the server
// tests/browser.rs started. Every step that fails saves a screenshot named FAILED-<step>; every
// page is also saved as a screenshot for people to look at (SHOTS directory).
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const { BASE, ADMIN_TOKEN, SHOTS, CHROMIUM = '/usr/bin/chromium' } = process.env;
fs.mkdirSync(SHOTS, { recursive: true });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const problems = [];
const watch = (p, who) => {
  p.on('pageerror', (e) => problems.push(`${who} page error: ${e.message}`));
  p.on('console', (m) => {
    // Refusals the steps provoke on purpose: a wrong password (401), a forged request (403) and
    // a broker user with a rule that is not a topic filter (400).
    const badRule = m.location().url.endsWith('/api/v1/broker-users') && m.text().includes('status of 400');
    const provoked = m.location().url.endsWith('/login') || m.text().includes('403') || badRule;
    if (m.type() === 'error' && !provoked) problems.push(`${who} console: ${m.text()} (${m.location().url})`);
  });
};
watch(page, 'admin');
const expect = (condition, message) => { if (!condition) throw new Error(message); };
const shot = (p, name) => p.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
let current = page;
async function step(name, fn) {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (e) {
    await current.screenshot({ path: `${SHOTS}/FAILED-${name}.png`, fullPage: true }).catch(() => {});
    console.log(`not ok - ${name}: ${e.message}`);
    await browser.close();
    process.exit(1);
  }
}

async function signIn(p, name, password) {
  await p.goto(`${BASE}/`);
  expect(p.url().startsWith(`${BASE}/login`), `a visitor lands on the sign-in page, not ${p.url()}`);
  await p.fill('#name', name);
  await p.fill('#password', password);
  await p.click('button[type=submit]');
  await p.waitForURL(`${BASE}/`);
}

await step('sign in', async () => {
  await page.goto(`${BASE}/login`);
  await shot(page, 'login');
  await page.fill('#name', 'admin');
  await page.fill('#password', 'wrong password');
  await page.click('button[type=submit]');
  expect((await page.textContent('.error')).includes('Wrong user name or password'), 'a wrong password is explained');
  await signIn(page, 'admin', ADMIN_TOKEN);
  await page.waitForFunction(() => document.getElementById('t-devices').textContent !== '–');
  expect(Number((await page.textContent('#t-devices')).replace(/,/g, '')) === 120, 'the overview counts the fleet');
  await page.waitForSelector('#by-site .bar');
  await page.waitForSelector('#changes td');
  expect((await page.textContent('#changes')).includes('device.create'), 'an administrator sees recent changes');
  await shot(page, 'overview');
});

await step('keyboard', async () => {
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.className) === 'skip', 'the first Tab reaches "Skip to content"');
  await page.keyboard.press('Enter');
  expect(await page.evaluate(() => document.activeElement.id) === 'main', 'skipping lands on the content');
});

await step('search the inventory', async () => {
  await page.click('nav >> text=Inventory');
  await page.waitForSelector('#devices tbody tr td a');
  expect((await page.textContent('#summary')).includes('of 120 devices'), 'all devices are counted');
  expect(await page.locator('#devices tbody tr').count() === 50, 'a page holds 50 devices');
  await page.click('#next');
  await page.waitForFunction(() => document.getElementById('summary').textContent.startsWith('51–100'));
  await page.fill('input[name=q]', 'pump-01');
  await page.selectOption('select[name=status]', 'active');
  await page.click('#filters button[type=submit]');
  await page.waitForFunction(() => document.getElementById('summary').textContent.includes('of 10 devices'));
  expect(page.url().includes('q=pump-01') && !page.url().includes('offset'), 'the filter is in the URL and starts at page 1');
  await page.click('th button[data-sort=site]');
  await page.click('th button[data-sort=site]');
  await page.waitForFunction(() => document.querySelector('th button[data-sort=site]').getAttribute('aria-sort') === 'descending');
  const sites = await page.$$eval('#devices tbody tr td:nth-child(4)', (cells) => cells.map((c) => c.textContent));
  expect(JSON.stringify(sites) === JSON.stringify([...sites].sort().reverse()), `sorted by site, descending: ${sites}`);
  await shot(page, 'inventory');
});

let curlSnippet = '', mqttSnippet = '', coapSnippet = '';
await step('register a device and send data with its snippet', async () => {
  await page.goto(`${BASE}/devices`);
  await page.click('#register-open');
  await page.fill('#register-form input[name=id]', 'browser-1');
  await page.fill('#register-form input[name=profile]', 'reefer');
  await page.fill('#register-form input[name=site]', 'lab');
  await page.click('#register-form button[type=submit]');
  await page.waitForSelector('#registered:not([hidden])');
  expect((await page.textContent('#registered-token')).startsWith('cdt_'), 'the token is shown');
  curlSnippet = await page.textContent('#snippet-curl');
  mqttSnippet = await page.textContent('#snippet-mqtt');
  coapSnippet = await page.textContent('#snippet-coap');
  // The server runs on port 0: the snippets must name the ports it bound, not the defaults.
  expect(/ -p \d+ /.test(mqttSnippet) && !mqttSnippet.includes(' -p 1883 '), `the MQTT snippet names the bound port: ${mqttSnippet}`);
  expect(/coap:\/\/[^/]+:\d+\//.test(coapSnippet) && !coapSnippet.includes(':5683/'), `the CoAP snippet names the bound port: ${coapSnippet}`);
  await shot(page, 'registered');
  const out = execFileSync('bash', ['-c', curlSnippet + ' -sS -w " %{http_code}"']).toString();
  expect(out.trim().endsWith(' 200'), `the curl snippet works as printed: ${out}`);
});

await step('the device chart gains a new point without a reload', async () => {
  await page.click('#registered-open');
  await page.waitForURL(`${BASE}/devices/browser-1`);
  await page.waitForSelector('#chart svg path.line[data-points="1"]', { state: 'attached' });
  await page.waitForSelector('#live.online');
  const reloads = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  const sent = Date.now();
  const hotter = curlSnippet.replace('21.5', '23.5');
  execFileSync('bash', ['-c', hotter + ' -sS -o /dev/null']);
  await page.waitForSelector('#chart svg path.line[data-points="2"]', { state: 'attached', timeout: 5000 });
  const latency = Date.now() - sent;
  expect(await page.evaluate(() => performance.getEntriesByType('navigation').length) === reloads, 'no reload');
  expect((await page.textContent('#latest')).includes('23.5'), 'latest values follow');
  console.log(`# live update reached the chart ${latency} ms after the request was sent`);
  await shot(page, 'device');
});

await step('the MQTT and CoAP snippets work as printed', async () => {
  // mosquitto_pub returns after the PUBACK and coap-client after the 2.04: both mean durable.
  execFileSync('bash', ['-c', mqttSnippet.replace('21.5', '25.5')]);
  await page.waitForSelector('#chart svg path.line[data-points="3"]', { state: 'attached', timeout: 5000 });
  const out = execFileSync('bash', ['-c', coapSnippet.replace('coap-client ', 'coap-client-notls ').replace('21.5', '27.5')]).toString();
  await page.waitForSelector('#chart svg path.line[data-points="4"]', { state: 'attached', timeout: 5000 });
  expect((await page.textContent('#latest')).includes('27.5'), `latest values follow the CoAP reading: ${out}`);
});

await step('a pre-shared key made on the device page works over CoAP/DTLS', async () => {
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#psk-generate');
  await page.waitForSelector('#new-psk:not([hidden])');
  await page.waitForSelector('#psk-remove');
  const shown = await page.textContent('#new-psk');
  const snippet = shown.slice(shown.indexOf('coap-client'));
  expect(snippet.startsWith('coap-client') && snippet.includes('coaps://'), `a coaps snippet: ${shown}`);
  await shot(page, 'device-psk');
  // Debian names the DTLS-capable client coap-client-openssl (the inventory page says so).
  execFileSync('bash', ['-c', snippet.replace('coap-client ', 'coap-client-openssl ').replace('21.5', '29.5')]);
  await page.waitForSelector('#chart svg path.line[data-points="5"]', { state: 'attached', timeout: 5000 });
});

await step('export the filtered inventory as CSV', async () => {
  await page.goto(`${BASE}/devices?site=lab`);
  await page.waitForSelector('#devices tbody tr td a');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  const text = fs.readFileSync(await download.path(), 'utf8');
  const lines = text.trim().split(/\r?\n/);
  expect(lines[0] === 'id,profile,site,tenant,tags,attributes,status,last_seen', `header: ${lines[0]}`);
  expect(lines.length === 2 && lines[1].startsWith('browser-1,reefer,lab,default'), `only the filtered device: ${text}`);
});

await step('import CSV with a preview and a report of rejected rows', async () => {
  const csv = 'id,profile,site,tags\nimported-1,meter,annex,new\nbad id!,meter,annex,\nbrowser-1,meter,annex,\nimported-2,meter,annex,\n';
  await page.setInputFiles('#import-file', { name: 'fleet.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await page.waitForSelector('#import-accepted');
  expect((await page.textContent('#import-accepted')).startsWith('2 devices would be registered'), await page.textContent('#import-accepted'));
  expect(await page.locator('#import-rejected tbody tr').count() === 2, 'two rejected lines, each with its reason');
  await shot(page, 'import-preview');
  await page.click('#import-go');
  await page.waitForFunction(() => document.getElementById('import-report').textContent.includes('2 registered, 2 rejected'));
  expect(await page.locator('#import-tokens').count() === 1, 'the new tokens can be downloaded');
  await shot(page, 'import-report');
  await page.click('#import-close');
});

await step('alarms and SQL pages', async () => {
  await page.goto(`${BASE}/alarms`);
  await page.waitForFunction(() => document.getElementById('summary').textContent.includes('alarms'));
  await shot(page, 'alarms');
  await page.goto(`${BASE}/sql`);
  await page.fill('#sql', "SELECT time, temperature FROM telemetry WHERE device = 'browser-1' ORDER BY time");
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('#result tbody tr');
  expect(await page.locator('#result tbody tr').count() === 5, 'five readings: curl twice, MQTT, CoAP, CoAP over DTLS');
  await page.waitForSelector('#chart-card:not([hidden]) svg path.line');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#csv')]);
  expect(fs.readFileSync(await download.path(), 'utf8').startsWith('time,temperature'), 'CSV of the query');
  await shot(page, 'sql');
});

await step('a change without the CSRF token is refused', async () => {
  const status = await page.evaluate(() => fetch('/api/v1/devices', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'forged' }) }).then((r) => r.status));
  expect(status === 403, `status ${status}`);
});

await step('every page fits a desktop, a tablet and a phone', async () => {
  // Readings per second is a number from the first seconds on, not a dash until the next refresh.
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.goto(`${BASE}/`);
  await page.waitForFunction(() => /^[0-9,]+$/.test(document.getElementById('t-rate').textContent), null, { timeout: 6000 });
  // The device page shows times as a person reads them, not RFC 3339 with nanoseconds.
  await page.goto(`${BASE}/devices/browser-1`);
  await page.waitForSelector('#latest dd');
  const latest = await page.textContent('#latest');
  expect(!/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(latest), `a raw timestamp on the device page: ${latest}`);
  const pages = [['overview', '/', '#changes td'], ['inventory', '/devices', '#devices tbody tr'], ['device', '/devices/browser-1', '#latest dd'],
    ['alarms', '/alarms', 'main'], ['commands', '/commands', 'main'], ['campaigns', '/campaigns', 'main'], ['sql', '/sql', 'main'],
    ['account', '/account', '#users tbody tr']];
  for (const [width, height, label] of [[1440, 900, 'desktop'], [820, 1100, 'tablet'], [390, 844, 'phone']]) {
    await page.setViewportSize({ width, height });
    for (const [name, path, ready] of pages) {
      await page.goto(`${BASE}${path}`);
      await page.waitForSelector(ready);
      if (name === 'overview') await page.waitForFunction(() => /^[0-9,]+$/.test(document.getElementById('t-rate').textContent));
      // Nothing sticks out of its card, and the page itself never scrolls sideways (wide
      // tables scroll inside their own frame).
      const overflowing = await page.evaluate(() => [...document.querySelectorAll('.card, .tile')]
        .filter((c) => c.scrollWidth > c.clientWidth + 1).map((c) => c.querySelector('h2')?.textContent || c.id || c.className));
      expect(!overflowing.length, `${name} at ${width} px: content overflows ${overflowing.join(', ')}`);
      expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), `${name} at ${width} px scrolls sideways`);
      await shot(page, `${name}-${label}`);
    }
  }
  await page.setViewportSize({ width: 1280, height: 900 });
});

let viewerPassword = '';
await step('an administrator adds a user on the account page', async () => {
  await page.goto(`${BASE}/account`);
  await page.waitForSelector('#users tbody tr[data-user="admin"]');
  await page.click('#user-add-open');
  await page.fill('#user-add-form input[name=name]', 'vic');
  await page.selectOption('#user-add-form select[name=role]', 'viewer');
  await page.click('#user-add-form button[type=submit]');
  await page.waitForSelector('#user-password:not([hidden])');
  viewerPassword = (await page.textContent('#user-password')).split(': ').pop().trim();
  expect(viewerPassword.length >= 12, `a generated password is shown once: ${viewerPassword}`);
  await page.waitForSelector('#users tbody tr[data-user="vic"]');
  await shot(page, 'account-admin');
});

await step('an administrator adds a broker user with topic rules on the account page', async () => {
  await page.click('#broker-user-add-open');
  await page.fill('#broker-user-add-form input[name=name]', 'line-3');
  await page.fill('#broker-user-add-form textarea[name=rules]', 'readwrite plants/%u/#\nread devices/+/telemetry');
  await page.click('#broker-user-add-form button[type=submit]');
  await page.waitForSelector('#broker-user-password:not([hidden])');
  const password = (await page.textContent('#broker-user-password')).split(': ').pop().trim();
  expect(password.length >= 12, `a generated password is shown once: ${password}`);
  const rules = await page.textContent('#broker-users tbody tr[data-broker-user="line-3"] pre.rules');
  expect(rules === 'readwrite plants/%u/#\nread devices/+/telemetry', `the rules as stored: ${rules}`);
  // The REST API holds the same user; a bad rule is refused with the reason, in the dialog.
  await page.click('#broker-user-add-open');
  await page.fill('#broker-user-add-form input[name=name]', 'bad-rules');
  await page.fill('#broker-user-add-form textarea[name=rules]', 'read a/#/b');
  await page.click('#broker-user-add-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('broker-user-add-error').textContent.includes('not a topic filter'));
  await page.click('#broker-user-add-cancel');
  await shot(page, 'account-broker-users');
});

await step('a viewer sees no write actions', async () => {
  const viewerContext = await browser.newContext({ viewport: { width: 820, height: 1100 } });
  const viewer = await viewerContext.newPage();
  current = viewer;
  watch(viewer, 'viewer');
  await signIn(viewer, 'vic', viewerPassword);
  await viewer.goto(`${BASE}/devices`);
  await viewer.waitForSelector('#devices tbody tr td a');
  expect(!(await viewer.isVisible('#register-open')) && !(await viewer.isVisible('label[for=import-file]')), 'no register or import');
  expect(await viewer.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), 'fits a tablet without sideways scrolling');
  await shot(viewer, 'inventory-viewer-tablet');
  await viewer.goto(`${BASE}/`);
  await viewer.waitForFunction(() => document.getElementById('updated').textContent.startsWith('Updated'));
  expect(!(await viewer.isVisible('#changes')), 'the audit log is for administrators');
  await viewer.goto(`${BASE}/devices/browser-1`);
  await viewer.waitForSelector('#identity dt');
  await viewer.waitForSelector('#credentials p');
  for (const id of ['rotate', 'quarantine', 'decommission', 'psk-generate', 'psk-remove']) expect(!(await viewer.isVisible(`#${id}`)), `no ${id} button`);
  await shot(viewer, 'device-viewer-tablet');
});

await step('a user changes their own password', async () => {
  const viewer = current;
  await viewer.goto(`${BASE}/account`);
  expect(!(await viewer.isVisible('#users-card')) && !(await viewer.isVisible('#broker-users-card')), 'a viewer manages no users');
  const change = async (currentPassword, newPassword) => {
    await viewer.fill('#password-form input[name=current]', currentPassword);
    await viewer.fill('#password-form input[name=password]', newPassword);
    await viewer.fill('#password-form input[name=again]', newPassword);
    await viewer.click('#password-form button[type=submit]');
  };
  await change('not my password', 'a new viewer passphrase');
  await viewer.waitForFunction(() => document.getElementById('password-error').textContent.includes('current password is wrong'));
  await change(viewerPassword, 'a new viewer passphrase');
  await viewer.waitForURL(/\/login\?changed=1$/);
  expect((await viewer.textContent('.notice')).includes('Password changed'), 'the sign-in page says why');
  await shot(viewer, 'password-changed');
  await signIn(viewer, 'vic', 'a new viewer passphrase');
  current = page;
});

await step('sign out', async () => {
  await page.click('text=Sign out');
  await page.waitForURL(/\/login$/);
  await page.goto(`${BASE}/devices`);
  expect(page.url().includes('/login?next=/devices'), 'signed out: back to the sign-in page');
});

await browser.close();
if (problems.length) {
  console.log(`not ok - the pages reported errors:\n${problems.join('\n')}`);
  process.exit(1);
}
console.log('ok - no page error');
