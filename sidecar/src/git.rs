//! The git workflow that keeps agents off stale main and on their own
//! branches.
//!
//! `start_task`: fetch the remote's main (and this agent's branches, so
//! the remote-tracking refs say what the remote holds), prove the fetched
//! main is what the remote has right now (`ls-remote`), refuse a dirty
//! work tree, move the local main to it, check out a fresh branch
//! `{agent_id}/{task_id}` from it, and install the pre-push hook that
//! refuses a push to main or outside `{agent_id}/`. `push_task`: publish
//! the task branch after the runner: nothing to push when it has no
//! commit beyond its base, else a push leased on the remote-tracking ref
//! (so a retry on the same agent replaces its own earlier push, and
//! nothing else). `submit` pushes the checked-out task branch by hand;
//! `status` reports where the work tree stands.
//!
//! Plain `git` commands, blocking: callers run them off the daemon loop.
//! Every name it puts in a command is the sidecar's own (settings) or was
//! validated before (`validate.rs`: task ids, the agent id). It never
//! knows about attempts or the hub.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::config::Git;

/// What `start_task` prepared: the task's branch and the main commit it
/// starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub branch: String,
    pub base: String,
}

/// What `push_task` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The branch's commit as pushed (the base when there was nothing to
    /// push).
    pub head: String,
    /// Commits beyond the base; 0: nothing was pushed.
    pub commits: u64,
}

/// Why `push_task` did not push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFailed {
    /// What went wrong, with git's words.
    pub message: String,
    /// The runner removed the task branch from the clone: the task's
    /// doing (another machine would fare no better), not the machine's.
    pub branch_gone: bool,
}

impl From<String> for PushFailed {
    fn from(message: String) -> Self {
        PushFailed {
            message,
            branch_gone: false,
        }
    }
}

impl From<&str> for PushFailed {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl std::fmt::Display for PushFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The first line after the shebang of the hook the sidecar installs: a
/// `pre-push` file without it is someone else's and is left alone.
const HOOK_MARK: &str = "# agentcom-sidecar pre-push hook";

pub(crate) fn branch_name(agent_id: &str, task_id: &str) -> String {
    format!("{agent_id}/{task_id}")
}

fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.join(" "),
            last_chars(String::from_utf8_lossy(&out.stderr).trim(), MAX_GIT_OUTPUT)
        ))
    }
}

/// How much of git's error output a failure keeps (its end).
const MAX_GIT_OUTPUT: usize = 2000;

/// The last `n` characters of `s` (with '…' before them if cut).
fn last_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        return s.to_string();
    }
    let tail: String = s.chars().skip(count - n).collect();
    format!("…{tail}")
}

