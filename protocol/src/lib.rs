//! Wire and API types shared by the AgentCom hub and sidecar.
//!
//! This crate owns the *shape* of everything that crosses a process
//! boundary: the WebSocket messages between hub and sidecar (tagged by
//! `"type"`), the task and agent models the HTTP API returns, and the API
//! error body. It holds no behaviour beyond (de)serialisation and small
//! helpers; it must never depend on the hub's or the sidecar's internals.
//!
//! Layout:
//! - [`time`]: the RFC 3339 millisecond timestamp every message uses.
//! - [`model`]: tasks, agents, history, results, priorities and states.
//! - [`change`]: changes, repositories, task kinds and dossiers.
//! - [`wire`]: the hub ⇄ sidecar messages.
//! - [`api`]: HTTP request bodies and the error shape.

#![warn(missing_docs)]

pub mod api;
pub mod change;
pub mod model;
pub mod time;
pub mod wire;

pub use api::*;
pub use change::*;
pub use model::*;
pub use time::Timestamp;
pub use wire::*;

/// Version of the hub ⇄ sidecar protocol. A sidecar that says another
/// version in `hello` is refused with an `error` frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket frame either side accepts (1 MiB).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
