//! The first five minutes, against the real binary: the admin CLI speaks
//! to people (a task's history as a table, the agent table, `agent add
//! --out` writing a private sidecar config only once the hub created the
//! agent, never over an existing file).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::bin;
use agentcom_tests::sidecar::Sidecar;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

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
