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
    /// Seconds to wait with every connection open before reading the server's RSS.
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,
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
}

/// Opens the connections, prints `ready N`, and holds them until stdin closes.
pub fn run_client(args: ClientArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut open = Vec::with_capacity(args.connections);
        let mut failed = 0usize;
        for chunk in (0..args.connections).collect::<Vec<_>>().chunks(500) {
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
    let server = spawn_server(&args.spawn)?;
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let base = procstat::rss_bytes(pid).context("server RSS")?;
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
    if args.json {
        println!(
            "{}",
            serde_json::json!({"scenario": "idle", "label": args.label, "connections": opened, "failed": failed,
                "rss_base_bytes": base, "rss_loaded_bytes": loaded, "bytes_per_connection": per_conn})
        );
    }
    Ok(())
}
