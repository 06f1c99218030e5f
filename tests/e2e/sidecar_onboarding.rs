//! The first five minutes, sidecar side, against the real binaries:
//! `agentcom-sidecar selftest` against a real hub (a table, exit 0 or 1,
//! each failure naming its fix), refusals that name the fix and wait about
//! the longest reconnect delay, the daemon's self-test in its `hello` and
//! heartbeats, verification tasks answered by the self-test, and the
//! installation's `instance_id`.
//!
//! What the hub does with a self-test (degrading the agent) is the hub's
//! and tested there; here the fake hub reads what the sidecar says. Every
//! wait is on a message, a log line or a file, never a fixed pause.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agentcom_tests::fakehub::{assign_json, FakeConn, FakeHub};
use agentcom_tests::hub::Hub;
use agentcom_tests::procs::{bin, sh, Proc};
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// The table's line for `check`: (result, detail).
fn row(table: &str, check: &str) -> Option<(String, String)> {
    table.lines().find_map(|l| {
        let rest = l.strip_prefix(check)?.strip_prefix(' ')?.trim_start();
        let (result, detail) = rest.split_once(' ')?;
        Some((result.to_string(), detail.trim_start().to_string()))
    })
}

fn ok_row(table: &str, check: &str) -> String {
    match row(table, check) {
        Some((r, detail)) if r == "ok" => detail,
        other => panic!("{check} should pass: {other:?}\n{table}"),
    }
}

fn fail_row(table: &str, check: &str) -> String {
    match row(table, check) {
        Some((r, detail)) if r == "FAIL" => detail,
        other => panic!("{check} should fail: {other:?}\n{table}"),
    }
}

/// A bare remote with one commit on main, and a clone of it in `work`.
fn remote_and_clone(r: &Path) {
    sh(r, "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null && cd seed && git config user.email t@t && git config user.name t && echo 1 > f && git add f && git commit -qm one && git push -q origin main");
    sh(r, "git clone -q remote.git work");
}

#[test]
fn selftest_against_a_real_hub_passes_with_a_table_and_names_each_fix() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    let token = hub.add_agent("good", &[]);
    let good = Sidecar::prepare(r, &hub, "good", &token, &[], "exec", "exit 0", "", "");

    let (code, table, err) = good.selftest();
    assert_eq!(code, Some(0), "{table}{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CHECK") && lines[0].contains("RESULT") && lines[0].contains("DETAIL"),
        "{table}"
    );
    assert!(ok_row(&table, "hub").contains(&format!("127.0.0.1:{}", hub.port)));
    assert!(ok_row(&table, "token").contains("took agent good's token"));
    assert!(ok_row(&table, "runner").contains("runner.sh is executable"));
    assert!(ok_row(&table, "state_dir").contains("is writable"));
    assert!(ok_row(&table, "disk").contains("free"));
    assert_eq!(
        row(&table, "git_remote"),
        None,
        "no [git], no git check:\n{table}"
    );
    assert_eq!(lines.len(), 6, "{table}");
    assert!(good.state_dir().is_dir(), "the state dir was made");
    let mode = std::fs::metadata(good.state_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(
        std::fs::read_dir(good.state_dir()).unwrap().count(),
        0,
        "no probe file left"
    );
    // The hub saw no hello: the agent never came online.
    assert_eq!(hub.agent("good")["connected"], false);

    // A wrong token: FAIL token, naming the fix; exit 1.
    let wrong = Sidecar::prepare(
        r,
        &hub,
        "wrong",
        "not-a-token",
        &[],
        "exec",
        "exit 0",
        "",
        "",
    );
    let (code, table, _) = wrong.selftest();
    assert_eq!(code, Some(1), "{table}");
    ok_row(&table, "hub");
    let detail = fail_row(&table, "token");
    for said in [
        "401",
        "token or token_file in",
        "agentcom-hub agent add wrong",
        "agentcom-sidecar join",
    ] {
        assert!(detail.contains(said), "{said}: {detail}");
    }
    ok_row(&table, "runner");

    // A missing runner: FAIL runner, naming the file.
    std::fs::remove_file(good.dir.join("runner.sh")).unwrap();
    let (code, table, _) = good.selftest();
    assert_eq!(code, Some(1), "{table}");
    let detail = fail_row(&table, "runner");
    assert!(
        detail.contains(
            "runner.sh does not exist: install the runner there, or fix runner.command in"
        ),
        "{detail}"
    );
    ok_row(&table, "token");

    // No hub at all: FAIL hub, and the token is not tried.
    let port = agentcom_tests::procs::free_port();
    let text = std::fs::read_to_string(&wrong.config)
        .unwrap()
        .replace(&hub.ws_url(), &format!("ws://127.0.0.1:{port}/ws"));
    std::fs::write(&wrong.config, text).unwrap();
    let (code, table, _) = wrong.selftest();
    assert_eq!(code, Some(1));
    assert!(
        fail_row(&table, "hub").contains("is the hub running there"),
        "{table}"
    );
    assert!(fail_row(&table, "token").contains("not checked"), "{table}");
}

