// The live dashboard in a real browser: starts `fraudflight demo` on free
// ports, opens its page in Debian's headless Chromium (driven by
// playwright-core), and checks what a viewer sees: no console errors, the
// page fed by the event stream (not polling), the alert table filling within
// seconds, the counters and charts moving. Saves a screenshot to
// $ARTIFACTS (default target/artifacts/dashboard.png).
//
// Run: `make test-browser` (or `npm test` in web/ after a debug build).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const binary = process.env.FRAUDFLIGHT_BIN || resolve(root, 'target/debug/fraudflight');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const screenshot = resolve(process.env.ARTIFACTS || resolve(root, 'target/artifacts'), 'dashboard.png');

/** Starts `fraudflight demo` and resolves to its HTTP address once READY. */
function startDemo() {
  const proc = spawn(binary, ['demo', '--rate', '2000', '--flight-addr', '127.0.0.1:0', '--http-addr', '127.0.0.1:0'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const ready = new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo not READY within 60 s:\n${stderr}`)), 60_000);
    proc.on('exit', (code) => reject(new Error(`demo exited (${code}) before READY:\n${stderr}`)));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const http = /^READY .*http=(\S+)/.exec(line);
      if (http) {
        clearTimeout(timer);
        resolveReady(http[1]);
      }
    });
  });
  return { proc, ready };
}

const number = (text) => Number(String(text).replace(/[^0-9.]/g, ''));

test('the live dashboard shows fraud happening', { timeout: 120_000 }, async () => {
  const demo = startDemo();
  const base = await demo.ready;
  const browser = await chromium.launch({
    executablePath: browserPath,
    headless: true,
    // This machine's network is closed: keep Chromium from reaching out.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1300 } });
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => {
      // The event stream is cut when the browser closes; anything else is a fault.
      if (!r.url().endsWith('/api/events')) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
    });
    const requests = [];
    page.on('request', (r) => requests.push({ url: new URL(r.url()).pathname, type: r.resourceType() }));

    await page.goto(base, { waitUntil: 'load' });
    // Nothing is loaded from another host.
    assert.deepEqual(requests.filter((r) => !r.url.startsWith('/')), []);

    // The alert table fills within a few seconds (the demo's fraud rate is
    // about 0.5 %: 2,000 tx/s gives several alerts a second).
    await page.waitForSelector('#alerts tbody tr', { timeout: 10_000 });
    await page.waitForFunction(() => document.getElementById('connection').textContent === 'live', null, { timeout: 10_000 });
    const firstRow = await page.$$eval('#alerts tbody tr:first-child td', (tds) => tds.map((td) => td.textContent));
    assert.match(firstRow[1], /^\$\d+\.\d\d$/, `amount cell: ${firstRow}`);
    assert.ok(Number(firstRow[6]) > 0 && Number(firstRow[6]) <= 1, `score cell: ${firstRow}`);
    // Next to the alert: its label (the demo's records carry one) and the
    // card's and merchant's history.
    assert.match(firstRow[7], /^(fraud|genuine)$/, `label cell: ${firstRow}`);
    assert.match(firstRow[8], /^\d+$/, `card 24 h cell: ${firstRow}`);
    assert.match(firstRow[10], /^(\d+ (s|min|h|d)|none)$/, `since-previous cell: ${firstRow}`);
    assert.match(firstRow[12], /^\d+\.\d %$/, `merchant fraud cell: ${firstRow}`);
    await page.waitForFunction(() => document.getElementById('precision').textContent.includes('% of'), null,
      { timeout: 10_000 });

    const read = () => page.evaluate(() => ({
      scored: document.getElementById('scored-total').textContent,
      alerts: document.getElementById('alerts-total').textContent,
      rate: document.getElementById('scored-rate').textContent,
      model: document.getElementById('model-version').textContent,
      rows: document.querySelectorAll('#alerts tbody tr').length,
    }));
    await page.waitForFunction(() => document.getElementById('scored-rate').textContent !== '–', null, { timeout: 10_000 });
    const before = await read();
    await page.waitForTimeout(3_000);
    const after = await read();
    assert.ok(number(after.scored) > number(before.scored), `scored did not increase: ${before.scored} -> ${after.scored}`);
    assert.ok(number(after.alerts) >= number(before.alerts), `alerts went down: ${before.alerts} -> ${after.alerts}`);
    assert.ok(number(after.rate) > 1000, `scored per second ${after.rate}, expected about 2,000`);
    assert.notEqual(after.model, '–');
    assert.ok(after.rows > 0);

    // Live by Server-Sent Events, not by polling the state.
    assert.ok(requests.some((r) => r.url === '/api/events' && r.type === 'eventsource'), 'no event stream opened');
    assert.equal(requests.filter((r) => r.url === '/api/summary' || r.url === '/api/alerts').length, 0,
      'the page polled the JSON API');

    // The charts and the map drew something (a blank canvas is all zeros).
    for (const id of ['throughput-chart', 'score-chart', 'alert-map', 'quality-chart']) {
      const painted = await page.$eval(`#${id}`, (c) =>
        c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v) => v !== 0));
      assert.ok(painted, `${id} is blank`);
    }

    // Live quality: the demo measures every few seconds; the model in
    // service gets its row, with the transactions it scored.
    await page.waitForFunction(() => document.querySelectorAll('#quality tbody tr').length > 0, null, { timeout: 30_000 });
    const quality = await page.$$eval('#quality tbody tr:first-child td', (tds) => tds.map((td) => td.textContent));
    assert.equal(quality[0], await page.textContent('#model-version'), `quality row: ${quality}`);
    assert.equal(quality[1], 'champion');
    assert.ok(number(quality[3]) > 0, `scored cell: ${quality}`);

    // An analyst marks the first alert genuine: the row shows who decided,
    // and the server holds the label (a reload would show it too).
    const first = await page.$eval('#alerts tbody tr:first-child td:nth-child(14)', (td) => td.textContent);
    assert.notEqual(first, '', 'the why cell is there');
    await page.fill('#analyst', 'tester');
    await page.click('#alerts tbody tr:first-child button.genuine');
    await page.waitForFunction(() => /genuine \(applied\)$/.test(document.querySelector('#label-status').textContent),
      null, { timeout: 10_000 });
    const shown = await page.$$eval('#alerts tbody tr td:nth-child(8)', (tds) => tds.map((td) => td.textContent));
    assert.ok(shown.some((t) => /^genuine · tester \d\d:\d\d$/.test(t)), `label cells: ${shown.slice(0, 5)}`);
    const held = await page.evaluate(() => fetch('/api/alerts?limit=1000').then((r) => r.json()));
    const labelled = held.filter((a) => a.label_by === 'tester');
    assert.equal(labelled.length, 1, 'the server holds the analyst label');
    assert.equal(labelled[0].is_fraud, 0);

    // A few more seconds of history make the screenshot tell the story.
    await page.waitForTimeout(6_000);
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`screenshot: ${screenshot}`);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    demo.proc.kill('SIGTERM');
  }
});
