//! The pubsub protocol's frames as the client reads them (answers, notices, envelopes), and
//! the ledger that matches each answer to its request by the request's `"id"`.
//! Pure: no socket, no timers; the client owns those.

const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
const isStr = (v) => typeof v === 'string';
const isOffset = (v) => Number.isSafeInteger(v) && v >= 0;

/**
 * Errors by which the server says it did not act on a request and would a little later: the
 * connection sent too much (`--client-message-rate`), or too many of its requests wait behind
 * a backend hook. Worth asking again, after a pause.
 */
const BUSY_ERRORS = new Set(['rate limit', 'too many requests waiting']);

/** Whether a refusal only says "not now" (see BUSY_ERRORS). */
export function busy(error) {
  return BUSY_ERRORS.has(error);
}

/** An answer: which request kind and name it speaks of (`request` null: it names none). */
function answer(request, name, ok, error, msg) {
  const frame = { kind: 'answer', request, ok, msg };
  if (name !== undefined) frame.name = name;
  if (error !== undefined) frame.error = error;
  if (own(msg, 'id')) frame.id = msg.id;
  return frame;
}

/**
 * What a parsed JSON text frame is, or null when it is none of the protocol's frames (a bare
 * frame: the HTTP API's emit or broadcast, which no envelope wraps). Kinds:
 * `answer` ({request, name?, id?, ok, error?, msg}: `request` one of `subscribe`,
 * `unsubscribe`, `publish`, `refresh`, `rpc`, or null for `{"error":..,"id":..}`, which names
 * no request; `name` its topic or RPC method; `id` as the server sent it back),
 * `expiring` ({seconds}), `envelope` ({topic, offset?, epoch?, data?, binary?}: a
 * publication, with its position where its topic keeps history), `missed` ({topic, count}),
 * `error` ({error}: no id, so no request of this client's).
 */
export function classify(msg) {
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return null;
  const error = isStr(msg.error) ? msg.error : undefined;
  if (isStr(msg.subscribed)) return answer('subscribe', msg.subscribed, true, undefined, msg);
  if (isStr(msg.subscribe) && error !== undefined) {
    return answer('subscribe', msg.subscribe, false, error, msg);
  }
  if (isStr(msg.unsubscribed)) {
    return answer('unsubscribe', msg.unsubscribed, error === undefined, error, msg);
  }
  if (isStr(msg.unsubscribe) && error !== undefined) {
    return answer('unsubscribe', msg.unsubscribe, false, error, msg);
  }
  if (isStr(msg.published) && error === undefined) {
    return answer('publish', msg.published, true, undefined, msg);
  }
  if (isStr(msg.publish) && error !== undefined) return answer('publish', msg.publish, false, error, msg);
  if (msg.refreshed === true) return answer('refresh', undefined, true, undefined, msg);
  if (own(msg, 'refresh') && msg.refresh === null && error !== undefined) {
    return answer('refresh', undefined, false, error, msg);
  }
  if (isStr(msg.rpc) && (own(msg, 'data') || error !== undefined)) {
    return answer('rpc', msg.rpc, error === undefined, error, msg);
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
  // A publication of a topic without history, on a connection with envelopes: exactly the
  // topic and its payload.
  if (isStr(msg.topic) && Object.keys(msg).length === 2) {
    if (isStr(msg.data)) return { kind: 'envelope', topic: msg.topic, data: msg.data };
    if (isStr(msg.binary)) return { kind: 'envelope', topic: msg.topic, binary: msg.binary };
  }
  if (isStr(msg.topic) && isOffset(msg.missed) && !own(msg, 'data') && !own(msg, 'binary')) {
    return { kind: 'missed', topic: msg.topic, count: msg.missed };
  }
  if (error !== undefined) {
    const keys = Object.keys(msg).length;
    if (keys === 1) return { kind: 'error', error };
    // A request the server could not read, or refused before reading it: its id says which.
    if (keys === 2 && own(msg, 'id')) return answer(null, undefined, false, error, msg);
  }
  return null;
}

/** Whether `frame` may answer `entry`: the same kind and name, when the answer names them. */
function fits(entry, frame) {
  if (frame.request === null) return true;
  return frame.request === entry.kind && (frame.name === undefined || frame.name === entry.name);
}

/**
 * The requests of one connection waiting for their answers. Each gets the next id of the
 * connection's counter, which its frame carries and every answer to it carries back: an answer
 * is matched by its id, whatever the order answers come in (a refusal by the rate limit comes
 * at once, ahead of answers that wait on a backend hook or a topic's history).
 *
 * An answer without an id, from a server that does not send ids back, is matched to the
 * oldest request of its kind and name, as such a server answers one connection in order.
 */
export class Ledger {
  constructor() {
    /** the last id given on this connection */
    this.lastId = 0;
    /** @type {Map<number, {id: number, kind: string, name?: string, meta: unknown}>} by id, in send order */
    this.waiting = new Map();
  }

  /**
   * Records a request about to be sent: `kind` (`subscribe`, `unsubscribe`, `publish`,
   * `refresh`, `rpc`), `name` (its topic or RPC method), `meta` the caller's. Returns the
   * entry; its `id` goes in the frame.
   */
  request(kind, name, meta) {
    const entry = { id: ++this.lastId, kind, name, meta };
    this.waiting.set(entry.id, entry);
    return entry;
  }

  /** Forgets a request that will take no answer any more (it timed out); a late one is dropped. */
  forget(entry) {
    this.waiting.delete(entry.id);
  }

  /** How many requests wait. */
  get size() {
    return this.waiting.size;
  }

  /**
   * Takes the request an answer (from `classify`) is for. Returns `{entry, late}`: `entry`
   * null when none waits for it; then `late` says whether its id is one this connection gave
   * and no longer waits for (answered, or forgotten at its timeout), an answer to drop
   * quietly, rather than one no request of this client's ever had.
   */
  answer(frame) {
    if (own(frame, 'id')) {
      const entry = typeof frame.id === 'number' ? this.waiting.get(frame.id) : undefined;
      if (entry === undefined || !fits(entry, frame)) {
        const given = Number.isSafeInteger(frame.id) && frame.id >= 1 && frame.id <= this.lastId;
        return { entry: null, late: entry === undefined && given };
      }
      this.waiting.delete(entry.id);
      return { entry, late: false };
    }
    if (frame.request !== null) {
      for (const entry of this.waiting.values()) {
        if (fits(entry, frame)) {
          this.waiting.delete(entry.id);
          return { entry, late: false };
        }
      }
    }
    return { entry: null, late: false };
  }

  /** Everything still waiting, in send order, and forgets it (the connection is gone); ids restart at 1. */
  drain() {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    this.lastId = 0;
    return all;
  }
}
