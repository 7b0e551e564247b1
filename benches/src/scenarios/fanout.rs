//! `fanout`: S subscribers over R rooms, P publishers at an offered rate.
//!
//! Each message carries the time it was *scheduled* to be sent; latency is receive time minus that
//! schedule, so a stalled publisher or server cannot hide its stall (coordinated omission is
//! corrected). Every delivered message is recorded in an HdrHistogram. Offsets check loss,
//! duplication and order per subscriber.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

use crate::client::{connect, find_u64, next_text, send};
use crate::procstat;

/// Arguments of the fanout scenario.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server to load (ignored with --spawn).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Start this `ringcast` binary on a free loopback port and measure its CPU and RSS.
    #[arg(long, value_name = "BINARY")]
    spawn: Option<PathBuf>,
    /// Shards of the spawned server.
    #[arg(long, default_value_t = 2)]
    server_shards: usize,
    /// I/O driver of the spawned server (auto, io-uring, epoll).
    #[arg(long, default_value = "auto")]
    server_driver: String,
    /// Read CPU and RSS of this server process (when not spawning).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Rooms (subscriber i joins room i mod R).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Offered publish rate, messages per second over all publishers.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Padding bytes in each message's data.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,
}

static BASE: OnceLock<Instant> = OnceLock::new();

fn ns_since_base(t: Instant) -> u64 {
    let base = *BASE.get_or_init(Instant::now);
    t.saturating_duration_since(base).as_nanos() as u64
}

struct Spawned {
    child: Child,
    addr: SocketAddr,
    driver: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(binary: &PathBuf, shards: usize, driver: &str) -> anyhow::Result<Spawned> {
    let mut child = Command::new(binary)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--no-pin",
            "--log-level",
            "warn",
        ])
        .args(["--shards", &shards.to_string(), "--io-driver", driver])
        .env("RINGCAST_WEBSOCKET__OUTBOUND_HIGH_WATER_BYTES", "67108864")
        .env("RINGCAST_WEBSOCKET__HEARTBEAT_INTERVAL_MS", "600000")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    let addr = field("public=").context("no listening line")?.parse()?;
    let driver = field("driver=").unwrap_or_default();
    Ok(Spawned {
        child,
        addr,
        driver,
    })
}

#[derive(Default)]
struct SubResult {
    received: u64,
    duplicated: u64,
    gaps: u64,
    hist: Option<Histogram<u64>>,
}

/// Runs the scenario and prints the report.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.rooms == 0 || args.publishers == 0 || args.rate <= 0.0 {
        bail!("rooms, publishers and rate must be above 0");
    }
    let spawned = match &args.spawn {
        Some(bin) => Some(spawn_server(bin, args.server_shards, &args.server_driver)?),
        None => None,
    };
    let addr = spawned.as_ref().map_or(args.addr, |s| s.addr);
    let server_pid = spawned.as_ref().map(|s| s.child.id()).or(args.server_pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let _ = ns_since_base(Instant::now());
    let report = rt.block_on(drive(&args, addr, server_pid))?;
    let driver = spawned.as_ref().map_or("external", |s| s.driver.as_str());
    print_report(&args, &report, driver);
    Ok(())
}

struct Report {
    published: u64,
    expected: u64,
    received: u64,
    duplicated: u64,
    gaps: u64,
    hist: Histogram<u64>,
    measured_secs: f64,
    cpu_percent: Option<f64>,
    client_cpu_percent: Option<f64>,
    rss_bytes: Option<u64>,
}

