//! The same client in a real headless Chromium, against the real binary: a page served from
//! this directory imports src/index.js and uses the browser's own WebSocket (with the
//! permessage-deflate it negotiates); the test drives it over the DevTools protocol: connect,
//! subscribe, receive (every topic in its envelope, a broadcast bare), publish, a refusal, a
//! network cut recovered, the server killed and restarted, a client token carried in a
//! subprotocol (the browser accepts the 101 that names `corecast`; the URL never has it).
//! Skipped, saying so, only where no Chromium is found and $CHROMIUM is unset.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { Chromium, chromiumPath } from './chromium.js';
import { Server, clientRoot, hs256, startProxy } from '../support/server.js';

const binary = chromiumPath();
const skip =
  binary === null ? 'no Chromium (apt-get install chromium, or set CHROMIUM); test/run installs it' : false;

const HISTORY = ['--history', 'h.*=1000/60s'];
const cleanup = [];
let browser;
let page;
let files;

/** Serves clients/js read-only on 127.0.0.1:0: the page and the client's modules. */
async function serveFiles() {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json' };
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.join(clientRoot, rel);
    let ok = file.startsWith(clientRoot + path.sep) && types[path.extname(file)] !== undefined;
    try {
      ok = ok && statSync(file).isFile();
    } catch {
      ok = false;
    }
    if (!ok) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)], 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

before(async () => {
  if (skip) return;
  files = await serveFiles();
  browser = await Chromium.launch(binary);
  page = await browser.open(`${files.origin}/test/browser/page.html`);
  await page.ready();
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await browser?.close();
  await files?.close();
});

async function server(args = HISTORY) {
  const s = await Server.start(args);
  cleanup.push(() => s.kill());
  return s;
}

const numbered = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => [from + i, `p${from + i}`]);

test('in Chromium: connect, subscribe, receive, publish, a refusal', { skip }, async () => {
  const srv = await server();
  assert.match(await page.eval('window.harness.userAgent'), /HeadlessChrome|Chrome/);
  await page.harness('start', 'a', srv.url());
  await page.harness('start', 'b', srv.url());
  const [connected] = await page.harness('waitFor', 'a', 'connected');
  assert.match(connected.extensions, /permessage-deflate/, 'the browser negotiated deflate');
  await page.harness('waitFor', 'b', 'connected');
  assert.deepEqual(await page.harness('call', 'a', 'subscribe', 'h.a'), {
    topic: 'h.a',
    positions: true,
    offset: 0,
    epoch: null,
    resubscribed: false,
  });
  assert.deepEqual(await page.harness('call', 'a', 'subscribe', 'plain'), {
    topic: 'plain',
    positions: false,
    resubscribed: false,
  });
  const refused = await page.harness('call', 'a', 'subscribe', 'plain2', { history: true });
  assert.deepEqual(
    [refused.kind, refused.error],
    ['server', 'subscribe "plain2": this topic keeps no history'],
  );

  await srv.publish('h.a', 'p1');
  await srv.publish('h.a', 'p2');
  // Seen before the page's own publication, which could otherwise be numbered first (the
  // API's go through the topic's shard's inbox after their 200).
  await page.harness('waitFor', 'a', 'message', { count: 2 });
  // A publish resolves with nothing once the server acted on it (undefined in the page).
  assert.equal(await page.harness('call', 'b', 'publish', 'h.a', 'p3'), undefined);
  assert.equal(await page.harness('call', 'b', 'publish', 'plain', 'bare'), undefined);
  const big = 'y'.repeat(32 * 1024);
  await page.harness('call', 'b', 'publish', 'h.a', big);
  await page.harness('waitFor', 'a', 'message', { count: 5 });
  assert.deepEqual(await page.harness('messages', 'a', 'h.a'), [...numbered(1, 3), [4, big]]);
  // A topic without history comes in its envelope too, named, with no position.
  assert.deepEqual(await page.harness('messages', 'a', 'plain'), ['bare']);
  await srv.broadcast('to every page');
  const [bare] = await page.harness('waitFor', 'a', 'bare');
  assert.deepEqual(bare, { data: 'to every page', binary: false });
  assert.equal((await page.harness('events', 'a', 'message')).length, 5);
  assert.deepEqual(await page.harness('events', 'a', 'error'), []);
});

