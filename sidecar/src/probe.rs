//! The self-test's observations of the machine: the thin I/O behind
//! `selftest.rs`.
//!
//! It owns looking: a TCP connection to the hub (short timeout), the
//! WebSocket upgrade with the agent's token (closed politely at once, no
//! `hello`; after a 503, what the hub says when asked plainly) — at each
//! hub, with several —, `runner.command[0]` on `PATH`, `git rev-parse` and
//! `git ls-remote` in the clone (killed, with its process group, after
//! [`GIT_REMOTE_TIMEOUT_S`]), a probe file written, fsynced and removed in
//! the state dir, and `statvfs` where the sidecar writes. It must never
//! judge what it saw (`selftest.rs` does), change anything but the state
//! dir's probe file (and the state dir itself, made 0700 if missing, as
//! the daemon would), or run on the daemon's loop: [`local`] blocks.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{host_port, SidecarConfig};
use crate::connection::{Connection, OpenFailed, Tls};
use crate::selftest::{self, GitSeen, ProgramSeen, Report, Space, TokenSeen, GIT_REMOTE_TIMEOUT_S};

/// How long the TCP connection to the hub may take.
const HUB_TIMEOUT: Duration = Duration::from_secs(5);

/// Every check: the hub and the token (async: they use the network),
/// then the local ones. For `agentcom-sidecar selftest`.
/// With several hubs (`hub_urls`) each is reached (all at once) and each
/// reachable one is asked to upgrade with the token.
pub async fn full(cfg: &SidecarConfig) -> Report {
    let mut results = Vec::new();
    let targets: Vec<String> = cfg
        .hub_urls
        .iter()
        .map(|url| host_port(url).unwrap_or_else(|| url.clone()))
        .collect();
    let reached = futures_util::future::join_all(targets.iter().map(|t| reach(t))).await;
    let mut tokens = Vec::new();
    for (url, seen) in cfg.hub_urls.iter().zip(&reached) {
        let token_seen = if seen.is_ok() {
            upgrade(cfg, url).await
        } else {
            TokenSeen::NotTried
        };
        tokens.push((url.clone(), token_seen));
    }
    results.push(selftest::hubs(
        &targets.into_iter().zip(reached).collect::<Vec<_>>(),
    ));
    results.push(selftest::tokens(cfg, &tokens));
    results.extend(local(cfg).results);
    Report { results }
}

/// The checks of this machine alone (no hub): `runner`, `git_remote`
/// (with `[git]`), `state_dir`, `disk`. Blocks (git may take
/// [`GIT_REMOTE_TIMEOUT_S`]): run it off the daemon's loop.
pub fn local(cfg: &SidecarConfig) -> Report {
    let mut results = vec![selftest::runner(cfg, program(cfg))];
    if let Some(git) = &cfg.git {
        results.push(selftest::git_remote(
            cfg,
            remote(&git.repo_dir, &git.remote, &git.main_branch),
        ));
    }
    results.push(selftest::state_dir(cfg, writable(&cfg.state_dir)));
    let mut spaces = vec![space("state_dir", &cfg.state_dir)];
    if let Some(git) = &cfg.git {
        spaces.push(space("repo_dir", &git.repo_dir));
    }
    results.push(selftest::disk(&spaces));
    Report { results }
}

/// A TCP connection to `target` (`host:port`), then dropped.
async fn reach(target: &str) -> Result<(), String> {
    match tokio::time::timeout(HUB_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", HUB_TIMEOUT.as_secs())),
    }
}

/// The WebSocket upgrade at `url` with the agent's token; closed politely
/// if it succeeds. After a 503, what the hub says when asked plainly (a
/// standby names the leader).
async fn upgrade(cfg: &SidecarConfig, url: &str) -> TokenSeen {
    let token = match cfg.token() {
        Ok(t) => t,
        Err(e) => return TokenSeen::NoToken(e),
    };
    let tls = match Tls::load(&cfg.hub_urls, cfg.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => return TokenSeen::NoAnswer(e),
    };
    match Connection::open(url, &token, &tls).await {
        Ok(conn) => {
            conn.close_politely(Duration::from_secs(2)).await;
            TokenSeen::Accepted
        }
        Err(OpenFailed::Status(503)) => match Connection::standby_answer(url, &token, &tls).await {
            Some(answer) => TokenSeen::Standby(answer),
            None => TokenSeen::Refused(503),
        },
        Err(OpenFailed::Status(status)) => TokenSeen::Refused(status),
        Err(OpenFailed::Other(e)) => TokenSeen::NoAnswer(e),
    }
}

