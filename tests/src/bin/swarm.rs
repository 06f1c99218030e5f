//! `agentcom-swarm`: thousands of fake agents against one hub, to measure
//! what a connected agent costs the hub (issue 14: 20,000 agents).
//!
//! Two modes of one binary:
//!
//! - `agentcom-swarm --scale 20000 --procs 4` (the orchestrator,
//!   [`orchestrate`]): starts a real release hub with room for that many
//!   connections, creates the agents over HTTP, splits them over `--procs`
//!   swarm processes (each its own 127.0.0.x source address), waits until
//!   the hub has them all idle, holds them connected through several
//!   heartbeat intervals, submits tasks and waits for every one to
//!   complete, measuring the hub's RSS from /proc at each step; prints a
//!   Markdown table for docs/benchmarks.md.
//! - `agentcom-swarm agents --hub ws://… --agents FILE --source 127.0.0.2`
//!   (one swarm process, [`agents`]): connects the agents listed in FILE
//!   (`id token [capabilities]` a line; `-` reads stdin) from that source address, says
//!   hello, sends a heartbeat every `heartbeat_interval_s` of the welcome,
//!   accepts and completes every assignment at once, answers pings
//!   (tungstenite does), and prints its counts as one JSON line every
//!   `--report-every` seconds and at exit (SIGTERM, SIGINT or `--max-run-s`).
//!
//! It measures the hub and must stay small itself: one thread per swarm
//! process, a few KiB per agent. It never talks to anything but the hub's
//! address on this machine, and every run is bounded in time.

#[path = "swarm/agents.rs"]
mod agents;
#[path = "swarm/orchestrate.rs"]
mod orchestrate;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "agentcom-swarm",
    about = "Thousands of fake agents against one hub: measure what a connected agent costs it",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: orchestrate::Args,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One swarm process: connect the agents of a file to a hub.
    Agents(agents::Args),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Agents(args)) => agents::run(args),
        None => orchestrate::run(cli.run),
    }
}