#[test]
fn a_hub_url_without_ws_is_refused_at_load_with_the_right_address() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let mut s = Sidecar::prepare(r, &fake, "agent1", "tok", &[], "exec", "exit 0", "", "");
    let text = std::fs::read_to_string(&s.config).unwrap();
    let bare = format!("ws://127.0.0.1:{}", fake.port);
    for url in [bare.clone(), format!("{bare}/")] {
        std::fs::write(&s.config, text.replace(&fake.ws_url(), &url)).unwrap();
        let (code, out, err) = s.selftest();
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(out.is_empty(), "no table: {out}");
        assert!(
            err.contains(&format!("write \"{bare}/ws\", not \"{url}\"")),
            "{url}: {err}"
        );
    }
    // The daemon refuses to start the same way.
    s.restart();
    let log = wait_until(T, "the daemon to exit", || (!s.running()).then(|| s.log()));
    assert!(log.contains(&format!("write \"{bare}/ws\"")), "{log}");
    assert!(
        fake.accept(Duration::from_millis(200)).is_none(),
        "it never connected"
    );
}

#[test]
fn selftest_checks_the_git_remote() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    remote_and_clone(r);
    sh(r, "mkdir plain");
    let hub = Hub::start(r, &[]);
    let token = hub.add_agent("gitty", &[]);
    let git = format!(
        "[git]\nrepo_dir = {:?}\n",
        r.join("work").display().to_string()
    );
    let s = Sidecar::prepare(r, &hub, "gitty", &token, &[], "exec", "exit 0", "", &git);
    let (code, table, _) = s.selftest();
    assert_eq!(code, Some(0), "{table}");
    assert!(
        ok_row(&table, "git_remote").contains("remote origin of"),
        "{table}"
    );
    assert!(ok_row(&table, "disk").contains("repo_dir"), "{table}");

    // The remote is gone: FAIL git_remote with git's words and the fix.
    std::fs::rename(r.join("remote.git"), r.join("remote.gone")).unwrap();
    let (code, table, _) = s.selftest();
    assert_eq!(code, Some(1), "{table}");
    let detail = fail_row(&table, "git_remote");
    assert!(
        detail.starts_with("git ls-remote origin in") && detail.contains("remote.git"),
        "{detail}"
    );
    assert!(detail.contains("remote -v"), "{detail}");

    // Not a clone at all.
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &r.join("work").display().to_string(),
        &r.join("plain").display().to_string(),
    );
    std::fs::write(&s.config, text).unwrap();
    let (_, table, _) = s.selftest();
    assert!(
        fail_row(&table, "git_remote").contains("is not a git work tree"),
        "{table}"
    );
}

/// Every "reconnecting after a pause" line: (delay_ms, refused).
fn pauses(log: &str) -> Vec<(u64, bool)> {
    log.lines()
        .filter(|l| l.contains("reconnecting after a pause"))
        .filter_map(|l| {
            let field = |name: &str| {
                l.split(&format!("{name}="))
                    .nth(1)?
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            };
            Some((
                field("delay_ms")?.parse().ok()?,
                field("refused")? == "true",
            ))
        })
        .collect()
}

/// The harness's reconnect settings: initial_ms = 100, max_s = 1. A
/// refused connection waits 750 to 1000 ms, an ordinary first failure at
/// most 100.
fn about_the_cap(delay_ms: u64) -> bool {
    (750..=1000).contains(&delay_ms)
}

