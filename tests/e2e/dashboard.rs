//! The dashboard in a real browser (Debian's headless Chromium) against a
//! real hub and sidecars.
//!
//! Screenshots go to `target/screenshots/` (or `AGENTCOM_SCREENSHOT_DIR`);
//! `docs/dashboard.png` is a copy of the fleet's picture (`dashboard.png`),
//! `docs/dashboard-changes.png` of the merge pipeline's
//! (`dashboard-changes.png`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcom_tests::browser::Browser;
use agentcom_tests::hub::{events, Hub};
use agentcom_tests::procs::sh;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::sse::SseClient;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn screenshot_dir() -> PathBuf {
    std::env::var("AGENTCOM_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"))
}

/// A runner for the demo: `gate…` waits for `release`, `broken…` fails (not
/// retryable) until `fixed` exists, everything reports a branch and a PR.
fn runner(root: &Path) -> String {
    format!(
        r#"title=$(sed -n 's/^  "title": "\(.*\)",$/\1/p' "$AGENTCOM_TASK_FILE")
case "$title" in
  gate*) while [ ! -f {root}/release ]; do sleep 0.05; done ;;
  broken*) if [ ! -f {root}/fixed ]; then echo '{{"error":"the build is broken","retryable":false}}' > "$AGENTCOM_RESULT_FILE"; exit 1; fi ;;
esac
printf '{{"summary":"did %s","branch":"%s/%s","pr_url":"https://git.example/pulls/%s"}}' "$title" "$AGENTCOM_AGENT_ID" "$AGENTCOM_TASK_ID" "$AGENTCOM_TASK_ID" > "$AGENTCOM_RESULT_FILE""#,
        root = root.display()
    )
}

fn sign_in(b: &mut Browser, token: &str) {
    b.eval(&format!(
        "document.querySelector('#token').value = {token:?}; document.querySelector('#sign-in-form').requestSubmit(); true"
    ));
    b.wait_for("!document.querySelector('#app').hidden && document.querySelector('#live-status').classList.contains('on')", T);
}

fn row_status(id: &str) -> String {
    format!("document.querySelector('tr[data-id=\"{id}\"]')?.dataset.status")
}