/// The commit `reference` names, or `None` if there is no such ref.
fn commit_of(repo: &Path, reference: &str) -> Result<Option<String>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{reference}^{{commit}}"))
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(Some(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )),
        Some(1) => Ok(None),
        _ => Err(format!(
            "git rev-parse {reference} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// How often the sidecar fetches main when it moved during the fetch.
const MAIN_FETCH_ATTEMPTS: u32 = 5;

/// Fetch main, prove it is current, branch from it, guard the pushes.
pub fn start_task(cfg: &Git, agent_id: &str, task_id: &str) -> Result<Prepared, String> {
    crate::validate::agent_id(agent_id)?;
    crate::validate::task_id(task_id)?;
    let repo = cfg.repo_dir.as_path();
    let (remote, main) = (cfg.remote.as_str(), cfg.main_branch.as_str());
    let tracking = format!("refs/remotes/{remote}/{main}");
    // This agent's branches too: their remote-tracking refs are the lease
    // of the push after the runner (see `push_task`). Main may move
    // between the fetch and the check that it is current (the hub merges
    // all the time): fetch again, a few times, before giving up.
    let mut attempt = 0;
    let fetched = loop {
        git(
            repo,
            &[
                "fetch",
                "--prune",
                remote,
                &format!("+refs/heads/{main}:{tracking}"),
                &format!("+refs/heads/{agent_id}/*:refs/remotes/{remote}/{agent_id}/*"),
            ],
        )?;
        let fetched = git(repo, &["rev-parse", &tracking])?;
        let listed = git(repo, &["ls-remote", remote, &format!("refs/heads/{main}")])?;
        let remote_sha = listed.split_whitespace().next().unwrap_or_default();
        if remote_sha == fetched {
            break fetched;
        }
        attempt += 1;
        if attempt >= MAIN_FETCH_ATTEMPTS {
            return Err(format!(
                "{remote}/{main} kept moving while fetching ({MAIN_FETCH_ATTEMPTS} times; last fetched {fetched}, remote now {remote_sha}); not branching from a stale main"
            ));
        }
    };
    let dirty = git(repo, &["status", "--porcelain"])?;
    if !dirty.is_empty() {
        return Err(format!(
            "the work tree in {} has uncommitted changes:\n{dirty}",
            repo.display()
        ));
    }
    let branch = branch_name(agent_id, task_id);
    git(
        repo,
        &["checkout", "--quiet", "--no-track", "-B", &branch, &fetched],
    )?;
    // Keep the local main equal to the remote's, for anyone who looks.
    git(
        repo,
        &["update-ref", &format!("refs/heads/{main}"), &fetched],
    )?;
    install_pre_push_hook(cfg, agent_id)?;
    Ok(Prepared {
        branch,
        base: fetched,
    })
}

/// Publish the task branch: count its commits beyond `base`; none: push
/// nothing. Else push `refs/heads/<branch>` with a lease on its
/// remote-tracking ref (what the fetch before the runner found, or what a
/// push of this clone put there since): an earlier attempt's push of the
/// same branch is replaced, a branch someone else moved is not.
pub fn push_task(cfg: &Git, branch: &str, base: &str) -> Result<Pushed, PushFailed> {
    let repo = cfg.repo_dir.as_path();
    if base.is_empty() || !base.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("the base {base:?} is not a commit id").into());
    }
    let local = format!("refs/heads/{branch}");
    let head = commit_of(repo, &local)?.ok_or_else(|| PushFailed {
        message: format!("the task branch {branch} no longer exists in the clone"),
        branch_gone: true,
    })?;
    let commits = git(repo, &["rev-list", "--count", &format!("{base}..{head}")])?;
    let commits: u64 = commits
        .parse()
        .map_err(|e| PushFailed::from(format!("git rev-list --count said {commits:?}: {e}")))?;
    if commits == 0 {
        return Ok(Pushed {
            head: base.to_string(),
            commits,
        });
    }
    push_leased(cfg, branch)?;
    Ok(Pushed { head, commits })
}

/// When the last commit on `branch` was made (its committer time), if the
/// branch has moved from `base`; `None` while it still is `base`.
pub fn last_commit(
    cfg: &Git,
    branch: &str,
    base: &str,
) -> Result<Option<agentcom_protocol::Timestamp>, String> {
    let repo = cfg.repo_dir.as_path();
    let line = git(
        repo,
        &[
            "log",
            "-1",
            "--format=%H %ct",
            &format!("refs/heads/{branch}"),
            "--",
        ],
    )?;
    let (head, secs) = line
        .split_once(' ')
        .ok_or_else(|| format!("git log said {line:?}"))?;
    if head == base {
        return Ok(None);
    }
    let secs: i64 = secs
        .trim()
        .parse()
        .map_err(|e| format!("git log said {line:?}: {e}"))?;
    Ok(Some(agentcom_protocol::Timestamp::from_millis(
        secs.saturating_mul(1000),
    )))
}

/// `git push <remote> refs/heads/B:refs/heads/B`, leased on
/// `refs/remotes/<remote>/B` (absent: the remote must not have B).
fn push_leased(cfg: &Git, branch: &str) -> Result<(), String> {
    let repo = cfg.repo_dir.as_path();
    let reference = format!("refs/heads/{branch}");
    let expected = commit_of(repo, &format!("refs/remotes/{}/{branch}", cfg.remote))?;
    git(
        repo,
        &[
            "push",
            "--quiet",
            &format!(
                "--force-with-lease={reference}:{}",
                expected.unwrap_or_default()
            ),
            &cfg.remote,
            &format!("{reference}:{reference}"),
        ],
    )?;
    Ok(())
}

/// Where git runs this clone's hooks (`core.hooksPath` if set).
fn hooks_dir(repo: &Path) -> Result<PathBuf, String> {
    let dir = git(
        repo,
        &["rev-parse", "--path-format=absolute", "--git-path", "hooks"],
    )?;
    Ok(PathBuf::from(dir))
}

