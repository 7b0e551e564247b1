//! `soak`: a bounded run at steady load with churn. Steady subscribers and a publisher keep a
//! set of rooms busy for the whole run while short-lived connections come and go: they
//! subscribe to a few rooms and then close cleanly, vanish without a close, or stop reading
//! (slow consumers the server must shed). The server's RSS and open file descriptors are
//! sampled every second. The verdict: after the churn stops, descriptors are back to their
//! count before it and RSS is back within a tolerance of its level before it, and the steady
//! subscribers lost and duplicated nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fastwebsockets::OpCode;
use serde_json::json;

use super::fanout::spawn_server;
use crate::client::{connect, find_u64, send};
use crate::procstat;

/// Arguments of the soak scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server to load (ignored with --spawn; then --server-pid is required).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Start this server command (see `fanout --spawn`).
    #[arg(long, value_name = "COMMAND")]
    spawn: Option<String>,
    /// The server's process id, for sampling (set by --spawn).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Length of the churn phase.
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    /// Steady load alone before the churn (the baseline is sampled at its end) and after it
    /// (the final sample).
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Rooms of the steady load (`soak.r0` …).
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Steady subscribers (one room each, round robin), checked for loss and duplicates.
    #[arg(long, default_value_t = 200)]
    subscribers: usize,
    /// Messages per second over all rooms, from one publisher.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Short-lived connections opened per second during the churn.
    #[arg(long, default_value_t = 40.0)]
    churn: f64,
    /// Percent of churn connections that never read (slow consumers).
    #[arg(long, default_value_t = 20)]
    slow_percent: u64,
    /// Percent of churn connections that vanish without a close.
    #[arg(long, default_value_t = 20)]
    abrupt_percent: u64,
    /// RSS may end this much above its level before the churn.
    #[arg(long, default_value_t = 16.0)]
    rss_tolerance_mib: f64,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,
}

/// Counters shared by the load tasks.
#[derive(Default)]
struct Counters {
    steady_received: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    steady_ended: AtomicU64,
    churn_opened: AtomicU64,
    churn_failed: AtomicU64,
    churn_slow: AtomicU64,
    churn_abrupt: AtomicU64,
    published: AtomicU64,
}

/// One sample of the server.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    rss: u64,
    fds: u64,
}

fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

