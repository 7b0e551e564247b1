//! The Rust client SDK of ringcast (crate `ringcast-client`).
//!
//! Not built yet: it lands with the client-SDK issue. Until then the harness (`benches/`) and the
//! gateway's integration tests talk to the gateway with fastwebsockets directly, and the app
//! protocol's types are in `proto_codec::protocol`.

pub use proto_codec::protocol;
