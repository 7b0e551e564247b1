import type { Position } from './types.js';

/** Valid room names (protocol §3). */
export const ROOM_RE = /^[A-Za-z0-9._\-:@/=+]{1,200}$/;

export function isValidRoom(room: unknown): room is string {
  return typeof room === 'string' && ROOM_RE.test(room);
}

export interface Endpoints {
  ws: string;
  http: string;
}

/** Derives the WebSocket URL and the HTTP base from the `url` option. */
export function endpoints(url: string): Endpoints {
  let base: string | undefined;
  const loc = (globalThis as { location?: { href?: string } }).location;
  if (loc && typeof loc.href === 'string') base = loc.href;
  const u = base ? new URL(url, base) : new URL(url);
  let path = u.pathname.replace(/\/+$/, '');
  if (path.endsWith('/ws')) path = path.slice(0, -3);
  const secure = u.protocol === 'wss:' || u.protocol === 'https:';
  if (!['ws:', 'wss:', 'http:', 'https:'].includes(u.protocol)) {
    throw new TypeError(`unsupported URL scheme ${u.protocol} (use ws, wss, http or https)`);
  }
  return {
    ws: `${secure ? 'wss' : 'ws'}://${u.host}${path}/ws`,
    http: `${secure ? 'https' : 'http'}://${u.host}${path}`,
  };
}

/** `<room>|<epoch>:<offset>`, the SSE id / `since` format (protocol §18.1). */
export function positionId(room: string, p: Position): string {
  return `${room}|${p.epoch}:${p.offset}`;
}

/** Query string `room=…&room=…&since=…` for /sse and /poll. */
export function roomsQuery(rooms: { room: string; since?: Position }[]): string {
  const parts: string[] = [];
  for (const r of rooms) parts.push(`room=${encodeURIComponent(r.room)}`);
  for (const r of rooms) {
    if (r.since) parts.push(`since=${encodeURIComponent(positionId(r.room, r.since))}`);
  }
  return parts.join('&');
}

function base64UrlDecode(s: string): string | undefined {
  try {
    let b = s.replace(/-/g, '+').replace(/_/g, '/');
    while (b.length % 4) b += '=';
    const atobFn = (globalThis as { atob?: (s: string) => string }).atob;
    if (!atobFn) return undefined;
    return atobFn(b);
  } catch {
    return undefined;
  }
}

/** The `exp` claim of a JWT in ms since the epoch, if it has one (the signature is not checked). */
export function jwtExpiryMs(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length < 2) return undefined;
  const json = base64UrlDecode(parts[1]);
  if (!json) return undefined;
  try {
    const claims = JSON.parse(json) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** A tiny typed event emitter; listener exceptions are reported, never thrown into the SDK. */
export class Emitter<M extends { [K in keyof M]: unknown[] }> {
  private listeners: { [K in keyof M]?: Set<(...args: M[K]) => void> } = {};

  on<K extends keyof M>(name: K, fn: (...args: M[K]) => void): () => void {
    let set = this.listeners[name];
    if (!set) {
      set = new Set();
      this.listeners[name] = set;
    }
    set.add(fn);
    return () => {
      this.listeners[name]?.delete(fn);
    };
  }

  emit<K extends keyof M>(name: K, ...args: M[K]): void {
    const set = this.listeners[name];
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        reportListenerError(e);
      }
    }
  }

  clear(): void {
    this.listeners = {};
  }
}

/** Reports an exception thrown by an application callback without breaking the SDK's state. */
export function reportListenerError(e: unknown): void {
  const c = (globalThis as { console?: { error?: (...a: unknown[]) => void } }).console;
  c?.error?.('ringcast: an application callback threw', e);
}

/**
 * Is the gateway reachable over plain HTTP? A `no-cors` GET of `url` (answered 400 without
 * rooms) proves it without CORS: browsers give an opaque response, Node a real status. A 5xx
 * (a proxy without backend, a draining node) counts as unreachable.
 */
export async function probeHttp(fetchFn: typeof fetch | undefined, url: string, timeoutMs: number): Promise<boolean> {
  if (!fetchFn || typeof AbortController === 'undefined') return true;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const res = await fetchFn(url, {
      method: 'GET',
      mode: 'no-cors',
      cache: 'no-store',
      headers: { Connection: 'close' },
      signal: ctl.signal,
    });
    try {
      await res.body?.cancel();
    } catch {
      // ignore
    }
    return res.type === 'opaque' || res.status < 500;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