#[test]
fn the_dashboard_shows_the_fleet_live_and_retries_a_dead_task() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[("AGENTCOM_VIEWER_TOKEN", "viewer-token-0123456789")],
    );
    let _solo = Sidecar::start(
        root.path(),
        &hub,
        "loash",
        &["rust", "git"],
        &runner(root.path()),
        "",
    );
    let _other = Sidecar::start(
        root.path(),
        &hub,
        "skaffen",
        &["python", "git"],
        &runner(root.path()),
        "",
    );
    hub.add_agent("flere-imsaho", &["review"]); // known, never connected
    hub.wait_agent("loash", "idle", T);
    hub.wait_agent("skaffen", "idle", T);

    let mut b = Browser::launch(root.path(), 1400, 1000);
    b.goto(&format!("{}/dashboard", hub.url));
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    // A wrong token is refused on the page.
    b.eval("document.querySelector('#token').value = 'nope'; document.querySelector('#sign-in-form').requestSubmit(); true");
    b.wait_for("!document.querySelector('#sign-in-error').hidden", T);
    sign_in(&mut b, &hub.token);
    assert_eq!(
        b.eval("document.cookie.includes('agentcom_session')"),
        json!(false),
        "the session cookie is HttpOnly"
    );
    b.eval("window.__noReload = 42");
    b.wait_for(
        "document.querySelector('[data-agent=\"loash\"]')?.dataset.state === 'idle'",
        T,
    );
    assert_eq!(
        b.eval("document.querySelector('[data-agent=\"flere-imsaho\"]').dataset.state"),
        json!("offline")
    );

    // A submitted task moves to completed without a reload.
    let gate = hub
        .submit(json!({ "title": "gate: add login rate limit", "needed_capabilities": ["rust"] }));
    let gid = gate["id"].as_str().unwrap();
    b.wait_for(&format!("{} === 'working'", row_status(gid)), T);
    b.wait_for(
        "document.querySelector('[data-agent=\"loash\"]').dataset.state === 'working'",
        T,
    );
    assert_eq!(
        b.eval("document.querySelector('#count-working').textContent"),
        json!("1")
    );
    std::fs::write(root.path().join("release"), "").unwrap();
    b.wait_for(&format!("{} === 'completed'", row_status(gid)), T);
    b.wait_for(
        "document.querySelector('#count-completed').textContent === '1'",
        T,
    );
    assert_eq!(b.eval("window.__noReload"), json!(42), "no reload happened");
    assert_eq!(
        b.eval(&format!(
            "document.querySelector('tr[data-id=\"{gid}\"] a').href"
        )),
        json!(format!("https://git.example/pulls/{gid}")),
        "the PR link is shown"
    );

    // A dead task is retried with the button.
    let broken = hub.submit(
        json!({ "title": "broken: migrate the schema", "needed_capabilities": ["python"] }),
    );
    let bid = broken["id"].as_str().unwrap();
    hub.wait_status(bid, "dead", T);
    b.wait_for(
        &format!("document.querySelector('#dead li[data-id=\"{bid}\"]')"),
        T,
    );
    b.wait_for(
        "document.querySelector('#count-dead').textContent === '1'",
        T,
    );
    std::fs::write(root.path().join("fixed"), "").unwrap();
    b.eval(&format!("document.querySelector('#dead li[data-id=\"{bid}\"] button[data-action=\"retry\"]').click(); true"));
    b.wait_for(&format!("{} === 'completed'", row_status(bid)), T);
    b.wait_for(
        &format!("!document.querySelector('#dead li[data-id=\"{bid}\"]')"),
        T,
    );
    let t = hub.task(bid);
    assert_eq!(t["status"], "completed");
    assert!(
        events(&t).contains(&"revived".to_string()),
        "{:?}",
        events(&t)
    );

    // Its history on click.
    b.eval(&format!(
        "document.querySelector('tr[data-id=\"{bid}\"]').click(); true"
    ));
    b.wait_for(&format!("document.querySelector('#task-detail').dataset.id === '{bid}' && !document.querySelector('#task-detail').hidden"), T);
    b.wait_for("[...document.querySelectorAll('#detail-history tr[data-event]')].map(r => r.dataset.event).join(',').includes('dead,revived')", T);
    let shot = screenshot_dir();
    b.screenshot(&shot.join("dashboard-task.png"));
    b.eval("document.querySelector('#detail-close').click(); true");

    // Something in every column for the picture: queued work nobody can do,
    // work in flight, more done.
    hub.submit(json!({ "title": "train the ranking model", "needed_capabilities": ["gpu"], "priority": "high" }));
    hub.submit(
        json!({ "title": "gate: refactor the session store", "needed_capabilities": ["rust"] }),
    );
    std::fs::remove_file(root.path().join("release")).unwrap();
    let more = hub
        .submit(json!({ "title": "gate: bump dependencies", "needed_capabilities": ["python"] }));
    hub.wait_status(more["id"].as_str().unwrap(), "working", T);
    b.wait_for(
        "document.querySelector('#count-queued').textContent === '1'",
        T,
    );
    b.wait_for(
        "document.querySelector('#count-working').textContent === '2'",
        T,
    );
    b.wait_for(
        "document.querySelector('#tile-throughput').textContent === '2'",
        T,
    );
    b.wait_for(
        "document.querySelector('#tile-latency').textContent.includes('ms')",
        T,
    );
    b.screenshot(&shot.join("dashboard.png"));

    // A narrow window: no sideways scrolling of the page.
    b.viewport(420, 900);
    // The page sees the new width, and a whole frame has been rendered at
    // it (the second animation-frame callback runs after the frame the
    // first one preceded). Reading scrollWidth below lays out anyway.
    b.wait_for("window.innerWidth === 420", T);
    b.wait_for(
        "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(window.innerWidth === 420))))",
        T,
    );
    assert_eq!(
        b.eval("document.documentElement.scrollWidth <= window.innerWidth"),
        json!(true),
        "fits a narrow window"
    );
    b.screenshot(&shot.join("dashboard-narrow.png"));
    b.viewport(1400, 1000);

    // A viewer sees everything and cannot press the buttons.
    b.eval("document.querySelector('#sign-out').click(); true");
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    sign_in(&mut b, "viewer-token-0123456789");
    let dead2 =
        hub.submit(json!({ "title": "broken: but fixed", "needed_capabilities": ["nobody"] }));
    hub.ok(
        "POST",
        &format!("/api/tasks/{}/cancel", dead2["id"].as_str().unwrap()),
        None,
    );
    b.wait_for(
        &format!(
            "{} === 'cancelled'",
            row_status(dead2["id"].as_str().unwrap())
        ),
        T,
    );
    b.eval(&format!(
        "document.querySelector('tr[data-id=\"{}\"]').click(); true",
        dead2["id"].as_str().unwrap()
    ));
    b.wait_for(
        "document.querySelector('#detail-actions button[data-action=\"retry\"]')",
        T,
    );
    assert_eq!(
        b.eval("document.querySelector('#detail-actions button[data-action=\"retry\"]').disabled"),
        json!(true)
    );
    eprintln!("dashboard screenshots in {}", shot.display());
}

