//! The hub's git work on its own clone of a guarded repository.
//!
//! Each function is one blocking operation on a bare clone (`clone.git`)
//! whose `origin` is the repository agents push to: keep the clone
//! (`ensure_clone`), fetch, read refs, measure a change (`inspect`), find
//! a change already merged (`is_merged`), merge without a work tree
//! (`merge`: `merge-tree --write-tree` then `commit-tree`), move main by a
//! plain push (`push_main`, a compare-and-swap), and check a commit out
//! in a scratch work tree (`checkout_scratch`). Plain `git` commands, no
//! prompts, git's own words in every error. Callers run these off the
//! actor threads and one at a time per clone.
//!
//! It never force-pushes, never pushes anything but what its caller
//! names, never trusts a number an agent reported, and never decides what
//! a change deserves: it measures and reports, the caller judges.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::actors::messages::Diffstat;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

/// A git command that failed (or could not run), with git's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`git {command}` failed: {detail}")]
pub(crate) struct GitError {
    /// The command's arguments, as run.
    pub command: String,
    /// Its exit status and stderr (or why it could not start).
    pub detail: String,
}

impl GitError {
    fn new(command: &str, detail: impl Into<String>) -> GitError {
        GitError {
            command: command.to_string(),
            detail: detail.into(),
        }
    }
}

/// What `merge` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MergeResult {
    /// The merge commit `sha` (first parent `onto`, the main it merged
    /// into; second parent the change's head). Not on main yet.
    Clean { sha: String, onto: String },
    /// The paths that conflict.
    Conflict { paths: Vec<String> },
}

/// What `push_main` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushResult {
    /// Main now points at the commit pushed.
    Pushed,
    /// The remote refused: main is no longer what the push built on.
    MainMoved,
}

/// Variables of the hub's own environment that would point git at
/// another repository or index than the one it is told to use.
const REPO_ENV: [&str; 8] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
];

/// A `git` command with no prompts, stable messages and the hub's
/// identity; `git_dir`, when given, is the only repository it looks at.
fn base_command(git_dir: Option<&Path>) -> Command {
    let mut c = Command::new("git");
    for v in REPO_ENV {
        c.env_remove(v);
    }
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .args([
            "-c",
            "user.name=AgentCom",
            "-c",
            "user.email=agentcom@localhost",
        ])
        // A network operation that stalls for two minutes fails instead of
        // holding the repository's work for ever.
        .args(["-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=120"]);
    if let Some(d) = git_dir {
        // `.` once inside it: a relative `d` must not be taken twice.
        c.args(["--git-dir", "."]).current_dir(d);
    }
    c
}

/// Run git in the clone `dir`; its output whatever the exit status.
fn output(dir: &Path, args: &[&str]) -> Result<Output, GitError> {
    base_command(Some(dir))
        .args(args)
        .output()
        .map_err(|e| GitError::new(&args.join(" "), format!("cannot run git: {e}")))
}

/// The error of a finished command that did not do what was asked.
fn failure(args: &[&str], out: &Output) -> GitError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    let status = match out.status.code() {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".to_string(),
    };
    GitError::new(
        &args.join(" "),
        if stderr.is_empty() {
            status
        } else {
            format!("{status}: {stderr}")
        },
    )
}

/// Run git in the clone `dir`; its stdout (untrimmed) on success.
fn run(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let out = output(dir, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failure(args, &out))
    }
}

/// Run a yes/no git command: exit 0 yes, 1 no, anything else an error.
fn yes_no(dir: &Path, args: &[&str]) -> Result<bool, GitError> {
    let out = output(dir, args)?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(failure(args, &out)),
    }
}

/// A full commit id (40 or 64 hex digits; lower case is what git prints).
pub(crate) fn is_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A name git accepts for a branch that cannot be taken for an option.
fn valid_branch(dir: &Path, branch: &str) -> Result<bool, GitError> {
    if branch.is_empty() || branch.starts_with('-') || branch.len() > 255 {
        return Ok(false);
    }
    yes_no(dir, &["check-ref-format", &format!("refs/heads/{branch}")])
}

/// Where a branch of `origin` is fetched to.
fn remote_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

