//! Differential tests against fastwebsockets, an implementation no one here wrote.
//!
//! - Frames fastwebsockets encodes as a client are decoded by our [`Decoder`] into the same
//!   messages it meant to send.
//! - Frames we encode as a server are read back by fastwebsockets as the same frames.

use fastwebsockets::{Frame, OpCode as FwOp, Payload, Role, WebSocket};
use proptest::prelude::*;
use proto_codec::ws::{encode_frame, DataKind, Decoder, DecoderConfig, Message, OpCode};

#[derive(Debug, Clone)]
enum Piece {
    /// A data message split into fragments of the given sizes.
    Data {
        text: bool,
        payload: Vec<u8>,
        cuts: Vec<usize>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => (any::<bool>(), "\\PC{0,300}", proptest::collection::vec(any::<u8>(), 0..2000), proptest::collection::vec(0usize..2000, 0..4))
            .prop_map(|(text, s, bin, mut cuts)| {
                let payload = if text { s.into_bytes() } else { bin };
                cuts.retain(|c| *c < payload.len());
                cuts.sort_unstable();
                cuts.dedup();
                Piece::Data { text, payload, cuts }
            }),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Piece::Ping),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Piece::Pong),
    ]
}

/// Encodes a piece with fastwebsockets' client-side framing (masked).
fn fw_encode(piece: &Piece, key: [u8; 4], out: &mut Vec<u8>) {
    let mut push = |fin: bool, op: FwOp, payload: &[u8]| {
        let mut frame = Frame::new(fin, op, Some(key), Payload::Owned(payload.to_vec()));
        frame.mask();
        let mut buf = Vec::new();
        out.extend_from_slice(frame.write(&mut buf));
    };
    match piece {
        Piece::Data {
            text,
            payload,
            cuts,
        } => {
            let first = if *text { FwOp::Text } else { FwOp::Binary };
            let mut bounds = vec![0];
            bounds.extend(cuts.iter().copied());
            bounds.push(payload.len());
            let n = bounds.len() - 1;
            for i in 0..n {
                let op = if i == 0 { first } else { FwOp::Continuation };
                push(i == n - 1, op, &payload[bounds[i]..bounds[i + 1]]);
            }
        }
        Piece::Ping(p) => push(true, FwOp::Ping, p),
        Piece::Pong(p) => push(true, FwOp::Pong, p),
    }
}

fn expected(piece: &Piece) -> (String, Vec<u8>) {
    match piece {
        Piece::Data {
            text: true,
            payload,
            ..
        } => ("text".into(), payload.clone()),
        Piece::Data {
            text: false,
            payload,
            ..
        } => ("binary".into(), payload.clone()),
        Piece::Ping(p) => ("ping".into(), p.clone()),
        Piece::Pong(p) => ("pong".into(), p.clone()),
    }
}

fn our_decode(bytes: &[u8], read_size: usize) -> Vec<(String, Vec<u8>)> {
    let mut decoder = Decoder::new(DecoderConfig::server(1 << 20));
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(read_size.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            let decoded = decoder.decode(&mut buf).expect("valid input");
            let consumed = decoded.consumed;
            let msg = decoded.message.map(|m| match m {
                Message::Data(DataKind::Text, p) => ("text".to_string(), p.to_vec()),
                Message::Data(DataKind::Binary, p) => ("binary".to_string(), p.to_vec()),
                Message::Ping(p) => ("ping".to_string(), p.to_vec()),
                Message::Pong(p) => ("pong".to_string(), p.to_vec()),
                Message::Close(_) => ("close".to_string(), Vec::new()),
            });
            buf.drain(..consumed);
            match msg {
                Some(m) => out.push(m),
                None => break,
            }
        }
    }
    assert!(buf.len() < 14, "left over: {}", buf.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn we_decode_what_fastwebsockets_encodes(pieces in proptest::collection::vec(piece(), 1..8), key: [u8; 4], read_size in 1usize..5000) {
        let mut bytes = Vec::new();
        for p in &pieces {
            fw_encode(p, key, &mut bytes);
        }
        let want: Vec<_> = pieces.iter().map(expected).collect();
        prop_assert_eq!(our_decode(&bytes, read_size), want);
    }

    #[test]
    fn fastwebsockets_reads_what_we_encode(frames in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..70_000)), 1..5)) {
        let frames: Vec<(OpCode, Vec<u8>)> = frames
            .into_iter()
            .map(|(k, mut p)| match k {
                0 => (OpCode::Binary, p),
                1 => (OpCode::Text, String::from_utf8_lossy(&p).into_owned().into_bytes()),
                2 => { p.truncate(125); (OpCode::Ping, p) }
                _ => { p.truncate(125); (OpCode::Pong, p) }
            })
            .collect();
        let mut wire = Vec::new();
        for (op, p) in &frames {
            wire.extend_from_slice(&encode_frame(*op, false, p));
        }
        let got = read_with_fastwebsockets(wire, frames.len());
        let want: Vec<(u8, Vec<u8>)> = frames.iter().map(|(op, p)| (op.as_u8(), p.clone())).collect();
        prop_assert_eq!(got, want);
    }
}

fn read_with_fastwebsockets(wire: Vec<u8>, count: usize) -> Vec<(u8, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (mut ours, theirs) = tokio::io::duplex(wire.len() + 64);
        tokio::io::AsyncWriteExt::write_all(&mut ours, &wire)
            .await
            .expect("write");
        let mut ws = WebSocket::after_handshake(theirs, Role::Client);
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        ws.set_max_message_size(1 << 24);
        let mut out = Vec::new();
        for _ in 0..count {
            let frame = ws.read_frame().await.expect("fastwebsockets read");
            assert!(frame.fin);
            out.push((frame.opcode as u8, frame.payload.to_vec()));
        }
        out
    })
}
