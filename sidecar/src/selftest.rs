//! The self-test's rules: what each observation of the machine means, as
//! a check that passed or failed with its detail in words, and for a
//! failure, the fix.
//!
//! It owns the checks (`hub`, `token`, `runner`, `git_remote`,
//! `state_dir`, `disk`), each verdict and its wording, the disk's limits
//! (at least [`MIN_FREE_BYTES`] and [`MIN_FREE_PERCENT`] free), the table
//! `agentcom-sidecar selftest` prints, what goes to the hub (the
//! failures as a [`SelfTestStatus`], the whole report as a verification
//! task's result) and when two reports say the same. With several hubs
//! (`hub_urls`), `hub` and `token` pass when one hub takes connections
//! and the token (the leader; the others are standbys), their detail
//! naming what each other hub answered. The observations
//! come from `probe.rs`. Pure: it never touches the disk, a process, a
//! socket or the clock (the time of a run is passed in).

use std::path::{Path, PathBuf};

use agentcom_protocol::{CheckFailure, NotLeader, SelfTestStatus, Timestamp};
use serde_json::{json, Value};

use crate::config::SidecarConfig;
use crate::refusal;

/// The least free space the disk check accepts, in bytes (1 GiB).
pub const MIN_FREE_BYTES: u64 = 1 << 30;

/// The least free space the disk check accepts, in percent of the
/// filesystem.
pub const MIN_FREE_PERCENT: u64 = 2;

/// How long `git ls-remote` may take before the check fails, in seconds.
pub const GIT_REMOTE_TIMEOUT_S: u64 = 20;

/// One check of the self-test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The hub's host and port take a TCP connection.
    Hub,
    /// The hub upgrades the WebSocket with the agent's token.
    Token,
    /// `runner.command[0]` is a program this user can run.
    Runner,
    /// `[git]`: the clone is a work tree and its remote answers.
    GitRemote,
    /// The state dir exists (or can be made) and takes a file.
    StateDir,
    /// Enough free space where the sidecar writes.
    Disk,
}

impl Check {
    /// Its name, in the table and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Check::Hub => "hub",
            Check::Token => "token",
            Check::Runner => "runner",
            Check::GitRemote => "git_remote",
            Check::StateDir => "state_dir",
            Check::Disk => "disk",
        }
    }
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub check: Check,
    pub ok: bool,
    /// What it found; for a failure, how to fix it.
    pub detail: String,
}

fn pass(check: Check, detail: String) -> CheckResult {
    CheckResult {
        check,
        ok: true,
        detail,
    }
}

fn failed(check: Check, detail: String) -> CheckResult {
    CheckResult {
        check,
        ok: false,
        detail,
    }
}

