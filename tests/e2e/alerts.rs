//! Alerts reach a real webhook receiver (an HTTP server this test runs):
//! `task_dead` and `agent_offline` each exactly once per occurrence, and
//! an alert raised while the receiver was down, or answering 500, arrives
//! once it answers 2xx. `task_stalled`, `change_escalated`, `main_red`
//! and `main_green` reach it too, once each, in the order raised; an
//! `https://` webhook is reached over TLS.

use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::free_port;
use agentcom_tests::project::{submit_repo_task, wait_change_status, wait_repo, Project};
use agentcom_tests::raw::RawSidecar;
use agentcom_tests::wait_until;
use agentcom_tests::webhook::Receiver;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn config(url: &str, offline_after_s: u64) -> String {
    format!(
        "[alerts]\noffline_after_s = {offline_after_s}\n\n[[alerts.webhooks]]\nurl = \"{url}\"\n"
    )
}

fn fast(heartbeat_timeout_s: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S",
            heartbeat_timeout_s,
        ),
        ("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "1"),
        ("AGENTCOM_RETRY__BACKOFF_S", "0"),
    ]
}

/// A task with no retries that `ws` (agent `agent`) fails as not
/// retryable: it goes dead. Its id.
fn kill_a_task(hub: &Hub, ws: &mut RawSidecar, title: &str) -> String {
    let t = hub.submit(json!({ "title": title, "max_retries": 0 }));
    let id = t["id"].as_str().unwrap().to_string();
    let assign = ws.recv_type("assign", T).expect("an assignment");
    assert_eq!(assign["task_id"], id.as_str());
    let g = assign["generation"].clone();
    ws.send(json!({ "type": "accept", "task_id": id, "generation": g }));
    ws.send(json!({ "type": "fail", "task_id": id, "generation": g,
        "error": format!("{title}: compile error in main.rs"), "retryable": false }));
    ws.recv_type("ack", T).expect("the failure is acknowledged");
    hub.wait_status(&id, "dead", T);
    id
}

