//! A generated hostile-input suite for the sidecar: hundreds of hub →
//! sidecar messages a broken or hostile hub could send (malformed JSON,
//! wrong types, unknown types, missing fields, huge strings, binary
//! frames, ping floods, oversized and invalid frames, absurd numbers,
//! traversal and control characters in ids, assignments while busy,
//! cancels and acks for unknown attempts, extreme and repeated `welcome`s,
//! connections closed mid-frame), sent through the fake hub to one
//! long-lived real sidecar per test.
//!
//! Every case says what the sidecar must answer, and the answer is checked
//! with a barrier ([`FakeConn::sync`]) right after it: nothing, a `reject`
//! naming the id, an `accept` and then the `complete`, a heartbeat, or a
//! clean reconnect. After each category: the process is alive, nothing was
//! written outside its `state_dir`, the state dir holds only what it
//! should; at the end a valid assignment still runs to completion. The
//! case counts by category and outcome are printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentcom_tests::fakehub::{assign_json, task_json, FakeConn, FakeHub};
use agentcom_tests::sidecar::Sidecar;
use serde_json::{json, Value};
use tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// What the test sends.
enum Out {
    Json(Value),
    Text(String),
    Ws(Message),
    /// Bytes straight onto the TCP stream, framing bypassed.
    Raw(Vec<u8>),
    /// Raw bytes, then the TCP connection is shut.
    RawThenDrop(Vec<u8>),
}

/// What the sidecar must answer.
#[derive(Clone, Debug)]
enum Expect {
    /// No message (heartbeats aside).
    Nothing,
    /// `reject` of this task id, as invalid.
    Invalid(String),
    /// `reject` of this task id: busy with another.
    Busy(String),
    /// A heartbeat (a `welcome` was taken), and at most the held `accept`.
    Welcomed,
    /// `accept`, then `complete` of this id (acked by the test).
    Runs(String),
    /// `accept` of this id, whose runner waits until released.
    Held(String),
    /// `accept` again of the attempt held (no second runner).
    AcceptedAgain(String),
    /// The held attempt's runner is released: its `complete`.
    Released(String),
    /// `fail` of this id, cancelled.
    Cancelled(String),
    /// The connection ends; the sidecar connects again.
    Reconnect,
}

impl Expect {
    fn outcome(&self) -> &'static str {
        match self {
            Expect::Nothing => "ignored",
            Expect::Invalid(_) => "rejected as invalid",
            Expect::Busy(_) => "rejected as busy",
            Expect::Welcomed => "welcome taken",
            Expect::Runs(_) | Expect::Held(_) | Expect::Released(_) => "run",
            Expect::AcceptedAgain(_) => "accepted again",
            Expect::Cancelled(_) => "cancelled",
            Expect::Reconnect => "reconnected",
        }
    }
}

struct Case {
    category: &'static str,
    what: String,
    send: Vec<Out>,
    expect: Expect,
}

fn case(category: &'static str, what: impl Into<String>, send: Vec<Out>, expect: Expect) -> Case {
    Case {
        category,
        what: what.into(),
        send,
        expect,
    }
}

/// Unique valid task ids.
struct Ids(u32);

impl Ids {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("01HOSTILE{:017}", self.0)
    }
}

fn cancel(id: &str, generation: impl Into<Value>) -> Value {
    json!({ "type": "cancel", "task_id": id, "generation": generation.into(), "reason": "r" })
}

fn ack(id: &str, generation: impl Into<Value>, of: &str) -> Value {
    json!({ "type": "ack", "task_id": id, "generation": generation.into(), "of": of })
}

fn welcome(interval: Value, timeout: Option<Value>) -> Value {
    let mut w = json!({ "type": "welcome", "protocol_version": 1,
        "heartbeat_interval_s": interval, "hub_version": "fake" });
    if let Some(t) = timeout {
        w["heartbeat_timeout_s"] = t;
    }
    w
}

fn error(code: &str, message: &str) -> Value {
    json!({ "type": "error", "code": code, "message": message })
}

/// `v` with the field at `path` replaced by `new` (or removed: `None`).
fn with(v: &Value, path: &[&str], new: Option<Value>) -> Value {
    let mut v = v.clone();
    let (last, parents) = path.split_last().unwrap();
    let mut at = &mut v;
    for p in parents {
        at = &mut at[*p];
    }
    let obj = at.as_object_mut().unwrap();
    match new {
        Some(n) => {
            obj.insert(last.to_string(), n);
        }
        None => {
            obj.remove(*last);
        }
    }
    v
}

/// The kinds of value a field can hold, each with values it must refuse.
fn wrong_values(kind: &str) -> Vec<Value> {
    let too_big = json!(18_446_744_073_709_551_616.0_f64);
    match kind {
        "string" => vec![
            json!(1),
            json!(-1),
            json!(1.5),
            json!(true),
            Value::Null,
            json!([]),
            json!({}),
        ],
        "u64" => vec![
            json!("1"),
            json!(-1),
            json!(1.5),
            json!(true),
            Value::Null,
            json!([]),
            json!({}),
            too_big,
        ],
        "u32" => vec![
            json!("1"),
            json!(-1),
            json!(1.5),
            json!(true),
            Value::Null,
            json!([]),
            json!({}),
            too_big,
            json!(4_294_967_296u64),
        ],
        "enum" => vec![json!("bogus"), json!(""), json!(1), Value::Null, json!([])],
        "time" => vec![
            json!(0),
            json!("yesterday"),
            Value::Null,
            json!("2026-13-45T00:00:00Z"),
            json!([]),
        ],
        "object" => vec![json!("x"), json!(1), json!(true), Value::Null, json!([])],
        "opt string" => vec![json!(1), json!(true), json!([]), json!({})],
        "opt u64" => vec![
            json!("90"),
            json!(-1),
            json!(1.5),
            json!(true),
            json!([]),
            json!({}),
        ],
        "opt time" => vec![json!(0), json!("yesterday"), json!([]), json!(true)],
        "opt map" => vec![json!("x"), json!([]), json!(1), json!(true)],
        "default string" => vec![json!(1), json!([]), Value::Null],
        "default list" => vec![json!("rust"), json!([1]), json!({}), Value::Null],
        other => panic!("{other}"),
    }
}