#[test]
fn a_bad_token_is_an_error_naming_the_fix_and_reconnects_wait_about_the_cap() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    hub.add_agent("badtok", &[]);
    let s = Sidecar::start_with_token(r, &hub, "badtok", "wrong", &[], "exec", "exit 0", "");
    let seen = wait_until(T, "two pauses after refusals", || {
        let p = pauses(&s.log());
        (p.len() >= 2).then_some(p)
    });
    let log = s.log();
    assert!(
        seen[..2]
            .iter()
            .all(|(ms, refused)| *refused && about_the_cap(*ms)),
        "{seen:?}\n{log}"
    );
    let error = log
        .lines()
        .find(|l| l.contains("cannot connect to the hub"))
        .expect("the refusal logged");
    assert!(error.contains("ERROR"), "{error}");
    assert!(
        error.contains("401")
            && error.contains("token or token_file in")
            && error.contains("agentcom-hub agent add badtok"),
        "{error}"
    );
    assert!(!log.contains("Some("), "no debug structures:\n{log}");
}

#[test]
fn no_websocket_at_the_address_and_agent_in_use_are_permanent_refusals() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let s = Sidecar::start_with_token(r, &fake, "agent1", "tok", &[], "exec", "exit 0", "");
    let url = fake.ws_url();

    // 404: no WebSocket there.
    assert!(fake.refuse("404 Not Found", &[], T));
    let line = wait_until(T, "the 404 logged", || {
        s.log()
            .lines()
            .find(|l| l.contains("(it answered 404 not found)"))
            .map(str::to_string)
    });
    assert!(
        line.contains("ERROR") && line.contains(&format!("no WebSocket at {url}")),
        "{line}"
    );
    // A redirect (the hub's answer on `/` to come).
    assert!(fake.refuse("302 Found", &["Location: /dashboard"], T));
    wait_until(T, "the redirect logged", || {
        s.log().contains("a redirect, 302").then_some(())
    });

    // Another sidecar holds the agent: the hub says so and closes.
    let mut conn = fake.accept(T).expect("the sidecar to connect");
    conn.recv_type("hello", T).expect("hello");
    conn.send(&json!({"type": "error", "code": "agent_in_use",
        "message": "agent agent1 is connected from another sidecar (instance 1234)"}))
        .unwrap();
    conn.close();
    let line = wait_until(T, "agent_in_use logged", || {
        s.log()
            .lines()
            .find(|l| l.contains("two sidecars must not share one agent"))
            .map(str::to_string)
    });
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("instance 1234") && line.contains("agentcom-sidecar join --id"),
        "{line}"
    );
    let seen = wait_until(T, "three pauses", || {
        let p = pauses(&s.log());
        (p.len() >= 3).then_some(p)
    });
    assert!(
        seen[..3]
            .iter()
            .all(|(ms, refused)| *refused && about_the_cap(*ms)),
        "{seen:?}\n{}",
        s.log()
    );
    // And then an ordinary connection works.
    let (_conn, hello) = fake.accept_welcomed(T);
    assert_eq!(hello["agent_id"], "agent1");
}

/// The next heartbeat (within `T`) for which `pick` says yes.
fn heartbeat_where(conn: &mut FakeConn, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    wait_until(T, what, || {
        conn.recv_type("heartbeat", Duration::from_secs(3))
            .filter(|hb| pick(hb))
    })
}

#[test]
fn a_missing_runner_is_an_error_at_start_and_the_hub_is_told_then_told_again_when_fixed() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let mut s = Sidecar::prepare(
        r,
        &fake,
        "agent1",
        "tok",
        &[],
        "exec",
        "exit 0",
        "selftest_interval_s = 1\n",
        "",
    );
    let runner = s.dir.join("runner.sh");
    std::fs::rename(&runner, s.dir.join("runner.away")).unwrap();
    s.restart();
    let (mut conn, hello) = fake.accept_welcomed(T);
    // In the hello if the first self-test ended before it, else in a
    // heartbeat at once.
    let status = if hello["selftest"].is_object() {
        hello["selftest"].clone()
    } else {
        heartbeat_where(&mut conn, "the self-test in a heartbeat", |hb| {
            hb["selftest"].is_object()
        })["selftest"]
            .clone()
    };
    assert_eq!(status["ok"], false, "{status}");
    let failures = status["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{status}");
    assert_eq!(failures[0]["check"], "runner");
    assert!(
        failures[0]["detail"]
            .as_str()
            .unwrap()
            .contains("runner.sh does not exist"),
        "{status}"
    );
    assert!(status["at"].is_string(), "{status}");
    let line = wait_until(T, "the failure logged", || {
        s.log()
            .lines()
            .find(|l| l.contains("self-test failed"))
            .map(str::to_string)
    });
    assert!(
        line.contains("ERROR") && line.contains("check=runner"),
        "{line}"
    );
    assert!(line.contains("fix runner.command in"), "{line}");

    // Fixed: the next periodic self-test passes and a heartbeat says so at
    // once (the heartbeat interval is 30 s).
    std::fs::rename(s.dir.join("runner.away"), &runner).unwrap();
    let hb = heartbeat_where(&mut conn, "the passing self-test", |hb| {
        hb["selftest"]["ok"] == true
    });
    assert!(hb["selftest"].get("failures").is_none(), "{hb}");
    assert!(s.log().contains("self-test passed"));
}

