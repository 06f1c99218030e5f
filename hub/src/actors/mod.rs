//! The hub's actors: thin shells around the domain core.
//!
//! - [`messages`]: every message that crosses actors, by receiver, and the
//!   handles (bundles of recipients) they carry. The only module the
//!   others share.
//! - [`queue`]: `QueueActor`, the only writer of tasks (group commit).
//! - [`registry`]: `RegistryActor`, the known agents and their actors.
//! - [`agent`]: `AgentActor`, one per agent, around `AgentMachine`.
//! - [`scheduler`]: `SchedulerActor`, matches queued tasks to idle agents.
//! - [`connection`]: `ConnectionActor`, one per sidecar WebSocket.
//! - [`repo`]: `RepoActor`, one per guarded repository: its clone,
//!   inspections, the merge loop and main's health.
//!
//! Dependencies point one way: every actor module imports `messages`; the
//! registry also imports `agent` (it creates agent actors); no actor
//! imports another otherwise. An actor holds the `Recipient`s it sends to,
//! given to its constructor (addresses are made before any actor starts,
//! see `app::start`), so no wiring happens after start. `messages` lists
//! who waits on whom.

pub(crate) mod agent;
pub(crate) mod connection;
pub(crate) mod messages;
pub(crate) mod queue;
pub(crate) mod registry;
// Started by `app::start` once the queue's side of the merge queue lands;
// until then only its tests construct it.
#[allow(dead_code)]
pub(crate) mod repo;
pub(crate) mod scheduler;
