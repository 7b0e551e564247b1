import type { ServerEvent } from './types.js';
import { describeFetchError, httpHeaders, type LostInfo, type Transport, type TransportConfig, type TransportHost } from './transport.js';
import { probeHttp, roomsQuery } from './util.js';

/**
 * The long-poll transport: `GET /poll?room=…&since=…` in a loop (protocol §20). Each request is a
 * self-contained subscribe-with-recovery from the positions the client tracks, so nothing is lost
 * between requests as long as history holds it. Publishing goes through `POST /publish`.
 */
export class PollTransport implements Transport {
  readonly name = 'poll' as const;
  private done = false;
  private opened = false;
  private gen = 0;
  private ctl: AbortController | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly cfg: TransportConfig,
    private readonly host: TransportHost,
  ) {}

  start(): void {
    if (!this.cfg.fetch || typeof AbortController === 'undefined') {
      this.finish({ wasOpen: false, unsupported: true, reason: 'fetch is not available' });
      return;
    }
    this.poll();
  }

  send(): boolean {
    return false;
  }

  sendBinary(): boolean {
    return false;
  }

  roomsChanged(): void {
    if (this.done) return;
    this.poll();
  }

  stop(): void {
    if (this.done) return;
    this.done = true;
    this.cleanup();
  }

  private markOpen(): void {
    if (this.opened || this.done) return;
    this.opened = true;
    this.host.open();
  }

  private probe(gen: number, failIfUnreachable: boolean): void {
    void probeHttp(this.cfg.fetch, `${this.cfg.endpoints.http}/poll`, this.cfg.connectTimeoutMs).then((ok) => {
      if (this.done || this.opened) return;
      if (ok) this.markOpen();
      else if (failIfUnreachable && gen === this.gen) this.finish({ wasOpen: false, reason: 'gateway unreachable over HTTP' });
    });
  }

  private poll(): void {
    const gen = ++this.gen;
    this.ctl?.abort();
    this.ctl = undefined;
    clearTimeout(this.timer);
    const rooms = this.host.rooms('poll');
    if (this.done || gen !== this.gen) return;
    if (rooms.length === 0) {
      // Nothing to poll; HTTP publish works once the gateway answers over HTTP.
      if (!this.opened) this.probe(gen, true);
      return;
    }
    const ctl = new AbortController();
    this.ctl = ctl;
    const stale = () => this.done || gen !== this.gen;
    // A request with nothing to answer is held by the server (25 s): a probe shows meanwhile that
    // the gateway answers, so the transport counts as open before the first answer.
    if (!this.opened) this.probe(gen, false);
    this.timer = setTimeout(() => {
      if (stale()) return;
      this.finish({ wasOpen: this.opened, reason: 'poll timeout' });
    }, this.cfg.pollTimeoutMs);
    const url = `${this.cfg.endpoints.http}/poll?${roomsQuery(rooms)}`;
    (this.cfg.fetch as typeof fetch)(url, {
      method: 'GET',
      headers: { Accept: 'application/json', ...httpHeaders(this.cfg.token) },
      cache: 'no-store',
      signal: ctl.signal,
    })
      .then(async (res) => {
        const text = await res.text();
        if (stale()) return;
        clearTimeout(this.timer);
        if (res.status !== 200) {
          let reason = text.trim() || `HTTP ${res.status}`;
          try {
            const err = JSON.parse(text) as ServerEvent;
            if (err && err.code) reason = `${err.code}: ${err.reason ?? ''}`;
          } catch {
            // plain text
          }
          this.finish({ wasOpen: this.opened, status: res.status, reason, authFailed: res.status === 401 });
          return;
        }
        let events: ServerEvent[];
        try {
          events = JSON.parse(text) as ServerEvent[];
        } catch (error) {
          this.finish({ wasOpen: this.opened, error, reason: 'poll answer is not JSON' });
          return;
        }
        this.markOpen();
        if (Array.isArray(events)) {
          for (const ev of events) {
            if (stale()) break;
            if (ev && typeof ev.ev === 'string') this.host.event(ev);
          }
        }
        // A room-set change during delivery already started the next request.
        if (!stale()) this.poll();
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
    clearTimeout(this.timer);
    this.ctl?.abort();
    this.ctl = undefined;
  }
}
