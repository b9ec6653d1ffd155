//! What the end-to-end tests share: the real `corecast` binary started on 127.0.0.1 port 0
//! (and restarted on the port it got), its HTTP API, HS256 tokens, a TCP proxy whose
//! connections can be cut, a backend hook, and bounded waits on client events. Not a test of
//! its own.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../../../..');
export const clientRoot = path.resolve(here, '../..');

/** The longest any single wait in the tests may take. */
export const WAIT_MS = 10_000;

/** The binary: $CORECAST_BIN, else the workspace's debug build (test/run builds it). */
export function binaryPath() {
  const bin = process.env.CORECAST_BIN ?? path.join(repoRoot, 'target', 'debug', 'corecast');
  if (!existsSync(bin)) {
    throw new Error(`no corecast binary at ${bin}: run 'cargo build -p corecast-bin' or set CORECAST_BIN`);
  }
  return bin;
}

/**
 * A running `corecast --mode pubsub` on one shard. `port` 0 takes a free one; `restart()`
 * comes back on the same port, as a restarted server would for its clients.
 */
export class Server {
  constructor(args, proc, ws, api, log) {
    this.args = args;
    this.proc = proc;
    this.ws = ws;
    this.api = api;
    this.log = log;
    this.port = Number(ws.split(':').pop());
  }

  static async start(args = [], { port = 0, env = {} } = {}) {
    const argv = [
      '--listen',
      `127.0.0.1:${port}`,
      '--api-listen',
      '127.0.0.1:0',
      '--shards',
      '1',
      '--mode',
      'pubsub',
      ...args,
    ];
    const proc = spawn(binaryPath(), argv, {
      env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const log = [];
    const serving = await new Promise((resolve, reject) => {
      let buffered = '';
      const timer = setTimeout(
        () => reject(new Error(`corecast did not start within ${WAIT_MS} ms:\n${log.join('\n')}`)),
        WAIT_MS,
      );
      proc.stderr.setEncoding('utf8');
      proc.stderr.on('data', (chunk) => {
        buffered += chunk;
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          // eslint-disable-next-line no-control-regex
          const line = buffered.slice(0, nl).replace(/\x1b\[[0-9;]*m/g, '');
          buffered = buffered.slice(nl + 1);
          log.push(line);
          if (line.includes('corecast serving')) {
            clearTimeout(timer);
            resolve(line);
          }
        }
      });
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`corecast exited with ${code} before serving:\n${log.join('\n')}`));
      });
    });
    const field = (name) =>
      serving
        .split(/\s+/)
        .find((w) => w.startsWith(`${name}=`))
        ?.slice(name.length + 1);
    return new Server(args, proc, field('listen'), field('api'), log);
  }

  /** `ws://` URL of the WebSocket route. */
  url(path = '/ws') {
    return `ws://${this.ws}${path}`;
  }

  /** Kills the process (SIGKILL: no close frames, as a crash) and waits for it to be gone. */
  async kill() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const gone = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.kill('SIGKILL');
    await withTimeout(gone, WAIT_MS, 'corecast to exit');
  }

  /** A new process with the same arguments on the same port (tried a few times while the port frees). */
  async restart(env = {}) {
    await this.kill();
    let lastError;
    for (let i = 0; i < 20; i++) {
      try {
        return await Server.start(this.args, { port: this.port, env });
      } catch (e) {
        lastError = e;
        await sleep(100);
      }
    }
    throw lastError;
  }

  /** POST /api/publish/{topic} (`?report=1` with `report`): the parsed answer. */
  async publish(topic, data, { binary = false, report = false } = {}) {
    const headers = binary
      ? { 'content-type': 'application/octet-stream' }
      : { 'content-type': 'text/plain' };
    const query = report ? '?report=1' : '';
    const res = await fetch(`http://${this.api}/api/publish/${encodeURIComponent(topic)}${query}`, {
      method: 'POST',
      headers,
      body: data,
      signal: AbortSignal.timeout(WAIT_MS),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`publish ${topic}: ${res.status} ${text}`);
    return JSON.parse(text);
  }

  /** POST /api/broadcast: `text` to every connection, outside any topic. */
  async broadcast(text) {
    const res = await fetch(`http://${this.api}/api/broadcast`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: text,
      signal: AbortSignal.timeout(WAIT_MS),
    });
    if (res.status !== 200) throw new Error(`broadcast: ${res.status} ${await res.text()}`);
  }

  /** GET an API path: the parsed answer. */
  async get(apiPath) {
    const res = await fetch(`http://${this.api}${apiPath}`, { signal: AbortSignal.timeout(WAIT_MS) });
    return JSON.parse(await res.text());
  }
}

