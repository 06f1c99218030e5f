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
    Exited { code: Option<i32>, log_tail: String },
    /// Its time was up; its group was stopped.
    TimedOut { after: Duration, log_tail: String },
    /// It was told to stop; its group was stopped.
    Cancelled { reason: String, log_tail: String },
    /// It could not be started (or its files could not be written): the
    /// machine's fault, not the task's.
    SpawnFailed(String),
}

/// How the runner ended, in words for the log (without its output).
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited { code: Some(c), .. } => write!(f, "exited with code {c}"),
            Outcome::Exited { code: None, .. } => f.write_str("killed by a signal"),
            Outcome::TimedOut { after, .. } => write!(f, "timed out after {}s", after.as_secs()),
            Outcome::Cancelled { reason, .. } => write!(f, "stopped: {reason}"),
            Outcome::SpawnFailed(e) => write!(f, "could not start: {e}"),
        }
    }
}

/// The most of the runner's output a report carries (`fail.log_tail`):
/// its last 8 KiB.
pub(crate) const MAX_LOG_TAIL: usize = 8 * 1024;

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
                Ok(s) => Outcome::Exited { code: s.code(), log_tail: tail(&spec.log, MAX_LOG_TAIL) },
                Err(e) => Outcome::Exited { code: None, log_tail: format!("waiting for the runner failed: {e}") },
            }
        }
        _ = tokio::time::sleep(spec.timeout) => {
            stop_group(pgid, &mut child).await;
            Outcome::TimedOut { after: spec.timeout, log_tail: tail(&spec.log, MAX_LOG_TAIL) }
        }
        reason = cancel => {
            stop_group(pgid, &mut child).await;
            Outcome::Cancelled {
                reason: reason.unwrap_or_else(|_| "the sidecar stopped".into()),
                log_tail: tail(&spec.log, MAX_LOG_TAIL),
            }
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

/// Whether process group `pgid` still has a process in it (signal 0:
/// nothing is sent).
pub(crate) fn group_alive(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
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

/// The end of a file as text: at most `max` bytes (see [`tail_of`]).
pub(crate) fn tail(path: &Path, max: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max as u64)));
    let mut buf = Vec::new();
    let _ = f.take(max as u64).read_to_end(&mut buf);
    tail_of(&buf, max)
}

/// The end of `bytes` as text of at most `max` bytes, trimmed: invalid
/// UTF-8 (a character cut by the start of the window, binary output)
/// becomes U+FFFD, and the text is then cut at a character boundary so
/// that it never exceeds `max` bytes.
pub(crate) fn tail_of(bytes: &[u8], max: usize) -> String {
    let mut window = &bytes[bytes.len().saturating_sub(max)..];
    if window.len() < bytes.len() {
        // The window may start inside a character: skip its rest.
        let cut = window
            .iter()
            .take(3)
            .take_while(|b| *b & 0xC0 == 0x80)
            .count();
        window = &window[cut..];
    }
    let text = String::from_utf8_lossy(window);
    last_bytes(text.trim(), max).to_string()
}

/// The longest end of `s` of at most `max` bytes that starts on a
/// character boundary.
pub(crate) fn last_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
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
                reason: "operator".into(),
                log_tail: String::new(),
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
    fn a_log_tail_is_at_most_8_kib_and_cut_at_a_character_boundary() {
        // 3000 three-byte characters: 9000 bytes; the window starts mid-character.
        let text = "€".repeat(3000);
        let t = tail_of(text.as_bytes(), MAX_LOG_TAIL);
        assert!(t.len() <= MAX_LOG_TAIL, "{}", t.len());
        assert_eq!(t.len(), 8190, "whole characters only");
        assert!(t.chars().all(|c| c == '€'));
        // Binary output: every invalid byte becomes a 3-byte U+FFFD, and
        // the text is still cut to 8 KiB.
        let binary = vec![0xFFu8; 20_000];
        let t = tail_of(&binary, MAX_LOG_TAIL);
        assert!(
            t.len() <= MAX_LOG_TAIL && t.len() > MAX_LOG_TAIL - 3,
            "{}",
            t.len()
        );
        // Short output is kept whole (trimmed).
        assert_eq!(tail_of(b"  ok\n", MAX_LOG_TAIL), "ok");
        assert_eq!(last_bytes("aé", 2), "é");
        assert_eq!(last_bytes("aé", 1), "");
        // From a file larger than the window.
        let d = dir("tail");
        let log = d.join("big.log");
        let mut big = "x".repeat(20_000);
        big.push_str("THE END");
        std::fs::write(&log, &big).unwrap();
        let t = tail(&log, MAX_LOG_TAIL);
        assert_eq!(t.len(), MAX_LOG_TAIL);
        assert!(t.ends_with("THE END"));
        assert_eq!(tail(&d.join("missing.log"), MAX_LOG_TAIL), "");
    }

    #[test]
    fn a_group_is_alive_while_a_process_is_in_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        assert!(group_alive(pgid));
        kill_group(pgid, Signal::SIGKILL);
        child.wait().unwrap();
        assert!(!group_alive(pgid));
        assert!(!group_alive(0) && !group_alive(1));
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
