//! permessage-deflate: any compressed bytes inflate within the limit or fail cleanly; anything
//! compressed inflates back to itself; any extension header negotiates or declines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_codec::ws::deflate::{compress_message, negotiate, DeflatePolicy, MessageInflater};

fuzz_target!(|data: &[u8]| {
    const LIMIT: usize = 64 * 1024;
    let mut inflater = MessageInflater::new(true);
    let mut out = Vec::new();
    if inflater.inflate(data, &mut out, LIMIT).and_then(|_| inflater.finish(&mut out, LIMIT)).is_ok() {
        assert!(out.len() <= LIMIT);
    }
    assert!(out.capacity() <= LIMIT + 1);

    let bits = 8 + data.first().map_or(7, |b| b % 8);
    let compressed = compress_message(data, bits);
    let mut inflater = MessageInflater::new(true);
    let mut back = Vec::new();
    inflater.inflate(&compressed, &mut back, data.len()).expect("own output inflates");
    inflater.finish(&mut back, data.len()).expect("own output finishes");
    assert_eq!(back, data);

    if let Ok(header) = std::str::from_utf8(data) {
        let _ = negotiate([header], &DeflatePolicy::default());
    }
});
