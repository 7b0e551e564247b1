import type { Position, ServerEvent, TransportName, WebSocketConstructor } from './types.js';
import type { Endpoints } from './util.js';

/** A room to (re)subscribe on a transport, with the position to resume from. */
export interface RoomSpec {
  room: string;
  since?: Position;
}

/** Why a transport stopped (it calls `lost` at most once). */
export interface LostInfo {
  /** WebSocket close code. */
  code?: number;
  reason?: string;
  /** HTTP status of a refused SSE/poll request. */
  status?: number;
  /** The transport had been open (`hello` seen, or first poll answered). */
  wasOpen: boolean;
  /** A reconnect delay the server asked for (1001 `reconnect_after_ms`, SSE `retry:`). */
  retryAfterMs?: number;
  /** The server refused the credentials (HTTP 401). */
  authFailed?: boolean;
  /** The transport is unusable in this environment (no WebSocket constructor, no fetch). */
  unsupported?: boolean;
  error?: unknown;
}

/** What a transport needs from the client. Every callback is ignored once the transport is stale. */
export interface TransportHost {
  open(): void;
  event(ev: ServerEvent): void;
  lost(info: LostInfo): void;
  /** The rooms to subscribe now. `kind` tells the client how the transport subscribes them. */
  rooms(kind: 'stream' | 'poll'): RoomSpec[];
}

export interface TransportConfig {
  endpoints: Endpoints;
  token: string | undefined;
  WebSocket: WebSocketConstructor | undefined;
  fetch: typeof fetch | undefined;
  heartbeatTimeoutMs: number | undefined;
  connectTimeoutMs: number;
  pollTimeoutMs: number;
}

export interface Transport {
  readonly name: TransportName;
  start(): void;
  /** Stops without calling the host again. `graceful`: a normal close (1000). */
  stop(graceful: boolean): void;
  /** Sends an op (WebSocket only); false if it could not be sent. */
  send(op: object): boolean;
  /** Sends a binary message (a binary publish, §9.9; WebSocket only); false if it could not be sent. */
  sendBinary(data: Uint8Array): boolean;
  /** The set of rooms changed (SSE and long-poll restart their request). */
  roomsChanged(): void;
}

/**
 * Headers of every HTTP request: the token, and `Connection: close`. The gateway closes the TCP
 * connection after each HTTP answer without saying so (no `Connection: close` in its answers),
 * so a client that keeps the connection for reuse (Node's fetch) races that close and sometimes
 * fails the next request with "other side closed". Browsers ignore the header (they manage
 * connections themselves and retry on a reused connection that was closed).
 */
export function httpHeaders(token: string | undefined): Record<string, string> {
  const h: Record<string, string> = { Connection: 'close' };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

/** A readable description of a failed fetch (Node puts the socket error in `cause`). */
export function describeFetchError(e: unknown): string {
  const err = e as { message?: string; cause?: { code?: string; message?: string } } | undefined;
  const cause = err?.cause ? ` (${[err.cause.code, err.cause.message].filter(Boolean).join(' ')})` : '';
  return `${err?.message ?? String(e)}${cause}`;
}
