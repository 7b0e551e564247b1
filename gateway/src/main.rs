//! `ringcast`: wires the configuration, the shards, the admin listener and signals together.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::admission::Admission;
use gateway::auth::Authenticator;
use gateway::config::{BrokerKind, Config, IoDriver, LogFormat};
use gateway::listener::Transport;
use gateway::mailbox::{Mailboxes, ShardMsg};
use gateway::namespaces::Namespaces;
use gateway::shard::{self, Global, Policy, ShardSetup};
use gateway::tls::Tls;
use gateway::{http, listener, runtime};

#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With `--features dhat-heap` (a measurement build, never shipped): every allocation is
/// recorded with its call stack, and a graceful exit writes `dhat-heap.json` (or the file named
/// by `DHAT_OUT_FILE`) with the live bytes of each call site at the heap's peak
/// (`benches/memory.sh` turns that into the per-connection breakdown).
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

/// What `ringcast --version` prints after the name: the version, the git commit it was built
/// from (gateway/build.rs; `unknown` outside a git checkout) and the I/O drivers compiled in.
const VERSION_STRING: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GATEWAY_GIT_COMMIT"),
    ", drivers: ",
    gateway::compiled_drivers!(),
    ")"
);

/// ringcast: a thread-per-core WebSocket gateway with rooms, recovery and encode-once fan-out.
///
/// Every configuration key can also be set as an environment variable: `RINGCAST_<KEY>` for a
/// top-level key, `RINGCAST_<SECTION>__<KEY>` for a key in a section (for example
/// `RINGCAST_WEBSOCKET__MAX_MESSAGE_BYTES=131072`). Precedence: flags, then environment, then
/// the file, then defaults. README.md lists every key.
#[derive(Debug, Parser)]
#[command(name = "ringcast", version = VERSION_STRING, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Audit this host against a tuning profile, or apply a profile's sysctls.
    Tune {
        #[command(subcommand)]
        action: TuneCommand,
    },
    /// Validate a configuration file (with the environment applied) and print the effective
    /// configuration; exits non-zero and names the bad key if it is invalid.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TuneCommand {
    /// Print a table of ok / warn / fail with the fix for each setting; exits 1 on a fail.
    Check {
        /// `low-latency`, `high-connections`, or a profile directory (tuning/profiles/<name>).
        #[arg(long, default_value = "low-latency")]
        profile: String,
        /// Where /proc and /sys are (tests use a fake tree).
        #[arg(long, default_value = "/", hide = true)]
        root: PathBuf,
    },
    /// Show the sysctls the profile changes, then write them (root) and save the profile to
    /// /etc/sysctl.d/90-ringcast.conf; every change is printed.
    Apply {
        /// `low-latency`, `high-connections`, or a profile directory.
        #[arg(long)]
        profile: String,
        /// Show the diff only.
        #[arg(long)]
        dry_run: bool,
        /// Where /proc and /etc are (tests use a fake tree).
        #[arg(long, default_value = "/", hide = true)]
        root: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE", env = "RINGCAST_CONFIG")]
    config: Option<PathBuf>,
    /// Public listener address (WebSocket); default 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Admin listener address (/healthz, /readyz, /metrics, /api); default 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Shard threads (0 = one per available core).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// I/O driver: auto (io_uring, falling back to epoll), io-uring, or epoll.
    #[arg(long, value_enum, value_name = "DRIVER")]
    io_driver: Option<IoDriver>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log line format: text (coloured only on a terminal) or json (one object per line).
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Serve the WebSocket echo endpoint GET /echo (conformance testing only).
    #[arg(long)]
    echo_endpoint: bool,
    /// Serve the raw-broadcast endpoint GET /raw/<room> (benchmarks only).
    #[arg(long)]
    raw_endpoint: bool,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// Pin by a tuning profile's core layout (`low-latency`, `high-connections`, or a directory).
    #[arg(long, value_name = "PROFILE")]
    cpu_profile: Option<String>,
}

