//! A real git project for the merge pipeline's tests: a bare remote
//! (`remote.git`) holding a small project with a check script, a clone
//! for each agent, the hub's `[[repos]]` table and each sidecar's `[git]`
//! section, and a runner that does what its task's title says.
//!
//! The project: `lines.txt` (ten numbered lines) and `check.sh`, which
//! fails when any tracked file outside it contains the word `BROKEN` and
//! records every commit it checked, and the verdict, in `<root>/checked` (so a test can
//! prove main never pointed at a commit whose check failed). A passing
//! check of a tree holding a file `hold-check` waits for the test: it
//! raises the flag `check-held` and waits for `check-go` (see the flags
//! below).
//!
//! The runner reads its task's title and runs `<root>/steps/<title>.sh`
//! in the agent's clone (on the branch the sidecar prepared), then
//! commits everything with the title as the message. A title with no
//! step file commits nothing (`no_changes`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::hub::Hub;
use crate::procs::sh;
use crate::sidecar::Sidecar;
use crate::wait_until;

/// A bare remote with the project on `main`, and its working copies.
pub struct Project {
    root: PathBuf,
}

/// The check every merge result must pass (`sh check.sh`).
const CHECK: &str = r#"#!/bin/sh
# Fails when a tracked file (other than this one) contains BROKEN.
sha=$(git rev-parse HEAD)
# A test may hold the check: while the file $PIPELINE_TEST_HOLD exists it
# says so in $PIPELINE_TEST_HOLD.started and waits (no such file: no wait).
if [ -n "$PIPELINE_TEST_HOLD" ] && [ -e "$PIPELINE_TEST_HOLD" ]; then
  echo "$sha" >> "$PIPELINE_TEST_HOLD.started"
  while [ -e "$PIPELINE_TEST_HOLD" ]; do sleep 0.05; done
fi
if git grep -q BROKEN -- ':!check.sh'; then
  echo "check: found BROKEN in $(git grep -l BROKEN -- ':!check.sh' | tr '\n' ' ')"
  echo "$sha fail" >> "$PIPELINE_TEST_CHECKED"
  exit 1
fi
# A tree holding hold-check makes the check wait for the test, until it
# raised the flag check-go: the check raises check-held and waits.
flags="$(dirname "$PIPELINE_TEST_CHECKED")/flags"
if [ -f hold-check ] && [ ! -e "$flags/check-go" ]; then
  mkdir -p "$flags" && touch "$flags/check-held"
  until [ -e "$flags/check-go" ]; do sleep 0.02; done
fi
echo "check: ok"
echo "$sha pass" >> "$PIPELINE_TEST_CHECKED"
"#;

