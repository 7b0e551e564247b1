//! HTTP endpoints outside the WebSocket path.

pub mod admin;
pub mod api;
pub mod overview;
pub mod public;
