//! A WebSocket stand-in for the client's unit tests: records what the client sends and lets a
//! test play the server (open, answer, close). Not a network socket.

export class FakeWebSocket {
  /** Every socket made, in order; the test's view of the client's connections. */
  static made = [];

  static reset() {
    FakeWebSocket.made = [];
  }

  static get last() {
    return FakeWebSocket.made[FakeWebSocket.made.length - 1];
  }

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.extensions = '';
    this.protocol = '';
    this.binaryType = 'blob';
    /** frames the client sent, parsed */
    this.sent = [];
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    FakeWebSocket.made.push(this);
  }

  send(text) {
    if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`);
    this.sent.push(JSON.parse(text));
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    // As a browser does: the close event comes later, not inside close().
    queueMicrotask(() => this.closed(code, reason, true));
  }

  // ---- the test plays the server ----

  /** Opens, naming `corecast` in the handshake as the server does for a token in a subprotocol. */
  open() {
    const offered = [this.protocols ?? []].flat();
    if (offered.includes('corecast') && offered.some((p) => p.startsWith('corecast.token.'))) {
      this.protocol = 'corecast';
    }
    this.readyState = 1;
    this.onopen?.({});
  }

  /** Sends the client a frame: an object goes as its JSON text, an ArrayBuffer as binary. */
  receive(frame) {
    const data = typeof frame === 'string' || frame instanceof ArrayBuffer ? frame : JSON.stringify(frame);
    this.onmessage?.({ data });
  }

  closed(code = 1006, reason = '', wasClean = false) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code, reason, wasClean });
  }

  /** The frames sent since the last call. */
  take() {
    const frames = this.sent;
    this.sent = [];
    return frames;
  }
}