/// The `pre-push` hook for agent `agent_id`: it refuses a push to
/// `refs/heads/<main_branch>` and to any ref outside
/// `refs/heads/<agent_id>/`, naming the ref.
pub(crate) fn pre_push_hook(agent_id: &str, main_branch: &str) -> String {
    let main = sh_quote(&format!("refs/heads/{main_branch}"));
    let own = sh_quote(&format!("refs/heads/{agent_id}/"));
    format!(
        r#"#!/bin/sh
{HOOK_MARK}: written before every task; edits are overwritten.
# A task's work goes to the agent's own branch, pushed by the sidecar; main
# moves only through the hub's merge queue.
main={main}
own={own}
refused=0
while read -r local_ref local_oid remote_ref remote_oid; do
  case "$remote_ref" in
    "$main")
      echo "agentcom: refusing to push to $remote_ref: main moves only through the hub's merge queue" >&2
      refused=1 ;;
    "$own"?*) ;;
    *)
      echo "agentcom: refusing to push to $remote_ref: this agent pushes only to branches under $own" >&2
      refused=1 ;;
  esac
done
exit $refused
"#
    )
}

/// `s` as one single-quoted `sh` word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Write the agent's `pre-push` hook (0755) where git will run it; refuse
/// to replace a hook the sidecar did not write.
pub fn install_pre_push_hook(cfg: &Git, agent_id: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    crate::validate::agent_id(agent_id)?;
    let dir = hooks_dir(&cfg.repo_dir)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("pre-push");
    match std::fs::read_to_string(&path) {
        Ok(text)
            if !text
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with(HOOK_MARK)) =>
        {
            return Err(format!(
                "{} is a pre-push hook the sidecar did not write; move it away: the sidecar installs its own, which refuses pushes to {} and outside {agent_id}/",
                path.display(),
                cfg.main_branch
            ));
        }
        _ => {}
    }
    let text = pre_push_hook(agent_id, &cfg.main_branch);
    let tmp = dir.join(".pre-push.agentcom-tmp");
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    written.map_err(|e| format!("cannot install the pre-push hook {}: {e}", path.display()))?;
    Ok(path)
}

/// Push the checked-out task branch to the remote (leased, like
/// `push_task`).
pub fn submit(cfg: &Git) -> Result<String, String> {
    let repo = cfg.repo_dir.as_path();
    let branch = git(repo, &["symbolic-ref", "--short", "HEAD"])?;
    if branch == cfg.main_branch {
        return Err(format!(
            "refusing to push {}: check out a task branch first",
            cfg.main_branch
        ));
    }
    push_leased(cfg, &branch)?;
    Ok(branch)
}

