//! y-protocols awareness messages from several owners: the check is `gateway_fuzz::awareness`
//! (shared with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway_fuzz::awareness(data));
