//! Several hubs on one database, as the clients see them: a sidecar given
//! `hub_urls`, `agentcom-sidecar join` and the admin CLI given several
//! `--hub` find the hub that leads. No hub here stands by yet: a dead address is a port nothing
//! listens on, and a standby is a tiny HTTP server in the test that
//! answers every request 503 `not_leader`, naming the real hub as the
//! leader (or none).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::{bin, free_port};
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// A fake standby hub: every request is answered 503 with
/// `{"error":{"code":"not_leader","message":"standby","leader":…}}`.
struct Standby {
    port: u16,
    /// The request lines it was sent, with their `Upgrade` header if any.
    requests: Arc<Mutex<Vec<String>>>,
}

impl Standby {
    /// Listening on a free port; `leader`: the base URL it names, or None
    /// (null: no hub leads).
    fn start(leader: Option<String>) -> Standby {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let body = json!({"error": {"code": "not_leader", "message": "standby", "leader": leader}})
            .to_string();
        // Lives as long as the test process; every connection is answered
        // on a thread of its own, so a client that says nothing blocks no
        // other.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, body) = (seen.clone(), body.clone());
                std::thread::spawn(move || answer(stream, &body, &seen));
            }
        });
        Standby { port, requests }
    }

    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Read one request (its head, and its body by `Content-Length`), note
/// its request line in `seen` (with " upgrade" when it asked for a
/// WebSocket), then answer it 503 with `body` and close.
fn answer(stream: TcpStream, body: &str, seen: &Mutex<Vec<String>>) -> Option<()> {
    stream.set_read_timeout(Some(T)).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut request = line.trim_end().to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim_end().is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("upgrade:") && lower.contains("websocket") {
            request.push_str(" upgrade");
        }
    }
    let mut rest = vec![0; length];
    reader.read_exact(&mut rest).ok()?;
    seen.lock().unwrap().push(request);
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    stream.flush().ok()
}

/// A WebSocket address nothing listens on.
fn dead_ws() -> String {
    format!("ws://127.0.0.1:{}/ws", free_port())
}

/// A sidecar for agent `id` on `hub` that runs `exit 0`, with
/// `hub_urls = urls` in its config instead of `hub_url`; not started.
fn sidecar(root: &std::path::Path, hub: &Hub, id: &str, urls: &[String]) -> Sidecar {
    let token = hub.add_agent(id, &[]);
    let s = Sidecar::prepare(root, hub, id, &token, &[], "exec", "exit 0", "", "");
    s.use_hub_urls(urls);
    s
}

/// The sidecar's log lines up to its first connection, which must be to
/// `url`.
fn lines_until_connected(s: &Sidecar, url: &str) -> Vec<String> {
    let log = wait_until(T, "the sidecar to connect", || {
        let log = s.log();
        log.contains("connected to the hub").then_some(log)
    });
    let lines: Vec<String> = log
        .lines()
        .take_while(|l| !l.contains("connected to the hub"))
        .map(str::to_string)
        .collect();
    let connected = log
        .lines()
        .find(|l| l.contains("connected to the hub"))
        .unwrap();
    assert!(connected.contains(&format!("hub={url}")), "{log}");
    lines
}

fn completes_a_task(hub: &Hub, id: &str) {
    hub.wait_agent(id, "idle", T);
    let t = hub.submit(json!({ "title": "after the hub was found" }));
    hub.wait_status(t["id"].as_str().unwrap(), "completed", T);
}

#[test]
fn a_sidecar_passes_a_dead_hub_at_once_and_works_with_the_next() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let dead = dead_ws();
    let mut s = sidecar(
        root.path(),
        &hub,
        "pathfinder",
        &[dead.clone(), hub.ws_url()],
    );

    // The self-test: one hub that leads is enough; the dead one is named.
    let (code, table, err) = s.selftest();
    assert_eq!(code, Some(0), "{table}{err}");
    let dead_port = dead.trim_start_matches("ws://").trim_end_matches("/ws");
    let hub_row = table.lines().find(|l| l.starts_with("hub ")).unwrap();
    assert!(
        hub_row.contains(&format!("cannot reach {dead_port}")) && hub_row.contains(" ok "),
        "{table}"
    );
    let token_row = table.lines().find(|l| l.starts_with("token ")).unwrap();
    assert!(
        token_row.contains(&format!(
            "the hub at {} took agent pathfinder's token",
            hub.ws_url()
        )) && token_row.contains(&format!("{dead} not checked")),
        "{table}"
    );

    s.restart();
    let before = lines_until_connected(&s, &hub.ws_url());
    let text = before.join("\n");
    assert!(
        before
            .iter()
            .any(|l| l.contains("cannot connect to the hub") && l.contains(&dead)),
        "{text}"
    );
    assert!(
        before
            .iter()
            .any(|l| l.contains("trying the next hub") && l.contains(&hub.ws_url())),
        "{text}"
    );
    // At once: no reconnect pause before the second hub was tried.
    assert!(!text.contains("reconnecting after a pause"), "{text}");
    completes_a_task(&hub, "pathfinder");
}

