/** Wire types of the ringcast protocol v1 (docs/protocol.md) and the SDK's public types. */

/** A JSON value as published and delivered (never `null` at the top level when publishing). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The transports the client can use, in order of preference. */
export type TransportName = 'websocket' | 'sse' | 'poll';

/** Connection state of a {@link RingcastClient}. */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The last message a client saw in a room (protocol §13). */
export interface Position {
  epoch: string;
  offset: number;
}

/** A presence member (protocol §10.7). */
export interface Member {
  client: string;
  user?: string;
  info?: Json;
}

/** A server event as it arrives on any transport (protocol §8.4, §10). Unknown fields are kept. */
export interface ServerEvent {
  ev: string;
  id?: number;
  room?: string;
  epoch?: string;
  offset?: number;
  recovered?: boolean;
  data?: Json;
  /** A binary message's payload in standard base64, in place of `data` (SSE, long-poll; §10.4). */
  bin?: string;
  /**
   * Not on the wire: a binary message's payload as the WebSocket transport decoded it from a
   * binary frame (§10.4).
   */
  binary?: Uint8Array;
  client?: string;
  node?: string;
  heartbeat_ms?: number;
  members?: Member[];
  member?: Member;
  /** Stored messages: `data` for JSON, `bin` (base64) for binary ones (§10.10). */
  messages?: { offset: number; data?: Json; bin?: string }[];
  expires_at?: number;
  expires_in_ms?: number;
  from?: number;
  to?: number;
  code?: string;
  reason?: string;
  [key: string]: unknown;
}

/** Meta data handed to a message handler with every message. */
export interface MessageContext {
  room: string;
  epoch: string;
  offset: number;
  /**
   * Set for a message published as bytes ({@link RingcastClient.publishBinary}, protocol §9.9):
   * its payload (possibly empty). The handler's `data` is then `null`, which a JSON message never
   * is. Absent for JSON messages.
   */
  binary?: Uint8Array;
}

/**
 * Called with every message of a room, in offset order, each offset at most once. JSON and
 * binary messages share the room's offsets: a binary one comes with `data === null` and its bytes
 * in `ctx.binary`.
 */
export type MessageHandler = (data: Json, ctx: MessageContext) => void;

/** A stored message, as {@link HistoryResult} lists it. */
export interface HistoryMessage {
  offset: number;
  /** The data as published; `null` for a binary message. */
  data: Json;
  /** A binary message's payload (decoded from the wire's base64 `bin`); absent for JSON. */
  binary?: Uint8Array;
}

/** What a `subscribed` answer said, as handed to `onSubscribed` and `Subscription.ready`. */
export interface SubscribedInfo {
  room: string;
  epoch: string;
  /** The room's latest offset when the subscription (re)started. */
  offset: number;
  /** `true` when every message after the position we resumed from follows (or nothing was missed). */
  recovered: boolean;
  /** `true` when the subscribe carried a `since` (a resume after a reconnect, or the `since` option). */
  resumed: boolean;
}

/** Emitted when a resume could not be completed: messages were missed; refetch the room's state. */
export interface RecoveryFailedInfo {
  room: string;
  /** The position the client asked to resume from. */
  previous: Position;
  /** The room's current epoch and latest offset; live messages continue after it. */
  epoch: string;
  offset: number;
}

/** Messages `from`…`to` (inclusive) of a room were not delivered (protocol §10.13). */
export interface GapInfo {
  room: string;
  epoch: string;
  from: number;
  to: number;
  /** `server`: a `gap` event; `client`: the SDK saw an offset jump no `gap` announced (§16.2). */
  source: 'server' | 'client';
}

export interface HistoryResult {
  room: string;
  epoch: string;
  /** The room's latest offset. */
  offset: number;
  recovered: boolean;
  /** Oldest first; binary messages have `data: null` and `binary`. */
  messages: HistoryMessage[];
}

export interface PublishResult {
  room: string;
  epoch: string;
  offset: number;
}

/** Details of a lost or refused connection, as handed to the `disconnected` event. */
export interface DisconnectInfo {
  transport: TransportName;
  /** WebSocket close code, when there was one. */
  code?: number;
  reason?: string;
  /** HTTP status of a refused SSE/poll request. */
  status?: number;
  /** `true` when the transport had been open (otherwise: it could not connect). */
  wasOpen: boolean;
  /** The delay the client waits before its next attempt (ms), when it reconnects. */
  retryInMs?: number;
}

/** A WebSocket constructor: the browser's global, or `ws`'s in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  /** Set to `'arraybuffer'` so binary messages arrive as `ArrayBuffer` (browsers and `ws`). */
  binaryType?: string;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  onclose: ((ev: { code: number; reason: string }) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type TokenProvider = () => Promise<string>;

export interface BackoffOptions {
  /** First delay ceiling (ms). Default 500. */
  minMs?: number;
  /** Largest delay ceiling (ms). Default 30000. */
  maxMs?: number;
  /** A connection that stays open this long resets the attempt counter (ms). Default 10000. */
  resetAfterMs?: number;
}

export interface OfflineQueueOptions {
  /** Most operations kept while disconnected; beyond, `publish` rejects with `queue_full`. Default 100. */
  max?: number;
  /** A queued operation not sent within this rejects with `timeout` (ms). Default 10000. */
  timeoutMs?: number;
}

export interface RingcastOptions {
  /**
   * The gateway's address: `ws(s)://host[:port][/prefix]` or `http(s)://host[:port][/prefix]`
   * (a trailing `/ws` is accepted). WebSocket uses `<prefix>/ws`, SSE `<prefix>/sse`, long-poll
   * `<prefix>/poll`, HTTP publish `<prefix>/publish`.
   */
  url: string;
  /** A JWT, or a function returning one (called to connect, on `token_expiring` and after auth failures). */
  token?: string | TokenProvider;
  /** Transports to try, in order. Default `['websocket', 'sse', 'poll']`. */
  transports?: TransportName[];
  /** WebSocket constructor; default `globalThis.WebSocket` (pass `ws`'s in Node < 22). */
  WebSocket?: WebSocketConstructor;
  /** fetch implementation for SSE, long-poll and HTTP publish; default `globalThis.fetch`. */
  fetch?: typeof fetch;
  backoff?: BackoffOptions;
  /**
   * Silence after which the connection is considered dead and replaced (ms). The client sends an
   * application `ping` after half of it. Default: twice the server's `heartbeat_ms` (50 s with the
   * server's defaults). SSE uses at least twice `heartbeat_ms` (the server sends `: hb` comments
   * only every `heartbeat_ms`).
   */
  heartbeatTimeoutMs?: number;
  offlineQueue?: OfflineQueueOptions;
  /** A connection attempt (until `hello`) that takes longer fails (ms). Default 10000. */
  connectTimeoutMs?: number;
  /** A long-poll request not answered within this is abandoned (ms); keep it above the server's hold (25 s). Default 40000. */
  pollTimeoutMs?: number;
  /** presence/history answer timeout once sent (ms). Default 10000. */
  requestTimeoutMs?: number;
  /** Listen to `online`/`offline` and page visibility when `window`/`document` exist. Default true. */
  browserEvents?: boolean;
}
