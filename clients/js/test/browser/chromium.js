//! A headless Chromium driven over the DevTools protocol with no dependency: launched on a
//! fresh profile with its debugging port on 127.0.0.1:0, spoken to with Node's WebSocket, one
//! page opened and evaluated in. Test support, not a browser automation library.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WAIT_MS, withTimeout } from '../support/server.js';

/** The Chromium binary: $CHROMIUM, else the first of the usual names on PATH. */
export function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  const dirs = (process.env.PATH ?? '').split(':').filter(Boolean);
  for (const name of ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']) {
    for (const dir of dirs) {
      const candidate = path.join(dir, name);
      try {
        const st = statSync(candidate);
        if (st.isFile() && (st.mode & 0o111) !== 0) return candidate;
      } catch {
        // not in this directory
      }
    }
  }
  return null;
}

export class Chromium {
  constructor(proc, profile, socket) {
    this.proc = proc;
    this.profile = profile;
    this.socket = socket;
    this.nextId = 0;
    this.pending = new Map();
    /** console lines and uncaught exceptions of the page, for failure messages */
    this.log = [];
    socket.onmessage = (ev) => this.#received(JSON.parse(ev.data));
  }

  static async launch(binary) {
    const profile = mkdtempSync(path.join(tmpdir(), 'corecast-js-chromium-'));
    const args = [
      '--headless=new',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--no-first-run',
      '--no-default-browser-check',
      '--disable-extensions',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // No traffic of its own: on a closed network its lookups and connections only fail.
      '--disable-quic',
      '--remote-debugging-address=127.0.0.1',
      '--remote-debugging-port=0',
      `--user-data-dir=${profile}`,
      'about:blank',
    ];
    // Chromium's sandbox refuses to run as root (containers, CI).
    if (process.getuid?.() === 0) args.unshift('--no-sandbox');
    const proc = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr = [];
    const endpoint = await withTimeout(
      new Promise((resolve, reject) => {
        let buffered = '';
        proc.stderr.setEncoding('utf8');
        proc.stderr.on('data', (chunk) => {
          buffered += chunk;
          const lines = buffered.split('\n');
          buffered = lines.pop();
          for (const line of lines) {
            stderr.push(line);
            const m = /DevTools listening on (ws:\/\/\S+)/.exec(line);
            if (m) resolve(m[1]);
          }
        });
        proc.on('exit', (code) =>
          reject(new Error(`chromium exited with ${code}:\n${stderr.slice(-20).join('\n')}`)),
        );
        proc.on('error', reject);
      }),
      WAIT_MS * 2,
      'chromium to listen for DevTools',
    ).catch((e) => {
      proc.kill('SIGKILL');
      throw e;
    });
    const socket = new WebSocket(endpoint);
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.onopen = resolve;
        socket.onerror = () => reject(new Error(`cannot reach DevTools at ${endpoint}`));
      }),
      WAIT_MS,
      'the DevTools connection',
    );
    return new Chromium(proc, profile, socket);
  }

  #received(msg) {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (!p) return;
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
      else p.resolve(msg.result);
      return;
    }
    if (msg.method === 'Runtime.consoleAPICalled') {
      this.log.push(
        `console.${msg.params.type}: ${msg.params.args.map((a) => a.value ?? a.description).join(' ')}`,
      );
    } else if (msg.method === 'Runtime.exceptionThrown') {
      const d = msg.params.exceptionDetails;
      this.log.push(`exception: ${d.exception?.description ?? d.text}`);
    }
  }

  /** One DevTools command, answered within `ms`. */
  send(method, params = {}, sessionId, ms = WAIT_MS) {
    const id = ++this.nextId;
    const answered = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, method }));
    this.socket.send(JSON.stringify({ id, method, params, sessionId }));
    return withTimeout(answered, ms, `DevTools ${method}`).finally(() => this.pending.delete(id));
  }

  /** Opens `url` in a new page; returns the page's session. */
  async open(url) {
    const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    await this.send('Runtime.enable', {}, sessionId);
    await this.send('Page.navigate', { url }, sessionId);
    return new Page(this, sessionId);
  }

  async close() {
    const gone = new Promise((resolve) => {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) resolve();
      else this.proc.once('exit', resolve);
    });
    try {
      await this.send('Browser.close', {}, undefined, 2_000);
    } catch {
      // gone already, or not answering: killed below
    }
    this.socket.close();
    // Closed, it takes its helper processes down with it; killed, it may leave them writing.
    const exited = await withTimeout(gone, 5_000, 'chromium to exit').then(
      () => true,
      () => false,
    );
    if (!exited) {
      this.proc.kill('SIGKILL');
      await withTimeout(gone, WAIT_MS, 'chromium to exit after SIGKILL').catch(() => {});
    }
    try {
      rmSync(this.profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (e) {
      console.warn(`left the Chromium profile ${this.profile}: ${e.message}`);
    }
  }
}

export class Page {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
  }

  /**
   * Evaluates `expression` in the page, awaiting a promise, and returns its value (JSON). A
   * thrown error fails with the page's message and its recent console lines.
   */
  async eval(expression, ms = WAIT_MS + 2_000) {
    const { result, exceptionDetails } = await this.browser.send(
      'Runtime.evaluate',
      { expression, awaitPromise: true, returnByValue: true },
      this.sessionId,
      ms,
    );
    if (exceptionDetails) {
      const what = exceptionDetails.exception?.description ?? exceptionDetails.text;
      throw new Error(`in the page: ${what}\n${this.browser.log.slice(-10).join('\n')}`);
    }
    return result.value;
  }

  /** Calls `harness.<fn>(...args)` in the page. */
  harness(fn, ...args) {
    return this.eval(`window.harness.${fn}(${args.map((a) => JSON.stringify(a)).join(', ')})`);
  }

  /** Waits (bounded) until the page's module has loaded and set up its harness. */
  async ready() {
    const deadline = Date.now() + WAIT_MS;
    while (Date.now() < deadline) {
      if (await this.eval('typeof window.harness === "object"')) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(
      `the test page did not load its harness in ${WAIT_MS} ms:\n${this.browser.log.join('\n')}`,
    );
  }
}
