//! The first five minutes, against the real binary: `agentcom-hub demo`
//! (a hub, three in-process sidecars and an example project; example
//! tasks flowing through review to a merged main; Ctrl-C stops all of it
//! and leaves no process behind; a second start begins afresh; a
//! directory it did not make, or a busy port, is refused with nothing
//! touched), and the admin CLI speaking to people (a task's history as a
//! table, the agent table, `agent add --out` writing a private sidecar
//! config only once the hub created the agent, never over a file).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::{bin, free_port, sh, Proc};
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// A running `agentcom-hub demo`, its output in `<root>/demo-<port>.log`.
struct Demo {
    dir: PathBuf,
    url: String,
    token: String,
    proc: Proc,
    started: Instant,
    http: ureq::Agent,
}

impl Demo {
    /// Start the demo with its data in `dir`; wait until it printed its
    /// banner (so the agents are connected and the tasks submitted).
    fn start(root: &Path, dir: &Path) -> Demo {
        let port = free_port();
        let mut cmd = Command::new(bin("agentcom-hub"));
        cmd.args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("RUST_LOG");
        let started = Instant::now();
        let mut proc = Proc::spawn(cmd, &root.join(format!("demo-{port}.log")));
        wait_until(T, "the demo's banner", || {
            assert!(proc.running(), "the demo exited:\n{}", proc.log_text());
            proc.log_text()
                .contains("Ctrl-C stops all of it.")
                .then_some(())
        });
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .expect("the hub's admin token in the demo dir")
            .trim()
            .to_string();
        Demo {
            dir: dir.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
            token,
            proc,
            started,
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
        }
    }

    fn get(&self, path: &str) -> Value {
        let mut r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status(), 200, "GET {path}");
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    }

    fn output(&self) -> String {
        self.proc.log_text()
    }

    /// The example project's bare remote.
    fn remote(&self) -> PathBuf {
        self.dir.join("hello.git")
    }

    /// Wait until a change merged and its task completed; the change.
    fn wait_first_merge(&self, timeout: Duration) -> Value {
        wait_until(timeout, "a merged change of a completed task", || {
            let merged = self.get("/api/changes?status=merged");
            merged["changes"].as_array()?.iter().find_map(|c| {
                let task = self.get(&format!("/api/tasks/{}", c["task_id"].as_str()?));
                (task["status"] == "completed").then(|| c.clone())
            })
        })
    }

    /// SIGINT, as Ctrl-C; the exit code.
    fn interrupt(&mut self) -> Option<i32> {
        self.signal(Signal::SIGINT)
    }

    /// Send `signal`; the exit code.
    fn signal(&mut self, signal: Signal) -> Option<i32> {
        let child = self.proc.child.as_mut().expect("running");
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = wait_until(T, "the demo to exit after the signal", || {
            child.try_wait().unwrap()
        });
        self.proc.child = None;
        status.code()
    }
}

/// Processes (pid, command line) whose command line names `dir` or that
/// run in it.
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let in_dir = std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(dir));
        if in_dir || cmdline.contains(&*dir.to_string_lossy()) {
            out.push((pid, cmdline));
        }
    }
    out
}

