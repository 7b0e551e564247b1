//! JWT header and claims handling: the check is `gateway_fuzz::jwt` (shared with the seed replay
//! test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway_fuzz::jwt(data));