/// A short report: branch, commits behind the remote main, dirty or clean.
pub fn status(cfg: &Git) -> Result<String, String> {
    let repo = cfg.repo_dir.as_path();
    let branch =
        git(repo, &["symbolic-ref", "--short", "HEAD"]).unwrap_or_else(|_| "(detached)".into());
    let tracking = format!("{}/{}", cfg.remote, cfg.main_branch);
    let behind = git(repo, &["rev-list", "--count", &format!("HEAD..{tracking}")])
        .unwrap_or_else(|_| "?".into());
    let dirty = !git(repo, &["status", "--porcelain"])?.is_empty();
    Ok(format!(
        "branch {branch}; {behind} commit(s) behind {tracking} (as last fetched); work tree {}",
        if dirty { "dirty" } else { "clean" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::testing::sh;

    /// A bare "remote" with one commit on main, and a clone of it.
    fn repos(name: &str) -> (PathBuf, PathBuf, Git) {
        let root = std::env::temp_dir().join(format!("agentcom-git-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        sh(&root, "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null && cd seed && git config user.email t@t && git config user.name t && echo 1 > f && git add f && git commit -qm one && git push -q origin main");
        sh(&root, "git clone -q remote.git work && cd work && git config user.email t@t && git config user.name t");
        let cfg = Git {
            repo: Some("app".into()),
            repo_dir: root.join("work"),
            remote: "origin".into(),
            main_branch: "main".into(),
        };
        (root.clone(), root.join("seed"), cfg)
    }

    #[test]
    fn branches_from_the_freshly_fetched_main() {
        let (root, seed, cfg) = repos("fresh");
        // main moves on after the agent cloned: the agent's clone is stale.
        sh(
            &seed,
            "echo 2 > f && git commit -qam two && git push -q origin main",
        );
        let p = start_task(&cfg, "loash", "T1").unwrap();
        assert_eq!(p.branch, "loash/T1");
        let head = git(&cfg.repo_dir, &["rev-parse", "HEAD"]).unwrap();
        let remote_main = git(&seed, &["rev-parse", "HEAD"]).unwrap();
        assert_eq!(head, remote_main, "branched from the remote's newest main");
        assert_eq!(
            git(&cfg.repo_dir, &["rev-parse", "main"]).unwrap(),
            remote_main
        );
        sh(
            &cfg.repo_dir,
            "echo work > g && git add g && git commit -qm work",
        );
        assert_eq!(submit(&cfg).unwrap(), "loash/T1");
        let pushed = git(
            &root.join("remote.git"),
            &["rev-parse", "refs/heads/loash/T1"],
        )
        .unwrap();
        assert_eq!(pushed, git(&cfg.repo_dir, &["rev-parse", "HEAD"]).unwrap());
        assert!(status(&cfg).unwrap().contains("loash/T1"));
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn refuses_a_dirty_work_tree_and_an_unreachable_remote() {
        let (root, _seed, cfg) = repos("dirty");
        std::fs::write(cfg.repo_dir.join("stray"), "x").unwrap();
        assert!(start_task(&cfg, "a", "T2")
            .unwrap_err()
            .contains("uncommitted"));
        std::fs::remove_file(cfg.repo_dir.join("stray")).unwrap();
        let broken = Git {
            remote: "nowhere".into(),
            ..cfg.clone()
        };
        assert!(start_task(&broken, "a", "T3").is_err());
        std::fs::remove_dir_all(root).ok();
    }

    /// `git` in `dir`: (success, stdout + stderr).
    fn try_git(dir: &Path, args: &[&str]) -> (bool, String) {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn remote_branch(root: &Path, branch: &str) -> Option<String> {
        commit_of(&root.join("remote.git"), &format!("refs/heads/{branch}")).unwrap()
    }

    #[test]
    fn the_pre_push_hook_refuses_main_and_other_agents_branches() {
        let (root, _seed, cfg) = repos("hook");
        start_task(&cfg, "loash", "T1").unwrap();
        let hook = hooks_dir(&cfg.repo_dir).unwrap().join("pre-push");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&hook).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        sh(
            &cfg.repo_dir,
            "echo w > g && git add g && git commit -qm work",
        );
        for (target, why) in [
            (
                "HEAD:main",
                "refs/heads/main: main moves only through the hub's merge queue",
            ),
            (
                "HEAD:refs/heads/other/T1",
                "refs/heads/other/T1: this agent pushes only to branches under refs/heads/loash/",
            ),
            (
                "HEAD:refs/heads/loash",
                "refs/heads/loash: this agent pushes only",
            ),
            ("HEAD:refs/tags/v1", "refs/tags/v1: this agent pushes only"),
            (":refs/heads/main", "refs/heads/main: main moves only"),
        ] {
            let (ok, out) = try_git(&cfg.repo_dir, &["push", "origin", target]);
            assert!(!ok, "{target}: {out}");
            assert!(
                out.contains(&format!("agentcom: refusing to push to {why}")),
                "{target}: {out}"
            );
        }
        assert_eq!(remote_branch(&root, "other/T1"), None);
        // Its own branches go through (and so does deleting one).
        let (ok, out) = try_git(
            &cfg.repo_dir,
            &["push", "origin", "HEAD:refs/heads/loash/T1"],
        );
        assert!(ok, "{out}");
        let (ok, out) = try_git(&cfg.repo_dir, &["push", "origin", ":refs/heads/loash/T1"]);
        assert!(ok, "{out}");
        // Installing again rewrites it; someone else's hook is not replaced.
        start_task(&cfg, "loash", "T2").unwrap();
        std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
        let err = start_task(&cfg, "loash", "T3").unwrap_err();
        assert!(
            err.contains("a pre-push hook the sidecar did not write"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&hook).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn the_hook_goes_where_core_hooks_path_points() {
        let (root, _seed, cfg) = repos("hookspath");
        sh(&cfg.repo_dir, "git config core.hooksPath ../shared-hooks");
        let path = install_pre_push_hook(&cfg, "loash").unwrap();
        assert_eq!(path, root.join("shared-hooks/pre-push"));
        assert!(!cfg.repo_dir.join(".git/hooks/pre-push").exists());
        sh(
            &cfg.repo_dir,
            "echo w > g && git add g && git commit -qm work",
        );
        let (ok, out) = try_git(&cfg.repo_dir, &["push", "origin", "HEAD:main"]);
        assert!(
            !ok && out.contains("agentcom: refusing to push to refs/heads/main"),
            "{out}"
        );
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn a_branch_without_commits_is_not_pushed() {
        let (root, _seed, cfg) = repos("nochanges");
        let p = start_task(&cfg, "loash", "T1").unwrap();
        let pushed = push_task(&cfg, &p.branch, &p.base).unwrap();
        assert_eq!(
            pushed,
            Pushed {
                head: p.base.clone(),
                commits: 0
            }
        );
        assert_eq!(remote_branch(&root, "loash/T1"), None);
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn a_retry_on_the_same_agent_replaces_its_earlier_push() {
        let (root, seed, cfg) = repos("retry");
        let p1 = start_task(&cfg, "loash", "T1").unwrap();
        sh(
            &cfg.repo_dir,
            "echo one > g && git add g && git commit -qm first",
        );
        let first = push_task(&cfg, &p1.branch, &p1.base).unwrap();
        assert_eq!(first.commits, 1);
        assert_eq!(remote_branch(&root, "loash/T1"), Some(first.head.clone()));
        // main moves on; the retry starts again from the fresh main.
        sh(
            &seed,
            "echo 2 > f && git commit -qam two && git push -q origin main",
        );
        let p2 = start_task(&cfg, "loash", "T1").unwrap();
        assert_ne!(p2.base, p1.base);
        assert_eq!(git(&cfg.repo_dir, &["rev-parse", "HEAD"]).unwrap(), p2.base);
        sh(&cfg.repo_dir, "echo two > g && git add g && git commit -qm second && echo 3 > h && git add h && git commit -qm third");
        let second = push_task(&cfg, &p2.branch, &p2.base).unwrap();
        assert_eq!(second.commits, 2);
        assert_eq!(
            remote_branch(&root, "loash/T1"),
            Some(second.head.clone()),
            "not a fast-forward, and pushed all the same"
        );
        // A runner that pushed its own branch already: the lease follows.
        sh(&cfg.repo_dir, "echo 4 > h && git commit -qam fourth && git push -q origin HEAD:refs/heads/loash/T1 && echo 5 > h && git commit -qam fifth");
        let third = push_task(&cfg, &p2.branch, &p2.base).unwrap();
        assert_eq!(remote_branch(&root, "loash/T1"), Some(third.head));
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn the_lease_keeps_a_push_from_clobbering_a_branch_moved_by_someone_else() {
        let (root, seed, cfg) = repos("lease");
        let p = start_task(&cfg, "loash", "T1").unwrap();
        // Someone else writes the branch on the remote after the fetch.
        sh(&seed, "git checkout -qb x && echo other > o && git add o && git commit -qm other && git push -q --no-verify origin HEAD:refs/heads/loash/T1");
        let theirs = remote_branch(&root, "loash/T1");
        sh(
            &cfg.repo_dir,
            "echo mine > g && git add g && git commit -qm mine",
        );
        let err = push_task(&cfg, &p.branch, &p.base).unwrap_err();
        assert!(err.message.contains("stale info"), "{err}");
        assert!(!err.branch_gone);
        assert_eq!(remote_branch(&root, "loash/T1"), theirs);
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn a_branch_the_runner_deleted_is_named() {
        let (root, _seed, cfg) = repos("deleted");
        let p = start_task(&cfg, "loash", "T1").unwrap();
        sh(
            &cfg.repo_dir,
            "git checkout -q --detach && git branch -q -D loash/T1",
        );
        let err = push_task(&cfg, &p.branch, &p.base).unwrap_err();
        assert_eq!(
            err,
            PushFailed {
                message: "the task branch loash/T1 no longer exists in the clone".into(),
                branch_gone: true
            }
        );
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn the_last_commit_is_seen_once_the_branch_moves_from_its_base() {
        let (root, _seed, cfg) = repos("last-commit");
        let p = start_task(&cfg, "loash", "T1").unwrap();
        assert_eq!(last_commit(&cfg, &p.branch, &p.base), Ok(None));
        sh(
            &cfg.repo_dir,
            "echo w > g && git add g && GIT_COMMITTER_DATE='2030-01-02T03:04:05Z' git commit -qm work",
        );
        let at = last_commit(&cfg, &p.branch, &p.base).unwrap().unwrap();
        assert_eq!(at.to_rfc3339(), "2030-01-02T03:04:05.000Z");
        assert!(last_commit(&cfg, "loash/none", &p.base).is_err());
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn the_hook_quotes_what_it_names() {
        let hook = pre_push_hook("a1", "it's");
        assert!(hook.contains("main='refs/heads/it'\\''s'"), "{hook}");
        assert!(hook.contains("own='refs/heads/a1/'"), "{hook}");
        assert!(hook.lines().nth(1).unwrap().starts_with(HOOK_MARK));
    }
}
