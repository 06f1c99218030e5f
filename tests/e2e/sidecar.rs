//! The sidecar's other faces, end to end: `wake` mode (the woken agent
//! reports with `agentcom-sidecar complete|fail`), and the git workflow
//! (a branch from freshly fetched main, pushed with `git submit`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::{bin, sh};
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn sidecar_cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("agentcom-sidecar"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn wake_mode_the_woken_agent_reports_through_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let woken = root.path().join("woken.txt");
    // The wake command only records that it was called, then exits.
    let wake = format!(
        "echo \"$AGENTCOM_TASK_ID $AGENTCOM_GENERATION\" >> {}",
        woken.display()
    );
    let token = hub.add_agent("sleeper", &[]);
    let s = Sidecar::start_with_token(root.path(), &hub, "sleeper", &token, &[], "wake", &wake, "");
    hub.wait_agent("sleeper", "idle", T);

    let t = hub.submit(json!({ "title": "wake up and fix it" }));
    let id = t["id"].as_str().unwrap().to_string();
    hub.wait_status(&id, "working", T);
    let line = wait_until(T, "the agent to be woken", || {
        std::fs::read_to_string(&woken)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(line.trim(), format!("{id} 1"));
    // Woken is not done: it keeps working until the agent reports. A wrong
    // report would come from the sidecar's handler of the wake command's
    // exit (on its one event loop), which logs "agent woken; waiting for it
    // to report" when it decides to wait. Wait for that line, or for the
    // task to leave `working` (only a report does that), so that a sidecar
    // that reports on exit fails below instead of timing out. The loop
    // answers a later `status` after that handler: "working on <id>#1"
    // means it still holds the attempt, and every report goes through
    // `finish`, which drops the attempt before sending. So no report was
    // sent, and the hub still has the task working.
    let attempt = format!("{id}#1");
    wait_until(T, "the sidecar to handle the wake command's exit", || {
        let handled = s
            .log()
            .lines()
            .any(|l| l.contains("agent woken; waiting for it to report") && l.contains(&attempt));
        (handled || hub.task(&id)["status"] != "working").then_some(())
    });
    let (ok, status) = sidecar_cli(&s.config, &["status"]);
    assert!(
        ok && status.contains(&format!("working on {attempt}")),
        "{status}"
    );
    assert_eq!(hub.task(&id)["status"], "working");
    assert_eq!(hub.agent("sleeper")["state"], "working");

    let (ok, out) = sidecar_cli(
        &s.config,
        &[
            "complete",
            "--task",
            &id,
            "--summary",
            "fixed it",
            "--pr-url",
            "https://git.example/pulls/9",
        ],
    );
    assert!(ok, "{out}");
    let done = hub.wait_status(&id, "completed", T);
    assert_eq!(done["result"]["summary"], "fixed it");
    assert_eq!(done["result"]["pr_url"], "https://git.example/pulls/9");
    // A second report for it is refused locally.
    let (ok, out) = sidecar_cli(&s.config, &["complete", "--task", &id]);
    assert!(!ok && out.contains("holds no task"), "{out}");

    let t2 = hub.submit(json!({ "title": "impossible" }));
    let id2 = t2["id"].as_str().unwrap().to_string();
    hub.wait_status(&id2, "working", T);
    let (ok, out) = sidecar_cli(
        &s.config,
        &["fail", "--task", "SOMETHING-ELSE", "--error", "x"],
    );
    assert!(!ok && out.contains(&format!("works on {id2}#1")), "{out}");
    let (ok, out) = sidecar_cli(
        &s.config,
        &[
            "fail",
            "--task",
            &id2,
            "--error",
            "the spec contradicts itself",
            "--not-retryable",
        ],
    );
    assert!(ok, "{out}");
    let dead = hub.wait_status(&id2, "dead", T);
    assert!(dead["last_error"].as_str().unwrap().contains("contradicts"));
    hub.wait_agent("sleeper", "idle", T);
}

#[test]
fn git_tasks_start_from_the_freshly_fetched_main_and_push_their_branch() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // A remote, the agent's clone, and main moving on after the clone.
    sh(r, "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null && cd seed && git config user.email t@t && git config user.name t && echo 1 > f && git add f && git commit -qm one && git push -q origin main");
    sh(r, "git clone -q remote.git work && cd work && git config user.email agent@t && git config user.name agent");
    sh(
        r,
        "cd seed && echo 2 > f && git commit -qam two && git push -q origin main",
    );
    let fresh_main = sh(r, "cd seed && git rev-parse HEAD");
    assert_ne!(
        sh(r, "cd work && git rev-parse HEAD"),
        fresh_main,
        "the agent's clone is stale"
    );

    let hub = Hub::start(r, &[]);
    let config = r.join("sidecar-gitter/sidecar.toml");
    let runner = format!(
        r#"set -e
[ "$(git rev-parse --abbrev-ref HEAD)" = "$AGENTCOM_BRANCH" ]
[ "$PWD" = "$AGENTCOM_REPO_DIR" ]
git rev-parse HEAD~0 > {r}/base.txt
echo "work for $AGENTCOM_TASK_ID" > work.txt
git add work.txt && git commit -qm "task $AGENTCOM_TASK_ID"
{bin} git submit --config {config} > {r}/submit.txt
printf '{{"summary":"pushed","branch":"%s"}}' "$AGENTCOM_BRANCH" > "$AGENTCOM_RESULT_FILE""#,
        r = r.display(),
        bin = bin("agentcom-sidecar").display(),
        config = config.display()
    );
    let git = format!(
        "[git]\nrepo_dir = {:?}\nremote = \"origin\"\nmain_branch = \"main\"\n",
        r.join("work").display().to_string()
    );
    let _s = Sidecar::start(r, &hub, "gitter", &["git"], &runner, &git);
    let t = hub.submit(json!({ "title": "change something", "needed_capabilities": ["git"] }));
    let id = t["id"].as_str().unwrap().to_string();
    let done = hub.wait_status(&id, "completed", T);
    let branch = format!("gitter/{id}");
    assert_eq!(done["result"]["branch"], branch.as_str());
    assert_eq!(
        std::fs::read_to_string(r.join("base.txt")).unwrap().trim(),
        fresh_main,
        "branched from the fresh main"
    );
    let pushed_parent = sh(r, &format!("cd remote.git && git rev-parse {branch}~1"));
    assert_eq!(
        pushed_parent, fresh_main,
        "the pushed branch sits on the fresh main"
    );
    assert!(std::fs::read_to_string(r.join("submit.txt"))
        .unwrap()
        .contains(&branch));

    // A dirty work tree is refused before the agent runs: the machine's
    // fault, not the task's — no retry used, the agent degraded with the
    // reason, the task waiting for a healthy agent.
    std::fs::write(r.join("work/stray.txt"), "uncommitted").unwrap();
    let t2 = hub.submit(
        json!({ "title": "on a dirty tree", "needed_capabilities": ["git"], "max_retries": 0 }),
    );
    let agent = hub.wait_agent("gitter", "degraded", T);
    let reason = agent["degraded_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("environment:") && reason.contains("uncommitted changes"),
        "{agent}"
    );
    let t2 = hub.task(t2["id"].as_str().unwrap());
    assert_eq!(t2["status"], "queued", "{t2}");
    assert_eq!(t2["free_attempts"], 1);
    let failed = &t2["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["event"] == "failed")
        .unwrap()
        .clone();
    assert_eq!(failed["blame"], "environment", "{t2}");
}

/// Whether process `pid` exists (signal 0).
fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[test]
fn wake_mode_a_cancel_stops_the_woken_agent_through_the_cancel_command() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    // The woken "agent" detaches from the wake command (its own session),
    // so it outlives it, as a real agent does; it records its pid.
    let wake = format!(
        r#"setsid sh -c 'echo $$ > {r}/agent-$AGENTCOM_TASK_ID.pid; exec sleep 600' </dev/null >/dev/null 2>&1 &
while [ ! -s {r}/agent-$AGENTCOM_TASK_ID.pid ]; do sleep 0.05; done"#,
        r = r.display()
    );
    let cancel = format!(
        r#"cancel_command = ["sh", "-c", "echo \"$AGENTCOM_CANCEL_REASON\" > {r}/cancel-reason; kill $(cat {r}/agent-$AGENTCOM_TASK_ID.pid)"]"#,
        r = r.display()
    );
    let token = hub.add_agent("sleeper", &[]);
    let _s = Sidecar::start_with_token(r, &hub, "sleeper", &token, &[], "wake", &wake, &cancel);
    hub.wait_agent("sleeper", "idle", T);
    let id = hub.submit(json!({ "title": "a long job" }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    hub.wait_status(&id, "working", T);
    let pid_file = r.join(format!("agent-{id}.pid"));
    let pid: i32 = wait_until(T, "the woken agent to start", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    assert!(alive(pid), "the woken agent runs");
    hub.ok("POST", &format!("/api/tasks/{id}/cancel"), None);
    wait_until(T, "the woken agent to be stopped", || {
        (!alive(pid)).then_some(())
    });
    assert_eq!(hub.task(&id)["status"], "cancelled");
    let reason = std::fs::read_to_string(r.join("cancel-reason")).unwrap();
    assert!(!reason.trim().is_empty(), "the reason is passed on");
    hub.wait_agent("sleeper", "idle", T);
}
