//! AgentCom hub: a scheduler that pushes tasks to a fleet of coding agents.
//!
//! Code map (docs/architecture.md has the full picture and invariants):
//!
//! - [`domain`]: the rules, as plain Rust — the task queue (`QueueCore`),
//!   lanes, matching, retry policy, the agent state machine, validation.
//! - [`actors`]: the actix actors that own state at run time and turn
//!   messages into domain calls: QueueActor, RegistryActor, AgentActor,
//!   SchedulerActor, ConnectionActor (their messages in `actors::messages`).
//! - [`store`]: sled persistence and its durability point.
//! - [`views`]: read models for the API (never wait behind a write).
//! - [`events`]: the event bus behind Server-Sent Events.
//! - [`stats`]: counters and recent samples; [`metrics`]: `/metrics`.
//! - [`http`]: routes and handlers.
//! - [`auth`]: tokens and roles. [`sessions`]: the dashboard's sessions.
//!   [`config`]: settings. [`logging`]: one event, one log line.
//! - [`git`]: the hub's git work on its clone of each guarded repository;
//!   [`check`]: a repository's check command run on one commit.
//! - [`app`]: start-up, wiring and shutdown. [`cli`]: admin subcommands.
//! - [`demo`]: `agentcom-hub demo`: a hub, three in-process sidecars (the
//!   sidecar library) and an example project, all made on the spot.

mod actors;
mod alerts;
pub mod app;
mod auth;
mod check;
pub mod cli;
pub mod config;
pub mod demo;
mod domain;
mod events;
mod git;
mod ha;
mod http;
mod logging;
mod metrics;
mod sessions;
mod stats;
mod store;
mod views;

/// The rules of docs/architecture.md that the compiler does not check,
/// checked on the source text.
#[cfg(test)]
mod architecture {
    use std::path::Path;

    fn sources(dir: &str) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    out.push((p.display().to_string(), text));
                }
            }
        }
        assert!(!out.is_empty(), "no sources under {dir}");
        out
    }

    /// Lines that are code (not comments).
    fn code(text: &str) -> impl Iterator<Item = &str> {
        text.lines()
            .map(str::trim_start)
            .filter(|l| !l.starts_with("//"))
    }

    #[test]
    fn the_domain_has_no_actors_storage_runtime_or_clock() {
        for (path, text) in sources("domain") {
            for line in code(&text) {
                for banned in [
                    "actix",
                    "sled",
                    "tokio",
                    "::now()",
                    "SystemTime",
                    "Instant",
                    "crate::store",
                    "crate::actors",
                    "crate::http",
                ] {
                    assert!(!line.contains(banned), "{path}: `{banned}` in `{line}`");
                }
            }
        }
    }

    #[test]
    fn actors_import_only_messages_except_the_registry_creating_agents() {
        for (path, text) in sources("actors") {
            for line in code(&text) {
                let Some(rest) = line.strip_prefix("use crate::actors::") else {
                    continue;
                };
                let module = rest.split([':', ';', '{']).next().unwrap_or_default();
                let allowed =
                    module == "messages" || (path.ends_with("registry.rs") && module == "agent");
                assert!(allowed, "{path} imports actors::{module}");
            }
        }
    }

    #[test]
    fn only_the_demo_uses_the_sidecar_library() {
        // Spelt in two, so this line is not a use of it.
        const USE: &str = concat!("agentcom_", "sidecar::");
        let mut users = Vec::new();
        for (path, text) in sources("") {
            if code(&text).any(|l| l.contains(USE)) {
                users.push(path);
            }
        }
        assert!(!users.is_empty(), "the demo runs sidecars in process");
        for path in users {
            assert!(
                path.contains("/src/demo"),
                "{path} uses the sidecar library"
            );
        }
    }

    #[test]
    fn only_the_queue_actor_writes_tasks() {
        // The store's one write of tasks and changes; if it is renamed,
        // the first assertion fails rather than this test passing idly.
        const WRITE: &str = ".write_tasks(";
        let mut writers = Vec::new();
        for dir in ["actors", "http", "domain"] {
            for (path, text) in sources(dir) {
                if code(&text).any(|l| l.contains(WRITE)) {
                    writers.push(path);
                }
            }
        }
        assert_eq!(writers.len(), 1, "{writers:?} write tasks");
        assert!(writers[0].ends_with("actors/queue.rs"), "{writers:?}");
    }
}
