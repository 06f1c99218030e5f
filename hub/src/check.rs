//! Running a repository's check command on one commit.
//!
//! The command runs in a checkout of the commit (a scratch work tree the
//! caller made), as a child in a process group of its own that dies with
//! the thread that started it (`PR_SET_PDEATHSIG`), with stdin closed and
//! stdout and stderr captured together through one pipe, keeping only the
//! last [`LOG_TAIL_BYTES`]. At its timeout the whole group gets SIGTERM,
//! then SIGKILL after [`KILL_GRACE`]; whatever the check left running in
//! its group is killed when it ends, too. The hub's own `AGENTCOM_*`
//! settings (tokens among them) are not passed on: the check runs code
//! an agent wrote.
//!
//! Blocking: callers run it off the actor threads. It never decides what
//! a result means for a change or for main; it never touches git.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentcom_protocol::CheckRun;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How much of a check's output is kept: its end.
pub(crate) const LOG_TAIL_BYTES: usize = 8 * 1024;

/// How long a check that timed out gets between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long the output is still read after the check's group is gone (a
/// process that left the group may hold the pipe open for ever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Did this check pass? (No check configured passes.)
pub(crate) fn passed(check: Option<&CheckRun>) -> bool {
    check.is_none_or(|c| c.exit_code == Some(0))
}

/// Run `command` in `dir` for the commit `sha`. None: the command is
/// empty (no check configured). Exit code None: killed at its timeout or
/// by a signal, or it could not start (the log tail says which).
pub(crate) fn run_check(
    command: &[String],
    dir: &Path,
    timeout: Duration,
    sha: &str,
) -> Option<CheckRun> {
    let program = command.first()?;
    let started = Instant::now();
    let (exit_code, log_tail) = match run(program, &command[1..], dir, timeout) {
        Ok(r) => r,
        Err(e) => (
            None,
            format!("[agentcom] cannot start the check {program:?}: {e}"),
        ),
    };
    Some(CheckRun {
        exit_code,
        log_tail,
        duration_s: started.elapsed().as_secs_f64(),
        sha: Some(sha.to_string()),
    })
}

/// The variables of the hub's environment a check must not inherit: the
/// hub's own settings.
fn withheld(vars: impl Iterator<Item = (String, String)>) -> impl Iterator<Item = String> {
    vars.map(|(k, _)| k).filter(|k| k.starts_with("AGENTCOM_"))
}

fn run(
    program: &str,
    args: &[String],
    dir: &Path,
    timeout: Duration,
) -> std::io::Result<(Option<i32>, String)> {
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer.try_clone()?))
        .stderr(Stdio::from(writer));
    for k in withheld(std::env::vars()) {
        cmd.env_remove(k);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    die_with_this_thread(&mut cmd);
    // `cmd` holds the pipe's write ends until it is dropped: after spawn.
    let mut child = cmd.spawn()?;
    drop(cmd);
    let pgid = child.id() as i32;

    let tail = Arc::new(Mutex::new(Tail::default()));
    let (drained_tx, drained) = mpsc::channel();
    {
        let tail = tail.clone();
        let mut reader = std::fs::File::from(reader);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => tail
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(&buf[..n]),
                }
            }
            let _ = drained_tx.send(());
        });
    }
    let (exited_tx, exited) = mpsc::channel::<std::io::Result<ExitStatus>>();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });

    let mut note = None;
    let exit_code = match exited.recv_timeout(timeout) {
        Ok(status) => status.ok().and_then(|s| s.code()),
        Err(_) => {
            kill_group(pgid, Signal::SIGTERM);
            if exited.recv_timeout(KILL_GRACE).is_err() {
                kill_group(pgid, Signal::SIGKILL);
                let _ = exited.recv();
            }
            note = Some(format!(
                "[agentcom] the check timed out after {:.1}s; its process group was killed",
                timeout.as_secs_f64()
            ));
            None
        }
    };
    // Anything the check left behind in its group goes too.
    kill_group(pgid, Signal::SIGKILL);
    let _ = drained.recv_timeout(DRAIN_GRACE);
    let mut text = tail.lock().unwrap_or_else(|e| e.into_inner()).text();
    if let Some(n) = note {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&n);
        text = keep_end(text);
    }
    Ok((exit_code, text))
}

/// Have the child killed (SIGKILL) when the thread that started it ends
/// (the hub exiting mid-check): `PR_SET_PDEATHSIG`, set between fork and
/// exec. The calling thread waits for the check, so it outlives it.
#[allow(unsafe_code)]
fn die_with_this_thread(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
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

/// Signal a whole process group (no-op for a group that is gone).
fn kill_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// The last bytes of a stream.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 2 * LOG_TAIL_BYTES {
            let cut = self.buf.len() - LOG_TAIL_BYTES;
            self.buf.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let start = self.buf.len().saturating_sub(LOG_TAIL_BYTES);
        keep_end(String::from_utf8_lossy(&self.buf[start..]).into_owned())
    }
}