#[test]
fn the_demo_flows_tasks_through_review_to_main_and_ctrl_c_stops_all_of_it() {
    let root = tempfile::tempdir().unwrap();
    // An empty directory is the demo's to take.
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let mut demo = Demo::start(root.path(), &dir);
    let banner = demo.output();
    assert!(
        banner.contains(&format!("{}/dashboard#token={}\n", demo.url, demo.token)),
        "the sign-in link: {banner}"
    );
    assert!(
        banner.contains(&format!("  Data       {}\n", dir.display())),
        "{banner}"
    );

    let change = demo.wait_first_merge(Duration::from_secs(90));
    eprintln!(
        "the first change merged {:.1}s after `agentcom-hub demo` started",
        demo.started.elapsed().as_secs_f64()
    );
    // Main of the remote moved to the merge, which holds the greeting.
    let main = sh(&demo.remote(), "git rev-parse refs/heads/main");
    let merged = change["merged_sha"].as_str().unwrap();
    assert_eq!(
        sh(
            &demo.remote(),
            &format!("git merge-base --is-ancestor {merged} main && echo yes")
        ),
        "yes",
        "main ({main}) holds the merge {merged}"
    );
    assert!(
        sh(&demo.remote(), "git rev-list --count main")
            .parse::<u32>()
            .unwrap()
            >= 3
    );
    let file = change["files"][0].as_str().unwrap();
    assert!(file.starts_with("greetings/"), "{change}");
    let line = sh(&demo.remote(), &format!("git show {merged}:{file}"));
    assert!(!line.is_empty() && !line.contains('\n'), "{file}: {line:?}");
    // Reviewed by another agent, and the check passed on the merge.
    let change = demo.get(&format!("/api/changes/{}", change["id"].as_str().unwrap()));
    assert_eq!(change["gate"]["decision"], "review", "{change}");
    assert_eq!(change["review"]["verdict"], "approve", "{change}");
    assert_ne!(change["review"]["agent_id"], change["agent_id"], "{change}");
    assert_eq!(change["check"]["exit_code"], 0, "{change}");
    let task = demo.get(&format!(
        "/api/tasks/{}",
        change["task_id"].as_str().unwrap()
    ));
    let events: Vec<&str> = task["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for e in ["created", "assigned", "accepted", "in_review", "completed"] {
        assert!(events.contains(&e), "{e} in {events:?}");
    }
    // Three agents, each with its readable sidecar config (0600: a token).
    let agents = demo.get("/api/agents");
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{agents}");
    for id in ids {
        let config = dir.join("agents").join(id).join("sidecar.toml");
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", config.display());
        assert!(std::fs::read_to_string(&config).unwrap().contains("[git]"));
    }

    // Ctrl-C while a runner works: everything stops, exit 0, nothing left.
    wait_until(Duration::from_secs(60), "a runner at work", || {
        processes_in(&dir)
            .iter()
            .any(|(_, cmd)| cmd.contains("runner.sh"))
            .then_some(())
    });
    assert_eq!(demo.interrupt(), Some(0), "{}", demo.output());
    assert!(demo
        .output()
        .contains("SIGINT: stopping the sidecars, then the hub."));
    let left = processes_in(&dir);
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn a_second_demo_on_the_same_dir_starts_afresh() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo");
    let mut first = Demo::start(root.path(), &dir);
    let first_token = first.token.clone();
    // SIGTERM stops it as cleanly as Ctrl-C.
    assert_eq!(first.signal(Signal::SIGTERM), Some(0), "{}", first.output());
    assert!(first
        .output()
        .contains("SIGTERM: stopping the sidecars, then the hub."));
    let left = processes_in(&dir);
    assert!(left.is_empty(), "left running: {left:?}");
    std::fs::write(dir.join("leftover"), "from the first run").unwrap();

    let mut second = Demo::start(root.path(), &dir);
    assert!(
        !dir.join("leftover").exists(),
        "the earlier demo was removed"
    );
    assert_ne!(second.token, first_token, "a new hub, a new admin token");
    let change = second.wait_first_merge(Duration::from_secs(90));
    // Only this run's tasks and this run's history on main.
    let tasks = second.get("/api/tasks?limit=1000");
    let mut titles: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .filter(|t| !t.starts_with("Review: "))
        .collect();
    titles.sort();
    let work = titles.len();
    titles.dedup();
    assert_eq!(
        (work, titles.len()),
        (6, 6),
        "each example task once: {tasks}"
    );
    let roots = sh(&second.remote(), "git rev-list --max-parents=0 main");
    assert_eq!(roots.lines().count(), 1);
    assert!(
        sh(&second.remote(), "git rev-list main").contains(change["merged_sha"].as_str().unwrap())
    );
    assert_eq!(second.interrupt(), Some(0), "{}", second.output());
}

