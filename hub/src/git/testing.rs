//! Test fixtures with real git: a bare "origin" repository (what agents
//! push to and the hub merges into) with a `main` branch, and a work
//! clone of it to make commits and push them as an agent or a person
//! would. Everything lives in a temporary directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Git in `dir` as a test's person would run it (their own identity,
/// nothing inherited that could point elsewhere); panics on failure.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new("git");
    for v in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
    ] {
        c.env_remove(v);
    }
    let out = c
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Tester",
            "-c",
            "user.email=tester@localhost",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgSign=false",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(crate) struct Fixture {
    pub tmp: tempfile::TempDir,
    /// The bare repository ("the remote").
    pub origin: PathBuf,
    /// A person's clone of it, with `main` checked out.
    pub work: PathBuf,
}

impl Fixture {
    /// An origin whose main has one commit: `README` and `status.txt`
    /// ("ok").
    pub(crate) fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("temp dir");
        let origin = tmp.path().join("origin.git");
        let work = tmp.path().join("work");
        git(tmp.path(), &["init", "--quiet", "--bare", "origin.git"]);
        git(tmp.path(), &["init", "--quiet", "-b", "main", "work"]);
        git(&work, &["config", "user.name", "Tester"]);
        git(&work, &["config", "user.email", "tester@localhost"]);
        git(
            &work,
            &["remote", "add", "origin", &origin.display().to_string()],
        );
        let f = Fixture { tmp, origin, work };
        f.commit(&[("README", "hello\n"), ("status.txt", "ok\n")], "first");
        f.push("main");
        f
    }

    /// Where the hub keeps its clone in these tests.
    pub(crate) fn clone_dir(&self) -> PathBuf {
        self.tmp
            .path()
            .join("hub")
            .join("repos")
            .join("app")
            .join("clone.git")
    }

    pub(crate) fn url(&self) -> String {
        self.origin.display().to_string()
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        git(&self.work, args)
    }

    /// Write (or with `None`, delete) files and commit them on the
    /// current branch; the new commit's id.
    pub(crate) fn commit_bytes(&self, files: &[(&str, Option<&[u8]>)], msg: &str) -> String {
        for (path, content) in files {
            let p = self.work.join(path);
            match content {
                Some(c) => {
                    if let Some(d) = p.parent() {
                        std::fs::create_dir_all(d).unwrap();
                    }
                    std::fs::write(&p, c).unwrap();
                }
                None => std::fs::remove_file(&p).unwrap(),
            }
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Write text files and commit them on the current branch.
    pub(crate) fn commit(&self, files: &[(&str, &str)], msg: &str) -> String {
        let files: Vec<(&str, Option<&[u8]>)> = files
            .iter()
            .map(|(p, c)| (*p, Some(c.as_bytes())))
            .collect();
        self.commit_bytes(&files, msg)
    }

    /// Check out `branch` (made from `from` when given).
    pub(crate) fn checkout(&self, branch: &str, from: Option<&str>) {
        match from {
            Some(f) => self.git(&["checkout", "--quiet", "-B", branch, f]),
            None => self.git(&["checkout", "--quiet", branch]),
        };
    }

    /// Push the local `branch` to the origin (forced: tests rewrite
    /// agents' branches on purpose).
    pub(crate) fn push(&self, branch: &str) {
        self.git(&[
            "push",
            "--quiet",
            "--force",
            "origin",
            &format!("{branch}:refs/heads/{branch}"),
        ]);
    }

    /// An agent's branch from the current origin main with these files
    /// committed, pushed; its (base, head).
    pub(crate) fn agent_branch(&self, branch: &str, files: &[(&str, &str)]) -> (String, String) {
        self.git(&["fetch", "--quiet", "origin"]);
        self.checkout(branch, Some("origin/main"));
        let base = self.git(&["rev-parse", "origin/main"]);
        let head = self.commit(files, &format!("work on {branch}"));
        self.push(branch);
        (base, head)
    }

    /// A direct commit on the origin's main (as a person bypassing the
    /// hub would push); its id.
    pub(crate) fn push_to_main(&self, files: &[(&str, &str)], msg: &str) -> String {
        self.git(&["fetch", "--quiet", "origin"]);
        self.checkout("main", Some("origin/main"));
        let sha = self.commit(files, msg);
        self.push("main");
        sha
    }

    /// What `rev` names in the origin.
    pub(crate) fn origin_rev(&self, rev: &str) -> String {
        git(&self.origin, &["rev-parse", rev])
    }

    /// A file's content at `rev` in the origin.
    pub(crate) fn origin_show(&self, rev: &str, path: &str) -> String {
        git(&self.origin, &["show", &format!("{rev}:{path}")])
    }
}
