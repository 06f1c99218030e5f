//! Failure handling that understands agents, sidecar side, end to end:
//! the real sidecar against the fake hub. What kind of failure each
//! `fail` is (`class`: `environment` for the machine, `rate_limited` with
//! `retry_after_s` for a limited runner, `task` otherwise) with the end of
//! the runner's output (`log_tail`, at most 8 KiB); what each heartbeat
//! says the runner is doing (`activity`); and the dossier of earlier
//! attempts in the task file the runner reads.
//!
//! Runners that must keep running while the test looks at them wait for
//! a file the test writes; every wait is on a message or a file, never a
//! fixed pause.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agentcom_tests::fakehub::{assign_json, FakeConn, FakeHub};
use agentcom_tests::procs::{bin, sh};
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// A sidecar on a fake hub, welcomed with `heartbeat_s` heartbeats.
/// `extra` goes at the end of its `[runner]` table (and may open more).
fn start(
    r: &Path,
    fake: &FakeHub,
    mode: &str,
    runner: &str,
    extra: &str,
    heartbeat_s: u64,
) -> (Sidecar, FakeConn) {
    let s = Sidecar::start_with_token(r, fake, "agent1", "tok", &[], mode, runner, extra);
    let mut conn = fake.accept(T).expect("the sidecar to connect");
    conn.recv_type("hello", T).expect("hello");
    conn.welcome(heartbeat_s, Some(json!(300)));
    (s, conn)
}

/// Assign `assign`, expect its `accept`, then its report of `kind`
/// (acked).
fn report_of(conn: &mut FakeConn, assign: &Value, kind: &str) -> Value {
    conn.send(assign).unwrap();
    let accept = conn.recv_type("accept", T).expect("accept");
    assert_eq!(accept["task_id"], assign["task_id"]);
    let report = conn
        .recv_type(kind, T)
        .unwrap_or_else(|| panic!("a {kind} of {}: got {:?}", assign["task_id"], conn.received));
    assert_eq!(report["task_id"], assign["task_id"], "{report}");
    conn.ack(&report);
    report
}

#[test]
fn a_missing_runner_is_an_environment_failure() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let (s, mut conn) = start(r, &fake, "exec", "exit 0", "", 30);
    std::fs::remove_file(s.dir.join("runner.sh")).unwrap();
    let fail = report_of(&mut conn, &assign_json("t1", 1), "fail");
    assert_eq!(fail["class"], "environment", "{fail}");
    assert_eq!(fail["retryable"], true, "{fail}");
    assert!(fail.get("retry_after_s").is_none(), "{fail}");
    let error = fail["error"].as_str().unwrap();
    assert!(
        error.contains("runner.sh") && error.contains("No such file"),
        "{error}"
    );
    assert_eq!(fail["log_tail"], fail["error"], "the error is its log tail");

    // Not executable: the same.
    write_runner(&s.dir, "exit 0", 0o644);
    let fail = report_of(&mut conn, &assign_json("t2", 1), "fail");
    assert_eq!(fail["class"], "environment", "{fail}");
    assert!(
        fail["error"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{fail}"
    );
}

/// The attempt's folder cannot be made (a file is in its way, as a full
/// or broken disk would refuse it): the machine's failure, and the runner
/// never runs.
#[test]
fn a_task_folder_that_cannot_be_written_is_an_environment_failure() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let ran = r.join("ran");
    let runner = format!("touch {}", ran.display());
    let (s, mut conn) = start(r, &fake, "exec", &runner, "", 30);
    let tasks = s.state_dir().join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    std::fs::write(tasks.join("t1-1"), "in the way").unwrap();
    let fail = report_of(&mut conn, &assign_json("t1", 1), "fail");
    assert_eq!(fail["class"], "environment", "{fail}");
    let error = fail["error"].as_str().unwrap();
    assert!(
        error.starts_with("cannot create ") && error.contains("t1-1"),
        "{error}"
    );
    assert!(!ran.exists(), "the runner never ran");
}

/// Write the runner script with `mode` bits.
fn write_runner(dir: &Path, body: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("runner.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_rate_limited_runner_is_reported_rate_limited_with_its_wait() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    // t1: the rate-limit exit code; t2: the result file says so, with a
    // wait; t3: the exit code with a wait in the result file.
    let runner = r#"echo "calling the model for $AGENTCOM_TASK_ID"
case "$AGENTCOM_TASK_ID" in
  t1) echo "429 Too Many Requests" >&2; exit 75 ;;
  t2) echo '{"rate_limited": true, "retry_after_s": 120, "error": "quota"}' > "$AGENTCOM_RESULT_FILE"; exit 1 ;;
  t3) echo '{"retry_after_s": 7}' > "$AGENTCOM_RESULT_FILE"; exit 75 ;;
