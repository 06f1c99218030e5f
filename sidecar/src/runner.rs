//! Running the agent's command for one attempt.
//!
//! The runner starts in a process group of its own (so cancelling kills
//! everything it started) with `PR_SET_PDEATHSIG`, so it dies if the
//! sidecar is killed. Its stdout and stderr go to the attempt's log file (0600).
//! A run ends when the command exits, when its time is up, or when it is
//! cancelled; the last two stop the whole group (SIGTERM, then SIGKILL
//! after a grace period). This module runs processes; it does not know the
//! protocol.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::oneshot;

/// How long a stopped runner gets between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);

pub(crate) struct RunSpec {
    pub(crate) command: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The command exited with this code (None: killed by a signal).
    Exited {
        code: Option<i32>,
        log_tail: String,
    },
    TimedOut {
        after: Duration,
    },
    Cancelled {
        reason: String,
    },
    SpawnFailed(String),
}

/// Run `spec`; `started` receives the process group id once it runs.
pub(crate) async fn run(
    spec: RunSpec,
    cancel: oneshot::Receiver<String>,
    started: impl FnOnce(i32),
) -> Outcome {
    use std::os::unix::fs::OpenOptionsExt;
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&spec.log)
    {
        Ok(f) => f,
        Err(e) => {
            return Outcome::SpawnFailed(format!(
                "cannot open the runner log {}: {e}",
                spec.log.display()
            ))
        }
    };
    let log_err = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return Outcome::SpawnFailed(format!("cannot open the runner log: {e}")),
    };
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .kill_on_drop(false);
    die_with_the_sidecar(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::SpawnFailed(format!("cannot start {:?}: {e}", spec.command[0])),
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    started(pgid);
    tokio::select! {
        status = child.wait() => {
            // Anything the runner left behind in its group goes too.
            kill_group(pgid, Signal::SIGKILL);
            match status {
                Ok(s) => Outcome::Exited { code: s.code(), log_tail: tail(&spec.log, 2000) },
                Err(e) => Outcome::Exited { code: None, log_tail: format!("waiting for the runner failed: {e}") },
            }
        }
        _ = tokio::time::sleep(spec.timeout) => {
            stop_group(pgid, &mut child).await;
            Outcome::TimedOut { after: spec.timeout }
        }
        reason = cancel => {
            stop_group(pgid, &mut child).await;
            Outcome::Cancelled { reason: reason.unwrap_or_else(|_| "the sidecar stopped".into()) }
        }
    }
}

/// Have the child killed (SIGKILL) when the sidecar dies: `PR_SET_PDEATHSIG`,
/// set between fork and exec.
#[allow(unsafe_code)]
fn die_with_the_sidecar(cmd: &mut Command) {
    // SAFETY: `pre_exec` is unsafe because its closure runs in the forked
    // child before exec, where only async-signal-safe calls are allowed.
    // This one makes a single prctl(2) call and converts its errno into an
    // `io::Error` (no allocation, no locks, no shared state).
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// SIGTERM the group, wait a little, then SIGKILL it; reap the child.
async fn stop_group(pgid: i32, child: &mut tokio::process::Child) {
    kill_group(pgid, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        kill_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    kill_group(pgid, Signal::SIGKILL);
}

/// Signal a whole process group (no-op for 0 or a group that is gone).
pub(crate) fn kill_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// After a restart: kill what is left of the runner group of `task_id`.
///
/// The group's leader may be gone while its children live on (orphans keep
/// the group). A pid is never reused while a process group of that id
/// exists, and a member must carry `AGENTCOM_TASK_ID=<task_id>` in its
/// environment, so an unrelated group is never hit.
pub(crate) fn kill_leftover(pgid: i32, task_id: &str) -> bool {
    if pgid <= 1 {
        return false;
    }
    let needle = format!("AGENTCOM_TASK_ID={task_id}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if process_group(pid) != Some(pgid) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            kill_group(pgid, Signal::SIGKILL);
            return true;
        }
    }
    false
}

/// The process group of `pid`, from `/proc/<pid>/stat`.
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The last `max` bytes of a file, as text.
pub(crate) fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn spec(script: &str, timeout_ms: u64, dir: &Path) -> RunSpec {
        RunSpec {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([("AGENTCOM_TASK_ID".to_string(), "T1".to_string())]),
            cwd: dir.to_path_buf(),
            log: dir.join("runner.log"),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentcom-runner-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn exit_codes_env_and_log() {
        let d = dir("exit");
        let (_tx, rx) = oneshot::channel();
        let out = rt().block_on(run(
            spec("echo task=$AGENTCOM_TASK_ID; exit 3", 10_000, &d),
            rx,
            |_| {},
        ));
        match out {
            Outcome::Exited { code, log_tail } => {
                assert_eq!(code, Some(3));
                assert_eq!(log_tail, "task=T1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let d = dir("timeout");
        let marker = d.join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let (_tx, rx) = oneshot::channel();
        let out = rt().block_on(run(spec(&script, 300, &d), rx, |_| {}));
        assert!(matches!(out, Outcome::TimedOut { .. }), "{out:?}");
        let child: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // No signal: only checks that the process exists.
        let alive = nix::sys::signal::kill(Pid::from_raw(child), None).is_ok();
        let zombie = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true);
        assert!(!alive || zombie, "the grandchild {child} survived");
    }

    #[test]
    fn cancel_stops_it() {
        let d = dir("cancel");
        let (tx, rx) = oneshot::channel();
        let rt = rt();
        let out = rt.block_on(async {
            let run = run(spec("sleep 30", 60_000, &d), rx, |_| {});
            let cancel = async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tx.send("operator".into()).unwrap();
            };
            let (out, _) = tokio::join!(run, cancel);
            out
        });
        assert_eq!(
            out,
            Outcome::Cancelled {
                reason: "operator".into()
            }
        );
    }

    #[test]
    fn leftovers_of_a_dead_leader_are_found_by_group_and_task() {
        // A group whose leader has exited; its background child keeps it alive.
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 30 >/dev/null 2>&1 & echo $!")
            .env("AGENTCOM_TASK_ID", "T9")
            .process_group(0)
            .output()
            .unwrap();
        let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let group = process_group(orphan).unwrap();
        assert_ne!(group, orphan, "the orphan is not the leader");
        assert!(
            !kill_leftover(group, "OTHER"),
            "another task's group is left alone"
        );
        assert!(kill_leftover(group, "T9"));
        std::thread::sleep(Duration::from_millis(100));
        let gone = std::fs::read_to_string(format!("/proc/{orphan}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true);
        assert!(gone, "the orphan {orphan} survived");
    }

    #[test]
    fn missing_program_is_a_spawn_failure() {
        let d = dir("missing");
        let mut s = spec("", 1000, &d);
        s.command = vec!["/nonexistent/agent".into()];
        let (_tx, rx) = oneshot::channel();
        assert!(matches!(
            rt().block_on(run(s, rx, |_| {})),
            Outcome::SpawnFailed(_)
        ));
    }
}
