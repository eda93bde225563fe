// The device twin on the device page, in headless Chromium (driven by playwright-core), against
// the server tests/browser.rs started and filled: device twin-1 with desired version 1
// ({"interval_s": 60, "fw": "2.1"}), reported version 1 (interval_s, fw 2.0, battery, a label that
// looks like HTML), and a viewer "tess" (VIEWER_PASSWORD). The shared steps are in harness.mjs.
import { harness } from './harness.mjs';

const { BASE, ADMIN_TOKEN, VIEWER_PASSWORD } = process.env;
const h = await harness({
  suite: 'twin',
  // Refusals the steps provoke on purpose: a stale edit (412) and a patch that is not JSON (400),
  // both on the twin; twin-1 has no telemetry, and its page must not query a table that is not there.
  provoked: (m) => /status of (412|400)/.test(m.text()) && m.location().url.includes('/twin'),
});
const { expect, shot, step, signIn } = h;

/** The twin over REST, as an application sees it. */
async function twinOverRest() {
  const response = await fetch(`${BASE}/api/v1/devices/twin-1/twin`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  expect(response.ok, `GET twin: ${response.status}`);
  return response.json();
}

const row = (p, key) => p.locator(`#twin tbody tr[data-key="${key}"]`);
const cells = async (p, key) => (await row(p, key).locator('td').allTextContents()).map((t) => t.trim());
const isDelta = async (p, key) => (await row(p, key).getAttribute('class') || '').split(' ').includes('delta');

const page = await signIn('admin', ADMIN_TOKEN);
h.current = page;

await step('the device page shows desired, reported and the delta', async () => {
  await page.goto(`${BASE}/devices/twin-1`);
  await page.waitForSelector('#twin tbody tr[data-key="fw"]');
  expect(await page.textContent('#twin-desired-version') === 'v1', 'desired version 1');
  expect(await page.textContent('#twin-reported-version') === 'v1', 'reported version 1');
  expect(await isDelta(page, 'fw') && !(await isDelta(page, 'interval_s')) && !(await isDelta(page, 'battery')),
    'fw (2.1 desired, 2.0 reported) is the delta; interval_s agrees; battery is only reported');
  expect((await page.textContent('#twin-sync')) === '1 to apply', `summary: ${await page.textContent('#twin-sync')}`);
  const [desired, reported] = await cells(page, 'fw');
  expect(desired.startsWith('"2.1"') && reported.startsWith('"2.0"'), `fw: ${desired} / ${reported}`);
  expect((await cells(page, 'battery'))[0] === '–', 'no desired battery');
  // Each value says when its key last changed: relative, with the absolute time on hover.
  const when = row(page, 'fw').locator('td time').first();
  expect(/^\d{4}-\d\d-\d\dT/.test(await when.getAttribute('title')) && /^(just now|\d+ s ago|\d+ min ago)$/.test(await when.textContent()), 'per-key time');
  // A reported value is the device's text, never markup.
  expect((await cells(page, 'label'))[1].startsWith('"<img src=x onerror=\\"window.injected=1\\">"'), `the label shows as text: ${(await cells(page, 'label'))[1]}`);
  expect(await page.locator('#twin img').count() === 0 && await page.evaluate(() => window.injected) === undefined, 'no element injected');
  expect(await page.isVisible('#twin-editor') && (await page.textContent('#twin-editor')).includes('null'), 'an administrator gets the editor, which explains null');
  await shot(page, 'device-twin');
});

await step('an edit in the console is a new desired version', async () => {
  await page.fill('#twin-patch', '{"interval_s": 30, "fw": null, "led": true}');
  await page.click('#twin-apply');
  await page.waitForFunction(() => document.getElementById('twin-edit-notice').textContent.includes('version 2'));
  const twin = await twinOverRest();
  const desired = twin.desired.document;
  expect(Object.keys(desired).sort().join() === 'interval_s,led' && desired.interval_s === 30 && desired.led === true,
    `desired over REST: ${JSON.stringify(twin.desired)}`);
  expect(twin.desired.version === 2, `version over REST: ${twin.desired.version}`);
  await page.waitForFunction(() => document.getElementById('twin-desired-version').textContent === 'v2');
  expect(await isDelta(page, 'interval_s') && await isDelta(page, 'led') && !(await isDelta(page, 'fw')), 'the delta follows: interval_s and led to apply, fw no longer desired');
  expect((await cells(page, 'fw'))[0] === '–', 'fw deleted from desired by null');
  expect(await page.inputValue('#twin-patch') === '', 'the applied patch is cleared');
  await shot(page, 'device-twin-edited');
});

await step('a stale edit is refused, explained and reloaded', async () => {
  // Someone else changes desired after this page loaded version 2.
  const response = await fetch(`${BASE}/api/v1/devices/twin-1/twin/desired`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', 'if-match': '2' },
    body: JSON.stringify({ interval_s: 45 }),
  });
  expect(response.status === 200, `the REST change: ${response.status}`);
  expect(await page.textContent('#twin-desired-version') === 'v2', 'the page still shows what it loaded');
  await page.fill('#twin-patch', '{"interval_s": 10}');
  await page.click('#twin-apply');
  await page.waitForFunction(() => document.getElementById('twin-edit-error').textContent.includes('changed by someone else since you loaded it — reloaded'));
  expect(await page.textContent('#twin-desired-version') === 'v3', 'reloaded: version 3');
  expect((await cells(page, 'interval_s'))[0].startsWith('45'), 'reloaded: the other change shows');
  expect(await page.inputValue('#twin-patch') === '{"interval_s": 10}', 'the refused patch is kept to look at again');
  const twin = await twinOverRest();
  expect(twin.desired.version === 3 && twin.desired.document.interval_s === 45, `not overwritten: ${JSON.stringify(twin.desired)}`);
  await shot(page, 'device-twin-stale');
});

await step("a patch that is not JSON shows the server's reason", async () => {
  await page.fill('#twin-patch', '{"interval_s": ');
  await page.click('#twin-apply');
  await page.waitForFunction(() => document.getElementById('twin-edit-error').textContent.includes('not valid JSON'));
  expect((await twinOverRest()).desired.version === 3, 'nothing stored');
  await page.fill('#twin-patch', '');
});

await step('a viewer sees the twin and no editor', async () => {
  const viewer = await signIn('tess', VIEWER_PASSWORD);
  h.current = viewer;
  await viewer.goto(`${BASE}/devices/twin-1`);
  await viewer.waitForSelector('#twin tbody tr[data-key="interval_s"]');
  await viewer.waitForSelector('#identity dt');
  expect(await viewer.textContent('#twin-desired-version') === 'v3', 'the viewer reads the twin');
  expect(!(await viewer.isVisible('#twin-editor')) && !(await viewer.isVisible('#twin-patch')), 'no editor for a viewer');
  await shot(viewer, 'device-twin-viewer');
  h.current = page;
});

await h.finish();
