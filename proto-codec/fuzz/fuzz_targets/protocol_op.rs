//! The app protocol's client ops: the check is `proto_codec_fuzz::protocol_op` (shared with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto_codec_fuzz::protocol_op(data));