/** An HS256 JWT of `claims` signed with `secret`. */
export function hs256(secret, claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const sig = createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

/**
 * A TCP proxy on 127.0.0.1:0 to `target` ("host:port"): `down()` drops every connection
 * through it at once (both sides) and refuses new ones, as a network that went away, until
 * `up()`; `pause()` makes the client a slow reader. `heads` holds, per connection, the HTTP
 * heads that passed: `{request, response}` (the upgrade as the server read it, and its answer).
 */
export async function startProxy(target) {
  const [host, port] = [
    target.slice(0, target.lastIndexOf(':')),
    Number(target.slice(target.lastIndexOf(':') + 1)),
  ];
  const pairs = new Set();
  const heads = [];
  let accepting = true;
  /** Keeps what `socket` sends up to its first blank line in `head[side]`. */
  const tapHead = (socket, head, side) => {
    let text = '';
    const tap = (chunk) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0 && text.length < 64 * 1024) return;
      head[side] = end < 0 ? text : text.slice(0, end);
      socket.off('data', tap);
    };
    socket.on('data', tap);
  };
  const server = net.createServer((client) => {
    if (!accepting) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, host);
    const pair = [client, upstream];
    pairs.add(pair);
    const head = { request: null, response: null };
    heads.push(head);
    tapHead(client, head, 'request');
    tapHead(upstream, head, 'response');
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${server.address().port}`,
    heads,
    get connections() {
      return pairs.size;
    },
    down() {
      accepting = false;
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    up() {
      accepting = true;
    },
    /** Stops reading what the server sends (it piles up in the server's queue), until `resume()`. */
    pause() {
      for (const [client, upstream] of pairs) {
        upstream.unpipe(client);
        upstream.pause();
      }
    },
    resume() {
      for (const [client, upstream] of pairs) upstream.pipe(client);
    },
    close() {
      this.down();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A backend hook on 127.0.0.1:0 (docs/backend.md, "Hooks"): each call's JSON goes to
 * `decide(call)`, whose value (or promise of one) is answered with 200 as JSON. `url(path)` is
 * what `--hook-*` takes; `calls` every call received, in order.
 */
export async function startHook(decide) {
  const calls = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', async () => {
      let answer;
      try {
        const call = JSON.parse(body);
        calls.push(call);
        answer = JSON.stringify(await decide(call));
      } catch (e) {
        res.writeHead(500).end(String(e));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(answer);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${server.address().port}`;
  return {
    calls,
    url: (path) => `http://${address}${path}`,
    close() {
      server.closeAllConnections?.();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Records a client's events from now on, so a test waits on the one it expects (bounded)
 * whether it already came or not.
 */
export function recorder(
  client,
  events = [
    'state',
    'connecting',
    'connected',
    'disconnected',
    'subscribed',
    'notRecovered',
    'unsubscribed',
    'message',
    'bare',
    'missed',
    'gap',
    'expiring',
    'refreshed',
    'error',
  ],
) {
  const seen = [];
  const waiters = new Set();
  for (const name of events) {
    client.on(name, (payload) => {
      seen.push({ name, payload });
      for (const w of [...waiters]) w.check();
    });
  }
  return {
    seen,
    of(name) {
      return seen.filter((e) => e.name === name).map((e) => e.payload);
    },
    /** Messages of `topic` as [offset, data] (or data alone for those without a position). */
    messages(topic) {
      return this.of('message')
        .filter((m) => m.topic === topic)
        .map((m) => (m.offset === undefined ? m.data : [m.offset, m.data]));
    },
    /** Waits until `count` events `name` (matching `pred`) were seen; returns them. */
    waitFor(name, { count = 1, pred = () => true, ms = WAIT_MS } = {}) {
      const matching = () => this.of(name).filter(pred);
      let w;
      const met = new Promise((resolve) => {
        w = {
          check: () => {
            const got = matching();
            if (got.length >= count) resolve(got);
          },
        };
      });
      waiters.add(w);
      w.check();
      const what = () => `${count} × ${name} (seen: ${JSON.stringify(seen.map((e) => e.name))})`;
      return withTimeout(met, ms, { toString: what }).finally(() => waiters.delete(w));
    },
  };
}
