//! The git workflow that keeps agents off stale main.
//!
//! `start_task`: fetch the remote's main, prove the fetched commit is what
//! the remote has right now (`ls-remote`), refuse a dirty work tree, move
//! the local main to it, and check out a fresh branch
//! `{agent_id}/{task_id}` from it. `submit` pushes the task branch;
//! `status` reports where the work tree stands. Plain `git` commands,
//! blocking: callers run them off the daemon loop. It never knows about
//! attempts or the hub.

use std::path::Path;
use std::process::Command;

use crate::config::Git;

/// What `start_task` prepared.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub branch: String,
    pub base: String,
}

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
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Fetch main, prove it is current, and branch from it.
pub fn start_task(cfg: &Git, agent_id: &str, task_id: &str) -> Result<Prepared, String> {
    let repo = cfg.repo_dir.as_path();
    let (remote, main) = (cfg.remote.as_str(), cfg.main_branch.as_str());
    let tracking = format!("refs/remotes/{remote}/{main}");
    git(
        repo,
        &[
            "fetch",
            "--prune",
            remote,
            &format!("+refs/heads/{main}:{tracking}"),
        ],
    )?;
    let fetched = git(repo, &["rev-parse", &tracking])?;
    let listed = git(repo, &["ls-remote", remote, &format!("refs/heads/{main}")])?;
    let remote_sha = listed.split_whitespace().next().unwrap_or_default();
    if remote_sha != fetched {
        return Err(format!(
            "{remote}/{main} moved while fetching (fetched {fetched}, remote now {remote_sha}); not branching from a stale main"
        ));
    }
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
    Ok(Prepared {
        branch,
        base: fetched,
    })
}

/// Push the current task branch to the remote.
pub fn submit(cfg: &Git) -> Result<String, String> {
    let repo = cfg.repo_dir.as_path();
    let branch = git(repo, &["symbolic-ref", "--short", "HEAD"])?;
    if branch == cfg.main_branch {
        return Err(format!(
            "refusing to push {}: check out a task branch first",
            cfg.main_branch
        ));
    }
    git(
        repo,
        &[
            "push",
            "--quiet",
            &cfg.remote,
            &format!("HEAD:refs/heads/{branch}"),
        ],
    )?;
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

    fn sh(dir: &Path, script: &str) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    }

    /// A bare "remote" with one commit on main, and a clone of it.
    fn repos(name: &str) -> (PathBuf, PathBuf, Git) {
        let root = std::env::temp_dir().join(format!("agentcom-git-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        sh(&root, "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null && cd seed && git config user.email t@t && git config user.name t && echo 1 > f && git add f && git commit -qm one && git push -q origin main");
        sh(&root, "git clone -q remote.git work && cd work && git config user.email t@t && git config user.name t");
        let cfg = Git {
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
}
