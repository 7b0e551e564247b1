//! Load scenarios.

pub mod ceiling;
pub mod crossnode;
pub mod demo_feed;
pub mod fanout;
pub mod idle;
pub mod soak;
pub mod storm;