#[test]
fn a_thousand_quick_tasks_while_the_dashboard_stays_live() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let quick = r#"echo '{"summary":"ok"}' > "$AGENTCOM_RESULT_FILE""#;
    let _s: Vec<Sidecar> = (1..=4)
        .map(|i| Sidecar::start(root.path(), &hub, &format!("q{i}"), &[], quick, ""))
        .collect();
    for i in 1..=4 {
        hub.wait_agent(&format!("q{i}"), "idle", T);
    }
    let mut b = Browser::launch(root.path(), 1400, 1000);
    b.goto(&format!("{}/dashboard", hub.url));
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    sign_in(&mut b, &hub.token);

    // An independent stream reader counts what the hub sends.
    let received = Arc::new(AtomicU64::new(0));
    let last_seen = Arc::new(AtomicU64::new(0));
    let first_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let last_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let client = SseClient::connect(&hub, None);
        let (received, last_seen, first_at, last_at, stop) = (
            received.clone(),
            last_seen.clone(),
            first_at.clone(),
            last_at.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            for e in client {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                first_at.lock().unwrap().get_or_insert(now);
                *last_at.lock().unwrap() = Some(now);
                received.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = e.id {
                    last_seen.store(id, Ordering::Relaxed);
                }
            }
        });
    }

    let started = Instant::now();
    hub.submit_concurrently(4, 250, "quick");
    wait_until(Duration::from_secs(300), "1,000 tasks to complete", || {
        (hub.state()["tasks"]["completed"] == 1000).then_some(())
    });
    let all_done = started.elapsed();
    // Every event the hub published, seen by the stream reader and the page.
    let final_id = hub.state()["events"]["next_id"].as_u64().unwrap() - 1;
    wait_until(T, "the stream reader to see the last event", || {
        (last_seen.load(Ordering::Relaxed) >= final_id).then_some(())
    });
    b.wait_for(
        &format!("Number(document.body.dataset.lastEventId) >= {final_id}"),
        T,
    );
    b.wait_for(
        "document.querySelector('#count-completed').textContent === '1000'",
        T,
    );
    assert_eq!(
        b.eval("document.querySelector('#live-status').classList.contains('on')"),
        json!(true)
    );
    stop.store(true, Ordering::Relaxed);

    let n = received.load(Ordering::Relaxed);
    let span = last_at.lock().unwrap().unwrap() - first_at.lock().unwrap().unwrap();
    let rate = n as f64 / span.as_secs_f64();
    eprintln!(
        "dashboard load: 1,000 quick tasks on 4 sidecars completed in {:.1} s; the event stream carried {n} events in {:.1} s \
         ({rate:.0} events/s); the dashboard caught up to event {final_id} and showed 1000 completed without a reload",
        all_done.as_secs_f64(),
        span.as_secs_f64()
    );
    // Per task: created, assigned, accepted, completed; and its agent's
    // move to assigned and to working (an agent that completes while a
    // task waits goes straight on to it, not through idle: decision 0017).
    assert!(n >= 6000, "six events per task at least: {n}");
    b.screenshot(&screenshot_dir().join("dashboard-1000.png"));
}