#[test]
fn a_sidecar_goes_straight_to_the_leader_a_standby_names() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let standby = Standby::start(Some(format!("http://127.0.0.1:{}", hub.port)));
    // A dead hub between the standby and the leader is skipped: the
    // standby named the leader.
    let dead = dead_ws();
    let mut s = sidecar(
        root.path(),
        &hub,
        "follower",
        &[standby.ws(), dead.clone(), hub.ws_url()],
    );
    s.restart();
    let before = lines_until_connected(&s, &hub.ws_url());
    let text = before.join("\n");
    assert!(
        before
            .iter()
            .any(|l| l.contains("cannot connect to the hub")
                && l.contains(&standby.ws())
                && l.contains("is a standby (503 not_leader")
                && l.contains(&format!("the leader is \"http://127.0.0.1:{}\"", hub.port))),
        "{text}"
    );
    assert!(
        !before
            .iter()
            .any(|l| l.contains(&dead) && !l.contains("sidecar started")),
        "the dead hub was not tried: {text}"
    );
    assert!(!text.contains("reconnecting after a pause"), "{text}");
    // The standby saw the upgrade, then the plain request for its body.
    let seen = standby.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0] == "GET /ws HTTP/1.1 upgrade" && seen[1] == "GET /ws HTTP/1.1",
        "{seen:?}"
    );
    completes_a_task(&hub, "follower");
}

/// `agentcom-hub ARGS` with the hub's admin token from its data dir:
/// (success, stdout, stderr).
fn cli(hub: &Hub, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("agentcom-hub"))
        .args(args)
        .arg("--data-dir")
        .arg(hub.dir.join("data"))
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .env_remove("AGENTCOM_HUB_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_finds_the_leader_past_standbys_and_names_every_hub_when_none_leads() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let real = format!("http://127.0.0.1:{}", hub.port);
    let pointing = Standby::start(Some(real.clone()));
    let lost = Standby::start(None);
    let dead = format!("http://127.0.0.1:{}", free_port());

    // A standby that names no leader, then the real hub (a comma list).
    let (ok, out, err) = cli(
        &hub,
        &[
            "task",
            "submit",
            "-q",
            "--title",
            "first",
            "--hub",
            &format!("{},{real}", lost.http()),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(hub.task(out.trim())["title"], "first");

    // A standby naming the leader, which was not given, then a dead hub
    // (--hub twice): the leader answers.
    let (ok, out, err) = cli(
        &hub,
        &[
            "task",
            "submit",
            "-q",
            "--title",
            "second",
            "--hub",
            &pointing.http(),
            "--hub",
            &dead,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(hub.task(out.trim())["title"], "second");
    assert_eq!(pointing.requests(), ["POST /api/tasks HTTP/1.1"]);

    // None leads: each hub named with what it said.
    let dead2 = format!("http://127.0.0.1:{}", free_port());
    let (ok, _, err) = cli(
        &hub,
        &[
            "task",
            "submit",
            "--title",
            "third",
            "--hub",
            &format!("{dead},{},{dead2}", lost.http()),
        ],
    );
    assert!(!ok);
    assert!(
        err.starts_with("error: no hub answered as the leader: "),
        "{err}"
    );
    for said in [
        format!("{dead}: cannot reach it: "),
        format!(
            "{}: not the leader (503 not_leader: standby; no hub leads right now, it says)",
            lost.http()
        ),
        format!("{dead2}: cannot reach it: "),
    ] {
        assert!(err.contains(&said), "{said}: {err}");
    }
    assert_eq!(
        hub.tasks(None).len(),
        2,
        "nothing was created by the failed submit"
    );
}

#[test]
fn join_enrolls_with_the_leader_and_writes_every_hub() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    let real = format!("http://127.0.0.1:{}", hub.port);
    let standby = Standby::start(Some(real.clone()));
    let token = std::fs::read_to_string(hub.dir.join("data").join("enroll.token")).unwrap();
    let runner = agentcom_tests::sidecar::script(&r.join("runner.sh"), "exit 0");
    let out = Command::new(bin("agentcom-sidecar"))
        .current_dir(r)
        .env("HOME", r)
        .env("XDG_CONFIG_HOME", r.join("xdg-config"))
        .env("XDG_STATE_HOME", r.join("xdg-state"))
        .env_remove("AGENTCOM_SIDECAR_CONFIG")
        .env_remove("AGENTCOM_HUB_URL")
        .args(["join", "--hub", &format!("{},{real}", standby.http())])
        .args(["--enroll-token", token.trim(), "--id", "joiner"])
        .args(["--runner", &runner.display().to_string()])
        .args([
            "--install",
            "none",
            "--config",
            "joiner.toml",
            "--state-dir",
            "state",
        ])
        .output()
        .unwrap();
    let (said, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{said}{err}");
    assert!(
        said.contains(&format!("enrolled agent joiner on {real} ")),
        "{said}"
    );
    assert!(
        said.contains("ready: agent joiner is connected and verified"),
        "{said}"
    );
    let config = std::fs::read_to_string(r.join("joiner.toml")).unwrap();
    assert!(
        config.contains(&format!(
            "\nhub_urls = [{:?}, {:?}]\n",
            standby.ws(),
            hub.ws_url()
        )),
        "{config}"
    );
    // The enrollment went to the standby first, which named the leader.
    assert!(
        standby
            .requests()
            .contains(&"POST /api/agents/enroll HTTP/1.1".to_string()),
        "{:?}",
        standby.requests()
    );
    assert_eq!(hub.agent("joiner")["id"], "joiner");
}