impl Project {
    /// Make the remote under `root` with one commit on main.
    pub fn new(root: &Path) -> Project {
        sh(
            root,
            "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null",
        );
        let seed = root.join("seed");
        let lines: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        std::fs::write(seed.join("lines.txt"), lines).unwrap();
        std::fs::write(seed.join("check.sh"), CHECK).unwrap();
        std::fs::create_dir_all(root.join("steps")).unwrap();
        sh(&seed, "git config user.email seed@t && git config user.name seed && git add -A && git commit -qm 'the project' && git push -q origin main");
        Project {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn remote(&self) -> PathBuf {
        self.root.join("remote.git")
    }

    /// A clone for `agent` (`work-<agent>`), with its git identity.
    pub fn clone_for(&self, agent: &str) -> PathBuf {
        sh(&self.root, &format!("git clone -q remote.git work-{agent} && cd work-{agent} && git config user.email {agent}@t && git config user.name {agent}"));
        self.root.join(format!("work-{agent}"))
    }

    /// The remote's main commit.
    pub fn main(&self) -> String {
        sh(&self.remote(), "git rev-parse refs/heads/main")
    }

    /// Main's first-parent history, newest first.
    pub fn main_history(&self) -> Vec<String> {
        sh(
            &self.remote(),
            "git rev-list --first-parent refs/heads/main",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// `path` as main has it.
    pub fn main_file(&self, path: &str) -> String {
        sh(&self.remote(), &format!("git show refs/heads/main:{path}"))
    }

    /// Every commit the check ran on and whether it passed
    /// (`<sha> pass|fail` lines).
    pub fn checked(&self) -> Vec<(String, bool)> {
        std::fs::read_to_string(self.checked_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(sha, v)| (sha.to_string(), v == "pass"))
            .collect()
    }

    fn checked_file(&self) -> PathBuf {
        self.root.join("checked")
    }

    /// The hub process's environment for the check: where it records its
    /// runs (not an `AGENTCOM_*` name: the hub passes none of those on).
    pub fn hub_env(&self) -> (String, String) {
        (
            "PIPELINE_TEST_CHECKED".into(),
            self.checked_file().display().to_string(),
        )
    }

    /// The hub's `[[repos]]` table for repository `app`, with the check,
    /// `poll_s` and the `[repos.gate]` lines in `gate`.
    pub fn hub_toml(&self, poll_s: u64, gate: &str) -> String {
        format!(
            "[[repos]]\nname = \"app\"\nurl = {:?}\nmain_branch = \"main\"\ncheck_command = [\"sh\", \"check.sh\"]\ncheck_timeout_s = 60\npoll_s = {poll_s}\n\n[repos.gate]\n{gate}\n",
            self.remote().display().to_string()
        )
    }

    /// Agent `agent`'s `[git]` section (its clone made here).
    pub fn git_section(&self, agent: &str) -> String {
        let dir = self.clone_for(agent);
        format!(
            "[git]\nrepo = \"app\"\nrepo_dir = {:?}\nremote = \"origin\"\nmain_branch = \"main\"\n",
            dir.display().to_string()
        )
    }

    /// A real sidecar for agent `id` (added to `hub` with `capabilities`)
    /// working on its own clone of this project with [`Project::runner`].
    pub fn agent(&self, hub: &Hub, id: &str, capabilities: &[&str]) -> Sidecar {
        Sidecar::start(
            &self.root,
            hub,
            id,
            capabilities,
            &self.runner(),
            &self.git_section(id),
        )
    }

    /// What a task titled `title` does in the agent's clone: an `sh`
    /// script body run there before the commit.
    pub fn step(&self, title: &str, body: &str) {
        std::fs::write(self.root.join("steps").join(format!("{title}.sh")), body).unwrap();
    }

    /// The runner: run the task's step in the clone, commit what changed.
    pub fn runner(&self) -> String {
        format!(
            r#"set -e
title=$(sed -n 's/^  "title": "\(.*\)",$/\1/p' "$AGENTCOM_TASK_FILE")
step="{steps}/$title.sh"
if [ -f "$step" ]; then
  sh -e "$step"
  git add -A
  git commit -qm "$title"
fi
printf '{{"summary":"did %s"}}' "$title" > "$AGENTCOM_RESULT_FILE""#,
            steps = self.root.join("steps").display()
        )
    }

    /// Push `body` (run in a fresh clone of main) straight to main, as a
    /// person bypassing the hub would; the new main.
    pub fn push_to_main(&self, what: &str, body: &str) -> String {
        let dir = self.root.join("direct");
        if !dir.exists() {
            sh(&self.root, "git clone -q remote.git direct && cd direct && git config user.email person@t && git config user.name person");
        }
        sh(
            &dir,
            "git fetch -q origin && git checkout -q -B main origin/main",
        );
        sh(&dir, body);
        sh(
            &dir,
            &format!("git add -A && git commit -qm {what:?} && git push -q origin main"),
        );
        self.main()
    }

    /// A line that sets line `n` of `lines.txt` to `text` (a step body).
    pub fn set_line(n: usize, text: &str) -> String {
        format!("sed -i '{n}s/.*/{text}/' lines.txt")
    }

    // ----- commits of the remote --------------------------------------------

    /// The parents of commit `sha` of the remote, first parent first.
    pub fn parents(&self, sha: &str) -> Vec<String> {
        sh(
            &self.remote(),
            &format!("git rev-list --parents -n 1 {sha}"),
        )
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
    }

    /// `path` as commit `sha` of the remote has it.
    pub fn file_at(&self, sha: &str, path: &str) -> String {
        sh(&self.remote(), &format!("git show {sha}:{path}"))
    }

    // ----- flags: where the test and a runner's steps meet --------------------
    //
    // A flag is a file under `<root>/flags`. A step waits for one the test
    // raises (after it made main move, say), or raises one the test waits
    // for (the runner has branched and is working): real state, never time.

    fn flag_path(&self, name: &str) -> PathBuf {
        self.root.join("flags").join(name)
    }

    /// Raise flag `name` (from the test).
    pub fn raise(&self, name: &str) {
        std::fs::create_dir_all(self.root.join("flags")).unwrap();
        std::fs::write(self.flag_path(name), "").unwrap();
    }

    /// Has flag `name` been raised (by a step or the test)?
    pub fn raised(&self, name: &str) -> bool {
        self.flag_path(name).exists()
    }

    /// A step line raising flag `name` (it may name shell variables, such
    /// as `$AGENTCOM_TASK_ID`).
    pub fn raise_step(&self, name: &str) -> String {
        let flags = self.root.join("flags");
        format!(
            "mkdir -p \"{}\" && touch \"{}/{name}\"",
            flags.display(),
            flags.display()
        )
    }

    /// A step line waiting until flag `name` is raised.
    pub fn await_step(&self, name: &str) -> String {
        format!(
            "until [ -e '{}' ]; do sleep 0.02; done",
            self.flag_path(name).display()
        )
    }

    /// A step line that waits until `n` tasks of `group` have reached it
    /// (each task counted once, whatever its attempt): the first `n` of
    /// the group then work from the same main.
    pub fn barrier_step(&self, group: &str, n: usize) -> String {
        let flags = self.root.join("flags");
        format!(
            "{}\nuntil [ $(ls '{}' | grep -c '^{group}\\.') -ge {n} ]; do sleep 0.02; done",
            self.raise_step(&format!("{group}.$AGENTCOM_TASK_ID")),
            flags.display()
        )
    }
}

// ----- the hub's changes of the project -----------------------------------------

/// Every change the hub lists, newest first.
pub fn changes(hub: &Hub) -> Vec<Value> {
    hub.ok("GET", "/api/changes?limit=1000", None)["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// One change with its history.
pub fn change(hub: &Hub, id: &str) -> Value {
    hub.ok("GET", &format!("/api/changes/{id}"), None)
}

/// The changes of each task, oldest first.
pub fn by_task(changes: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for c in changes.iter().rev() {
        out.entry(c["task_id"].as_str().unwrap().to_string())
            .or_default()
            .push(c.clone());
    }
    out
}

/// The statuses in which a change is live (at most one per task).
pub const LIVE: [&str; 4] = ["open", "reviewing", "escalated", "merging"];

/// Panic if a task has more than one live change in `changes` (one
/// listing of them).
pub fn assert_one_live_change_per_task(changes: &[Value]) {
    for (task, cs) in by_task(changes) {
        let live: Vec<&Value> = cs
            .iter()
            .filter(|c| LIVE.contains(&c["status"].as_str().unwrap()))
            .collect();
        assert!(
            live.len() <= 1,
            "task {task} has {} live changes: {live:?}",
            live.len()
        );
    }
}

/// When a change (with its history) was live: from its opening to the
/// first entry that moved it to a status that is not live (None: still
/// live), in milliseconds since the epoch.
pub fn live_span(change: &Value) -> (i64, Option<i64>) {
    let history = change["history"].as_array().expect("a change's history");
    let opened = crate::hub::parse_ms(history[0]["at"].as_str().unwrap());
    let ended = history
        .iter()
        .find(|e| e["to"].as_str().is_some_and(|to| !LIVE.contains(&to)))
        .map(|e| crate::hub::parse_ms(e["at"].as_str().unwrap()));
    (opened, ended)
}

/// When a change (with its history) was in `merging`: each stint, from
/// entering to leaving (ms since the epoch).
pub fn merging_spans(change: &Value) -> Vec<(i64, i64)> {
    let mut spans = Vec::new();
    let mut since = None;
    for e in change["history"].as_array().expect("a change's history") {
        let at = crate::hub::parse_ms(e["at"].as_str().unwrap());
        if e["from"] == "merging" && e["to"] != "merging" {
            if let Some(s) = since.take() {
                spans.push((s, at));
            }
        }
        if e["to"] == "merging" && since.is_none() {
            since = Some(at);
        }
    }
    spans
}

// ----- holding the hub at chosen points, and reading the pipeline ---------

impl Project {
    /// The file whose existence holds every check that starts meanwhile
    /// (see the check script): `hold_check` creates it, `release_check`
    /// removes it.
    pub fn check_hold_file(&self) -> PathBuf {
        self.root.join("check-hold")
    }

    /// The hub's environment for the check: [`Project::hub_env`] and the
    /// check's hold file.
    pub fn hub_envs(&self) -> Vec<(String, String)> {
        vec![
            self.hub_env(),
            (
                "PIPELINE_TEST_HOLD".into(),
                self.check_hold_file().display().to_string(),
            ),
        ]
    }

    /// From now on every check that starts waits until
    /// [`Project::release_check`] (the hub needs [`Project::hub_envs`]).
    pub fn hold_check(&self) {
        std::fs::write(self.check_hold_file(), "").unwrap();
    }

    pub fn release_check(&self) {
        let _ = std::fs::remove_file(self.check_hold_file());
    }

    /// The commits whose check started while held, in order.
    pub fn held_checks(&self) -> Vec<String> {
        let started = self.root.join("check-hold.started");
        std::fs::read_to_string(started)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Wait until a held check runs; the commit it checks.
    pub fn wait_held_check(&self, timeout: Duration) -> String {
        wait_until(timeout, "a check to start while held", || {
            self.held_checks().last().cloned()
        })
    }

    fn push_hold_file(&self) -> PathBuf {
        self.root.join("push-hold")
    }

    /// From now on a push that moves the remote's main is held *after*
    /// the remote took it (a `post-receive` hook waits while the hold
    /// exists): main has moved, the pusher has not heard yet.
    pub fn hold_pushes_to_main(&self) {
        let hold = self.push_hold_file();
        let hook = self.remote().join("hooks").join("post-receive");
        crate::sidecar::script(
            &hook,
            &format!(
                r#"hold={hold:?}
moved=$(grep ' refs/heads/main$' || true)
if [ -n "$moved" ] && [ -e "$hold" ]; then
  echo "$moved" >> "$hold.started"
  while [ -e "$hold" ]; do sleep 0.05; done
fi"#,
                hold = hold.display().to_string()
            ),
        );
        std::fs::write(hold, "").unwrap();
    }

    pub fn release_pushes(&self) {
        let _ = std::fs::remove_file(self.push_hold_file());
    }

    /// Wait until a push to main is held after the remote took it; the
    /// commit main moved to.
    pub fn wait_held_push(&self, timeout: Duration) -> String {
        let started = self.root.join("push-hold.started");
        wait_until(timeout, "a push to main to be held", || {
            let text = std::fs::read_to_string(&started).ok()?;
            let line = text.lines().last()?;
            line.split(' ').nth(1).map(str::to_string)
        })
    }

    /// The commits on main (all of its history) whose parents include
    /// `sha`.
    pub fn main_children_of(&self, sha: &str) -> Vec<String> {
        sh(&self.remote(), "git rev-list --parents refs/heads/main")
            .lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                let commit = it.next()?;
                it.any(|p| p == sha).then(|| commit.to_string())
            })
            .collect()
    }

    /// The merge commits on main whose message names `change_id`.
    pub fn merges_of_change(&self, change_id: &str) -> Vec<String> {
        sh(
            &self.remote(),
            &format!("git rev-list --merges --grep='Merge change {change_id}' refs/heads/main"),
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// The author's email of commit `sha` on the remote.
    pub fn author_of(&self, sha: &str) -> String {
        sh(&self.remote(), &format!("git log -1 --format=%ae {sha}"))
    }

    /// A reviewer's runner: it records each review task's title in
    /// `<root>/reviews-<agent>` and answers with the verdict and notes
    /// that `<root>/verdicts/<task title>.sh` prints as two lines (run
    /// with `$HEAD` the change's head and `$REMOTE` the bare remote; no
    /// script: approve).
    pub fn reviewer_runner(&self, agent: &str) -> String {
        format!(
            r#"set -e
title=$(sed -n 's/^  "title": "Review: \(.*\)",$/\1/p' "$AGENTCOM_TASK_FILE")
echo "$title" >> {log:?}
HEAD=$(grep -o '"head": "[0-9a-f]*"' "$AGENTCOM_TASK_FILE" | head -n 1 | cut -d'"' -f4)
REMOTE={remote:?}
export HEAD REMOTE
script={verdicts:?}/"$title.sh"
if [ -f "$script" ]; then
  out=$(sh -e "$script")
  verdict=$(echo "$out" | sed -n 1p)
  notes=$(echo "$out" | sed -n 2p)
else
  verdict=approve
  notes="fine by me"
fi
printf '{{"verdict":"%s","notes":"%s"}}' "$verdict" "$notes" > "$AGENTCOM_RESULT_FILE""#,
            log = self
                .root
                .join(format!("reviews-{agent}"))
                .display()
                .to_string(),
            remote = self.remote().display().to_string(),
            verdicts = self.root.join("verdicts").display().to_string(),
        )
    }

    /// How the reviewer judges the change of the task titled `title`: an
    /// `sh` body printing the verdict, then the notes (see
    /// [`Project::reviewer_runner`]).
    pub fn verdict(&self, title: &str, body: &str) {
        let dir = self.root.join("verdicts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{title}.sh")), body).unwrap();
    }

    /// The titles agent `agent` reviewed, in order.
    pub fn reviewed_by(&self, agent: &str) -> Vec<String> {
        std::fs::read_to_string(self.root.join(format!("reviews-{agent}")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A hub guarding the project as repository `app`: main watched every
/// `poll_s`, the `[repos.gate]` lines in `gate`, the check's environment
/// ([`Project::hub_envs`]), retries without backoff, and `env` on top.
pub fn start_pipeline_hub(p: &Project, poll_s: u64, gate: &str, env: &[(&str, &str)]) -> Hub {
    let mut all: Vec<(String, String)> = p.hub_envs();
    all.push(("AGENTCOM_RETRY__BACKOFF_S".into(), "0".into()));
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Hub::start_with_config(p.root(), &p.hub_toml(poll_s, gate), &refs)
}

/// Every change of a task, newest first.
pub fn changes_of(hub: &Hub, task: &str) -> Vec<Value> {
    changes(hub)
        .into_iter()
        .filter(|c| c["task_id"] == task)
        .collect()
}

/// Wait until the task has a change in `status`; that change.
pub fn wait_change_status(hub: &Hub, task: &str, status: &str, timeout: Duration) -> Value {
    wait_until(
        timeout,
        &format!("a change of task {task} to be {status}"),
        || {
            changes_of(hub, task)
                .into_iter()
                .find(|c| c["status"] == status)
        },
    )
}

/// Repository `name` as `GET /api/repos` shows it.
pub fn repo(hub: &Hub, name: &str) -> Value {
    hub.ok("GET", "/api/repos", None)["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no repository {name} in /api/repos"))
}

/// Wait until repository `name` satisfies `what`; how it looks then.
pub fn wait_repo(
    hub: &Hub,
    name: &str,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(timeout, &format!("repository {name}: {what}"), || {
        Some(repo(hub, name)).filter(&ok)
    })
}

/// The alerts of `kind` (newest first).
pub fn alerts(hub: &Hub, kind: &str) -> Vec<Value> {
    hub.ok("GET", "/api/alerts?limit=1000", None)["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["alert"] == kind)
        .cloned()
        .collect()
}

/// The id of a created task.
pub fn submit_repo_task(hub: &Hub, title: &str) -> String {
    hub.submit(serde_json::json!({"title": title, "repo": "app"}))["id"]
        .as_str()
        .unwrap()
        .to_string()
}
