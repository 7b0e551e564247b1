import { backoffDelay } from './backoff.js';
import { encodeBinaryPublish, fromBase64 } from './binary.js';
import { RingcastError } from './errors.js';
import { Subscription, type SubscribeOptions } from './subscription.js';
import type { LostInfo, RoomSpec, Transport, TransportConfig, TransportHost } from './transport.js';
import { describeFetchError, httpHeaders } from './transport.js';
import { PollTransport } from './transport-poll.js';
import { SseTransport } from './transport-sse.js';
import { WebSocketTransport } from './transport-ws.js';
import type {
  ConnectionState,
  DisconnectInfo,
  GapInfo,
  HistoryMessage,
  HistoryResult,
  Json,
  Member,
  MessageContext,
  MessageHandler,
  Position,
  PublishResult,
  RecoveryFailedInfo,
  RingcastOptions,
  ServerEvent,
  SubscribedInfo,
  TransportName,
  WebSocketConstructor,
} from './types.js';
import { Emitter, endpoints, isValidRoom, jwtExpiryMs, probeHttp, reportListenerError, type Endpoints } from './util.js';

/** Events of {@link RingcastClient.on}. */
export interface ClientEvents {
  /** The connection state changed: (state, previous). */
  state: [ConnectionState, ConnectionState];
  /** A transport is open. */
  open: [{ transport: TransportName; client: string | undefined }];
  /** A transport was lost or could not connect. */
  disconnected: [DisconnectInfo];
  /** A resume returned `recovered: false` (or the epoch changed): the app should refetch the room. */
  recoveryFailed: [RecoveryFailedInfo];
  /** Messages of a room were skipped. */
  gap: [GapInfo];
  /** The server confirmed a (re)subscription. */
  subscribed: [SubscribedInfo];
  /** The server removed a subscription (`reason`, e.g. `forbidden`). */
  unsubscribed: [{ room: string; reason: string | undefined }];
  /** An error not tied to a promise: a failed subscription, a refused `event`, an auth failure, … */
  error: [RingcastError];
  /** The token was replaced with `refresh`. */
  tokenRefreshed: [{ expiresAt: number | undefined }];
}

interface RoomState {
  room: string;
  subs: Set<Subscription>;
  position: Position | undefined;
  status: 'pending' | 'subscribed';
  /** The position sent as `since` with the subscribe in flight. */
  sentSince: Position | undefined;
  /** Id of the WebSocket subscribe in flight. */
  subscribeId: number | undefined;
  retries: number;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  lastInfo: SubscribedInfo | undefined;
  members: Map<string, Member> | undefined;
}

type PendingKind = 'subscribe' | 'unsubscribe' | 'publish' | 'presence' | 'history' | 'refresh' | 'event';

