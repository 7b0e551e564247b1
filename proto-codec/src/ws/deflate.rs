//! permessage-deflate (RFC 7692): negotiation, and per-message compression with a size limit.
//!
//! The server always answers with `server_no_context_takeover`: every message is compressed on its
//! own, so one compressed room message can be shared by every subscriber (encode once). By default
//! it also asks for `client_no_context_takeover`, so no inflate window outlives a message.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtocolError;

/// The four bytes a sync flush ends with; removed after compressing, put back before inflating.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The largest LZ77 window (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;
/// The smallest window a peer may ask for.
pub const MIN_WINDOW_BITS: u8 = 8;

/// One `permessage-deflate` offer from a client, as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateOffer {
    /// The client asks us not to keep our window between messages.
    pub server_no_context_takeover: bool,
    /// The client will not keep its window between messages.
    pub client_no_context_takeover: bool,
    /// The largest window the client lets us use.
    pub server_max_window_bits: Option<u8>,
    /// `None`: not offered; `Some(None)`: offered without a value; `Some(Some(n))`: with a value.
    pub client_max_window_bits: Option<Option<u8>>,
}

/// What the server wants from negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// Ask clients not to keep their window between messages (saves an inflate window per
    /// connection).
    pub request_client_no_context_takeover: bool,
}

impl Default for DeflatePolicy {
    fn default() -> DeflatePolicy {
        DeflatePolicy {
            request_client_no_context_takeover: true,
        }
    }
}

/// The parameters both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// Always true in our answers: the server compresses each message on its own.
    pub server_no_context_takeover: bool,
    /// The client resets its window after each message.
    pub client_no_context_takeover: bool,
    /// The window the server's compressor may use (8–15).
    pub server_max_window_bits: u8,
    /// The window the client compresses with (8–15).
    pub client_max_window_bits: u8,
}

/// An accepted offer: the agreed parameters and the `Sec-WebSocket-Extensions` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The agreed parameters.
    pub params: DeflateParams,
    /// The response header value.
    pub response: String,
}

fn parse_window_bits(value: &str) -> Option<u8> {
    let value = value.trim().trim_matches('"');
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (MIN_WINDOW_BITS..=MAX_WINDOW_BITS)
        .contains(&bits)
        .then_some(bits)
}

/// Parses one extension element (`permessage-deflate; a; b=c`) into an offer.
///
/// Returns `None` for another extension, or for an invalid offer (unknown or repeated parameter,
/// bad value), which RFC 7692 says the server must decline.
pub fn parse_offer(element: &str) -> Option<DeflateOffer> {
    let mut parts = element.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("permessage-deflate")
    {
        return None;
    }
    let mut offer = DeflateOffer::default();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (param.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !offer.server_no_context_takeover => {
                offer.server_no_context_takeover = true
            }
            ("client_no_context_takeover", None) if !offer.client_no_context_takeover => {
                offer.client_no_context_takeover = true
            }
            ("server_max_window_bits", Some(v)) if offer.server_max_window_bits.is_none() => {
                offer.server_max_window_bits = Some(parse_window_bits(v)?)
            }
            ("client_max_window_bits", v) if offer.client_max_window_bits.is_none() => {
                offer.client_max_window_bits = Some(match v {
                    Some(v) => Some(parse_window_bits(v)?),
                    None => None,
                })
            }
            _ => return None,
        }
    }
    Some(offer)
}

/// Picks the first acceptable `permessage-deflate` offer from the `Sec-WebSocket-Extensions`
/// header values, in the client's order of preference.
pub fn negotiate<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
    policy: &DeflatePolicy,
) -> Option<Negotiated> {
    let offer = header_values
        .into_iter()
        .flat_map(|v| v.split(','))
        .find_map(parse_offer)?;
    let server_bits = offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
    let client_no_context_takeover =
        offer.client_no_context_takeover || policy.request_client_no_context_takeover;
    let mut response = String::from("permessage-deflate; server_no_context_takeover");
    if client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = offer.server_max_window_bits {
        response.push_str("; server_max_window_bits=");
        response.push_str(&bits.to_string());
    }
    let client_bits = match offer.client_max_window_bits {
        Some(Some(bits)) => {
            response.push_str("; client_max_window_bits=");
            response.push_str(&bits.to_string());
            bits
        }
        _ => MAX_WINDOW_BITS,
    };
    Some(Negotiated {
        params: DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        },
        response,
    })
}

