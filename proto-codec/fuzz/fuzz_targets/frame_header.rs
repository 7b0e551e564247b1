//! Any bytes: the header parser returns a header, "incomplete" or a protocol error, and a
//! complete header is consistent with the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_codec::ws::{parse_header, FrameLimits, HeaderParse};

fuzz_target!(|data: &[u8]| {
    for limits in [FrameLimits::server(1 << 20), FrameLimits::client(u64::MAX >> 1)] {
        if let Ok(HeaderParse::Complete { header, header_len }) = parse_header(data, &limits) {
            assert!(header_len <= data.len() && (2..=14).contains(&header_len));
            assert!(header.payload_len <= limits.max_frame_bytes);
            if header.opcode.is_control() {
                assert!(header.fin && header.payload_len <= 125);
            }
        }
    }
});
