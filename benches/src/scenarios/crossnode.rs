//! `crossnode`: the latency a Redis hop adds. One run, three cases with the same load:
//! `embedded` (one node, the in-process broker), `redis-one-node` (one node on Redis: the
//! publish goes to Redis and delivery starts from its echo), and `redis-cross-node` (publishers
//! on node A, subscribers on node B, both on the same Redis).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use super::fanout;

/// `crossnode` options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The ringcast binary the nodes run.
    #[arg(long, default_value = "target/release/ringcast")]
    pub ringcast: String,
    /// The redis-server binary (a fresh instance on a free loopback port, no persistence).
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
    /// Run the nodes and Redis under `taskset -c LIST` (for example `0`); empty: unpinned.
    #[arg(long, default_value = "")]
    pub server_cpus: String,
    /// Subscribers (all on node B).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Offered publish rate (msg/s) over all publishers.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Publishers (all on node A in the cross-node case).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Padding bytes per message.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Measured seconds per case.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Warm-up seconds per case.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Also print one JSON line per case.
    #[arg(long)]
    pub json: bool,
}

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Parses `fanout` options the way the command line would (so every default is `fanout`'s).
#[derive(Parser)]
struct FanoutCli {
    #[command(flatten)]
    args: fanout::Args,
}

/// Runs the three cases and prints each report, then the hop's cost.
pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ringcast-crossnode-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let _redis = start_redis(&args, &dir, port)?;
    let prefix = format!("xn{}", std::process::id());
    let common = "[rooms]\nanonymous = \"publish\"\n[websocket]\noutbound_high_water_bytes = 268435456\nheartbeat_interval_ms = 600000\n";
    let redis = |name: &str| {
        format!(
            "node_name = \"{name}\"\n{common}[broker]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\nprefix = \"{prefix}\"\n"
        )
    };
    let embedded = write(
        &dir,
        "embedded.toml",
        &format!("node_name = \"one\"\n{common}"),
    )?;
    let node_a = write(&dir, "a.toml", &redis("crossnode-a"))?;
    let node_b = write(&dir, "b.toml", &redis("crossnode-b"))?;
    let server = |config: &Path| {
        let taskset = if args.server_cpus.is_empty() {
            String::new()
        } else {
            format!("taskset -c {} ", args.server_cpus)
        };
        format!(
            "{taskset}{} --config {} --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --log-level warn",
            args.ringcast,
            config.display()
        )
    };
    let cases = [
        ("embedded", server(&embedded), None),
        ("redis-one-node", server(&node_b), None),
        ("redis-cross-node", server(&node_b), Some(server(&node_a))),
    ];
    let mut p50_p99 = Vec::new();
    for (label, spawn, publish_spawn) in cases {
        eprintln!("crossnode: {label}");
        let mut cli = vec![
            "fanout".to_string(),
            "--label".into(),
            label.into(),
            "--spawn".into(),
            spawn,
            "--subscribers".into(),
            args.subscribers.to_string(),
            "--publishers".into(),
            args.publishers.to_string(),
            "--rate".into(),
            args.rate.to_string(),
            "--payload".into(),
            args.payload.to_string(),
            "--duration-secs".into(),
            args.duration_secs.to_string(),
            "--warmup-secs".into(),
            args.warmup_secs.to_string(),
            "--client-threads".into(),
            args.client_threads.to_string(),
        ];
        if let Some(p) = publish_spawn {
            cli.push("--publish-spawn".into());
            cli.push(p);
        }
        if args.json {
            cli.push("--json".into());
        }
        let fan = FanoutCli::try_parse_from(cli)?.args;
        let report = fanout::measure(&fan)?;
        fanout::print_report(&fan, &report);
        if report.expected != report.received || report.duplicated != 0 {
            bail!("{label}: lost or duplicated messages");
        }
        p50_p99.push((
            label,
            report.hist.value_at_quantile(0.5),
            report.hist.value_at_quantile(0.99),
        ));
    }
    if let [(_, e50, e99), _, (_, x50, x99)] = p50_p99[..] {
        println!(
            "crossnode: the Redis hop adds {:.2} ms at p50 and {:.2} ms at p99 (cross-node vs one embedded node)",
            (x50 as f64 - e50 as f64) / 1000.0,
            (x99 as f64 - e99 as f64) / 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_redis(args: &Args, dir: &Path, port: u16) -> anyhow::Result<Proc> {
    let mut cmd = if args.server_cpus.is_empty() {
        Command::new(&args.redis_server)
    } else {
        let mut c = Command::new("taskset");
        c.args(["-c", &args.server_cpus, &args.redis_server]);
        c
    };
    let child = cmd
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", args.redis_server))?;
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut buf = [0u8; 16];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read(&mut buf).is_ok()
                && buf.starts_with(b"+PONG")
            {
                return Ok(proc);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("redis-server did not answer on port {port}")
}