/// `runner.command[0]`, found as `execvp` would: a name with a '/' as it
/// is, a bare name in the first directory of `PATH` that holds it.
fn program(cfg: &SidecarConfig) -> ProgramSeen {
    let name = cfg.runner.command.first().map_or("", String::as_str);
    if name.contains('/') {
        return seen_at(PathBuf::from(name));
    }
    let path_var = std::env::var("PATH").ok();
    let mut not_runnable = None;
    for dir in path_var.iter().flat_map(|p| p.split(':')) {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        match seen_at(candidate) {
            found @ ProgramSeen::Runnable(_) => return found,
            found @ ProgramSeen::NotExecutable(_) => {
                not_runnable.get_or_insert(found);
            }
            _ => {}
        }
    }
    not_runnable.unwrap_or(ProgramSeen::NotOnPath { path_var })
}

fn seen_at(path: PathBuf) -> ProgramSeen {
    match std::fs::metadata(&path) {
        Err(_) => ProgramSeen::Missing(path),
        Ok(m) if !m.is_file() => ProgramSeen::NotAFile(path),
        Ok(_) => match nix::unistd::access(path.as_path(), nix::unistd::AccessFlags::X_OK) {
            Ok(()) => ProgramSeen::Runnable(path),
            Err(_) => ProgramSeen::NotExecutable(path),
        },
    }
}

/// Whether `repo_dir` is a work tree whose `remote` has `main`.
fn remote(repo_dir: &Path, remote: &str, main: &str) -> GitSeen {
    match git_within(
        repo_dir,
        &["rev-parse", "--is-inside-work-tree"],
        Duration::from_secs(GIT_REMOTE_TIMEOUT_S),
    ) {
        Err(e) => return GitSeen::NoGit(e),
        Ok(Ended::Exited(0, out)) if out.trim() == "true" => {}
        Ok(Ended::Exited(_, said)) => {
            let said = if said.trim().is_empty() || said.trim() == "false" {
                "it is not inside a work tree".to_string()
            } else {
                said
            };
            return GitSeen::NotAWorkTree(said);
        }
        Ok(Ended::TimedOut) => return GitSeen::TimedOut,
    }
    let main_ref = format!("refs/heads/{main}");
    match git_within(
        repo_dir,
        &[
            "ls-remote",
            "--exit-code",
            "--end-of-options",
            remote,
            &main_ref,
        ],
        Duration::from_secs(GIT_REMOTE_TIMEOUT_S),
    ) {
        Err(e) => GitSeen::NoGit(e),
        Ok(Ended::Exited(0, _)) => GitSeen::Answered,
        Ok(Ended::Exited(2, _)) => GitSeen::NoMainBranch,
        Ok(Ended::Exited(_, said)) => GitSeen::Failed(said),
        Ok(Ended::TimedOut) => GitSeen::TimedOut,
    }
}

/// How a git command ended.
enum Ended {
    /// Its exit code (-1: a signal) and, on 0, its output, else the end of
    /// its error output.
    Exited(i32, String),
    TimedOut,
}

/// `git -C dir args…` in its own process group, no prompts; killed with
/// its group (an ssh it started too) when `timeout` is up.
fn git_within(dir: &Path, args: &[&str], timeout: Duration) -> Result<Ended, String> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Each pipe is read on a thread of its own, so a chatty git never
    // blocks on a full pipe; its text is awaited a little after git ends
    // (a helper that escaped the group could hold a pipe open forever).
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.by_ref().take(64 * 1024).read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        rx
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped")));
    let err = read_all(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let Some(status) = status else {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        return Ok(Ended::TimedOut);
    };
    // Anything it left in its group goes too, so the pipes close.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let text = |rx: std::sync::mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
    };
    let (out, err) = (text(out), text(err));
    let code = status.code().unwrap_or(-1);
    let said = if code == 0 {
        out
    } else {
        last_line_block(&err)
    };
    Ok(Ended::Exited(code, said))
}

