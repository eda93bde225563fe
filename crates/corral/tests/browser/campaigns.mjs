// The campaigns page in headless Chromium (driven by playwright-core), against the server
// tests/browser.rs started and filled: campaign CAMPAIGN ("fw rollout", firmware fw 2.0.0, six
// devices cx-01..cx-06 in waves 50 % and 100 %, running) whose first wave reported two failures
// "flash write error" and a roll-back whose reason looks like HTML; 25 older drafts and a newest
// draft DRAFT named like HTML; SUCCEEDER (a device of wave 2, SUCCEEDER_TOKEN its token); a viewer
// "tess" (VIEWER_PASSWORD). The steps, screenshots and error checks are harness.mjs's: a failed step saves
// FAILED-campaigns-<step>.png, every page a screenshot in SHOTS.
import { harness } from './harness.mjs';

const { BASE, ADMIN_TOKEN, CAMPAIGN, DRAFT, VIEWER_PASSWORD, SUCCEEDER, SUCCEEDER_TOKEN } = process.env;
const h = await harness({
  suite: 'campaigns',
  // The refusal the steps provoke on purpose: a campaign that does not exist (404).
  provoked: (m) => /status of 404/.test(m.text()) && m.location().url.includes('cmp_nothing'),
});
const { expect, shot, step, signIn } = h;

