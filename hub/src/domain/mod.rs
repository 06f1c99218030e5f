//! The hub's domain core: plain Rust, no actors, sockets or storage.
//!
//! - [`queue`]: tasks and the rules of how they move (`QueueCore`).
//! - [`lanes`]: priority lanes and their order.
//! - [`matching`]: which idle agent gets which queued task.
//! - [`standing`]: the idle agents a claim left with the queue, so a task
//!   queued at an idle agent is assigned in its own group.
//! - [`retry`]: backoff and dead-lettering.
//! - [`blame`]: who a failed attempt is on, with the evidence.
//! - [`explain`]: why a task is not running, in sentences.
//! - [`fsm`]: one agent's state machine (`AgentMachine`).
//! - [`validate`]: field rules for submitted tasks and agents.
//! - [`limits`]: how much of what agents send the hub keeps.
//! - [`changes`]: the hub's pull requests and how they move (`ChangeCore`).
//! - [`gate`]: whether a change may merge without a person, and why.
//! - [`pipeline`]: tasks and changes moving together (review, merge, send back).
//! - [`repo`]: a repository the hub guards, as the rules see it.
//! - [`rate`]: token buckets (agents' messages, token guesses).
//! - [`usage`]: tokens and dollars spent, per agent and UTC day.
//! - [`lease`]: leading among several hubs: the lease's timing, stepping down.
//! - [`alert`]: every alert kind, which changes raise `task_dead`, webhook
//!   delivery rules (backoff, bounded outbox).

pub(crate) mod alert;
pub(crate) mod blame;
pub(crate) mod changes;
pub(crate) mod explain;
pub(crate) mod fsm;
pub(crate) mod gate;
pub(crate) mod lanes;
pub(crate) mod lease;
pub(crate) mod limits;
pub(crate) mod matching;
pub(crate) mod pipeline;
pub(crate) mod queue;
pub(crate) mod rate;
pub(crate) mod repo;
pub(crate) mod retry;
pub(crate) mod standing;
pub(crate) mod usage;
pub(crate) mod validate;
