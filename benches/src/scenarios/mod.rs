//! Load scenarios.

pub mod ceiling;
pub mod fanout;