/// Every field of every hub message, with its kind.
fn fields() -> Vec<(&'static str, Vec<&'static str>, &'static str)> {
    let mut f = vec![
        ("assign", vec!["task_id"], "string"),
        ("assign", vec!["generation"], "u64"),
        ("assign", vec!["task"], "object"),
        ("cancel", vec!["task_id"], "string"),
        ("cancel", vec!["generation"], "u64"),
        ("cancel", vec!["reason"], "opt string"),
        ("ack", vec!["task_id"], "string"),
        ("ack", vec!["generation"], "u64"),
        ("ack", vec!["of"], "enum"),
        ("welcome", vec!["protocol_version"], "u32"),
        ("welcome", vec!["heartbeat_interval_s"], "u64"),
        ("welcome", vec!["heartbeat_timeout_s"], "opt u64"),
        ("welcome", vec!["hub_version"], "opt string"),
        ("error", vec!["code"], "string"),
        ("error", vec!["message"], "string"),
    ];
    for (name, kind) in [
        ("id", "string"),
        ("title", "string"),
        ("description", "default string"),
        ("priority", "enum"),
        ("needed_capabilities", "default list"),
        ("repo", "opt string"),
        ("idempotency_key", "opt string"),
        ("max_retries", "u32"),
        ("timeout_s", "u64"),
        ("context_budget_tokens", "opt u64"),
        ("metadata", "opt map"),
        ("status", "enum"),
        ("generation", "u64"),
        ("attempts", "u32"),
        ("assigned_to", "opt string"),
        ("created_at", "time"),
        ("updated_at", "time"),
        ("queued_at", "opt time"),
        ("started_at", "opt time"),
        ("not_before", "opt time"),
        ("finished_at", "opt time"),
        ("last_error", "opt string"),
    ] {
        f.push(("assign", vec!["task", name], kind));
    }
    f
}

/// A valid message of each type (assign and cancel of `id`).
fn template(ty: &str, id: &str) -> Value {
    match ty {
        "assign" => assign_json(id, 1),
        "cancel" => cancel(id, 1),
        "ack" => ack(id, 1, "complete"),
        "welcome" => welcome(json!(30), Some(json!(90))),
        "error" => error("bad_message", "m"),
        other => panic!("{other}"),
    }
}

const TYPES: [&str; 5] = ["assign", "cancel", "ack", "welcome", "error"];

/// Ids a hub must never be able to turn into a path, an option or a ref.
fn hostile_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = [
        "../x",
        "../../x",
        "../../../../../../tmp/agentcom-hostile",
        "..",
        ".",
        "./x",
        "a/../../b",
        "a/b",
        "a\\b",
        "..\\..\\x",
        "%2e%2e%2fx",
        "x\0y",
        "\0",
        "a\nb",
        "a\rb",
        "\t",
        " ",
        " x",
        "x ",
        "-rf",
        "--upload-pack=touch pwned",
        "-",
        "_x",
        "x.lock",
        "x..y",
        "x.y",
        "@{-1}",
        "x@{1}",
        "~x",
        "x~1",
        "x^",
        "x:y",
        "x?",
        "x*",
        "x[",
        "$(touch pwned)",
        "`touch pwned`",
        "x;rm -rf y",
        "ünïcode",
        "😀",
        "\u{202e}rtl",
        "\u{7f}",
        "\u{1b}[31m",
        "",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    ids.push(root.join("abs").display().to_string());
    ids.push("/etc/agentcom-hostile".into());
    ids.push("a".repeat(129));
    ids
}

