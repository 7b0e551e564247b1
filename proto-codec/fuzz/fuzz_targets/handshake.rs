//! HTTP request heads and the WebSocket upgrade: parse, validate and answer without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_codec::handshake::{validate_upgrade, write_upgrade_response};
use proto_codec::http::parse_request;

fuzz_target!(|data: &[u8]| {
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
});