/// Compresses whole messages, each on its own (no context takeover).
pub struct MessageDeflater {
    compress: Compress,
    window_bits: u8,
}

impl std::fmt::Debug for MessageDeflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageDeflater")
            .field("window_bits", &self.window_bits)
            .finish()
    }
}

impl MessageDeflater {
    /// A compressor for peers that accept `window_bits` (8–15) at the given level (0–9).
    ///
    /// zlib cannot compress raw deflate with an 8-bit window; it uses 9, whose longest match
    /// distance (250 bytes) still fits a 256-byte window, so the output is valid for such peers.
    pub fn new(window_bits: u8, level: u32) -> MessageDeflater {
        let bits = window_bits.clamp(9, MAX_WINDOW_BITS);
        MessageDeflater {
            compress: Compress::new_with_window_bits(Compression::new(level.min(9)), false, bits),
            window_bits: bits,
        }
    }

    /// Compresses one message into `out` (appended), without the trailing `00 00 ff ff`.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.compress.reset();
        let start = out.len();
        out.reserve(input.len() / 2 + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before_in = self.compress.total_in();
            let status = self
                .compress
                .compress_vec(&input[consumed..], out, FlushCompress::Sync);
            consumed += (self.compress.total_in() - before_in) as usize;
            // A sync flush is complete when all input is taken and zlib left output room unused.
            let done = consumed == input.len() && out.len() < out.capacity();
            match status {
                Ok(Status::Ok) | Ok(Status::BufError) if !done => continue,
                _ => break,
            }
        }
        if out.len() >= start + 4 && out[out.len() - 4..] == SYNC_TAIL {
            out.truncate(out.len() - 4);
        }
    }
}

/// Inflates compressed messages with a hard limit on the decompressed size.
pub struct MessageInflater {
    decompress: Decompress,
    no_context_takeover: bool,
}

impl std::fmt::Debug for MessageInflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageInflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .finish()
    }
}

impl MessageInflater {
    /// An inflater for a peer that compresses with the given agreement.
    pub fn new(no_context_takeover: bool) -> MessageInflater {
        MessageInflater {
            // A 15-bit window inflates anything a peer with a smaller window produced.
            decompress: Decompress::new_with_window_bits(false, MAX_WINDOW_BITS),
            no_context_takeover,
        }
    }

    /// Inflates the next piece of a compressed message, appending to `out`.
    ///
    /// Fails with [`ProtocolError::MessageTooLarge`] as soon as `out` would pass `max_len`: a
    /// decompression bomb costs at most `max_len` plus one chunk.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<(), ProtocolError> {
        const CHUNK: usize = 16 * 1024;
        let mut consumed = 0usize;
        loop {
            if out.len() > max_len {
                return Err(ProtocolError::MessageTooLarge);
            }
            if out.capacity() == out.len() {
                // Grow by doubling, but never past the limit (+1 byte to detect going over it).
                let room = (max_len + 1 - out.len()).min(CHUNK.max(out.len()));
                out.reserve_exact(room);
            }
            let before_in = self.decompress.total_in();
            let before_out = out.len();
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::BadCompression)?;
            consumed += (self.decompress.total_in() - before_in) as usize;
            if out.len() > max_len {
                return Err(ProtocolError::MessageTooLarge);
            }
            let progressed = out.len() != before_out || self.decompress.total_in() != before_in;
            let output_full = out.len() == out.capacity();
            match status {
                Status::StreamEnd => return Ok(()),
                _ if consumed == input.len() && !output_full => return Ok(()),
                _ if !progressed => return Err(ProtocolError::BadCompression),
                _ => {}
            }
        }
    }

    /// Ends a message: inflates the implied `00 00 ff ff` tail and resets the window if agreed.
    pub fn finish(&mut self, out: &mut Vec<u8>, max_len: usize) -> Result<(), ProtocolError> {
        let result = self.inflate(&SYNC_TAIL, out, max_len);
        if self.no_context_takeover {
            self.decompress.reset(false);
        }
        result
    }
}

