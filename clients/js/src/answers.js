//! The pubsub protocol's frames as the client reads them (answers, notices, envelopes, bare
//! payloads), and the ledger that matches answers to the requests in flight. Pure: no socket,
//! no timers; the client owns those.

/**
 * Unsubscribed from to learn that the server acted on every publish sent before it: a
 * successful publish is not answered, but the server acts on one connection's requests in
 * order, so any later answer proves the earlier publishes went out. Never subscribed to.
 */
export const BARRIER_TOPIC = '$corecast.client.barrier';

/**
 * Errors the server sends the moment a request arrives. They are in order with the other
 * answers, except while the server queues the connection's requests behind one it waits on
 * (a backend hook, a topic's history): then they overtake the answers of those queued.
 */
const OVERTAKING_ERRORS = new Set(['rate limit', 'too many requests waiting']);

/** Whether an error answer may have overtaken the answers of earlier requests. */
export function overtakes(error) {
  return OVERTAKING_ERRORS.has(error);
}

const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
const isStr = (v) => typeof v === 'string';
const isOffset = (v) => Number.isSafeInteger(v) && v >= 0;

/** The key under which a request's answer is matched. */
export function answerKey(kind, name) {
  return name === undefined ? kind : `${kind}:${name}`;
}

/**
 * What a parsed JSON text frame is, or null when it is none of the protocol's frames (then it
 * is a bare publication, delivered as it came). Kinds:
 * `answer` ({key, ok, error?, msg}), `publishError` ({topic, error}), `expiring` ({seconds}),
 * `envelope` ({topic, offset, epoch, data?, binary?}), `missed` ({topic, count}),
 * `error` ({error}: a request the server could not read, or a refresh refused by rate limit).
 */
export function classify(msg) {
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return null;
  const error = isStr(msg.error) ? msg.error : undefined;
  if (isStr(msg.subscribed)) {
    return { kind: 'answer', key: answerKey('subscribe', msg.subscribed), ok: true, msg };
  }
  if (isStr(msg.subscribe) && error !== undefined) {
    return { kind: 'answer', key: answerKey('subscribe', msg.subscribe), ok: false, error, msg };
  }
  if (isStr(msg.unsubscribed)) {
    const ok = error === undefined;
    return { kind: 'answer', key: answerKey('unsubscribe', msg.unsubscribed), ok, error, msg };
  }
  if (isStr(msg.unsubscribe) && error !== undefined) {
    return { kind: 'answer', key: answerKey('unsubscribe', msg.unsubscribe), ok: false, error, msg };
  }
  if (isStr(msg.publish) && error !== undefined) {
    return { kind: 'publishError', topic: msg.publish, error };
  }
  if (msg.refreshed === true) return { kind: 'answer', key: 'refresh', ok: true, msg };
  if (own(msg, 'refresh') && msg.refresh === null && error !== undefined) {
    return { kind: 'answer', key: 'refresh', ok: false, error, msg };
  }
  if (isStr(msg.rpc) && (own(msg, 'data') || error !== undefined)) {
    const key = answerKey('rpc', JSON.stringify(own(msg, 'id') ? msg.id : null));
    return { kind: 'answer', key, ok: error === undefined, error, msg };
  }
  if (typeof msg.expiring === 'number' && Object.keys(msg).length === 1) {
    return { kind: 'expiring', seconds: msg.expiring };
  }
  if (isStr(msg.topic) && isOffset(msg.offset) && isStr(msg.epoch)) {
    if (isStr(msg.data)) {
      return { kind: 'envelope', topic: msg.topic, offset: msg.offset, epoch: msg.epoch, data: msg.data };
    }
    if (isStr(msg.binary)) {
      return { kind: 'envelope', topic: msg.topic, offset: msg.offset, epoch: msg.epoch, binary: msg.binary };
    }
  }
  if (isStr(msg.topic) && isOffset(msg.missed) && !own(msg, 'data') && !own(msg, 'binary')) {
    return { kind: 'missed', topic: msg.topic, count: msg.missed };
  }
  if (error !== undefined && Object.keys(msg).length === 1) return { kind: 'error', error };
  return null;
}

