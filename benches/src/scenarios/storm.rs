//! `storm`: N connections opening at a rate. Reports handshake latency (scheduled start → upgrade
//! answered, and → first event for the app protocol) and failures. Connections are spread over
//! source addresses 127.0.0.x so the port range never runs out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use super::fanout::spawn_server;
use crate::procstat;
use crate::tls::Stream;

/// Arguments of the storm scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server to load (ignored with --spawn).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Start this server command (see `fanout --spawn`).
    #[arg(long, value_name = "COMMAND")]
    spawn: Option<String>,
    /// A label for the server in the report.
    #[arg(long, default_value = "server")]
    label: String,
    /// Connections to open.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Connections opened per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Connect over TLS, verifying the server against this PEM certificate (name `localhost`);
    /// with --spawn, the server's `tls=` address is used.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// Path to upgrade on.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,
}

/// Source address for connection `i`: 127.N.0.(1 + i / 20000), 20,000 connections each, where N
/// depends on the process so that back-to-back runs do not collide with each other's TIME_WAIT
/// ports.
pub fn source_ip(i: usize) -> IpAddr {
    let net = 1 + (std::process::id() % 250) as u8;
    IpAddr::V4(Ipv4Addr::new(127, net, 0, (1 + i / 20_000).min(254) as u8))
}

/// Opens one upgraded connection from `source` (used by the idle clients too).
pub async fn open_one_pub(addr: SocketAddr, path: &str, source: IpAddr) -> anyhow::Result<Stream> {
    open_one(addr, path, source).await.map(|(s, _)| s)
}

async fn open_one(
    addr: SocketAddr,
    path: &str,
    source: IpAddr,
) -> anyhow::Result<(Stream, Instant)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut stream = crate::tls::wrap(tcp).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("closed during the handshake");
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!(
            "refused: {}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        );
    }
    Ok((stream, Instant::now()))
}

/// Runs the scenario and prints the report.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(ca) = &args.tls_ca {
        crate::tls::init(ca)?;
    }
    let spawned = match &args.spawn {
        Some(cmd) => Some(spawn_server(cmd)?),
        None => None,
    };
    let addr = spawned.as_ref().map_or(args.addr, |s| s.addr);
    let server_pid = spawned.as_ref().map(|s| s.child.id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let (hist, failures, elapsed, errors, rss) = rt.block_on(async {
        let start = Instant::now() + Duration::from_millis(100);
        let mut tasks = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            let scheduled = start + interval.mul_f64(i as f64);
            let path = args.path.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(scheduled.into()).await;
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    open_one(addr, &path, source_ip(i)),
                )
                .await;
                match r {
                    Ok(Ok((stream, done))) => {
                        Ok((stream, done.saturating_duration_since(scheduled)))
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out after 10 s".to_string()),
                }
            }));
        }
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        let mut failures = 0usize;
        let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
        let mut open = Vec::with_capacity(args.connections);
        for t in tasks {
            match t.await {
                Ok(Ok((stream, latency))) => {
                    let _ = hist.record(latency.as_micros().max(1) as u64);
                    open.push(stream);
                }
                Ok(Err(e)) => {
                    failures += 1;
                    *errors.entry(e).or_default() += 1;
                }
                Err(e) => {
                    failures += 1;
                    *errors.entry(e.to_string()).or_default() += 1;
                }
            }
        }
        let elapsed = start.elapsed();
        // Server memory while every connection is still open.
        let rss = server_pid.and_then(procstat::rss_bytes);
        drop(open);
        (hist, failures, elapsed, errors, rss)
    });
    println!(
        "storm [{}]: {} connections offered at {:.0}/s to {}: {} upgraded, {} failed, in {:.1} s",
        args.label,
        args.connections,
        args.rate,
        args.path,
        hist.len(),
        failures,
        elapsed.as_secs_f64()
    );
    println!(
        "handshake latency from scheduled start: {}",
        crate::report::percentiles_ms(&hist)
    );
    for (e, n) in &errors {
        println!("  {n} × {e}");
    }
    if let Some(rss) = rss {
        println!(
            "server rss with all connections open: {:.1} MiB",
            rss as f64 / 1048576.0
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"scenario": "storm", "label": args.label, "connections": args.connections,
                "rate": args.rate, "upgraded": hist.len(), "failed": failures,
                "p50_us": hist.value_at_quantile(0.5), "p99_us": hist.value_at_quantile(0.99),
                "p999_us": hist.value_at_quantile(0.999), "max_us": hist.max(), "server_rss_bytes": rss})
        );
    }
    Ok(())
}
