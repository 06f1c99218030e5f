//! `POST /api/tasks/batch` and `agentcom-hub task import` against a real
//! hub: 1,000 tasks with their descriptions in one body and one sync, all
//! or nothing (a bad task or a reused key named by its index, nothing
//! created), idempotency keys within a batch and across, a batch that
//! survives a `kill -9` right after its 201, and the CLI's import of JSON
//! lines and arrays (a bad line named, batches in order).

use std::io::Write;
use std::process::{Command, Stdio};

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::bin;
use serde_json::{json, Value};

/// A description of about `bytes` bytes that names its task.
fn description(i: usize, bytes: usize) -> String {
    let head = format!("task {i}: ");
    format!("{head}{}", "d".repeat(bytes.saturating_sub(head.len())))
}

fn batch(hub: &Hub, tasks: Vec<Value>) -> (u16, Value) {
    hub.call("POST", "/api/tasks/batch", Some(json!({ "tasks": tasks })))
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_batch_of_1000_tasks_with_descriptions_is_created_in_one_sync_and_listed() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    // 8 KiB each (over the 4 KiB a value keeps inline: each goes to a
    // file), 8 MiB in all: far over a single create's 256 KiB body.
    let tasks: Vec<Value> = (0..1000)
        .map(|i| {
            json!({
                "title": format!("backlog {i}"),
                "description": description(i, 8 * 1024),
                "priority": if i.is_multiple_of(2) { "low" } else { "high" },
                "metadata": { "n": i },
            })
        })
        .collect();
    let before = hub.state()["store"].clone();
    let (s, answer) = batch(&hub, tasks);
    assert_eq!(s, 201, "{answer}");
    assert_eq!(answer["created"], 1000);
    assert_eq!(answer["existing"], 0);
    let listed = answer["tasks"].as_array().unwrap();
    assert_eq!(listed.len(), 1000);
    for (i, t) in listed.iter().enumerate() {
        assert_eq!(t["title"], format!("backlog {i}"), "request order");
        assert_eq!(t["status"], "queued");
        assert!(
            t.get("description").is_none(),
            "answered as a list shows a task"
        );
    }
    let ids = ids(&answer);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase in order");
    // The whole batch was one group: one sync for its 1,000 writes.
    let after = hub.state()["store"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(delta("writes"), 1000);
    assert_eq!(delta("syncs"), 1, "one group commit for the batch");
    // All listed, each whole.
    let all = hub.tasks(None);
    assert_eq!(all.len(), 1000);
    for t in &all {
        let n = t["metadata"]["n"].as_u64().unwrap() as usize;
        assert_eq!(t["title"], format!("backlog {n}"));
        assert_eq!(t["description"], description(n, 8 * 1024));
        assert_eq!(
            t["priority"],
            if n.is_multiple_of(2) { "low" } else { "high" }
        );
    }
    assert_eq!(hub.task(&ids[999])["history"][0]["event"], "created");
}

#[test]
fn a_bad_task_refuses_the_whole_batch_naming_its_index() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[("AGENTCOM_VIEWER_TOKEN", "viewer-token-0123456789")],
    );
    let good = |i: usize| json!({ "title": format!("t{i}") });
    let with = |bad_at: usize, bad: Value| -> Vec<Value> {
        (0..20)
            .map(|i| if i == bad_at { bad.clone() } else { good(i) })
            .collect()
    };
    for (at, bad, says) in [
        (17, json!({ "title": "" }), "tasks[17].title: "),
        (
            3,
            json!({ "title": "x", "repo": "app" }),
            "tasks[3].repo: \"app\" is not a repository",
        ),
        (
            0,
            json!({ "title": "x", "run_at": "2099-01-01T00:00:00Z" }),
            "tasks[0].run_at: ",
        ),
        (
            19,
            json!({ "title": "x", "kind": "verify" }),
            "tasks[19].kind: ",
        ),
        (
            5,
            json!({ "title": "x", "needs": ["rust"] }),
            "tasks[5]: unknown field `needs`",
        ),
        (6, json!({ "title": 7 }), "tasks[6]: invalid type"),
    ] {
        let (s, b) = batch(&hub, with(at, bad));
        assert_eq!(s, 422, "{b}");
        assert_eq!(b["error"]["code"], "invalid");
        assert!(message(&b).starts_with(says), "{says}: {b}");
    }
    // None, or more than 1,000: the limit is named.
    let (s, b) = batch(&hub, vec![]);
    assert_eq!(s, 422, "{b}");
    assert!(message(&b).contains("1 to 1000 tasks"), "{b}");
    let (s, b) = batch(&hub, (0..1001).map(good).collect());
    assert_eq!(s, 422, "{b}");
    assert!(message(&b).contains("at most 1000 tasks"), "{b}");
    // Not a batch at all.
    for (body, status) in [
        (r#"[{"title":"x"}]"#, 400),
        (r#"{"tasks":[{"title":"x"}"#, 400),
        (r#"{"tasks":[{"title":"x"}],"more":1}"#, 422),
        (r#"{"title":"x"}"#, 422),
    ] {
        let (s, b) = hub.raw("POST", "/api/tasks/batch", Some(&hub.token), Some(body));
        assert_eq!(s, status, "{body}: {b}");
    }
    // Only an admin creates.
    let (s, _) = hub.raw(
        "POST",
        "/api/tasks/batch",
        Some("viewer-token-0123456789"),
        Some(r#"{"tasks":[{"title":"x"}]}"#),
    );
    assert_eq!(s, 403);
    assert!(hub.tasks(None).is_empty(), "nothing was created");
    assert_eq!(hub.state()["store"]["writes"], 0);
    // A GET of the path is still a task lookup (no task has that id).
    let (s, _) = hub.call("GET", "/api/tasks/batch", None);
    assert_eq!(s, 404);
}

#[test]
fn idempotency_keys_within_a_batch_and_across() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let single = hub.submit(json!({ "title": "one", "idempotency_key": "k1" }));
    let (s, answer) = batch(
        &hub,
        vec![
            json!({ "title": "a", "idempotency_key": "ka" }),
            json!({ "title": "one", "idempotency_key": "k1" }),
            json!({ "title": "a", "idempotency_key": "ka" }),
            json!({ "title": "b" }),
        ],
    );
    assert_eq!(s, 201, "{answer}");
    assert_eq!(
        (answer["created"].as_u64(), answer["existing"].as_u64()),
        (Some(2), Some(2))
    );
    let got = ids(&answer);
    assert_eq!(
        got[1],
        single["id"].as_str().unwrap(),
        "a key seen before answers its task"
    );
    assert_eq!(got[2], got[0], "the same key twice in a batch is one task");
    assert_eq!(answer["tasks"][1]["title"], "one");
    assert_eq!(hub.tasks(None).len(), 3);
    // A key used before with another body: 409 naming the index, nothing created.
    let (s, b) = batch(
        &hub,
        vec![
            json!({ "title": "c" }),
            json!({ "title": "not one", "idempotency_key": "k1" }),
        ],
    );
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "conflict");
    assert!(
        message(&b).starts_with("tasks[1]: idempotency key \"k1\""),
        "{b}"
    );
    assert!(
        message(&b).contains("no task of the batch was created"),
        "{b}"
    );
    // The same key twice in one batch with different bodies.
    let (s, b) = batch(
        &hub,
        vec![
            json!({ "title": "d", "idempotency_key": "kd" }),
            json!({ "title": "e" }),
            json!({ "title": "not d", "idempotency_key": "kd" }),
        ],
    );
    assert_eq!(s, 409, "{b}");
    assert!(message(&b).starts_with("tasks[2]: "), "{b}");
    assert!(message(&b).contains("tasks[0]"), "{b}");
    assert_eq!(
        hub.tasks(None).len(),
        3,
        "neither refused batch created anything"
    );
    // kd was not taken by the refused batch.
    let (s, _) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "not d", "idempotency_key": "kd" })),
    );
    assert_eq!(s, 201);
    // The first batch again: nothing new, so 200, the same tasks.
    let (s, again) = batch(
        &hub,
        vec![
            json!({ "title": "a", "idempotency_key": "ka" }),
            json!({ "title": "one", "idempotency_key": "k1" }),
        ],
    );
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(ids(&again), [got[0].clone(), got[1].clone()]);
}

