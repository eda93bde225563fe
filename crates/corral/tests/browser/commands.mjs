// The commands page in headless Chromium (driven by playwright-core), against the server
// tests/browser.rs started and filled: devices valve-1 (DEVICE_TOKEN; it polls for commands over
// HTTP in these steps), valve-2 with command OPENED (succeeded, {"position": 80}) and REFUSED
// (failed, a reason that looks like HTML), valve-3 with WAITING (queued), and a viewer "tess"
// (VIEWER_PASSWORD). The steps, screenshots and error checks are harness.mjs's.
import { harness } from './harness.mjs';

const { BASE, ADMIN_TOKEN, OPENED, REFUSED, WAITING, DEVICE_TOKEN, VIEWER_PASSWORD } = process.env;
const h = await harness({ suite: 'commands' });
const { expect, shot, step, signIn } = h;

const rows = async (p) => p.locator('#commands tbody tr[data-command]').evaluateAll((trs) => trs.map((tr) => tr.dataset.command));
const cells = async (p, id) => (await p.locator(`#commands tbody tr[data-command="${id}"] td`).allTextContents()).map((t) => t.trim());

const page = await signIn('admin', ADMIN_TOKEN);
h.current = page;

await step('the list shows every command newest first, with its state, steps and answer', async () => {
  await page.goto(`${BASE}/commands`);
  await page.waitForSelector(`#commands tbody tr[data-command="${WAITING}"]`);
  expect(JSON.stringify(await rows(page)) === JSON.stringify([WAITING, REFUSED, OPENED]), `order: ${await rows(page)}`);
  const [, device, command, state, steps, answer] = await cells(page, OPENED);
  expect(device === 'valve-2' && command.startsWith('valve/open') && command.includes('"position":80'), `${device} / ${command}`);
  expect(state === 'succeeded' && steps.includes('finished') && answer === '{"position":80}', `${state} / ${steps} / ${answer}`);
  const waiting = await cells(page, WAITING);
  expect(waiting[3] === 'queued' && waiting[4].includes('expires'), `the waiting one: ${waiting}`);
  // A device's reason is its text, never markup.
  expect((await cells(page, REFUSED))[5] === '<img src=x onerror="window.injected=1">jammed', `reason: ${(await cells(page, REFUSED))[5]}`);
  expect(await page.locator('#commands img').count() === 0 && await page.evaluate(() => window.injected) === undefined, 'no element injected');
  expect(await page.isVisible('#send'), 'an administrator gets the form');
  await shot(page, 'commands');
});

await step('filters narrow by state and device and stay in the address', async () => {
  await page.selectOption('#state', 'failed');
  await page.waitForFunction(() => document.querySelectorAll('#commands tbody tr[data-command]').length === 1);
  expect(JSON.stringify(await rows(page)) === JSON.stringify([REFUSED]), `failed: ${await rows(page)}`);
  expect(page.url().endsWith('/commands?state=failed'), page.url());
  await shot(page, 'commands-failed');
  await page.selectOption('#state', 'open');
  await page.waitForFunction((id) => document.querySelector(`#commands tbody tr[data-command="${id}"]`) && document.querySelectorAll('#commands tbody tr[data-command]').length === 1, WAITING);
  await page.selectOption('#state', '');
  await page.fill('#device', 'valve-3');
  await page.press('#device', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#commands tbody tr[data-command]').length === 1);
  expect(JSON.stringify(await rows(page)) === JSON.stringify([WAITING]), `valve-3: ${await rows(page)}`);
  await page.fill('#device', '');
  await page.press('#device', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#commands tbody tr[data-command]').length === 3);
});

await step('a payload that is not JSON is refused before anything is sent', async () => {
  await page.fill('#send-device', 'valve-1');
  await page.fill('#send-name', 'valve/open');
  await page.fill('#send-payload', '{position: 80');
  await page.click('#send-button');
  await page.waitForFunction(() => document.getElementById('send-error').textContent.startsWith('The payload is not JSON'));
});

await step('a command sent from the page waits for the device and shows its answer', async () => {
  await page.fill('#send-payload', '{"position": 80}');
  await page.fill('#send-wait', '10');
  await page.click('#send-button');
  await page.waitForFunction(() => document.getElementById('send-notice').textContent.includes('waiting up to 10 s'));
  // The device, polling over HTTP, takes the command and answers it while the page waits.
  const auth = { authorization: `Bearer ${DEVICE_TOKEN}` };
  const next = await fetch(`${BASE}/api/v1/devices/valve-1/commands/next?wait=10`, { headers: auth });
  expect(next.status === 200, `poll: ${next.status}`);
  const command = await next.json();
  expect(command.name === 'valve/open' && command.payload.position === 80, `the device got ${JSON.stringify(command)}`);
  const answered = await fetch(`${BASE}/api/v1/devices/valve-1/commands/${command.id}/response`, {
    method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ status: 'succeeded', payload: { opened: true } }),
  });
  expect(answered.status === 200, `answer: ${answered.status}`);
  await page.waitForFunction((id) => document.getElementById('send-notice').textContent === `${id} succeeded: {"opened":true}`, command.id);
  await page.waitForSelector(`#commands tbody tr[data-command="${command.id}"]`);
  expect((await rows(page))[0] === command.id, 'the new command heads the list');
  expect(await page.textContent('#send-error') === '', 'no error');
  await shot(page, 'command-sent');
});

await step('the device page links to its commands', async () => {
  await page.goto(`${BASE}/devices/valve-2`);
  await page.waitForFunction(() => document.getElementById('device-commands').getAttribute('href') === '/commands?device=valve-2');
  await page.click('#device-commands');
  await page.waitForURL(`${BASE}/commands?device=valve-2`);
  await page.waitForFunction(() => document.querySelectorAll('#commands tbody tr[data-command]').length === 2);
  expect(await page.inputValue('#send-device') === 'valve-2', 'the form is addressed to the device');
});

await step('a viewer follows commands but gets no form', async () => {
  const viewer = await signIn('tess', VIEWER_PASSWORD);
  h.current = viewer;
  await viewer.goto(`${BASE}/commands`);
  await viewer.waitForSelector(`#commands tbody tr[data-command="${OPENED}"]`);
  expect(!(await viewer.isVisible('#send')), 'no form for a viewer');
  await shot(viewer, 'commands-viewer');
});

await h.finish();