/// A WebSocket frame from the server (unmasked) with any first byte.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// The cases that keep the connection up.
fn connected_cases(root: &Path, ids: &mut Ids) -> Vec<Case> {
    let mut cases = Vec::new();

    // ----- malformed JSON --------------------------------------------------
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    for text in [
        "",
        " ",
        "null",
        "true",
        "0",
        "-1",
        "1e999",
        "[]",
        "{}",
        "[{}]",
        "\"assign\"",
        "{",
        "}",
        "{{}}",
        "{\"type\":}",
        "{'type':'assign'}",
        "NaN",
        "Infinity",
        "{\"type\":\"cancel\",\"task_id\":\"t\",\"generation\":1,}",
        "{\"type\":\"error\",\"code\":\"x\",\"message\":\"y\"} trailing",
        "\u{feff}{\"type\":\"error\",\"code\":\"x\",\"message\":\"y\"}",
        "{\"type\":\"error\",\"code\":\"\\x\",\"message\":\"y\"}",
        "{\"type\":\"error\",\"code\":\"\\ud800\",\"message\":\"y\"}",
        "{\"type\":\"error\",\"code\":\"a\u{1}b\",\"message\":\"raw control byte\"}",
        deep_array.as_str(),
        deep_object.as_str(),
    ] {
        cases.push(case(
            "malformed JSON",
            format!("{:.40?}", text),
            vec![Out::Text(text.to_string())],
            Expect::Nothing,
        ));
    }
    for ty in TYPES {
        let text = template(ty, &ids.next()).to_string();
        for cut in (1..text.len()).step_by(text.len() / 12 + 1) {
            let cut = (0..=cut).rev().find(|c| text.is_char_boundary(*c)).unwrap();
            cases.push(case(
                "malformed JSON",
                format!("{ty} cut at {cut}"),
                vec![Out::Text(text[..cut].to_string())],
                Expect::Nothing,
            ));
        }
    }
    // Not UTF-8, and fragmented text (the sidecar reads whole frames only).
    cases.push(case(
        "malformed JSON",
        "text frame that is not UTF-8",
        vec![Out::Raw(frame(0x81, b"{\"type\":\"error\xff\xfe\"}"))],
        Expect::Nothing,
    ));
    let fragmented = cancel(&ids.next(), 1).to_string().into_bytes();
    let (a, b) = fragmented.split_at(10);
    cases.push(case(
        "malformed JSON",
        "a message in two fragments",
        vec![Out::Raw([frame(0x01, a), frame(0x80, b)].concat())],
        Expect::Nothing,
    ));

    // ----- wrong types -------------------------------------------------------
    for (ty, path, kind) in fields() {
        for bad in wrong_values(kind) {
            let id = ids.next();
            let msg = with(&template(ty, &id), &path, Some(bad.clone()));
            cases.push(case(
                "wrong types",
                format!("{ty}.{} = {bad}", path.join(".")),
                vec![Out::Json(msg)],
                Expect::Nothing,
            ));
        }
    }

    // ----- unknown types -----------------------------------------------------
    let unknown: Vec<Value> = [
        "teleport",
        "Assign",
        "ASSIGN",
        " assign",
        "assign ",
        "assign\u{0}",
        "hello",
        "heartbeat",
        "accept",
        "reject",
        "progress",
        "complete",
        "fail",
        "welcome2",
        "",
        "💥",
    ]
    .into_iter()
    .map(Value::from)
    .chain([json!(1), Value::Null, json!([]), json!({}), json!(true)])
    .collect();
    for ty in unknown {
        let msg = with(&assign_json(&ids.next(), 1), &["type"], Some(ty.clone()));
        cases.push(case(
            "unknown type",
            format!("type {ty}"),
            vec![Out::Json(msg)],
            Expect::Nothing,
        ));
    }
    for ty in TYPES {
        let msg = with(&template(ty, &ids.next()), &["type"], None);
        cases.push(case(
            "unknown type",
            format!("{ty} without a type"),
            vec![Out::Json(msg)],
            Expect::Nothing,
        ));
    }

    // ----- missing fields ------------------------------------------------------
    let required: [(&str, &[&str]); 10] = [
        ("assign", &["task_id"]),
        ("assign", &["generation"]),
        ("assign", &["task"]),
        ("cancel", &["task_id"]),
        ("cancel", &["generation"]),
        ("ack", &["task_id"]),
        ("ack", &["generation"]),
        ("ack", &["of"]),
        ("welcome", &["protocol_version"]),
        ("welcome", &["heartbeat_interval_s"]),
    ];
    let mut missing: Vec<(&str, Vec<&str>)> =
        required.iter().map(|(t, p)| (*t, p.to_vec())).collect();
    missing.push(("error", vec!["code"]));
    missing.push(("error", vec!["message"]));
    for f in [
        "id",
        "title",
        "priority",
        "max_retries",
        "timeout_s",
        "status",
        "generation",
        "attempts",
        "created_at",
        "updated_at",
    ] {
        missing.push(("assign", vec!["task", f]));
    }
    for (ty, path) in missing {
        let msg = with(&template(ty, &ids.next()), &path, None);
        cases.push(case(
            "missing fields",
            format!("{ty} without {}", path.join(".")),
            vec![Out::Json(msg)],
            Expect::Nothing,
        ));
    }
    for ty in TYPES {
        cases.push(case(
            "missing fields",
            format!("{ty} with nothing but its type"),
            vec![Out::Json(json!({ "type": ty }))],
            Expect::Nothing,
        ));
    }

    // ----- huge strings ----------------------------------------------------------
    // An assign carries its id three times (task_id, task.id, the title).
    for n in [129, 1_000, 65_536, 300_000] {
        let id = "a".repeat(n);
        cases.push(case(
            "huge strings",
            format!("assign of a {n}-character id"),
            vec![Out::Json(assign_json(&id, 1))],
            Expect::Invalid(id),
        ));
    }
    let id = "\u{1}".repeat(50_000);
    cases.push(case(
        "huge strings",
        "assign of a 50,000-control-character id",
        vec![Out::Json(assign_json(&id, 1))],
        Expect::Invalid(id),
    ));
    let longest = format!("A{}", "b".repeat(127));
    cases.push(case(
        "huge strings",
        "assign of the longest valid id (128)",
        vec![Out::Json(assign_json(&longest, 1))],
        Expect::Runs(longest),
    ));
    let big = "x".repeat(900_000);
    for (what, msg) in [
        ("cancel with a 900 KB reason", {
            let mut c = cancel(&ids.next(), 1);
            c["reason"] = json!(big);
            c
        }),
        ("ack of a 900 KB id", ack(&big, 1, "complete")),
        ("error with a 900 KB message", error("bad_message", &big)),
        ("error with a 900 KB code", error(&big, "m")),
        (
            "error with 150,000 control characters",
            error("x", &"\u{1}\u{2}\u{1b}".repeat(50_000)),
        ),
    ] {
        cases.push(case(
            "huge strings",
            what,
            vec![Out::Json(msg)],
            Expect::Nothing,
        ));
    }
    cases.push(case(
        "huge strings",
        "welcome with a 900 KB hub version",
        vec![Out::Json({
            let mut w = welcome(json!(30), Some(json!(90)));
            w["hub_version"] = json!(big);
            w
        })],
        Expect::Welcomed,
    ));
    let id = ids.next();
    let mut a = assign_json(&id, 1);
    a["task"]["title"] = json!("t".repeat(400_000));
    a["task"]["description"] = json!("d".repeat(400_000));
    cases.push(case(
        "huge strings",
        "assign of a task with an 800 KB body",
        vec![Out::Json(a)],
        Expect::Runs(id),
    ));

    // ----- binary frames -------------------------------------------------------
    let valid = assign_json(&ids.next(), 1).to_string().into_bytes();
    let mut binaries: Vec<(String, Vec<u8>)> = [0usize, 1, 100, 65_536, 1_000_000]
        .into_iter()
        .map(|n| {
            (
                format!("{n} bytes"),
                (0..n).map(|i| (i * 7 + 3) as u8).collect(),
            )
        })
        .collect();
    binaries.push(("a valid assign as binary".into(), valid.clone()));
    binaries.push(("invalid UTF-8".into(), vec![0xff, 0xfe, 0x00, 0xc3]));
    for (what, bytes) in binaries {
        cases.push(case(
            "binary frames",
            what,
            vec![Out::Ws(Message::binary(bytes))],
            Expect::Nothing,
        ));
    }
    let (a, b) = valid.split_at(20);
    cases.push(case(
        "binary frames",
        "a binary message in two fragments",
        vec![Out::Raw([frame(0x02, a), frame(0x80, b)].concat())],
        Expect::Nothing,
    ));

    // ----- ping floods ------------------------------------------------------------
    for (n, size) in [
        (10, 0),
        (100, 1),
        (500, 16),
        (1_000, 125),
        (2_000, 0),
        (300, 64),
    ] {
        let pings = (0..n)
            .map(|i| Out::Ws(Message::Ping(vec![(i % 251) as u8; size].into())))
            .collect();
        cases.push(case(
            "ping floods",
            format!("{n} pings of {size} bytes"),
            pings,
            Expect::Nothing,
        ));
    }
    for (n, size) in [(1, 0), (100, 125), (1_000, 8)] {
        let pongs = (0..n)
            .map(|_| Out::Ws(Message::Pong(vec![7u8; size].into())))
            .collect();
        cases.push(case(
            "ping floods",
            format!("{n} unsolicited pongs of {size} bytes"),
            pongs,
            Expect::Nothing,
        ));
    }
    cases.push(case(
        "a frame of exactly the limit",
        "an exactly 1 MiB text frame",
        vec![Out::Text("z".repeat(1024 * 1024))],
        Expect::Nothing,
    ));

    // ----- absurd numbers --------------------------------------------------------------
    for generation in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
        let id = ids.next();
        cases.push(case(
            "absurd numbers",
            format!("assign generation {generation}"),
            vec![Out::Json(assign_json(&id, generation))],
            Expect::Runs(id),
        ));
    }
    for (field, value) in [
        ("timeout_s", json!(u64::MAX)),
        ("timeout_s", json!(0)),
        ("max_retries", json!(u32::MAX)),
        ("attempts", json!(u32::MAX)),
        ("context_budget_tokens", json!(u64::MAX)),
        ("created_at", json!("9999-12-31T23:59:59.999Z")),
        ("updated_at", json!("1970-01-01T00:00:00.000Z")),
    ] {
        let id = ids.next();
        let mut a = assign_json(&id, 1);
        a["task"][field] = value.clone();
        cases.push(case(
            "absurd numbers",
            format!("assign with task.{field} = {value}"),
            vec![Out::Json(a)],
            Expect::Runs(id),
        ));
    }
    for generation in [
        json!(-1),
        json!(1.5),
        json!(1e20),
        json!(-9_223_372_036_854_775_808i64),
        json!(18_446_744_073_709_551_616.0_f64),
    ] {
        for msg in [
            assign_json(&ids.next(), 1),
            cancel(&ids.next(), 1),
            ack(&ids.next(), 1, "fail"),
        ] {
            let ty = msg["type"].as_str().unwrap().to_string();
            cases.push(case(
                "absurd numbers",
                format!("{ty} generation {generation}"),
                vec![Out::Json(with(
                    &msg,
                    &["generation"],
                    Some(generation.clone()),
                ))],
                Expect::Nothing,
            ));
        }
    }
    for g in [0, u64::MAX] {
        cases.push(case(
            "absurd numbers",
            format!("cancel and ack of generation {g}"),
            vec![
                Out::Json(cancel(&ids.next(), g)),
                Out::Json(ack(&ids.next(), g, "accept")),
            ],
            Expect::Nothing,
        ));
    }

    // ----- hostile ids ---------------------------------------------------------------------
    for id in hostile_ids(root) {
        cases.push(case(
            "traversal and control characters in ids",
            format!("assign {id:?}"),
            vec![Out::Json(assign_json(&id, 1))],
            Expect::Invalid(id.clone()),
        ));
        let valid = ids.next();
        let mut a = assign_json(&valid, 1);
        a["task"] = task_json(&id, 1);
        cases.push(case(
            "traversal and control characters in ids",
            format!("assign {valid} whose body names {id:?}"),
            vec![Out::Json(a)],
            Expect::Invalid(valid),
        ));
        cases.push(case(
            "traversal and control characters in ids",
            format!("cancel {id:?}"),
            vec![Out::Json(cancel(&id, 1))],
            Expect::Nothing,
        ));
        cases.push(case(
            "traversal and control characters in ids",
            format!("ack {id:?}"),
            vec![Out::Json(ack(&id, 1, "complete"))],
            Expect::Nothing,
        ));
    }
    let valid = ids.next();
    let mut a = assign_json(&valid, 2);
    a["task"]["generation"] = json!(3);
    cases.push(case(
        "traversal and control characters in ids",
        "assign whose body names another generation",
        vec![Out::Json(a)],
        Expect::Invalid(valid),
    ));

    // ----- assign while busy -----------------------------------------------------------------
    let held = ids.next();
    cases.push(case(
        "assign while busy",
        "an attempt whose runner waits",
        vec![Out::Json(assign_json(&held, 1))],
        Expect::Held(held.clone()),
    ));
    for i in 0..20 {
        let other = ids.next();
        let g = if i % 2 == 0 { 1 } else { u64::MAX };
        cases.push(case(
            "assign while busy",
            format!("another assign ({other}#{g})"),
            vec![Out::Json(assign_json(&other, g))],
            Expect::Busy(other),
        ));
    }
    cases.push(case(
        "assign while busy",
        "the held attempt at another generation",
        vec![Out::Json(assign_json(&held, 2))],
        Expect::Busy(held.clone()),
    ));
    for _ in 0..3 {
        cases.push(case(
            "assign while busy",
            "the held attempt again",
            vec![Out::Json(assign_json(&held, 1))],
            Expect::AcceptedAgain(held.clone()),
        ));
    }
    for id in hostile_ids(root).into_iter().take(10) {
        cases.push(case(
            "assign while busy",
            format!("a hostile id while busy: {id:?}"),
            vec![Out::Json(assign_json(&id, 1))],
            Expect::Invalid(id),
        ));
    }
    for (what, msg) in [
        ("cancel of another generation", cancel(&held, 2)),
        ("cancel of generation 0", cancel(&held, 0)),
        ("ack of the held accept", ack(&held, 1, "accept")),
        ("ack of a complete not sent", ack(&held, 1, "complete")),
    ] {
        cases.push(case(
            "assign while busy",
            what,
            vec![Out::Json(msg)],
            Expect::Nothing,
        ));
    }
    cases.push(case(
        "assign while busy",
        "welcome while busy",
        vec![Out::Json(welcome(json!(30), Some(json!(90))))],
        Expect::Welcomed,
    ));
    cases.push(case(
        "assign while busy",
        "the held runner ends",
        vec![],
        Expect::Released(held),
    ));
    let doomed = ids.next();
    cases.push(case(
        "assign while busy",
        "an attempt to cancel",
        vec![Out::Json(assign_json(&doomed, 1))],
        Expect::Held(doomed.clone()),
    ));
    cases.push(case(
        "assign while busy",
        "cancel of the held attempt",
        vec![Out::Json(cancel(&doomed, 1))],
        Expect::Cancelled(doomed.clone()),
    ));
    cases.push(case(
        "assign while busy",
        "cancel again after it ended",
        vec![Out::Json(cancel(&doomed, 1))],
        Expect::Nothing,
    ));

    // ----- cancel and ack for unknown attempts --------------------------------------------------
    for i in 0..30u64 {
        let id = ids.next();
        let of = ["accept", "complete", "fail"][i as usize % 3];
        cases.push(case(
            "cancel/ack for unknown attempts",
            format!("cancel {id}#{i}"),
            vec![Out::Json(cancel(&id, i))],
            Expect::Nothing,
        ));
        cases.push(case(
            "cancel/ack for unknown attempts",
            format!("ack {of} of {id}#{i}"),
            vec![Out::Json(ack(&id, i, of))],
            Expect::Nothing,
        ));
    }

    // ----- hub errors ------------------------------------------------------------------------
    for (code, message) in [
        ("bad_message", "frame refused"),
        ("frame_too_large", "closing"),
        ("wrong_agent", "not yours"),
        ("protocol_version", "2 only"),
        ("hello_first", ""),
        ("", ""),
        ("\u{0}", "\u{1b}[2J\u{7}"),
        ("💥", "ünïcode\r\nnew line"),
    ] {
        cases.push(case(
            "hub errors",
            format!("error {code:?}"),
            vec![Out::Json(error(code, message))],
            Expect::Nothing,
        ));
    }

    // ----- welcome with extremes ---------------------------------------------------------------
    let intervals = [
        json!(0),
        json!(1),
        json!(2),
        json!(3600),
        json!(3601),
        json!(u32::MAX),
        json!(1u64 << 53),
        json!(1u64 << 63),
        json!(u64::MAX),
    ];
    let timeouts = [
        None,
        Some(Value::Null),
        Some(json!(0)),
        Some(json!(1)),
        Some(json!(u64::MAX)),
    ];
    for interval in &intervals {
        for timeout in &timeouts {
            cases.push(case(
                "welcome with extremes",
                format!("welcome {interval} / {timeout:?}"),
                vec![Out::Json(welcome(interval.clone(), timeout.clone()))],
                Expect::Welcomed,
            ));
        }
    }
    for version in [json!(0), json!(u32::MAX), json!(2)] {
        let w = with(
            &welcome(json!(30), Some(json!(90))),
            &["protocol_version"],
            Some(version.clone()),
        );
        cases.push(case(
            "welcome with extremes",
            format!("welcome of protocol {version}"),
            vec![Out::Json(w)],
            Expect::Welcomed,
        ));
    }

    // ----- duplicate welcome --------------------------------------------------------------------
    for n in [2, 5, 10, 50, 100] {
        let welcomes = (0..n)
            .map(|_| Out::Json(welcome(json!(30), Some(json!(90)))))
            .collect();
        cases.push(case(
            "duplicate welcome",
            format!("{n} welcomes in a row"),
            welcomes,
            Expect::Welcomed,
        ));
    }
    cases
}

