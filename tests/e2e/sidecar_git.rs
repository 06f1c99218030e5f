//! Repository tasks end to end, with real git: a bare remote made by the
//! test, the agent's clone, the real hub (with a `[[repos]]` table) and
//! the real sidecar. The sidecar prepares the branch, guards it with its
//! pre-push hook, pushes it itself when the runner succeeds (exec mode)
//! or the woken agent reports `complete` (wake mode), and reports
//! `branch`, `base`, `head` (or `no_changes`). A retry on the same agent
//! replaces the branch its failed attempt pushed. The fake hub shows what
//! the real one never sends: a task on a repository the sidecar lacks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentcom_tests::fakehub::{assign_json, FakeHub};
use agentcom_tests::hub::Hub;
use agentcom_tests::procs::{bin, sh};
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};
use tempfile::TempDir;

const T: Duration = Duration::from_secs(30);

/// A bare remote `remote.git` under `r` with one commit on main, and a
/// clone of it for each agent (`work-<agent>`, with a git identity).
/// Returns the remote's path and its main commit.
fn remote_and_clones(r: &Path, agents: &[&str]) -> (PathBuf, String) {
    sh(r, "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null && cd seed && git config user.email t@t && git config user.name t && echo 1 > f && git add f && git commit -qm one && git push -q origin main");
    for agent in agents {
        sh(r, &format!("git clone -q remote.git work-{agent} && cd work-{agent} && git config user.email {agent}@t && git config user.name {agent}"));
    }
    let main = sh(r, "git -C remote.git rev-parse refs/heads/main");
    (r.join("remote.git"), main)
}

/// The hub's settings: repository `app` is the remote.
fn hub_toml(remote: &Path) -> String {
    format!(
        "[[repos]]\nname = \"app\"\nurl = {:?}\nmain_branch = \"main\"\n",
        remote.display().to_string()
    )
}

/// A remote with one commit on main, a clone of it for `agent`, and a
/// hub that guards it as repository `app` (failed attempts are retried at
/// once).
struct Setup {
    root: TempDir,
    remote: PathBuf,
    /// The remote's main commit at the start.
    main: String,
    hub: Hub,
}

fn setup(agent: &str) -> Setup {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (remote, main) = remote_and_clones(r, &[agent]);
    let hub = Hub::start_with_config(r, &hub_toml(&remote), &[("AGENTCOM_RETRY__BACKOFF_S", "0")]);
    Setup {
        root,
        remote,
        main,
        hub,
    }
}

impl Setup {
    fn r(&self) -> &Path {
        self.root.path()
    }

    /// Submit `body`; its id.
    fn submit(&self, body: Value) -> String {
        self.hub.submit(body)["id"].as_str().unwrap().to_string()
    }

    /// `result` names `branch`, based on the starting main, and its head
    /// is what the remote has for it; the head.
    fn pushed_head(&self, result: &Value, branch: &str) -> String {
        assert_eq!(result["branch"], branch, "{result}");
        assert_eq!(result["base"], self.main.as_str(), "{result}");
        assert_ne!(result["no_changes"], true, "{result}");
        let head = result["head"].as_str().expect("result.head").to_string();
        assert_pushed(&self.remote, branch, &head);
        head
    }
}

/// The `[git]` section of agent `agent`'s sidecar: its clone of `app`.
fn git_section(r: &Path, agent: &str) -> String {
    format!(
        "[git]\nrepo = \"app\"\nrepo_dir = {:?}\nremote = \"origin\"\nmain_branch = \"main\"\n",
        r.join(format!("work-{agent}")).display().to_string()
    )
}

