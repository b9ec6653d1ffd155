//! The client over `wss://` against the real binary serving TLS (`--tls-cert`, `--tls-key`)
//! with a certificate made for the test by openssl: connect, subscribe, receive, deflate
//! negotiated. Skipped, saying so, where openssl is missing.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Server, WAIT_MS, withTimeout } from '../support/server.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function openssl(args) {
  execFileSync('openssl', args, { stdio: 'ignore' });
}

let opensslMissing = false;
try {
  openssl(['version']);
} catch {
  opensslMissing = 'openssl is not installed (apt-get install openssl)';
}

const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

test('wss: connect, subscribe and receive over TLS', { skip: opensslMissing }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'corecast-js-tls-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const [cert, key] = [path.join(dir, 'cert.pem'), path.join(dir, 'key.pem')];
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  ]);
  const srv = await Server.start(['--tls-cert', cert, '--tls-key', key, '--history', 'h.*=100/60s']);
  cleanup.push(() => srv.kill());
  const child = spawn(
    process.execPath,
    [
      '--experimental-websocket',
      '--no-warnings',
      path.join(here, '../support/wss-child.js'),
      `wss://${srv.ws}/ws`,
    ],
    {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: cert },
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  cleanup.push(() => child.kill('SIGKILL'));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await withTimeout(lines.next(), WAIT_MS, 'the wss client');
    assert.equal(done, false, 'the wss client ended early');
    return JSON.parse(value);
  };
  const connected = await next();
  assert.match(connected.connected, /permessage-deflate/);
  assert.deepEqual((await next()).subscribed, {
    topic: 'h.tls',
    positions: true,
    offset: 0,
    epoch: null,
    resubscribed: false,
  });
  await srv.publish('h.tls', 'over tls');
  assert.deepEqual((await next()).message, ['h.tls', 1, 'over tls']);
  child.stdin.write('close\n');
  assert.deepEqual(await next(), { closed: 'closed' });
  const code = await withTimeout(
    new Promise((resolve) => child.on('exit', resolve)),
    WAIT_MS,
    'the wss client to exit',
  );
  assert.equal(code, 0);
});
