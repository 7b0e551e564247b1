/**
 * An error of the SDK. `code` is a protocol error code (docs/protocol.md §11: `bad_request`,
 * `forbidden`, `too_large`, `rate_limited`, `unavailable`, …) when the server refused an op, or one
 * of the client-side codes:
 *
 * - `closed`: the client was closed (or closed itself after an auth failure that cannot succeed);
 * - `timeout`: a queued operation was not sent in time, or an answer did not come in time;
 * - `queue_full`: the offline queue is full;
 * - `connection_lost`: the connection dropped after the op was sent and before its answer (a
 *   publish may or may not have been stored, §16.4);
 * - `not_connected`: an ephemeral `event` while disconnected (events are not queued);
 * - `unsupported_transport`: the op needs the WebSocket transport (presence, history, event);
 * - `network_error`: an HTTP request (HTTP publish) failed below HTTP;
 * - `auth_failed`: the server refused the credentials and no new token could be obtained;
 * - `bad_answer`: an answer of the server did not decode (a `history` item whose `bin` is not
 *   base64).
 */
export class RingcastError extends Error {
  readonly code: string;
  readonly reason: string | undefined;
  readonly room: string | undefined;
  readonly status: number | undefined;

  constructor(code: string, reason?: string, extra?: { room?: string; status?: number }) {
    super(reason ? `${code}: ${reason}` : code);
    this.name = 'RingcastError';
    this.code = code;
    this.reason = reason;
    this.room = extra?.room;
    this.status = extra?.status;
  }
}
