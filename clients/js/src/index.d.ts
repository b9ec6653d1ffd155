//! TypeScript types of the corecast JavaScript client (src/index.js): the client, its
//! options, events and errors, and the pure helpers it exports. Types only, no code.

/** A topic's position: an offset in one history (epoch). `epoch` null: nothing kept yet. */
export interface Position {
  offset: number;
  epoch: string | null;
}

/** A WebSocket constructor as browsers and Node (20 with --experimental-websocket, 22+) have it. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly extensions?: string;
  readonly protocol?: string;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ReconnectOptions {
  /** Ceiling of the first delay (ms); default 500. */
  initialDelayMs?: number;
  /** Largest ceiling (ms); default 30000. */
  maxDelayMs?: number;
  /** Growth of the ceiling per failed attempt; default 2. */
  factor?: number;
  /** A connection up this long (ms) resets the backoff; default 10000. */
  stableAfterMs?: number;
  /** The random source of the jitter, in [0, 1); default Math.random. */
  random?: () => number;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
}

export interface ClientOptions {
  /**
   * The token (JWT), or a function that fetches one; called at every connection and refresh.
   * A reconnect with a token string uses the last one a refresh presented.
   */
  token?: string | (() => string | Promise<string>);
  /**
   * Where the token travels at the upgrade. "protocol" (default): in the subprotocols
   * `corecast` and `corecast.token.<jwt>`, never in the URL. "query": in the URL's query
   * (`tokenParam`), for a server behind a proxy that strips `Sec-WebSocket-Protocol`.
   */
  tokenIn?: 'protocol' | 'query';
  /** Query parameter the token travels in with tokenIn "query"; default "token". */
  tokenParam?: string;
  /** The WebSocket constructor; default globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Subprotocols of the application's to offer (--subprotocols), ahead of the token's. */
  protocols?: string | string[];
  /** false: never reconnect; an object: the backoff's settings. Default: reconnect. */
  reconnect?: boolean | ReconnectOptions;
  /** Decides whether to reconnect after a close; default: yes, except 1008 "token for another user", and 1008 "token expired" without a token function. */
  shouldReconnect?: (info: CloseInfo) => boolean;
  /** How long a request waits for its answer (ms); default 10000. */
  requestTimeoutMs?: number;
  /** How long an attempt may take to open (ms); default 10000. */
  openTimeoutMs?: number;
  /** Refresh ahead of the token's exp when it can be read; default true. */
  refreshAhead?: boolean;
  /** How long before exp to refresh (ms), at most half the token's remaining life; default 30000. */
  refreshMarginMs?: number;
  /** Wait before trying a refused automatic refresh again (ms); default 2000. */
  refreshRetryMs?: number;
}

export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** What a subscribe resolved with, and the `subscribed` event. */
export interface Subscription {
  topic: string;
  /** Whether its publications come with positions (the topic keeps history). */
  positions: boolean;
  /** The topic's last position when subscribed (with positions). */
  offset?: number;
  epoch?: string | null;
  /** After a reconnect from a known position: whether what was missed follows. */
  recovered?: boolean;
  /** How many missed publications follow (recovered). */
  missed?: number;
  /** Why not recovered: "epoch changed", "position too old", "unknown position". */
  reason?: string;
  /** Made by a reconnect rather than by the application. */
  resubscribed: boolean;
}

/** A publication of a topic, as its envelope named it. */
export interface Message {
  topic: string;
  data: string | Uint8Array;
  binary: boolean;
  /** Its position, where the topic keeps history. */
  offset?: number;
  epoch?: string;
}

/** A frame outside any envelope: an emit or a broadcast of the HTTP API, no topic's. */
export interface BareFrame {
  data: string | Uint8Array;
  binary: boolean;
}

export interface SubscribeOptions {
  /** "auto" (default): positions where the topic keeps history; true/"require": refuse without; false/"off": plain. */
  history?: boolean | 'auto' | 'require' | 'off';
  /** Called with each of the topic's messages. */
  onMessage?: (message: Message) => void;
}

export interface ClientEvents {
  state: { state: ClientState; previous: ClientState };
  connecting: { attempt: number };
  connected: { attempt: number; reconnected: boolean; extensions: string; protocol: string };
  disconnected: CloseInfo & { reconnectInMs: number | null };
  subscribed: Subscription;
  notRecovered: Subscription & { recovered: false; reason: string };
  unsubscribed: { topic: string; error: string };
  message: Message;
  bare: BareFrame;
  missed: { topic: string; count: number };
  gap: { topic: string; after: number; count: number; offset: number; epoch: string };
  expiring: { seconds: number };
  refreshed: { exp: number | null };
  error: CorecastError;
}