fn load_config(args: &RunArgs, file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let mut config = Config::load(file, std::env::vars())?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.admin_listen {
        config.admin_listen = v;
    }
    if let Some(v) = args.shards {
        config.shards = v;
    }
    if let Some(v) = args.io_driver {
        config.io_driver = v;
    }
    if let Some(v) = &args.log_level {
        config.log_level = v.clone();
    }
    if let Some(v) = args.log_format {
        config.log_format = v;
    }
    if args.echo_endpoint {
        config.websocket.echo_endpoint = true;
    }
    if args.raw_endpoint {
        config.websocket.raw_endpoint = true;
    }
    if args.no_pin {
        config.pin_cores = false;
    }
    if let Some(p) = &args.cpu_profile {
        config.cpu_profile = p.clone();
    }
    config.validate()?;
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::builder()
        .file_name(std::env::var_os("DHAT_OUT_FILE").unwrap_or_else(|| "dhat-heap.json".into()))
        .build();
    gateway::contain::install_hook();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { file }) => {
            let config = load_config(&cli.run, Some(file))
                .with_context(|| format!("{} is not valid", file.display()))?;
            build_policy(&config).with_context(|| format!("{} is not valid", file.display()))?;
            println!("{} is valid; effective configuration:\n", file.display());
            println!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Some(Command::Tune { action }) => tune(action),
        None => {
            let config = load_config(&cli.run, cli.run.config.as_deref())?;
            serve(config)
        }
    }
}

/// `ringcast tune check|apply`.
fn tune(action: &TuneCommand) -> anyhow::Result<()> {
    use gateway::tune::{apply, audit, cores, Profile};
    match action {
        TuneCommand::Check { profile, root } => {
            let profile = Profile::load(profile)?;
            let layout = profile.settings.cores.layout(&cores::allowed_cores());
            let findings = audit::audit(root, &profile, &layout);
            println!("profile {}\n", profile.name);
            print!("{}", audit::render(&findings));
            if findings.iter().any(|f| f.status == audit::Status::Fail) {
                std::process::exit(1);
            }
            Ok(())
        }
        TuneCommand::Apply {
            profile,
            dry_run,
            root,
        } => {
            let profile = Profile::load(profile)?;
            let changes = apply::plan(root, &profile);
            print!("{}", apply::render(&changes));
            if *dry_run {
                println!("dry run: nothing changed");
                return Ok(());
            }
            if !apply::is_root() {
                anyhow::bail!(apply::ApplyError::NotRoot);
            }
            apply::apply(root, &profile, &changes, &mut |line| println!("{line}"))?;
            Ok(())
        }
    }
}

/// Where each shard (and the bridge) runs: the profile's layout, or shard *i* on core *i*.
fn core_plan(config: &Config) -> anyhow::Result<(usize, Vec<Option<usize>>, Vec<usize>)> {
    let cores = gateway::tune::cores::allowed_cores();
    if config.cpu_profile.is_empty() {
        // Shard i on the i-th core this process may run on (its affinity mask: a CPUAffinity=
        // or taskset is respected, never undone).
        let shards = config.shard_count();
        let pins = (0..shards)
            .map(|id| config.pin_cores.then(|| cores[id % cores.len().max(1)]))
            .collect();
        return Ok((shards, pins, Vec::new()));
    }
    let profile = gateway::tune::Profile::load(&config.cpu_profile)
        .with_context(|| format!("cpu_profile {}", config.cpu_profile))?;
    let layout = profile.settings.cores.layout(&cores);
    let shards = if config.shards > 0 {
        config.shards
    } else {
        layout.shards.len().max(1)
    };
    let pins = (0..shards)
        .map(|id| layout.shards.get(id % layout.shards.len().max(1)).copied())
        .collect();
    tracing::info!(
        profile = %profile.name,
        shards = %gateway::tune::cores::cpulist(&layout.shards),
        bridge = %gateway::tune::cores::cpulist(&layout.bridge),
        irq = %gateway::tune::cores::cpulist(&layout.irq),
        "pinning by the profile's core layout"
    );
    Ok((shards, pins, layout.bridge))
}

/// Everything the configuration names outside itself (key files, certificates, patterns),
/// loaded and checked: `check-config` runs this too, so a configuration it accepts starts.
fn build_policy(config: &Config) -> anyhow::Result<Policy> {
    if !config.cpu_profile.is_empty() {
        gateway::tune::Profile::load(&config.cpu_profile).context("cpu_profile")?;
    }
    let namespaces = Arc::new(Namespaces::from_config(config));
    let auth = Arc::new(
        Authenticator::new(&config.auth, namespaces.anonymous_allowed())
            .context("loading auth keys")?,
    );
    let tls = match config.tls.listen {
        Some(_) => Some(Tls::new(&config.tls).context("loading the TLS certificate and key")?),
        None => None,
    };
    Ok(Policy {
        auth,
        namespaces,
        admission: Arc::new(Admission::new(&config.limits)),
        tls,
        webhooks: gateway::pusher::webhooks::start(&config.pusher.apps)?,
    })
}