async fn drive(args: &Args, addr: SocketAddr, server_pid: Option<u32>) -> anyhow::Result<Report> {
    let rooms: Arc<Vec<String>> =
        Arc::new((0..args.rooms).map(|r| format!("bench.room{r}")).collect());
    // Connect and subscribe every subscriber (in waves, to stay under the accept backlog).
    let mut subs = Vec::with_capacity(args.subscribers);
    for wave in (0..args.subscribers).collect::<Vec<_>>().chunks(200) {
        let mut joins = Vec::new();
        for &i in wave {
            let room = rooms[i % rooms.len()].clone();
            joins.push(tokio::spawn(async move {
                let mut ws = connect(addr, "/ws").await?;
                send(
                    &mut ws,
                    format!(r#"{{"op":"subscribe","id":1,"room":"{room}"}}"#),
                )
                .await?;
                let ev = next_text(&mut ws).await?;
                if !ev.starts_with(br#"{"ev":"subscribed""#) {
                    bail!("subscribe failed: {}", String::from_utf8_lossy(&ev));
                }
                anyhow::Ok(ws)
            }));
        }
        for j in joins {
            subs.push(j.await??);
        }
    }
    let mut pubs = Vec::with_capacity(args.publishers);
    for _ in 0..args.publishers {
        pubs.push(connect(addr, "/ws").await?);
    }

    let start = Instant::now() + Duration::from_millis(300);
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let end = measure_from + Duration::from_secs(args.duration_secs);
    let measure_from_ns = ns_since_base(measure_from);
    let published_per_room: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.rooms).map(|_| AtomicU64::new(0)).collect());

    // Subscribers: read until told to stop; record latency of messages scheduled after warm-up.
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut sub_tasks = Vec::with_capacity(subs.len());
    for mut ws in subs {
        let stop = stop.clone();
        sub_tasks.push(tokio::spawn(async move {
            let mut r = SubResult {
                hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok(),
                ..SubResult::default()
            };
            let mut last_offset = 0u64;
            loop {
                let frame = tokio::select! {
                    _ = stop.notified() => break,
                    f = next_text(&mut ws) => match f { Ok(f) => f, Err(_) => break },
                };
                let now = ns_since_base(Instant::now());
                let (Some(offset), Some(t)) = (
                    find_u64(&frame, b"\"offset\":"),
                    find_u64(&frame, b"\"t\":"),
                ) else {
                    continue;
                };
                r.received += 1;
                if offset <= last_offset {
                    r.duplicated += 1;
                } else if offset > last_offset + 1 {
                    r.gaps += offset - last_offset - 1;
                }
                last_offset = last_offset.max(offset);
                if t >= measure_from_ns {
                    if let Some(h) = r.hist.as_mut() {
                        let _ = h.record(now.saturating_sub(t).max(1000) / 1000);
                    }
                }
            }
            r
        }));
    }

    // Publishers: each sends on its own schedule; a late send keeps its scheduled time.
    let interval = Duration::from_secs_f64(args.publishers as f64 / args.rate);
    let pad = "x".repeat(args.payload);
    let mut pub_tasks = Vec::new();
    for (p, mut ws) in pubs.into_iter().enumerate() {
        let rooms = rooms.clone();
        let counts = published_per_room.clone();
        let pad = pad.clone();
        let publishers = args.publishers;
        pub_tasks.push(tokio::spawn(async move {
            let mut k: u64 = 0;
            loop {
                let scheduled = start + interval * k as u32 + interval.mul_f64(p as f64 / publishers as f64);
                if scheduled >= end {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                let r = (k as usize * publishers + p) % rooms.len();
                let t = ns_since_base(scheduled);
                let op = format!(
                    r#"{{"op":"publish","room":"{}","data":{{"t":{t},"p":{p},"k":{k},"pad":"{pad}"}}}}"#,
                    rooms[r]
                );
                if send(&mut ws, op).await.is_err() {
                    break;
                }
                counts[r].fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            // Keep the connection until the end so nothing is cut short.
            ws
        }));
    }
    let cpu_start = server_pid.and_then(procstat::cpu_seconds);
    let client_cpu_start = procstat::cpu_seconds(std::process::id());
    let wall_start = Instant::now();
    let mut pub_conns = Vec::new();
    for t in pub_tasks {
        pub_conns.push(t.await?);
    }
    let cpu_end = server_pid.and_then(procstat::cpu_seconds);
    let client_cpu_end = procstat::cpu_seconds(std::process::id());
    let wall = wall_start.elapsed().as_secs_f64();
    let rss_bytes = server_pid.and_then(procstat::rss_bytes);
    // Let in-flight messages arrive, then stop the readers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.notify_waiters();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut received, mut duplicated, mut gaps) = (0, 0, 0);
    for t in sub_tasks {
        let r = t.await?;
        received += r.received;
        duplicated += r.duplicated;
        gaps += r.gaps;
        if let Some(h) = r.hist {
            hist.add(h)?;
        }
    }
    drop(pub_conns);
    let subs_per_room = |r: usize| {
        (0..args.subscribers)
            .filter(|i| i % args.rooms == r)
            .count() as u64
    };
    let published: u64 = published_per_room
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    let expected = published_per_room
        .iter()
        .enumerate()
        .map(|(r, c)| c.load(Ordering::Relaxed) * subs_per_room(r))
        .sum();
    Ok(Report {
        published,
        expected,
        received,
        duplicated,
        gaps,
        hist,
        measured_secs: args.duration_secs as f64,
        cpu_percent: cpu_start.zip(cpu_end).map(|(a, b)| (b - a) / wall * 100.0),
        client_cpu_percent: client_cpu_start
            .zip(client_cpu_end)
            .map(|(a, b)| (b - a) / wall * 100.0),
        rss_bytes,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn print_report(args: &Args, r: &Report, driver: &str) {
    let h = &r.hist;
    let lost = r.expected.saturating_sub(r.received);
    let measured = h.len();
    println!(
        "fanout: {} subscribers, {} rooms, {} publishers, offered {} msg/s, {} B padding, {} s measured after {} s warm-up; server: {} shards, driver {}",
        args.subscribers, args.rooms, args.publishers, args.rate, args.payload, args.duration_secs, args.warmup_secs, args.server_shards, driver
    );
    println!(
        "published {}  delivered {} of {} ({:.0} deliveries/s in the measured window)  lost {}  duplicated {}  gaps {}",
        r.published,
        r.received,
        r.expected,
        measured as f64 / r.measured_secs,
        lost,
        r.duplicated,
        r.gaps
    );
    println!(
        "latency, scheduled send -> receive: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    if let Some(cpu) = r.cpu_percent {
        println!(
            "server: cpu {:.0}% of one core, rss {:.1} MiB; load client: cpu {:.0}% of one core ({} threads)",
            cpu,
            r.rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            r.client_cpu_percent.unwrap_or(0.0),
            args.client_threads
        );
    }
    if args.json {
        let j = serde_json::json!({
            "scenario": "fanout", "subscribers": args.subscribers, "rooms": args.rooms,
            "publishers": args.publishers, "rate": args.rate, "payload": args.payload,
            "duration_secs": args.duration_secs, "driver": driver, "published": r.published,
            "expected": r.expected, "received": r.received, "lost": lost, "duplicated": r.duplicated,
            "gaps": r.gaps, "deliveries_per_sec": measured as f64 / r.measured_secs,
            "p50_us": h.value_at_quantile(0.5), "p90_us": h.value_at_quantile(0.9),
            "p99_us": h.value_at_quantile(0.99), "p999_us": h.value_at_quantile(0.999), "max_us": h.max(),
            "server_cpu_percent": r.cpu_percent, "server_rss_bytes": r.rss_bytes,
            "client_cpu_percent": r.client_cpu_percent, "client_threads": args.client_threads,
        });
        println!("{j}");
    }
}
