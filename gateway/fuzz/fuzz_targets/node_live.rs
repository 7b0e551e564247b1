//! Another node's room-channel payloads and live app events: the check is
//! `gateway_fuzz::node_live` (shared with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway_fuzz::node_live(data));