/// The commit `reference` names in the remote, if any.
fn remote_ref(remote: &Path, reference: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(remote)
        .args(["rev-parse", "--verify", "--quiet", reference])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Wait until the sidecar's report is in: the task `completed`, or (a hub
/// that opens changes) `in_review`.
fn wait_reported(hub: &Hub, id: &str) -> Value {
    wait_until(
        T,
        &format!("task {id} to be completed or in review"),
        || {
            let t = hub.task(id);
            let status = t["status"].as_str().unwrap_or_default().to_string();
            assert!(
                !["dead", "cancelled"].contains(&status.as_str()),
                "task {id} is {status}: {}",
                t["last_error"]
            );
            ["completed", "in_review"]
                .contains(&status.as_str())
                .then_some(t)
        },
    )
}

/// The pushed branch points at `head`; a hub that merged it may have
/// deleted the branch, and then main holds `head`.
fn assert_pushed(remote: &Path, branch: &str, head: &str) {
    match remote_ref(remote, &format!("refs/heads/{branch}")) {
        Some(tip) => assert_eq!(tip, head, "the remote's {branch}"),
        None => {
            sh(
                remote,
                &format!("git merge-base --is-ancestor {head} refs/heads/main"),
            );
        }
    }
}

fn message_of(remote: &Path, commit: &str) -> String {
    sh(remote, &format!("git log -1 --format=%s {commit}"))
}

/// The retry bug: attempt 1 pushed its branch, then failed; attempt 2 on
/// the same agent starts again from main, so its branch is not a
/// fast-forward of the pushed one. The sidecar's leased push replaces it.
#[test]
fn a_retry_on_the_same_agent_replaces_the_branch_its_failed_attempt_pushed() {
    let x = setup("fixer");
    let r = x.r();
    // Attempt 1 commits, pushes its own branch (the hook lets it), then
    // fails; attempt 2 commits something else and succeeds.
    let runner = format!(
        r#"set -e
if [ ! -e {r}/first.head ]; then
  echo one > work.txt && git add work.txt && git commit -qm "attempt one"
  git push -q origin "HEAD:refs/heads/$AGENTCOM_BRANCH"
  git rev-parse HEAD > {r}/first.head
  echo "gave up after pushing" >&2
  exit 1
fi
[ "$(git rev-parse HEAD)" = "$(git rev-parse origin/main)" ] || {{ echo "not on a fresh main" >&2; exit 3; }}
echo two > work.txt && git add work.txt && git commit -qm "attempt two"
echo '{{"summary":"second time lucky"}}' > "$AGENTCOM_RESULT_FILE""#,
        r = r.display()
    );
    let _s = Sidecar::start(r, &x.hub, "fixer", &[], &runner, &git_section(r, "fixer"));
    let id = x.submit(json!({ "title": "fix it", "repo": "app", "max_retries": 2 }));
    let done = wait_reported(&x.hub, &id);
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"]["summary"], "second time lucky");
    let head = x.pushed_head(&done["result"], &format!("fixer/{id}"));
    let first = std::fs::read_to_string(r.join("first.head")).unwrap();
    assert_ne!(head, first.trim());
    assert_eq!(message_of(&x.remote, &head), "attempt two");
    assert_eq!(
        sh(&x.remote, &format!("git rev-parse {head}~1")),
        x.main,
        "attempt 2 sits on main, not on attempt 1"
    );
}

/// The same bug in the hand-run workflow: a runner that pushes with
/// `agentcom-sidecar git submit` (a task without `repo`) on every attempt.
#[test]
fn a_retry_that_submits_by_hand_replaces_the_branch_its_failed_attempt_pushed() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (remote, main) = remote_and_clones(r, &["hand"]);
    let hub = Hub::start(r, &[("AGENTCOM_RETRY__BACKOFF_S", "0")]);
    let config = r.join("sidecar-hand/sidecar.toml");
    let runner = format!(
        r#"set -e
if [ ! -e {r}/first.done ]; then
  echo one > work.txt && git add work.txt && git commit -qm "attempt one"
  {bin} git submit --config {config}
  touch {r}/first.done
  exit 1
fi
echo two > work.txt && git add work.txt && git commit -qm "attempt two"
{bin} git submit --config {config}
printf '{{"branch":"%s"}}' "$AGENTCOM_BRANCH" > "$AGENTCOM_RESULT_FILE""#,
        r = r.display(),
        bin = bin("agentcom-sidecar").display(),
        config = config.display()
    );
    let git = format!(
        "[git]\nrepo_dir = {:?}\n",
        r.join("work-hand").display().to_string()
    );
    let _s = Sidecar::start(r, &hub, "hand", &[], &runner, &git);
    let t = hub.submit(json!({ "title": "fix it by hand", "max_retries": 2 }));
    let id = t["id"].as_str().unwrap().to_string();
    let done = wait_reported(&hub, &id);
    assert_eq!(done["attempts"], 2, "{done}");
    let branch = format!("hand/{id}");
    let tip = remote_ref(&remote, &format!("refs/heads/{branch}")).expect("the branch");
    assert_eq!(message_of(&remote, &tip), "attempt two");
    assert_eq!(sh(&remote, &format!("git rev-parse {tip}~1")), main);
}

