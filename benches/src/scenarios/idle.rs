//! `idle`: N idle WebSocket connections, spread over several client processes and source
//! addresses (one process holds at most ~19k fds here), and the server's RSS per connection.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use super::fanout::spawn_server;
use super::storm::source_ip;
use crate::procstat;

/// Arguments of the idle scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Start this server command (see `fanout --spawn`); required, its RSS is the measurement.
    #[arg(long, value_name = "COMMAND")]
    spawn: String,
    /// A label for the server in the report.
    #[arg(long, default_value = "server")]
    label: String,
    /// Idle connections to hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Client processes to spread them over.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Path to upgrade on.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Connections each client process opens at once (a wave); a small wave keeps few
    /// handshakes in flight, so the server's heap peaks with the idle connections alone.
    #[arg(long, default_value_t = 500)]
    wave: usize,
    /// Seconds to wait with every connection open before reading the server's RSS.
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,
    /// At the end, stop the server with SIGTERM and wait for it to exit (a heap-profiling build
    /// writes its profile on a graceful exit), instead of killing it.
    #[arg(long)]
    stop_gracefully: bool,
}

/// Arguments of one idle client process (started by `idle`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(long)]
    connections: usize,
    /// Global index of the first connection (picks source addresses).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Path to upgrade on.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Connections opened at once.
    #[arg(long, default_value_t = 500)]
    wave: usize,
}

/// Opens the connections, prints `ready N`, and holds them until stdin closes.
pub fn run_client(args: ClientArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut open = Vec::with_capacity(args.connections);
        let mut failed = 0usize;
        for chunk in (0..args.connections)
            .collect::<Vec<_>>()
            .chunks(args.wave.max(1))
        {
            let mut joins = Vec::new();
            for &i in chunk {
                let source = source_ip(args.first + i);
                let path = args.path.clone();
                let addr = args.addr;
                joins.push(tokio::spawn(async move {
                    super::storm::open_one_pub(addr, &path, source).await
                }));
            }
            for j in joins {
                match j.await {
                    Ok(Ok(s)) => open.push(s),
                    _ => failed += 1,
                }
            }
        }
        println!("ready {} failed {failed}", open.len());
        // Hold until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        drop(open);
    });
    Ok(())
}

/// Runs the scenario and prints the report.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut server = spawn_server(&args.spawn)?;
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let base = procstat::rss_bytes(pid).context("server RSS")?;
    let (slab_base, tcp_base) = (procstat::slab_bytes(), procstat::tcp_mem_pages());
    let exe = std::env::current_exe()?;
    let per = args.connections.div_ceil(args.processes.max(1));
    let mut children = Vec::new();
    for p in 0..args.processes.max(1) {
        let n = per.min(args.connections.saturating_sub(p * per));
        if n == 0 {
            break;
        }
        let child = Command::new(&exe)
            .args([
                "idle-client",
                "--addr",
                &server.addr.to_string(),
                "--path",
                &args.path,
                "--wave",
                &args.wave.to_string(),
            ])
            .args([
                "--connections",
                &n.to_string(),
                "--first",
                &(p * per).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        children.push(child);
    }
    let mut opened = 0usize;
    let mut failed = 0usize;
    for c in &mut children {
        let out = c.stdout.take().context("client stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ready", n, "failed", f] => {
                opened += n.parse::<usize>()?;
                failed += f.parse::<usize>()?;
            }
            _ => bail!("idle client said {line:?}"),
        }
    }
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let loaded = procstat::rss_bytes(pid).context("server RSS")?;
    let (slab_loaded, tcp_loaded) = (procstat::slab_bytes(), procstat::tcp_mem_pages());
    // The kernel's share: slab caches that grew (socket, inode, file, epoll, … objects) and the
    // pages charged to TCP buffers. Both ends of each connection are on this machine, so these
    // count two sockets per connection.
    let mut slabs: Vec<(String, u64)> = slab_loaded
        .iter()
        .filter_map(|(name, &b)| {
            let grew = b.saturating_sub(slab_base.get(name).copied().unwrap_or(0));
            (grew > 0).then(|| (name.clone(), grew))
        })
        .collect();
    slabs.sort_by_key(|s| std::cmp::Reverse(s.1));
    let slab_total: u64 = slabs.iter().map(|s| s.1).sum();
    let tcp_pages = tcp_loaded.zip(tcp_base).map(|(a, b)| a.saturating_sub(b));
    for c in &mut children {
        drop(c.stdin.take());
    }
    for mut c in children {
        let _ = c.wait();
    }
    let per_conn = loaded.saturating_sub(base) as f64 / opened.max(1) as f64;
    println!(
        "idle [{}]: {} connections open ({} failed) on {}: server RSS {:.1} MiB -> {:.1} MiB = {:.0} bytes per connection (user space; the kernel's socket memory is not in RSS)",
        args.label,
        opened,
        failed,
        args.path,
        base as f64 / 1048576.0,
        loaded as f64 / 1048576.0,
        per_conn
    );
    let n = opened.max(1) as f64;
    if slab_loaded.is_empty() {
        println!(
            "idle [{}]: kernel share not read (/proc/slabinfo needs root)",
            args.label
        );
    } else {
        let top: Vec<String> = slabs
            .iter()
            .take(6)
            .map(|(name, b)| format!("{name} {:.0}", *b as f64 / n))
            .collect();
        println!(
            "idle [{}]: kernel, both ends of each connection (loopback): slab caches +{:.0} bytes per connection ({}), TCP buffer pages +{}",
            args.label,
            slab_total as f64 / n,
            top.join(", "),
            tcp_pages.map_or("n/a".to_string(), |p| p.to_string()),
        );
    }
    if args.stop_gracefully {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if server.child.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if args.json {
        let slab_json: serde_json::Map<String, serde_json::Value> = slabs
            .iter()
            .map(|(name, b)| (name.clone(), serde_json::json!(b)))
            .collect();
        println!(
            "{}",
            serde_json::json!({"scenario": "idle", "label": args.label, "path": args.path, "connections": opened, "failed": failed,
                "rss_base_bytes": base, "rss_loaded_bytes": loaded, "bytes_per_connection": per_conn,
                "kernel_slab_bytes": slab_total, "kernel_slab_by_cache": slab_json,
                "kernel_tcp_mem_pages": tcp_pages})
        );
    }
    Ok(())
}