/// The cases that end the connection: the sidecar must connect again.
fn reconnect_cases(ids: &mut Ids) -> Vec<Case> {
    let mut cases = Vec::new();
    let over = 1024 * 1024 + 1;
    for (what, send) in [
        (
            "a text frame of 1 MiB + 1",
            vec![Out::Text("z".repeat(over))],
        ),
        (
            "a text frame of 2 MiB",
            vec![Out::Text("z".repeat(2 << 20))],
        ),
        (
            "a binary frame of 1 MiB + 1",
            vec![Out::Ws(Message::binary(vec![1u8; over]))],
        ),
        ("an assign padded to 1.1 MiB", {
            let mut a = assign_json(&ids.next(), 1);
            a["task"]["description"] = json!("p".repeat(1_150_000));
            vec![Out::Json(a)]
        }),
        (
            "a header announcing 2^62 bytes",
            vec![Out::Raw(
                [vec![0x81, 127], (1u64 << 62).to_be_bytes().to_vec()].concat(),
            )],
        ),
        (
            "a header with the length's top bit set",
            vec![Out::Raw(
                [vec![0x81, 127], u64::MAX.to_be_bytes().to_vec()].concat(),
            )],
        ),
    ] {
        cases.push(case("oversized frames", what, send, Expect::Reconnect));
    }
    let text = cancel(&ids.next(), 1).to_string().into_bytes();
    for (what, send) in [
        (
            "a frame cut after its header",
            vec![Out::RawThenDrop(vec![0x81, 126, 0x03, 0xe8])],
        ),
        (
            "a frame cut mid-payload",
            vec![Out::RawThenDrop(
                frame(0x81, &text)[..text.len() / 2].to_vec(),
            )],
        ),
        (
            "the first fragment of a message, then the socket closes",
            vec![Out::RawThenDrop(frame(0x01, &text))],
        ),
        (
            "a Close frame (normal)",
            vec![Out::Ws(Message::Close(None))],
        ),
        (
            "a Close frame with 1009 and a reason",
            vec![Out::Raw(frame(
                0x88,
                &[&1009u16.to_be_bytes()[..], &[b'r'; 100]].concat(),
            ))],
        ),
        (
            "a Close frame with a one-byte payload",
            vec![Out::Raw(frame(0x88, &[3]))],
        ),
        (
            "the socket closes without a Close",
            vec![Out::RawThenDrop(vec![])],
        ),
        (
            "a frame with reserved bits set",
            vec![Out::Raw(frame(0xc1, b"{}"))],
        ),
        (
            "a frame with a reserved opcode",
            vec![Out::Raw(frame(0x83, b"{}"))],
        ),
        (
            "a masked frame from the server",
            vec![Out::Raw(vec![0x81, 0x82, 1, 2, 3, 4, b'{' ^ 1, b'}' ^ 2])],
        ),
        (
            "a continuation without a start",
            vec![Out::Raw(frame(0x80, b"tail"))],
        ),
        ("a fragmented ping", vec![Out::Raw(frame(0x09, b"ping"))]),
    ] {
        cases.push(case(
            "close mid-message and bad frames",
            what,
            send,
            Expect::Reconnect,
        ));
    }
    cases
}

