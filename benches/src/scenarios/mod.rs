//! Load scenarios.

pub mod ceiling;
pub mod fanout;
pub mod idle;
pub mod storm;
