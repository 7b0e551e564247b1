//! Sans-I/O codecs for ringcast.
//!
//! Nothing here touches a socket, a runtime or a clock: every function takes bytes (and, where
//! needed, the current time) and returns bytes or decisions. That keeps the hot path testable,
//! fuzzable and benchmarkable on its own, as rustls and quinn-proto are.
//!
//! - [`ws`]: RFC 6455 frames (parse in place, unmask in place, encode once) and RFC 7692
//!   permessage-deflate.
//! - [`http`] and [`handshake`]: HTTP/1.1 request heads and the WebSocket upgrade.
//! - [`sse`]: Server-Sent Events.
//! - [`protocol`]: the app protocol (ops, events, codes).
#![deny(missing_docs)]

pub mod handshake;
pub mod http;
pub mod protocol;
pub mod pusher;
pub mod sse;
pub mod ws;
