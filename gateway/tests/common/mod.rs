//! Test helpers: start the real `ringcast` binary on loopback, and talk to it with
//! fastwebsockets (an implementation no one here wrote).
//!
//! - `server.rs`: [`Server`] (the `ringcast` process) and process helpers (`driver`,
//!   `free_port`, `cpu_time`, `rss_bytes`).
//! - `http.rs`: blocking HTTP to the admin listener (`http`, `metric`).
//! - `ws.rs`: WebSocket clients ([`Client`], [`Received`], `connect*`, `try_connect`) and raw
//!   upgrades (`raw_upgrade*`, `read_head`).
//! - `redis.rs`: [`Redis`], [`RedisCluster`], [`RedisSentinel`] supervisors.
//! - `proxies.rs`: fault-injecting TCP proxies ([`FreezingProxy`]).
//! - `node.rs`: Node client scripts (`node_script`).
//!
//! Every test binary includes `mod common;` and uses only some of these, hence the `allow`s.
#![allow(dead_code, unused_imports)]

mod http;
mod node;
mod proxies;
mod redis;
mod server;
mod ws;

pub use http::{http, metric};
pub use node::node_script;
pub use proxies::FreezingProxy;
pub use redis::{Redis, RedisCluster, RedisSentinel};
pub use server::{cpu_time, driver, free_port, rss_bytes, Server};
pub use ws::{
    connect, connect_lenient, connect_slow, raw_upgrade, raw_upgrade_from, read_head, try_connect,
    Client, Received,
};
