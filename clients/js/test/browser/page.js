//! The browser test page's harness: makes clients with the browser's own WebSocket, records
//! their events, and answers the Node test's calls (over the DevTools protocol) with plain
//! JSON values. Bounded waits only. Not part of the client.

import { CorecastClient } from '../../src/index.js';

const clients = new Map();

/** What a value becomes on its way back to Node: bytes as an array, errors as their fields. */
function plain(value) {
  if (value instanceof Uint8Array) return { bytes: [...value] };
  if (value instanceof Error)
    return { error: value.message, kind: value.kind, code: value.code, reason: value.reason };
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

function entry(name) {
  const e = clients.get(name);
  if (!e) throw new Error(`no client ${name}`);
  return e;
}

const EVENTS = [
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
  'error',
];

window.harness = {
  userAgent: navigator.userAgent,

  start(name, url, options = {}) {
    const client = new CorecastClient(url, {
      reconnect: { initialDelayMs: 50, maxDelayMs: 400 },
      ...options,
    });
    const seen = [];
    const waiters = new Set();
    for (const event of EVENTS) {
      client.on(event, (payload) => {
        seen.push({ event, payload: plain(payload) });
        for (const w of [...waiters]) w();
      });
    }
    clients.set(name, { client, seen, waiters });
    client.connect().catch(() => {});
    return true;
  },

  /** Resolves with a request's answer, or `{error}` with the client's error. */
  async call(name, method, ...args) {
    try {
      return plain(await entry(name).client[method](...args));
    } catch (e) {
      return plain(e);
    }
  },

  events(name, event) {
    return entry(name)
      .seen.filter((s) => s.event === event)
      .map((s) => s.payload);
  },

  /** Waits (at most `ms`) until `count` events `event` whose fields include `match`; returns them. */
  waitFor(name, event, { count = 1, match = {}, ms = 10_000 } = {}) {
    const e = entry(name);
    const fits = (p) => Object.entries(match).every(([k, v]) => JSON.stringify(p?.[k]) === JSON.stringify(v));
    return new Promise((resolve, reject) => {
      const check = () => {
        const got = this.events(name, event).filter(fits);
        if (got.length >= count) {
          e.waiters.delete(check);
          clearTimeout(timer);
          resolve(got);
        }
      };
      const timer = setTimeout(() => {
        e.waiters.delete(check);
        reject(
          new Error(
            `${name}: ${count} × ${event} ${JSON.stringify(match)} not seen in ${ms} ms; seen ${JSON.stringify(e.seen.map((s) => s.event))}`,
          ),
        );
      }, ms);
      e.waiters.add(check);
      check();
    });
  },

  /** Messages of `topic`: [offset, data] with positions, data alone without. */
  messages(name, topic) {
    return this.events(name, 'message')
      .filter((m) => m.topic === topic)
      .map((m) => (m.offset === undefined ? m.data : [m.offset, m.data]));
  },

  state(name) {
    return entry(name).client.state;
  },
};
