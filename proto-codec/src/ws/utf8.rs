//! Incremental UTF-8 validation that fails on the first invalid byte, even mid-message.
//!
//! A text message may arrive in many frames and each frame in many reads; a code point can be
//! split anywhere. The validator keeps at most three bytes of an unfinished code point between
//! chunks and reports an error as soon as a chunk holds a sequence no continuation can repair.

use super::error::ProtocolError;

/// Validates a text message chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: usize,
}

/// How many bytes a sequence that starts with `lead` has (1 for anything that is not a valid lead).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Utf8Validator {
        Utf8Validator::default()
    }

    /// Validates the next chunk of the message.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), ProtocolError> {
        if self.pending_len > 0 {
            let need = sequence_len(self.pending[0]).saturating_sub(self.pending_len);
            let take = need.min(chunk.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&chunk[..take]);
            let n = self.pending_len + take;
            match simdutf8::compat::from_utf8(&self.pending[..n]) {
                Ok(_) => {
                    self.pending_len = 0;
                    chunk = &chunk[take..];
                }
                Err(e) if e.error_len().is_some() => return Err(ProtocolError::InvalidUtf8),
                Err(_) => {
                    // Still unfinished: the chunk was shorter than the rest of the code point.
                    self.pending_len = n;
                    return Ok(());
                }
            }
        }
        if simdutf8::basic::from_utf8(chunk).is_ok() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(ProtocolError::InvalidUtf8),
            Err(e) => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }

    /// Ends the message: an unfinished code point at the end is an error.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let unfinished = self.pending_len != 0;
        self.pending_len = 0;
        if unfinished {
            Err(ProtocolError::InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_in_chunks(data: &[u8], cuts: &[usize]) -> Result<(), ProtocolError> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, data.len());
            v.feed(&data[start..cut])?;
            start = cut;
        }
        v.feed(&data[start..])?;
        v.finish()
    }

    #[test]
    fn fails_fast_on_the_chunk_with_the_bad_byte() {
        // Autobahn 6.4.1: "κόσμε" then an invalid sequence in the second fragment.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(
            v.feed(&[0xf4, 0x90, 0x80, 0x80]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn split_code_point_is_fine_until_the_end() {
        let euro = "€".as_bytes();
        let mut v = Utf8Validator::new();
        v.feed(&euro[..1]).unwrap();
        v.feed(&euro[1..2]).unwrap();
        v.feed(&euro[2..]).unwrap();
        v.finish().unwrap();
        let mut v = Utf8Validator::new();
        v.feed(&euro[..2]).unwrap();
        assert_eq!(v.finish(), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn invalid_continuation_of_a_pending_lead_fails_immediately() {
        let mut v = Utf8Validator::new();
        v.feed(&[b'a', 0xe2]).unwrap();
        assert_eq!(v.feed(&[0x41]), Err(ProtocolError::InvalidUtf8));
        let mut v = Utf8Validator::new();
        v.feed(&[0xed]).unwrap();
        // A surrogate (U+D800) is invalid even though it is well-formed as bytes.
        assert_eq!(v.feed(&[0xa0]), Err(ProtocolError::InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std_however_split(data in proptest::collection::vec(any::<u8>(), 0..64), cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&data).is_ok();
            prop_assert_eq!(validate_in_chunks(&data, &cuts).is_ok(), expected);
        }

        #[test]
        fn valid_text_however_split(s in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert!(validate_in_chunks(s.as_bytes(), &cuts).is_ok());
        }
    }
}