/// At most the last [`LOG_TAIL_BYTES`] of `text`, cut at a character
/// boundary.
fn keep_end(text: String) -> String {
    if text.len() <= LOG_TAIL_BYTES {
        return text;
    }
    let mut cut = text.len() - LOG_TAIL_BYTES;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    /// Gone, or a zombie waiting for its reaper (no longer running).
    fn gone(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z") || s.contains(") X"))
            .unwrap_or(true)
    }

    /// Poll until `pid` is gone; false after a generous deadline.
    fn becomes_gone(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if gone(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn pid_in(path: &Path) -> i32 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn pass_and_fail_with_their_output() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status.txt"), "ok\n").unwrap();
        let ok = run_check(
            &sh("cat status.txt; echo to-stderr >&2; grep -q ok status.txt"),
            d.path(),
            Duration::from_secs(60),
            "abc",
        )
        .unwrap();
        assert_eq!(ok.exit_code, Some(0));
        assert_eq!(ok.log_tail, "ok\nto-stderr\n");
        assert_eq!(ok.sha.as_deref(), Some("abc"));
        assert!(passed(Some(&ok)));

        let bad = run_check(
            &sh("echo broken; exit 3"),
            d.path(),
            Duration::from_secs(60),
            "abc",
        )
        .unwrap();
        assert_eq!(bad.exit_code, Some(3));
        assert_eq!(bad.log_tail, "broken\n");
        assert!(!passed(Some(&bad)));
    }

    #[test]
    fn no_command_is_no_check_and_passes() {
        let d = tempfile::tempdir().unwrap();
        let none = run_check(&[], d.path(), Duration::from_secs(1), "abc");
        assert_eq!(none, None);
        assert!(passed(none.as_ref()));
    }

    #[test]
    fn a_program_that_cannot_start_fails_in_words() {
        let d = tempfile::tempdir().unwrap();
        let run = run_check(
            &["/nonexistent/check".to_string()],
            d.path(),
            Duration::from_secs(5),
            "abc",
        )
        .unwrap();
        assert_eq!(run.exit_code, None);
        assert!(run.log_tail.contains("cannot start"), "{}", run.log_tail);
        assert!(!passed(Some(&run)));
    }

    #[test]
    fn the_timeout_kills_the_whole_group() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("child.pid");
        // The background sleep keeps the output pipe open too.
        let script = format!(
            "echo starting; sleep 600 & echo $! > {}; wait",
            marker.display()
        );
        let run = run_check(&sh(&script), d.path(), Duration::from_millis(300), "abc").unwrap();
        assert_eq!(run.exit_code, None);
        assert!(run.log_tail.starts_with("starting\n"), "{}", run.log_tail);
        assert!(run.log_tail.contains("timed out"), "{}", run.log_tail);
        assert!(!passed(Some(&run)));
        let child = pid_in(&marker);
        assert!(
            becomes_gone(child),
            "the check's background process {child} survived"
        );
    }

    #[test]
    fn a_check_that_ends_leaves_nothing_running() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("child.pid");
        let script = format!(
            "sleep 600 >/dev/null 2>&1 & echo $! > {}; exit 0",
            marker.display()
        );
        let run = run_check(&sh(&script), d.path(), Duration::from_secs(60), "abc").unwrap();
        assert_eq!(run.exit_code, Some(0));
        let child = pid_in(&marker);
        assert!(
            becomes_gone(child),
            "the check's background process {child} survived"
        );
    }

    #[test]
    fn a_term_ignoring_check_is_killed_after_the_grace() {
        let d = tempfile::tempdir().unwrap();
        let run = run_check(
            &sh("trap '' TERM; echo stubborn; while :; do :; done"),
            d.path(),
            Duration::from_millis(200),
            "abc",
        )
        .unwrap();
        assert_eq!(run.exit_code, None);
        assert!(run.log_tail.contains("stubborn"), "{}", run.log_tail);
    }

    #[test]
    fn the_log_tail_keeps_the_last_8_kib() {
        let d = tempfile::tempdir().unwrap();
        // ~120 KB of numbered lines, then a last line.
        let run = run_check(
            &sh("i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done; echo the-end"),
            d.path(),
            Duration::from_secs(120),
            "abc",
        )
        .unwrap();
        assert_eq!(run.exit_code, Some(0));
        assert!(run.log_tail.len() <= LOG_TAIL_BYTES);
        assert!(run.log_tail.len() > LOG_TAIL_BYTES - 20);
        assert!(run.log_tail.ends_with("line-19999\nthe-end\n"));
        assert!(!run.log_tail.contains("line-1\n"));
    }

    #[test]
    fn cutting_keeps_characters_whole() {
        let s = "é".repeat(LOG_TAIL_BYTES);
        let kept = keep_end(s);
        assert!(kept.len() <= LOG_TAIL_BYTES);
        assert!(kept.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_hubs_settings_are_not_inherited() {
        let vars = [
            ("PATH", "/bin"),
            ("AGENTCOM_ADMIN_TOKEN", "secret"),
            ("HOME", "/root"),
            ("AGENTCOM_TLS__KEY_FILE", "k"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let removed: Vec<String> = withheld(vars.into_iter()).collect();
        assert_eq!(
            removed,
            vec!["AGENTCOM_ADMIN_TOKEN", "AGENTCOM_TLS__KEY_FILE"]
        );
    }
}