/// Compresses `input` as one message with a fresh compressor (for tests and one-off frames).
pub fn compress_message(input: &[u8], window_bits: u8) -> Vec<u8> {
    let mut out = Vec::new();
    MessageDeflater::new(window_bits, 6).compress(input, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offers() {
        assert_eq!(
            parse_offer("permessage-deflate"),
            Some(DeflateOffer::default())
        );
        assert_eq!(parse_offer("x-webkit-deflate-frame"), None);
        let o =
            parse_offer("permessage-deflate; client_max_window_bits; server_max_window_bits=10")
                .unwrap();
        assert_eq!(o.client_max_window_bits, Some(None));
        assert_eq!(o.server_max_window_bits, Some(10));
        assert_eq!(
            parse_offer("permessage-deflate; server_max_window_bits"),
            None
        );
        assert_eq!(
            parse_offer("permessage-deflate; server_max_window_bits=16"),
            None
        );
        assert_eq!(
            parse_offer("permessage-deflate; server_max_window_bits=\"9\"")
                .unwrap()
                .server_max_window_bits,
            Some(9)
        );
        assert_eq!(parse_offer("permessage-deflate; foo"), None);
        assert_eq!(
            parse_offer(
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover"
            ),
            None
        );
    }

    #[test]
    fn negotiation_takes_first_valid_offer() {
        let n = negotiate(
            ["permessage-deflate; foo=1, permessage-deflate; server_max_window_bits=12"],
            &DeflatePolicy::default(),
        )
        .unwrap();
        assert_eq!(n.params.server_max_window_bits, 12);
        assert_eq!(
            n.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"
        );
        assert!(negotiate(["foo, bar"], &DeflatePolicy::default()).is_none());
        let n = negotiate(
            ["permessage-deflate; client_max_window_bits"],
            &DeflatePolicy {
                request_client_no_context_takeover: false,
            },
        )
        .unwrap();
        assert_eq!(n.response, "permessage-deflate; server_no_context_takeover");
    }

    #[test]
    #[cfg_attr(miri, ignore = "zlib-rs runs for many minutes under Miri")]
    fn bomb_is_stopped_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let compressed = compress_message(&zeros, 15);
        assert!(compressed.len() < 20_000);
        let mut inflater = MessageInflater::new(true);
        let mut out = Vec::new();
        let r = inflater
            .inflate(&compressed, &mut out, 1 << 20)
            .and_then(|_| inflater.finish(&mut out, 1 << 20));
        assert_eq!(r, Err(ProtocolError::MessageTooLarge));
        assert!(
            out.capacity() <= (1 << 20) + 1,
            "capacity {}",
            out.capacity()
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "zlib-rs runs for many minutes under Miri")]
    fn garbage_is_bad_compression() {
        let mut inflater = MessageInflater::new(true);
        let mut out = Vec::new();
        let r = inflater
            .inflate(&[0xff, 0xff, 0xff, 0xff, 0xff], &mut out, 1 << 20)
            .and_then(|_| inflater.finish(&mut out, 1 << 20));
        assert_eq!(r, Err(ProtocolError::BadCompression));
    }

    #[test]
    #[cfg_attr(miri, ignore = "zlib-rs runs for many minutes under Miri")]
    fn empty_message_round_trips() {
        let c = compress_message(b"", 15);
        let mut inflater = MessageInflater::new(true);
        let mut out = Vec::new();
        inflater.inflate(&c, &mut out, 10).unwrap();
        inflater.finish(&mut out, 10).unwrap();
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        #[cfg_attr(miri, ignore = "zlib-rs runs for many minutes under Miri")]
        fn round_trip_any_split(data in proptest::collection::vec(any::<u8>(), 0..4000), bits in 8u8..=15, cut in 0usize..4000, ctx in any::<bool>()) {
            let c = compress_message(&data, bits);
            let mut inflater = MessageInflater::new(ctx);
            for _ in 0..2 {
                let cut = cut.min(c.len());
                let mut out = Vec::new();
                inflater.inflate(&c[..cut], &mut out, data.len()).unwrap();
                inflater.inflate(&c[cut..], &mut out, data.len()).unwrap();
                inflater.finish(&mut out, data.len()).unwrap();
                prop_assert_eq!(&out, &data);
                if !ctx { break; }
            }
        }
    }
}
