//! Property tests over the whole codec: round trips, and no panic on any input.

use bytes::BytesMut;
use proptest::prelude::*;
use proto_codec::ws::frame::{write_masked_frame, HeaderParse};
use proto_codec::ws::{
    encode_frame, parse_header, DataKind, Decoder, DecoderConfig, FrameLimits, Message, OpCode,
};

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any frame we can legally encode parses back to the same header and payload.
    #[test]
    fn encode_parse_round_trip(op in opcode(), fin in any::<bool>(), masked in any::<bool>(), key: [u8; 4],
                               payload in proptest::collection::vec(any::<u8>(), 0..70_000)) {
        let fin = fin || op.is_control();
        let payload = if op.is_control() { payload[..payload.len().min(125)].to_vec() } else { payload };
        let mut buf = BytesMut::new();
        let limits = if masked {
            write_masked_frame(&mut buf, fin, false, op, key, &payload);
            FrameLimits::server(1 << 20)
        } else {
            proto_codec::ws::frame::write_frame(&mut buf, fin, false, op, &payload);
            FrameLimits::client(1 << 20)
        };
        let HeaderParse::Complete { header, header_len } = parse_header(&buf, &limits).expect("valid") else {
            panic!("incomplete");
        };
        prop_assert_eq!(header.fin, fin);
        prop_assert_eq!(header.opcode, op);
        prop_assert_eq!(header.payload_len as usize, payload.len());
        prop_assert_eq!(header.mask.is_some(), masked);
        let mut body = buf[header_len..].to_vec();
        if let Some(k) = header.mask {
            proto_codec::ws::apply_mask(&mut body, k);
        }
        prop_assert_eq!(body, payload);
    }

    /// Every prefix of a valid frame is reported incomplete, never an error.
    #[test]
    fn prefixes_are_incomplete(payload in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..400) {
        let frame = encode_frame(OpCode::Binary, false, &payload);
        let cut = cut.min(frame.len());
        let limits = FrameLimits::client(1 << 20);
        match parse_header(&frame[..cut], &limits).expect("prefix of a valid frame") {
            HeaderParse::Incomplete { needed } => prop_assert!(needed > 0),
            HeaderParse::Complete { header_len, .. } => prop_assert!(cut >= header_len),
        }
    }

    /// Any bytes, fed in any read sizes, either decode or give a protocol error; never a panic,
    /// and never a leftover larger than a partial header or control frame.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), step in 1usize..300, deflate in any::<bool>()) {
        let mut config = DecoderConfig::server(4096);
        if deflate {
            config = config.with_deflate(true);
        }
        let mut decoder = Decoder::new(config);
        let mut buf = Vec::new();
        'outer: for chunk in bytes.chunks(step) {
            buf.extend_from_slice(chunk);
            loop {
                match decoder.decode(&mut buf) {
                    Err(e) => {
                        let code = e.close_code().0;
                        prop_assert!([1002, 1007, 1009].contains(&code));
                        break 'outer;
                    }
                    Ok(d) => {
                        let done = d.message.is_none();
                        let consumed = d.consumed;
                        buf.drain(..consumed);
                        if done { break; }
                    }
                }
            }
            prop_assert!(buf.len() < 14 + 125 + 1, "kept {} bytes", buf.len());
        }
    }

    /// Fragmented masked messages with random splits come back whole.
    #[test]
    fn fragmented_messages_reassemble(text in "\\PC{0,200}", cuts in proptest::collection::vec(0usize..800, 0..5), key: [u8; 4], step in 1usize..100) {
        let payload = text.as_bytes();
        let mut bounds: Vec<usize> = cuts.into_iter().filter(|c| *c < payload.len()).collect();
        bounds.push(0);
        bounds.push(payload.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut wire = BytesMut::new();
        if bounds.len() == 1 {
            write_masked_frame(&mut wire, true, false, OpCode::Text, key, b"");
        }
        for i in 0..bounds.len().saturating_sub(1) {
            let op = if i == 0 { OpCode::Text } else { OpCode::Continuation };
            write_masked_frame(&mut wire, i + 2 == bounds.len(), false, op, key, &payload[bounds[i]..bounds[i + 1]]);
        }
        let mut decoder = Decoder::new(DecoderConfig::server(1 << 20));
        let mut buf = Vec::new();
        let mut got = None;
        for chunk in wire.chunks(step) {
            buf.extend_from_slice(chunk);
            let d = decoder.decode(&mut buf).expect("valid");
            let consumed = d.consumed;
            if let Some(Message::Data(DataKind::Text, p)) = d.message {
                got = Some(p.to_vec());
            }
            buf.drain(..consumed);
        }
        prop_assert_eq!(got.as_deref(), Some(payload));
    }
}
