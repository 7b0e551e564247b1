//! Load scenarios.

pub mod fanout;
