//! The hub's domain core: plain Rust, no actors, sockets or storage.
//!
//! - [`queue`]: tasks and the rules of how they move (`QueueCore`).
//! - [`lanes`]: priority lanes and their order.
//! - [`matching`]: which idle agent gets which queued task.
//! - [`retry`]: backoff and dead-lettering.
//! - [`fsm`]: one agent's state machine (`AgentMachine`).
//! - [`validate`]: field rules for submitted tasks and agents.

pub mod fsm;
pub mod lanes;
pub mod matching;
pub mod queue;
pub mod retry;
pub mod validate;