export type ErrorKind =
  'server' | 'disconnected' | 'not-connected' | 'timeout' | 'closed' | 'cancelled' | 'token' | 'protocol';

export class CorecastError extends Error {
  readonly kind: ErrorKind;
  /** The server's error text (kind "server"). */
  readonly error?: string;
  /** The request refused: "subscribe", "unsubscribe", "publish", "refresh", "rpc". */
  readonly request?: string;
  /** The topic (or RPC method) of the request. */
  readonly topic?: string;
  /** The close (kind "disconnected"). */
  readonly code?: number;
  readonly reason?: string;
}

export class CorecastClient {
  constructor(url: string, options?: ClientOptions);
  readonly state: ClientState;
  /** The topics kept subscribed, in the order asked. */
  readonly topics: string[];
  position(topic: string): Position | null;
  on<E extends keyof ClientEvents>(event: E, listener: (payload: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, listener: (payload: ClientEvents[E]) => void): void;
  connect(): Promise<void>;
  close(code?: number, reason?: string): Promise<void>;
  subscribe(topic: string, options?: SubscribeOptions): Promise<Subscription>;
  unsubscribe(topic: string): Promise<{ topic: string }>;
  publish(topic: string, data: unknown, options?: { key?: string }): Promise<void>;
  rpc<T = unknown>(method: string, data?: unknown): Promise<T>;
  refresh(jwt?: string): Promise<{ exp: number | null }>;
}

export function createClient(url: string, options?: ClientOptions): CorecastClient;

export class Backoff {
  constructor(options?: ReconnectOptions);
  attempt: number;
  openedAt: number | null;
  ceiling(): number;
  next(): number;
  opened(now: number): void;
  closed(now: number): void;
  reset(): void;
}

/** Whether a refusal only says "not now": `rate limit`, `too many requests waiting`. */
export function busy(error: string): boolean;
/** The server's error for positions asked of a topic without history. */
export const NO_HISTORY: string;

/** The request kinds, as answers name them. */
export type RequestKind = 'subscribe' | 'unsubscribe' | 'publish' | 'refresh' | 'rpc';

export type Frame =
  | {
      kind: 'answer';
      /** The request the answer speaks of; null for `{"error":..,"id":..}`, which names none. */
      request: RequestKind | null;
      /** Its topic or RPC method. */
      name?: string;
      /** The request's id, as the server sent it back; absent from a server that sends none. */
      id?: unknown;
      ok: boolean;
      error?: string;
      msg: Record<string, unknown>;
    }
  | { kind: 'expiring'; seconds: number }
  | { kind: 'envelope'; topic: string; offset?: number; epoch?: string; data?: string; binary?: string }
  | { kind: 'missed'; topic: string; count: number }
  | { kind: 'error'; error: string };

/** What a parsed JSON frame is, or null for a bare frame (an emit or a broadcast). */
export function classify(msg: unknown): Frame | null;

export interface LedgerEntry<M = unknown> {
  /** The request's id on its connection, from 1. */
  id: number;
  kind: RequestKind;
  name?: string;
  meta: M;
}

/** One connection's requests waiting for answers, matched by id. */
export class Ledger {
  /** The last id given on this connection. */
  readonly lastId: number;
  readonly size: number;
  request<M>(kind: RequestKind, name: string | undefined, meta: M): LedgerEntry<M>;
  forget(entry: LedgerEntry): void;
  answer(frame: Frame & { kind: 'answer' }): { entry: LedgerEntry | null; late: boolean };
  drain(): LedgerEntry[];
}

export class Topics {
  get(topic: string): unknown;
  want(topic: string, history?: 'auto' | 'require' | 'off'): unknown;
  drop(topic: string): unknown;
  wanted(): unknown[];
  disconnected(): void;
  frame(state: unknown): Record<string, unknown>;
  subscribed(state: unknown, answer: Record<string, unknown>): Omit<Subscription, 'resubscribed'>;
  refused(state: unknown, error: string): { retry: Record<string, unknown> } | { dropped: true };
  envelope(frame: Frame & { kind: 'envelope' }): {
    deliver: boolean;
    gap: { after: number; count: number } | null;
  };
}

/** A JWT's exp (seconds), read without verifying; null when none. */
export function jwtExpiry(jwt: string): number | null;
/** Milliseconds until a token expiring at expSec should be refreshed. */
export function refreshDelay(expSec: number, nowMs: number, marginMs: number): number;