esac"#;
    let extra = "rate_limit_exit_code = 75\nrate_limit_default_s = 42\n";
    let (_s, mut conn) = start(r, &fake, "exec", runner, extra, 30);

    let fail = report_of(&mut conn, &assign_json("t1", 1), "fail");
    assert_eq!(fail["class"], "rate_limited", "{fail}");
    assert_eq!(fail["retry_after_s"], 42, "the default wait: {fail}");
    assert_eq!(fail["retryable"], true);
    assert_eq!(
        fail["log_tail"],
        "calling the model for t1\n429 Too Many Requests"
    );

    let fail = report_of(&mut conn, &assign_json("t2", 1), "fail");
    assert_eq!(fail["class"], "rate_limited", "{fail}");
    assert_eq!(fail["retry_after_s"], 120, "{fail}");
    assert!(
        fail["error"].as_str().unwrap().ends_with(": quota"),
        "{fail}"
    );

    let fail = report_of(&mut conn, &assign_json("t3", 1), "fail");
    assert_eq!(
        (&fail["class"], &fail["retry_after_s"]),
        (&json!("rate_limited"), &json!(7)),
        "{fail}"
    );
}

#[test]
fn an_ordinary_failure_is_the_tasks_with_the_last_8_kib_of_output() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    // 20,000 bytes of output (with multi-byte characters), then the end.
    let runner = r#"i=0
while [ $i -lt 400 ]; do echo "line $i: ééééééééééééééééééééééééééééééé"; i=$((i+1)); done
echo "error: the tests failed" >&2
exit 3"#;
    let (_s, mut conn) = start(r, &fake, "exec", runner, "", 30);
    let fail = report_of(&mut conn, &assign_json("t1", 1), "fail");
    assert_eq!(fail["class"], "task", "{fail}");
    assert_eq!(fail["retryable"], true);
    assert!(fail.get("retry_after_s").is_none(), "{fail}");
    let tail = fail["log_tail"].as_str().unwrap();
    assert!(tail.len() <= 8 * 1024, "{} bytes", tail.len());
    assert!(tail.len() > 8 * 1024 - 8, "{} bytes", tail.len());
    assert!(tail.ends_with("error: the tests failed"), "{tail}");
    assert!(tail.contains("line 399: é"), "the last lines are kept");
    let log = std::fs::read(r.join("sidecar-agent1/state/tasks/t1-1/runner.log")).unwrap();
    assert!(log.len() > 20_000, "the whole log stays on disk");
    let error = fail["error"].as_str().unwrap();
    assert!(
        error.starts_with("the runner exited with code 3: …"),
        "{error}"
    );
}

/// A bare remote with one commit on main and the agent's clone of it.
fn remote_and_clone(r: &Path) {
    sh(r, "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null && cd seed && git config user.email t@t && git config user.name t && echo 1 > f && git add f && git commit -qm one && git push -q origin main");
    sh(r, "git clone -q remote.git work && cd work && git config user.email agent@t && git config user.name agent");
}

fn git_section(r: &Path) -> String {
    format!(
        "[git]\nrepo = \"app\"\nrepo_dir = {:?}\n",
        r.join("work").display().to_string()
    )
}

fn repo_assign(id: &str) -> Value {
    let mut a = assign_json(id, 1);
    a["task"]["repo"] = json!("app");
    a
}

#[test]
fn an_unreachable_git_remote_is_an_environment_failure_with_gits_words() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    remote_and_clone(r);
    let fake = FakeHub::start();
    let ran = r.join("ran");
    let runner = format!("touch {}", ran.display());
    let (_s, mut conn) = start(r, &fake, "exec", &runner, &git_section(r), 30);
    std::fs::rename(r.join("remote.git"), r.join("remote.gone")).unwrap();
    let fail = report_of(&mut conn, &repo_assign("t1"), "fail");
    assert_eq!(fail["class"], "environment", "{fail}");
    assert_eq!(fail["retryable"], true);
    let tail = fail["log_tail"].as_str().unwrap();
    assert!(
        tail.starts_with("preparing the git branch failed: git fetch")
            && tail.contains("remote.git"),
        "{tail}"
    );
    assert!(!ran.exists(), "the runner never ran");
}