/** A campaign over REST, as an application sees it. */
async function overRest(id) {
  const response = await fetch(`${BASE}/api/v1/campaigns/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  expect(response.ok, `GET campaign ${id}: ${response.status}`);
  return response.json();
}

const texts = async (locator) => (await locator.allTextContents()).map((t) => t.trim());
const listRow = (p, id) => p.locator(`#campaigns tbody tr[data-campaign="${id}"]`);
const waveRow = (p, n) => p.locator(`#waves tbody tr[data-wave="${n}"]`);
const visible = async (p, ids) => {
  const out = [];
  for (const id of ids) if (await p.isVisible(`#${id}`)) out.push(id);
  return out.join(',');
};
const BUTTONS = ['campaign-start', 'campaign-pause', 'campaign-resume', 'campaign-cancel'];
const noInjection = async (p) => expect(await p.locator('main img, main b').count() === 0 && await p.evaluate(() => window.injected) === undefined,
  'a name or reason that looks like HTML stays text');

const page = await signIn('admin', ADMIN_TOKEN);
h.current = page;
// The requests of the campaign's own view (its progress and its devices), to see polling start and stop.
const polls = [];
page.on('request', (r) => { if (new URL(r.url()).pathname.startsWith(`/api/v1/campaigns/${CAMPAIGN}`) && r.method() === 'GET') polls.push(Date.now()); });

await step('the list shows the campaigns newest first, a page at a time', async () => {
  await page.click('nav >> text=Campaigns');
  await page.waitForURL(`${BASE}/campaigns`);
  await page.waitForSelector(`#campaigns tbody tr[data-campaign="${CAMPAIGN}"] .stack`);
  expect(await page.getAttribute('nav a[href="/campaigns"]', 'aria-current') === 'page', 'Campaigns is the current page in the navigation');
  const ids = await page.$$eval('#campaigns tbody tr', (rows) => rows.map((r) => r.dataset.campaign));
  expect(ids.length === 25 && ids[0] === DRAFT && ids[1] === CAMPAIGN, `newest first, 25 a page: ${ids.slice(0, 3)}… (${ids.length})`);
  const [name, kind, what, state, devices, succeeded, failed, progress] = await texts(listRow(page, CAMPAIGN).locator('td'));
  expect(name.startsWith('fw rollout') && name.includes(CAMPAIGN), `name: ${name}`);
  expect(kind === 'firmware' && what === 'fw 2.0.0', `what: ${kind} / ${what}`);
  expect(state === 'running' && devices === '6' && succeeded === '0' && failed === '3', `counts: ${state} ${devices} ${succeeded} ${failed}`);
  expect(progress === '50%', `half the devices are final: ${progress}`);
  const segments = await listRow(page, CAMPAIGN).locator('.stack .seg').evaluateAll((s) => s.map((e) => e.dataset.state));
  expect(segments[0] === 'failed' && segments[1] === 'rolled-back', `the bar is stacked by state: ${segments}`);
  expect((await texts(listRow(page, DRAFT).locator('td')))[0].startsWith('<b>draft</b> interval'), 'the draft name is shown as text');
  expect((await texts(listRow(page, DRAFT).locator('td')))[3] === 'draft', 'the draft is a draft');
  await noInjection(page);
  expect(await page.isDisabled('#campaigns-prev') && !(await page.isDisabled('#campaigns-next')), 'the first page: older ones follow');
  await shot(page, 'campaigns');
  await page.click('#campaigns-next');
  await page.waitForFunction(() => document.querySelectorAll('#campaigns tbody tr').length === 2);
  const older = await texts(page.locator('#campaigns tbody tr td:first-child a'));
  expect(older.join() === 'old draft 01,old draft 00', `the second page holds the oldest two: ${older}`);
  expect(page.url().includes('after=') && await page.isDisabled('#campaigns-next'), 'the cursor is in the URL; nothing older');
  await page.click('#campaigns-prev');
  await page.waitForSelector(`#campaigns tbody tr[data-campaign="${CAMPAIGN}"]`);
  expect(page.url() === `${BASE}/campaigns`, `back on the first page: ${page.url()}`);
});

await step('a campaign shows its plan, its waves and its failure reasons', async () => {
  const loads = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  await page.click(`#campaigns tbody tr[data-campaign="${CAMPAIGN}"] a`);
  await page.waitForURL(`${BASE}/campaigns/${CAMPAIGN}`);
  await page.waitForSelector('#waves tbody tr[data-wave="2"]');
  await page.waitForSelector('#failure-reasons');
  expect(await page.evaluate(() => performance.getEntriesByType('navigation').length) === loads, 'the detail opens without a reload');
  expect(await page.textContent('#campaign-name') === 'fw rollout' && await page.textContent('#campaign-state') === 'running', 'name and state');
  const plan = await page.textContent('#campaign-plan');
  expect(plan.includes('50% → 100%') && plan.includes('at most 10 devices at a time') && plan.includes('1 h'), `the plan: ${plan}`);
  const facts = await page.textContent('#campaign-facts');
  expect(facts.includes('fw 2.0.0') && facts.includes("where device LIKE 'cx-%'"), `the artifact with its version, the target: ${facts}`);
  const [wave1Size, wave1Devices, , wave1States] = await texts(waveRow(page, 1).locator('td'));
  expect(wave1Size === '50%' && wave1Devices === '3' && wave1States.includes('2 failed') && wave1States.includes('1 rolled-back'),
    `wave 1: ${wave1Size} ${wave1Devices} ${wave1States}`);
  const [wave2Size, wave2Devices] = await texts(waveRow(page, 2).locator('td'));
  expect(wave2Size === '100%' && wave2Devices === '3', `wave 2: ${wave2Size} ${wave2Devices}`);
  expect(await waveRow(page, 1).locator('.stack .seg[data-state=failed]').count() === 1, 'wave 1 has a failed segment');
  const reasons = await page.$$eval('#failure-reasons tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent.trim())));
  expect(JSON.stringify(reasons[0]) === JSON.stringify(['flash write error', '2']), `the reason with its count: ${JSON.stringify(reasons)}`);
  expect(reasons[1][0] === '<img src=x onerror="window.injected=1">boot loop' && reasons[1][1] === '1', `a reason that looks like HTML: ${JSON.stringify(reasons)}`);
  await noInjection(page);
  expect(await visible(page, BUTTONS) === 'campaign-pause,campaign-cancel', `a running campaign can be paused or cancelled: ${await visible(page, BUTTONS)}`);
  await page.waitForFunction(() => document.querySelectorAll('#campaign-devices tbody tr[data-device]').length === 6);
  await shot(page, 'campaign');
});

await step('its devices are filtered by state', async () => {
  await page.selectOption('#device-state', 'failed');
  await page.waitForFunction(() => document.querySelectorAll('#campaign-devices tbody tr[data-device]').length === 2);
  const rows = await page.$$eval('#campaign-devices tbody tr', (trs) => trs.map((r) => [...r.cells].map((c) => c.textContent.trim())));
  expect(rows.every((r) => r[2] === 'failed' && r[3] === 'flash write error' && r[1] === '1'), `failed devices with their reason: ${JSON.stringify(rows)}`);
  expect(page.url().endsWith('?state=failed'), `the filter is in the URL: ${page.url()}`);
  await page.selectOption('#device-state', 'succeeded');
  await page.waitForFunction(() => document.querySelector('#campaign-devices tbody td.empty')?.textContent === 'No device is succeeded.');
  await page.selectOption('#device-state', '');
  await page.waitForFunction(() => document.querySelectorAll('#campaign-devices tbody tr[data-device]').length === 6);
});

await step('a report shows while the campaign runs, without a reload', async () => {
  const loads = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  const response = await fetch(`${BASE}/api/v1/devices/${SUCCEEDER}/twin/reported`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${SUCCEEDER_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ campaigns: { [CAMPAIGN]: { state: 'succeeded' } } }),
  });
  expect(response.status === 200, `the device's report: ${response.status}`);
  await page.waitForFunction(() => document.querySelector('#waves tbody tr[data-wave="2"] td.states')?.textContent.includes('1 succeeded'), null, { timeout: 8000 });
  await page.waitForSelector(`#campaign-devices tbody tr[data-device="${SUCCEEDER}"] .badge.succeeded`, { timeout: 8000 });
  expect(await page.evaluate(() => performance.getEntriesByType('navigation').length) === loads, 'no reload');
  expect((await page.textContent('#campaign-progress')).includes('1 succeeded'), 'the totals follow');
});

await step('Pause pauses it, Resume resumes it', async () => {
  await page.click('#campaign-pause');
  await page.waitForFunction(() => document.getElementById('campaign-state').textContent === 'paused');
  expect((await overRest(CAMPAIGN)).state === 'paused', 'the API agrees: paused');
  expect(await visible(page, BUTTONS) === 'campaign-resume,campaign-cancel', `a paused campaign can be resumed or cancelled: ${await visible(page, BUTTONS)}`);
  // Still polled while paused, and no answer from before the pause brings "running" back.
  const before = polls.length;
  await page.waitForTimeout(2600);
  expect(polls.length > before, 'a paused campaign is still followed');
  expect(await page.textContent('#campaign-state') === 'paused', 'still paused on screen');
  await shot(page, 'campaign-paused');
  await page.click('#campaign-resume');
  await page.waitForFunction(() => document.getElementById('campaign-state').textContent === 'running');
  expect((await overRest(CAMPAIGN)).state === 'running', 'the API agrees: running');
});

await step('leaving the campaign stops its polling', async () => {
  await page.click('text=← All campaigns');
  await page.waitForURL(`${BASE}/campaigns`);
  await page.waitForSelector(`#campaigns tbody tr[data-campaign="${CAMPAIGN}"]`);
  const left = Date.now();
  await page.waitForTimeout(4500);
  const late = polls.filter((t) => t > left + 200);
  expect(late.length === 0, `${late.length} requests for the campaign after its view was left`);
  expect(await page.isHidden('#campaign-view'), 'the detail view is gone');
  await page.goBack();
  await page.waitForURL(`${BASE}/campaigns/${CAMPAIGN}`);
  await page.waitForFunction(() => document.getElementById('campaign-state').textContent === 'running');
});

await step('a draft can be started or cancelled; cancelling is final', async () => {
  await page.goto(`${BASE}/campaigns/${DRAFT}`);
  await page.waitForFunction(() => document.getElementById('campaign-state').textContent === 'draft');
  expect(await page.textContent('#campaign-name') === '<b>draft</b> interval', 'the name as text');
  expect((await page.textContent('#campaign-facts')).includes('"interval_s": 30'), 'the configuration it sets');
  expect(await visible(page, BUTTONS) === 'campaign-start,campaign-cancel', `a draft can be started or cancelled: ${await visible(page, BUTTONS)}`);
  await noInjection(page);
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#campaign-cancel');
  await page.waitForFunction(() => document.getElementById('campaign-state').textContent === 'cancelled');
  expect((await page.textContent('#campaign-reason')).includes('cancelled by admin'), 'who cancelled it');
  expect(await visible(page, BUTTONS) === '', 'nothing more to do');
  const draft = await overRest(DRAFT);
  expect(draft.state === 'cancelled', `the API agrees: ${draft.state}`);
  await shot(page, 'campaign-draft-cancelled');
});

await step('a viewer follows a campaign and is offered no action', async () => {
  const viewer = await signIn('tess', VIEWER_PASSWORD);
  h.current = viewer;
  await viewer.goto(`${BASE}/campaigns/${CAMPAIGN}`);
  await viewer.waitForSelector('#waves tbody tr[data-wave="2"]');
  await viewer.waitForSelector('#failure-reasons');
  expect(await viewer.textContent('#campaign-state') === 'running', 'the viewer reads it');
  expect(await visible(viewer, BUTTONS) === '', `no action for a viewer: ${await visible(viewer, BUTTONS)}`);
  await shot(viewer, 'campaign-viewer');
  await viewer.goto(`${BASE}/campaigns/cmp_nothing`);
  await viewer.waitForFunction(() => document.getElementById('campaign-error').textContent.includes('No campaign cmp_nothing'));
  h.current = page;
});

await h.finish();
