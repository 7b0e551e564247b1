//! SSE and long-poll request query strings: the check is `gateway_fuzz::stream_query` (shared
//! with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway_fuzz::stream_query(data));
