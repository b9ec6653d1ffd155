//! The binary's live status page (`GET /status` on its API listener) in headless Chromium,
//! against a server with an API token: the page shows nothing but a token form without the
//! token; with it (`#token=`), its figures follow the server: connections and the busiest topic
//! as clients subscribe, messages out per second while publishing goes on, back to zero when
//! the clients leave. With $CORECAST_STATUS_SCREENSHOT set, it saves a screenshot there under
//! load. Skipped, saying so, only where no Chromium is found and $CHROMIUM is unset.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { Chromium, chromiumPath } from './chromium.js';
import { Server, WAIT_MS, sleep, withTimeout } from '../support/server.js';

const binary = chromiumPath();
const skip =
  binary === null ? 'no Chromium (apt-get install chromium, or set CHROMIUM); test/run installs it' : false;

const TOKEN = 'status-page-token';
const CLIENTS = 24;
let server;
let browser;

before(async () => {
  if (skip) return;
  server = await Server.start(['--api-token', TOKEN]);
  browser = await Chromium.launch(binary);
});

after(async () => {
  await browser?.close();
  await server?.kill();
});

/** What the page shows now, read from its elements. */
function read(page) {
  return page.eval(`(() => {
    if (!document.getElementById('state')) return null; // still loading
    const value = (id) => document.getElementById(id).dataset.value;
    const rows = (id) => [...document.getElementById(id).querySelectorAll('tr[data-label]')]
      .map((r) => [r.dataset.label, Number(r.dataset.value)]);
    return {
      state: document.getElementById('state').textContent,
      login: getComputedStyle(document.getElementById('login')).display !== 'none',
      total: value('connections-total'),
      shards: [...document.querySelectorAll('#shards .bar')].map((b) => Number(b.dataset.value)),
      rateOut: Number(value('rate-out') || 0),
      topics: rows('topics'),
      nodes: document.getElementById('nodes').textContent,
    };
  })()`);
}

/** Reads the page until `ok` holds for what it shows; fails with the last reading after the bound. */
async function until(page, what, ok) {
  const deadline = Date.now() + WAIT_MS;
  let shown;
  while (Date.now() < deadline) {
    shown = await read(page);
    if (shown && ok(shown)) return shown;
    await sleep(100);
  }
  assert.fail(`the page never showed ${what}; it showed ${JSON.stringify(shown)}`);
}

/** A pubsub client subscribed to `topic`. */
async function subscriber(topic) {
  const ws = new WebSocket(server.url());
  const answered = new Promise((resolve, reject) => {
    ws.onmessage = (ev) => resolve(JSON.parse(ev.data));
    ws.onerror = () => reject(new Error('the subscriber could not connect'));
  });
  await withTimeout(new Promise((resolve) => { ws.onopen = resolve; }), WAIT_MS, 'a subscriber to open');
  ws.send(JSON.stringify({ subscribe: topic }));
  const answer = await withTimeout(answered, WAIT_MS, 'the subscribe answer');
  assert.deepEqual(answer, { subscribed: topic });
  ws.onmessage = null;
  return ws;
}

/** POST /api/publish/{topic} with the token. */
async function publish(topic, data) {
  const res = await fetch(`http://${server.api}/api/publish/${topic}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'text/plain' },
    body: data,
    signal: AbortSignal.timeout(WAIT_MS),
  });
  assert.equal(res.status, 200, await res.text());
}

test('without the token the page asks for it and shows no figure', { skip }, async () => {
  const page = await browser.open(`http://${server.api}/status`);
  const shown = await until(page, 'its token form', (s) => s.login);
  assert.equal(shown.state, 'the API needs a token');
  assert.equal(shown.total, '');
  const wrong = await browser.open(`http://${server.api}/status#token=wrong`);
  assert.equal((await until(wrong, 'its token form', (s) => s.login)).state, 'the API token was refused');
});

test('its figures move with the load and come back when it ends', { skip }, async () => {
  const page = await browser.open(`http://${server.api}/status#token=${TOKEN}`);
  await browser.send(
    'Emulation.setDeviceMetricsOverride',
    { width: 1200, height: 760, deviceScaleFactor: 1, mobile: false },
    page.sessionId,
  );
  await until(page, 'an idle server', (s) => s.state === 'live, every second' && s.total === '0');
  // The token left the address bar once read.
  assert.equal(await page.eval('location.hash'), '');

  const clients = [];
  for (let i = 0; i < CLIENTS; i++) clients.push(await subscriber('scores.live'));
  for (let i = 0; i < 3; i++) clients.push(await subscriber('scores.quiet'));
  let publishing = true;
  const publisher = (async () => {
    for (let i = 0; publishing; i++) {
      await publish('scores.live', `goal ${i}`);
      // For the screenshot, a load that changes, so the chart shows something.
      await sleep(process.env.CORECAST_STATUS_SCREENSHOT ? 2 + 6 * (Math.floor(i / 300) % 3) : 5);
    }
  })();
  try {
    const busy = await until(
      page,
      `${CLIENTS + 3} connections, scores.live first with ${CLIENTS}, and messages going out`,
      (s) =>
        s.total === String(CLIENTS + 3) &&
        s.topics[0]?.[0] === 'scores.live' &&
        s.topics[0]?.[1] === CLIENTS &&
        s.rateOut > 0,
    );
    assert.deepEqual(busy.topics[1], ['scores.quiet', 3]);
    assert.equal(busy.shards.reduce((a, b) => a + b, 0), CLIENTS + 3);
    assert.match(busy.nodes, /cluster mode is off/);
    assert.equal(busy.login, false, 'no token form once the token is taken');
    if (process.env.CORECAST_STATUS_SCREENSHOT) {
      // Two dozen samples on the chart.
      await sleep(25_000);
      const { data } = await browser.send(
        'Page.captureScreenshot',
        { format: 'png', clip: { x: 0, y: 0, width: 1200, height: 760, scale: 1 } },
        page.sessionId,
      );
      writeFileSync(process.env.CORECAST_STATUS_SCREENSHOT, Buffer.from(data, 'base64'));
    }
  } finally {
    publishing = false;
    await publisher;
  }
  for (const ws of clients) ws.close();
  const idle = await until(page, 'the clients gone and nothing going out', (s) => s.total === '0' && s.rateOut === 0);
  assert.deepEqual(idle.topics, []);
});
