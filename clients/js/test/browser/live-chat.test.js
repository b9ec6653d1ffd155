//! The live chat example (examples/live_chat.rs and its page) in headless Chromium: the example's
//! own binary, built with cargo, and two of its pages, driven through their forms and read
//! back from their DOM: each sees the other's lines; a page that goes offline recovers what it
//! missed; the server killed and restarted, both pages come back by themselves, a line said
//! while it was down is reported not sent and goes out when sent again. Skipped, saying so,
//! only where no Chromium is found and $CHROMIUM is unset.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Chromium, chromiumPath } from './chromium.js';
import { WAIT_MS, repoRoot, sleep, withTimeout } from '../support/server.js';

const binary = chromiumPath();
const skip =
  binary === null ? 'no Chromium (apt-get install chromium, or set CHROMIUM); test/run installs it' : false;

const ROOM = 'test';

/** The example's binary: $CORECAST_LIVE_CHAT_BIN (test/run builds it), else built here. */
function exampleBinary() {
  if (process.env.CORECAST_LIVE_CHAT_BIN) return process.env.CORECAST_LIVE_CHAT_BIN;
  const built = spawnSync('cargo', ['build', '-q', '-p', 'corecast', '--example', 'live_chat'], {
    cwd: repoRoot,
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: 900_000,
  });
  if (built.status !== 0) throw new Error(`cargo build --example live_chat failed (${built.status ?? built.error})`);
  const target = path.resolve(repoRoot, process.env.CARGO_TARGET_DIR ?? 'target');
  const bin = path.join(target, 'debug', 'examples', 'live_chat');
  if (!existsSync(bin)) throw new Error(`no example binary at ${bin}`);
  return bin;
}

/** The example running: its page's origin and WebSocket address, restartable on both. */
class Example {
  constructor(bin, proc, page, ws, log) {
    Object.assign(this, { bin, proc, page, ws, log });
  }

  get origin() {
    return `http://${this.page}`;
  }

  static async start(bin, page = '127.0.0.1:0', ws = '127.0.0.1:0') {
    const proc = spawn(bin, [page, ws], {
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log = [];
    proc.stderr.setEncoding('utf8').on('data', (chunk) => log.push(chunk));
    const addresses = new Promise((resolve, reject) => {
      let out = '';
      proc.stdout.setEncoding('utf8').on('data', (chunk) => {
        out += chunk;
        const m = /open http:\/\/(\S+?)\/ .*ws:\/\/(\S+?)\/chat/.exec(out);
        if (m) resolve([m[1], m[2]]);
      });
      proc.on('exit', (code) => reject(new Error(`live_chat exited with ${code}: ${out}${log.join('')}`)));
      proc.on('error', reject);
    });
    try {
      const [pageAddr, wsAddr] = await withTimeout(addresses, WAIT_MS, 'live_chat to print its URL');
      return new Example(bin, proc, pageAddr, wsAddr, log);
    } catch (e) {
      proc.kill('SIGKILL');
      throw e;
    }
  }

  /** SIGKILL, as a crash: no close frames. */
  async kill() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const gone = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.kill('SIGKILL');
    await withTimeout(gone, WAIT_MS, 'live_chat to exit');
  }

  /** A new process on the same two addresses (tried a few times while the ports free). */
  async restart() {
    await this.kill();
    let lastError;
    for (let i = 0; i < 20; i++) {
      try {
        return await Example.start(this.bin, this.page, this.ws);
      } catch (e) {
        lastError = e;
        await sleep(100);
      }
    }
    throw lastError;
  }
}

/** What a page shows: its connection state, whether its room is subscribed, its log. */
const SNAPSHOT = `(() => ({
  status: document.getElementById('status').dataset.state,
  subscribed: document.getElementById('chat').dataset.subscribed === 'true',
  joinFormShown: getComputedStyle(document.getElementById('join')).display !== 'none',
  lines: [...document.querySelectorAll('#log li')].map((li) => ({
    kind: li.dataset.kind,
    from: li.dataset.from ?? null,
    text: li.querySelector('.text').textContent,
    state: li.dataset.state ?? null,
    level: li.dataset.level ?? null,
    why: li.querySelector('.why')?.textContent ?? null,
  })),
}))()`;

let example;
let browser;
let alice;
let bob;

/** A chat page, joined to the room as `name` through its form. */
async function join(name) {
  const page = await browser.open(`${example.origin}/?name=${name}&room=${ROOM}`);
  page.name = name;
  // The module prefills the form from the query, after which its handlers are set.
  await until(page, 'the page to load', () => true, `document.getElementById('name')?.value === ${JSON.stringify(name)}`);
  await page.eval(`document.querySelector('#join button').click()`);
  const s = await until(page, 'joined', (s) => s.status === 'connected' && s.subscribed);
  assert.equal(s.joinFormShown, false, 'the join form is gone once joined');
  return page;
}

/**
 * Waits (bounded) until `pred` holds of the page's snapshot (or `expr`, evaluated in the page,
 * is truthy); returns the snapshot. Fails with what the page showed and its console.
 */
async function until(page, what, pred, expr = SNAPSHOT, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await page.eval(expr);
    if (last && pred(last)) return last;
    await sleep(50);
  }
  assert.fail(
    `${page.name}: ${what} not seen within ${ms} ms; the page shows ${JSON.stringify(last, null, 1)}\n` +
      `console: ${browser.log.slice(-10).join('\n')}\nserver: ${example.log.join('').slice(-2000)}`,
  );
}

