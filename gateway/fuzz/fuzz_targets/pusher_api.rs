//! The Pusher HTTP API's routing and event bodies: the check is `gateway_fuzz::pusher_api`
//! (shared with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway_fuzz::pusher_api(data));
