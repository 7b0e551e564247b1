//! In-place (un)masking of WebSocket payloads (RFC 6455 §5.3).
//!
//! Masking is an XOR with a 4-byte key repeated over the payload. The hot loop works on 32-byte
//! blocks of four `u64` words, which LLVM turns into SIMD XORs; no `unsafe` is needed for that.

/// XORs `buf` in place with `key`, as if `buf` started at payload byte 0.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_at(buf, key, 0);
}

/// XORs `buf` in place with `key`, where `buf` starts at payload byte `offset`.
///
/// A payload that arrives in several reads is unmasked piece by piece with the running offset.
#[inline]
pub fn apply_mask_at(buf: &mut [u8], key: [u8; 4], offset: u64) {
    // Rotate the key so that index 0 of `buf` lines up with key byte `offset % 4`.
    let shift = (offset % 4) as usize;
    let key = [
        key[shift],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ];
    let word = u32::from_ne_bytes(key);
    let word64 = (u64::from(word) << 32) | u64::from(word);

    let mut blocks = buf.chunks_exact_mut(32);
    for block in &mut blocks {
        for lane in block.chunks_exact_mut(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(lane);
            let x = u64::from_ne_bytes(bytes) ^ word64;
            lane.copy_from_slice(&x.to_ne_bytes());
        }
    }
    let rest = blocks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for lane in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(lane);
        let x = u64::from_ne_bytes(bytes) ^ word64;
        lane.copy_from_slice(&x.to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The byte-at-a-time reference implementation, kept for tests and benchmarks.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[((offset + i as u64) % 4) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: masked "Hello".
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&data, b"Hello");
    }

    proptest! {
        #[test]
        fn matches_bytewise(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], offset in 0u64..16) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask_at(&mut fast, key, offset);
            apply_mask_bytewise(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn split_anywhere_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..200), key: [u8; 4], cut in 0usize..200) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key);
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply_mask_at(a, key, 0);
            apply_mask_at(b, key, cut as u64);
            prop_assert_eq!(whole, parts);
        }
    }
}
