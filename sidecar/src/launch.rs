//! The work of an attempt that runs off the daemon loop: launching its
//! runner, and pushing its branch afterwards.
//!
//! It owns the attempt's working folder as the runner sees it: the task
//! file, an empty result file (both 0600, in a 0700 folder), the
//! `AGENTCOM_*` environment, the git branch (prepared from the freshly
//! fetched main when `[git]` is set, with the pre-push hook), the push of
//! that branch when the attempt machine asks for it, and the
//! [`RunnerEvent`]s back to the loop: started (with its process group and
//! branch), done (with its outcome and result file), pushed. Its git
//! commands run one at a time ([`GitLock`]): a push the machine stopped
//! waiting for still ends before the next attempt's branch is prepared.
//! It must never block the loop (git and the runner run in spawned tasks)
//! and never decide what an outcome means: the attempt machine does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use agentcom_protocol::{AttemptRef, Timestamp};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::SidecarConfig;
use crate::git::{Prepared, PushFailed, Pushed};
use crate::report::read_result;
use crate::runner::{self, Outcome, RunSpec};
use crate::store::{fresh_private_file, write_atomic, Current, StateDir, RUNNER_LOG};

/// Taken around every git command of the sidecar's clone, so that they
/// run one at a time.
pub(crate) type GitLock = Rc<tokio::sync::Mutex<()>>;

/// What the runner of an attempt (and its push) reports back to the loop.
pub(crate) enum RunnerEvent {
    Started {
        attempt: AttemptRef,
        pgid: i32,
        /// The branch prepared for it, with `[git]`.
        branch: Option<Prepared>,
    },
    Done {
        attempt: AttemptRef,
        outcome: Outcome,
        /// What the result file held (see [`read_result`]).
        result: Option<Value>,
    },
    /// The push asked for with [`push`] ended.
    Pushed {
        attempt: AttemptRef,
        outcome: Result<Pushed, PushFailed>,
    },
    /// What [`probe_commit`] found: when the last commit on the
    /// attempt's branch beyond its base was made.
    CommitSeen {
        attempt: AttemptRef,
        at: Option<Timestamp>,
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
    git_lock: &GitLock,
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
    let git_lock = git_lock.clone();
    actix_rt::spawn(async move {
        let outcome = run(&cfg, &git_lock, &c, dir, task_file, stop_rx, &events).await;
        let _ = events.send(RunnerEvent::Done {
            attempt: c.attempt.clone(),
            outcome,
            result: read_result(&result_file),
        });
    });
    handle
}

/// Push the branch of `attempt` (see [`crate::git::push_task`]), off the
/// loop; the outcome comes back as [`RunnerEvent::Pushed`].
pub(crate) fn push(
    cfg: &SidecarConfig,
    git_lock: &GitLock,
    attempt: AttemptRef,
    branch: String,
    base: String,
    events: mpsc::UnboundedSender<RunnerEvent>,
) {
    let git = cfg.git.clone();
    let git_lock = git_lock.clone();
    actix_rt::spawn(async move {
        let outcome = match git {
            None => Err("this sidecar has no [git] section".into()),
            Some(git) => {
                let _one_at_a_time = git_lock.lock().await;
                actix_rt::task::spawn_blocking(move || crate::git::push_task(&git, &branch, &base))
                    .await
                    .unwrap_or_else(|e| Err(format!("the git push crashed: {e}").into()))
            }
        };
        let _ = events.send(RunnerEvent::Pushed { attempt, outcome });
    });
}

/// Look, off the loop, for the last commit on `branch` beyond `base` (see
/// [`crate::git::last_commit`]); the answer comes back as
/// [`RunnerEvent::CommitSeen`] and `busy` is cleared. A probe that fails
/// (git missing, the branch gone) is only logged: nothing is reported.
/// It takes no [`GitLock`]: it only reads, and must not wait behind a
/// long push.
pub(crate) fn probe_commit(
    cfg: &SidecarConfig,
    attempt: AttemptRef,
    branch: Prepared,
    busy: Rc<std::cell::Cell<bool>>,
    events: mpsc::UnboundedSender<RunnerEvent>,
) {
    let Some(git) = cfg.git.clone() else {
        return;
    };
    busy.set(true);
    actix_rt::spawn(async move {
        let found = actix_rt::task::spawn_blocking(move || {
            crate::git::last_commit(&git, &branch.branch, &branch.base)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the git probe crashed: {e}")));
        busy.set(false);
        match found {
            Ok(at) => {
                let _ = events.send(RunnerEvent::CommitSeen { attempt, at });
            }
            Err(e) => {
                tracing::debug!(task = %attempt, error = %e, "cannot see the branch's last commit")
            }
        }
    });
}

/// How long `runner.cancel_command` may run.
const CANCEL_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `runner.cancel_command` for the attempt of `c`, off the loop, in
/// the runner's environment (and `AGENTCOM_CANCEL_REASON`), its output
/// appended to `cancel.log` in the attempt's folder. Its outcome is only
/// logged: the attempt's own report does not wait for it.
pub(crate) fn cancel_woken(cfg: &SidecarConfig, state: &StateDir, c: &Current, reason: String) {
    let dir = match state.task_dir(&c.attempt) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(task = %c.attempt, error = %e, "cannot run the cancel command");
            return;
        }
    };
    let mut env = runner_env(cfg, c, &dir);
    env.insert("AGENTCOM_CANCEL_REASON".into(), reason);
    let mut cwd = dir.clone();
    if let (Some(git), Some(p)) = (&cfg.git, &c.branch) {
        env.insert("AGENTCOM_BRANCH".into(), p.branch.clone());
        env.insert(
            "AGENTCOM_REPO_DIR".into(),
            git.repo_dir.display().to_string(),
        );
        cwd = git.repo_dir.clone();
    }
    let spec = RunSpec {
        command: cfg.runner.cancel_command.clone(),
        env,
        cwd,
        log: dir.join("cancel.log"),
        timeout: CANCEL_COMMAND_TIMEOUT,
    };
    let attempt = c.attempt.clone();
    actix_rt::spawn(async move {
        let (_keep, never) = oneshot::channel::<String>();
        match runner::run(spec, never, |_| {}).await {
            Outcome::Exited { code: Some(0), .. } => {
                tracing::info!(task = %attempt, "the cancel command ran")
            }
            other => {
                tracing::warn!(task = %attempt, outcome = %other, "the cancel command did not succeed")
            }
        }
    });
}

/// The environment every command of an attempt gets.
fn runner_env(cfg: &SidecarConfig, c: &Current, dir: &std::path::Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("AGENTCOM_TASK_ID".to_string(), c.attempt.task_id.clone()),
        (
            "AGENTCOM_GENERATION".to_string(),
            c.attempt.generation.to_string(),
        ),
        (
            "AGENTCOM_TASK_FILE".to_string(),
            dir.join("task.json").display().to_string(),
        ),
        (
            "AGENTCOM_RESULT_FILE".to_string(),
            dir.join("result.json").display().to_string(),
        ),
        ("AGENTCOM_AGENT_ID".to_string(), cfg.agent_id.clone()),
    ])
}

