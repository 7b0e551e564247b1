//! The Rust client SDK of ringcast (crate `ringcast-client`), on tokio and fastwebsockets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringcast_client::ClientError> {
//! use ringcast_client::{Client, ClientConfig, RoomEvent};
//! let client = Client::connect(ClientConfig::new("127.0.0.1:8080"));
//! let mut prices = client.subscribe("prices.BTC-USD", false).await?;
//! client.publish("prices.BTC-USD", &serde_json::json!({"bid": 64210.5})).await?;
//! client.publish_binary("prices.BTC-USD", &[0x00, 0x01, 0xff]).await?;
//! while let Some(ev) = prices.next().await {
//!     match ev {
//!         RoomEvent::Message { offset, data, .. } => println!("{offset}: {data}"),
//!         RoomEvent::Binary { offset, data, .. } => println!("{offset}: {} bytes", data.len()),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it guarantees (docs/clients.md): every room message is delivered to a subscription at
//! most once and in offset order; after a reconnect every room is resubscribed from the last
//! offset delivered, so nothing is missed while the server's history holds it, and
//! `RoomEvent::Subscribed { resumed: true, recovered: false }` says when it no longer did.
//! Room messages are JSON ([`RoomEvent::Message`], from [`Client::publish`]) or bytes
//! ([`RoomEvent::Binary`], from [`Client::publish_binary`], carried in binary WebSocket
//! frames); both kinds share a room's offsets, its order and its resume.
//! Reconnection uses exponential backoff with full jitter and honours the server's reconnect
//! hint. Publishes made while disconnected wait in a bounded queue; one sent on a connection that
//! then died fails with [`ClientError::ConnectionLost`] (it may have been stored: retrying may
//! store it twice).

mod backoff;
mod client;
pub mod transport;

pub use backoff::Backoff;
pub use client::{
    Client, ClientConfig, ClientError, ConnState, History, Published, RoomEvent, Subscription,
    TokenProvider,
};
pub use proto_codec::protocol;