/// One sidecar, its fake hub connection, and the counts.
struct Driver<'a> {
    root: &'a Path,
    fake: FakeHub,
    sidecar: Sidecar,
    gates: PathBuf,
    conn: Option<FakeConn>,
    counts: Counts,
}

/// Cases by category and outcome, and the time each category took.
#[derive(Default)]
struct Counts {
    cases: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    took: BTreeMap<&'static str, Duration>,
}

impl Counts {
    fn add(&mut self, category: &'static str, outcome: &'static str, n: usize, took: Duration) {
        *self
            .cases
            .entry(category)
            .or_default()
            .entry(outcome)
            .or_default() += n;
        *self.took.entry(category).or_default() += took;
    }

    fn merge(&mut self, other: Counts) {
        for (category, outcomes) in other.cases {
            for (outcome, n) in outcomes {
                self.add(category, outcome, n, Duration::ZERO);
            }
            *self.took.entry(category).or_default() += other.took[category];
        }
    }

    /// Print the counts; the total.
    fn report(&self, title: &str) -> usize {
        println!("{title}:");
        let mut total = 0;
        for (category, outcomes) in &self.cases {
            let n: usize = outcomes.values().sum();
            total += n;
            let by: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
            let took = self.took[category].as_secs_f64();
            println!(
                "  {category:<42} {n:>4} cases in {took:5.2} s: {}",
                by.join(", ")
            );
        }
        println!("  {:<42} {total:>4} cases", "total");
        total
    }
}

