//! AgentCom sidecar: the always-on daemon on an agent's machine.
//!
//! Public, for the `agentcom-sidecar` binary: [`daemon`] (the event loop),
//! [`config`] (`sidecar.toml`), [`control`] (the local socket a woken agent
//! reports through), [`git`] (branch from freshly fetched main, the
//! pre-push hook, the leased push of a task branch; status), and the
//! self-test: [`selftest`] (its rules and wording) and [`probe`] (looking
//! at the machine); [`service`] (the systemd unit or pm2 app `join`
//! installs) and [`join`] (`agentcom-sidecar join`: enroll, write the
//! config, self-test, install, wait for the hub's verification). Inside
//! the crate:
//!
//! - `attempt`: the attempt's rules as a pure state machine.
//! - `connection`: the WebSocket to the hub. `backoff`: reconnect delays.
//!   `hubs`: which of several hubs to try next (`hub_urls`).
//!   `refusal`: what the hub's refusals mean, and which are permanent.
//! - `launch`: preparing and starting the runner, and pushing its branch,
//!   off the loop;
//!   `runner`: running the agent's command in its own process group.
//! - `report`: a runner's outcome and result file → `complete`/`fail`.
//! - `recovery`: putting the state dir in order at start.
//! - `store`: the state dir (current attempt, outbox) with atomic writes.
//! - `validate`: the rules for hub-supplied values used as paths,
//!   arguments or timers.
//! - `frame_limit`: refusing an oversized frame from its header.

mod attempt;
mod backoff;
pub mod config;
mod connection;
pub mod control;
pub mod daemon;
mod frame_limit;
pub mod git;
mod hubs;
pub mod join;
mod launch;
pub mod probe;
mod recovery;
mod refusal;
mod report;
mod runner;
pub mod selftest;
pub mod service;
mod store;
#[cfg(test)]
mod testing;
mod validate;
