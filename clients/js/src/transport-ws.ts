import { decodeBinaryMsg, messageBytes } from './binary.js';
import type { ServerEvent, WebSocketLike } from './types.js';
import type { LostInfo, Transport, TransportConfig, TransportHost } from './transport.js';

const PROTOCOL = 'ringcast.v1';
const OPEN = 1;

/** The WebSocket transport: `GET /ws` with subprotocol `ringcast.v1` (protocol §5). */
export class WebSocketTransport implements Transport {
  readonly name = 'websocket' as const;
  private sock: WebSocketLike | undefined;
  private done = false;
  private opened = false;
  private lastRx = 0;
  private pingSent = false;
  private timeoutMs = 0;
  private handshakeStatus: number | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private hbTimer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly cfg: TransportConfig,
    private readonly host: TransportHost,
  ) {}

  start(): void {
    const Ctor = this.cfg.WebSocket;
    if (!Ctor) {
      this.finish({ wasOpen: false, unsupported: true, reason: 'no WebSocket constructor' });
      return;
    }
    const protocols = [PROTOCOL];
    // Browsers cannot set headers on a WebSocket: the token rides in a subprotocol entry (§4.1).
    if (this.cfg.token) protocols.push(`ringcast.token.${this.cfg.token}`);
    let sock: WebSocketLike;
    try {
      sock = new Ctor(this.cfg.endpoints.ws, protocols);
    } catch (error) {
      this.finish({ wasOpen: false, error, reason: String(error) });
      return;
    }
    this.sock = sock;
    try {
      // Binary room messages (§10.4) as ArrayBuffer, not Blob (browsers) or Buffer (`ws`).
      sock.binaryType = 'arraybuffer';
    } catch {
      // a WebSocket without binaryType: messageBytes() takes what it gives
    }
    this.connectTimer = setTimeout(
      () => this.kill({ wasOpen: false, reason: 'connect timeout' }),
      this.cfg.connectTimeoutMs,
    );
    sock.onopen = () => {
      if (this.done) return;
      this.lastRx = Date.now();
      // A conforming server names ringcast.v1; a browser already fails otherwise (§5.2).
      if (sock.protocol && sock.protocol !== PROTOCOL) {
        this.kill({ wasOpen: false, reason: `server chose subprotocol ${sock.protocol}` });
      }
    };
    sock.onmessage = (e: { data: unknown }) => {
      if (this.done) return;
      this.activity();
      if (typeof e.data !== 'string') {
        // A binary room message (§10.4); nothing binary precedes hello.
        if (!this.opened) return;
        const bytes = messageBytes(e.data);
        const m = bytes && decodeBinaryMsg(bytes);
        if (m) this.host.event({ ev: 'msg', room: m.room, epoch: m.epoch, offset: m.offset, binary: m.data });
        return;
      }
      let ev: ServerEvent;
      try {
        ev = JSON.parse(e.data) as ServerEvent;
      } catch {
        return;
      }
      if (!ev || typeof ev !== 'object' || typeof ev.ev !== 'string') return;
      if (ev.ev === 'hello' && !this.opened) {
        this.opened = true;
        clearTimeout(this.connectTimer);
        const hb = typeof ev.heartbeat_ms === 'number' && ev.heartbeat_ms > 0 ? ev.heartbeat_ms : 25000;
        this.startHeartbeat(this.cfg.heartbeatTimeoutMs ?? 2 * hb);
        this.host.event(ev);
        if (!this.done) this.host.open();
        return;
      }
      if (!this.opened) return; // nothing precedes hello (§5.1)
      this.host.event(ev);
    };
    sock.onclose = (e: { code: number; reason: string }) => {
      if (this.done) return;
      const info: LostInfo = { wasOpen: this.opened, code: e.code, reason: e.reason };
      if (this.handshakeStatus !== undefined) {
        info.status = this.handshakeStatus;
        info.authFailed = this.handshakeStatus === 401;
        info.reason = `handshake refused with HTTP ${this.handshakeStatus}`;
      }
      if (e.code === 1001 && e.reason) {
        try {
          const hint = JSON.parse(e.reason) as { reconnect_after_ms?: unknown };
          if (typeof hint.reconnect_after_ms === 'number' && hint.reconnect_after_ms >= 0) {
            info.retryAfterMs = hint.reconnect_after_ms;
          }
        } catch {
          // a 1001 without a parseable reason: normal backoff (§22)
        }
      }
      this.finish(info);
    };
    sock.onerror = (e: unknown) => {
      // A close event follows. Browsers hide why a handshake failed; Node's `ws` names the status.
      const err = e as { message?: unknown; error?: { message?: unknown } } | undefined;
      const msg = String(err?.message ?? err?.error?.message ?? '');
      const m = /Unexpected server response: (\d{3})/.exec(msg);
      if (m) this.handshakeStatus = Number(m[1]);
    };
    // Node's `ws` exposes ping frames: count them as traffic (§7.2).
    const emitter = sock as unknown as { on?: (name: string, fn: () => void) => void };
    if (typeof emitter.on === 'function') {
      try {
        emitter.on('ping', () => this.activity());
      } catch {
        // not an EventEmitter after all
      }
    }
  }

  send(op: object): boolean {
    const sock = this.sock;
    if (this.done || !this.opened || !sock || sock.readyState !== OPEN) return false;
    try {
      sock.send(JSON.stringify(op));
      return true;
    } catch {
      return false;
    }
  }

  sendBinary(data: Uint8Array): boolean {
    const sock = this.sock;
    if (this.done || !this.opened || !sock || sock.readyState !== OPEN) return false;
    try {
      sock.send(data);
      return true;
    } catch {
      return false;
    }
  }

  roomsChanged(): void {
    // The client sends subscribe/unsubscribe ops itself.
  }

  stop(graceful: boolean): void {
    if (this.done) return;
    this.done = true;
    this.cleanup(graceful ? 1000 : 4000, graceful ? 'client closed' : 'client reconnecting');
  }

  private activity(): void {
    this.lastRx = Date.now();
    this.pingSent = false;
  }

  private startHeartbeat(timeoutMs: number): void {
    this.timeoutMs = Math.max(100, timeoutMs);
    this.lastRx = Date.now();
    const every = Math.max(25, Math.min(1000, Math.floor(this.timeoutMs / 4)));
    this.hbTimer = setInterval(() => this.checkHeartbeat(), every);
  }

  private checkHeartbeat(): void {
    if (this.done) return;
    const silent = Date.now() - this.lastRx;
    if (silent >= this.timeoutMs) {
      this.kill({ wasOpen: true, code: 4005, reason: 'heartbeat timeout (client side)' });
    } else if (silent >= this.timeoutMs / 2 && !this.pingSent) {
      // Nothing heard for a while: ask (§7.2). Any answer counts as traffic.
      this.pingSent = true;
      this.send({ op: 'ping' });
    }
  }

  /** Abandons the socket at once (it may be dead: no waiting for a closing handshake). */
  private kill(info: LostInfo): void {
    if (this.done) return;
    this.finish(info);
  }

  private finish(info: LostInfo): void {
    if (this.done) return;
    this.done = true;
    this.cleanup(4000, 'client reconnecting');
    this.host.lost(info);
  }

  private cleanup(code: number, reason: string): void {
    clearTimeout(this.connectTimer);
    clearInterval(this.hbTimer);
    const sock = this.sock;
    if (!sock) return;
    const noop = () => {};
    sock.onopen = noop;
    sock.onmessage = noop;
    sock.onclose = noop;
    sock.onerror = noop;
    try {
      if (code === 1000) {
        sock.close(1000, reason);
      } else {
        const t = sock as unknown as { terminate?: () => void };
        if (typeof t.terminate === 'function') t.terminate();
        else sock.close(code, reason);
      }
    } catch {
      // already closed, or closed before it was established
    }
  }
}
