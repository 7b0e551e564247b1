//! Message assembly: any bytes, read in sizes chosen by the input, with and without deflate.
//! The decoder must never panic, never keep more than a partial header or control frame, and
//! only return valid UTF-8 as text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_codec::ws::{DataKind, Decoder, DecoderConfig, Message};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else { return };
    let step = usize::from(knobs & 0x3f) + 1;
    let mut config = DecoderConfig::server(8192);
    if knobs & 0x40 != 0 {
        config = config.with_deflate(knobs & 0x80 != 0);
    }
    let mut decoder = Decoder::new(config);
    let mut buf = Vec::new();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Err(_) => return,
                Ok(d) => {
                    if let Some(Message::Data(DataKind::Text, p)) = &d.message {
                        assert!(std::str::from_utf8(p).is_ok());
                    }
                    if let Some(Message::Data(_, p)) = &d.message {
                        assert!(p.len() <= 8192);
                    }
                    let done = d.message.is_none();
                    let consumed = d.consumed;
                    buf.drain(..consumed);
                    if done {
                        break;
                    }
                }
            }
        }
        assert!(buf.len() <= 14 + 125);
    }
});