/// A whole run of the self-test, its checks in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Every check passed.
    pub fn ok(&self) -> bool {
        self.results.iter().all(|r| r.ok)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| !r.ok)
    }

    /// The table `agentcom-sidecar selftest` prints: CHECK, RESULT
    /// (`ok`/`FAIL`), DETAIL; one line a check.
    pub fn table(&self) -> String {
        let mut out = format!("{:<11} {:<6} {}\n", "CHECK", "RESULT", "DETAIL");
        for r in &self.results {
            let result = if r.ok { "ok" } else { "FAIL" };
            out.push_str(&format!(
                "{:<11} {:<6} {}\n",
                r.check.name(),
                result,
                r.detail
            ));
        }
        out
    }

    /// What the hub is told in `hello` and heartbeats: the failures only,
    /// with when the run was.
    pub fn status(&self, at: Timestamp) -> SelfTestStatus {
        SelfTestStatus {
            ok: self.ok(),
            failures: self
                .failures()
                .map(|r| CheckFailure {
                    check: r.check.name().to_string(),
                    detail: r.detail.clone(),
                })
                .collect(),
            at: Some(at),
        }
    }

    /// Every check as `{check, ok, detail}`, for a verification task's
    /// result.
    pub fn checks_json(&self) -> Value {
        Value::Array(
            self.results
                .iter()
                .map(|r| json!({"check": r.check.name(), "ok": r.ok, "detail": r.detail}))
                .collect(),
        )
    }

    /// The failures and their fixes in one line (a failed verification
    /// task's error).
    pub fn failures_line(&self) -> String {
        self.failures()
            .map(|r| format!("{}: {}", r.check.name(), r.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Whether `new` finds what `old` found (the same checks failing with
/// the same details), whenever each ran. No status yet counts as
/// passing.
pub fn same_findings(old: Option<&SelfTestStatus>, new: &SelfTestStatus) -> bool {
    let (old_ok, old_failures) = old.map_or((true, &[][..]), |s| (s.ok, &s.failures[..]));
    old_ok == new.ok && old_failures == new.failures.as_slice()
}

// ----- the checks ---------------------------------------------------------------------

/// `hub`: a TCP connection to `target` (`host:port` of `hub_url`) was
/// made, or not (one hub; several: [`hubs`]).
pub(crate) fn hub(target: &str, seen: Result<(), String>) -> CheckResult {
    match seen {
        Ok(()) => pass(Check::Hub, format!("{target} takes connections")),
        Err(e) => failed(
            Check::Hub,
            format!(
                "cannot reach the hub at {target}: {e}; is the hub running there, are hub_url's host and port right, and does no firewall stand between?"
            ),
        ),
    }
}

/// `hub` for each of the hubs (`hub_urls`): `(host:port, what was
/// seen)` in order. It passes when one takes connections (the one that
/// leads is enough); the detail names each that cannot be reached. One
/// hub: [`hub`].
pub(crate) fn hubs(seen: &[(String, Result<(), String>)]) -> CheckResult {
    if let [(target, seen)] = seen {
        return hub(target, seen.clone());
    }
    let reachable: Vec<&str> = seen
        .iter()
        .filter(|(_, s)| s.is_ok())
        .map(|(t, _)| t.as_str())
        .collect();
    let unreachable: Vec<String> = seen
        .iter()
        .filter_map(|(t, s)| s.as_ref().err().map(|e| format!("cannot reach {t}: {e}")))
        .collect();
    if reachable.is_empty() {
        return failed(
            Check::Hub,
            format!(
                "cannot reach any hub: {}; are the hubs running there, are hub_urls' hosts and ports right, and does no firewall stand between?",
                unreachable.join("; ")
            ),
        );
    }
    let take = if reachable.len() == 1 {
        "takes"
    } else {
        "take"
    };
    let mut detail = format!("{} {take} connections", reachable.join(", "));
    if !unreachable.is_empty() {
        detail.push_str(&format!(
            "; {} (one hub that leads is enough; is that one running?)",
            unreachable.join("; ")
        ));
    }
    pass(Check::Hub, detail)
}

/// What became of the WebSocket upgrade with the agent's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenSeen {
    /// 101: the hub took the token.
    Accepted,
    /// The hub answered with this status instead.
    Refused(u16),
    /// The hub answered 503 and, asked plainly, says it is a standby.
    Standby(NotLeader),
    /// No answer (network, TLS, timeout), in words.
    NoAnswer(String),
    /// Not tried: the hub cannot be reached at all.
    NotTried,
    /// Not tried: the token cannot be read (`token_file`), in words.
    NoToken(String),
}

/// `token`: the upgrade with the agent's token at the (first) hub.
#[cfg(test)]
pub(crate) fn token(cfg: &SidecarConfig, seen: TokenSeen) -> CheckResult {
    token_at(cfg, &cfg.hub_urls[0], seen)
}

/// `token` for each of the hubs (`hub_urls`), in order: it passes when
/// one takes the token (the leader; the others are standbys); the detail
/// says what each other answered. One hub: [`token`].
pub(crate) fn tokens(cfg: &SidecarConfig, seen: &[(String, TokenSeen)]) -> CheckResult {
    if let [(url, seen)] = seen {
        return token_at(cfg, url, seen.clone());
    }
    if let Some((url, no_token)) = seen
        .iter()
        .find(|(_, s)| matches!(s, TokenSeen::NoToken(_)))
    {
        return token_at(cfg, url, no_token.clone());
    }
    let said = |url: &str, s: &TokenSeen| match s {
        TokenSeen::Accepted => format!("{url} took it"),
        TokenSeen::Standby(answer) => refusal::not_leading(url, Some(answer)),
        TokenSeen::Refused(503) => refusal::not_leading(url, None),
        TokenSeen::Refused(status) => {
            refusal::upgrade_refused_in(cfg.hub_setting(), *status, url, &cfg.agent_id, &cfg.path)
                .message
        }
        TokenSeen::NoAnswer(e) => format!("no answer to the WebSocket upgrade at {url}: {e}"),
        TokenSeen::NotTried | TokenSeen::NoToken(_) => {
            format!("{url} not checked: it cannot be reached (see hub)")
        }
    };
    let accepted = seen
        .iter()
        .find(|(_, s)| *s == TokenSeen::Accepted)
        .map(|(url, _)| url.as_str());
    let others: Vec<String> = seen
        .iter()
        .filter(|(url, _)| Some(url.as_str()) != accepted)
        .map(|(url, s)| said(url, s))
        .collect();
    match accepted {
        Some(url) => pass(
            Check::Token,
            format!(
                "the hub at {url} took agent {}'s token; {}",
                cfg.agent_id,
                others.join("; ")
            ),
        ),
        None => failed(
            Check::Token,
            format!(
                "no hub took agent {}'s token: {}",
                cfg.agent_id,
                others.join("; ")
            ),
        ),
    }
}

/// `token` at the hub `url`.
fn token_at(cfg: &SidecarConfig, url: &str, seen: TokenSeen) -> CheckResult {
    match seen {
        TokenSeen::Accepted => pass(
            Check::Token,
            format!("the hub took agent {}'s token", cfg.agent_id),
        ),
        TokenSeen::Refused(status) => failed(
            Check::Token,
            refusal::upgrade_refused_in(cfg.hub_setting(), status, url, &cfg.agent_id, &cfg.path)
                .message,
        ),
        TokenSeen::Standby(answer) => failed(
            Check::Token,
            format!(
                "{}: list every hub in hub_urls (instead of hub_url) in {}",
                refusal::not_leading(url, Some(&answer)),
                cfg.path.display()
            ),
        ),
        TokenSeen::NoAnswer(e) => failed(
            Check::Token,
            format!("no answer to the WebSocket upgrade at {url}: {e}"),
        ),
        TokenSeen::NotTried => failed(
            Check::Token,
            "not checked: the hub cannot be reached (see hub)".into(),
        ),
        TokenSeen::NoToken(e) => failed(
            Check::Token,
            format!(
                "{e}: make token_file readable by this user, or set token in {}",
                cfg.path.display()
            ),
        ),
    }
}

/// What was found of `runner.command[0]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProgramSeen {
    /// A bare name that no directory of `PATH` holds (`PATH` as it was).
    NotOnPath { path_var: Option<String> },
    /// The program's file (as named, or found on `PATH`) is not there.
    Missing(PathBuf),
    /// It is there but is not a file (a directory, say).
    NotAFile(PathBuf),
    /// It is a file this user may not execute.
    NotExecutable(PathBuf),
    /// A file this user may execute.
    Runnable(PathBuf),
}

/// `runner`: `runner.command[0]` as found.
pub(crate) fn runner(cfg: &SidecarConfig, seen: ProgramSeen) -> CheckResult {
    let program = cfg.runner.command.first().map_or("", String::as_str);
    let config = cfg.path.display();
    match seen {
        ProgramSeen::Runnable(path) if path.as_os_str() == program => {
            pass(Check::Runner, format!("{} is executable", path.display()))
        }
        ProgramSeen::Runnable(path) => pass(
            Check::Runner,
            format!("{program} is {}, executable", path.display()),
        ),
        ProgramSeen::NotOnPath { path_var } => failed(
            Check::Runner,
            format!(
                "runner.command[0] {program:?} is not on the sidecar's PATH ({}): install it, or write its full path in runner.command in {config}",
                path_var.as_deref().unwrap_or("PATH is not set")
            ),
        ),
        ProgramSeen::Missing(path) => failed(
            Check::Runner,
            format!(
                "runner.command[0] {} does not exist: install the runner there, or fix runner.command in {config}",
                path.display()
            ),
        ),
        ProgramSeen::NotAFile(path) => failed(
            Check::Runner,
            format!(
                "runner.command[0] {} is not a file: point runner.command in {config} at the runner program",
                path.display()
            ),
        ),
        ProgramSeen::NotExecutable(path) => failed(
            Check::Runner,
            format!(
                "runner.command[0] {} is not executable by this user: chmod +x {} (or run the sidecar as a user who may run it)",
                path.display(),
                path.display()
            ),
        ),
    }
}

/// What `git` said of the clone and its remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GitSeen {
    /// `git` itself cannot be run.
    NoGit(String),
    /// `repo_dir` is not a git work tree (git's words).
    NotAWorkTree(String),
    /// `ls-remote` found the main branch.
    Answered,
    /// `ls-remote --exit-code` answered, without the main branch.
    NoMainBranch,
    /// `ls-remote` failed (git's words).
    Failed(String),
    /// `ls-remote` did not end in time and was killed.
    TimedOut,
}

/// `git_remote`: what git said (only with `[git]`).
pub(crate) fn git_remote(cfg: &SidecarConfig, seen: GitSeen) -> CheckResult {
    let Some(git) = &cfg.git else {
        return pass(Check::GitRemote, "no [git] section".into());
    };
    let (dir, remote, main) = (git.repo_dir.display(), &git.remote, &git.main_branch);
    let config = cfg.path.display();
    match seen {
        GitSeen::Answered => pass(
            Check::GitRemote,
            format!("remote {remote} of {dir} has branch {main}"),
        ),
        GitSeen::NoGit(e) => failed(
            Check::GitRemote,
            format!("cannot run git: {e}: install git"),
        ),
        GitSeen::NotAWorkTree(said) => failed(
            Check::GitRemote,
            format!(
                "[git] repo_dir {dir} is not a git work tree ({said}): clone the repository there, or fix repo_dir in {config}"
            ),
        ),
        GitSeen::NoMainBranch => failed(
            Check::GitRemote,
            format!(
                "remote {remote} of {dir} has no branch {main}: check [git] main_branch and remote in {config}"
            ),
        ),
        GitSeen::Failed(said) => failed(
            Check::GitRemote,
            format!(
                "git ls-remote {remote} in {dir} failed: {said}; check the remote's URL (git -C {dir} remote -v) and this machine's access to it (keys, credentials, network)"
            ),
        ),
        GitSeen::TimedOut => failed(
            Check::GitRemote,
            format!(
                "git ls-remote {remote} in {dir} did not answer within {GIT_REMOTE_TIMEOUT_S}s: check the network and the remote's URL (git -C {dir} remote -v)"
            ),
        ),
    }
}

/// `state_dir`: whether a probe file could be written there (made 0700
/// first if missing); `Err` with what failed, naming the path.
pub(crate) fn state_dir(cfg: &SidecarConfig, seen: Result<(), String>) -> CheckResult {
    match seen {
        Ok(()) => pass(
            Check::StateDir,
            format!("{} is writable", cfg.state_dir.display()),
        ),
        Err(e) => failed(Check::StateDir, format!("{e}: {}", cfg.state_dir_fix())),
    }
}

/// The free space of the filesystem a directory the sidecar writes to
/// is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    /// Which setting names the directory (`state_dir`, `repo_dir`).
    pub(crate) setting: &'static str,
    pub(crate) dir: PathBuf,
    /// Bytes free for this user, and the filesystem's size; `Err`: they
    /// could not be seen.
    pub(crate) seen: Result<(u64, u64), String>,
}