#[test]
fn a_batch_survives_kill_9_right_after_its_201() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &[]);
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    for cycle in 0..3 {
        // Some descriptions inline, some in files of their own.
        let tasks: Vec<Value> = (0..300)
            .map(|i| {
                json!({
                    "title": format!("c{cycle}-{i}"),
                    "description": description(i, if i.is_multiple_of(3) { 6000 } else { 200 }),
                })
            })
            .collect();
        let (s, answer) = batch(&hub, tasks);
        assert_eq!(s, 201, "{answer}");
        // At once: nothing between the 201 and the kill.
        hub.kill9();
        acknowledged.extend(answer["tasks"].as_array().unwrap().iter().map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["title"].as_str().unwrap().to_string(),
            )
        }));
        hub.restart();
        let present: std::collections::HashMap<String, Value> = hub
            .tasks(None)
            .into_iter()
            .map(|t| (t["id"].as_str().unwrap().to_string(), t))
            .collect();
        assert_eq!(
            present.len(),
            acknowledged.len(),
            "cycle {cycle}: no more, no fewer"
        );
        for (id, title) in &acknowledged {
            let t = present.get(id).unwrap_or_else(|| {
                panic!("cycle {cycle}: acknowledged task {id} lost after kill -9")
            });
            assert_eq!(&t["title"], title.as_str());
            assert_eq!(t["status"], "queued");
            let i: usize = title.rsplit('-').next().unwrap().parse().unwrap();
            assert_eq!(
                t["description"],
                description(i, if i.is_multiple_of(3) { 6000 } else { 200 })
            );
        }
        let last = &acknowledged.last().unwrap().0;
        assert_eq!(hub.task(last)["history"][0]["event"], "created");
    }
}

