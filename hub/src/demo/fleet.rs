//! The demo's sidecars, inside the hub's process: each the sidecar
//! library's `Daemon` on a thread of its own with its own actix system
//! (awc, its WebSocket client, is `!Send`), from the same `sidecar.toml`
//! the `agentcom-sidecar` binary would read. So `demo` needs no other
//! binary, and the runners do not outlive the process: a runner is
//! started from its sidecar's thread with `PR_SET_PDEATHSIG`, so it is
//! killed when that thread ends.
//!
//! A `Daemon` stops on SIGINT or SIGTERM (tokio delivers a signal to every
//! listener in the process, each runtime's included), exactly as the
//! binary does. So the demo listens to both from its start ([`Signals`],
//! before any sidecar runs: the signals never kill the process), and to
//! stop the fleet without one from a person, it sends SIGTERM to its own
//! process, again every second while a sidecar is still running (one that
//! had not started listening yet), until all have ended or the time is up.
//! This module must never stop a sidecar any other way, nor return while
//! one of its threads may still be running a runner, except after that
//! time with an error.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agentcom_sidecar::config::SidecarConfig;
use agentcom_sidecar::daemon::Daemon;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How long the sidecars get to stop (a runner gets 3 s between SIGTERM
/// and SIGKILL, then its report is sent).
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// How often a sidecar still running is sent SIGTERM again.
const NUDGE_EVERY: Duration = Duration::from_secs(1);

/// SIGINT and SIGTERM, listened to for the whole demo.
pub(super) struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Listen from now on (inside the demo's runtime). From here on
    /// neither signal kills the process.
    pub(super) fn listen() -> Result<Signals, String> {
        let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        Ok(Signals {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM; its name.
    pub(super) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

struct Member {
    name: String,
    thread: JoinHandle<Result<(), String>>,
}

/// The running sidecars.
#[derive(Default)]
pub(super) struct Fleet {
    members: Vec<Member>,
}

impl Fleet {
    /// Start agent `name`'s sidecar from `config` on its own thread. Only
    /// while [`Signals`] listens: stopping it must never kill the process.
    pub(super) fn start(&mut self, name: &str, config: SidecarConfig) -> Result<(), String> {
        let thread = std::thread::Builder::new()
            .name(format!("sidecar-{name}"))
            .spawn(move || {
                actix_rt::System::new().block_on(async move { Daemon::new(config)?.run().await })
            })
            .map_err(|e| format!("cannot start a thread for sidecar {name}: {e}"))?;
        self.members.push(Member {
            name: name.to_string(),
            thread,
        });
        Ok(())
    }

    /// A sidecar that has ended by itself, and why (none while all run).
    pub(super) fn ended(&mut self) -> Option<String> {
        let i = self.members.iter().position(|m| m.thread.is_finished())?;
        let m = self.members.remove(i);
        Some(match m.thread.join() {
            Ok(Ok(())) => format!("sidecar {} stopped", m.name),
            Ok(Err(e)) => format!("sidecar {} stopped: {e}", m.name),
            Err(_) => format!("sidecar {} panicked", m.name),
        })
    }

    /// Stop every sidecar and wait until their threads ended. After a
    /// person's signal they are stopping already: the first nudge waits.
    pub(super) async fn stop(self, signalled: bool) -> Result<(), String> {
        let start = Instant::now();
        let mut next_nudge = if signalled {
            start + NUDGE_EVERY
        } else {
            start
        };
        let mut running = self.members;
        let mut failures = Vec::new();
        while !running.is_empty() {
            let (done, still): (Vec<Member>, Vec<Member>) =
                running.into_iter().partition(|m| m.thread.is_finished());
            running = still;
            for m in done {
                match m.thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(format!("sidecar {}: {e}", m.name)),
                    Err(_) => failures.push(format!("sidecar {} panicked", m.name)),
                }
            }
            if running.is_empty() {
                break;
            }
            let now = Instant::now();
            if now > start + STOP_WITHIN {
                let names: Vec<&str> = running.iter().map(|m| m.name.as_str()).collect();
                failures.push(format!(
                    "sidecars {} did not stop within {}s",
                    names.join(", "),
                    STOP_WITHIN.as_secs()
                ));
                break;
            }
            if now >= next_nudge {
                let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGTERM);
                next_nudge = now + NUDGE_EVERY;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}