#[test]
fn the_pre_push_hook_refuses_main_and_another_agents_branch() {
    let x = setup("guarded");
    let r = x.r();
    // The runner commits, then tries what it must not do, as a runner
    // could: push to main, and to another agent's branch.
    let runner = format!(
        r#"echo x > x.txt && git add x.txt && git commit -qm "the work" || exit 9
git push origin HEAD:main > {r}/to-main.txt 2>&1 && echo pushed > {r}/to-main.status || echo refused > {r}/to-main.status
git push origin "HEAD:refs/heads/intruder/$AGENTCOM_TASK_ID" > {r}/to-other.txt 2>&1 && echo pushed > {r}/to-other.status || echo refused > {r}/to-other.status
exit 0"#,
        r = r.display()
    );
    let git = git_section(r, "guarded");
    let _s = Sidecar::start(r, &x.hub, "guarded", &[], &runner, &git);
    let id = x.submit(json!({ "title": "stay in your lane", "repo": "app" }));
    let done = wait_reported(&x.hub, &id);
    let read = |name: &str| std::fs::read_to_string(r.join(name)).unwrap();
    assert_eq!(read("to-main.status").trim(), "refused");
    assert!(
        read("to-main.txt").contains(
            "agentcom: refusing to push to refs/heads/main: main moves only through the hub's merge queue"
        ),
        "{}",
        read("to-main.txt")
    );
    assert_eq!(read("to-other.status").trim(), "refused");
    assert!(
        read("to-other.txt").contains(&format!(
            "agentcom: refusing to push to refs/heads/intruder/{id}: this agent pushes only to branches under refs/heads/guarded/"
        )),
        "{}",
        read("to-other.txt")
    );
    assert_eq!(
        remote_ref(&x.remote, &format!("refs/heads/intruder/{id}")),
        None
    );
    // Its own branch went out, pushed by the sidecar.
    let head = x.pushed_head(&done["result"], &format!("guarded/{id}"));
    assert_eq!(message_of(&x.remote, &head), "the work");
}

#[test]
fn a_runner_that_commits_nothing_completes_with_no_changes_and_pushes_nothing() {
    let x = setup("idler");
    let r = x.r();
    let runner = "echo 'nothing needed doing' > \"$AGENTCOM_RESULT_FILE\"";
    let _s = Sidecar::start(r, &x.hub, "idler", &[], runner, &git_section(r, "idler"));
    let id = x.submit(json!({ "title": "already fine", "repo": "app" }));
    let done = x.hub.wait_status(&id, "completed", T);
    let result = &done["result"];
    assert_eq!(result["no_changes"], true, "{result}");
    assert_eq!(result["summary"], "nothing needed doing");
    assert_eq!(result["branch"], format!("idler/{id}").as_str());
    assert_eq!(result["base"], x.main.as_str());
    assert_eq!(result["head"], x.main.as_str());
    assert_eq!(
        remote_ref(&x.remote, &format!("refs/heads/idler/{id}")),
        None,
        "nothing pushed"
    );
    assert_eq!(
        remote_ref(&x.remote, "refs/heads/main"),
        Some(x.main.clone())
    );
}