/// What the task file (`AGENTCOM_TASK_FILE`) holds: the whole task as
/// the hub sent it, `dossier.attempts` included.
fn task_file_text(body: &agentcom_protocol::Task) -> Vec<u8> {
    serde_json::to_vec_pretty(body).expect("serialises")
}

/// Write the task file, prepare the branch, run the runner.
#[allow(clippy::too_many_arguments)]
async fn run(
    cfg: &SidecarConfig,
    git_lock: &GitLock,
    c: &Current,
    dir: PathBuf,
    task_file: PathBuf,
    stop: oneshot::Receiver<String>,
    events: &mpsc::UnboundedSender<RunnerEvent>,
) -> Outcome {
    if let Err(e) = write_atomic(&task_file, &task_file_text(&c.body)) {
        return Outcome::SpawnFailed(e);
    }
    let mut env = runner_env(cfg, c, &dir);
    let mut cwd = dir.clone();
    let mut branch = None;
    if let Some(git) = cfg.git.clone() {
        let (agent, task_id) = (cfg.agent_id.clone(), c.attempt.task_id.clone());
        let repo_dir = git.repo_dir.clone();
        let _one_at_a_time = git_lock.lock().await;
        match actix_rt::task::spawn_blocking(move || crate::git::start_task(&git, &agent, &task_id))
            .await
        {
            Ok(Ok(p)) => {
                tracing::info!(task = %c.attempt, branch = %p.branch, base = %p.base, "branch prepared from the fresh main");
                env.insert("AGENTCOM_BRANCH".into(), p.branch.clone());
                env.insert("AGENTCOM_REPO_DIR".into(), repo_dir.display().to_string());
                cwd = repo_dir;
                branch = Some(p);
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
        log: dir.join(RUNNER_LOG),
        timeout,
    };
    let attempt = c.attempt.clone();
    let started = events.clone();
    runner::run(spec, stop, move |pgid| {
        let _ = started.send(RunnerEvent::Started {
            attempt,
            pgid,
            branch,
        });
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_file_holds_the_dossier_intact() {
        let mut body = serde_json::to_value(crate::testing::task("t1", 3)).unwrap();
        let dossier = serde_json::json!({"attempts": [
            {"generation": 1, "agent_id": "a1", "outcome": "failed", "blame": "environment",
             "error": "git fetch failed", "log_tail": "fatal: unable to access\n€", "branch": null,
             "head": null, "at": "2026-01-01T00:00:01.000Z"},
            {"generation": 2, "agent_id": "a2", "outcome": "failed", "blame": "task",
             "error": "tests failed", "log_tail": "FAILED: 3", "branch": "a2/t1",
             "head": "abc123", "at": "2026-01-01T00:00:02.000Z"}
        ]});
        body["dossier"] = dossier.clone();
        body["attempts"] = serde_json::json!(2);
        let task: agentcom_protocol::Task = serde_json::from_value(body).unwrap();
        let file: Value = serde_json::from_slice(&task_file_text(&task)).unwrap();
        assert_eq!(file["dossier"], dossier);
        assert_eq!(file["attempts"], 2, "the count, beside dossier.attempts");
        assert_eq!(file["dossier"]["attempts"][1]["log_tail"], "FAILED: 3");
    }
}
