import { SseParser } from './sse-parser.js';
import type { ServerEvent } from './types.js';
import { describeFetchError, httpHeaders, type LostInfo, type Transport, type TransportConfig, type TransportHost } from './transport.js';
import { probeHttp, roomsQuery } from './util.js';

/**
 * The SSE transport: `GET /sse?room=…&since=…` read with `fetch` (so the token goes in a header and
 * the client chooses every `since` itself, protocol §18). Publishing goes through `POST /publish`
 * (done by the client). The stream is reopened with fresh `since` positions whenever the set of
 * rooms changes.
 */
export class SseTransport implements Transport {
  readonly name = 'sse' as const;
  private done = false;
  private opened = false;
  private gen = 0;
  private ctl: AbortController | undefined;
  private watchdog: ReturnType<typeof setInterval> | undefined;
  private lastRx = 0;
  private retryMs: number | undefined;
  private heartbeatMs = 25000;
  private streaming = false;

  constructor(
    private readonly cfg: TransportConfig,
    private readonly host: TransportHost,
  ) {}

  start(): void {
    if (!this.cfg.fetch || typeof TextDecoder === 'undefined' || typeof AbortController === 'undefined') {
      this.finish({ wasOpen: false, unsupported: true, reason: 'fetch streaming is not available' });
      return;
    }
    this.watchdog = setInterval(() => this.check(), 250);
    this.openStream();
  }

  send(): boolean {
    return false;
  }

  sendBinary(): boolean {
    return false;
  }

  roomsChanged(): void {
    if (this.done) return;
    this.openStream();
  }

  stop(): void {
    if (this.done) return;
    this.done = true;
    this.cleanup();
  }

  private timeoutMs(): number {
    // The server sends `: hb` only every heartbeat_ms: never time out sooner than twice that.
    return Math.max(this.cfg.heartbeatTimeoutMs ?? 0, 2 * this.heartbeatMs);
  }

  private check(): void {
    if (this.done || !this.ctl) return;
    const silent = Date.now() - this.lastRx;
    const limit = this.streaming ? this.timeoutMs() : this.cfg.connectTimeoutMs;
    if (silent >= limit) {
      this.finish({ wasOpen: this.opened, reason: this.streaming ? 'heartbeat timeout' : 'connect timeout' });
    }
  }

  private openStream(): void {
    const gen = ++this.gen;
    this.ctl?.abort();
    this.ctl = undefined;
    this.streaming = false;
    const rooms = this.host.rooms('stream');
    if (this.done) return;
    if (rooms.length === 0) {
      // Nothing to stream: the transport is usable for HTTP publish alone, once the gateway
      // answers over HTTP.
      if (!this.opened) {
        void probeHttp(this.cfg.fetch, `${this.cfg.endpoints.http}/sse`, this.cfg.connectTimeoutMs).then((ok) => {
          if (this.done || gen !== this.gen || this.opened) return;
          if (!ok) {
            this.finish({ wasOpen: false, reason: 'gateway unreachable over HTTP' });
            return;
          }
          this.opened = true;
          this.host.open();
        });
      }
      return;
    }
    const ctl = new AbortController();
    this.ctl = ctl;
    this.lastRx = Date.now();
    const url = `${this.cfg.endpoints.http}/sse?${roomsQuery(rooms)}`;
    const fetchFn = this.cfg.fetch as typeof fetch;
    const stale = () => this.done || gen !== this.gen;
    fetchFn(url, {
      method: 'GET',
      headers: { Accept: 'text/event-stream', ...httpHeaders(this.cfg.token) },
      cache: 'no-store',
      signal: ctl.signal,
    })
      .then(async (res) => {
        if (stale()) return;
        if (res.status !== 200 || !res.body) {
          let body = '';
          try {
            body = (await res.text()).trim();
          } catch {
            // ignore
          }
          if (stale()) return;
          this.finish({
            wasOpen: this.opened,
            status: res.status,
            reason: body || `HTTP ${res.status}`,
            authFailed: res.status === 401,
          });
          return;
        }
        this.streaming = true;
        this.lastRx = Date.now();
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        const parser = new SseParser({
          message: (m) => {
            if (stale()) return;
            let ev: ServerEvent;
            try {
              ev = JSON.parse(m.data) as ServerEvent;
            } catch {
              return;
            }
            if (!ev || typeof ev.ev !== 'string') return;
            if (ev.ev === 'hello') {
              if (typeof ev.heartbeat_ms === 'number' && ev.heartbeat_ms > 0) this.heartbeatMs = ev.heartbeat_ms;
              this.host.event(ev);
              if (!this.opened && !stale()) {
                this.opened = true;
                this.host.open();
              }
              return;
            }
            this.host.event(ev);
          },
          comment: () => {},
          retry: (ms) => {
            this.retryMs = ms;
          },
        });
        for (;;) {
          const { done, value } = await reader.read();
          if (stale()) {
            reader.cancel().catch(() => {});
            return;
          }
          this.lastRx = Date.now();
          if (done) break;
          parser.push(decoder.decode(value, { stream: true }));
        }
        if (stale()) return;
        this.finish({ wasOpen: this.opened, reason: 'stream ended', retryAfterMs: this.retryMs });
      })
      .catch((error: unknown) => {
        if (stale()) return;
        this.finish({ wasOpen: this.opened, error, reason: describeFetchError(error) });
      });
  }

  private finish(info: LostInfo): void {
    if (this.done) return;
    this.done = true;
    this.cleanup();
    this.host.lost(info);
  }

  private cleanup(): void {
    this.gen++;
    clearInterval(this.watchdog);
    this.ctl?.abort();
    this.ctl = undefined;
  }
}