/**
 * The requests of one connection that wait for the server: answered requests (subscribe,
 * unsubscribe, refresh, rpc), matched to answers first in, first out per key, since the server
 * answers one connection's requests in order; and publishes, which succeed silently.
 *
 * A publish is settled by what comes after it: its refusal (`{"publish":"t","error":..}`)
 * rejects it, and the in-order answer of any request sent after it resolves it. To tell two
 * publishes of one topic apart, no two unproven publishes of a topic may stand without an
 * answered request between them: `needsBarrierBefore(topic)` says when one must be sent first.
 */
export class Ledger {
  constructor() {
    this.seq = 0;
    /** @type {Map<string, object[]>} answered requests waiting, per key, in send order */
    this.waiting = new Map();
    /** publishes not yet proven or refused, in send order */
    this.publishes = [];
    /** the sequence number of the last answered request sent */
    this.lastAnswered = 0;
    /** answered requests in flight that make the server queue what follows them */
    this.queueing = 0;
  }

  /**
   * Records an answered request about to be sent; `meta` is the caller's. `queues`: the
   * server acts on it asynchronously (a subscribe with positions waits on the topic's home
   * shard, an RPC on the backend), queueing the connection's later requests behind it, which
   * an error answered at once can overtake.
   */
  request(key, meta, { queues = false } = {}) {
    const entry = { seq: ++this.seq, key, meta, queues };
    if (queues) this.queueing += 1;
    let queue = this.waiting.get(key);
    if (!queue) this.waiting.set(key, (queue = []));
    queue.push(entry);
    this.lastAnswered = entry.seq;
    return entry;
  }

  /** Records a publish about to be sent. */
  publish(topic, meta) {
    const entry = { seq: ++this.seq, topic, meta };
    this.publishes.push(entry);
    return entry;
  }

  /** Whether a publish of `topic` now would stand beside an unproven one with no answer between. */
  needsBarrierBefore(topic) {
    return this.publishes.some((p) => p.topic === topic && p.seq > this.lastAnswered);
  }

  /** Whether some publish has no answered request after it to prove it. */
  needsBarrier() {
    const last = this.publishes[this.publishes.length - 1];
    return last !== undefined && last.seq > this.lastAnswered;
  }

  /** Whether an answered request with this key waits. */
  has(key) {
    const queue = this.waiting.get(key);
    return queue !== undefined && queue.length > 0;
  }

  /**
   * Takes the request an answer (from `classify`) is for. Returns `{entry, proven}`: `entry`
   * null when nothing waited under its key; `proven`, the publishes the answer settles as
   * done (those sent before the request, when the answer cannot have overtaken them).
   */
  answer(frame) {
    const queue = this.waiting.get(frame.key);
    const entry = queue && queue.length > 0 ? queue.shift() : null;
    if (queue && queue.length === 0) this.waiting.delete(frame.key);
    if (entry?.queues) this.queueing -= 1;
    let proven = [];
    // An error answered on arrival is in order unless the server is queueing this
    // connection's requests (then it proves nothing about the ones before it).
    const inOrder = frame.ok || !overtakes(frame.error) || this.queueing === 0;
    if (entry && inOrder) {
      proven = this.publishes.filter((p) => p.seq < entry.seq);
      this.publishes = this.publishes.filter((p) => p.seq > entry.seq);
    }
    return { entry, proven };
  }

  /** Takes the publish a refusal of `topic` is for: the oldest unproven one, or null. */
  refusePublish(topic) {
    const at = this.publishes.findIndex((p) => p.topic === topic);
    if (at < 0) return null;
    return this.publishes.splice(at, 1)[0];
  }

  /** Everything still waiting, in send order, and forgets it (the connection is gone). */
  drain() {
    const all = [...this.publishes];
    for (const queue of this.waiting.values()) all.push(...queue);
    this.waiting.clear();
    this.publishes = [];
    this.lastAnswered = this.seq;
    this.queueing = 0;
    return all.sort((a, b) => a.seq - b.seq);
  }
}
