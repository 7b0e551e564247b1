//! permessage-deflate: the check is `proto_codec_fuzz::inflate` (shared with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto_codec_fuzz::inflate(data));
