//! The checks behind proto-codec's fuzz targets, one function per target, written once.
//!
//! Each `fuzz_targets/<name>.rs` hands libFuzzer's input to the function of the same name here;
//! `proto-codec/tests/fuzz_seeds.rs` includes this file (`#[path]`) and replays every committed
//! input (`seeds/<name>/`, `regressions/<name>/`) through the same function on stable, so the
//! corpus kept in the repository is a regression test of the normal suite. A check returns
//! normally or panics; a panic is a finding.

use proto_codec::handshake::{validate_upgrade, write_upgrade_response};
use proto_codec::http::parse_request;
use proto_codec::protocol::{decode_op, ServerEvent};
use proto_codec::sse::{last_event_id, parse_position_id, SseEvent};
use proto_codec::ws::deflate::{compress_message, negotiate, DeflatePolicy, MessageInflater};
use proto_codec::ws::frame::MAX_CONTROL_PAYLOAD;
use proto_codec::ws::{
    parse_header, DataKind, Decoder, DecoderConfig, FrameLimits, HeaderParse, Message,
};

/// A target's check: returns, or panics on a finding.
pub type Check = fn(&[u8]);

/// Every target: its name (the fuzz binary and the seed directory) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_header", frame_header),
    ("decoder", decoder),
    ("inflate", inflate),
    ("handshake", handshake),
    ("protocol_op", protocol_op),
    ("server_event", server_event),
];

/// Frame headers: any bytes give a header, "incomplete" or a protocol error, and a complete
/// header is consistent with the bytes and the limits.
pub fn frame_header(data: &[u8]) {
    for limits in [
        FrameLimits::server(1 << 20),
        FrameLimits::client(u64::MAX >> 1),
    ] {
        if let Ok(HeaderParse::Complete { header, header_len }) = parse_header(data, &limits) {
            assert!(header_len <= data.len() && (2..=14).contains(&header_len));
            assert!(header.payload_len <= limits.max_frame_bytes);
            if header.opcode.is_control() {
                assert!(header.fin && header.payload_len <= MAX_CONTROL_PAYLOAD as u64);
            }
        }
    }
}

/// Message assembly: any bytes, fed in chunk sizes chosen by the first byte, with and without
/// permessage-deflate. The decoder never panics, never keeps more than a partial header or
/// control frame buffered, never returns a message over the limit, and returns only valid UTF-8
/// as text.
pub fn decoder(data: &[u8]) {
    const LIMIT: usize = 8192;
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(knobs & 0x3f) + 1;
    let mut config = DecoderConfig::server(LIMIT);
    if knobs & 0x40 != 0 {
        config = config.with_deflate(knobs & 0x80 != 0);
    }
    let mut decoder = Decoder::new(config);
    let mut buf = Vec::new();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            let Ok(decoded) = decoder.decode(&mut buf) else {
                return;
            };
            if let Some(Message::Data(kind, payload)) = &decoded.message {
                assert!(payload.len() <= LIMIT);
                if *kind == DataKind::Text {
                    assert!(std::str::from_utf8(payload).is_ok());
                }
            }
            let done = decoded.message.is_none();
            let consumed = decoded.consumed;
            buf.drain(..consumed);
            if done {
                break;
            }
        }
        assert!(buf.len() <= 14 + MAX_CONTROL_PAYLOAD);
    }
}

/// permessage-deflate: any compressed bytes inflate within the limit or fail cleanly, with the
/// output buffer never grown past the limit; anything compressed inflates back to itself; any
/// extension header negotiates or declines.
pub fn inflate(data: &[u8]) {
    const LIMIT: usize = 64 * 1024;
    let mut inflater = MessageInflater::new(true);
    let mut out = Vec::new();
    if inflater
        .inflate(data, &mut out, LIMIT)
        .and_then(|_| inflater.finish(&mut out, LIMIT))
        .is_ok()
    {
        assert!(out.len() <= LIMIT);
    }
    assert!(out.capacity() <= LIMIT + 1);

    let window_bits = 8 + data.first().map_or(7, |b| b % 8);
    let compressed = compress_message(data, window_bits);
    let mut inflater = MessageInflater::new(true);
    let mut back = Vec::new();
    inflater
        .inflate(&compressed, &mut back, data.len())
        .expect("our own output inflates");
    inflater
        .finish(&mut back, data.len())
        .expect("our own output finishes");
    assert_eq!(back, data);

    if let Ok(header) = std::str::from_utf8(data) {
        let _ = negotiate([header], &DeflatePolicy::default());
    }
}

/// HTTP request heads and the WebSocket upgrade: parse, validate and answer without panicking;
/// every answer is an HTTP/1.1 response.
pub fn handshake(data: &[u8]) {
    if let Ok(Some(req)) = parse_request(data) {
        assert!(req.head_len <= data.len());
        let _ = req.query_param("token");
        let mut out = Vec::new();
        match validate_upgrade(&req) {
            Ok(up) => write_upgrade_response(&mut out, up.key, up.protocols.first().copied(), None),
            Err(e) => e.write_response(&mut out),
        }
        assert!(out.starts_with(b"HTTP/1.1 "));
    }
}

/// The app protocol decoder: any frame is an op or an error answer, and a decoded op re-encodes
/// to JSON that decodes to the same op.
pub fn protocol_op(data: &[u8]) {
    if let Ok(op) = decode_op(data) {
        let json = op.to_json();
        let again = decode_op(json.as_bytes()).expect("a re-encoded op decodes");
        assert_eq!(again.to_json(), json);
    }
}

/// Server events as clients decode them (a decoded event re-encodes to itself), and SSE
/// position ids and event encoding: no panic on any input.
pub fn server_event(data: &[u8]) {
    if let Ok(event) = ServerEvent::decode(data) {
        let json = event.to_json();
        let again = ServerEvent::decode(json.as_bytes()).expect("a re-encoded event decodes");
        assert_eq!(again.to_json(), json);
    }
    if let Some(id) = last_event_id(Some(data)) {
        let _ = parse_position_id(id);
        let encoded = SseEvent {
            id: Some(id),
            event: Some(id),
            data,
            retry_ms: None,
        }
        .encode();
        assert!(encoded.ends_with(b"\n\n"));
    }
}