/// The next heartbeat (within `T`) for which `pick` says yes.
fn heartbeat_where(conn: &mut FakeConn, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    wait_until(T, what, || {
        conn.recv_type("heartbeat", Duration::from_secs(3))
            .filter(|hb| pick(hb))
    })
}

#[test]
fn heartbeats_show_the_runner_alive_and_its_output_growing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let release = r.join("release");
    // It writes a line every 50 ms until released.
    let runner = format!(
        "i=0\nwhile [ ! -e {} ]; do echo \"working $i\"; i=$((i+1)); sleep 0.05; done\necho done",
        release.display()
    );
    let (_s, mut conn) = start(r, &fake, "exec", &runner, "", 1);
    let idle = conn.recv_type("heartbeat", T).expect("a heartbeat");
    assert_eq!(idle["state"], "idle");
    assert!(idle.get("activity").is_none(), "idle: no activity: {idle}");

    conn.send(&assign_json("t1", 1)).unwrap();
    conn.recv_type("accept", T).expect("accept");
    let first = heartbeat_where(&mut conn, "a heartbeat with output", |hb| {
        hb["activity"]["output_bytes"].as_u64().unwrap_or(0) > 0
    });
    let a = &first["activity"];
    assert_eq!(first["state"], "working");
    assert_eq!(first["task_id"], "t1");
    assert_eq!(a["runner_alive"], true, "{first}");
    assert!(a["last_output_at"].is_string(), "{first}");
    assert!(a["last_commit_at"].is_null(), "no [git]: {first}");
    let bytes = a["output_bytes"].as_u64().unwrap();
    let later = heartbeat_where(&mut conn, "the output to grow", |hb| {
        hb["activity"]["output_bytes"].as_u64().unwrap_or(0) > bytes
    });
    assert_eq!(later["activity"]["runner_alive"], true);
    assert!(
        later["activity"]["last_output_at"].as_str() >= a["last_output_at"].as_str(),
        "{later}"
    );
    std::fs::write(&release, "").unwrap();
    let done = conn.recv_type("complete", T).expect("complete");
    conn.ack(&done);
    let after = conn.recv_type("heartbeat", T).unwrap();
    assert_eq!(after["state"], "idle");
}

