//! `demo-feed`: price ticks for the demo trading dashboard (`clients/js/demo/`), published
//! through the Rust client SDK so a gateway restart is ridden out (it reconnects and the offline
//! queue sends what waited).
//!
//! Each tick is `{"sym", "bid", "ask", "seq", "t"}`: `t` is the publish time in Unix ms (the page
//! measures publish→render latency from it; same host, same clock), `seq` counts the symbol's
//! ticks from 1 so the page can show a gap if one ever happened.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringcast_client::{Backoff, Client, ClientConfig};

/// `demo-feed` options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The gateway's public `host:port`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Ticks per second over all symbols.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Symbols (each is published to `prices.<SYMBOL>`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "BTC-USD,ETH-USD,SOL-USD,EUR-USD"
    )]
    pub symbols: Vec<String>,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    pub duration_secs: u64,
    /// A JWT for the feed's connection (anonymous otherwise).
    #[arg(long, env = "RINGCAST_DEMO_TOKEN")]
    pub token: Option<String>,
}

/// Runs the feed.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0.0 && !args.symbols.is_empty(),
        "rate and symbols are needed"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(feed(args))
}

async fn feed(args: Args) -> anyhow::Result<()> {
    let mut config = ClientConfig::new(args.addr.clone());
    config.backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(10),
    };
    if let Some(t) = args.token.clone() {
        config.token = Some(std::sync::Arc::new(move || {
            let t = t.clone();
            Box::pin(async move { Some(t) })
        }));
    }
    let client = Client::connect(config);
    anyhow::ensure!(
        client.wait_open(Duration::from_secs(10)).await,
        "could not connect to {}",
        args.addr
    );
    // Starting prices, then a random walk with a spread of ~2 bp.
    let mut mids: Vec<f64> = args
        .symbols
        .iter()
        .map(|s| match s.as_str() {
            "BTC-USD" => 64_000.0,
            "ETH-USD" => 3_200.0,
            "SOL-USD" => 150.0,
            "EUR-USD" => 1.08,
            _ => 100.0,
        })
        .collect();
    let mut seqs = vec![0u64; args.symbols.len()];
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let mut next = tokio::time::Instant::now();
    let mut sent = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        if args.duration_secs > 0 && start.elapsed() >= Duration::from_secs(args.duration_secs) {
            break;
        }
        next += interval;
        tokio::time::sleep_until(next).await;
        let i = (sent % args.symbols.len() as u64) as usize;
        let step = (fastrand::f64() - 0.5) * 0.002;
        mids[i] *= 1.0 + step;
        seqs[i] += 1;
        let spread = mids[i] * 0.0001;
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let tick = serde_json::json!({
            "sym": args.symbols[i],
            "bid": round(mids[i] - spread),
            "ask": round(mids[i] + spread),
            "seq": seqs[i],
            "t": t,
        });
        let room = format!("prices.{}", args.symbols[i]);
        // Not awaited one by one: the SDK keeps order per connection and queues while offline.
        let c = client.clone();
        while inflight.try_join_next().is_some() {}
        inflight.spawn(async move {
            if let Err(e) = c.publish(&room, &tick).await {
                eprintln!("demo-feed: {room}: {e}");
            }
        });
        sent += 1;
        if sent.is_multiple_of(1000) {
            eprintln!("demo-feed: {sent} ticks");
        }
    }
    // Every tick answered (acknowledged or failed) before the connection closes.
    while inflight.join_next().await.is_some() {}
    client.close();
    Ok(())
}

fn round(v: f64) -> f64 {
    let scale = if v < 10.0 { 100_000.0 } else { 100.0 };
    (v * scale).round() / scale
}
