//! Yjs updates applied to collaborative rooms, loading and ready: the check is
//! `gateway_fuzz::yrs_update` (shared with the seed replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway_fuzz::yrs_update(data));