#[test]
fn heartbeats_show_when_the_runner_last_committed_on_its_branch() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    remote_and_clone(r);
    let fake = FakeHub::start();
    let (commit, release) = (r.join("commit-now"), r.join("release"));
    let runner = format!(
        r#"while [ ! -e {commit} ]; do sleep 0.05; done
echo work > w.txt && git add w.txt && git commit -qm work
git log -1 --format=%ct > {r}/committed-at
while [ ! -e {release} ]; do sleep 0.05; done"#,
        commit = commit.display(),
        release = release.display(),
        r = r.display()
    );
    let (_s, mut conn) = start(r, &fake, "exec", &runner, &git_section(r), 1);
    conn.send(&repo_assign("t1")).unwrap();
    conn.recv_type("accept", T).expect("accept");
    let before = heartbeat_where(&mut conn, "a working heartbeat", |hb| {
        hb["activity"]["runner_alive"] == true
    });
    assert!(
        before["activity"]["last_commit_at"].is_null(),
        "no commit beyond main yet: {before}"
    );
    std::fs::write(&commit, "").unwrap();
    let after = heartbeat_where(&mut conn, "last_commit_at", |hb| {
        hb["activity"]["last_commit_at"].is_string()
    });
    let secs: i64 = wait_until(T, "the commit", || {
        std::fs::read_to_string(r.join("committed-at"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    let at = after["activity"]["last_commit_at"].as_str().unwrap();
    let expected = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%S.000Z"])
        .output()
        .unwrap();
    assert_eq!(at, String::from_utf8_lossy(&expected.stdout).trim());
    assert_eq!(after["activity"]["runner_alive"], true);
    std::fs::write(&release, "").unwrap();
    let done = conn.recv_type("complete", T).expect("complete");
    assert_eq!(done["result"]["branch"], "agent1/t1", "{done}");
}

#[test]
fn the_task_file_carries_the_dossier_of_earlier_attempts() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let copy = r.join("task-copy.json");
    // The README's example: the last attempt's error and log tail.
    let runner = format!(
        r#"cp "$AGENTCOM_TASK_FILE" {copy}
python3 -c '
import json, os
task = json.load(open(os.environ["AGENTCOM_TASK_FILE"]))
earlier = task.get("dossier", {{}}).get("attempts", [])
if earlier:
    last = earlier[-1]
    print("attempt", task["attempts"], "after", last["agent_id"], "said:", last["error"])
    print(last["log_tail"] or "")
' > {r}/briefing.txt"#,
        copy = copy.display(),
        r = r.display()
    );
    let (_s, mut conn) = start(r, &fake, "exec", &runner, "", 30);
    let dossier = json!({"attempts": [
        {"generation": 1, "agent_id": "a0", "outcome": "failed", "blame": "environment",
         "error": "git fetch failed", "log_tail": "fatal: unable to access", "branch": null,
         "head": null, "at": "2026-01-01T00:00:01.000Z"},
        {"generation": 2, "agent_id": "a9", "outcome": "failed", "blame": "task",
         "error": "the tests failed", "log_tail": "FAILED tests/x.rs\n2 failures", "branch": "a9/t1",
         "head": "0123abcd", "at": "2026-01-01T00:00:02.000Z"}
    ]});
    let mut assign = assign_json("t1", 3);
    assign["task"]["attempts"] = json!(2);
    assign["task"]["dossier"] = dossier.clone();
    report_of(&mut conn, &assign, "complete");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    assert_eq!(file["dossier"], dossier, "intact");
    assert_eq!(file["attempts"], 2);
    assert_eq!(
        std::fs::read_to_string(r.join("briefing.txt")).unwrap(),
        "attempt 2 after a9 said: the tests failed\nFAILED tests/x.rs\n2 failures\n"
    );
}

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
fn wake_mode_the_agent_reports_the_class_and_the_wait_and_mistakes_are_named() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let woken = r.join("woken");
    let wake = format!("touch {}", woken.display());
    let (s, mut conn) = start(r, &fake, "wake", &wake, "rate_limit_default_s = 90\n", 30);
    let fail_of = |conn: &mut FakeConn, id: &str, args: &[&str]| -> Value {
        conn.send(&assign_json(id, 1)).unwrap();
        conn.recv_type("accept", T).expect("accept");
        wait_until(T, "the agent to be woken", || woken.exists().then_some(()));
        std::fs::remove_file(&woken).unwrap();
        for (bad, said) in [
            (vec!["--class", "busy"], "unknown failure class \"busy\": it is one of task, environment, agent, rate_limited"),
            (vec!["--class", "rate_limited", "--retry-after-s", "86401"], "86401 is not in 0..=86400"),
            (vec!["--class", "rate_limited", "--retry-after-s=-1"], "invalid value '-1' for '--retry-after-s"),
            (vec!["--retry-after-s", "5"], "retry_after_s goes only with class rate_limited, not task"),
            (vec!["--log-file", "/nonexistent/log"], "cannot read /nonexistent/log"),
        ] {
            let mut all = vec!["fail", "--task", id, "--error", "x"];
            all.extend(bad.iter().copied());
            let (ok, out) = sidecar_cli(&s.config, &all);
            assert!(!ok && out.contains(said), "{bad:?}: {out}");
        }
        let mut all = vec!["fail", "--task", id, "--error", "no luck"];
        all.extend(args.iter().copied());
        let (ok, out) = sidecar_cli(&s.config, &all);
        assert!(ok, "{out}");
        let fail = conn.recv_type("fail", T).expect("fail");
        conn.ack(&fail);
        fail
    };
    let fail = fail_of(
        &mut conn,
        "t1",
        &["--class", "rate_limited", "--retry-after-s", "300"],
    );
    assert_eq!(
        (&fail["class"], &fail["retry_after_s"], &fail["error"]),
        (&json!("rate_limited"), &json!(300), &json!("no luck")),
        "{fail}"
    );
    let fail = fail_of(&mut conn, "t2", &["--class", "rate_limited"]);
    assert_eq!(fail["retry_after_s"], 90, "the default: {fail}");
    let session = r.join("session.log");
    std::fs::write(
        &session,
        format!("{}\nthe disk is full", "x".repeat(10_000)),
    )
    .unwrap();
    let fail = fail_of(
        &mut conn,
        "t3",
        &[
            "--class",
            "environment",
            "--log-file",
            session.to_str().unwrap(),
        ],
    );
    assert_eq!(fail["class"], "environment", "{fail}");
    let tail = fail["log_tail"].as_str().unwrap();
    assert!(
        tail.len() == 8 * 1024 && tail.ends_with("the disk is full"),
        "{}",
        tail.len()
    );
    let fail = fail_of(&mut conn, "t4", &[]);
    assert_eq!(fail["class"], "task", "{fail}");
}