/// One broker handle per shard: embedded logs, or handles on the Redis bridge thread (which
/// pokes a shard through its mailbox when it has events for it).
#[allow(clippy::type_complexity)]
fn start_brokers(
    config: &Config,
    shards: usize,
    mailboxes: &Mailboxes,
    bridge_cores: Vec<usize>,
    announce: broker_bridge::redis::NodeAnnouncement,
) -> anyhow::Result<(
    Vec<Box<dyn broker_bridge::Broker + Send>>,
    Option<Arc<broker_bridge::redis::BridgeHealth>>,
)> {
    if config.broker.kind == BrokerKind::Embedded {
        let doc_dir = (!config.crdt.snapshot_dir.is_empty())
            .then(|| std::path::PathBuf::from(&config.crdt.snapshot_dir));
        if let Some(dir) = &doc_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("crdt.snapshot_dir {}: {e}", dir.display()))?;
        }
        let brokers = (0..shards)
            .map(|_| {
                Box::new(broker_bridge::embedded::EmbeddedBroker::with_doc_dir(
                    doc_dir.clone(),
                )) as Box<dyn broker_bridge::Broker + Send>
            })
            .collect();
        return Ok((brokers, None));
    }
    broker_bridge::redis::describe_metrics();
    let poke = mailboxes.clone();
    let notify = Arc::new(move |shard: usize| poke.send(shard, ShardMsg::BrokerReady));
    let pin = Box::new(move || {
        if !bridge_cores.is_empty() {
            if let Err(e) = monoio::utils::bind_to_cpu_set(bridge_cores.iter().copied()) {
                tracing::warn!(error = %e, "could not pin the bridge thread");
            }
        }
    });
    let (handles, health) = broker_bridge::redis::start(
        broker_bridge::redis::RedisSettings {
            max_queued_bytes: config.limits.shard_inbox_bytes,
            announce: Some(announce),
            ..config.broker.redis_settings()
        },
        shards,
        notify,
        pin,
    )
    .context("starting the Redis broker bridge")?;
    let brokers = handles
        .into_iter()
        .map(|h| Box::new(h) as Box<dyn broker_bridge::Broker + Send>)
        .collect();
    Ok((brokers, Some(health)))
}

/// What this node tells the other nodes of a Redis deployment about itself (the admin page's
/// node list): its name, version, shards, driver, admin listener and start time.
fn node_announcement(
    node: &str,
    shards: usize,
    driver: &str,
    admin_addr: std::net::SocketAddr,
) -> broker_bridge::redis::NodeAnnouncement {
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let info = serde_json::json!({
        "name": node,
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("GATEWAY_GIT_COMMIT"),
        "shards": shards,
        "driver": driver,
        "admin": admin_addr.to_string(),
        "started_unix_ms": started_unix_ms,
    });
    broker_bridge::redis::NodeAnnouncement {
        name: node.to_string(),
        info: info.to_string(),
    }
}