fn sample(pid: u32, start: Instant) -> anyhow::Result<Sample> {
    Ok(Sample {
        secs: start.elapsed().as_secs_f64(),
        rss: procstat::rss_bytes(pid).context("server RSS (has it exited?)")?,
        fds: fd_count(pid).context("server fds (has it exited?)")?,
    })
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// A steady subscriber: every message of its room, in order, until `stop`.
async fn steady(addr: SocketAddr, room: String, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let run = async {
        let mut ws = connect(addr, "/ws", true).await?;
        send(
            &mut ws,
            json!({"op": "subscribe", "room": room}).to_string(),
        )
        .await?;
        let mut next: Option<u64> = None;
        while !stop.load(Ordering::Relaxed) {
            let frame =
                match tokio::time::timeout(Duration::from_millis(200), ws.read_frame()).await {
                    Err(_) => continue,
                    Ok(f) => f?,
                };
            if frame.opcode == OpCode::Close {
                bail!("closed by the server");
            }
            if frame.opcode != OpCode::Text {
                continue;
            }
            let p = &frame.payload;
            let Some(offset) = find_u64(p, b"\"offset\":") else {
                continue;
            };
            if p.starts_with(br#"{"ev":"subscribed""#) {
                next = Some(offset + 1);
            } else if p.starts_with(br#"{"ev":"msg""#) {
                c.steady_received.fetch_add(1, Ordering::Relaxed);
                match next {
                    Some(n) if offset == n => {}
                    Some(n) if offset < n => {
                        c.duplicated.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Some(n) => {
                        c.lost.fetch_add(offset - n, Ordering::Relaxed);
                    }
                    None => {}
                }
                next = Some(offset + 1);
            }
        }
        anyhow::Ok(())
    };
    if let Err(e) = run.await {
        eprintln!("steady subscriber of {room} ended: {e:#}");
        c.steady_ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// The publisher: `rate` messages per second over the rooms, round robin.
async fn publisher(addr: SocketAddr, args: Args, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let run = async {
        let mut ws = connect(addr, "/ws", true).await?;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let room = format!("soak.r{}", n as usize % args.rooms);
            send(
                &mut ws,
                json!({"op": "publish", "room": room, "data": {"n": n, "pad": "p".repeat(100)}})
                    .to_string(),
            )
            .await?;
            n += 1;
            c.published.fetch_add(1, Ordering::Relaxed);
        }
        anyhow::Ok(())
    };
    if let Err(e) = run.await {
        eprintln!("publisher ended: {e:#}");
    }
}

/// One short-lived connection: subscribes to 1-3 rooms, then behaves as `kind` for `life`.
async fn churn_conn(
    addr: SocketAddr,
    rooms: usize,
    seed: u64,
    slow: u64,
    abrupt: u64,
    c: Arc<Counters>,
) {
    let mut rng = Rng(seed | 1);
    let kind = rng.below(100);
    let life = Duration::from_millis(1000 + rng.below(4000));
    let run = async {
        let mut ws = connect(addr, "/ws", true).await?;
        c.churn_opened.fetch_add(1, Ordering::Relaxed);
        for _ in 0..1 + rng.below(3) {
            let room = format!("soak.r{}", rng.below(rooms as u64));
            send(
                &mut ws,
                json!({"op": "subscribe", "room": room}).to_string(),
            )
            .await?;
        }
        if kind < slow {
            // Never reads: the server's queue for it fills until it is shed, or it goes away.
            c.churn_slow.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(life).await;
            return anyhow::Ok(());
        }
        let deadline = tokio::time::Instant::now() + life;
        while tokio::time::timeout_at(deadline, ws.read_frame())
            .await
            .is_ok()
        {}
        if kind < slow + abrupt {
            c.churn_abrupt.fetch_add(1, Ordering::Relaxed);
            return anyhow::Ok(()); // dropped without a close
        }
        let _ = ws
            .write_frame(fastwebsockets::Frame::close(1000, b""))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(f) = ws.read_frame().await {
                if f.opcode == OpCode::Close {
                    break;
                }
            }
        })
        .await;
        anyhow::Ok(())
    };
    if run.await.is_err() {
        c.churn_failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the scenario.
pub fn run(args: Args) -> anyhow::Result<()> {
    let spawned = args.spawn.as_deref().map(spawn_server).transpose()?;
    let (addr, pid) = match &spawned {
        Some(s) => (s.addr, s.child.id()),
        None => (
            args.addr,
            args.server_pid
                .context("--server-pid is needed to sample a server not started with --spawn")?,
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let c = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut samples = Vec::new();
    eprintln!(
        "soak: {} steady subscribers over {} rooms, {} msg/s, churn {} conn/s ({}% slow, {}% abrupt) for {} s",
        args.subscribers, args.rooms, args.rate, args.churn, args.slow_percent, args.abrupt_percent, args.duration_secs
    );
    let (baseline, fin) = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..args.subscribers {
            tasks.push(tokio::spawn(steady(
                addr,
                format!("soak.r{}", i % args.rooms),
                stop.clone(),
                c.clone(),
            )));
        }
        tasks.push(tokio::spawn(publisher(
            addr,
            args.clone(),
            stop.clone(),
            c.clone(),
        )));
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        let baseline = sample(pid, start)?;
        samples.push(baseline);
        eprintln!(
            "baseline (steady load, no churn): rss {:.1} MiB, fds {}",
            baseline.rss as f64 / 1048576.0,
            baseline.fds
        );
        // The churn.
        let churn_end = Instant::now() + Duration::from_secs(args.duration_secs);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.churn));
        let mut next_sample = Instant::now() + Duration::from_secs(1);
        let mut next_report = Instant::now() + Duration::from_secs(30);
        let mut churners = tokio::task::JoinSet::new();
        let mut seed: u64 = 0x5eed;
        while Instant::now() < churn_end {
            tick.tick().await;
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            churners.spawn(churn_conn(
                addr,
                args.rooms,
                seed,
                args.slow_percent,
                args.abrupt_percent,
                c.clone(),
            ));
            while churners.try_join_next().is_some() {}
            if Instant::now() >= next_sample {
                next_sample += Duration::from_secs(1);
                samples.push(sample(pid, start)?);
            }
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(30);
                let s = samples.last().copied().unwrap_or(baseline);
                eprintln!(
                    "{:>5.0} s: rss {:.1} MiB, fds {}, churn opened {}, steady received {}",
                    s.secs,
                    s.rss as f64 / 1048576.0,
                    s.fds,
                    c.churn_opened.load(Ordering::Relaxed),
                    c.steady_received.load(Ordering::Relaxed)
                );
            }
        }
        // Churn over: let its connections end, then steady load alone again.
        while churners.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        let fin = sample(pid, start)?;
        samples.push(fin);
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        anyhow::Ok((baseline, fin))
    })?;
    let peak_rss = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let tolerance = (args.rss_tolerance_mib * 1048576.0) as u64;
    let fds_back = fin.fds <= baseline.fds;
    let rss_back = fin.rss <= baseline.rss + tolerance;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let lost = get(&c.lost);
    let duplicated = get(&c.duplicated);
    let ended = get(&c.steady_ended);
    let passed = fds_back && rss_back && lost == 0 && duplicated == 0 && ended == 0;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "soak: {} s of churn: {} connections opened ({} failed to open, {} slow, {} abrupt); steady: {} published, {} received, {} lost, {} duplicated, {} ended early",
        args.duration_secs,
        get(&c.churn_opened),
        get(&c.churn_failed),
        get(&c.churn_slow),
        get(&c.churn_abrupt),
        get(&c.published),
        get(&c.steady_received),
        lost,
        duplicated,
        ended
    );
    println!(
        "server rss: before churn {:.1} MiB, peak {:.1} MiB, after {:.1} MiB (tolerance {:.0} MiB); fds: before {}, peak {}, after {}",
        mib(baseline.rss),
        mib(peak_rss),
        mib(fin.rss),
        args.rss_tolerance_mib,
        baseline.fds,
        peak_fds,
        fin.fds
    );
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": "soak",
                "duration_secs": args.duration_secs,
                "subscribers": args.subscribers,
                "rooms": args.rooms,
                "rate": args.rate,
                "churn_per_sec": args.churn,
                "churn_opened": get(&c.churn_opened),
                "churn_failed": get(&c.churn_failed),
                "churn_slow": get(&c.churn_slow),
                "churn_abrupt": get(&c.churn_abrupt),
                "published": get(&c.published),
                "steady_received": get(&c.steady_received),
                "lost": lost,
                "duplicated": duplicated,
                "steady_ended": ended,
                "rss_before": baseline.rss,
                "rss_peak": peak_rss,
                "rss_after": fin.rss,
                "fds_before": baseline.fds,
                "fds_peak": peak_fds,
                "fds_after": fin.fds,
                "rss_tolerance_mib": args.rss_tolerance_mib,
                "passed": passed,
                "samples": samples.iter().map(|s| [s.secs, s.rss as f64, s.fds as f64]).collect::<Vec<_>>(),
            })
        );
    }
    if !passed {
        bail!("soak FAILED: fds or RSS not back to their level before the churn, or steady subscribers lost, duplicated or ended");
    }
    println!("soak: passed");
    Ok(())
}
