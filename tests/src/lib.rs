//! Harness for the end-to-end tests: start the real `agentcom-hub` and
//! `agentcom-sidecar` binaries in temporary directories, talk to them over
//! real HTTP and WebSocket, kill them with real signals.
//!
//! - [`procs`]: building and locating the binaries, free ports, processes.
//! - [`hub`]: a hub process and an HTTP client for its API.
//! - [`pg`]: the store backend of the run; a PostgreSQL database per hub.
//! - [`sidecar`]: a sidecar process with a runner script.
//! - [`project`]: a real git project (bare remote, clones, check, runner)
//!   for the merge pipeline.
//! - [`raw`]: a hand-driven WebSocket "sidecar" for protocol tests.
//! - [`fakehub`]: a scripted WebSocket "hub" a real sidecar connects to.
//! - [`sse`]: a client for the hub's Server-Sent Events.
//! - [`wire`]: raw HTTP over a socket (half-sent requests, exact headers).
//! - [`browser`]: headless Chromium over the DevTools protocol.
//! - [`webhook`]: an HTTP receiver for the hub's alert webhooks.
//! - [`group_commit`]: a store engine's own limit (the benchmarks' raw
//!   figures), for any engine.
//! - [`wait_until`]: polling with a deadline.

pub mod browser;
pub mod chaos;
pub mod fakehub;
pub mod group_commit;
pub mod hub;
pub mod pg;
pub mod procs;
pub mod project;
pub mod raw;
pub mod sidecar;
pub mod sse;
pub mod webhook;
pub mod wire;

use std::time::{Duration, Instant};

/// Poll `f` every 50 ms until it returns `Some`, or panic after `timeout`
/// with `what` in the message.
pub fn wait_until<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_until(Duration::from_millis(50), timeout, what, f)
}

/// [`wait_until`], polling `every` (the load generator's probes, which
/// must not lose tens of milliseconds between polls).
pub fn poll_until<T>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}