#[test]
fn a_verification_task_is_answered_by_the_selftest_and_no_runner_runs() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let ran = r.join("ran");
    let runner = format!("touch {}", ran.display());
    let s = Sidecar::start_with_token(r, &fake, "agent1", "tok", &[], "exec", &runner, "");
    let (mut conn, _) = fake.accept_welcomed(T);

    let mut verify = assign_json("v1", 1);
    verify["task"]["kind"] = json!("verify");
    verify["task"]["for_agent"] = json!("agent1");
    conn.send(&verify).unwrap();
    conn.recv_type("accept", T).expect("accept");
    let done = conn
        .recv_type("complete", T)
        .unwrap_or_else(|| panic!("{:?}", conn.received));
    assert_eq!(done["task_id"], "v1");
    let result = &done["result"];
    assert_eq!(result["summary"], "self-test passed: 3 checks", "{result}");
    let checks: Vec<(&str, bool)> = result["selftest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap(), c["ok"] == true))
        .collect();
    assert_eq!(
        checks,
        [("runner", true), ("state_dir", true), ("disk", true)]
    );
    assert!(result["selftest"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("runner.sh"));
    assert!(result.get("branch").is_none(), "{result}");
    conn.ack(&done);
    assert!(!ran.exists(), "no runner ran");
    assert_eq!(
        std::fs::read_dir(s.state_dir().join("tasks"))
            .unwrap()
            .count(),
        0,
        "no task folder"
    );

    // The runner goes missing: the verification fails, the machine's
    // failure, retryable, naming the check and its fix.
    std::fs::remove_file(s.dir.join("runner.sh")).unwrap();
    let mut verify = assign_json("v2", 1);
    verify["task"]["kind"] = json!("verify");
    conn.send(&verify).unwrap();
    conn.recv_type("accept", T).expect("accept");
    let fail = conn
        .recv_type("fail", T)
        .unwrap_or_else(|| panic!("{:?}", conn.received));
    assert_eq!(fail["class"], "environment", "{fail}");
    assert_eq!(fail["retryable"], true, "{fail}");
    let error = fail["error"].as_str().unwrap();
    assert!(
        error.starts_with("self-test failed: runner: runner.command[0]")
            && error.contains("does not exist"),
        "{error}"
    );
    // The heartbeat after the report carries the new findings.
    let hb = heartbeat_where(&mut conn, "the failing self-test", |hb| {
        hb["selftest"]["ok"] == false
    });
    assert_eq!(hb["selftest"]["failures"][0]["check"], "runner");
}

#[test]
fn the_instance_id_is_kept_across_restarts_and_another_state_dir_is_another_installation() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let fake = FakeHub::start();
    let mut s = Sidecar::start_with_token(r, &fake, "agent1", "tok", &[], "exec", "exit 0", "");
    let (conn, hello) = fake.accept_welcomed(T);
    let id = hello["instance_id"]
        .as_str()
        .expect("an instance_id")
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{id}"
    );
    let file = s.state_dir().join("instance_id");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), id);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Restarted (even killed): the same installation, the same id.
    s.kill9();
    drop(conn);
    s.restart();
    let (conn, hello) = fake.accept_welcomed(T);
    assert_eq!(hello["instance_id"], id.as_str());
    assert_eq!(s.terminate(), Some(0));
    drop(conn);

    // A copy of the config with another state_dir: another installation.
    let copy = r.join("copy.toml");
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &s.state_dir().display().to_string(),
        &r.join("copy-state").display().to_string(),
    );
    std::fs::write(&copy, text).unwrap();
    let mut cmd = Command::new(bin("agentcom-sidecar"));
    cmd.arg("run")
        .arg("--config")
        .arg(&copy)
        .env("RUST_LOG", "info");
    let _other = Proc::spawn(cmd, &r.join("copy.log"));
    let (_conn, hello) = fake.accept_welcomed(T);
    assert_eq!(hello["agent_id"], "agent1");
    let other = hello["instance_id"].as_str().unwrap();
    assert_eq!(other.len(), 32);
    assert_ne!(other, id, "another state dir, another id");
}