#[test]
fn alerts_name_offline_agents_unaccepted_tasks_and_old_queued_work() {
    use agentcom_tests::raw::RawSidecar;
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    hub.add_agent("ghost", &[]); // never connects
    let token = hub.add_agent("inert", &[]);
    let mut inert = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    inert.hello("inert");
    let stuck = hub.submit(json!({ "title": "nobody accepts this" }));
    inert
        .recv_type("assign", T)
        .expect("assigned, never accepted");
    let gpu = hub.submit(json!({ "title": "needs a GPU", "needed_capabilities": ["gpu"] }));

    let mut b = Browser::launch(root.path(), 1400, 1000);
    // Thresholds shortened through the URL (defaults: 120 s, 10 s, 60 s).
    b.goto(&format!(
        "{}/dashboard?offline_alert_s=1&unaccepted_alert_s=1&oldest_queued_alert_s=1",
        hub.url
    ));
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    sign_in(&mut b, &hub.token);
    let text = |kind: &str| {
        format!("document.querySelector('#alerts [data-kind=\"{kind}\"]')?.textContent")
    };
    let offline = b.wait_for(&text("offline"), T);
    assert!(offline.as_str().unwrap().contains("ghost"), "{offline}");
    let unaccepted = b.wait_for(&text("unaccepted"), T);
    assert!(
        unaccepted.as_str().unwrap().contains("nobody accepts this")
            && unaccepted.as_str().unwrap().contains("inert"),
        "{unaccepted}"
    );
    let oldest = b.wait_for(&text("oldest-queued"), T);
    assert!(oldest.as_str().unwrap().contains("1 queued"), "{oldest}");
    // The task's page says why it waits.
    let gid = gpu["id"].as_str().unwrap();
    b.eval(&format!(
        "document.querySelector('tr[data-id=\"{gid}\"]').click(); true"
    ));
    let why = b.wait_for(
        "document.querySelector('[data-field=\"why\"]')?.textContent",
        T,
    );
    assert!(
        why.as_str()
            .unwrap()
            .contains("No agent has capability gpu."),
        "{why}"
    );
    b.eval("document.querySelector('#detail-close').click(); true");
    // Once it is accepted, that alert goes away.
    inert.send(json!({ "type": "accept", "task_id": stuck["id"], "generation": 1 }));
    b.wait_for(
        &format!("!{}", text("unaccepted").trim_end_matches("?.textContent")),
        T,
    );
}

/// A bare remote `remote.git` under `r` with one commit on main, and
/// `work-<agent>`, the agent's clone of it (with a git identity).
fn remote_and_clone(r: &Path, agent: &str) -> PathBuf {
    sh(r, "git init -q --bare -b main remote.git && git clone -q remote.git seed 2>/dev/null && cd seed && git config user.email t@t && git config user.name t && echo 1 > f && git add f && git commit -qm one && git push -q origin main");
    sh(r, &format!("git clone -q remote.git work-{agent} && cd work-{agent} && git config user.email {agent}@t && git config user.name {agent}"));
    r.join("remote.git")
}

fn change_of(hub: &Hub, id: &str) -> Value {
    hub.ok("GET", &format!("/api/changes/{id}"), None)
}

fn wait_change(hub: &Hub, id: &str, status: &str) -> Value {
    wait_until(T, &format!("change {id} to be {status}"), || {
        let c = change_of(hub, id);
        (c["status"] == status).then_some(c)
    })
}

fn card(id: &str) -> String {
    format!("document.querySelector('.change[data-id=\"{id}\"]')")
}

/// The merge pipeline on the page: a real hub guards a bare repository
/// whose gate escalates anything under `deploy/`; a real sidecar's runner
/// commits there, so two tasks open two escalated changes. A viewer sees
/// them and cannot decide; the admin approves one (it merges into the
/// remote's main, its task completes) and rejects the other with a reason
/// (the change is rejected, its task dead).
#[test]
fn the_dashboard_shows_changes_and_repository_health_and_approves_and_rejects() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let remote = remote_and_clone(r, "builder");
    let toml = format!(
        r#"[[repos]]
name = "app"
url = {:?}
main_branch = "main"
poll_s = 1
check_command = ["sh", "-c", "echo checking $(ls | wc -l) files; test -f f"]

[repos.gate]
deny_paths = ["deploy/**"]
"#,
        remote.display().to_string()
    );
    let viewer = "viewer-token-0123456789";
    let hub = Hub::start_with_config(r, &toml, &[("AGENTCOM_VIEWER_TOKEN", viewer)]);
    // Two files, four lines, one of them where the gate wants a person.
    let runner = r#"set -e
