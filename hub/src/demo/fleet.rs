//! The demo's sidecars, inside the hub's process: each the sidecar
//! library's `Daemon` on a thread of its own with its own actix system
//! (awc, its WebSocket client, is `!Send`), from the same `sidecar.toml`
//! the `agentcom-sidecar` binary would read. So `demo` needs no other
//! binary, and the runners do not outlive the process: a runner is
//! started from its sidecar's thread with `PR_SET_PDEATHSIG`, so it is
//! killed when that thread ends.
//!
//! Each daemon runs until the fleet tells it to stop
//! (`Daemon::run_until`, a word on a channel of its own), then stops as on
//! SIGTERM: its runner stopped and reported, its socket closed. The demo
//! listens to SIGINT and SIGTERM itself ([`Signals`]) and stops the fleet.
//! This module must never return while one of its threads may still be
//! running a runner, except after [`STOP_WITHIN`] with an error.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agentcom_sidecar::config::SidecarConfig;
use agentcom_sidecar::daemon::Daemon;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;

/// How long the sidecars get to stop (a runner gets 3 s between SIGTERM
/// and SIGKILL, then its report is sent).
const STOP_WITHIN: Duration = Duration::from_secs(20);

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
    /// Dropped or sent: the daemon stops.
    stop: oneshot::Sender<()>,
    thread: JoinHandle<Result<(), String>>,
}

/// The running sidecars.
#[derive(Default)]
pub(super) struct Fleet {
    members: Vec<Member>,
}

impl Fleet {
    /// Start agent `name`'s sidecar from `config` on its own thread.
    pub(super) fn start(&mut self, name: &str, config: SidecarConfig) -> Result<(), String> {
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("sidecar-{name}"))
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    Daemon::new(config)?
                        .run_until(async move {
                            let _ = stopped.await;
                        })
                        .await
                })
            })
            .map_err(|e| format!("cannot start a thread for sidecar {name}: {e}"))?;
        self.members.push(Member {
            name: name.to_string(),
            stop,
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

    /// Stop every sidecar and wait until their threads ended.
    pub(super) async fn stop(self) -> Result<(), String> {
        let start = Instant::now();
        let mut running: Vec<(String, JoinHandle<Result<(), String>>)> = self
            .members
            .into_iter()
            .map(|m| {
                let _ = m.stop.send(());
                (m.name, m.thread)
            })
            .collect();
        let mut failures = Vec::new();
        while !running.is_empty() {
            let (done, still): (Vec<_>, Vec<_>) =
                running.into_iter().partition(|(_, t)| t.is_finished());
            running = still;
            for (name, thread) in done {
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(format!("sidecar {name}: {e}")),
                    Err(_) => failures.push(format!("sidecar {name} panicked")),
                }
            }
            if running.is_empty() {
                break;
            }
            let now = Instant::now();
            if now > start + STOP_WITHIN {
                let names: Vec<&str> = running.iter().map(|(n, _)| n.as_str()).collect();
                failures.push(format!(
                    "sidecars {} did not stop within {}s",
                    names.join(", "),
                    STOP_WITHIN.as_secs()
                ));
                break;
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
