//! Load scenarios.

pub mod ceiling;
pub mod crossnode;
pub mod fanout;
pub mod idle;
pub mod storm;
