//! The configuration file and `RINGCAST_*` variables: the check is `gateway_fuzz::config`
//! (shared with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway_fuzz::config(data));