/// A local path given relative to the hub's directory, made absolute (git
/// runs in the clone, where a relative path would mean something else).
fn absolute_url(url: &str) -> String {
    let looks_remote = url.contains("://") || {
        // scp-like `host:path` (a colon before any slash).
        let colon = url.find(':');
        let slash = url.find('/');
        matches!((colon, slash), (Some(c), Some(s)) if c < s)
            || matches!((colon, slash), (Some(_), None))
    };
    if looks_remote || Path::new(url).is_absolute() {
        return url.to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(url).display().to_string(),
        Err(_) => url.to_string(),
    }
}

/// Keep a bare clone of `url` in `dir`: create it if missing, point
/// `origin` at `url` (with every branch fetched to `refs/remotes/origin/`),
/// forget scratch work trees that are gone, then fetch.
pub(crate) fn ensure_clone(url: &str, dir: &Path) -> Result<(), GitError> {
    let url = absolute_url(url);
    std::fs::create_dir_all(dir)
        .map_err(|e| GitError::new("init", format!("cannot create {}: {e}", dir.display())))?;
    if !dir.join("HEAD").exists() {
        let out = base_command(None)
            .args(["init", "--bare", "--quiet"])
            .arg(dir)
            .output()
            .map_err(|e| GitError::new("init --bare", format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(failure(&["init", "--bare"], &out));
        }
    }
    // gc in the foreground: nothing of git's outlives the call.
    run(dir, &["config", "gc.autoDetach", "false"])?;
    let current = output(dir, &["config", "--get", "remote.origin.url"])?;
    if !current.status.success() {
        run(dir, &["remote", "add", "origin", &url])?;
    } else if String::from_utf8_lossy(&current.stdout).trim() != url {
        run(dir, &["remote", "set-url", "origin", &url])?;
    }
    run(
        dir,
        &[
            "config",
            "--replace-all",
            "remote.origin.fetch",
            "+refs/heads/*:refs/remotes/origin/*",
        ],
    )?;
    run(dir, &["worktree", "prune"])?;
    fetch(dir)
}

/// Remove the scratch work trees a killed hub left beside the clone
/// (only when nothing of this clone runs).
pub(crate) fn clean_scratch(dir: &Path) -> Result<(), GitError> {
    if let Some(parent) = dir.parent() {
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().starts_with(SCRATCH_PREFIX) && e.path().is_dir() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    run(dir, &["worktree", "prune"]).map(drop)
}

/// Fetch every branch of `origin` (branches deleted there disappear here).
pub(crate) fn fetch(dir: &Path) -> Result<(), GitError> {
    run(dir, &["fetch", "--prune", "--no-tags", "--quiet", "origin"]).map(drop)
}

/// The commit `branch` points at on the remote right now (None: no such
/// branch), without fetching.
pub(crate) fn ls_remote_head(dir: &Path, branch: &str) -> Result<Option<String>, GitError> {
    let full = format!("refs/heads/{branch}");
    let out = run(dir, &["ls-remote", "--heads", "origin", &full])?;
    Ok(out.lines().find_map(|l| {
        let (sha, name) = l.split_once('\t')?;
        (name == full).then(|| sha.to_string())
    }))
}

/// The commit `rev` names in the clone (None: it names none).
pub(crate) fn rev_parse(dir: &Path, rev: &str) -> Result<Option<String>, GitError> {
    if rev.starts_with('-') {
        return Ok(None);
    }
    let commit = format!("{rev}^{{commit}}");
    let args = ["rev-parse", "--verify", "--quiet", &commit];
    let out = output(dir, &args)?;
    match out.status.code() {
        Some(0) => Ok(Some(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )),
        Some(1) | Some(128) if out.stderr.is_empty() => Ok(None),
        _ => Err(failure(&args, &out)),
    }
}

/// Main's commit as last fetched.
pub(crate) fn fetched_main(dir: &Path, main: &str) -> Result<String, GitError> {
    rev_parse(dir, &remote_ref(main))?.ok_or_else(|| {
        GitError::new(
            &format!("rev-parse {}", remote_ref(main)),
            format!("the remote has no branch {main}"),
        )
    })
}

/// Is `sha` a commit the clone has?
pub(crate) fn has_commit(dir: &Path, sha: &str) -> Result<bool, GitError> {
    if !is_sha(sha) {
        return Ok(false);
    }
    let out = output(dir, &["cat-file", "-e", &format!("{sha}^{{commit}}")])?;
    Ok(out.status.success())
}

/// Is `a` an ancestor of (or equal to) `b`?
fn is_ancestor(dir: &Path, a: &str, b: &str) -> Result<bool, GitError> {
    yes_no(dir, &["merge-base", "--is-ancestor", a, b])
}

/// Measure a change: fetch, then prove the branch's tip is `head` and
/// `base` is on main, and count the change's paths and lines against the
/// merge base of `head` and main (so commits main gained since `base` do
/// not count). `Ok(Err(words))`: the change is not what it claims to be;
/// `Err`: git failed (try again later).
pub(crate) fn inspect(
    dir: &Path,
    main: &str,
    branch: &str,
    base: &str,
    head: &str,
) -> Result<Result<Diffstat, String>, GitError> {
    if !valid_branch(dir, branch)? {
        return Ok(Err(format!("{branch:?} is not a branch name")));
    }
    for (what, sha) in [("base", base), ("head", head)] {
        if !is_sha(sha) {
            return Ok(Err(format!("its {what} {sha:?} is not a commit id")));
        }
    }
    fetch(dir)?;
    let Some(tip) = rev_parse(dir, &remote_ref(branch))? else {
        return Ok(Err(format!("branch {branch} is gone from the repository")));
    };
    if tip != head {
        return Ok(Err(format!(
            "branch {branch} moved: its tip is {tip}, not the reported head {head}"
        )));
    }
    let main_sha = fetched_main(dir, main)?;
    if !has_commit(dir, base)? || !is_ancestor(dir, base, &main_sha)? {
        return Ok(Err(format!("its base {base} is not on {main}")));
    }
    let out = output(dir, &["merge-base", head, &main_sha])?;
    let merge_base = match out.status.code() {
        Some(0) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Some(1) => {
            return Ok(Err(format!(
                "its head {head} shares no history with {main}"
            )))
        }
        _ => return Err(failure(&["merge-base", head, &main_sha], &out)),
    };
    let numstat = run(
        dir,
        &[
            "diff",
            "--numstat",
            "-z",
            "-M",
            "--no-ext-diff",
            "--no-textconv",
            &merge_base,
            head,
        ],
    )?;
    Ok(Ok(parse_numstat(&numstat)))
}

/// `git diff --numstat -z`: `ADDED\tREMOVED\tPATH\0`, or for a rename
/// `ADDED\tREMOVED\t\0OLD\0NEW\0`; binary files count `-` (0 lines here).
/// A rename changes both its paths.
fn parse_numstat(out: &str) -> Diffstat {
    let mut stat = Diffstat {
        files: Vec::new(),
        lines_added: 0,
        lines_removed: 0,
    };
    let mut tokens = out.split('\0');
    while let Some(entry) = tokens.next() {
        let mut fields = entry.splitn(3, '\t');
        let (Some(added), Some(removed), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        stat.lines_added += added.parse::<u64>().unwrap_or(0);
        stat.lines_removed += removed.parse::<u64>().unwrap_or(0);
        if path.is_empty() {
            for p in tokens.by_ref().take(2) {
                stat.files.push(p.to_string());
            }
        } else {
            stat.files.push(path.to_string());
        }
    }
    stat
}

/// If `head` is already on main (as last fetched), the commit that put it
/// there: the first-parent commit of main whose second parent is `head`;
/// `head` itself when main was fast-forwarded to it; else the first
/// commit of main's first-parent line that contains it. None: not merged.
/// A hub killed between pushing a merge and recording it finds its own
/// merge here, so it never merges a change twice.
pub(crate) fn is_merged(dir: &Path, main: &str, head: &str) -> Result<Option<String>, GitError> {
    let main_sha = fetched_main(dir, main)?;
    if !has_commit(dir, head)? || !is_ancestor(dir, head, &main_sha)? {
        return Ok(None);
    }
    if main_sha == head {
        return Ok(Some(main_sha));
    }
    // Main's first-parent line back to where head's history joins it,
    // newest first, each with its parents.
    let not_head = format!("^{head}");
    let listed = run(
        dir,
        &[
            "rev-list",
            "--first-parent",
            "--parents",
            &main_sha,
            &not_head,
        ],
    )?;
    let line: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|p: &Vec<&str>| !p.is_empty())
        .collect();
    if let Some(merge) = line.iter().find(|p| p.get(2) == Some(&head)) {
        return Ok(Some(merge[0].to_string()));
    }
    if line.last().and_then(|p| p.get(1)) == Some(&head) {
        return Ok(Some(head.to_string()));
    }
    // Containing head is monotone along the line (a newer commit contains
    // all an older one does): find the oldest that does.
    let (mut lo, mut hi) = (0usize, line.len());
    // Invariant: line[..lo] (newer) contain head; line[hi..] do not.
    while lo < hi {
        let mid = (lo + hi) / 2;
        if is_ancestor(dir, head, line[mid][0])? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo.checked_sub(1).map(|i| line[i][0].to_string()))
}

/// Merge `head` into `onto` (main's commit, as the caller fetched and
/// vetted it) without a work tree: the merged tree from `merge-tree
/// --write-tree`, then a merge commit with `onto` as first parent and
/// `head` as second. Nothing is pushed.
pub(crate) fn merge(
    dir: &Path,
    onto: &str,
    head: &str,
    message: &str,
) -> Result<MergeResult, GitError> {
    let args = [
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        "-z",
        onto,
        head,
    ];
    let out = output(dir, &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tokens = text.split('\0').filter(|t| !t.is_empty());
    match out.status.code() {
        Some(0) => {
            let tree = tokens
                .next()
                .ok_or_else(|| GitError::new(&args.join(" "), "no tree in its output"))?;
            let sha = run(
                dir,
                &["commit-tree", tree, "-p", onto, "-p", head, "-m", message],
            )?;
            Ok(MergeResult::Clean {
                sha: sha.trim().to_string(),
                onto: onto.to_string(),
            })
        }
        Some(1) => {
            let _tree = tokens.next();
            let mut paths: Vec<String> = tokens.map(str::to_string).collect();
            paths.dedup();
            Ok(MergeResult::Conflict { paths })
        }
        _ => Err(failure(&args, &out)),
    }
}

/// Move the remote's main to `sha` with a plain push: never forced, so
/// the remote refuses it unless `sha` descends from what main is now — a
/// compare-and-swap against `expected_main`, the main `sha` was built on.
pub(crate) fn push_main(
    dir: &Path,
    main: &str,
    sha: &str,
    expected_main: &str,
) -> Result<PushResult, GitError> {
    let refspec = format!("{sha}:refs/heads/{main}");
    let args = ["push", "--porcelain", "--quiet", "origin", &refspec];
    let out = output(dir, &args)?;
    if out.status.success() {
        return Ok(PushResult::Pushed);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let moved = stdout.lines().any(|l| {
        l.starts_with('!')
            && l.contains(&format!("refs/heads/{main}"))
            && (l.contains("non-fast-forward") || l.contains("fetch first"))
    });
    if moved {
        tracing::debug!(main, expected_main, sha, "push refused: main moved");
        return Ok(PushResult::MainMoved);
    }
    let mut err = failure(&args, &out);
    if !stdout.trim().is_empty() {
        err.detail = format!("{}; {}", err.detail, stdout.trim());
    }
    Err(err)
}

const SCRATCH_PREFIX: &str = "scratch-";

/// A detached work tree of one commit beside the clone, removed (with its
/// registration in the clone) when dropped.
pub(crate) struct Scratch {
    clone: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// Where the files are.
    pub(crate) fn path(&self) -> &Path {
        self.dir.as_ref().map_or(self.clone.as_path(), |d| d.path())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let path = dir.path().display().to_string();
        if let Err(e) = run(&self.clone, &["worktree", "remove", "--force", &path]) {
            tracing::warn!(error = %e, "could not remove a scratch work tree; pruned at the next start");
        }
        drop(dir);
    }
}

/// Check `sha` out in a new scratch work tree beside the clone
/// (`worktree add --detach`).
pub(crate) fn checkout_scratch(dir: &Path, sha: &str) -> Result<Scratch, GitError> {
    let parent = dir.parent().unwrap_or(dir);
    let tmp = tempfile::Builder::new()
        .prefix(SCRATCH_PREFIX)
        .tempdir_in(parent)
        .map_err(|e| {
            GitError::new(
                "worktree add",
                format!(
                    "cannot make a scratch directory in {}: {e}",
                    parent.display()
                ),
            )
        })?;
    let path = tmp.path().display().to_string();
    run(dir, &["worktree", "add", "--detach", "--quiet", &path, sha])?;
    Ok(Scratch {
        clone: dir.to_path_buf(),
        dir: Some(tmp),
    })
}
