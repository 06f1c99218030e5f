//! The hub's actors: thin shells around the domain core.
//!
//! - [`queue`]: `TaskQueue`, the only writer of tasks (group commit).
//! - [`registry`]: `Registry`, the known agents and their supervised FSMs.
//! - [`agent`]: `AgentFsm`, one per agent, around `AgentMachine`.
//! - [`scheduler`]: `Scheduler`, matches queued tasks to idle agents.
//! - [`session`]: `WsSession`, one per sidecar WebSocket connection.
//!
//! Who waits on whom (only these `send().await`s exist, so no cycle):
//! HTTP → TaskQueue, Registry; Scheduler → TaskQueue, Registry, AgentFsm;
//! AgentFsm → TaskQueue. Everything else is `do_send`.

pub mod agent;
pub mod queue;
pub mod registry;
pub mod scheduler;
pub mod session;