test('in Chromium: a network cut, then reconnect and recover exactly what was missed', { skip }, async () => {
  const srv = await server();
  const proxy = await startProxy(srv.ws);
  cleanup.push(() => proxy.close());
  await page.harness('start', 'cut', `ws://${proxy.address}/ws`);
  await page.harness('waitFor', 'cut', 'connected');
  await page.harness('call', 'cut', 'subscribe', 'h.c');
  await page.harness('call', 'cut', 'subscribe', 'plain');
  for (let i = 1; i <= 3; i++) await srv.publish('h.c', `p${i}`);
  await page.harness('waitFor', 'cut', 'message', { count: 3 });

  proxy.down();
  const [gone] = await page.harness('waitFor', 'cut', 'disconnected');
  assert.equal(gone.code, 1006);
  for (let i = 4; i <= 6; i++) await srv.publish('h.c', `p${i}`);
  proxy.up();
  await page.harness('waitFor', 'cut', 'connected', { count: 2 });
  const [back] = await page.harness('waitFor', 'cut', 'subscribed', {
    match: { topic: 'h.c', resubscribed: true },
  });
  assert.deepEqual([back.recovered, back.missed, back.offset], [true, 3, 6]);
  await page.harness('waitFor', 'cut', 'subscribed', { match: { topic: 'plain', resubscribed: true } });
  await srv.publish('h.c', 'p7');
  await srv.publish('plain', 'plain after');
  await page.harness('waitFor', 'cut', 'message', { count: 8 });
  assert.deepEqual(await page.harness('messages', 'cut', 'h.c'), numbered(1, 7));
  assert.deepEqual(await page.harness('messages', 'cut', 'plain'), ['plain after']);
  assert.deepEqual(await page.harness('events', 'cut', 'notRecovered'), []);
});

test(
  'in Chromium: the server killed and restarted, reconnect, resubscribe, "epoch changed"',
  { skip },
  async () => {
    let srv = await server();
    await page.harness('start', 'restart', srv.url());
    await page.harness('waitFor', 'restart', 'connected');
    await page.harness('call', 'restart', 'subscribe', 'h.r');
    await page.harness('call', 'restart', 'subscribe', 'plain');
    await srv.publish('h.r', 'before');
    await page.harness('waitFor', 'restart', 'message');

    await srv.kill();
    await page.harness('waitFor', 'restart', 'disconnected');
    await page.harness('waitFor', 'restart', 'connecting', { count: 3 });
    srv = await srv.restart();
    cleanup.push(() => srv.kill());
    await page.harness('waitFor', 'restart', 'connected', { count: 2 });
    const [lost] = await page.harness('waitFor', 'restart', 'notRecovered');
    assert.deepEqual([lost.topic, lost.reason], ['h.r', 'epoch changed']);
    await page.harness('waitFor', 'restart', 'subscribed', { match: { topic: 'plain', resubscribed: true } });
    await srv.publish('h.r', 'after');
    await srv.publish('plain', 'plain after');
    await page.harness('waitFor', 'restart', 'message', { count: 3 });
    assert.deepEqual(await page.harness('messages', 'restart', 'h.r'), [
      [1, 'before'],
      [1, 'after'],
    ]);
    assert.deepEqual(await page.harness('messages', 'restart', 'plain'), ['plain after']);
    assert.equal(await page.harness('state', 'restart'), 'connected');
  },
);

test('in Chromium: the token travels in a subprotocol, and the 101 names corecast', { skip }, async () => {
  const secret = 'browser test secret';
  const dir = mkdtempSync(path.join(tmpdir(), 'corecast-browser-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'secret'), secret);
  const srv = await server([...HISTORY, '--jwt-secret-file', path.join(dir, 'secret')]);
  const proxy = await startProxy(srv.ws);
  cleanup.push(() => proxy.close());
  const exp = Math.floor(Date.now() / 1000) + 600;
  const jwt = hs256(secret, { sub: 'pat', exp, subscribe: ['h.*'], publish: ['h.*'] });
  await page.harness('start', 'token', `ws://${proxy.address}/ws`, { token: jwt });
  const [connected] = await page.harness('waitFor', 'token', 'connected');
  assert.equal(connected.protocol, 'corecast');
  // The token's grants, so the server verified the token it found in the subprotocol.
  assert.equal((await page.harness('call', 'token', 'subscribe', 'h.t')).positions, true);
  for (const method of ['subscribe', 'publish']) {
    const args = method === 'publish' ? ['other', 'x'] : ['other'];
    const refused = await page.harness('call', 'token', method, ...args);
    assert.deepEqual([refused.kind, refused.error], ['server', `${method} "other": not permitted`]);
  }
  await srv.publish('h.t', 'to pat');
  await page.harness('waitFor', 'token', 'message');
  assert.deepEqual(await page.harness('messages', 'token', 'h.t'), [[1, 'to pat']]);
  // The upgrade as the server read it: the token in the subprotocol alone.
  const [{ request, response }] = proxy.heads;
  assert.match(request, /^GET \/ws\?envelope=1 HTTP\/1\.1\r\n/);
  assert.equal(request.split(jwt).length, 2, 'the token appears once');
  assert.match(request, new RegExp(`^sec-websocket-protocol: corecast, corecast\\.token\\.${jwt}\r?$`, 'im'));
  assert.match(response, /^sec-websocket-protocol: corecast\r?$/im);
  assert.ok(!response.includes(jwt));
  assert.deepEqual(await page.harness('events', 'token', 'error'), []);
  await page.harness('call', 'token', 'close');
});