/// Installs the log subscriber: stderr, filtered by `log_level`, as text (ANSI colour only when
/// stderr is a terminal: a file, a pipe or journald gets plain lines) or as one JSON object per
/// line.
fn init_logging(config: &Config) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level).context("log_level")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config)?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    gateway::metrics::describe();

    let driver = runtime::resolve(config.io_driver)?;
    let (shards, pins, bridge_cores) = core_plan(&config)?;
    let policy = build_policy(&config)?;
    if config.auth.keys.is_empty() && !policy.namespaces.anonymous_allowed() {
        tracing::warn!("no auth keys and no namespace allows anonymous access: every /ws handshake will be refused with 401");
    }
    let tls = policy.tls.clone();
    let mut per_shard: Vec<Vec<(std::net::TcpListener, Transport)>> =
        (0..shards).map(|_| Vec::new()).collect();
    let mut public_addr = None;
    if !config.tls.disable_plain {
        let plain = listener::bind_reuseport(config.listen, shards)
            .with_context(|| format!("binding the public listener {}", config.listen))?;
        public_addr = Some(plain[0].local_addr()?);
        for (list, l) in per_shard.iter_mut().zip(plain) {
            list.push((l, Transport::Plain));
        }
    }
    let mut tls_addr = None;
    if let Some(addr) = config.tls.listen {
        let secure = listener::bind_reuseport(addr, shards)
            .with_context(|| format!("binding the TLS listener {addr}"))?;
        tls_addr = Some(secure[0].local_addr()?);
        for (list, l) in per_shard.iter_mut().zip(secure) {
            list.push((l, Transport::Tls));
        }
    }
    let admin_listener = std::net::TcpListener::bind(config.admin_listen)
        .with_context(|| format!("binding the admin listener {}", config.admin_listen))?;
    admin_listener.set_nonblocking(true)?;
    let admin_addr = admin_listener.local_addr()?;

    let node: Arc<str> = config.node_name().into();
    let config = Arc::new(config);
    let mailboxes = Mailboxes::new(shards, config.limits.shard_inbox_bytes);
    let announce = node_announcement(&node, shards, driver.name(), admin_addr);
    let (brokers, bridge) = start_brokers(&config, shards, &mailboxes, bridge_cores, announce)?;
    let global = Arc::new(Global::new(&config));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    for ((id, listeners), broker) in per_shard.into_iter().enumerate().zip(brokers) {
        let setup = ShardSetup {
            broker,
            id,
            listeners,
            policy: policy.clone(),
            mailboxes: mailboxes.clone(),
            config: config.clone(),
            node: node.clone(),
            driver,
            core: pins.get(id).copied().flatten(),
            global: global.clone(),
            started: started_tx.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("ringcast-shard-{id}"))
            .spawn(move || shard::serve::run(setup))
            .context("spawning a shard thread")?;
        threads.push(handle);
    }
    drop(started_tx);
    for _ in 0..shards {
        match started_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => anyhow::bail!("a shard failed to start: {reason}"),
            Err(_) => anyhow::bail!("a shard failed to start"),
        }
    }

    let admin = http::admin::Admin {
        config: config.clone(),
        namespaces: policy.namespaces.clone(),
        node: node.clone(),
        driver: driver.name(),
        started: std::time::Instant::now(),
        mailboxes: mailboxes.clone(),
        global: global.clone(),
        prometheus,
        bridge,
    };
    std::thread::Builder::new()
        .name("ringcast-admin".into())
        .spawn(move || {
            if let Err(e) = http::admin::run(admin, admin_listener) {
                tracing::error!(error = %e, "admin listener stopped");
            }
        })
        .context("spawning the admin thread")?;

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    {
        let global = global.clone();
        let mailboxes = mailboxes.clone();
        std::thread::Builder::new()
            .name("ringcast-signals".into())
            .spawn(move || {
                let mut seen = 0;
                for signal in signals.forever() {
                    if signal == signal_hook::consts::SIGHUP {
                        // Certificate rotation: new handshakes get the new chain; live
                        // connections keep theirs. A bad file keeps the old certificate.
                        match &tls {
                            Some(tls) => match tls.reload() {
                                Ok(()) => tracing::info!("TLS certificate reloaded"),
                                Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the current certificate"),
                            },
                            None => tracing::info!("SIGHUP: nothing to reload (no TLS listener)"),
                        }
                        continue;
                    }
                    seen += 1;
                    if seen == 1 {
                        tracing::info!(
                            signal,
                            "shutting down gracefully (signal again to stop now)"
                        );
                        shard::shutdown_all(&global, &mailboxes);
                    } else {
                        tracing::warn!(signal, "second signal: stopping now");
                        std::process::exit(1);
                    }
                }
            })
            .context("spawning the signal thread")?;
    }

    global
        .ready
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let show = |a: Option<std::net::SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    let (public_addr, tls_addr) = (show(public_addr), show(tls_addr));
    tracing::info!(%public_addr, %tls_addr, %admin_addr, shards, driver = driver.name(), node = %node, "ringcast started");
    // Tests and scripts read this line to find the ports.
    println!(
        "ringcast listening public={public_addr} tls={tls_addr} admin={admin_addr} shards={shards} driver={}",
        driver.name()
    );

    let mut failed = false;
    for (id, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(shard = id, error = %e, "shard failed");
                failed = true;
            }
            Err(_) => failed = true,
        }
    }
    if failed {
        anyhow::bail!("a shard failed");
    }
    tracing::info!("ringcast stopped");
    Ok(())
}
