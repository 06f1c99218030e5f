//! Launching the runner of an accepted attempt, off the daemon loop.
//!
//! It owns the attempt's working folder as the runner sees it: the task
//! file, an empty result file (both 0600, in a 0700 folder), the
//! `AGENTCOM_*` environment, the git
//! branch (prepared from the freshly fetched main when `[git]` is set),
//! and the runner's [`RunnerEvent`]s back to the loop: started (with its
//! process group), done (with its outcome and result file). It must never
//! block the loop (git and the runner run in a spawned task) and never
//! decide what an outcome means: the attempt machine does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agentcom_protocol::AttemptRef;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::SidecarConfig;
use crate::report::read_result;
use crate::runner::{self, Outcome, RunSpec};
use crate::store::{fresh_private_file, write_atomic, Current, StateDir};

/// What the runner of an attempt reports back to the loop.
pub(crate) enum RunnerEvent {
    Started {
        attempt: AttemptRef,
        pgid: i32,
    },
    Done {
        attempt: AttemptRef,
        outcome: Outcome,
        /// What the result file held (see [`read_result`]).
        result: Option<Value>,
    },
}

/// The way to stop a launched runner.
pub(crate) struct RunnerHandle {
    attempt: AttemptRef,
    stop: oneshot::Sender<String>,
}

impl RunnerHandle {
    pub(crate) fn attempt(&self) -> &AttemptRef {
        &self.attempt
    }

    /// Stop the runner (its end comes as [`RunnerEvent::Done`], cancelled).
    pub(crate) fn stop(self, reason: String) {
        let _ = self.stop.send(reason);
    }
}

/// Prepare and start the runner of `c`; its events go to `events`.
/// Dropping the handle stops the runner.
pub(crate) fn launch(
    cfg: &SidecarConfig,
    state: &StateDir,
    c: Current,
    events: mpsc::UnboundedSender<RunnerEvent>,
) -> RunnerHandle {
    let (stop_tx, stop_rx) = oneshot::channel();
    let handle = RunnerHandle {
        attempt: c.attempt.clone(),
        stop: stop_tx,
    };
    let prepared = state.task_dir(&c.attempt).and_then(|d| {
        fresh_private_file(&d.join("result.json"))?;
        Ok(d)
    });
    let dir = match prepared {
        Ok(d) => d,
        Err(e) => {
            let _ = events.send(RunnerEvent::Done {
                attempt: c.attempt,
                outcome: Outcome::SpawnFailed(e),
                result: None,
            });
            return handle;
        }
    };
    let task_file = dir.join("task.json");
    let result_file = dir.join("result.json");
    let cfg = cfg.clone();
    actix_rt::spawn(async move {
        let outcome = run(&cfg, &c, dir, task_file, &result_file, stop_rx, &events).await;
        let _ = events.send(RunnerEvent::Done {
            attempt: c.attempt.clone(),
            outcome,
            result: read_result(&result_file),
        });
    });
    handle
}

/// Write the task file, prepare the branch, run the runner.
async fn run(
    cfg: &SidecarConfig,
    c: &Current,
    dir: PathBuf,
    task_file: PathBuf,
    result_file: &std::path::Path,
    stop: oneshot::Receiver<String>,
    events: &mpsc::UnboundedSender<RunnerEvent>,
) -> Outcome {
    if let Err(e) = write_atomic(
        &task_file,
        &serde_json::to_vec_pretty(&c.body).expect("serialises"),
    ) {
        return Outcome::SpawnFailed(e);
    }
    let mut env = BTreeMap::from([
        ("AGENTCOM_TASK_ID".to_string(), c.attempt.task_id.clone()),
        (
            "AGENTCOM_GENERATION".to_string(),
            c.attempt.generation.to_string(),
        ),
        (
            "AGENTCOM_TASK_FILE".to_string(),
            task_file.display().to_string(),
        ),
        (
            "AGENTCOM_RESULT_FILE".to_string(),
            result_file.display().to_string(),
        ),
        ("AGENTCOM_AGENT_ID".to_string(), cfg.agent_id.clone()),
    ]);
    let mut cwd = dir.clone();
    if let Some(git) = cfg.git.clone() {
        let (agent, task_id) = (cfg.agent_id.clone(), c.attempt.task_id.clone());
        let repo_dir = git.repo_dir.clone();
        match actix_rt::task::spawn_blocking(move || crate::git::start_task(&git, &agent, &task_id))
            .await
        {
            Ok(Ok(p)) => {
                tracing::info!(task = %c.attempt, branch = %p.branch, base = %p.base, "branch prepared from the fresh main");
                env.insert("AGENTCOM_BRANCH".into(), p.branch);
                env.insert("AGENTCOM_REPO_DIR".into(), repo_dir.display().to_string());
                cwd = repo_dir;
            }
            Ok(Err(e)) => {
                return Outcome::SpawnFailed(format!("preparing the git branch failed: {e}"))
            }
            Err(e) => return Outcome::SpawnFailed(format!("git preparation crashed: {e}")),
        }
    }
    let timeout = Duration::from_secs(cfg.runner.timeout_s.min(c.body.timeout_s.max(1)));
    let spec = RunSpec {
        command: cfg.runner.command.clone(),
        env,
        cwd,
        log: dir.join("runner.log"),
        timeout,
    };
    let attempt = c.attempt.clone();
    let started = events.clone();
    runner::run(spec, stop, move |pgid| {
        let _ = started.send(RunnerEvent::Started { attempt, pgid });
    })
    .await
}
