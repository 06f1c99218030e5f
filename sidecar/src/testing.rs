//! Fixtures shared by the crate's unit tests. Test-only: never compiled
//! into the daemon.

use std::path::Path;
use std::process::Command;

use agentcom_protocol::{Priority, Task, TaskStatus, Timestamp};

/// Run `script` with `sh -c` in `dir`; it must succeed.
pub(crate) fn sh(dir: &Path, script: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "{script}");
}

/// Task `id` as assigned to agent `a1` in `generation`, 100 s to run.
pub(crate) fn task(id: &str, generation: u64) -> Task {
    Task {
        id: id.into(),
        title: "x".into(),
        description: String::new(),
        priority: Priority::Normal,
        needed_capabilities: vec![],
        repo: None,
        idempotency_key: None,
        max_retries: 3,
        timeout_s: 100,
        context_budget_tokens: None,
        metadata: None,
        status: TaskStatus::Assigned,
        generation,
        attempts: 0,
        assigned_to: Some("a1".into()),
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        queued_at: None,
        started_at: None,
        not_before: None,
        finished_at: None,
        kind: Default::default(),
        dossier: Default::default(),
        exclude_agents: Vec::new(),
        for_agent: None,
        free_attempts: 0,
        candidates: Vec::new(),
        result: None,
        last_error: None,
        history: None,
    }
}