mkdir -p deploy src
printf 'a\nb\nc\n' > "deploy/$AGENTCOM_TASK_ID.conf"
echo 'fn main() {}' > "src/$AGENTCOM_TASK_ID.rs"
git add -A && git commit -qm "work of $AGENTCOM_TASK_ID"
echo '{"summary":"configured it"}' > "$AGENTCOM_RESULT_FILE""#;
    let git = format!(
        "[git]\nrepo = \"app\"\nrepo_dir = {:?}\nremote = \"origin\"\nmain_branch = \"main\"\n",
        r.join("work-builder").display().to_string()
    );
    let _s = Sidecar::start(r, &hub, "builder", &[], runner, &git);
    let a = hub.submit(json!({ "title": "configure the proxy", "repo": "app" }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = hub.submit(json!({ "title": "open the firewall", "repo": "app" }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    hub.wait_status(&a, "in_review", T);
    hub.wait_status(&b, "in_review", T);
    let escalated = |task: &str| {
        wait_until(T, &format!("the change of {task} to be escalated"), || {
            hub.ok("GET", "/api/changes?status=escalated", None)["changes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["task_id"] == task)
                .cloned()
        })
    };
    let ca = escalated(&a);
    let cb = escalated(&b);
    let (ca_id, cb_id) = (ca["id"].as_str().unwrap(), cb["id"].as_str().unwrap());

    // A viewer sees the changes and cannot decide.
    let mut br = Browser::launch(r, 1400, 1000);
    br.goto(&format!("{}/dashboard", hub.url));
    br.wait_for("!document.querySelector('#sign-in').hidden", T);
    sign_in(&mut br, viewer);
    br.wait_for(
        &format!("{}?.dataset.status === 'escalated'", card(ca_id)),
        T,
    );
    assert_eq!(
        br.eval(&format!(
            "{}.querySelector('button[data-action=\"approve\"]').disabled",
            card(ca_id)
        )),
        json!(true),
        "a viewer cannot approve"
    );
    assert_eq!(
        br.eval(&format!(
            "{}.querySelector('button[data-action=\"reject\"]').disabled",
            card(ca_id)
        )),
        json!(true),
        "a viewer cannot reject"
    );
    br.eval("document.querySelector('#sign-out').click(); true");
    br.wait_for("!document.querySelector('#sign-in').hidden", T);
    sign_in(&mut br, &hub.token);

    // What the panel shows of a change: files, lines, the gate's reasons.
    br.wait_for(
        &format!("{}?.dataset.status === 'escalated'", card(cb_id)),
        T,
    );
    let shown = br.eval(&format!(
        "(c => ({{ files: c.querySelector('[data-field=\"files\"]').dataset.count, \
                   list: c.querySelector('[data-field=\"files\"]').textContent, \
                   lines: c.querySelector('[data-field=\"lines\"]').textContent, \
                   decision: c.querySelector('[data-field=\"gate\"]').dataset.decision, \
                   gate: c.querySelector('[data-field=\"gate\"]').textContent, \
                   branch: c.querySelector('[data-field=\"branch\"]').textContent, \
                   title: c.querySelector('.what').textContent }}))({})",
        card(ca_id)
    ));
    assert_eq!(shown["files"], "2", "{shown}");
    assert!(
        shown["list"]
            .as_str()
            .unwrap()
            .contains(&format!("deploy/{a}.conf")),
        "{shown}"
    );
    assert!(
        shown["list"]
            .as_str()
            .unwrap()
            .contains(&format!("src/{a}.rs")),
        "{shown}"
    );
    assert_eq!(shown["lines"], "+4 −0", "{shown}");
    assert_eq!(shown["decision"], "escalate", "{shown}");
    assert!(
        shown["gate"]
            .as_str()
            .unwrap()
            .contains(&format!("deploy/{a}.conf matches deny_paths deploy/**")),
        "{shown}"
    );
    assert_eq!(shown["branch"], format!("builder/{a}").as_str(), "{shown}");
    assert_eq!(shown["title"], "configure the proxy", "{shown}");
    // The pipeline counts them; the repository is green with an empty queue.
    br.wait_for(
        "document.querySelector('#count-in_review').textContent === '2'",
        T,
    );
    let main = sh(&remote, "git rev-parse refs/heads/main");
    br.wait_for(
        "document.querySelector('.repo[data-repo=\"app\"]')?.dataset.health === 'green'",
        T,
    );
    let repo = br.eval("document.querySelector('.repo[data-repo=\"app\"]').textContent");
    assert!(
        repo.as_str()
            .unwrap()
            .contains(&format!("main @ {}", &main[..10])),
        "{repo}"
    );
    assert!(
        repo.as_str().unwrap().contains("merge queue: empty"),
        "{repo}"
    );
    // Each escalation is an alert.
    for id in [ca_id, cb_id] {
        let alert = br.wait_for(
            &format!("document.querySelector('#alerts [data-kind=\"change_escalated\"][data-subject=\"{id}\"]')?.textContent"),
            T,
        );
        assert!(
            alert.as_str().unwrap().contains("waits for a person"),
            "{alert}"
        );
    }
    let shot = screenshot_dir();
    br.screenshot(&shot.join("dashboard-changes.png"));

    // Approve one: it merges into the remote's main, its task completes.
    br.eval(&format!(
        "{}.querySelector('button[data-action=\"approve\"]').click(); true",
        card(ca_id)
    ));
    let merged = wait_change(&hub, ca_id, "merged");
    hub.wait_status(&a, "completed", T);
    let head = ca["head"].as_str().unwrap();
    sh(
        &remote,
        &format!("git merge-base --is-ancestor {head} refs/heads/main"),
    );
    let merged_sha = merged["merged_sha"].as_str().unwrap();
    assert_eq!(sh(&remote, "git rev-parse refs/heads/main"), merged_sha);
    br.wait_for(&format!("{}?.dataset.status === 'merged'", card(ca_id)), T);
    br.wait_for(
        &format!(
            "{}.querySelector('[data-field=\"merged-sha\"]')?.textContent === 'merged as {}'",
            card(ca_id),
            &merged_sha[..10]
        ),
        T,
    );
    br.wait_for(
        "document.querySelector('#count-merged').textContent === '1'",
        T,
    );
    br.wait_for(
        "document.querySelector('#count-in_review').textContent === '1'",
        T,
    );
    br.wait_for(&format!("{} === 'completed'", row_status(&a)), T);
    // The check that ran on the merge result, its log folded away.
    let check = br.eval(&format!(
        "(d => ({{ code: d.dataset.exitCode, open: d.open, summary: d.querySelector('summary').textContent, log: d.querySelector('pre').textContent }}))({}.querySelector('[data-field=\"check\"]'))",
        card(ca_id)
    ));
    assert_eq!(check["code"], "0", "{check}");
    assert_eq!(check["open"], false, "{check}");
    assert!(
        check["summary"]
            .as_str()
            .unwrap()
            .starts_with("check: exit 0 in "),
        "{check}"
    );
    assert!(
        check["log"].as_str().unwrap().contains("checking"),
        "{check}"
    );
    br.wait_for(
        &format!("!document.querySelector('#alerts [data-subject=\"{ca_id}\"]')"),
        T,
    );
    // The task's detail names its change.
    br.eval(&format!(
        "document.querySelector('tr[data-id=\"{a}\"]').click(); true"
    ));
    br.wait_for(
        &format!(
            "document.querySelector('#detail-fields [data-change=\"{ca_id}\"]')?.textContent === '{ca_id} (merged)'"
        ),
        T,
    );
    br.eval("document.querySelector('#detail-close').click(); true");
    // Its history, on demand.
    br.eval(&format!(
        "{}.querySelector('[data-field=\"history\"] summary').click(); true",
        card(ca_id)
    ));
    let seen = br.wait_for(
        &format!(
            "(rows => rows.length && rows.map(r => r.dataset.event).join(','))([...{}.querySelectorAll('[data-field=\"history\"] tr[data-event]')])",
            card(ca_id)
        ),
        T,
    );
    let seen = seen.as_str().unwrap();
    assert!(
        seen.starts_with("opened") && seen.contains("approved") && seen.ends_with("merged"),
        "{seen}"
    );

    // Reject the other, with a reason, not queued again: its task is dead.
    br.eval(&format!(
        "{}.querySelector('button[data-action=\"reject\"]').click(); true",
        card(cb_id)
    ));
    br.wait_for(
        &format!(
            "{}.querySelector('.reject-form .reject-reason')",
            card(cb_id)
        ),
        T,
    );
    assert_eq!(
        br.eval(&format!(
            "{}.querySelector('.reject-form .reject-requeue').checked",
            card(cb_id)
        )),
        json!(false),
        "requeue is off unless asked for"
    );
    // An empty reason is not sent.
    br.eval(&format!(
        "{}.querySelector('.reject-form button[data-action=\"confirm-reject\"]').click(); true",
        card(cb_id)
    ));
    br.wait_for(
        "document.activeElement?.classList.contains('reject-reason')",
        T,
    );
    assert_eq!(change_of(&hub, cb_id)["status"], "escalated");
    let reason = "no open firewall <b>without</b> a ticket";
    br.eval(&format!(
        "(i => {{ i.value = {reason:?}; i.dispatchEvent(new Event('input')); }})({}.querySelector('.reject-form .reject-reason')); true",
        card(cb_id)
    ));
    br.eval(&format!(
        "{}.querySelector('.reject-form button[data-action=\"confirm-reject\"]').click(); true",
        card(cb_id)
    ));
    let rejected = wait_change(&hub, cb_id, "rejected");
    let said = rejected["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["detail"].as_str().unwrap_or_default().contains(reason));
    assert!(said, "the reason is in the change's history: {rejected}");
    let task_b = hub.wait_status(&b, "dead", T);
    assert_eq!(task_b["last_error"], reason, "{task_b}");
    assert!(
        events(&task_b).ends_with(&["rejected".to_string()]),
        "{:?}",
        events(&task_b)
    );
    br.wait_for(
        &format!("{}?.dataset.status === 'rejected'", card(cb_id)),
        T,
    );
    // The reason is on the card, as text.
    br.wait_for(
        &format!(
            "{}.querySelector('[data-field=\"note\"]')?.textContent === 'rejected: ' + {reason:?}",
            card(cb_id)
        ),
        T,
    );
    assert_eq!(
        br.eval(&format!("!!{}.querySelector('b')", card(cb_id))),
        json!(false)
    );
    br.wait_for(
        &format!(
            "!{}.querySelector('.reject-form, button[data-action]')",
            card(cb_id)
        ),
        T,
    );
    br.wait_for(
        &format!("document.querySelector('#dead li[data-id=\"{b}\"]')"),
        T,
    );
    br.wait_for(
        "!document.querySelector('#alerts [data-kind=\"change_escalated\"]')",
        T,
    );
    br.wait_for(
        "document.querySelector('#count-in_review').textContent === '0'",
        T,
    );
    // The branch never reached main.
    let b_head = cb["head"].as_str().unwrap();
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&remote)
        .args(["merge-base", "--is-ancestor", b_head, "refs/heads/main"])
        .status()
        .unwrap();
    assert!(!out.success(), "the rejected change is not on main");

    // Someone pushes a main that fails its check past the hub: the
    // repository turns red, its merges pause, the alert says so; a fix
    // turns it green again and the alert goes away.
    let repo_card = "document.querySelector('.repo[data-repo=\"app\"]')";
    sh(r, "cd seed && git pull -q origin main && git rm -q f && git commit -qm 'drop f' && git push -q origin main");
    br.wait_for(&format!("{repo_card}.dataset.health === 'red'"), T);
    assert_eq!(
        br.eval(&format!("{repo_card}.dataset.paused")),
        json!("true")
    );
    assert_eq!(
        br.eval(&format!(
            "{repo_card}.querySelector('[data-field=\"merges\"]').textContent"
        )),
        json!("merges paused: main fails its check")
    );
    let red = br.wait_for(
        "document.querySelector('#alerts .alert.bad[data-kind=\"main_red\"][data-subject=\"app\"]')?.textContent",
        T,
    );
    assert!(red.as_str().unwrap().contains("main of app"), "{red}");
    br.eval("window.scrollTo(0, 0); true");
    br.screenshot(&shot.join("dashboard-changes-decided.png"));
    sh(
        r,
        "cd seed && echo 1 > f && git add f && git commit -qm 'f again' && git push -q origin main",
    );
    br.wait_for(&format!("{repo_card}.dataset.health === 'green'"), T);
    br.wait_for(
        "!document.querySelector('#alerts [data-kind=\"main_red\"]')",
        T,
    );

    // The panels fit a narrow window (a history unfolded).
    br.viewport(420, 900);
    br.wait_for(
        "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(window.innerWidth === 420))))",
        T,
    );
    assert_eq!(
        br.eval("document.documentElement.scrollWidth <= window.innerWidth"),
        json!(true),
        "fits a narrow window"
    );
    br.screenshot(&shot.join("dashboard-changes-narrow.png"));
}

#[test]
fn the_dashboard_shows_blame_the_dossier_candidates_and_a_stalled_agent() {
    use agentcom_tests::raw::RawSidecar;
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[
            ("AGENTCOM_TIMEOUTS__STALL_S", "1"),
            ("AGENTCOM_TIMEOUTS__STALL_KILL_S", "600"),
            ("AGENTCOM_RETRY__BACKOFF_S", "0"),
        ],
    );
    let a_token = hub.add_agent("ash", &[]);
    let mut ash = RawSidecar::connect(&hub.ws_url(), &a_token).unwrap();
    ash.hello("ash");
    let task = hub.submit(json!({ "title": "flaky thing" }));
    let tid = task["id"].as_str().unwrap().to_string();
    // ash fails generation 1 (its own fault, for now) and, later, sends
    // a result for it with a branch: kept as a candidate.
    let g1 = ash.recv_type("assign", T).expect("ash gets it");
    assert_eq!(g1["generation"], 1);
    ash.send(json!({ "type": "accept", "task_id": tid, "generation": 1 }));
    ash.send(json!({ "type": "fail", "task_id": tid, "generation": 1,
        "error": "tests failed", "retryable": true, "log_tail": "FAIL: test_login <b>x</b>" }));
    ash.recv_type("ack", T).expect("acked");
    // Generation 2 goes to ash again; it works on it, silently.
    let g2 = ash.recv_type("assign", T).expect("ash gets it again");
    assert_eq!(g2["generation"], 2);
    assert_eq!(
        g2["task"]["dossier"]["attempts"][0]["blame"], "agent",
        "{g2}"
    );
    ash.send(json!({ "type": "accept", "task_id": tid, "generation": 2 }));
    ash.send(json!({ "type": "complete", "task_id": tid, "generation": 1,
        "result": { "summary": "late but done", "branch": "ash/flaky", "head": "0123456789abcdef" } }));
    let activity = json!({ "runner_alive": true, "output_bytes": 10 });
    ash.send(json!({ "type": "heartbeat", "state": "working", "task_id": tid, "generation": 2, "activity": activity }));

    let mut b = Browser::launch(root.path(), 1400, 1000);
    b.goto(&format!("{}/dashboard", hub.url));
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    sign_in(&mut b, &hub.token);
    // The same activity for stall_s: the agent shows stalled, with an alert.
    b.wait_for(
        "document.querySelector('[data-agent=\"ash\"]')?.dataset.state === 'stalled'",
        T,
    );
    ash.send(json!({ "type": "heartbeat", "state": "working", "task_id": tid, "generation": 2, "activity": activity }));
    b.wait_for(
        "document.querySelector('#alerts [data-kind=\"stalled\"]')?.textContent.includes('ash')",
        T,
    );
    // The task's page: blame in the history, the dossier, the candidate.
    b.eval(&format!(
        "document.querySelector('tr[data-id=\"{tid}\"]').click(); true"
    ));
    b.wait_for("!document.querySelector('#task-detail').hidden && !!document.querySelector('#detail-history tr[data-blame=\"agent\"]')", T);
    let dossier = b.wait_for(
        "document.querySelector('[data-field=\"dossier\"]')?.textContent",
        T,
    );
    let dossier = dossier.as_str().unwrap();
    assert!(
        dossier.contains("#1 ash: failed")
            && dossier.contains("blame: agent")
            && dossier.contains("tests failed"),
        "{dossier}"
    );
    assert_eq!(
        b.eval("document.querySelector('[data-field=\"dossier\"] pre').textContent"),
        json!("FAIL: test_login <b>x</b>"),
        "the log tail is text, not markup"
    );
    let candidates = b.wait_for(
        "document.querySelector('[data-field=\"candidates\"]')?.textContent",
        T,
    );
    assert!(
        candidates
            .as_str()
            .unwrap()
            .contains("#1 ash: branch ash/flaky at 0123456789")
            && candidates.as_str().unwrap().contains("late but done"),
        "{candidates}"
    );
    b.screenshot(&screenshot_dir().join("dashboard-attribution.png"));
    // Activity again: working.
    ash.send(
        json!({ "type": "heartbeat", "state": "working", "task_id": tid, "generation": 2,
        "activity": { "runner_alive": true, "output_bytes": 99 } }),
    );
    b.wait_for(
        "document.querySelector('[data-agent=\"ash\"]')?.dataset.state === 'working'",
        T,
    );
}

#[test]
fn a_sign_in_link_signs_in_and_leaves_no_token_in_the_address() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let mut b = Browser::launch(root.path(), 1000, 800);
    b.goto(&format!("{}/dashboard#token={}", hub.url, hub.token));
    b.wait_for("!document.querySelector('#app').hidden && document.querySelector('#live-status').classList.contains('on')", T);
    assert_eq!(
        b.eval("document.querySelector('#role').textContent"),
        json!("admin")
    );
    assert_eq!(
        b.eval("location.href"),
        json!(format!("{}/dashboard", hub.url)),
        "the token is gone from the address bar"
    );
    b.eval("document.querySelector('#sign-out').click(); true");
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    // A link through `/` (307 to the dashboard, the fragment kept by the
    // browser) with a wrong token: the form says so, the address is clean.
    b.goto(&format!("{}/#token=acm_admin_wrong", hub.url));
    b.wait_for("!document.querySelector('#sign-in-error').hidden", T);
    assert_eq!(
        b.eval("location.href"),
        json!(format!("{}/dashboard", hub.url))
    );
    assert!(!hub.log().contains(&hub.token), "no token in the hub's log");
}