/// The end of git's error output, on one line (at most 500 characters).
fn last_line_block(err: &str) -> String {
    let joined = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let count = joined.chars().count();
    if count <= 500 {
        joined
    } else {
        format!("…{}", joined.chars().skip(count - 500).collect::<String>())
    }
}

/// Make `dir` if it is missing (0700), then write, fsync and remove a
/// probe file in it.
fn writable(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let probe = dir.join(format!(
        ".selftest-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(b"agentcom-sidecar self-test\n")?;
            f.sync_all()
        });
    let removed = std::fs::remove_file(&probe);
    written.map_err(|e| format!("cannot write a file in {}: {e}", dir.display()))?;
    removed.map_err(|e| format!("cannot remove {}: {e}", probe.display()))
}

/// The free space (for this user) and size of the filesystem `dir` is
/// (or would be) on.
// `statvfs`'s counts are u32 on some 32-bit systems: the conversions are
// for them.
#[allow(clippy::useless_conversion)]
fn space(setting: &'static str, dir: &Path) -> Space {
    let on = selftest::on_filesystem_of(dir, Path::exists);
    let seen = nix::sys::statvfs::statvfs(on.as_path())
        .map(|s| {
            let unit = u64::from(s.fragment_size());
            (
                u64::from(s.blocks_available()).saturating_mul(unit),
                u64::from(s.blocks()).saturating_mul(unit),
            )
        })
        .map_err(|e| e.desc().to_string());
    Space {
        setting,
        dir: dir.to_path_buf(),
        seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sh;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentcom-probe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_remote_with_main_answers_and_a_missing_one_fails_with_gits_words() {
        let d = tmp("remote");
        sh(&d, "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null && cd seed && git config user.email t@t && git config user.name t && echo 1 > f && git add f && git commit -qm one && git push -q origin main");
        sh(&d, "git clone -q remote.git work && mkdir plain");
        let work = d.join("work");
        assert_eq!(remote(&work, "origin", "main"), GitSeen::Answered);
        assert_eq!(remote(&work, "origin", "trunk"), GitSeen::NoMainBranch);
        match remote(&d.join("plain"), "origin", "main") {
            GitSeen::NotAWorkTree(said) => assert!(said.contains("not a git repository"), "{said}"),
            other => panic!("{other:?}"),
        }
        std::fs::rename(d.join("remote.git"), d.join("gone.git")).unwrap();
        match remote(&work, "origin", "main") {
            GitSeen::Failed(said) => assert!(said.contains("remote.git"), "{said}"),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_git_command_over_its_time_is_killed_with_its_group() {
        let d = tmp("slow");
        sh(&d, "git init -q .");
        // An alias that runs a shell which outlives git unless its group
        // is killed.
        let started = Instant::now();
        let ended = git_within(
            &d,
            &["-c", "alias.slow=!sleep 30", "slow"],
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(matches!(ended, Ended::TimedOut));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_state_dir_is_made_private_and_probed_without_a_trace() {
        let d = tmp("state");
        let dir = d.join("a/b");
        writable(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is gone"
        );
        std::fs::write(d.join("file"), "x").unwrap();
        let e = writable(&d.join("file/sub")).unwrap_err();
        assert!(
            e.starts_with(&format!("cannot create {}", d.join("file/sub").display())),
            "{e}"
        );
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn programs_are_found_as_exec_would() {
        let d = tmp("programs");
        let exe = d.join("run.sh");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(seen_at(exe.clone()), ProgramSeen::Runnable(exe.clone()));
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Root may execute a file with no x bit only if some x bit is set.
        assert_eq!(
            seen_at(exe.clone()),
            ProgramSeen::NotExecutable(exe.clone())
        );
        assert_eq!(seen_at(d.clone()), ProgramSeen::NotAFile(d.clone()));
        assert_eq!(
            seen_at(d.join("nope")),
            ProgramSeen::Missing(d.join("nope"))
        );
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn the_free_space_is_seen_on_the_nearest_existing_dir() {
        let d = tmp("space");
        let s = space("state_dir", &d.join("not/yet"));
        let (free, total) = s.seen.unwrap();
        assert!(total > 0 && free <= total, "{free} of {total}");
        std::fs::remove_dir_all(d).ok();
    }
}