/// A runner that ends at once, unless `gates/hold-<task>` exists: then it
/// waits for `gates/release-<task>`.
fn runner(gates: &Path) -> String {
    format!(
        r#"g={g}
if [ -f "$g/hold-$AGENTCOM_TASK_ID" ]; then
  while [ ! -f "$g/release-$AGENTCOM_TASK_ID" ]; do sleep 0.02; done
fi
printf '{{"summary":"done %s"}}' "$AGENTCOM_GENERATION" > "$AGENTCOM_RESULT_FILE""#,
        g = gates.display()
    )
}

impl<'a> Driver<'a> {
    fn start(root: &'a Path) -> Driver<'a> {
        let gates = root.join("gates");
        std::fs::create_dir_all(&gates).unwrap();
        let fake = FakeHub::start();
        let sidecar = Sidecar::start_with_token(
            root,
            &fake,
            "hostile",
            "tok",
            &[],
            "exec",
            &runner(&gates),
            "",
        );
        let (conn, _) = fake.accept_welcomed(T);
        Driver {
            root,
            fake,
            sidecar,
            gates,
            conn: Some(conn),
            counts: Counts::default(),
        }
    }

    fn conn(&mut self) -> &mut FakeConn {
        self.conn.as_mut().expect("connected")
    }

    fn fail(&self, c: &Case, why: String) -> ! {
        panic!(
            "case [{}] {}: {why}\n--- sidecar log (last 40 lines) ---\n{}",
            c.category,
            c.what,
            tail(&self.sidecar.log(), 40)
        )
    }

    /// Every message up to the barrier, heartbeats aside.
    fn answers(&mut self, c: &Case) -> Vec<Value> {
        match self.conn().sync(T) {
            Some(got) => got
                .into_iter()
                .filter(|m| m["type"] != "heartbeat")
                .collect(),
            None => self.fail(c, "the connection ended".into()),
        }
    }

    fn expect_one(&mut self, c: &Case, ty: &str, id: &str) -> Value {
        let got = self.answers(c);
        match got.as_slice() {
            [m] if m["type"] == ty && m["task_id"] == id => m.clone(),
            _ => self.fail(
                c,
                format!("expected one {ty} of {id:.60?}, got {got:.300?}"),
            ),
        }
    }

    /// The report of `id` (already among `got`, or the next one), acked.
    fn report(&mut self, c: &Case, got: &[Value], ty: &str, id: &str) -> Value {
        let report = match got.iter().find(|m| m["type"] == ty) {
            Some(m) => m.clone(),
            None => match self.conn().recv_type(ty, T) {
                Some(m) => m,
                None => self.fail(c, format!("no {ty}")),
            },
        };
        if report["task_id"] != id {
            self.fail(c, format!("{ty} of another task: {report}"));
        }
        self.conn().ack(&report);
        if self.conn().sync(T).is_none() {
            self.fail(c, "the connection ended after the ack".into());
        }
        report
    }

    fn run(&mut self, c: Case) {
        let started = std::time::Instant::now();
        if let Expect::Held(id) = &c.expect {
            std::fs::write(self.gates.join(format!("hold-{id}")), "").unwrap();
        }
        if let Expect::Released(id) = &c.expect {
            std::fs::write(self.gates.join(format!("release-{id}")), "").unwrap();
        }
        let mut dropped = false;
        for out in &c.send {
            let conn = self.conn.as_mut().expect("connected");
            // A send may fail once the sidecar has dropped the connection.
            let _ = match out {
                Out::Json(v) => conn.send(v).map_err(|e| e.to_string()),
                Out::Text(t) => conn.send_text(t.clone()).map_err(|e| e.to_string()),
                Out::Ws(m) => conn.send_raw(m.clone()).map_err(|e| e.to_string()),
                Out::Raw(b) => conn.write_bytes(b).map_err(|e| e.to_string()),
                Out::RawThenDrop(b) => {
                    self.conn.take().unwrap().write_bytes_and_drop(b);
                    dropped = true;
                    Ok(())
                }
            };
        }
        match &c.expect {
            Expect::Nothing => {
                let got = self.answers(&c);
                if !got.is_empty() {
                    self.fail(&c, format!("expected no answer, got {got:.300?}"));
                }
            }
            Expect::Invalid(id) => {
                let m = self.expect_one(&c, "reject", id);
                if !m["reason"].as_str().unwrap_or("").contains("invalid") {
                    self.fail(&c, format!("not rejected as invalid: {:.300}", m["reason"]));
                }
            }
            Expect::Busy(id) => {
                let m = self.expect_one(&c, "reject", id);
                if !m["reason"].as_str().unwrap_or("").contains("busy") {
                    self.fail(&c, format!("not rejected as busy: {}", m["reason"]));
                }
            }
            Expect::Welcomed => {
                let got = self.conn().sync(T);
                let Some(got) = got else {
                    self.fail(&c, "the connection ended".into())
                };
                let beat = got.iter().any(|m| m["type"] == "heartbeat");
                let others = got
                    .iter()
                    .any(|m| m["type"] != "heartbeat" && m["type"] != "accept");
                if !beat || others {
                    self.fail(&c, format!("expected a heartbeat, got {got:.300?}"));
                }
            }
            Expect::Held(id) | Expect::AcceptedAgain(id) => {
                self.expect_one(&c, "accept", id);
            }
            Expect::Runs(id) => {
                let got = self.answers(&c);
                if got.first().map(|m| &m["type"]) != Some(&json!("accept"))
                    || got[0]["task_id"] != *id
                {
                    self.fail(&c, format!("expected accept of {id}, got {got:.300?}"));
                }
                let done = self.report(&c, &got, "complete", id);
                if !done["result"]["summary"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("done"))
                {
                    self.fail(&c, format!("unexpected result {done}"));
                }
            }
            Expect::Released(id) => {
                self.report(&c, &[], "complete", id);
            }
            Expect::Cancelled(id) => {
                let got = self.answers(&c);
                let fail = self.report(&c, &got, "fail", id);
                if !fail["error"].as_str().unwrap_or("").contains("cancelled") {
                    self.fail(&c, format!("not a cancellation: {fail}"));
                }
            }
            Expect::Reconnect => {
                if !dropped {
                    let ended = self.conn().ended_within(T);
                    if !ended {
                        self.fail(&c, "the sidecar kept the connection".into());
                    }
                }
                self.conn = None;
                let (conn, hello) = match self.fake.accept(T) {
                    Some(mut conn) => {
                        let hello = conn.recv_type("hello", T);
                        (conn, hello)
                    }
                    None => self.fail(&c, "the sidecar did not connect again".into()),
                };
                if hello.is_none() {
                    self.fail(&c, "no hello after reconnecting".into());
                }
                self.conn = Some(conn);
                self.conn().welcome(30, Some(json!(90)));
                if self.conn().sync(T).is_none() {
                    self.fail(&c, "the new connection ended".into());
                }
            }
        }
        self.counts
            .add(c.category, c.expect.outcome(), 1, started.elapsed());
    }

    /// The process is alive, nothing is outside its state dir, and the
    /// state dir holds only what it should.
    fn check(&mut self, after: &str, busy: bool) {
        assert!(
            self.sidecar.running(),
            "the sidecar exited after {after}:\n{}",
            tail(&self.sidecar.log(), 60)
        );
        let strays = self.sidecar.strays(self.root, &["gates"]);
        assert!(
            strays.is_empty(),
            "written outside the state dir after {after}: {strays:?}"
        );
        let state = self.sidecar.state_dir();
        for e in std::fs::read_dir(&state).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // An atomic write in progress shows as `.current.json.<random>`;
            // the self-test's probe file as `.selftest-<pid>-<random>`.
            let in_progress = name.starts_with(".current.json.") || name.starts_with(".selftest-");
            let expected = [
                "outbox",
                "tasks",
                "sidecar.lock",
                "control.sock",
                "instance_id",
            ]
            .contains(&name.as_str())
                || in_progress
                || (busy && name == "current.json");
            assert!(expected, "unexpected {name} in the state dir after {after}");
        }
        for e in std::fs::read_dir(state.join("tasks")).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let (id, generation) = name.rsplit_once('-').unwrap_or(("", ""));
            let id_ok = id.len() <= 128
                && id.starts_with(|c: char| c.is_ascii_alphanumeric())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            assert!(
                id_ok && generation.parse::<u64>().is_ok(),
                "unexpected task dir {name:?} after {after}"
            );
        }
        let outbox: Vec<_> = std::fs::read_dir(state.join("outbox"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(outbox.is_empty(), "every report was acked, yet {outbox:?}");
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run `cases` category by category, checking after each.
fn run_all(d: &mut Driver, cases: Vec<Case>) {
    let mut current: Option<&'static str> = None;
    for c in cases {
        if current.is_some_and(|p| p != c.category) {
            d.check(current.unwrap(), false);
        }
        current = Some(c.category);
        let busy = matches!(c.expect, Expect::Held(_));
        d.run(c);
        if busy {
            d.check("holding an attempt", true);
        }
    }
    if let Some(last) = current {
        d.check(last, false);
    }
    // It still works.
    let mut ids = Ids(900_000);
    let id = ids.next();
    d.run(case(
        "final valid assign",
        id.clone(),
        vec![Out::Json(assign_json(&id, 7))],
        Expect::Runs(id),
    ));
    d.check("the final assign", false);
}

#[test]
fn hundreds_of_hostile_hub_messages_are_each_answered_and_never_stop_the_sidecar() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Driver::start(root.path());
    let mut ids = Ids(0);
    let cases = connected_cases(root.path(), &mut ids);
    run_all(&mut d, cases);
    let total = d.counts.report("hostile hub messages on one connection");
    assert!(total >= 400, "{total} cases");
    let connects = d
        .sidecar
        .log()
        .lines()
        .filter(|l| l.contains("connected to the hub"))
        .count();
    assert_eq!(connects, 1, "one connection throughout");
}

/// Each case here costs a reconnect, and the delays grow (no connection
/// proves itself), so they are shared among three sidecars at once.
#[test]
fn frames_that_break_the_connection_end_in_a_clean_reconnect() {
    let root = tempfile::tempdir().unwrap();
    let mut ids = Ids(500_000);
    let mut shares: Vec<Vec<Case>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for (i, c) in reconnect_cases(&mut ids).into_iter().enumerate() {
        shares[i % 3].push(c);
    }
    let n: usize = shares.iter().map(Vec::len).sum();
    let mut all = Counts::default();
    std::thread::scope(|s| {
        let runs: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(i, cases)| {
                let dir = root.path().join(format!("share{i}"));
                s.spawn(move || {
                    std::fs::create_dir_all(&dir).unwrap();
                    let mut d = Driver::start(&dir);
                    run_all(&mut d, cases);
                    d.counts
                })
            })
            .collect();
        for r in runs {
            all.merge(r.join().expect("a share failed"));
        }
    });
    let total = all.report("frames that end the connection (3 sidecars)");
    assert_eq!(total, n + 3);
}
