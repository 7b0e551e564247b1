//! HTTP endpoints outside the WebSocket path.

pub mod admin;
pub mod public;
