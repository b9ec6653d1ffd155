//! CorecastClient: one connection to a corecast server in `--mode pubsub`, kept up (reconnect
//! with backoff, resubscribe, recovery from the last position seen, token refresh), asked for
//! envelopes on every topic (`?envelope=1`), its token in a subprotocol, with promises for
//! requests and events for the rest. Not the protocol's pure parts (answers.js, topics.js,
//! backoff.js, token.js) nor a server.

import { Backoff } from './backoff.js';
import { Ledger, busy, classify } from './answers.js';
import { Topics } from './topics.js';
import { base64Bytes, jwtExpiry, refreshDelay } from './token.js';

/**
 * Every error the client reports. `kind` says which: `server` (the server refused a request:
 * `error` is its text, `request` and `topic` what was refused), `disconnected` (the connection
 * closed with the request in flight: `code`, `reason`), `not-connected`, `timeout`, `closed`
 * (the application closed the client), `cancelled` (unsubscribed before the subscribe was
 * answered), `token` (the token function failed, no token to refresh with, or one a
 * subprotocol cannot carry), `protocol` (a frame nothing waited for, or one that cannot be read).
 */
export class CorecastError extends Error {
  constructor(kind, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CorecastError';
    this.kind = kind;
    for (const [k, v] of Object.entries(details)) if (k !== 'cause') this[k] = v;
  }
}

function serverError(request, topic, error) {
  const what = topic === undefined ? request : `${request} ${JSON.stringify(topic)}`;
  return new CorecastError('server', `${what}: ${error}`, { request, topic, error });
}

/**
 * A promise with its settle functions, settled once, rejected at `timeoutMs` (0: never), when
 * `onTimeout` runs too.
 */
function deferred(timeoutMs, what, onTimeout) {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const d = {
    promise,
    done: false,
    /** whether the request went out on the current connection */
    sent: false,
    timer: null,
    resolve(value) {
      if (d.done) return;
      d.done = true;
      clearTimeout(d.timer);
      resolve(value);
    },
    reject(error) {
      if (d.done) return;
      d.done = true;
      clearTimeout(d.timer);
      reject(error);
    },
  };
  if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
    d.timer = setTimeout(() => {
      d.reject(new CorecastError('timeout', `${what}: no answer within ${timeoutMs} ms`));
      onTimeout?.();
    }, timeoutMs);
  }
  return d;
}

/**
 * `url` resolved against the page's address in a browser, with `envelope=1` in its query (so
 * every publication comes in an envelope that names its topic, and no payload can pass for
 * one of the protocol's frames), and the token too when it travels there (`tokenIn: 'query'`).
 */
