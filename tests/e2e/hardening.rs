//! The hub under agent-sized and hostile input, against the real binary:
//! each test reproduces a finding of the hardening review and shows it
//! fixed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::{bin, free_port, Proc};
use agentcom_tests::raw::{quick_agent, RawSidecar};
use agentcom_tests::sse::SseClient;
use agentcom_tests::wait_until;
use agentcom_tests::wire::{self, Held, Outcome, Reply};
use serde_json::{json, Value};
use tungstenite::Message;

const T: Duration = Duration::from_secs(30);
/// For answers that come at once (a frame, a close).
const SOON: Duration = Duration::from_secs(5);

fn assert_error(r: &Reply, status: u16, code: &str) {
    let body = r.json();
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(body["error"]["code"], code, "{r:?}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{r:?}"
    );
}

/// The hub's own origin, as a browser on its pages sends it.
fn origin(hub: &Hub) -> String {
    format!("http://127.0.0.1:{}", hub.port)
}

/// Sign in as the dashboard does; the session cookie's value.
fn sign_in(hub: &Hub, token: &str) -> String {
    let r = wire::request(
        hub.port,
        "POST",
        "/api/session",
        &[
            ("Content-Type", "application/json"),
            ("Origin", &origin(hub)),
        ],
        Some(&json!({ "token": token }).to_string()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.set_cookie("agentcom_session").expect("a session cookie")
}

fn with_cookie(hub: &Hub, method: &str, path: &str, cookie: &str) -> Reply {
    let cookie = format!("agentcom_session={cookie}");
    let origin = origin(hub);
    wire::request(
        hub.port,
        method,
        path,
        &[("Cookie", &cookie), ("Origin", &origin)],
        None,
    )
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A hub whose agents may send `per_s` messages a second, `burst` at once.
fn hub_with_message_limit(root: &Path, per_s: &str, burst: &str) -> Hub {
    Hub::start(
        root,
        &[
            ("AGENTCOM_LIMITS__AGENT_MESSAGES_PER_S", per_s),
            ("AGENTCOM_LIMITS__AGENT_MESSAGES_BURST", burst),
        ],
    )
}

/// Two connected agents: `holder` (with `capability`) working on a task
/// only it can take, and `other`; the task's id.
fn holder_and_other(hub: &Hub, capability: &str) -> (RawSidecar, RawSidecar, String) {
    let holder_token = hub.add_agent("holder", &[capability]);
    let other_token = hub.add_agent("other", &[]);
    let mut holder = RawSidecar::connect(&hub.ws_url(), &holder_token).unwrap();
    holder.hello("holder");
    let mut other = RawSidecar::connect(&hub.ws_url(), &other_token).unwrap();
    other.hello("other");
    hub.wait_agent("other", "idle", T);
    let id = hold_a_task(hub, &mut holder, capability);
    (holder, other, id)
}

/// Give an agent an attempt: submit a task only it can take, accept it.
fn hold_a_task(hub: &Hub, ws: &mut RawSidecar, capability: &str) -> String {
    let t = hub.submit(json!({ "title": "held", "needed_capabilities": [capability] }));
    let id = t["id"].as_str().unwrap().to_string();
    let a = ws.recv_type("assign", SOON).expect("assign");
    assert_eq!(a["task_id"], id.as_str());
    ws.send(json!({ "type": "accept", "task_id": id, "generation": 1 }));
    hub.wait_status(&id, "working", T);
    id
}

/// The next `error` frame with this code, skipping other frames.
fn error_code(ws: &mut RawSidecar, code: &str) -> Option<Value> {
    let deadline = std::time::Instant::now() + SOON;
    while std::time::Instant::now() < deadline {
        match ws.recv_type("error", deadline - std::time::Instant::now()) {
            Some(e) if e["code"] == code => return Some(e),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// Finding 1: tasks with the largest allowed fields (a 64 KiB description
/// and 16 KiB of metadata), created by several clients while agents
/// complete them, made the hub exit (code 70) within ~100 creates: its
/// sync opened sled's blob files while sled removed them.
#[test]
fn thousands_of_largest_tasks_while_agents_complete_them_never_stop_the_hub() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let agents: Vec<_> = (0..3)
        .map(|i| {
            let id = format!("quick{i}");
            let token = hub.add_agent(&id, &[]);
            quick_agent(
                &hub.ws_url(),
                &token,
                &id,
                json!({ "summary": "done" }),
                stop.clone(),
            )
        })
        .collect();
    for i in 0..3 {
        hub.wait_agent(&format!("quick{i}"), "idle", T);
    }
    let description = "d".repeat(64 * 1024);
    // As much metadata as allowed: 16 KiB of JSON.
    let metadata: serde_json::Map<String, Value> = (0..16)
        .map(|k| (format!("k{k:02}"), Value::String("m".repeat(1010))))
        .collect();
    assert!(serde_json::to_vec(&metadata).unwrap().len() <= 16 * 1024);
    let (clients, per_client) = (4, 500);
    let created = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for c in 0..clients {
            let (hub, description, metadata, created) = (&hub, &description, &metadata, &created);
            s.spawn(move || {
                for i in 0..per_client {
                    let (status, body) = hub.call(
                        "POST",
                        "/api/tasks",
                        Some(
                            json!({ "title": format!("big {c}-{i}"), "description": description,
                            "metadata": metadata }),
                        ),
                    );
                    assert_eq!(status, 201, "create {c}-{i}: {body}");
                    created.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let total = clients * per_client;
    assert_eq!(created.load(Ordering::Relaxed), total);
    wait_until(
        Duration::from_secs(120),
        "every big task to complete",
        || (hub.state()["tasks"]["completed"] == total).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let done: usize = agents.into_iter().map(|a| a.join().unwrap()).sum();
    assert_eq!(done, total, "each task completed once");
    assert!(hub.running(), "the hub is still running:\n{}", hub.log());
    let one = hub.tasks(Some("completed"));
    assert!(one
        .iter()
        .all(|t| t["description"].as_str().map(str::len) == Some(64 * 1024)));
}

/// Finding 2: `POST /api/session` read its body with no time limit, and
/// nothing limited connections: ~1,000 half-sent requests locked every
/// client out and the hub ran out of file descriptors. Here the hub has
/// 256 (soft and hard) and gets 400 half-sent sign-ins: those over its
/// connection limit are answered 503 at once, the others 408 when their
/// body stops coming, and the hub serves normally afterwards.
#[test]
fn half_sent_requests_time_out_and_connections_over_the_limit_get_503() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start_with_nofile(
        root.path(),
        &[
            ("AGENTCOM_HTTP__BODY_TIMEOUT_S", "2"),
            ("AGENTCOM_HTTP__HEADER_TIMEOUT_S", "2"),
        ],
        256,
        256,
    );
    let half = b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"token\":\"";
    let mut held: Vec<Held> = (0..400)
        .map(|_| Held::open(hub.port, half).expect("connect"))
        .collect();
    // A few that never finish their head either.
    for _ in 0..5 {
        held.push(Held::open(hub.port, b"GET /healthz HTTP/1.1\r\nHost: 127").expect("connect"));
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; held.len()];
    wait_until(
        Duration::from_secs(60),
        "every half-sent request to be answered",
        || {
            for (h, o) in held.iter_mut().zip(outcomes.iter_mut()) {
                if o.is_none() {
                    *o = h.poll();
                }
            }
            outcomes.iter().all(Option::is_some).then_some(())
        },
    );
    let (mut timed_out, mut refused) = (0, 0);
    for (i, o) in outcomes.iter().enumerate() {
        let Some(Outcome::Reply(r)) = o else {
            panic!("request {i} was closed without an answer");
        };
        match r.status {
            408 if i >= 400 => {} // the head timeout: actix's own empty 408
            408 => {
                assert_error(r, 408, "timeout");
                timed_out += 1;
            }
            503 => {
                assert_error(r, 503, "unavailable");
                assert_eq!(r.header("connection"), Some("close"), "{r:?}");
                refused += 1;
            }
            _ => panic!("request {i}: {r:?}"),
        }
    }
    assert!(
        timed_out > 0 && refused > 0,
        "{timed_out} timed out, {refused} refused"
    );
    // The hub is whole: it answers, writes its store, takes a sidecar.
    let (s, _) = hub.raw("GET", "/healthz", None, None);
    assert_eq!(s, 200);
    hub.submit(json!({ "title": "after the flood" }));
    let token = hub.add_agent("a1", &[]);
    // The flood's connections free their slots as the hub closes them
    // (after its 503s and 408s): soon, not necessarily at once on a busy
    // machine. A slot that leaked would never come back.
    wait_until(
        Duration::from_secs(10),
        "a sidecar to connect after the flood",
        || RawSidecar::connect(&hub.ws_url(), &token).ok(),
    )
    .hello("a1");
    let log = hub.log();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// Finding 2: a body that stops coming is answered 408 (in the error
/// shape) on an authenticated route too, and a head that stops coming 408.
#[test]
fn a_request_body_that_stops_coming_gets_408() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[
            ("AGENTCOM_HTTP__BODY_TIMEOUT_S", "1"),
            ("AGENTCOM_HTTP__HEADER_TIMEOUT_S", "1"),
        ],
    );
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 50\r\n\r\n{{\"title\":",
        hub.token
    );
    let mut body = Held::open(hub.port, head.as_bytes()).unwrap();
    let mut head = Held::open(hub.port, b"GET /api/state HTTP/1.1\r\nHost: 12").unwrap();
    let r = wait_until(T, "the half-sent body to be answered", || body.poll());
    let Outcome::Reply(r) = r else {
        panic!("closed without an answer")
    };
    assert_error(&r, 408, "timeout");
    let r = wait_until(T, "the half-sent head to be answered", || head.poll());
    assert!(
        matches!(r, Outcome::Reply(ref r) if r.status == 408),
        "{r:?}"
    );
    assert!(hub.tasks(None).is_empty());
}

/// Finding 2: a chunked body sent a chunk at a time was drained after the
/// response (a 401, a 408) for as long as the client kept sending, so a
/// drip held its connection forever. A body left unread now ends its
/// connection after the response.
#[test]
fn a_chunked_body_that_never_ends_does_not_hold_its_connection() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[("AGENTCOM_HTTP__BODY_TIMEOUT_S", "1")]);
    let chunked = |auth: &str| {
        format!("POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Transfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n")
    };
    let bearer = format!("Authorization: Bearer {}\r\n", hub.token);
    let mut drips = [
        Held::open(hub.port, chunked("").as_bytes()).unwrap(),
        Held::open(hub.port, chunked(&bearer).as_bytes()).unwrap(),
    ];
    let mut closed = [false, false];
    wait_until(T, "both dripping connections to be closed", || {
        for (d, c) in drips.iter_mut().zip(closed.iter_mut()) {
            if !*c {
                let _ = d.send(b"1\r\n \r\n");
                *c = d.closed();
            }
        }
        closed.iter().all(|c| *c).then_some(())
    });
    assert_error(&drips[0].reply().expect("an answer"), 401, "unauthorized");
    assert_error(&drips[1].reply().expect("an answer"), 408, "timeout");
    assert!(hub.tasks(None).is_empty());
}

/// Finding 2: the hub raises its soft open-file limit to the hard one.
#[test]
fn the_hub_raises_its_open_file_limit_to_the_hard_limit() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start_with_nofile(root.path(), &[], 256, 4096);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", hub.pid().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, ["4096", "4096"], "{line}");
}

/// Finding 3: any agent could publish `progress` for any attempt, with
/// notes up to a frame (1 MiB), into a replay ring bounded by count only:
/// memory grew by the size of every note. Only the holder's progress is
/// published now, notes are at most 4 KiB.
#[test]
fn progress_comes_only_from_the_holder_with_small_notes() {
    let root = tempfile::tempdir().unwrap();
    // The message limit out of the way: this is about what progress may do.
    let hub = hub_with_message_limit(root.path(), "100000", "100000");
    let (mut holder, mut other, id) = holder_and_other(&hub, "p");
    let mut events = SseClient::connect(&hub, None);

    let progress =
        |note: &str| json!({ "type": "progress", "task_id": id, "generation": 1, "note": note });
    other.send(progress("not mine"));
    error_code(&mut other, "not_holder").expect("not_holder");
    holder.send(
        json!({ "type": "progress", "task_id": id, "generation": 2, "note": "wrong attempt" }),
    );
    error_code(&mut holder, "not_holder").expect("not_holder for another generation");
    holder.send(progress(&"n".repeat(4097)));
    error_code(&mut holder, "too_large").expect("too_large");
    holder.send(progress(&"n".repeat(4096)));
    holder.send(progress("halfway"));
    let mut notes = Vec::new();
    for e in events.by_ref() {
        if e.event == "progress" {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            notes.push(v["note"].as_str().unwrap().to_string());
            if notes.last().is_some_and(|n| n == "halfway") {
                break;
            }
        }
    }
    assert_eq!(notes.len(), 2, "only the holder's notes: {notes:?}");
    assert_eq!(notes[0].len(), 4096);

    // The finding's memory growth: notes of a frame's size from an agent
    // that does not hold the attempt.
    let pid = hub.pid().unwrap();
    let before = rss_kib(pid);
    let big = "x".repeat(1000 * 1000);
    for _ in 0..150 {
        other.send(progress(&big));
    }
    other.send_raw(Message::text("not json")).unwrap();
    wait_until(T, "the hub to get through the notes", || {
        error_code(&mut other, "bad_message")
    });
    let grown_mib = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "the hub grew by {grown_mib} MiB");
}

/// Finding 4: the dashboard cookie held the admin token itself, and
/// signing out did not invalidate it. Now it holds a random session id
/// that expires, survives a restart, and is revoked at sign-out.
#[test]
fn the_dashboard_cookie_is_a_session_that_expires_and_ends_at_sign_out() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &[]);
    let r = wire::request(
        hub.port,
        "POST",
        "/api/session",
        &[
            ("Content-Type", "application/json"),
            ("Origin", &origin(&hub)),
        ],
        Some(&json!({ "token": hub.token }).to_string()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let set = r.header("set-cookie").unwrap().to_string();
    let cookie = r.set_cookie("agentcom_session").unwrap();
    assert!(
        !cookie.is_empty() && !set.contains(&hub.token) && cookie.len() >= 32,
        "the cookie is a session id, not the token: {set}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "not over plain http: {set}");
    assert_eq!(with_cookie(&hub, "GET", "/api/state", &cookie).status, 200);
    let me = with_cookie(&hub, "GET", "/api/session", &cookie);
    assert_eq!(me.json()["role"], "admin", "{me:?}");
    // The session outlives a restart of the hub.
    assert_eq!(hub.terminate(), Some(0));
    hub.restart();
    assert_eq!(with_cookie(&hub, "GET", "/api/state", &cookie).status, 200);
    // Signing out revokes it on the hub, not only in the browser.
    let out = with_cookie(&hub, "DELETE", "/api/session", &cookie);
    assert_eq!(out.status, 200, "{out:?}");
    assert_error(
        &with_cookie(&hub, "GET", "/api/state", &cookie),
        401,
        "unauthorized",
    );
    // A session ends by itself after its lifetime.
    let root = tempfile::tempdir().unwrap();
    let short = Hub::start(root.path(), &[("AGENTCOM_HTTP__SESSION_TTL_S", "1")]);
    let cookie = sign_in(&short, &short.token);
    wait_until(T, "the session to expire", || {
        (with_cookie(&short, "GET", "/api/state", &cookie).status == 401).then_some(())
    });
}

/// Finding 5: a page on another port of the same host (same site, so the
/// SameSite=Strict cookie goes along) created an urgent task through a
/// signed-in browser, sending JSON as `text/plain`.
#[test]
fn cookie_writes_need_the_hubs_origin_and_a_json_body() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let cookie = format!("agentcom_session={}", sign_in(&hub, &hub.token));
    let own = origin(&hub);
    let elsewhere = format!("http://127.0.0.1:{}", hub.port.wrapping_add(1));
    let (cookie, own, elsewhere) = (cookie.as_str(), own.as_str(), elsewhere.as_str());
    let body = r#"{"title":"from a page elsewhere","priority":"urgent"}"#;
    let post = |headers: &[(&str, &str)]| {
        wire::request(hub.port, "POST", "/api/tasks", headers, Some(body))
    };
    // The finding, as a browser sends it.
    let r = post(&[
        ("Cookie", cookie),
        ("Origin", elsewhere),
        ("Content-Type", "text/plain"),
    ]);
    assert_error(&r, 403, "forbidden");
    let r = post(&[
        ("Cookie", cookie),
        ("Origin", elsewhere),
        ("Content-Type", "application/json"),
    ]);
    assert_error(&r, 403, "forbidden");
    let r = post(&[("Cookie", cookie), ("Content-Type", "application/json")]);
    assert_error(&r, 403, "forbidden");
    let r = post(&[
        ("Cookie", cookie),
        ("Origin", own),
        ("Content-Type", "text/plain"),
    ]);
    assert_error(&r, 415, "unsupported_media_type");
    assert!(hub.tasks(None).is_empty(), "nothing was created");
    // The hub's own page: created.
    let r = post(&[
        ("Cookie", cookie),
        ("Origin", own),
        ("Content-Type", "application/json; charset=utf-8"),
    ]);
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Body-less writes and sign-out need the origin too.
    for (method, path) in [
        ("POST", format!("/api/tasks/{id}/cancel")),
        ("DELETE", "/api/session".to_string()),
    ] {
        let r = wire::request(
            hub.port,
            method,
            &path,
            &[("Cookie", cookie), ("Origin", elsewhere)],
            None,
        );
        assert_error(&r, 403, "forbidden");
    }
    assert_eq!(hub.task(&id)["status"], "queued");
    // Reads with the cookie need no origin.
    let r = wire::request(hub.port, "GET", "/api/tasks", &[("Cookie", cookie)], None);
    assert_eq!(r.status, 200);
    // A bearer token is no ambient credential: `curl -d` works as before.
    let auth = format!("Bearer {}", hub.token);
    let r = wire::request(
        hub.port,
        "POST",
        "/api/tasks",
        &[("Authorization", auth.as_str())],
        Some(body),
    );
    assert_eq!(r.status, 201, "{r:?}");
    // Sign-in takes JSON only.
    let r = wire::request(
        hub.port,
        "POST",
        "/api/session",
        &[("Content-Type", "text/plain")],
        Some(&json!({ "token": hub.token }).to_string()),
    );
    assert_error(&r, 415, "unsupported_media_type");
}

/// Finding 9: an agent wrote unbounded text into another agent's task by
/// sending stale reports (60 of 200 KB made its GET 11 MB).
#[test]
fn stale_reports_from_another_agent_keep_a_task_small() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let (_holder, mut other, id) = holder_and_other(&hub, "s");
    let error = "e".repeat(200 * 1000);
    for _ in 0..60 {
        other.send(json!({ "type": "fail", "task_id": id, "generation": 1, "error": error, "retryable": true }));
        other.recv_type("ack", T).expect("a stale report is acked");
    }
    let (status, _) = hub.call("GET", &format!("/api/tasks/{id}"), None);
    assert_eq!(status, 200);
    let text = wire::request(
        hub.port,
        "GET",
        &format!("/api/tasks/{id}"),
        &[("Authorization", &format!("Bearer {}", hub.token))],
        None,
    )
    .body;
    assert!(
        text.len() < 64 * 1024,
        "the task's GET is {} bytes",
        text.len()
    );
    let t = hub.task(&id);
    assert_eq!(t["status"], "working");
    assert_eq!(hub.state()["stale_messages"], 60);
}

/// Finding 9: per-agent message rate limits. Over the limit the hub reads
/// the agent's messages at the limit (nothing is lost) and says so once;
/// flooding without a pause for ten bursts' time ends the connection.
#[test]
fn an_agent_flooding_messages_is_slowed_then_disconnected() {
    let root = tempfile::tempdir().unwrap();
    // 20 a second, bursts of 5: a flood is 2.5 s without a pause.
    let hub = hub_with_message_limit(root.path(), "20", "5");
    let token = hub.add_agent("a1", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a1");
    for _ in 0..15 {
        ws.send(json!({ "type": "heartbeat", "state": "idle" }));
    }
    ws.send_raw(Message::text("not json")).unwrap();
    let e = error_code(&mut ws, "rate_limited").expect("rate_limited");
    assert!(e["message"].as_str().unwrap().contains("per second"), "{e}");
    // A burst is slowed, not lost: the last message is still answered.
    error_code(&mut ws, "bad_message").expect("the burst's last message handled");
    for _ in 0..300 {
        let _ = ws.send_raw(Message::text(
            json!({ "type": "heartbeat", "state": "idle" }).to_string(),
        ));
    }
    assert!(
        ws.closed_within(T),
        "sustained flooding closes the connection"
    );
    let log = hub.log();
    assert!(
        log.contains("message rate limit exceeded"),
        "the hub says why: {log}"
    );
    // The agent comes back (as a sidecar does, reconnecting with backoff).
    let _again = wait_until(T, "the agent to be welcomed again", || {
        let mut again = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
        again.try_hello("a1", Duration::from_secs(1)).map(|_| again)
    });
    hub.wait_agent("a1", "idle", T);
}

/// Finding 11: a WebSocket that never says hello is closed.
#[test]
fn a_websocket_that_never_says_hello_is_closed() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[("AGENTCOM_TIMEOUTS__HELLO_TIMEOUT_S", "1")]);
    let token = hub.add_agent("a1", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    assert!(ws.closed_within(T), "closed for want of a hello");
    assert!(hub.log().contains("no hello"), "{}", hub.log());
}

/// Finding 11: revoking an agent closes its connections, also those that
/// have not said hello yet.
#[test]
fn revoking_an_agent_closes_connections_that_never_said_hello() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[("AGENTCOM_TIMEOUTS__HELLO_TIMEOUT_S", "600")],
    );
    let token = hub.add_agent("a1", &[]);
    let mut silent = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    let mut greeted = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    greeted.hello("a1");
    hub.ok("DELETE", "/api/agents/a1", None);
    assert!(greeted.closed_within(T));
    assert!(
        silent.closed_within(T),
        "the silent connection is closed too"
    );
    assert_eq!(RawSidecar::connect(&hub.ws_url(), &token).err(), Some(401));
}

/// Finding 11: the data dir was 0755 and sled's files 0644 (task contents,
/// token hashes). Now the hub runs with umask 077 and makes an existing
/// data dir 0700.
#[test]
fn the_data_dir_and_store_files_are_private() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("hub").join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hub = Hub::start(root.path(), &[]);
    hub.submit(json!({ "title": "private" }));
    assert_eq!(mode(&data), 0o700, "the data dir");
    assert_eq!(
        mode(&data.join("sled").join("db")),
        0o600,
        "sled's data file"
    );
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}

/// Finding 11: `admin.token` ended up 0644 when a stale `admin.tmp` existed.
#[test]
fn a_stale_admin_tmp_does_not_make_the_admin_token_readable() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("hub").join("data");
    std::fs::create_dir_all(&data).unwrap();
    let tmp = data.join("admin.tmp");
    std::fs::write(&tmp, "stale\n").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hub = Hub::start(root.path(), &[]);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    assert_eq!(hub.raw("GET", "/api/state", Some(&hub.token), None).0, 200);
}