/// `agentcom-hub task import ARGS` against `hub`, with `stdin`: (exit
/// success, stdout, stderr).
fn import(hub: &Hub, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(bin("agentcom-hub"))
        .args(["task", "import"])
        .args(args)
        .args(["--hub", &hub.url, "--data-dir"])
        .arg(hub.dir.join("data"))
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_cli_imports_json_lines_in_batches_and_names_a_bad_line() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    // 1,205 tasks a line, with a blank line: two batches of the hub's most.
    let mut text = String::new();
    for i in 0..1205 {
        text.push_str(
            &json!({ "title": format!("line task {i}"), "idempotency_key": format!("imp-{i}"), "description": description(i, 300) })
                .to_string(),
        );
        text.push('\n');
        if i == 10 {
            text.push('\n');
        }
    }
    let file = root.path().join("backlog.jsonl");
    std::fs::write(&file, &text).unwrap();
    let path = file.to_str().unwrap();
    let (ok, out, err) = import(&hub, &[path], None);
    assert!(ok, "{err}");
    assert!(out.contains("1205 created, 0 existing"), "{out}");
    let all = hub.tasks(None);
    assert_eq!(all.len(), 1205);
    let mut titles: Vec<&str> = all.iter().map(|t| t["title"].as_str().unwrap()).collect();
    titles.sort();
    let mut want: Vec<String> = (0..1205).map(|i| format!("line task {i}")).collect();
    want.sort();
    assert_eq!(titles, want);
    // Again, from standard input, with --json: every task existing, in order.
    let (ok, out, err) = import(&hub, &["-", "--json"], Some(&text));
    assert!(ok, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (answer["created"].as_u64(), answer["existing"].as_u64()),
        (Some(0), Some(1205))
    );
    assert_eq!(answer["tasks"][1204]["title"], "line task 1204");
    // A JSON array, in batches of 2.
    let array = json!([{ "title": "arr 0" }, { "title": "arr 1" }, { "title": "arr 2", "priority": "urgent" }]);
    let afile = root.path().join("backlog.json");
    std::fs::write(&afile, array.to_string()).unwrap();
    let (ok, out, err) = import(&hub, &[afile.to_str().unwrap(), "--batch-size", "2"], None);
    assert!(ok, "{err}");
    assert!(out.contains("3 created, 0 existing"), "{out}");
    assert_eq!(hub.tasks(Some("queued")).len(), 1208);
    // A line that is not a task body: named, nothing sent.
    let bad = "{\"title\":\"fine\"}\n{\"title\":\"typo\",\"needs\":[\"rust\"]}\n";
    let (ok, _, err) = import(&hub, &["-"], Some(bad));
    assert!(!ok);
    assert!(
        err.contains("line 2: not a task body: unknown field `needs`"),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    // A task the hub refuses, in the second batch: its line named, the
    // first batch imported, nothing of the second.
    let refused = "{\"title\":\"r0\"}\n{\"title\":\"r1\"}\n\n{\"title\":\"r2\"}\n{\"title\":\"r3\",\"repo\":\"nowhere\"}\n";
    let (ok, _, err) = import(&hub, &["-", "--batch-size", "2"], Some(refused));
    assert!(!ok);
    assert!(
        err.contains("line 5: repo: \"nowhere\" is not a repository"),
        "{err}"
    );
    assert!(
        err.contains("the 2 task(s) before line 4 were imported"),
        "{err}"
    );
    let titles: Vec<String> = hub
        .tasks(None)
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_string())
        .filter(|t| t.starts_with('r'))
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(!titles.contains(&"r2".to_string()));
    // An empty file says so.
    let (ok, _, err) = import(&hub, &["-"], Some("\n"));
    assert!(!ok);
    assert!(err.contains("no tasks"), "{err}");
}
