//! The sidecar under hostile or broken input, against the real binary:
//! each test reproduces a finding of the hardening review (path
//! traversal, a poison result, absurd `welcome` values, an outbox that
//! cannot be written, world-readable task files, a backoff reset by
//! connections that die at once) and shows it fixed. The real hub is used
//! where it can produce the situation; the fake hub where only a broken
//! or hostile hub would.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use agentcom_tests::fakehub::{assign_json, task_json, FakeHub};
use agentcom_tests::hub::Hub;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// A sidecar of agent `agent1` connected to `fake`, running `runner`.
fn fake_sidecar(root: &Path, fake: &FakeHub, runner: &str) -> Sidecar {
    Sidecar::start_with_token(root, fake, "agent1", "tok", &[], "exec", runner, "")
}

/// The `type`s of messages, heartbeats left out.
fn kinds(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["type"] != "heartbeat")
        .map(|m| m["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Finding 6: the task id from the hub became a path: `../../x` made the
/// sidecar write files and start the runner outside `state_dir`.
#[test]
fn a_traversal_task_id_is_rejected_and_nothing_is_written_outside_the_state_dir() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let runs = r.join("runs.log");
    let runner = format!(
        "echo \"$AGENTCOM_TASK_ID\" >> {}\necho '{{\"summary\":\"ok\"}}' > \"$AGENTCOM_RESULT_FILE\"",
        runs.display()
    );
    let mut s = fake_sidecar(r, &fake, &runner);
    let (mut conn, _) = fake.accept_welcomed(T);
    let absolute = r.join("abs").display().to_string();
    let hostile = [
        "../../x",
        "../escape",
        "..",
        ".",
        absolute.as_str(),
        "a/b",
        "x\0y",
        "a\nb",
        "-rf",
        "--upload-pack=touch",
        "",
        "ünïcode",
    ];
    for id in hostile {
        conn.send(&assign_json(id, 1)).unwrap();
        let replies = conn.sync(T).expect("the sidecar stays connected");
        assert_eq!(kinds(&replies), ["reject"], "{id:?}: {replies:?}");
        let reject = &replies.iter().find(|m| m["type"] == "reject").unwrap();
        assert_eq!(reject["task_id"], id);
        assert!(
            reject["reason"]
                .as_str()
                .unwrap()
                .contains("invalid task id"),
            "{reject}"
        );
    }
    // A valid id with a body that names another task is refused too.
    let mut a = assign_json("T1", 1);
    a["task"] = task_json("../../body", 1);
    conn.send(&a).unwrap();
    let replies = conn.sync(T).expect("connected");
    assert_eq!(kinds(&replies), ["reject"], "{replies:?}");

    assert!(s.running(), "the sidecar is alive:\n{}", s.log());
    assert!(!runs.exists(), "no runner started");
    assert_eq!(
        s.strays(r, &[]),
        Vec::<std::path::PathBuf>::new(),
        "nothing outside the state dir"
    );
    let state = s.state_dir();
    assert!(!state.join("current.json").exists());
    assert_eq!(std::fs::read_dir(state.join("tasks")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(state.join("outbox")).unwrap().count(), 0);

    // It still works.
    conn.send(&assign_json("01J0VALIDTASK0000000000000", 3))
        .unwrap();
    let done = conn.recv_type("complete", T).expect("complete");
    assert_eq!(done["task_id"], "01J0VALIDTASK0000000000000");
    assert_eq!(done["result"]["summary"], "ok");
}

/// Finding 7: a 400 KB result of control bytes encodes to 2.4 MB, over the
/// 1 MiB frame limit: the hub closed the socket, the sidecar resent it on
/// every reconnect and the task stayed `working`.
#[test]
fn a_result_too_large_to_send_fails_the_task_with_a_clear_error_instead_of_wedging_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[
            ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "3"),
            ("AGENTCOM_RETRY__BACKOFF_S", "0"),
        ],
    );
    let runner = "head -c 409600 /dev/zero | tr '\\000' '\\001' > \"$AGENTCOM_RESULT_FILE\"";
    let s = Sidecar::start(root.path(), &hub, "poisoned", &[], runner, "");
    hub.wait_agent("poisoned", "idle", T);
    let t = hub.submit(json!({ "title": "say too much", "max_retries": 2 }));
    let id = t["id"].as_str().unwrap();
    let dead = hub.wait_status(id, "dead", T);
    let error = dead["last_error"].as_str().unwrap();
    assert!(
        error.contains("the result is too large to send") && error.contains("the limit is 1048576"),
        "{error}"
    );
    assert_eq!(
        dead["attempts"], 1,
        "not retried: it would be too large again"
    );
    hub.wait_agent("poisoned", "idle", T);
    let connects = s
        .log()
        .lines()
        .filter(|l| l.contains("connected to the hub"))
        .count();
    assert!(connects <= 2, "{connects} connections:\n{}", s.log());
}