/// `disk`: enough free space on every filesystem the sidecar writes to:
/// at least [`MIN_FREE_BYTES`] and [`MIN_FREE_PERCENT`] of each.
pub(crate) fn disk(spaces: &[Space]) -> CheckResult {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for s in spaces {
        match &s.seen {
            Err(e) => bad.push(format!(
                "cannot see the free space for {} {}: {e}",
                s.setting,
                s.dir.display()
            )),
            Ok((free, total)) => {
                let percent = percent(*free, *total);
                let enough = *free >= MIN_FREE_BYTES
                    && u128::from(*free) * 100 >= u128::from(MIN_FREE_PERCENT) * u128::from(*total);
                let said = format!("{} free ({percent}%)", bytes(*free));
                if enough {
                    good.push(format!("{said} for {}", s.setting));
                } else {
                    bad.push(format!(
                        "only {said} on the filesystem of {} {}: free some space there (at least {} and {MIN_FREE_PERCENT}%){}",
                        s.setting,
                        s.dir.display(),
                        bytes(MIN_FREE_BYTES),
                        if s.setting == "state_dir" {
                            format!(
                                " — old task folders are in {}",
                                s.dir.join("tasks").display()
                            )
                        } else {
                            String::new()
                        }
                    ));
                }
            }
        }
    }
    if bad.is_empty() {
        pass(Check::Disk, good.join("; "))
    } else {
        failed(Check::Disk, bad.join("; "))
    }
}