/** Types `text` and presses Send; waits until the page shows it sent. */
async function say(page, text, state = 'sent') {
  await page.eval(
    `document.getElementById('line').value = ${JSON.stringify(text)}; document.querySelector('#say button').click()`,
  );
  return until(page, `"${text}" ${state}`, (s) => mine(s, text)?.state === state);
}

const mine = (s, text) => s.lines.find((l) => l.kind === 'mine' && l.text === text);
const linesFrom = (s, from) => s.lines.filter((l) => l.kind === 'message' && l.from === from).map((l) => l.text);
/** The room's lines as a page shows them, in order: [from, text]. */
const room = (s) => s.lines.filter((l) => l.kind !== 'notice').map((l) => [l.from, l.text]);
const warnings = (s) => s.lines.filter((l) => l.kind === 'notice' && l.level === 'warning').map((l) => l.text);

before(async () => {
  if (skip) return;
  example = await Example.start(exampleBinary());
  browser = await Chromium.launch(binary);
  alice = await join('alice');
  bob = await join('bob');
});

after(async () => {
  await browser?.close();
  await example?.kill();
});

test('live chat in Chromium: two pages see each other\'s lines, each from its token\'s user', { skip }, async () => {
  await say(alice, 'hello bob');
  await until(bob, "alice's line", (s) => linesFrom(s, 'alice').includes('hello bob'));
  await say(bob, 'hi alice');
  const a = await until(alice, "bob's line", (s) => linesFrom(s, 'bob').includes('hi alice'));
  // A page's own line comes back from the server and shows once, as its own.
  assert.deepEqual(linesFrom(a, 'alice'), []);
  assert.deepEqual(
    a.lines.filter((l) => l.kind === 'mine').map((l) => [l.text, l.state]),
    [['hello bob', 'sent']],
  );
  const b = await until(bob, 'its own line back', (s) => mine(s, 'hi alice')?.state === 'sent');
  assert.deepEqual(room(a), room(b));
});

test('live chat in Chromium: a page that went offline recovers what was said meanwhile', { skip }, async () => {
  await bob.eval(`document.getElementById('pause').click()`);
  await until(bob, 'offline', (s) => s.status === 'closed');
  for (const text of ['one', 'two', 'three']) await say(alice, text);
  await bob.eval(`document.getElementById('pause').click()`);
  const b = await until(bob, 'the missed lines', (s) => linesFrom(s, 'alice').length >= 4 && s.subscribed);
  assert.deepEqual(linesFrom(b, 'alice'), ['hello bob', 'one', 'two', 'three']);
  assert.ok(
    b.lines.some((l) => l.kind === 'notice' && l.text === 'back: 3 missed line(s) recovered'),
    JSON.stringify(b.lines),
  );
  assert.deepEqual(warnings(b), []);
});

test(
  'live chat in Chromium: the server killed and restarted, the pages come back by themselves',
  { skip },
  async () => {
    await example.kill();
    for (const page of [alice, bob]) {
      await until(page, 'the connection lost', (s) => s.status !== 'connected' && !s.subscribed);
    }
    // Said while the server is down: the client refuses it at once, and the page says so.
    const down = await say(alice, 'while down', 'failed');
    assert.match(mine(down, 'while down').why, /not sent: offline/);

    example = await example.restart();
    for (const page of [alice, bob]) {
      // Back on their own, resubscribed; the restart lost the room's history, and each page
      // was told so by its client ("epoch changed").
      const s = await until(
        page,
        'reconnected, resubscribed, told of the lost history',
        (s) => s.status === 'connected' && s.subscribed && warnings(s).length > 0,
      );
      assert.deepEqual(warnings(s), [
        'back, but lines said while you were away may be missing (epoch changed)',
      ]);
    }
    await alice.eval(
      `[...document.querySelectorAll('#log li')].find((li) => li.querySelector('.text').textContent === 'while down').querySelector('.again').click()`,
    );
    await until(alice, '"while down" sent again', (s) => mine(s, 'while down')?.state === 'sent');
    await say(bob, 'after restart');

    const b = await until(bob, 'the line sent again', (s) => linesFrom(s, 'alice').includes('while down'));
    const a = await until(alice, "bob's line after the restart", (s) => linesFrom(s, 'bob').includes('after restart'));
    // Every line once, in the room's order, on both pages; nothing reported lost but the
    // history the restart took.
    assert.deepEqual(linesFrom(b, 'alice'), ['hello bob', 'one', 'two', 'three', 'while down']);
    assert.deepEqual(linesFrom(a, 'bob'), ['hi alice', 'after restart']);
    const [a2, b2] = [
      await until(alice, 'its own lines back', (s) => room(s).length === 7),
      await until(bob, 'its own lines back', (s) => room(s).length === 7),
    ];
    assert.deepEqual(room(a2), room(b2));
    assert.deepEqual(room(a2), [
      ['alice', 'hello bob'],
      ['bob', 'hi alice'],
      ['alice', 'one'],
      ['alice', 'two'],
      ['alice', 'three'],
      ['alice', 'while down'],
      ['bob', 'after restart'],
    ]);
    for (const s of [a2, b2]) assert.equal(warnings(s).length, 1, JSON.stringify(s.lines));
  },
);