fn alerts_of(hub: &Hub, kind: &str, subject: &str) -> usize {
    hub.ok("GET", "/api/alerts", None)["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["alert"] == kind && a["subject"] == subject)
        .count()
}

#[test]
fn task_dead_and_agent_offline_reach_the_webhook_once_each() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let hub = Hub::start_with_config(root.path(), &config(&receiver.url(), 1), &fast("3"));
    // Known but never connected since the hub started: no alert for it.
    hub.add_agent("never", &[]);
    let token = hub.add_agent("a", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a");

    let dead = kill_a_task(&hub, &mut ws, "first");
    let got = wait_until(T, "task_dead at the webhook", || {
        receiver.alerts("task_dead", Some(&dead)).into_iter().next()
    });
    let message = got["message"].as_str().unwrap();
    assert!(
        message.contains("first: compile error in main.rs"),
        "the last error is in the message: {got}"
    );
    assert!(got["at"].is_string(), "{got}");
    assert_eq!(
        got.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["alert", "at", "message", "subject"]
    );

    // The agent goes away: offline for longer than offline_after_s (1 s).
    drop(ws);
    hub.wait_agent("a", "offline", T);
    let offline = wait_until(T, "agent_offline at the webhook", || {
        receiver
            .alerts("agent_offline", Some("a"))
            .into_iter()
            .next()
    });
    assert!(
        offline["message"].as_str().unwrap().contains("offline"),
        "{offline}"
    );

    // A later alert, delivered after anything raised before it (one
    // webhook's alerts arrive in order): by then a duplicate would be in.
    let token_b = hub.add_agent("b", &[]);
    let mut wb = RawSidecar::connect(&hub.ws_url(), &token_b).unwrap();
    wb.hello("b");
    let fence = kill_a_task(&hub, &mut wb, "fence");
    wait_until(T, "the fence at the webhook", || {
        (!receiver.alerts("task_dead", Some(&fence)).is_empty()).then_some(())
    });
    assert_eq!(receiver.alerts("task_dead", Some(&dead)).len(), 1);
    assert_eq!(receiver.alerts("agent_offline", Some("a")).len(), 1);
    assert!(
        receiver.alerts("agent_offline", Some("never")).is_empty(),
        "an agent never connected since the start raises nothing: {:?}",
        receiver.bodies()
    );
    // (b sends no heartbeats: its own agent_offline may follow; not counted.)
    let order: Vec<Value> = receiver
        .bodies()
        .iter()
        .filter(|b| b["subject"] != "b")
        .map(|b| json!([b["alert"], b["subject"]]))
        .collect();
    assert_eq!(
        order,
        [
            json!(["task_dead", dead]),
            json!(["agent_offline", "a"]),
            json!(["task_dead", fence])
        ],
        "in the order raised"
    );
    assert_eq!(alerts_of(&hub, "agent_offline", "a"), 1);
    assert_eq!(
        hub.metric("agentcom_alerts_total{alert=\"task_dead\"}"),
        2.0
    );
    assert_eq!(
        hub.metric("agentcom_alerts_total{alert=\"agent_offline\"}"),
        1.0
    );
    assert_eq!(
        hub.metric("agentcom_webhook_deliveries_total{result=\"delivered\"}"),
        3.0
    );
    // The admin CLI lists them too, newest first.
    let out = hub.cli(&["alerts"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("task_dead") && lines[0].contains(&fence),
        "{out}"
    );
    assert!(
        out.contains("agent_offline") && out.contains(&dead),
        "{out}"
    );
}

#[test]
fn an_alert_raised_while_the_receiver_is_down_arrives_once_it_is_up() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there yet
    let url = format!("http://127.0.0.1:{port}/hook");
    let hub = Hub::start_with_config(root.path(), &config(&url, 120), &fast("30"));
    let token = hub.add_agent("a", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a");
    let dead = kill_a_task(&hub, &mut ws, "while down");
    wait_until(T, "a failed try to be retried", || {
        (hub.metric("agentcom_webhook_deliveries_total{result=\"retried\"}") >= 1.0).then_some(())
    });
    assert_eq!(alerts_of(&hub, "task_dead", &dead), 1, "raised meanwhile");

    let receiver = Receiver::start_on(port, 0);
    wait_until(T, "the alert once the receiver is up", || {
        (!receiver.alerts("task_dead", Some(&dead)).is_empty()).then_some(())
    });
    let fence = kill_a_task(&hub, &mut ws, "fence");
    wait_until(T, "the fence", || {
        (!receiver.alerts("task_dead", Some(&fence)).is_empty()).then_some(())
    });
    assert_eq!(receiver.alerts("task_dead", Some(&dead)).len(), 1);
    assert_eq!(receiver.bodies().len(), 2, "{:?}", receiver.bodies());
    let log = hub.log();
    assert!(log.contains("alert not delivered; retrying"), "{log}");
}

#[test]
fn a_receiver_answering_500_gets_the_alert_again_until_it_takes_it() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start_on(0, 2);
    let hub = Hub::start_with_config(root.path(), &config(&receiver.url(), 120), &fast("30"));
    let token = hub.add_agent("a", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a");
    let dead = kill_a_task(&hub, &mut ws, "refused twice");
    wait_until(T, "the alert after two 500s", || {
        (!receiver.alerts("task_dead", Some(&dead)).is_empty()).then_some(())
    });
    assert_eq!(receiver.requests(), 3, "two refused, one taken");
    assert_eq!(receiver.bodies().len(), 1);
    assert_eq!(
        hub.metric("agentcom_webhook_deliveries_total{result=\"retried\"}"),
        2.0
    );
    assert_eq!(
        hub.metric("agentcom_webhook_deliveries_total{result=\"delivered\"}"),
        1.0
    );
    assert!(hub.log().contains("answered 500"), "{}", hub.log());
}

#[test]
fn task_stalled_reaches_the_webhook_once_per_stall() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let mut env = fast("30");
    env.extend([
        ("AGENTCOM_TIMEOUTS__STALL_S", "1"),
        ("AGENTCOM_TIMEOUTS__STALL_KILL_S", "600"),
    ]);
    let hub = Hub::start_with_config(root.path(), &config(&receiver.url(), 120), &env);
    let token = hub.add_agent("a", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a");
    let t = hub.submit(json!({ "title": "hangs" }));
    let id = t["id"].as_str().unwrap().to_string();
    let assign = ws.recv_type("assign", T).expect("an assignment");
    let g = assign["generation"].clone();
    ws.send(json!({ "type": "accept", "task_id": id, "generation": g }));
    hub.wait_status(&id, "working", T);
    // Alive, heart-beating, and its activity never changes.
    let activity = json!({ "runner_alive": true, "output_bytes": 10 });
    ws.send(
        json!({ "type": "heartbeat", "state": "working", "task_id": id,
        "generation": g, "activity": activity }),
    );
    hub.wait_agent("a", "stalled", T);
    let got = wait_until(T, "task_stalled at the webhook", || {
        receiver
            .alerts("task_stalled", Some(&id))
            .into_iter()
            .next()
    });
    assert!(
        got["message"].as_str().unwrap().contains("no activity"),
        "{got}"
    );
    // Still stalled, still heart-beating: no second alert for the same stall.
    ws.send(
        json!({ "type": "heartbeat", "state": "working", "task_id": id,
        "generation": g, "activity": activity }),
    );
    let token_b = hub.add_agent("b", &[]);
    let mut wb = RawSidecar::connect(&hub.ws_url(), &token_b).unwrap();
    wb.hello("b");
    let fence = kill_a_task(&hub, &mut wb, "fence");
    wait_until(T, "the fence", || {
        (!receiver.alerts("task_dead", Some(&fence)).is_empty()).then_some(())
    });
    assert_eq!(receiver.alerts("task_stalled", Some(&id)).len(), 1);
}

#[test]
fn pipeline_alerts_reach_the_webhook_once_each_in_order() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let p = Project::new(root.path());
    let mut env: Vec<(String, String)> = p.hub_envs();
    env.push(("AGENTCOM_RETRY__BACKOFF_S".into(), "0".into()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let toml = format!(
        "{}\n{}",
        p.hub_toml(1, "auto_merge = true\ndeny_paths = [\"held/**\"]"),
        config(&receiver.url(), 120)
    );
    let hub = Hub::start_with_config(p.root(), &toml, &refs);
    let _ann = p.agent(&hub, "ann", &[]);
    let first = p.main();
    wait_repo(&hub, "app", T, "green", |r| {
        r["health"] == "green" && r["main_sha"] == first
    });

    // A change waiting for a person.
    p.step("held change", "mkdir -p held && echo held > held/file");
    let held_task = submit_repo_task(&hub, "held change");
    let held = wait_change_status(&hub, &held_task, "escalated", T);
    let held_id = held["id"].as_str().unwrap().to_string();
    wait_until(T, "change_escalated at the webhook", || {
        (!receiver
            .alerts("change_escalated", Some(&held_id))
            .is_empty())
        .then_some(())
    });

    // Main broken by a push that bypassed the hub, then fixed.
    let broken = p.push_to_main("break main", &Project::set_line(7, "line 7 BROKEN"));
    let red = wait_until(T, "main_red at the webhook", || {
        receiver.alerts("main_red", Some("app")).into_iter().next()
    });
    assert!(red["message"].as_str().unwrap().contains(&broken), "{red}");
    p.push_to_main("fix main", "sed -i 's/ BROKEN//' lines.txt");
    wait_until(T, "main_green at the webhook", || {
        (!receiver.alerts("main_green", Some("app")).is_empty()).then_some(())
    });
    let order: Vec<Value> = receiver
        .bodies()
        .iter()
        .filter(|b| b["alert"] != "agent_offline")
        .map(|b| json!([b["alert"], b["subject"]]))
        .collect();
    assert_eq!(
        order,
        [
            json!(["change_escalated", held_id]),
            json!(["main_red", "app"]),
            json!(["main_green", "app"])
        ],
        "once each, in the order raised"
    );
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it
/// (`server.crt`, `server.key`) in `dir`.
fn pki(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "AgentCom test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    [
        write("ca.pem", ca.pem()),
        write("server.crt", cert.pem()),
        write("server.key", key.serialize_pem()),
    ]
}

/// The receiving end is another hub serving HTTPS (its API answers the
/// tokenless POST 401): the alerting hub, trusting the test CA as a system
/// root (`SSL_CERT_FILE`), completes the TLS handshake and gets that answer.
#[test]
fn an_https_webhook_is_reached_over_tls() {
    let root = tempfile::tempdir().unwrap();
    let [ca, cert, key] = pki(&root.path().join("pki"));
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let receiving = Hub::start_with(
        &root.path().join("receiving"),
        &[
            ("AGENTCOM_TLS__CERT_FILE", &cert),
            ("AGENTCOM_TLS__KEY_FILE", &key),
        ],
        Some(&ca),
    );
    let url = format!("https://127.0.0.1:{}/api/tasks", receiving.port);
    let ca = ca.display().to_string();
    let mut env = fast("30");
    env.push(("SSL_CERT_FILE", &ca));
    let hub = Hub::start_with_config(&root.path().join("alerting"), &config(&url, 120), &env);
    let token = hub.add_agent("a", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a");
    kill_a_task(&hub, &mut ws, "over tls");
    wait_until(T, "the receiving hub's answer over TLS", || {
        hub.log().contains("answered 401").then_some(())
    });
}
