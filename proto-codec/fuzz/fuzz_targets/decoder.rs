//! Message assembly: the check is `proto_codec_fuzz::decoder` (shared with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto_codec_fuzz::decoder(data));
