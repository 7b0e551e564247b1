//! HTTP endpoints outside the WebSocket path.

pub mod admin;
