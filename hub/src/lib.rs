//! AgentCom hub: a scheduler that pushes tasks to a fleet of coding agents.
//!
//! Code map (docs/architecture.md has the full picture and invariants):
//!
//! - [`domain`]: the rules, as plain Rust — the task queue (`QueueCore`),
//!   lanes, matching, retry policy, the agent state machine, validation.
//! - [`actors`]: the actix actors that own state at run time and turn
//!   messages into domain calls: TaskQueue, Registry, AgentFsm, Scheduler,
//!   WsSession.
//! - [`store`]: sled persistence and its durability point.
//! - [`views`]: read models for the API (never wait behind a write).
//! - [`events`]: the event bus behind Server-Sent Events.
//! - [`stats`]: counters and recent samples; [`metrics`]: `/metrics`.
//! - [`http`]: routes and handlers.
//! - [`auth`]: tokens and roles. [`config`]: settings.
//! - [`app`]: start-up, wiring and shutdown. [`cli`]: admin subcommands.

mod actors;
pub mod app;
mod auth;
pub mod cli;
pub mod config;
mod domain;
mod events;
mod http;
mod metrics;
mod stats;
mod store;
mod views;