/// `free` as a whole percentage of `total` (rounded down; 0 of 0 is 0).
fn percent(free: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (u128::from(free) * 100 / u128::from(total)) as u64
}

/// A size for people: GiB with one decimal from 1 GiB, else MiB.
fn bytes(n: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (MIB * 1024.0))
    } else {
        format!("{:.0} MiB", n as f64 / MIB)
    }
}

/// The directory whose filesystem holds `dir`: itself, or its nearest
/// ancestor that exists (`exists` says which do).
pub(crate) fn on_filesystem_of(dir: &Path, exists: impl Fn(&Path) -> bool) -> PathBuf {
    dir.ancestors()
        .find(|p| !p.as_os_str().is_empty() && exists(p))
        .unwrap_or_else(|| Path::new("/"))
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> SidecarConfig {
        let dir = std::env::temp_dir().join(format!("agentcom-selftest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("c{}.toml", extra.len()));
        std::fs::write(
            &p,
            format!(
                "hub_url = \"ws://127.0.0.1:4000/ws\"\nagent_id = \"loash\"\ntoken = \"t\"\nstate_dir = \"/srv/state\"\n[runner]\nmode = \"exec\"\ncommand = [\"claude-runner\"]\n{extra}"
            ),
        )
        .unwrap();
        SidecarConfig::load(&p).unwrap()
    }

    fn git_cfg() -> SidecarConfig {
        cfg("[git]\nrepo_dir = \"/w/app\"\n")
    }

    #[test]
    fn the_table_has_a_line_a_check_and_the_verdict() {
        let c = cfg("");
        let report = Report {
            results: vec![
                hub("127.0.0.1:4000", Ok(())),
                token(&c, TokenSeen::Refused(401)),
                runner(&c, ProgramSeen::Runnable("/usr/bin/claude-runner".into())),
            ],
        };
        assert!(!report.ok());
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("CHECK       RESULT DETAIL"), "{table}");
        assert!(
            lines[1].starts_with("hub         ok     127.0.0.1:4000"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("token       FAIL   the hub refused"),
            "{table}"
        );
        assert!(
            lines[3].contains("claude-runner is /usr/bin/claude-runner, executable"),
            "{table}"
        );
    }

    #[test]
    fn the_hub_is_told_the_failures_only_and_the_task_every_check() {
        let c = cfg("");
        let report = Report {
            results: vec![
                state_dir(&c, Ok(())),
                runner(
                    &c,
                    ProgramSeen::NotOnPath {
                        path_var: Some("/bin".into()),
                    },
                ),
            ],
        };
        let s = report.status(Timestamp(7));
        assert!(!s.ok);
        assert_eq!(s.at, Some(Timestamp(7)));
        assert_eq!(s.failures.len(), 1);
        assert_eq!(s.failures[0].check, "runner");
        assert!(s.failures[0]
            .detail
            .contains("not on the sidecar's PATH (/bin)"));
        let checks = report.checks_json();
        assert_eq!(checks[0]["check"], "state_dir");
        assert_eq!(checks[0]["ok"], true);
        assert_eq!(checks[1]["ok"], false);
        assert!(report
            .failures_line()
            .starts_with("runner: runner.command[0] \"claude-runner\""));
        let all_ok = Report {
            results: vec![state_dir(&c, Ok(()))],
        };
        let s = all_ok.status(Timestamp(8));
        assert!(s.ok && s.failures.is_empty());
    }

    #[test]
    fn findings_are_the_same_whenever_they_ran() {
        let c = cfg("");
        let failing = |at| {
            Report {
                results: vec![runner(&c, ProgramSeen::Missing("/x".into()))],
            }
            .status(Timestamp(at))
        };
        let passing = |at| Report::default().status(Timestamp(at));
        assert!(same_findings(Some(&failing(1)), &failing(2)));
        assert!(
            same_findings(None, &passing(1)),
            "nothing yet counts as passing"
        );
        assert!(!same_findings(None, &failing(1)));
        assert!(!same_findings(Some(&failing(1)), &passing(2)));
        let other = Report {
            results: vec![runner(&c, ProgramSeen::NotAFile("/x".into()))],
        }
        .status(Timestamp(3));
        assert!(
            !same_findings(Some(&failing(1)), &other),
            "different failures"
        );
    }

    #[test]
    fn each_runner_problem_names_its_fix() {
        let c = cfg("");
        let config = c.path.display().to_string();
        for (seen, said) in [
            (
                ProgramSeen::NotOnPath { path_var: None },
                "PATH is not set): install it, or write its full path in runner.command in ",
            ),
            (
                ProgramSeen::Missing("/opt/r".into()),
                "/opt/r does not exist: install the runner there, or fix runner.command in ",
            ),
            (
                ProgramSeen::NotAFile("/opt".into()),
                "/opt is not a file: point runner.command in ",
            ),
            (
                ProgramSeen::NotExecutable("/opt/r".into()),
                "not executable by this user: chmod +x /opt/r",
            ),
        ] {
            let r = runner(&c, seen.clone());
            assert!(!r.ok, "{seen:?}");
            assert!(r.detail.contains(said), "{seen:?}: {}", r.detail);
            if !matches!(seen, ProgramSeen::NotExecutable(_)) {
                assert!(r.detail.contains(&config), "{}", r.detail);
            }
        }
        let r = runner(&c, ProgramSeen::Runnable("claude-runner".into()));
        assert!(
            r.ok && r.detail == "claude-runner is executable",
            "{}",
            r.detail
        );
    }

    #[test]
    fn each_git_problem_names_its_fix() {
        let c = git_cfg();
        assert_eq!(
            git_remote(&cfg(""), GitSeen::Answered).detail,
            "no [git] section"
        );
        for (seen, said) in [
            (GitSeen::NoGit("No such file".into()), "install git"),
            (
                GitSeen::NotAWorkTree("fatal: not a git repository".into()),
                "[git] repo_dir /w/app is not a git work tree (fatal: not a git repository): clone the repository there, or fix repo_dir in ",
            ),
            (GitSeen::NoMainBranch, "remote origin of /w/app has no branch main: check [git] main_branch"),
            (
                GitSeen::Failed("fatal: '/gone' does not appear to be a git repository".into()),
                "git ls-remote origin in /w/app failed: fatal: '/gone' does not appear to be a git repository; check the remote's URL (git -C /w/app remote -v)",
            ),
            (GitSeen::TimedOut, "did not answer within 20s"),
        ] {
            let r = git_remote(&c, seen.clone());
            assert!(!r.ok, "{seen:?}");
            assert_eq!(r.check.name(), "git_remote");
            assert!(r.detail.contains(said), "{seen:?}: {}", r.detail);
        }
        let r = git_remote(&c, GitSeen::Answered);
        assert!(
            r.ok && r.detail == "remote origin of /w/app has branch main",
            "{}",
            r.detail
        );
    }

    #[test]
    fn the_state_dir_and_the_hub_name_their_fix() {
        let c = cfg("");
        let r = state_dir(
            &c,
            Err("cannot create /srv/state: Permission denied".into()),
        );
        assert!(!r.ok);
        assert_eq!(
            r.detail,
            format!(
                "cannot create /srv/state: Permission denied: set state_dir in {} to a directory this user can write",
                c.path.display()
            )
        );
        let r = hub("h:4000", Err("connection refused".into()));
        assert!(
            !r.ok && r.detail.contains("is the hub running there"),
            "{}",
            r.detail
        );
        let r = token(&c, TokenSeen::NotTried);
        assert!(!r.ok && r.detail.contains("see hub"));
        let r = token(
            &c,
            TokenSeen::NoToken("cannot read token_file /t: denied".into()),
        );
        assert!(!r.ok, "{}", r.detail);
        assert_eq!(
            r.detail,
            format!(
                "cannot read token_file /t: denied: make token_file readable by this user, or set token in {}",
                c.path.display()
            )
        );
        let r = token(&c, TokenSeen::Refused(404));
        assert!(
            r.detail.contains("no WebSocket at ws://127.0.0.1:4000/ws"),
            "{}",
            r.detail
        );
        assert!(token(&c, TokenSeen::Accepted).ok);
    }

    /// A config with `hub_urls = [A, B, C]`.
    fn several() -> SidecarConfig {
        let dir = std::env::temp_dir().join(format!("agentcom-selftest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("several.toml");
        std::fs::write(
            &p,
            "hub_urls = [\"ws://a:4000/ws\", \"ws://b:4000/ws\", \"ws://c:4000/ws\"]\nagent_id = \"loash\"\ntoken = \"t\"\nstate_dir = \"/srv/state\"\n[runner]\nmode = \"exec\"\ncommand = [\"claude-runner\"]\n",
        )
        .unwrap();
        SidecarConfig::load(&p).unwrap()
    }

    #[test]
    fn one_hub_of_several_that_leads_is_enough_and_each_other_is_named() {
        let refused = || Err::<(), String>("Connection refused".to_string());
        let r = hubs(&[
            ("a:4000".into(), refused()),
            ("b:4000".into(), Ok(())),
            ("c:4000".into(), Ok(())),
        ]);
        assert!(r.ok, "{}", r.detail);
        assert_eq!(
            r.detail,
            "b:4000, c:4000 take connections; cannot reach a:4000: Connection refused (one hub that leads is enough; is that one running?)"
        );
        let r = hubs(&[("a:4000".into(), refused()), ("b:4000".into(), refused())]);
        assert!(!r.ok);
        assert!(
            r.detail.starts_with("cannot reach any hub: cannot reach a:4000: Connection refused; cannot reach b:4000: Connection refused; are the hubs running there, are hub_urls' hosts"),
            "{}",
            r.detail
        );
        // One hub: as it always was.
        assert_eq!(hubs(&[("a:1".into(), Ok(()))]), hub("a:1", Ok(())));
        let r = hubs(&[("a:1".into(), Ok(())), ("b:1".into(), refused())]);
        assert!(
            r.detail
                .starts_with("a:1 takes connections; cannot reach b:1"),
            "{}",
            r.detail
        );

        let c = several();
        let leader = NotLeader::new("standby", Some("http://b:4000".into()));
        let r = tokens(
            &c,
            &[
                ("ws://a:4000/ws".into(), TokenSeen::Standby(leader.clone())),
                ("ws://b:4000/ws".into(), TokenSeen::Accepted),
                ("ws://c:4000/ws".into(), TokenSeen::NotTried),
            ],
        );
        assert!(r.ok, "{}", r.detail);
        assert_eq!(
            r.detail,
            "the hub at ws://b:4000/ws took agent loash's token; the hub at ws://a:4000/ws is a standby (503 not_leader: \"standby\"); the leader is \"http://b:4000\"; ws://c:4000/ws not checked: it cannot be reached (see hub)"
        );
        let r = tokens(
            &c,
            &[
                ("ws://a:4000/ws".into(), TokenSeen::Standby(leader)),
                ("ws://b:4000/ws".into(), TokenSeen::Refused(401)),
                ("ws://c:4000/ws".into(), TokenSeen::Refused(503)),
            ],
        );
        assert!(!r.ok);
        assert!(
            r.detail.starts_with(
                "no hub took agent loash's token: the hub at ws://a:4000/ws is a standby"
            ),
            "{}",
            r.detail
        );
        assert!(
            r.detail
                .contains("the hub refused this agent's token (401)")
                && r.detail
                    .contains("the hub at ws://c:4000/ws answered the WebSocket upgrade with 503"),
            "{}",
            r.detail
        );
        let r = tokens(
            &c,
            &[
                (
                    "ws://a:4000/ws".into(),
                    TokenSeen::NoToken("cannot read token_file /t".into()),
                ),
                (
                    "ws://b:4000/ws".into(),
                    TokenSeen::NoToken("cannot read token_file /t".into()),
                ),
            ],
        );
        assert!(
            !r.ok
                && r.detail
                    .starts_with("cannot read token_file /t: make token_file readable"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn one_hub_that_is_a_standby_says_to_list_every_hub() {
        let c = cfg("");
        let r = token(
            &c,
            TokenSeen::Standby(NotLeader::new("standby", Some("http://b:4000".into()))),
        );
        assert!(!r.ok);
        assert!(
            r.detail.contains("the leader is \"http://b:4000\": list every hub in hub_urls (instead of hub_url) in "),
            "{}",
            r.detail
        );
        assert_eq!(
            tokens(
                &c,
                &[("ws://127.0.0.1:4000/ws".into(), TokenSeen::Refused(404))]
            ),
            token(&c, TokenSeen::Refused(404))
        );
    }

    const GIB: u64 = 1 << 30;

    fn space(setting: &'static str, free: u64, total: u64) -> Space {
        Space {
            setting,
            dir: PathBuf::from("/srv/state"),
            seen: Ok((free, total)),
        }
    }

    #[test]
    fn the_disk_needs_a_gib_and_two_percent_free() {
        let r = disk(&[space("state_dir", 10 * GIB, 100 * GIB)]);
        assert!(r.ok, "{}", r.detail);
        assert_eq!(r.detail, "10.0 GiB free (10%) for state_dir");
        // 1 GiB of a 50 GiB disk is exactly 2 %: enough.
        assert!(disk(&[space("state_dir", GIB, 50 * GIB)]).ok);
        // Less than 1 GiB, however small the disk.
        let r = disk(&[space("state_dir", GIB - 1, 2 * GIB)]);
        assert!(!r.ok);
        assert!(
            r.detail.starts_with("only 1024 MiB free (49%) on the filesystem of state_dir /srv/state: free some space there (at least 1.0 GiB and 2%) — old task folders are in /srv/state/tasks"),
            "{}",
            r.detail
        );
        // Less than 2 %, however large the disk.
        let r = disk(&[space("state_dir", 10 * GIB, 1000 * GIB)]);
        assert!(
            !r.ok && r.detail.contains("10.0 GiB free (1%)"),
            "{}",
            r.detail
        );
        // Each filesystem counts; a failing one fails the check.
        let r = disk(&[
            space("state_dir", 10 * GIB, 100 * GIB),
            space("repo_dir", 0, 100 * GIB),
        ]);
        assert!(!r.ok);
        assert!(
            r.detail
                .starts_with("only 0 MiB free (0%) on the filesystem of repo_dir"),
            "{}",
            r.detail
        );
        assert!(!r.detail.contains("tasks"), "{}", r.detail);
        let r = disk(&[Space {
            setting: "repo_dir",
            dir: "/w".into(),
            seen: Err("No such file".into()),
        }]);
        assert!(!r.ok && r.detail == "cannot see the free space for repo_dir /w: No such file");
        assert!(!disk(&[space("state_dir", 0, 0)]).ok, "an empty filesystem");
    }

    #[test]
    fn a_missing_dir_is_on_the_filesystem_of_its_nearest_ancestor() {
        let exists = |p: &Path| p == Path::new("/srv") || p == Path::new("/");
        assert_eq!(
            on_filesystem_of(Path::new("/srv/a/b"), exists),
            Path::new("/srv")
        );
        assert_eq!(on_filesystem_of(Path::new("/x/y"), exists), Path::new("/"));
        assert_eq!(
            on_filesystem_of(Path::new("rel"), |_| false),
            Path::new("/")
        );
    }
}