function connectUrl(url, queryToken) {
  const base = globalThis.location?.href;
  const u = base === undefined ? new URL(url) : new URL(url, base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  u.searchParams.set('envelope', '1');
  if (queryToken !== null) u.searchParams.set(queryToken.param, queryToken.token);
  return u.toString();
}

/** The subprotocol offered beside the token's, which the server names in its 101. */
const TOKEN_CARRIER_PROTOCOL = 'corecast';
/** The subprotocol that carries the token: `corecast.token.<jwt>`. */
const TOKEN_PROTOCOL_PREFIX = 'corecast.token.';

/** Characters a subprotocol name may have (RFC 7230 `token`): every JWT's are among them. */
const SUBPROTOCOL_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The subprotocols to offer: the application's, then, with a token that travels in a
 * subprotocol, `corecast` and `corecast.token.<token>`. Undefined when there are none.
 */
function offeredProtocols(own, token) {
  const list = own === undefined || own === null ? [] : Array.isArray(own) ? [...own] : [own];
  if (token === null) return list.length === 0 ? undefined : list;
  if (!SUBPROTOCOL_NAME.test(token)) {
    throw new CorecastError(
      'token',
      'the token has characters a subprotocol cannot carry (a JWT has none): send it with tokenIn: "query"',
    );
  }
  if (!list.includes(TOKEN_CARRIER_PROTOCOL)) list.push(TOKEN_CARRIER_PROTOCOL);
  list.push(TOKEN_PROTOCOL_PREFIX + token);
  return list;
}

function historyMode(history) {
  if (history === undefined || history === 'auto') return 'auto';
  if (history === true || history === 'require') return 'require';
  if (history === false || history === 'off') return 'off';
  throw new TypeError('history must be true, false, "auto", "require" or "off"');
}

/** Reconnect unless the close says a new connection would be refused the same way. */
function defaultShouldReconnect({ code, reason }, { refreshable }) {
  if (code === 1008 && reason === 'token for another user') return false;
  if (code === 1008 && reason === 'token expired' && !refreshable) return false;
  return true;
}

/** How long a close event may lag its error event before the socket is given up on. */
const ERROR_CLOSE_GRACE_MS = 250;

/** Shortest wait between two automatic refreshes, so a token about to expire is not refreshed in a loop. */
const MIN_REFRESH_GAP_MS = 500;

export class CorecastClient {
  #url;
  #opts;
  #WebSocket;
  #tokenSource;
  #token = null;
  #ws = null;
  #state = 'idle';
  #listeners = new Map();
  #backoff;
  #reconnect;
  #ledger = new Ledger();
  #topics = new Topics();
  #closing = false;
  #attempt = 0;
  #connections = 0;
  #refreshing = null;
  #timers = { reconnect: null, open: null, refresh: null, close: null };
  #connectWaiters = [];
  #closeWaiters = [];

  /**
   * @param {string} url `ws://` or `wss://` address of the server's WebSocket route (`/ws`);
   *   in a browser, a path (`/ws`) is taken from the page's address.
   * @param {object} [options] see README.md ("Options").
   */
  constructor(url, options = {}) {
    if (typeof url !== 'string' || url === '') throw new TypeError('url must be a non-empty string');
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError(
        'no WebSocket: pass options.WebSocket (Node 20 needs --experimental-websocket for the global one)',
      );
    }
    this.#url = url;
    this.#WebSocket = WS;
    const tokenIn = options.tokenIn ?? 'protocol';
    if (tokenIn !== 'protocol' && tokenIn !== 'query') {
      throw new TypeError('tokenIn must be "protocol" or "query"');
    }
    this.#opts = {
      tokenIn,
      tokenParam: options.tokenParam ?? 'token',
      protocols: options.protocols,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      openTimeoutMs: options.openTimeoutMs ?? 10_000,
      refreshAhead: options.refreshAhead ?? true,
      refreshMarginMs: options.refreshMarginMs ?? 30_000,
      refreshRetryMs: options.refreshRetryMs ?? 2_000,
      shouldReconnect: options.shouldReconnect,
    };
    const token = options.token;
    if (token !== undefined && token !== null && typeof token !== 'string' && typeof token !== 'function') {
      throw new TypeError('token must be a string or a function returning one (or a promise of one)');
    }
    this.#tokenSource = token ?? null;
    if (typeof token === 'string') this.#token = token;
    this.#reconnect = options.reconnect !== false;
    const backoff =
      typeof options.reconnect === 'object' && options.reconnect !== null ? options.reconnect : {};
    this.#backoff = new Backoff(backoff);
  }

  /** 'idle', 'connecting', 'connected', 'reconnecting' (waiting to try again) or 'closed'. */
  get state() {
    return this.#state;
  }

  /** The topics the client keeps subscribed, in the order they were asked for. */
  get topics() {
    return this.#topics.wanted().map((st) => st.topic);
  }

  /** The last position delivered for `topic` ({offset, epoch}), or null. */
  position(topic) {
    const st = this.#topics.get(topic);
    return st?.position ? { ...st.position } : null;
  }

  /** Listens to `event`; returns the function that stops listening. */
  on(event, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  /**
   * Starts connecting (and reconnecting, until `close()`). Resolves at the first connection;
   * rejects if the client is closed, or gives up, before one.
   */
  connect() {
    if (this.#state === 'connected') return Promise.resolve();
    const d = deferred(0);
    this.#connectWaiters.push(d);
    if (this.#state === 'idle' || this.#state === 'closed') {
      this.#closing = false;
      this.#backoff.reset();
      this.#open();
    }
    return d.promise;
  }

  /** Closes the connection and stops reconnecting; resolves once it is closed. */
  close(code = 1000, reason = '') {
    this.#closing = true;
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = null;
    const ws = this.#ws;
    if (ws === null) {
      this.#setState('closed');
      this.#failConnectWaiters();
      return Promise.resolve();
    }
    const d = deferred(0);
    this.#closeWaiters.push(d);
    try {
      ws.close(code, reason);
    } catch {
      ws.close();
    }
    // A server that never completes the close handshake does not hold the caller.
    this.#timers.close = setTimeout(
      () => this.#detached(ws, { code: 1006, reason: 'close not completed', wasClean: false }),
      5_000,
    );
    return d.promise;
  }

  /**
   * Subscribes to `topic`, and keeps it subscribed across reconnects (recovering what was
   * missed where the topic keeps history) until `unsubscribe`. Resolves with the server's
   * answer: `{topic, positions, offset?, epoch?, recovered?, missed?, reason?}`.
   * Options: `history` ('auto' default, true: require it, false: plain), `onMessage`.
   */
  subscribe(topic, { history, onMessage } = {}) {
    if (typeof topic !== 'string' || topic === '') {
      return Promise.reject(new TypeError('topic must be a non-empty string'));
    }
    if (onMessage !== undefined && typeof onMessage !== 'function') {
      return Promise.reject(new TypeError('onMessage must be a function'));
    }
    if (this.#state === 'closed') return Promise.reject(this.#closedError());
    let mode;
    try {
      mode = historyMode(history);
    } catch (e) {
      return Promise.reject(e);
    }
    let st = this.#topics.get(topic);
    const fresh = st === undefined;
    if (fresh) {
      st = this.#topics.want(topic, mode);
      Object.assign(st, {
        waiters: [],
        inFlight: false,
        info: null,
        retryTimer: null,
        everSubscribed: false,
      });
    }
    if (onMessage) st.handlers.add(onMessage);
    if (st.subscribed && !st.inFlight) return Promise.resolve({ ...st.info });
    const d = deferred(this.#opts.requestTimeoutMs, `subscribe ${JSON.stringify(topic)}`);
    st.waiters.push(d);
    if (st.inFlight) d.sent = true;
    else if (st.retryTimer === null && this.#isOpen()) this.#sendSubscribe(st, st.everSubscribed);
    return d.promise;
  }

  /**
   * Unsubscribes from `topic`: its messages stop at once, and it is not resubscribed. Resolves
   * when the server confirms; rejects with its error (`not subscribed`).
   */
  unsubscribe(topic) {
    if (typeof topic !== 'string' || topic === '') {
      return Promise.reject(new TypeError('topic must be a non-empty string'));
    }
    const st = this.#topics.drop(topic);
    if (st !== undefined) {
      clearTimeout(st.retryTimer);
      const cancelled = new CorecastError(
        'cancelled',
        `subscribe ${JSON.stringify(topic)}: unsubscribed before it was answered`,
      );
      for (const w of st.waiters.splice(0)) w.reject(cancelled);
    }
    // Nothing on the server to undo: not connected, or never subscribed there.
    if (!this.#isOpen() || (st !== undefined && !st.subscribed && !st.inFlight)) {
      return Promise.resolve({ topic });
    }
    return this.#ask('unsubscribe', topic, { unsubscribe: topic });
  }

  /**
   * Publishes `data` (a string goes out as its text, another JSON value as its JSON) to the
   * topic's other subscribers. Resolves when the server answers that it handed it on
   * (`{"published":..}`, after the publish hook when there is one); rejects with its refusal
   * (`not permitted`, `rate limit`, a publish hook's reason), or when the connection closes
   * first (then it may or may not have gone out). Not queued while disconnected.
   * `key`: the conflation key of a `keep-latest` topic (`--slow-consumers`).
   */
  publish(topic, data, { key } = {}) {
    if (typeof topic !== 'string' || topic === '') {
      return Promise.reject(new TypeError('topic must be a non-empty string'));
    }
    if (data === undefined || ['function', 'symbol', 'bigint'].includes(typeof data)) {
      return Promise.reject(new TypeError('data must be a string or a JSON value'));
    }
    if (key !== undefined && (typeof key !== 'string' || key === '')) {
      return Promise.reject(new TypeError('key must be a non-empty string'));
    }
    if (!this.#isOpen()) return Promise.reject(this.#notConnected('publish', topic));
    const frame = key === undefined ? { publish: topic, data } : { publish: topic, data, key };
    return this.#ask('publish', topic, frame);
  }

  /**
   * Asks the server's RPC hook; resolves with its answer's data, rejects with its error. The
   * request's `"id"` is the client's own, as every request's.
   */
  rpc(method, data) {
    if (typeof method !== 'string' || method === '') {
      return Promise.reject(new TypeError('method must be a non-empty string'));
    }
    if (!this.#isOpen()) return Promise.reject(this.#notConnected('rpc', method));
    return this.#ask('rpc', method, data === undefined ? { rpc: method } : { rpc: method, data });
  }

  /**
   * Presents a fresh token over the open connection (`jwt`, or the token function's next
   * one). Resolves with `{exp}` once the server took it; the client does this by itself
   * ahead of `exp` and on the server's `expiring` notice when it has a token function.
   */
  async refresh(jwt) {
    if (!this.#isOpen()) throw this.#notConnected('refresh');
    const token = jwt ?? (await this.#fetchToken(true));
    if (typeof token !== 'string' || token === '') {
      throw new CorecastError(
        'token',
        'refresh needs a token: pass one, or give the client a token function',
      );
    }
    if (!this.#isOpen()) throw this.#notConnected('refresh');
    return this.#ask('refresh', undefined, { refresh: token }, { token });
  }

  // ---- the connection ---------------------------------------------------------------------

  #isOpen() {
    return this.#ws !== null && this.#state === 'connected' && this.#ws.readyState === 1;
  }

  #setState(state) {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.#emit('state', { state, previous });
  }

  async #fetchToken(forRefresh) {
    const source = this.#tokenSource;
    if (source === null) return forRefresh ? undefined : null;
    const token = typeof source === 'function' ? await source() : source;
    if (typeof token !== 'string' || token === '') {
      throw new CorecastError('token', 'the token function returned no token');
    }
    return token;
  }

  async #open() {
    this.#timers.reconnect = null;
    if (this.#closing) return;
    this.#attempt += 1;
    this.#setState('connecting');
    this.#emit('connecting', { attempt: this.#attempt });
    let token = null;
    let url;
    let protocols;
    try {
      // A token string is the current one: the last a refresh presented, else the one given.
      token = typeof this.#tokenSource === 'function' ? await this.#fetchToken(false) : this.#token;
      if (this.#closing) return;
      const inQuery = token !== null && this.#opts.tokenIn === 'query';
      url = connectUrl(this.#url, inQuery ? { param: this.#opts.tokenParam, token } : null);
      protocols = offeredProtocols(this.#opts.protocols, inQuery ? null : token);
    } catch (e) {
      this.#emitError(
        e instanceof CorecastError
          ? e
          : new CorecastError('token', `no token: ${e?.message ?? e}`, { cause: e }),
      );
      this.#disconnected({ code: 1006, reason: 'no token', wasClean: false }, false);
      return;
    }
    let ws;
    try {
      ws = new this.#WebSocket(url, protocols);
    } catch (e) {
      this.#emitError(
        new CorecastError('protocol', `cannot open ${this.#url}: ${e?.message ?? e}`, { cause: e }),
      );
      this.#disconnected({ code: 1006, reason: String(e?.message ?? e), wasClean: false }, false);
      return;
    }
    this.#token = token;
    this.#ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this.#opened(ws);
    ws.onmessage = (ev) => this.#received(ws, ev.data);
    ws.onclose = (ev) => this.#detached(ws, { code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
    // A close event follows an error event and says what happened, except in Node 20's
    // WebSocket, which reports a refused connection or upgrade with the error alone.
    ws.onerror = () => {
      setTimeout(() => this.#detached(ws, { code: 1006, reason: '', wasClean: false }), ERROR_CLOSE_GRACE_MS);
    };
    this.#timers.open = setTimeout(() => {
      if (this.#ws !== ws || ws.readyState !== 0) return;
      try {
        ws.close();
      } catch {
        // closing a socket still connecting may throw in some implementations
      }
      this.#detached(ws, { code: 1006, reason: 'open timed out', wasClean: false });
    }, this.#opts.openTimeoutMs);
  }

  #opened(ws) {
    if (ws !== this.#ws) return;
    clearTimeout(this.#timers.open);
    this.#backoff.opened(Date.now());
    this.#connections += 1;
    const attempt = this.#attempt;
    this.#attempt = 0;
    // The resubscriptions go first, before anything a listener of the events below sends.
    const previous = this.#state;
    this.#state = 'connected';
    for (const st of this.#topics.wanted()) {
      if (!st.inFlight && st.retryTimer === null) this.#sendSubscribe(st, st.everSubscribed);
    }
    this.#scheduleRefresh();
    this.#emit('state', { state: 'connected', previous });
    this.#emit('connected', {
      attempt,
      reconnected: this.#connections > 1,
      extensions: ws.extensions ?? '',
      protocol: ws.protocol ?? '',
    });
    for (const d of this.#connectWaiters.splice(0)) d.resolve();
  }

  /** The socket `ws` closed (or was given up on): everything in flight fails, then maybe retry. */
  #detached(ws, info) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this.#disconnected(info, this.#backoff.openedAt !== null);
  }

  #disconnected({ code, reason, wasClean }, wasOpen) {
    for (const key of Object.keys(this.#timers)) {
      clearTimeout(this.#timers[key]);
      this.#timers[key] = null;
    }
    this.#refreshing = null;
    if (wasOpen) this.#backoff.closed(Date.now());
    const gone = new CorecastError(
      'disconnected',
      `connection closed (${code}${reason ? ` ${reason}` : ''})`,
      {
        code,
        reason,
      },
    );
    for (const entry of this.#ledger.drain()) entry.meta.d?.reject(gone);
    this.#topics.disconnected();
    for (const st of this.#topics.wanted()) {
      st.inFlight = false;
      clearTimeout(st.retryTimer);
      st.retryTimer = null;
      st.waiters = st.waiters.filter((w) => {
        if (w.sent) w.reject(gone);
        return !w.sent;
      });
    }
    const info = { code, reason, wasClean };
    let delay = null;
    if (!this.#closing && this.#reconnect && this.#shouldReconnect(info)) {
      delay = this.#backoff.next();
      this.#setState('reconnecting');
      this.#timers.reconnect = setTimeout(() => this.#open(), delay);
    } else {
      this.#setState('closed');
      this.#failConnectWaiters();
    }
    this.#emit('disconnected', { ...info, reconnectInMs: delay });
    for (const d of this.#closeWaiters.splice(0)) d.resolve();
  }

  #shouldReconnect(info) {
    const refreshable = typeof this.#tokenSource === 'function';
    if (typeof this.#opts.shouldReconnect === 'function') return this.#opts.shouldReconnect(info) !== false;
    return defaultShouldReconnect(info, { refreshable });
  }

  #closedError() {
    return new CorecastError('closed', 'the client is closed');
  }

  #notConnected(request, topic) {
    const what = topic === undefined ? request : `${request} ${JSON.stringify(topic)}`;
    return new CorecastError('not-connected', `${what}: not connected`, { request, topic });
  }

  #failConnectWaiters() {
    const error = this.#closing
      ? this.#closedError()
      : new CorecastError('closed', 'the client stopped reconnecting');
    for (const d of this.#connectWaiters.splice(0)) d.reject(error);
  }

  /**
   * Sends `frame` (the connection is open) with the id of a new request in the ledger; throws,
   * with nothing recorded, when the frame cannot be written (data JSON cannot hold).
   */
  #sendRequest(kind, name, meta, frame) {
    const entry = this.#ledger.request(kind, name, meta);
    let text;
    try {
      text = JSON.stringify({ ...frame, id: entry.id });
    } catch (e) {
      this.#ledger.forget(entry);
      throw e;
    }
    this.#ws.send(text);
    return entry;
  }

  // ---- requests -----------------------------------------------------------------------------

  /**
   * Sends a request whose promise its answer settles (unsubscribe, publish, refresh, rpc):
   * `name` its topic or method, `extra` more of the caller's for the answer. At its timeout
   * the request is forgotten, and a late answer dropped.
   */
  #ask(kind, name, frame, extra = {}) {
    const what = name === undefined ? kind : `${kind} ${JSON.stringify(name)}`;
    let entry = null;
    const d = deferred(this.#opts.requestTimeoutMs, what, () => entry && this.#ledger.forget(entry));
    d.sent = true;
    try {
      entry = this.#sendRequest(kind, name, { ...extra, d }, frame);
    } catch (e) {
      d.reject(e);
    }
    return d.promise;
  }

  #sendSubscribe(st, resubscribe, frame = this.#topics.frame(st)) {
    if (!this.#isOpen()) return;
    st.inFlight = true;
    for (const w of st.waiters) w.sent = true;
    this.#sendRequest('subscribe', st.topic, { st, resubscribe }, frame);
  }

  #scheduleRefresh() {
    clearTimeout(this.#timers.refresh);
    this.#timers.refresh = null;
    if (typeof this.#tokenSource !== 'function' || !this.#opts.refreshAhead) return;
    const exp = jwtExpiry(this.#token);
    if (exp === null) return;
    const delay = Math.max(MIN_REFRESH_GAP_MS, refreshDelay(exp, Date.now(), this.#opts.refreshMarginMs));
    this.#timers.refresh = setTimeout(() => this.#autoRefresh(), delay);
  }

  /** Refreshes with the token function's next token; on failure tries again while connected. */
  #autoRefresh() {
    if (this.#refreshing !== null || !this.#isOpen()) return;
    if (typeof this.#tokenSource !== 'function') {
      this.#emitError(
        new CorecastError(
          'token',
          'the token is expiring and the client has no token function to refresh it',
        ),
      );
      return;
    }
    const attempt = this.refresh().catch((e) => {
      if (this.#refreshing !== attempt || e?.kind === 'disconnected') return;
      this.#emitError(e);
      if (this.#isOpen()) {
        clearTimeout(this.#timers.refresh);
        this.#timers.refresh = setTimeout(() => this.#autoRefresh(), this.#opts.refreshRetryMs);
      }
    });
    this.#refreshing = attempt;
    attempt.finally(() => {
      if (this.#refreshing === attempt) this.#refreshing = null;
    });
  }

  // ---- what the server sends ----------------------------------------------------------------

  #received(ws, raw) {
    if (ws !== this.#ws) return;
    if (typeof raw !== 'string') {
      // Every publication comes in a (text) envelope: a binary frame is none of a topic's.
      const data = raw instanceof ArrayBuffer ? new Uint8Array(raw) : new Uint8Array(raw.buffer ?? raw);
      this.#emit('bare', { data, binary: true });
      return;
    }
    let frame = null;
    if (raw.startsWith('{')) {
      try {
        frame = classify(JSON.parse(raw));
      } catch {
        frame = null;
      }
    }
    if (frame === null) {
      // Outside any envelope (an emit, a broadcast, a server that ignores `envelope=1`): no
      // topic of its own, so it is reported as it came and taken for no topic's message.
      this.#emit('bare', { data: raw, binary: false });
      return;
    }
    switch (frame.kind) {
      case 'answer':
        this.#answer(frame, raw);
        break;
      case 'expiring':
        this.#emit('expiring', { seconds: frame.seconds });
        this.#autoRefresh();
        break;
      case 'envelope': {
        const binary = frame.binary !== undefined;
        let data = frame.data;
        try {
          if (binary) data = base64Bytes(frame.binary);
        } catch {
          this.#emitError(new CorecastError('protocol', `an envelope whose binary is not base64: ${raw}`));
          break;
        }
        const { deliver, gap } = this.#topics.envelope(frame);
        if (gap)
          this.#emit('gap', {
            topic: frame.topic,
            after: gap.after,
            count: gap.count,
            offset: frame.offset,
            epoch: frame.epoch,
          });
        if (!deliver) break;
        const message = { topic: frame.topic, data, binary };
        if (frame.offset !== undefined) Object.assign(message, { offset: frame.offset, epoch: frame.epoch });
        this.#deliver(message);
        break;
      }
      case 'missed':
        this.#emit('missed', { topic: frame.topic, count: frame.count });
        break;
      case 'error':
        this.#emitError(new CorecastError('server', `server: ${frame.error}`, { error: frame.error }));
        break;
    }
  }

  #answer(frame, raw) {
    const { entry, late } = this.#ledger.answer(frame);
    if (entry === null) {
      // A late answer's request was already settled by its timeout.
      if (!late) this.#emitError(new CorecastError('protocol', `an answer no request waited for: ${raw}`));
      return;
    }
    const meta = entry.meta;
    switch (entry.kind) {
      case 'subscribe':
        this.#subscribeAnswered(meta.st, meta.resubscribe, frame);
        break;
      case 'unsubscribe':
        if (frame.ok) meta.d.resolve({ topic: entry.name });
        else meta.d.reject(serverError('unsubscribe', entry.name, frame.error));
        break;
      case 'publish':
        if (frame.ok) meta.d.resolve();
        else meta.d.reject(serverError('publish', entry.name, frame.error));
        break;
      case 'refresh':
        if (frame.ok) {
          this.#token = meta.token;
          const exp = jwtExpiry(meta.token);
          meta.d.resolve({ exp });
          this.#emit('refreshed', { exp });
          this.#scheduleRefresh();
        } else {
          meta.d.reject(serverError('refresh', undefined, frame.error));
        }
        break;
      case 'rpc':
        if (frame.ok) meta.d.resolve(frame.msg.data);
        else meta.d.reject(serverError('rpc', entry.name, frame.error));
        break;
    }
  }

  #subscribeAnswered(st, resubscribe, frame) {
    // Unsubscribed since: its waiters were told then.
    if (this.#topics.get(st.topic) !== st) return;
    st.inFlight = false;
    if (frame.ok) {
      const info = this.#topics.subscribed(st, frame.msg);
      info.resubscribed = resubscribe;
      st.info = info;
      st.everSubscribed = true;
      this.#emit('subscribed', { ...info });
      if (info.recovered === false) this.#emit('notRecovered', { ...info });
      for (const w of st.waiters.splice(0)) w.resolve({ ...info });
      return;
    }
    if (busy(frame.error)) {
      // Too many requests at once (a reconnect with many topics): try again shortly.
      st.retryTimer = setTimeout(
        () => {
          st.retryTimer = null;
          if (this.#topics.get(st.topic) === st && !st.inFlight) this.#sendSubscribe(st, resubscribe);
        },
        1_000 + Math.floor(Math.random() * 1_000),
      );
      return;
    }
    const verdict = this.#topics.refused(st, frame.error);
    if (verdict.retry) {
      this.#sendSubscribe(st, resubscribe, verdict.retry);
      return;
    }
    this.#topics.drop(st.topic);
    const error = serverError('subscribe', st.topic, frame.error);
    const waiters = st.waiters.splice(0);
    for (const w of waiters) w.reject(error);
    // A topic the application held is gone: say so (a first subscribe's refusal is its promise's).
    if (st.everSubscribed) this.#emit('unsubscribed', { topic: st.topic, error: frame.error });
    if (waiters.length === 0) this.#emitError(error);
  }

  #deliver(message) {
    this.#emit('message', message);
    const st = this.#topics.get(message.topic);
    if (st === undefined) return;
    for (const handler of [...st.handlers]) this.#call(handler, message);
  }

  #emit(event, payload) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) this.#call(listener, payload);
  }

  /** Runs an application callback; what it throws is rethrown on its own, not into the client. */
  #call(fn, payload) {
    try {
      fn(payload);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }

  #emitError(error) {
    this.#emit('error', error);
  }
}
