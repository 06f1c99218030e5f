//! AgentCom sidecar: the always-on daemon on an agent's machine.
//!
//! - [`daemon`]: the connection loop, assignments, reports, recovery.
//! - [`store`]: the state dir (current attempt, outbox) with atomic writes.
//! - [`runner`]: running the agent's command in its own process group.
//! - [`git`]: branch from freshly fetched main; push; status.
//! - [`control`]: the local socket through which a woken agent reports.
//! - [`backoff`]: reconnect delays. [`config`]: `sidecar.toml`.

pub mod backoff;
pub mod config;
pub mod control;
pub mod daemon;
pub mod git;
pub mod runner;
pub mod store;
