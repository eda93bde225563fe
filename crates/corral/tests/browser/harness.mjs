// What the browser scripts that sign in with fresh contexts share (twin.mjs, campaigns.mjs): the
// browser, steps that print `ok - <step>` or stop the script at the first failure (with
// FAILED-<suite>-<step>.png), screenshots in SHOTS, sign-in in a context of its own, and page
// errors and console errors collected for the last step, except the ones a script provokes on
// purpose (`provoked(message)`).
import { chromium } from 'playwright-core';
import fs from 'node:fs';

export async function harness({ suite, provoked = () => false }) {
  const { BASE, SHOTS, CHROMIUM = '/usr/bin/chromium' } = process.env;
  fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const problems = [];
  const watch = (p, who) => {
    p.on('pageerror', (e) => problems.push(`${who} page error: ${e.message}`));
    p.on('console', (m) => {
      if (m.type() === 'error' && !provoked(m)) problems.push(`${who} console: ${m.text()} (${m.location().url})`);
    });
  };
  const h = {
    browser,
    /** The page a failed step screenshots. */
    current: null,
    expect: (condition, message) => { if (!condition) throw new Error(message); },
    shot: (p, name) => p.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true }),
    async step(name, fn) {
      try {
        await fn();
        console.log(`ok - ${name}`);
      } catch (e) {
        await h.current?.screenshot({ path: `${SHOTS}/FAILED-${suite}-${name}.png`, fullPage: true }).catch(() => {});
        console.log(`not ok - ${name}: ${e.message}`);
        await browser.close();
        process.exit(1);
      }
    },
    async signIn(name, password) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const p = await context.newPage();
      watch(p, name);
      await p.goto(`${BASE}/login`);
      await p.fill('#name', name);
      await p.fill('#password', password);
      await p.click('button[type=submit]');
      await p.waitForURL(`${BASE}/`);
      return p;
    },
    /** Closes the browser; fails the script if a page reported an error. */
    async finish() {
      await browser.close();
      if (problems.length) {
        console.log(`not ok - the pages reported errors:\n${problems.join('\n')}`);
        process.exit(1);
      }
      console.log('ok - no page error');
    },
  };
  return h;
}
