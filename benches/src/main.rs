//! `ringcast-bench`: the load harness. Every performance figure in `docs/benchmarks.md` comes
//! from a run of this binary, with the command that produced it.

mod client;
mod procstat;
mod pusher;
mod report;
mod scenarios;
mod tls;

use clap::{Parser, Subcommand};

/// ringcast's load harness.
#[derive(Debug, Parser)]
#[command(name = "ringcast-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// S subscribers over R rooms, P publishers at an offered rate; latency of every delivered
    /// message from its *scheduled* send time (coordinated omission corrected).
    Fanout(scenarios::fanout::Args),
    /// The ceiling: a minimal raw-broadcast server with no gateway in it (write, writev or
    /// io_uring), to be loaded by `fanout --mode raw --spawn "ringcast-bench ceiling-server"`.
    CeilingServer(scenarios::ceiling::Args),
    /// Publisher on node A, subscribers on node B, both on one Redis (started here): the latency
    /// the cross-node hop adds, beside one embedded node and one Redis node, in one run.
    Crossnode(scenarios::crossnode::Args),
    /// Publishes realistic price ticks (a random walk per symbol) to `prices.<SYMBOL>` rooms at a
    /// chosen rate, through the Rust client SDK: the feed of the demo dashboard.
    DemoFeed(scenarios::demo_feed::Args),
    /// N connections opening at a rate: handshake latency percentiles and failures.
    Storm(scenarios::storm::Args),
    /// Steady load with churn (clean closes, vanishing and slow connections) for a bounded
    /// time, sampling the server's RSS and open descriptors: both must return to their level
    /// before the churn, and the steady subscribers must lose nothing.
    Soak(scenarios::soak::Args),
    /// N idle connections over several client processes: server RSS per connection.
    Idle(scenarios::idle::Args),
    /// One idle-client process (started by `idle`).
    #[command(hide = true)]
    IdleClient(scenarios::idle::ClientArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Fanout(args) => scenarios::fanout::run(args),
        Scenario::CeilingServer(args) => scenarios::ceiling::run(args),
        Scenario::Crossnode(args) => scenarios::crossnode::run(args),
        Scenario::DemoFeed(args) => scenarios::demo_feed::run(args),
        Scenario::Storm(args) => scenarios::storm::run(args),
        Scenario::Idle(args) => scenarios::idle::run(args),
        Scenario::Soak(args) => scenarios::soak::run(args),
        Scenario::IdleClient(args) => scenarios::idle::run_client(args),
    }
}