/// Finding 11: sign-in had no rate limit (2,905 guesses/s).
#[test]
fn sign_in_guesses_are_rate_limited_per_client() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let guess = |token: &str| {
        wire::request(
            hub.port,
            "POST",
            "/api/session",
            &[("Content-Type", "application/json")],
            Some(&json!({ "token": token }).to_string()),
        )
    };
    let mut limited = None;
    for i in 0..100 {
        let r = guess(&format!("guess-{i:016}"));
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_error(&r, 401, "unauthorized");
    }
    let r = limited.expect("guessing is stopped");
    assert_error(&r, 429, "rate_limited");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(wait >= 1, "{r:?}");
    // Meanwhile even the right token waits: a guess cannot be told apart.
    assert_error(&guess(&hub.token), 429, "rate_limited");
}

/// Finding 11: a viewer token of one character was accepted.
#[test]
fn short_tokens_are_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("agentcom-hub"));
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
    ])
    .arg(root.path().join("data"))
    .env_remove("AGENTCOM_ADMIN_TOKEN")
    .env("AGENTCOM_VIEWER_TOKEN", "x");
    let mut hub = Proc::spawn(cmd, &root.path().join("hub.log"));
    wait_until(T, "the hub to refuse its settings", || {
        (!hub.running()).then_some(())
    });
    let code = hub
        .child
        .as_mut()
        .unwrap()
        .try_wait()
        .unwrap()
        .unwrap()
        .code();
    assert_ne!(code, Some(0));
    let log = hub.log_text();
    assert!(log.contains("viewer_token") && log.contains("16"), "{log}");
}