#[test]
fn wake_mode_the_branch_is_pushed_when_the_agent_reports_complete() {
    let x = setup("sleeper");
    let r = x.r();
    let woken = r.join("woken.txt");
    let wake = format!(
        "echo \"$AGENTCOM_BRANCH $AGENTCOM_REPO_DIR\" > {}",
        woken.display()
    );
    let token = x.hub.add_agent("sleeper", &[]);
    let git = git_section(r, "sleeper");
    let s = Sidecar::start_with_token(r, &x.hub, "sleeper", &token, &[], "wake", &wake, &git);
    let id = x.submit(json!({ "title": "wake up and fix it", "repo": "app" }));
    let line = wait_until(T, "the agent to be woken", || {
        std::fs::read_to_string(&woken)
            .ok()
            .filter(|s| !s.is_empty())
    });
    let work = r.join("work-sleeper");
    let branch = format!("sleeper/{id}");
    assert_eq!(line.trim(), format!("{branch} {}", work.display()));
    // The woken agent works on the prepared branch, commits, and reports.
    sh(
        &work,
        "echo awake > w.txt && git add w.txt && git commit -qm 'woken work'",
    );
    let head = sh(&work, "git rev-parse HEAD");
    assert_eq!(
        remote_ref(&x.remote, &format!("refs/heads/{branch}")),
        None,
        "not pushed before the agent reports"
    );
    let out = Command::new(bin("agentcom-sidecar"))
        .args(["complete", "--task", &id, "--summary", "did it awake"])
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("the sidecar pushes branch {branch}")),
        "{said}"
    );
    let done = wait_reported(&x.hub, &id);
    assert_eq!(done["result"]["summary"], "did it awake");
    assert_eq!(x.pushed_head(&done["result"], &branch), head);
}

/// `deploy/runner.example.sh`, as an operator would start with it.
#[test]
fn the_example_runner_commits_and_the_sidecar_pushes_its_branch() {
    let x = setup("example");
    let r = x.r();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/runner.example.sh");
    let runner = format!("exec {:?}", example.display().to_string());
    let git = git_section(r, "example");
    let _s = Sidecar::start(r, &x.hub, "example", &[], &runner, &git);
    let id = x.submit(json!({ "title": "Note the release", "repo": "app" }));
    let done = wait_reported(&x.hub, &id);
    assert_eq!(
        done["result"]["summary"],
        "appended a line to AGENTCOM-LOG.md"
    );
    let head = x.pushed_head(&done["result"], &format!("example/{id}"));
    assert_eq!(message_of(&x.remote, &head), "Note the release");
    assert_eq!(
        sh(&x.remote, &format!("git show {head}:AGENTCOM-LOG.md")),
        format!("- {id}: Note the release (generation 1, agent example, 0 earlier attempt(s))")
    );
    assert_eq!(
        sh(&r.join("work-example"), "git status --porcelain"),
        "",
        "it leaves the work tree clean"
    );
}

/// Only a hub that ignores `hello.repos` would send it; the sidecar
/// refuses it before anything is saved, run or fetched.
#[test]
fn a_task_on_another_repository_is_rejected_and_hello_names_the_sidecars_repository() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let runs = r.join("runs.log");
    let runner = format!("echo ran >> {}", runs.display());
    let git = format!(
        "[git]\nrepo = \"app\"\nrepo_dir = {:?}\n",
        r.join("no-clone-here").display().to_string()
    );
    let s = Sidecar::start_with_token(r, &fake, "agent1", "tok", &[], "exec", &runner, &git);
    let (mut conn, hello) = fake.accept_welcomed(T);
    assert_eq!(hello["repos"], json!(["app"]), "{hello}");
    for (repo, reason) in [
        (
            json!("other"),
            "this sidecar has no clone of repository other (it has: app)".to_string(),
        ),
        (
            json!("../../etc"),
            "invalid repository name \"../../etc\"".to_string(),
        ),
    ] {
        let mut assign = assign_json("t1", 1);
        assign["task"]["repo"] = repo.clone();
        conn.send(&assign).unwrap();
        let replies = conn.sync(T).expect("the sidecar stays connected");
        let reject = replies
            .iter()
            .find(|m| m["type"] == "reject")
            .unwrap_or_else(|| panic!("{repo}: {replies:?}"));
        assert_eq!(reject["task_id"], "t1");
        assert!(
            reject["reason"].as_str().unwrap().starts_with(&reason),
            "{reject}"
        );
        assert!(
            !replies.iter().any(|m| m["type"] == "accept"),
            "{replies:?}"
        );
    }
    assert!(!runs.exists(), "no runner ran");
    assert!(!s.state_dir().join("current.json").exists());
}