#[test]
fn the_demo_refuses_a_directory_it_did_not_make_and_a_busy_port() {
    let root = tempfile::tempdir().unwrap();
    let run = |dir: &Path, listen: &str| -> (bool, String) {
        let mut cmd = Command::new(bin("agentcom-hub"));
        cmd.args(["demo", "--listen", listen, "--data-dir"])
            .arg(dir);
        let log = root.path().join("refused.log");
        let _ = std::fs::remove_file(&log);
        let mut proc = Proc::spawn(cmd, &log);
        let child = proc.child.as_mut().unwrap();
        let status = wait_until(T, "the demo to refuse", || child.try_wait().unwrap());
        proc.child = None;
        (status.success(), proc.log_text())
    };

    let mine = root.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("precious.txt"), "keep me").unwrap();
    let (ok, out) = run(&mine, &format!("127.0.0.1:{}", free_port()));
    assert!(!ok, "{out}");
    assert!(
        out.contains("is not empty and was not made by `agentcom-hub demo`"),
        "{out}"
    );
    let names: Vec<String> = std::fs::read_dir(&mine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["precious.txt"], "nothing touched");
    assert_eq!(
        std::fs::read_to_string(mine.join("precious.txt")).unwrap(),
        "keep me"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fresh = root.path().join("fresh");
    let (ok, out) = run(&fresh, &busy.local_addr().unwrap().to_string());
    assert!(!ok, "{out}");
    assert!(out.contains("cannot listen on 127.0.0.1:"), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one clear line: {out}");
    assert!(!fresh.exists(), "nothing made");
}

/// The admin CLI against `hub`, whatever its outcome.
fn cli_output(hub: &Hub, args: &[&str]) -> Output {
    Command::new(bin("agentcom-hub"))
        .args(args)
        .args(["--hub", &hub.url, "--data-dir"])
        .arg(hub.dir.join("data"))
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn agent_ids(hub: &Hub) -> Vec<String> {
    hub.ok("GET", "/api/agents", None)["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// The words of each line, so a table's column widths do not matter.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn task_show_prints_the_history_as_a_table_and_json_on_request() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let _s = Sidecar::start(
        root.path(),
        &hub,
        "ada",
        &["code"],
        r#"echo '{"summary": "said hello"}' > "$AGENTCOM_RESULT_FILE""#,
        "",
    );
    let id = hub.submit(json!({"title": "Say hello", "needed_capabilities": ["code"]}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    hub.wait_status(&id, "completed", T);

    let shown = hub.cli(&["task", "show", &id]);
    assert!(
        shown.starts_with(&format!("Task {id}\n  Say hello\n")),
        "{shown}"
    );
    let table = rows(&shown);
    for want in [
        vec!["status", "completed", "since"],
        vec!["agent", "ada"],
        vec!["needs", "code"],
        vec!["result", "said", "hello"],
        vec!["History", "(UTC)"],
        vec!["TIME", "EVENT", "FROM", "→", "TO", "AGENT", "GEN", "DETAIL"],
    ] {
        assert!(
            table.iter().any(|r| r.starts_with(&words(&want))),
            "no line starting {want:?} in:\n{shown}"
        );
    }
    // Each transition is a row: time (date and time), event, from → to,
    // agent, generation.
    let history: Vec<&Vec<String>> = table
        .iter()
        .skip_while(|r| r.first().map(String::as_str) != Some("TIME"))
        .skip(1)
        .collect();
    let events: Vec<(&str, &str, &str, &str)> = history
        .iter()
        .map(|r| (r[2].as_str(), r[3].as_str(), r[5].as_str(), r[6].as_str()))
        .collect();
    assert_eq!(
        events[0],
        ("created", "-", "queued", "-"),
        "the first row: {shown}"
    );
    assert!(
        events.contains(&("accepted", "assigned", "working", "ada")),
        "{shown}"
    );
    assert_eq!(
        events.last(),
        Some(&("completed", "working", "completed", "ada")),
        "{shown}"
    );

    let json: Value = serde_json::from_str(&hub.cli(&["task", "show", &id, "--json"])).unwrap();
    assert_eq!(json["id"], id.as_str());
    assert_eq!(json["history"][0]["event"], "created");
    assert_eq!(json["status"], "completed");

    let list: Value = serde_json::from_str(&hub.cli(&["task", "list", "--json"])).unwrap();
    assert_eq!(list["tasks"][0]["id"], id.as_str());
    let list = hub.cli(&["task", "list"]);
    assert!(
        rows(&list)[1].starts_with(&[id.clone(), "completed".into(), "normal".into()]),
        "{list}"
    );

    let agents: Value = serde_json::from_str(&hub.cli(&["agent", "list", "--json"])).unwrap();
    assert_eq!(agents["agents"][0]["id"], "ada");
    let agents = hub.cli(&["agent", "list"]);
    let table = rows(&agents);
    assert_eq!(
        table[0],
        words(&[
            "AGENT",
            "STATE",
            "CONNECTED",
            "TASK",
            "HEARTBEAT",
            "FAILS",
            "CAPABILITIES",
            "NOTE"
        ]),
        "{agents}"
    );
    assert_eq!(table[1][..3], words(&["ada", "idle", "yes"]), "{agents}");
    assert!(
        table[1][4].ends_with('s') && table[1][5] == "ago",
        "the heartbeat's age: {agents}"
    );
}

#[test]
fn agent_add_out_writes_a_private_config_only_after_the_hub_created_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let dir = root.path();

    // An existing file is refused before the hub is asked.
    let existing = dir.join("existing.toml");
    std::fs::write(&existing, "mine\n").unwrap();
    let out = cli_output(
        &hub,
        &[
            "agent",
            "add",
            "ada",
            "--capabilities",
            "code",
            "--out",
            &path(&existing),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("already exists") && err.contains("the agent was not created"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "mine\n");
    assert!(agent_ids(&hub).is_empty(), "no agent was created");

    // So is a folder that is not there.
    let nowhere = dir.join("no-such-folder").join("ada.toml");
    let out = cli_output(&hub, &["agent", "add", "ada", "--out", &path(&nowhere)]);
    assert!(!out.status.success());
    assert!(agent_ids(&hub).is_empty(), "no agent was created");

    // A new file: written 0600 once the hub said 201, with the next step.
    let file = dir.join("ada.toml");
    let stdout = hub.cli(&[
        "agent",
        "add",
        "ada",
        "--capabilities",
        "code,review",
        "--out",
        &path(&file),
    ]);
    assert_eq!(agent_ids(&hub), ["ada"]);
    assert!(
        stdout.contains(&format!(
            "Next, on the agent's machine:\n  agentcom-sidecar run --config {}\n",
            path(&file)
        )),
        "{stdout}"
    );
    assert!(stdout.contains("Set runner.command"), "{stdout}");
    assert!(
        !stdout.contains("acm_agent_"),
        "the token is in the file only: {stdout}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    let config = std::fs::read_to_string(&file).unwrap();
    assert!(config.contains(&format!("hub_url = \"ws://127.0.0.1:{}/ws\"", hub.port)));
    assert!(
        config.contains("agent_id = \"ada\"\ntoken = \"acm_agent_"),
        "{config}"
    );
    assert!(
        config.contains("capabilities = [\"code\", \"review\"]"),
        "{config}"
    );
    assert!(
        !config.contains("\nstate_dir"),
        "left to the sidecar: {config}"
    );
    assert!(config.contains("# state_dir is not set"), "{config}");
    assert!(config.contains("# command = "), "{config}");

    // With --state-dir and --runner they are set.
    let file = dir.join("grace.toml");
    hub.cli(&[
        "agent",
        "add",
        "grace",
        "--state-dir",
        "/srv/agentcom/grace",
        "--runner",
        "/usr/local/bin/run-agent",
        "--out",
        &path(&file),
    ]);
    let config = std::fs::read_to_string(&file).unwrap();
    assert!(
        config.contains("\nstate_dir = \"/srv/agentcom/grace\"\n"),
        "{config}"
    );
    assert!(
        config.contains("\ncommand = [\"/usr/local/bin/run-agent\"]\n"),
        "{config}"
    );
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}