/// Finding 11: query-string errors were plain-text 400s, given before the
/// token was checked.
#[test]
fn bad_query_strings_get_the_error_shape_after_the_token_check() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let auth = format!("Bearer {}", hub.token);
    for path in [
        "/api/events?last_event_id=abc",
        "/api/tasks?status=queued&status=dead",
    ] {
        let r = wire::request(hub.port, "GET", path, &[], None);
        assert_error(&r, 401, "unauthorized");
        let r = wire::request(hub.port, "GET", path, &[("Authorization", &auth)], None);
        assert_error(&r, 400, "malformed");
    }
}

/// Finding 11: agent-supplied text forged hub log lines.
#[test]
fn agent_text_cannot_forge_hub_log_lines() {
    const FORGED: &str = "\n2026-01-01T00:00:00Z  INFO forged";
    let root = tempfile::tempdir().unwrap();
    // Transitions (which carry agents' reasons and errors) log at debug.
    let hub = Hub::start(
        root.path(),
        &[
            ("AGENTCOM_RETRY__MAX_RETRIES", "0"),
            ("RUST_LOG", "info,agentcom_hub=debug"),
        ],
    );
    let token = hub.add_agent("a1", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.send(json!({ "type": format!("nope{FORGED}1") }));
    error_code(&mut ws, "bad_message").expect("bad_message");
    ws.send(
        json!({ "type": "hello", "protocol_version": 1, "agent_id": format!("a1{FORGED}2"),
        "capabilities": [], "state": "idle", "current_task": null, "sidecar_version": "x" }),
    );
    error_code(&mut ws, "wrong_agent").expect("wrong_agent");
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a1");
    let t = hub.submit(json!({ "title": "forge" }));
    let id = t["id"].as_str().unwrap();
    ws.recv_type("assign", T).expect("assign");
    ws.send(json!({ "type": "reject", "task_id": id, "generation": 1, "reason": format!("no{FORGED}3") }));
    let a = ws.recv_type("assign", T).expect("assigned again");
    let g = a["generation"].clone();
    ws.send(json!({ "type": "accept", "task_id": id, "generation": g }));
    ws.send(json!({ "type": "fail", "task_id": id, "generation": g, "error": format!("broke{FORGED}4"), "retryable": false }));
    ws.recv_type("ack", T).expect("ack");
    ws.send(json!({ "type": "fail", "task_id": format!("ghost{FORGED}5"), "generation": 1, "error": "x", "retryable": true }));
    ws.recv_type("ack", T).expect("ack");
    let log = wait_until(T, "every forged text to reach the log", || {
        let log = hub.log();
        (1..=5)
            .all(|i| log.contains(&format!("forged{i}")))
            .then_some(log)
    });
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z  INFO forged"),
            "a forged line: {line}\n{log}"
        );
    }
}

/// Finding 11: an idempotency key reused with a different body silently
/// returned the first task; it is a conflict.
#[test]
fn an_idempotency_key_reused_with_another_body_is_a_conflict() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let first = hub.submit(json!({ "title": "once", "idempotency_key": "k1" }));
    let (s, again) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "once", "idempotency_key": "k1" })),
    );
    assert_eq!((s, &again["id"]), (200, &first["id"]));
    let (s, b) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "other", "idempotency_key": "k1" })),
    );
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "conflict");
    assert_eq!(hub.tasks(None).len(), 1);
}
