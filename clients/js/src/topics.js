//! The client's subscriptions and the last position seen of each: which subscribe frame to
//! send (fresh, with positions, or recovering `since`), what an answer means, and which
//! envelopes to deliver (none twice, gaps counted). Pure: no socket, no timers.

/** The server's error for positions asked of a topic without history. */
export const NO_HISTORY = 'this topic keeps no history';

/**
 * One topic the application wants. `history`: 'auto' (ask for positions, fall back to a plain
 * subscription if the topic keeps none), 'require' (refuse without history) or 'off' (plain).
 * `hasHistory`: null until the server said, then true or false.
 */
function topicState(topic, history) {
  return {
    topic,
    history,
    hasHistory: history === 'off' ? false : null,
    /** the last position delivered, {offset, epoch}; epoch null before any publication */
    position: null,
    subscribed: false,
    /** what the last subscribe frame asked: 'plain', 'positions' or 'since' */
    asked: null,
    handlers: new Set(),
  };
}

export class Topics {
  constructor() {
    /** @type {Map<string, ReturnType<typeof topicState>>} */
    this.byName = new Map();
  }

  get(topic) {
    return this.byName.get(topic);
  }

  /** Adds `topic` (or returns it, already there). */
  want(topic, history = 'auto') {
    let st = this.byName.get(topic);
    if (!st) this.byName.set(topic, (st = topicState(topic, history)));
    return st;
  }

  /** Forgets `topic`, its position with it. */
  drop(topic) {
    const st = this.byName.get(topic);
    this.byName.delete(topic);
    return st;
  }

  wanted() {
    return [...this.byName.values()];
  }

  /** The connection is gone: nothing is subscribed on the server any more. */
  disconnected() {
    for (const st of this.byName.values()) st.subscribed = false;
  }

  /**
   * The subscribe frame for `st` now: from the last position seen when there is one (so the
   * server sends what was missed), with positions where the topic may keep history, plain
   * where it keeps none.
   */
  frame(st) {
    if (st.hasHistory === false) {
      st.asked = 'plain';
      return { subscribe: st.topic };
    }
    if (st.position !== null) {
      st.asked = 'since';
      return { subscribe: st.topic, since: { offset: st.position.offset, epoch: st.position.epoch } };
    }
    st.asked = 'positions';
    return { subscribe: st.topic, positions: true };
  }

  /**
   * The server subscribed `st` (`msg` its answer). Returns what the application is told:
   * `{topic, positions, offset?, epoch?, recovered?, missed?, reason?}`.
   */
  subscribed(st, msg) {
    st.subscribed = true;
    const positions =
      Number.isSafeInteger(msg.offset) && (typeof msg.epoch === 'string' || msg.epoch === null);
    const info = { topic: st.topic, positions };
    if (!positions) {
      if (st.asked === 'plain') st.hasHistory = false;
      return info;
    }
    st.hasHistory = true;
    info.offset = msg.offset;
    info.epoch = msg.epoch;
    if (msg.recovered === true) {
      // What was missed follows, from the position kept: keep it, or it would be dropped.
      info.recovered = true;
      info.missed = Number.isSafeInteger(msg.missed) ? msg.missed : 0;
      return info;
    }
    if (msg.recovered === false) {
      info.recovered = false;
      info.reason = typeof msg.reason === 'string' ? msg.reason : 'not recovered';
    }
    // Fresh, or not recovered: the live stream follows the topic's last position.
    st.position = { offset: msg.offset, epoch: msg.epoch };
    return info;
  }

  /**
   * The server refused to subscribe `st`. Returns `{retry: frame}` when the refusal only says
   * the topic keeps no history and the application left that open, else `{dropped: true}`.
   */
  refused(st, error) {
    if (error === NO_HISTORY && st.history === 'auto' && st.asked !== 'plain') {
      st.hasHistory = false;
      st.position = null;
      return { retry: this.frame(st) };
    }
    return { dropped: true };
  }

  /**
   * An envelope arrived. Returns `{deliver, gap}`: `deliver` false for a topic not wanted or
   * an offset already delivered (the seam of a recovery, a duplicate); `gap`, when offsets
   * were skipped, `{after, count}`. An envelope without a position (a topic without history)
   * is delivered as it comes.
   */
  envelope(env) {
    const st = this.byName.get(env.topic);
    if (!st) return { deliver: false, gap: null };
    // No position to keep: a topic without history, or one the application subscribed
    // plainly (history off), whose positions it does not want recovered from.
    if (env.offset === undefined || st.history === 'off') return { deliver: true, gap: null };
    st.hasHistory = true;
    const at = st.position;
    let gap = null;
    if (at === null) {
      // Positions not asked for this topic (another one turned them on): nothing to compare.
    } else if (at.epoch !== env.epoch) {
      // The first publication since "nothing kept" (offset 0), or a new history: either way
      // its offsets start at 1.
      if (env.offset > 1) gap = { after: 0, count: env.offset - 1 };
    } else {
      if (env.offset <= at.offset) return { deliver: false, gap: null };
      if (env.offset > at.offset + 1) gap = { after: at.offset, count: env.offset - at.offset - 1 };
    }
    st.position = { offset: env.offset, epoch: env.epoch };
    return { deliver: true, gap };
  }
}