/// Finding 11: the sidecar panicked on a `welcome` with
/// `heartbeat_interval_s = 2^64-1`.
#[test]
fn a_welcome_with_absurd_heartbeat_values_does_not_panic_the_sidecar() {
    let root = tempfile::tempdir().unwrap();
    let fake = FakeHub::start();
    let mut s = fake_sidecar(root.path(), &fake, "exit 0");
    let (mut conn, _) = fake.accept_welcomed(T);
    let max = json!(u64::MAX);
    let welcomes: [(Value, Option<Value>); 5] = [
        (max.clone(), Some(max.clone())),
        (max.clone(), None),
        (json!(0), Some(json!(0))),
        (json!(1), Some(max.clone())),
        (json!(1u64 << 63), Some(json!(1))),
    ];
    for (interval, timeout) in welcomes {
        conn.welcome(interval.clone(), timeout.clone());
        let replies = conn.sync(T).unwrap_or_else(|| {
            panic!(
                "the sidecar dropped the connection after welcome {interval} / {timeout:?}:\n{}",
                s.log()
            )
        });
        assert!(
            replies.iter().any(|m| m["type"] == "heartbeat"),
            "a welcome is answered with a heartbeat: {replies:?}"
        );
        assert!(s.running(), "{}", s.log());
    }
    conn.welcome(30, Some(json!(90)));
    conn.send(&assign_json("T1", 1)).unwrap();
    assert!(conn.recv_type("complete", T).is_some());
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

/// Finding 6: the outbox write failed and the result was sent without
/// being saved. An unsaved report is never sent; the attempt is held and
/// saving is tried again until it works.
#[test]
fn a_report_that_cannot_be_saved_is_not_sent_until_it_can_be() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "3")],
    );
    let gate = root.path().join("gate");
    let runner = format!(
        "while [ ! -f {} ]; do sleep 0.05; done\necho '{{\"summary\":\"saved first\"}}' > \"$AGENTCOM_RESULT_FILE\"",
        gate.display()
    );
    let s = Sidecar::start(root.path(), &hub, "diskless", &[], &runner, "");
    hub.wait_agent("diskless", "idle", T);
    let t = hub.submit(json!({ "title": "finish on a broken disk" }));
    let id = t["id"].as_str().unwrap();
    hub.wait_status(id, "working", T);
    // The outbox cannot be written: a file stands where its folder was.
    let outbox = s.state_dir().join("outbox");
    std::fs::remove_dir(&outbox).unwrap();
    std::fs::write(&outbox, "not a folder").unwrap();
    std::fs::write(&gate, "go").unwrap();
    let failed_saves = || {
        s.log()
            .lines()
            .filter(|l| l.contains("cannot save the report"))
            .count()
    };
    // Two failed saves (the runner's end, then a retry on the heartbeat
    // timer), unless the report went out anyway.
    wait_until(T, "the sidecar to fail to save the report twice", || {
        (failed_saves() >= 2 || hub.task(id)["status"] != "working").then_some(())
    });
    let task = hub.task(id);
    assert_eq!(task["status"], "working", "the unsaved report was sent");
    assert_eq!(hub.agent("diskless")["state"], "working");
    // The disk is back: the report is saved, then sent.
    std::fs::remove_file(&outbox).unwrap();
    std::fs::create_dir(&outbox).unwrap();
    let done = hub.wait_status(id, "completed", T);
    assert_eq!(done["result"]["summary"], "saved first");
    hub.wait_agent("diskless", "idle", T);
}

/// Finding 11: task files were world-readable (0644).
#[test]
fn the_sidecar_keeps_its_files_private() {
    let root = tempfile::tempdir().unwrap();
    let fake = FakeHub::start();
    let gate = root.path().join("gate");
    let started = root.path().join("started");
    let runner = format!(
        "touch {}\nwhile [ ! -f {} ]; do sleep 0.05; done\necho hello\necho '{{\"summary\":\"private\"}}' > \"$AGENTCOM_RESULT_FILE\"",
        started.display(),
        gate.display()
    );
    let s = fake_sidecar(root.path(), &fake, &runner);
    let (mut conn, _) = fake.accept_welcomed(T);
    conn.send(&assign_json("T1", 1)).unwrap();
    assert_eq!(kinds(&conn.sync(T).unwrap()), ["accept"]);
    wait_until(T, "the runner to start", || started.exists().then_some(()));
    let state = s.state_dir();
    let task_dir = state.join("tasks").join("T1-1");
    assert_eq!(mode(&state.join("current.json")), 0o600, "current.json");
    std::fs::write(&gate, "go").unwrap();
    // The report is left unacknowledged, so it stays in the outbox.
    let done = conn.recv_type("complete", T).expect("complete");
    assert_eq!(done["result"]["summary"], "private");
    let entries: Vec<_> = std::fs::read_dir(state.join("outbox"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    for (path, want) in [
        (state.clone(), 0o700),
        (state.join("outbox"), 0o700),
        (state.join("tasks"), 0o700),
        (task_dir.clone(), 0o700),
        (task_dir.join("task.json"), 0o600),
        (task_dir.join("result.json"), 0o600),
        (task_dir.join("runner.log"), 0o600),
        (entries[0].clone(), 0o600),
    ] {
        assert_eq!(
            format!("{:o}", mode(&path)),
            format!("{want:o}"),
            "{}",
            path.display()
        );
    }
}

/// Finding 7: the sidecar reset its backoff on every `welcome`, so a
/// connection that the hub closes at once was retried hundreds of times a
/// minute. A connection that dies right after `welcome` keeps growing the
/// delay.
#[test]
fn a_connection_that_dies_right_after_welcome_keeps_growing_the_reconnect_delay() {
    let root = tempfile::tempdir().unwrap();
    let fake = FakeHub::start();
    let s = fake_sidecar(root.path(), &fake, "exit 0");
    for _ in 0..5 {
        let (mut conn, _) = fake.accept_welcomed(T);
        // The welcome is handled before the close that follows it.
        conn.sync(T).expect("welcomed");
        conn.close();
    }
    let failures = |log: &str| -> Vec<u32> {
        log.lines()
            .filter(|l| l.contains("reconnecting after a pause"))
            .filter_map(|l| l.split("failures=").nth(1))
            .filter_map(|f| f.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let seen = wait_until(T, "five pauses to be logged", || {
        let f = failures(&s.log());
        (f.len() >= 5).then_some(f)
    });
    assert_eq!(seen[..5], [1, 2, 3, 4, 5], "{}", s.log());
}
