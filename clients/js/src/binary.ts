/**
 * Binary room messages (protocol §9.9, §10.4): the envelope of a binary publish, the envelope of
 * a binary `msg` frame, and the standard base64 of the `bin` field that carries a binary payload
 * where only JSON can go (SSE, long-poll, `history`).
 */

/** The kind byte of a client publish and of a server `msg`. */
const KIND = 0x01;
/** Flag bit 0 of a publish: an `id` follows. */
const FLAG_ID = 0x01;
const TWO_32 = 0x1_0000_0000;

/** A decoded binary `msg` frame. */
export interface BinaryMsg {
  room: string;
  epoch: string;
  offset: number;
  /** The payload: a view into the received buffer. */
  data: Uint8Array;
}

/**
 * The binary publish of `data` to `room` with request id `id` (kind, flags, u64 id, room length,
 * room, payload). `room` must be a valid room name (ASCII, at most 200 bytes).
 */
export function encodeBinaryPublish(id: number, room: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(11 + room.length + data.length);
  out[0] = KIND;
  out[1] = FLAG_ID;
  const view = new DataView(out.buffer);
  view.setUint32(2, Math.floor(id / TWO_32));
  view.setUint32(6, id >>> 0);
  out[10] = room.length;
  for (let i = 0; i < room.length; i++) out[11 + i] = room.charCodeAt(i);
  out.set(data, 11 + room.length);
  return out;
}

let utf8: TextDecoder | undefined;

function text(bytes: Uint8Array): string | undefined {
  try {
    utf8 ??= new TextDecoder('utf-8', { fatal: true });
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Decodes a binary server message; `undefined` when it is not a well-formed binary `msg`. */
export function decodeBinaryMsg(bytes: Uint8Array): BinaryMsg | undefined {
  let at = 0;
  const take = (n: number): Uint8Array | undefined => {
    if (bytes.length - at < n) return undefined;
    const part = bytes.subarray(at, at + n);
    at += n;
    return part;
  };
  const kind = take(1);
  if (!kind || kind[0] !== KIND) return undefined;
  const roomLen = take(1);
  const roomBytes = roomLen && take(roomLen[0]);
  const epochLen = roomBytes && take(1);
  const epochBytes = epochLen && take(epochLen[0]);
  const offsetBytes = epochBytes && take(8);
  if (!roomBytes || !epochBytes || !offsetBytes) return undefined;
  const room = text(roomBytes);
  const epoch = text(epochBytes);
  if (room === undefined || epoch === undefined) return undefined;
  const view = new DataView(offsetBytes.buffer, offsetBytes.byteOffset, 8);
  // Exact up to 2^53 - 1, like every offset in JavaScript (protocol §8.4).
  const offset = view.getUint32(0) * TWO_32 + view.getUint32(4);
  return { room, epoch, offset, data: bytes.subarray(at) };
}

/** The bytes of a WebSocket binary message as `ws` or a browser hands them over. */
export function messageBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // `ws` with binaryType 'fragments'.
  if (Array.isArray(data) && data.every((d) => ArrayBuffer.isView(d))) {
    const parts = data as ArrayBufferView[];
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), at);
      at += p.byteLength;
    }
    return out;
  }
  return undefined; // a Blob: binaryType could not be set to 'arraybuffer'
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

/** Decodes standard base64 with padding (the `bin` field); `undefined` when it is not valid. */
export function fromBase64(s: string): Uint8Array | undefined {
  if (s.length % 4 !== 0) return undefined;
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < s.length; i += 4) {
    let n = 0;
    for (let j = 0; j < 4; j++) {
      const c = s.charCodeAt(i + j);
      const last = i + 4 === s.length;
      let v: number;
      if (c === 61 /* = */ && last && j >= 4 - pad) v = 0;
      else {
        v = c < 128 ? DECODE[c] : -1;
        if (v < 0) return undefined;
      }
      n = (n << 6) | v;
    }
    out[o++] = n >>> 16;
    if (o < out.length) out[o++] = (n >>> 8) & 0xff;
    if (o < out.length) out[o++] = n & 0xff;
  }
  return out;
}