interface Pending {
  kind: PendingKind;
  room: string | undefined;
  resolve: (ev: ServerEvent) => void;
  reject: (err: RingcastError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Re-runs an idempotent request after a reconnect. */
  retry: (() => void) | undefined;
}

interface Queued {
  run: () => void;
  reject: (err: RingcastError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** A close code, a 401, or a refused refresh: the credentials are the problem. */
const AUTH_CLOSE_CODES = new Set([4001, 4002, 4003]);
/** Subscribe errors that retrying cannot fix (protocol §11); other codes are retried with backoff. */
const PERMANENT_ERRORS = new Set([
  'bad_request',
  'unknown_op',
  'bad_room',
  'unauthorized',
  'forbidden',
  'not_found',
  'limit_exceeded',
  'not_enabled',
]);
/** An established transport that fails this many connects in a row lets the next one be tried. */
const FALLBACK_AFTER_FAILURES = 3;

/**
 * A ringcast client for browsers and Node.
 *
 * ```ts
 * const client = new RingcastClient({ url: 'wss://rt.example.com', token: () => fetchJwt() });
 * client.connect();
 * const sub = client.subscribe('chat.lobby', (data, { offset }) => render(data, offset));
 * await client.publish('chat.lobby', { text: 'hi' });
 * ```
 */
export class RingcastClient {
  private readonly opts: {
    token: RingcastOptions['token'];
    transports: TransportName[];
    WebSocket: WebSocketConstructor | undefined;
    fetch: typeof fetch | undefined;
    minMs: number;
    maxMs: number;
    resetAfterMs: number;
    heartbeatTimeoutMs: number | undefined;
    queueMax: number;
    queueTimeoutMs: number;
    connectTimeoutMs: number;
    pollTimeoutMs: number;
    requestTimeoutMs: number;
    browserEvents: boolean;
  };
  private readonly endpoints: Endpoints;
  private readonly emitter = new Emitter<ClientEvents>();
  private readonly rooms = new Map<string, RoomState>();
  private readonly pending = new Map<number, Pending>();
  private queue: Queued[] = [];
  private openWaiters: { resolve: () => void; reject: (e: RingcastError) => void }[] = [];

  private _state: ConnectionState = 'idle';
  private wantConnected = false;
  private current: Transport | undefined;
  private idx = 0;
  private established: number | undefined;
  private failsOnEstablished = 0;
  private attempts = 0;
  private attemptSeq = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private stableTimer: ReturnType<typeof setTimeout> | undefined;
  private nextId = 1;
  private _clientId: string | undefined;
  private cachedToken: string | undefined;
  private currentToken: string | undefined;
  private forceToken = false;
  private rejectedToken: string | undefined;
  private refreshing = false;
  private httpChain: Promise<unknown> = Promise.resolve();
  private browserAttached = false;

  constructor(options: RingcastOptions) {
    if (!options || typeof options.url !== 'string') throw new TypeError('RingcastClient: `url` is required');
    const transports = options.transports ?? ['websocket', 'sse', 'poll'];
    if (transports.length === 0) throw new TypeError('RingcastClient: `transports` is empty');
    for (const t of transports) {
      if (t !== 'websocket' && t !== 'sse' && t !== 'poll') throw new TypeError(`RingcastClient: unknown transport ${t}`);
    }
    const g = globalThis as { WebSocket?: WebSocketConstructor; fetch?: typeof fetch };
    const fetchFn = options.fetch ?? (typeof g.fetch === 'function' ? g.fetch.bind(globalThis) : undefined);
    this.opts = {
      token: options.token,
      transports: [...transports],
      WebSocket: options.WebSocket ?? g.WebSocket,
      fetch: fetchFn,
      minMs: options.backoff?.minMs ?? 500,
      maxMs: options.backoff?.maxMs ?? 30000,
      resetAfterMs: options.backoff?.resetAfterMs ?? 10000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs,
      queueMax: options.offlineQueue?.max ?? 100,
      queueTimeoutMs: options.offlineQueue?.timeoutMs ?? 10000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10000,
      pollTimeoutMs: options.pollTimeoutMs ?? 40000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10000,
      browserEvents: options.browserEvents ?? true,
    };
    if (this.opts.minMs < 0 || this.opts.maxMs < this.opts.minMs) {
      throw new TypeError('RingcastClient: backoff needs 0 <= minMs <= maxMs');
    }
    this.endpoints = endpoints(options.url);
  }

  // ---------------------------------------------------------------- public API

  /** The connection state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** The transport in use while open (`undefined` otherwise). */
  get transport(): TransportName | undefined {
    return this._state === 'open' ? this.current?.name : undefined;
  }

  /** This connection's client id (from `hello`), when known. */
  get clientId(): string | undefined {
    return this._clientId;
  }

  /** Listens to state changes; returns a function that removes the listener. */
  onState(listener: (state: ConnectionState, previous: ConnectionState) => void): () => void {
    return this.emitter.on('state', listener);
  }

  /** Listens to a client event; returns a function that removes the listener. */
  on<K extends keyof ClientEvents>(name: K, listener: (...args: ClientEvents[K]) => void): () => void {
    return this.emitter.on(name, listener);
  }

  /**
   * Starts connecting (and keeps reconnecting until {@link close}). Resolves once a transport is
   * open; rejects if the client is closed first.
   */
  connect(): Promise<void> {
    if (this._state === 'open') return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.openWaiters.push({ resolve, reject }));
    p.catch(() => {});
    if (!this.wantConnected) {
      this.wantConnected = true;
      this.idx = this.established ?? 0;
      this.attempts = 0;
      this.setState('connecting');
      this.attachBrowser();
      void this.startAttempt();
    }
    return p;
  }

  /**
   * Closes the connection and stops reconnecting. Queued and in-flight operations reject with
   * `closed`. Subscriptions and their positions are kept: a later {@link connect} resumes them.
   */
  close(): void {
    this.shutdown(new RingcastError('closed', 'the client was closed'));
  }

  /** Drops the current connection and reconnects at once (subscriptions resume with `since`). */
  reconnect(): void {
    if (!this.wantConnected) {
      void this.connect();
      return;
    }
    const t = this.current;
    if (t) {
      t.stop(false);
      this.onLost(t, { wasOpen: this._state === 'open', reason: 'reconnect requested', retryAfterMs: 0 });
    } else {
      this.wake(true);
    }
  }

  /**
   * Subscribes to `room`. `handler` receives every message in offset order, each at most once;
   * after a reconnect the subscription resumes from the last position seen (`since`), and
   * `recoveryFailed` / `onRecoveryFailed` says when that was impossible.
   */
  subscribe(room: string, handler: MessageHandler, options: SubscribeOptions = {}): Subscription {
    if (!isValidRoom(room)) throw new RingcastError('bad_room', `invalid room name ${JSON.stringify(room)}`, { room });
    if (typeof handler !== 'function') throw new TypeError('subscribe: handler must be a function');
    const sub = new Subscription(this, room, handler, options);
    let rs = this.rooms.get(room);
    if (rs) {
      rs.subs.add(sub);
      if (rs.status === 'subscribed' && rs.lastInfo) sub._settle(rs.lastInfo);
      if (options.presence && !rs.members && rs.status === 'subscribed') this.fetchPresence(rs);
      return sub;
    }
    rs = {
      room,
      subs: new Set([sub]),
      position: options.since ? { epoch: options.since.epoch, offset: options.since.offset } : undefined,
      status: 'pending',
      sentSince: undefined,
      subscribeId: undefined,
      retries: 0,
      retryTimer: undefined,
      lastInfo: undefined,
      members: undefined,
    };
    this.rooms.set(room, rs);
    const t = this.current;
    if (t && this._state === 'open') {
      if (t.name === 'websocket') this.sendSubscribe(rs);
      else t.roomsChanged();
    }
    return sub;
  }

  /**
   * Publishes `data` (any JSON value but `null`) to `room`. Resolves with the message's position
   * once the server stored it (`published`); rejects with the server's `error`. While disconnected
   * the publish waits in the offline queue (bounded; `queue_full` / `timeout`). A publish sent but
   * not acked when the connection drops rejects with `connection_lost` (it may have been stored).
   */
  publish(room: string, data: Json): Promise<PublishResult> {
    if (!isValidRoom(room)) return Promise.reject(new RingcastError('bad_room', 'invalid room name', { room }));
    if (data === null || data === undefined) {
      return Promise.reject(new RingcastError('bad_request', 'data must not be null', { room }));
    }
    if (this._state === 'closed') return Promise.reject(new RingcastError('closed', 'the client is closed', { room }));
    return this.sendPublish(
      room,
      (t, id) => t.send({ op: 'publish', id, room, data }),
      () => this.httpPublish(room, data),
    );
  }

  /**
   * Publishes bytes to `room` as a binary message (protocol §9.9: one binary WebSocket message,
   * no JSON, no base64). It takes the room's next offset like a JSON message and reaches
   * subscribers with `data === null` and the bytes in `ctx.binary`. Acked, queued and timed out
   * like {@link publish}; `data` is copied when called. Needs the WebSocket transport (there is
   * no binary HTTP publish): rejects with `unsupported_transport` on SSE and long-poll.
   */
  publishBinary(room: string, data: Uint8Array): Promise<PublishResult> {
    if (!isValidRoom(room)) return Promise.reject(new RingcastError('bad_room', 'invalid room name', { room }));
    if (!(data instanceof Uint8Array)) {
      return Promise.reject(new RingcastError('bad_request', 'data must be a Uint8Array', { room }));
    }
    if (this._state === 'closed') return Promise.reject(new RingcastError('closed', 'the client is closed', { room }));
    if (!this.opts.transports.includes('websocket')) {
      return Promise.reject(new RingcastError('unsupported_transport', 'publishBinary needs the websocket transport', { room }));
    }
    const bytes = data.slice();
    return this.sendPublish(room, (t, id) => t.sendBinary(encodeBinaryPublish(id, room, bytes)), undefined);
  }

  /**
   * Sends a publish now, or queues it until a transport is open. `viaHttp` publishes on SSE and
   * long-poll; without it the publish rejects there with `unsupported_transport`.
   */
  private sendPublish(
    room: string,
    sendWs: (t: Transport, id: number) => boolean,
    viaHttp: (() => Promise<PublishResult>) | undefined,
  ): Promise<PublishResult> {
    return new Promise<PublishResult>((resolve, reject) => {
      const run = (): void => {
        const t = this.current;
        if (!t || this._state !== 'open') {
          this.enqueue(run, reject);
          return;
        }
        if (t.name !== 'websocket') {
          if (viaHttp) viaHttp().then(resolve, reject);
          else reject(new RingcastError('unsupported_transport', `binary publish needs websocket, not ${t.name}`, { room }));
          return;
        }
        const id = this.nextId++;
        this.pending.set(id, {
          kind: 'publish',
          room,
          resolve: (ev) => resolve({ room, epoch: ev.epoch as string, offset: ev.offset as number }),
          reject,
          timer: undefined,
          retry: undefined,
        });
        if (!sendWs(t, id)) {
          this.pending.delete(id);
          this.enqueue(run, reject);
        }
      };
      if (this.isOpen()) run();
      else this.enqueue(run, reject);
    });
  }

  /** Who is in `room` (WebSocket; the connection must be subscribed; namespace needs presence). */
  presence(room: string): Promise<Member[]> {
    return this.request('presence', room, { op: 'presence', room }, (ev) => ev.members ?? []);
  }

  /**
   * A room's stored messages (WebSocket). With `since`: those after it (`recovered` tells if
   * complete). Binary messages come with `data: null` and their bytes in `binary`.
   */
  history(room: string, options: { since?: Position; limit?: number } = {}): Promise<HistoryResult> {
    const op: Record<string, unknown> = { op: 'history', room };
    if (options.since) op.since = { epoch: options.since.epoch, offset: options.since.offset };
    if (options.limit !== undefined) op.limit = options.limit;
    return this.request('history', room, op, (ev) => ({
      room,
      epoch: ev.epoch as string,
      offset: ev.offset as number,
      recovered: ev.recovered === true,
      messages: (ev.messages ?? []).map((m): HistoryMessage => {
        if (typeof m.bin !== 'string') return { offset: m.offset, data: m.data as Json };
        const binary = fromBase64(m.bin);
        if (!binary) throw new RingcastError('bad_answer', `history item ${m.offset}: bin is not base64`, { room });
        return { offset: m.offset, data: null, binary };
      }),
    }));
  }

  /**
   * Sends an ephemeral event to the room's other current subscribers (WebSocket; the connection
   * must be subscribed). Resolves once sent; a later refusal is reported through `error` and the
   * room's subscriptions' `onError`. Not queued while disconnected (rejects `not_connected`).
   */
  event(room: string, data: Json): Promise<void> {
    if (!isValidRoom(room)) return Promise.reject(new RingcastError('bad_room', 'invalid room name', { room }));
    if (data === null || data === undefined) {
      return Promise.reject(new RingcastError('bad_request', 'data must not be null', { room }));
    }
    const t = this.current;
    if (!t || this._state !== 'open') return Promise.reject(new RingcastError('not_connected', 'not connected', { room }));
    if (t.name !== 'websocket') {
      return Promise.reject(new RingcastError('unsupported_transport', `event needs websocket, not ${t.name}`, { room }));
    }
    const id = this.nextId++;
    const timer = setTimeout(() => this.pending.delete(id), this.opts.requestTimeoutMs);
    this.pending.set(id, {
      kind: 'event',
      room,
      resolve: () => {},
      reject: (err) => {
        this.emitError(err);
        const rs = this.rooms.get(room);
        if (rs) for (const s of rs.subs) this.call(s.options.onError, err);
      },
      timer,
      retry: undefined,
    });
    if (!t.send({ op: 'event', id, room, data })) {
      clearTimeout(timer);
      this.pending.delete(id);
      return Promise.reject(new RingcastError('not_connected', 'not connected', { room }));
    }
    return Promise.resolve();
  }

  /** The last position processed in `room`, if any. */
  position(room: string): Position | undefined {
    const p = this.rooms.get(room)?.position;
    return p ? { epoch: p.epoch, offset: p.offset } : undefined;
  }

  /** @internal */
  _members(room: string): Member[] | undefined {
    const m = this.rooms.get(room)?.members;
    return m ? [...m.values()] : undefined;
  }

  /** @internal */
  async _unsubscribe(sub: Subscription): Promise<void> {
    if (!sub.active) return;
    sub._deactivate();
    sub._settle(undefined, new RingcastError('unsubscribed', 'unsubscribed before the server confirmed', { room: sub.room }));
    const rs = this.rooms.get(sub.room);
    if (!rs || !rs.subs.has(sub)) return;
    rs.subs.delete(sub);
    if (rs.subs.size > 0) return;
    this.rooms.delete(rs.room);
    clearTimeout(rs.retryTimer);
    const t = this.current;
    if (!t || this._state !== 'open') return;
    if (t.name !== 'websocket') {
      t.roomsChanged();
      return;
    }
    const id = this.nextId++;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve();
      }, this.opts.requestTimeoutMs);
      this.pending.set(id, {
        kind: 'unsubscribe',
        room: rs.room,
        resolve: () => resolve(),
        reject: () => resolve(),
        timer,
        retry: undefined,
      });
      if (!t.send({ op: 'unsubscribe', id, room: rs.room })) {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve();
      }
    });
  }

  // ---------------------------------------------------------------- connection management

  private setState(s: ConnectionState): void {
    if (this._state === s) return;
    const prev = this._state;
    this._state = s;
    this.emitter.emit('state', s, prev);
  }

  private isOpen(): boolean {
    return this._state === 'open' && this.current !== undefined;
  }

  private async getToken(force: boolean): Promise<string | undefined> {
    const tok = this.opts.token;
    if (tok === undefined) return undefined;
    if (typeof tok === 'string') return tok;
    if (!force && this.cachedToken) {
      const exp = jwtExpiryMs(this.cachedToken);
      if (exp === undefined || exp > Date.now() + 5000) return this.cachedToken;
    }
    const fresh = await tok();
    if (typeof fresh !== 'string' || fresh === '') throw new RingcastError('auth_failed', 'the token provider returned no token');
    this.cachedToken = fresh;
    return fresh;
  }

  private async startAttempt(): Promise<void> {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const seq = ++this.attemptSeq;
    let token: string | undefined;
    try {
      token = await this.getToken(this.forceToken);
    } catch (e) {
      if (seq !== this.attemptSeq || !this.wantConnected) return;
      this.emitError(e instanceof RingcastError ? e : new RingcastError('auth_failed', `token provider failed: ${String(e)}`));
      this.scheduleReconnect(this.nextBackoff());
      return;
    }
    if (seq !== this.attemptSeq || !this.wantConnected) return;
    if (this.rejectedToken !== undefined && token === this.rejectedToken) {
      this.shutdown(new RingcastError('auth_failed', 'the server refused the token and the provider gave the same one'));
      return;
    }
    this.forceToken = false;
    this.rejectedToken = undefined;
    this.currentToken = token;
    const name = this.opts.transports[this.idx];
    const cfg: TransportConfig = {
      endpoints: this.endpoints,
      token,
      WebSocket: this.opts.WebSocket,
      fetch: this.opts.fetch,
      heartbeatTimeoutMs: this.opts.heartbeatTimeoutMs,
      connectTimeoutMs: this.opts.connectTimeoutMs,
      pollTimeoutMs: this.opts.pollTimeoutMs,
    };
    // The host's callbacks are bound to this transport and ignored once it is replaced.
    let t: Transport | undefined = undefined;
    const host: TransportHost = {
      open: () => {
        if (t && t === this.current) this.onOpen(t);
      },
      event: (ev) => {
        if (t && t === this.current) this.handleEvent(ev);
      },
      lost: (info) => {
        if (t && t === this.current) this.onLost(t, info);
      },
      rooms: (kind) => (t && t === this.current ? this.roomSpecs(kind) : []),
    };
    t =
      name === 'websocket'
        ? new WebSocketTransport(cfg, host)
        : name === 'sse'
          ? new SseTransport(cfg, host)
          : new PollTransport(cfg, host);
    this.current = t;
    t.start();
  }

  private onOpen(t: Transport): void {
    this.established = this.idx;
    this.failsOnEstablished = 0;
    clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => {
      this.attempts = 0;
    }, this.opts.resetAfterMs);
    this.setState('open');
    this.emitter.emit('open', { transport: t.name, client: this._clientId });
    if (t.name === 'websocket') {
      for (const rs of this.rooms.values()) this.sendSubscribe(rs);
    }
    // SSE and long-poll subscribe every room with their requests.
    const items = this.queue;
    this.queue = [];
    for (const item of items) {
      clearTimeout(item.timer);
      item.run();
    }
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const w of waiters) w.resolve();
  }

  private onLost(t: Transport, info: LostInfo): void {
    if (t !== this.current) return;
    this.current = undefined;
    this.attemptSeq++;
    clearTimeout(this.stableTimer);
    this.failInFlight();
    for (const rs of this.rooms.values()) {
      rs.status = 'pending';
      rs.subscribeId = undefined;
      clearTimeout(rs.retryTimer);
      rs.retryTimer = undefined;
    }
    const disconnect: DisconnectInfo = {
      transport: t.name,
      code: info.code,
      reason: info.reason,
      status: info.status,
      wasOpen: info.wasOpen,
    };
    if (!this.wantConnected) {
      this.emitter.emit('disconnected', disconnect);
      return;
    }
    if (info.wasOpen || this._state === 'open') this.setState('reconnecting');

    let delay: number;
    if (info.authFailed || (info.code !== undefined && AUTH_CLOSE_CODES.has(info.code))) {
      if (typeof this.opts.token !== 'function') {
        this.emitter.emit('disconnected', disconnect);
        const what = info.code !== undefined ? `close ${info.code}` : `HTTP ${info.status}`;
        this.shutdown(new RingcastError('auth_failed', `${what}: ${info.reason ?? ''}`.trim()));
        return;
      }
      // A token provider may give a token that works; the same token again means: give up.
      this.forceToken = true;
      this.rejectedToken = info.code === 4002 ? undefined : this.currentToken;
      delay = info.code === 4002 ? 0 : this.nextBackoff();
    } else if (info.retryAfterMs !== undefined) {
      delay = info.retryAfterMs; // 1001 reconnect_after_ms, SSE retry:, reconnect()
    } else if (!info.wasOpen) {
      void this.afterConnectFailure(disconnect, info.unsupported === true);
      return;
    } else if (info.code === 4004) {
      delay = this.opts.maxMs; // a client bug: no tight loop
    } else {
      delay = this.nextBackoff();
    }
    this.emitter.emit('disconnected', { ...disconnect, retryInMs: delay });
    this.scheduleReconnect(delay);
  }

  /**
   * A transport could not connect. If the gateway answers plain HTTP, the transport itself is
   * blocked (a proxy without WebSocket support, say): try the next one at once (for a transport
   * that worked before, only after it failed several times in a row). If the gateway does not
   * answer at all, it is down or the network is: back off and retry the same transport, so a
   * restart does not push clients down to a worse transport.
   */
  private async afterConnectFailure(disconnect: DisconnectInfo, unsupported: boolean): Promise<void> {
    const seq = ++this.attemptSeq;
    const path = this.opts.transports.includes('poll') && !this.opts.transports.includes('sse') ? 'poll' : 'sse';
    const reachable = unsupported || (await probeHttp(this.opts.fetch, `${this.endpoints.http}/${path}`, this.opts.connectTimeoutMs));
    if (seq !== this.attemptSeq || !this.wantConnected || this.current) return;
    if (reachable) {
      const mayWalk =
        unsupported || this.established === undefined || ++this.failsOnEstablished >= FALLBACK_AFTER_FAILURES;
      if (mayWalk) {
        if (this.idx + 1 < this.opts.transports.length) {
          this.idx++;
          this.emitter.emit('disconnected', { ...disconnect, retryInMs: 0 });
          void this.startAttempt();
          return;
        }
        this.idx = 0; // every transport failed: start over after a backoff
      }
    }
    const delay = this.nextBackoff();
    this.emitter.emit('disconnected', { ...disconnect, retryInMs: delay });
    this.scheduleReconnect(delay);
  }

  private nextBackoff(): number {
    return backoffDelay(this.attempts++, { minMs: this.opts.minMs, maxMs: this.opts.maxMs });
  }

  private scheduleReconnect(delay: number): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.wantConnected && !this.current) void this.startAttempt();
    }, delay);
  }

  /** Reconnect now if waiting (browser came online / page visible); ping if open. */
  private wake(resetBackoff: boolean): void {
    if (!this.wantConnected) return;
    if (resetBackoff) this.attempts = 0;
    if (!this.current) {
      void this.startAttempt(); // supersedes a pending timer, probe or token fetch

    } else if (this.current && this._state === 'open') {
      this.current.send({ op: 'ping' });
    }
  }

  private shutdown(err: RingcastError): void {
    this.wantConnected = false;
    this.attemptSeq++;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    clearTimeout(this.stableTimer);
    const t = this.current;
    this.current = undefined;
    if (t) t.stop(true);
    this.failInFlight(err);
    for (const rs of this.rooms.values()) {
      rs.status = 'pending';
      rs.subscribeId = undefined;
      clearTimeout(rs.retryTimer);
    }
    const items = this.queue;
    this.queue = [];
    for (const item of items) {
      clearTimeout(item.timer);
      item.reject(err);
    }
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const w of waiters) w.reject(err);
    this.detachBrowser();
    this.setState('closed');
    if (err.code !== 'closed') this.emitError(err);
  }

  /** Settles what was sent on a connection that is gone. */
  private failInFlight(err?: RingcastError): void {
    const entries = [...this.pending.entries()];
    this.pending.clear();
    for (const [, p] of entries) {
      clearTimeout(p.timer);
      switch (p.kind) {
        case 'publish':
          p.reject(
            err ??
              new RingcastError('connection_lost', 'the connection dropped before the ack; the message may have been stored', {
                room: p.room,
              }),
          );
          break;
        case 'presence':
        case 'history':
          if (!err && p.retry) p.retry();
          else p.reject(err ?? new RingcastError('connection_lost', 'the connection dropped', { room: p.room }));
          break;
        case 'unsubscribe':
          p.resolve({ ev: 'unsubscribed' });
          break;
        default:
          break;
      }
    }
  }

  private enqueue(run: () => void, reject: (e: RingcastError) => void): void {
    if (this._state === 'closed') {
      reject(new RingcastError('closed', 'the client is closed'));
      return;
    }
    if (this.queue.length >= this.opts.queueMax) {
      reject(new RingcastError('queue_full', `the offline queue holds ${this.opts.queueMax} operations`));
      return;
    }
    const item: Queued = { run, reject, timer: undefined };
    item.timer = setTimeout(() => {
      const i = this.queue.indexOf(item);
      if (i >= 0) this.queue.splice(i, 1);
      reject(new RingcastError('timeout', `not sent within ${this.opts.queueTimeoutMs} ms`));
    }, this.opts.queueTimeoutMs);
    this.queue.push(item);
  }

  private request<T>(kind: PendingKind, room: string, op: Record<string, unknown>, map: (ev: ServerEvent) => T): Promise<T> {
    if (!isValidRoom(room)) return Promise.reject(new RingcastError('bad_room', 'invalid room name', { room }));
    if (this._state === 'closed') return Promise.reject(new RingcastError('closed', 'the client is closed', { room }));
    if (!this.opts.transports.includes('websocket')) {
      return Promise.reject(new RingcastError('unsupported_transport', `${kind} needs the websocket transport`, { room }));
    }
    return new Promise<T>((resolve, reject) => {
      const run = (): void => {
        const t = this.current;
        if (!t || this._state !== 'open') {
          this.enqueue(run, reject);
          return;
        }
        if (t.name !== 'websocket') {
          reject(new RingcastError('unsupported_transport', `${kind} needs websocket, not ${t.name}`, { room }));
          return;
        }
        const id = this.nextId++;
        const timer = setTimeout(() => {
          if (this.pending.delete(id)) reject(new RingcastError('timeout', `no answer to ${kind} within ${this.opts.requestTimeoutMs} ms`, { room }));
        }, this.opts.requestTimeoutMs);
        const answer = (ev: ServerEvent): void => {
          let value: T;
          try {
            value = map(ev);
          } catch (e) {
            reject(e instanceof RingcastError ? e : new RingcastError('bad_answer', String(e), { room }));
            return;
          }
          resolve(value);
        };
        this.pending.set(id, { kind, room, resolve: answer, reject, timer, retry: run });
        if (!t.send({ ...op, id })) {
          clearTimeout(timer);
          this.pending.delete(id);
          this.enqueue(run, reject);
        }
      };
      if (this.isOpen()) run();
      else this.enqueue(run, reject);
    });
  }

  private httpPublish(room: string, data: Json): Promise<PublishResult> {
    // One at a time, so publishes keep their order (§16.1) as on a WebSocket.
    const p = this.httpChain.then(() => this.postPublish(room, data, false));
    this.httpChain = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  private async postPublish(room: string, data: Json, retried: boolean): Promise<PublishResult> {
    const fetchFn = this.opts.fetch;
    if (!fetchFn) throw new RingcastError('unsupported_transport', 'fetch is not available', { room });
    let res: Response;
    let text: string;
    try {
      res = await fetchFn(`${this.endpoints.http}/publish`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...httpHeaders(this.currentToken) },
        body: JSON.stringify({ room, data, id: 1 }),
        cache: 'no-store',
      });
      text = await res.text();
    } catch (e) {
      throw new RingcastError('network_error', `POST /publish failed: ${describeFetchError(e)}`, { room });
    }
    let ev: ServerEvent | undefined;
    try {
      ev = JSON.parse(text) as ServerEvent;
    } catch {
      ev = undefined;
    }
    if (res.status === 200 && ev && ev.ev === 'published') {
      return { room, epoch: ev.epoch as string, offset: ev.offset as number };
    }
    if (res.status === 401 && !retried && typeof this.opts.token === 'function') {
      // Refused before storing: safe to retry once with a fresh token.
      try {
        this.currentToken = await this.getToken(true);
      } catch {
        // report the 401 below
      }
      return this.postPublish(room, data, true);
    }
    throw new RingcastError(ev?.code ?? 'internal', ev?.reason ?? (text.trim() || `HTTP ${res.status}`), {
      room,
      status: res.status,
    });
  }

  // ---------------------------------------------------------------- subscriptions

  private roomSpecs(kind: 'stream' | 'poll'): RoomSpec[] {
    const specs: RoomSpec[] = [];
    for (const rs of this.rooms.values()) {
      const since = rs.position ? { epoch: rs.position.epoch, offset: rs.position.offset } : undefined;
      rs.sentSince = since;
      if (kind === 'stream' || !since) {
        // The stream (or this poll) answers with `subscribed` first.
        rs.status = 'pending';
      } else if (rs.status !== 'subscribed') {
        // A poll with a recoverable `since` answers with the messages alone.
        rs.status = 'subscribed';
        const info: SubscribedInfo = { room: rs.room, epoch: since.epoch, offset: since.offset, recovered: true, resumed: true };
        rs.lastInfo = info;
        for (const s of rs.subs) s._settle(info);
      }
      specs.push({ room: rs.room, since });
    }
    return specs;
  }

  private sendSubscribe(rs: RoomState): void {
    const t = this.current;
    if (!t || t.name !== 'websocket' || this.rooms.get(rs.room) !== rs) return;
    clearTimeout(rs.retryTimer);
    rs.retryTimer = undefined;
    const id = this.nextId++;
    rs.subscribeId = id;
    rs.status = 'pending';
    rs.sentSince = rs.position ? { epoch: rs.position.epoch, offset: rs.position.offset } : undefined;
    const op: Record<string, unknown> = { op: 'subscribe', id, room: rs.room };
    if (rs.sentSince) op.since = rs.sentSince;
    this.pending.set(id, {
      kind: 'subscribe',
      room: rs.room,
      resolve: () => {},
      reject: () => {},
      timer: undefined,
      retry: undefined,
    });
    if (!t.send(op)) this.pending.delete(id);
  }

  private onSubscribed(ev: ServerEvent): void {
    if (ev.id !== undefined) this.takePending(ev.id);
    const room = ev.room;
    if (typeof room !== 'string' || typeof ev.epoch !== 'string' || typeof ev.offset !== 'number') return;
    const rs = this.rooms.get(room);
    if (!rs) return;
    // On a WebSocket, only the answer to the subscribe in flight counts.
    if (ev.id !== undefined && rs.subscribeId !== ev.id) return;
    const since = rs.sentSince;
    rs.sentSince = undefined;
    rs.status = 'subscribed';
    rs.retries = 0;
    const recovered = ev.recovered === true;
    if (since && !recovered) {
      rs.position = { epoch: ev.epoch, offset: ev.offset };
      const info: RecoveryFailedInfo = { room, previous: since, epoch: ev.epoch, offset: ev.offset };
      this.emitter.emit('recoveryFailed', info);
      for (const s of rs.subs) this.call(s.options.onRecoveryFailed, info);
    } else if (!since) {
      rs.position = { epoch: ev.epoch, offset: ev.offset };
    }
    // recovered: the replay that follows brings the position up to ev.offset.
    const info: SubscribedInfo = { room, epoch: ev.epoch, offset: ev.offset, recovered, resumed: since !== undefined };
    rs.lastInfo = info;
    this.emitter.emit('subscribed', info);
    for (const s of rs.subs) {
      s._settle(info);
      this.call(s.options.onSubscribed, info);
    }
    if (this.current?.name === 'websocket' && [...rs.subs].some((s) => s.options.presence)) this.fetchPresence(rs);
  }

  private fetchPresence(rs: RoomState): void {
    this.presence(rs.room).then(
      (members) => {
        if (this.rooms.get(rs.room) !== rs) return;
        rs.members = new Map(members.map((m) => [m.client, m]));
        const list = [...rs.members.values()];
        for (const s of rs.subs) this.call(s.options.onPresence, list);
      },
      (err: RingcastError) => {
        if (this.rooms.get(rs.room) !== rs || err.code === 'closed' || err.code === 'connection_lost') return;
        for (const s of rs.subs) this.call(s.options.onError, err);
        this.emitError(err);
      },
    );
  }

  private onMsg(ev: ServerEvent): void {
    const room = ev.room;
    if (typeof room !== 'string' || typeof ev.epoch !== 'string' || typeof ev.offset !== 'number') return;
    const rs = this.rooms.get(room);
    if (!rs || rs.status !== 'subscribed') return;
    // A binary message: a binary frame (WebSocket) or `bin` in base64 (SSE, long-poll). One that
    // does not decode is dropped like any malformed event; the next offset then shows the gap.
    let binary: Uint8Array | undefined;
    if (ev.binary instanceof Uint8Array) binary = ev.binary;
    else if (typeof ev.bin === 'string') {
      binary = fromBase64(ev.bin);
      if (!binary) return;
    }
    const pos = rs.position;
    if (pos && pos.epoch === ev.epoch) {
      if (ev.offset <= pos.offset) return; // a repeat (SSE resume overlap, §18.3)
      if (ev.offset > pos.offset + 1) {
        // An offset jump no `gap` announced: messages were lost on the way (§16.2).
        this.reportGap(rs, { room, epoch: ev.epoch, from: pos.offset + 1, to: ev.offset - 1, source: 'client' });
      }
    } else if (pos) {
      // A new epoch without a `subscribed` saying so: the old epoch's tail may be lost.
      const info: RecoveryFailedInfo = { room, previous: pos, epoch: ev.epoch, offset: ev.offset - 1 };
      this.emitter.emit('recoveryFailed', info);
      for (const s of rs.subs) this.call(s.options.onRecoveryFailed, info);
    }
    rs.position = { epoch: ev.epoch, offset: ev.offset };
    const ctx: MessageContext = { room, epoch: ev.epoch, offset: ev.offset };
    if (binary) ctx.binary = binary;
    const data = binary ? null : (ev.data as Json);
    for (const s of rs.subs) {
      if (!s.active) continue;
      try {
        s.handler(data, ctx);
      } catch (e) {
        reportListenerError(e);
      }
    }
  }

  private onGap(ev: ServerEvent): void {
    const room = ev.room;
    if (typeof room !== 'string' || typeof ev.epoch !== 'string' || typeof ev.from !== 'number' || typeof ev.to !== 'number') return;
    const rs = this.rooms.get(room);
    if (!rs || rs.status !== 'subscribed') return;
    if (!rs.position || rs.position.epoch !== ev.epoch || rs.position.offset < ev.to) {
      rs.position = { epoch: ev.epoch, offset: ev.to };
    }
    this.reportGap(rs, { room, epoch: ev.epoch, from: ev.from, to: ev.to, source: 'server' });
  }

  private reportGap(rs: RoomState, info: GapInfo): void {
    this.emitter.emit('gap', info);
    for (const s of rs.subs) this.call(s.options.onGap, info);
  }

  private onServerUnsubscribed(ev: ServerEvent): void {
    if (ev.id !== undefined) {
      const p = this.takePending(ev.id);
      p?.resolve(ev);
      return;
    }
    const room = ev.room;
    if (typeof room !== 'string') return;
    const rs = this.rooms.get(room);
    if (!rs) return;
    this.rooms.delete(room);
    clearTimeout(rs.retryTimer);
    const reason = ev.reason;
    for (const s of rs.subs) {
      s._deactivate();
      s._settle(undefined, new RingcastError(reason ?? 'unsubscribed', 'the server removed the subscription', { room }));
      this.call(s.options.onUnsubscribed, reason);
    }
    this.emitter.emit('unsubscribed', { room, reason });
  }

  private onSubscribeError(p: Pending, id: number, err: RingcastError): void {
    const rs = p.room !== undefined ? this.rooms.get(p.room) : undefined;
    if (!rs || rs.subscribeId !== id) return;
    if (err.code === 'already_subscribed') {
      rs.status = 'subscribed';
      return;
    }
    if (!PERMANENT_ERRORS.has(err.code)) {
      // unavailable, internal, rate_limited and unknown codes: retry with backoff (§11, §23).
      const delay = backoffDelay(rs.retries++, { minMs: this.opts.minMs, maxMs: this.opts.maxMs });
      rs.retryTimer = setTimeout(() => {
        rs.retryTimer = undefined;
        if (this.isOpen()) this.sendSubscribe(rs);
      }, delay);
      return;
    }
    this.rooms.delete(rs.room);
    for (const s of rs.subs) {
      s._deactivate();
      s._settle(undefined, err);
      this.call(s.options.onError, err);
    }
    this.emitError(err);
  }

  // ---------------------------------------------------------------- events

  private takePending(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    clearTimeout(p.timer);
    return p;
  }

  private handleEvent(ev: ServerEvent): void {
    switch (ev.ev) {
      case 'hello':
        if (typeof ev.client === 'string') this._clientId = ev.client;
        break;
      case 'subscribed':
        this.onSubscribed(ev);
        break;
      case 'msg':
        this.onMsg(ev);
        break;
      case 'gap':
        this.onGap(ev);
        break;
      case 'unsubscribed':
        this.onServerUnsubscribed(ev);
        break;
      case 'event': {
        const rs = typeof ev.room === 'string' ? this.rooms.get(ev.room) : undefined;
        if (rs) for (const s of rs.subs) this.call(s.options.onEvent, ev.data as Json, rs.room);
        break;
      }
      case 'join':
      case 'leave': {
        const rs = typeof ev.room === 'string' ? this.rooms.get(ev.room) : undefined;
        const m = ev.member;
        if (!rs || !m || typeof m.client !== 'string') break;
        if (rs.members) {
          if (ev.ev === 'join') rs.members.set(m.client, m);
          else rs.members.delete(m.client);
        }
        const list = rs.members ? [...rs.members.values()] : undefined;
        for (const s of rs.subs) {
          this.call(ev.ev === 'join' ? s.options.onJoin : s.options.onLeave, m);
          if (list) this.call(s.options.onPresence, list);
        }
        break;
      }
      case 'token_expiring':
        void this.refreshToken();
        break;
      case 'published':
      case 'presence':
      case 'history':
      case 'refreshed':
      case 'pong':
        if (ev.id !== undefined) this.takePending(ev.id)?.resolve(ev);
        break;
      case 'error': {
        const err = new RingcastError(typeof ev.code === 'string' ? ev.code : 'internal', ev.reason);
        const p = ev.id !== undefined ? this.takePending(ev.id) : undefined;
        if (!p) {
          this.emitError(err);
          break;
        }
        const withRoom = new RingcastError(err.code, err.reason, { room: p.room });
        if (p.kind === 'subscribe') this.onSubscribeError(p, ev.id as number, withRoom);
        else if (p.kind === 'refresh') this.emitError(withRoom);
        else p.reject(withRoom);
        break;
      }
      default:
        break; // unknown events are ignored (§23)
    }
  }

  private async refreshToken(): Promise<void> {
    if (typeof this.opts.token !== 'function' || this.refreshing) return;
    this.refreshing = true;
    let token: string | undefined;
    try {
      token = await this.getToken(true);
    } catch (e) {
      this.emitError(new RingcastError('auth_failed', `token provider failed: ${String(e)}`));
      return;
    } finally {
      this.refreshing = false;
    }
    const t = this.current;
    if (!token || !t || this._state !== 'open') return;
    this.currentToken = token;
    if (t.name !== 'websocket') return; // SSE/poll send the new token with their next request
    const id = this.nextId++;
    this.pending.set(id, {
      kind: 'refresh',
      room: undefined,
      resolve: (ev) => this.emitter.emit('tokenRefreshed', { expiresAt: ev.expires_at }),
      reject: (err) => this.emitError(err),
      timer: undefined,
      retry: undefined,
    });
    if (!t.send({ op: 'refresh', id, token })) this.pending.delete(id);
  }

  private emitError(err: RingcastError): void {
    this.emitter.emit('error', err);
  }

  private call<A extends unknown[]>(fn: ((...args: A) => void) | undefined, ...args: A): void {
    if (!fn) return;
    try {
      fn(...args);
    } catch (e) {
      reportListenerError(e);
    }
  }

  // ---------------------------------------------------------------- browser awareness

  private readonly onOnline = (): void => this.wake(true);
  private readonly onOffline = (): void => {
    // The link is probably gone: a ping gets the heartbeat going on a dead socket.
    if (this.current && this._state === 'open') this.current.send({ op: 'ping' });
  };
  private readonly onVisibility = (): void => {
    const d = (globalThis as { document?: { visibilityState?: string } }).document;
    if (d && d.visibilityState === 'visible') this.wake(false);
  };

  private attachBrowser(): void {
    if (!this.opts.browserEvents || this.browserAttached) return;
    const g = globalThis as {
      window?: { addEventListener?: (n: string, f: () => void) => void };
      document?: { addEventListener?: (n: string, f: () => void) => void };
    };
    if (g.window && typeof g.window.addEventListener === 'function') {
      g.window.addEventListener('online', this.onOnline);
      g.window.addEventListener('offline', this.onOffline);
    }
    if (g.document && typeof g.document.addEventListener === 'function') {
      g.document.addEventListener('visibilitychange', this.onVisibility);
    }
    this.browserAttached = true;
  }

  private detachBrowser(): void {
    if (!this.browserAttached) return;
    const g = globalThis as {
      window?: { removeEventListener?: (n: string, f: () => void) => void };
      document?: { removeEventListener?: (n: string, f: () => void) => void };
    };
    if (g.window && typeof g.window.removeEventListener === 'function') {
      g.window.removeEventListener('online', this.onOnline);
      g.window.removeEventListener('offline', this.onOffline);
    }
    if (g.document && typeof g.document.removeEventListener === 'function') {
      g.document.removeEventListener('visibilitychange', this.onVisibility);
    }
    this.browserAttached = false;
  }
}
