//! `agentcom-sidecar join` against a real hub: one command enrolls the
//! machine, writes its config, checks it, installs its service and prints
//! `ready` only once the hub's verification task came back; and it
//! refuses, naming the fix, before anything is enrolled or written.
//! Under pm2 (installed by scripts/test.sh into target/test-tools) the
//! joined sidecar is restarted for real after a `kill -9`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::{bin, Proc};
use agentcom_tests::sidecar::script;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

/// `agentcom-sidecar join` for agent `id` against `hub`, in `dir`, with
/// `extra` flags; HOME and the config dirs kept inside `dir`.
fn join(dir: &Path, hub: &Hub, id: &str, token: &str, extra: &[&str]) -> Output {
    let out = Command::new(bin("agentcom-sidecar"))
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("XDG_STATE_HOME", dir.join("xdg-state"))
        .env_remove("AGENTCOM_SIDECAR_CONFIG")
        .args([
            "join",
            "--hub",
            &hub.url,
            "--enroll-token",
            token,
            "--id",
            id,
        ])
        .args(extra)
        .output()
        .expect("agentcom-sidecar join");
    eprintln!(
        "join {id}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn enroll_token(hub: &Hub) -> String {
    std::fs::read_to_string(hub.dir.join("data").join("enroll.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// A runner that leaves a mark for each task it ran.
fn runner(dir: &Path) -> PathBuf {
    script(
        &dir.join("runner.sh"),
        &format!(
            r#"echo "$AGENTCOM_TASK_ID" >> {ran}
echo '{{"summary": "done"}}' > "$AGENTCOM_RESULT_FILE""#,
            ran = dir.join("ran").display()
        ),
    )
}

fn ran(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ran"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Submit a task needing `code` and wait until it completed.
fn a_task_completes(hub: &Hub, title: &str) -> Value {
    let t = hub.submit(json!({"title": title, "needed_capabilities": ["code"]}));
    hub.wait_status(
        t["id"].as_str().unwrap(),
        "completed",
        Duration::from_secs(30),
    )
}

#[test]
fn join_enrolls_verifies_and_the_agent_takes_work() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    let runner = runner(r);
    let out = join(
        r,
        &hub,
        "loash",
        &enroll_token(&hub),
        &[
            "--capabilities",
            "code",
            "--runner",
            &runner.display().to_string(),
            "--install",
            "none",
            "--config",
            "loash.toml",
            "--state-dir",
            "state",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    let ready = said
        .lines()
        .find(|l| l.starts_with("ready: agent loash is connected and verified"))
        .unwrap_or_else(|| panic!("no ready line:\n{said}"));
    // The verification came back through the hub, answered by the
    // self-test: the runner never ran for it.
    let v = hub.ok("GET", "/api/agents/loash/verification", None);
    assert_eq!(v["status"], "completed", "{v}");
    assert!(ready.contains(v["task_id"].as_str().unwrap()), "{ready}");
    let verify = hub.task(v["task_id"].as_str().unwrap());
    assert_eq!(verify["kind"], "verify");
    assert_eq!(verify["assigned_to"], "loash");
    assert!(ran(r).is_empty(), "the runner ran: {:?}", ran(r));
    // The config: private, with the token, the self-test's table printed.
    let config = r.join("loash.toml");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("hub_url = \"{}\"", hub.ws_url())),
        "{text}"
    );
    assert!(text.contains("token = \"acm_agent_"), "{text}");
    for check in ["hub ", "token ", "runner ", "state_dir ", "disk "] {
        assert!(
            said.contains(&format!("\n{check}")),
            "no {check}row:\n{said}"
        );
    }
    // The state dir is the one asked for, made absolute in the config.
    assert!(
        text.contains(&format!("state_dir = \"{}\"", r.join("state").display())),
        "{text}"
    );
    assert!(r.join("state/instance_id").exists());

    // It runs as join said, and takes work.
    let mut cmd = Command::new(bin("agentcom-sidecar"));
    cmd.current_dir(r)
        .env("HOME", r)
        .env("XDG_STATE_HOME", r.join("xdg-state"))
        .args(["run", "--config"])
        .arg(&config);
    let mut sidecar = Proc::spawn(cmd, &r.join("loash.log"));
    let done = a_task_completes(&hub, "after joining");
    assert_eq!(done["assigned_to"], "loash");
    assert_eq!(ran(r), [done["id"].as_str().unwrap()]);
    sidecar.terminate(Duration::from_secs(10));
}

#[test]
fn join_refuses_before_anything_is_enrolled_or_written() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    let runner = runner(r).display().to_string();
    let token = enroll_token(&hub);
    let agents = || {
        hub.ok("GET", "/api/agents", None)["agents"]
            .as_array()
            .unwrap()
            .len()
    };
    let common = |config: &str| -> Vec<String> {
        let state = format!("{config}.state");
        [
            "--capabilities",
            "code",
            "--install",
            "none",
            "--config",
            config,
        ]
        .map(String::from)
        .into_iter()
        .chain(["--state-dir".to_string(), state])
        .collect()
    };

    // A wrong enrollment token: 401, named, nothing written.
    let mut args = common("a.toml");
    args.extend(["--runner".into(), runner.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = join(r, &hub, "a", "not-the-enrollment-token", &args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused the enrollment token (401"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("enroll.token"), "{}", stderr(&out));
    assert!(!r.join("a.toml").exists());

    // A runner that is not there: caught before enrolling.
    let mut args = common("b.toml");
    args.extend(["--runner".into(), "/no/such/runner --flag".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = join(r, &hub, "b", &token, &args);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("runner      FAIL"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("/no/such/runner does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("Nothing was enrolled"),
        "{}",
        stderr(&out)
    );
    assert!(!r.join("b.toml").exists());

    // A config file already there: refused before the hub is asked.
    std::fs::write(r.join("c.toml"), "# mine\n").unwrap();
    let mut args = common("c.toml");
    args.extend(["--runner".into(), runner.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = join(r, &hub, "c", &token, &args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("c.toml exists"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(r.join("c.toml")).unwrap(),
        "# mine\n"
    );

    // A hub that is not there.
    let out = Command::new(bin("agentcom-sidecar"))
        .current_dir(r)
        .env("HOME", r)
        .args([
            "join",
            "--hub",
            "http://127.0.0.1:9",
            "--enroll-token",
            &token,
        ])
        .args(["--id", "d", "--runner", &runner, "--install", "none"])
        .args(["--state-dir", "d-state"])
        .args(["--config", "d.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the hub at http://127.0.0.1:9"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));

    assert_eq!(agents(), 0, "an agent was enrolled");
    assert!(!r.join("a.toml").exists() && !r.join("b.toml").exists() && !r.join("d.toml").exists());

    // A second join of an agent the hub has: 409 naming the way out.
    let mut args = common("e.toml");
    args.extend(["--runner".into(), runner.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(join(r, &hub, "e", &token, &args).status.success());
    let mut args = common("e2.toml");
    args.extend(["--runner".into(), runner]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = join(r, &hub, "e", &token, &args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("agentcom-hub agent revoke e"),
        "{}",
        stderr(&out)
    );
    assert!(!r.join("e2.toml").exists());
}

#[test]
fn join_writes_a_systemd_unit_that_systemd_accepts() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    let runner = runner(r).display().to_string();
    let units = r.join("units");
    let out = join(
        r,
        &hub,
        "unit-1",
        &enroll_token(&hub),
        &[
            "--capabilities",
            "code",
            "--runner",
            &runner,
            "--install",
            "systemd",
            "--service-dir",
            &units.display().to_string(),
            "--config",
            "unit 1.toml",
            "--state-dir",
            "unit-state",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("systemd-analyze verify: the unit is sound"));
    assert!(stdout(&out).contains("ready: agent unit-1 is connected and verified"));
    let unit = units.join("agentcom-sidecar-unit-1.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart={} run --config \"{}\"",
            bin("agentcom-sidecar").display(),
            r.join("unit 1.toml").display()
        )),
        "{text}"
    );
    // systemd's own judgement, asked here too (it checks ExecStart runs).
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (scripts/test.sh installs systemd)");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// pm2, from PATH or where scripts/test.sh installs it.
fn pm2() -> PathBuf {
    let local =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools/node_modules/.bin/pm2");
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pm2"))
                .find(|p| p.exists())
        })
        .expect("pm2 is missing: ./scripts/test.sh installs it into target/test-tools")
}

/// A pm2 daemon of the test's own (PM2_HOME), killed at the end.
struct Pm2 {
    home: PathBuf,
    bin: PathBuf,
}

impl Pm2 {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("PM2_HOME", &self.home);
        c
    }

    /// (pid, restarts) of app `name`, when online.
    fn online(&self, name: &str) -> Option<(u64, u64)> {
        let out = self.cmd().arg("jlist").output().ok()?;
        let apps: Value = serde_json::from_slice(&out.stdout).ok()?;
        apps.as_array()?.iter().find_map(|a| {
            (a["name"] == name && a["pm2_env"]["status"] == "online" && a["pid"].as_u64()? > 0)
                .then(|| {
                    (
                        a["pid"].as_u64().unwrap(),
                        a["pm2_env"]["restart_time"].as_u64().unwrap_or(0),
                    )
                })
        })
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill").output();
    }
}

#[test]
fn a_sidecar_joined_under_pm2_is_restarted_after_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    let runner = runner(r).display().to_string();
    let pm2 = Pm2 {
        home: r.join("pm2"),
        bin: pm2(),
    };
    let path = format!(
        "{}:{}",
        pm2.bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bin("agentcom-sidecar"))
        .current_dir(r)
        .env("HOME", r)
        .env("PM2_HOME", &pm2.home)
        .env("PATH", path)
        .args([
            "join",
            "--hub",
            &hub.url,
            "--enroll-token",
            &enroll_token(&hub),
        ])
        .args(["--id", "pm", "--capabilities", "code", "--runner", &runner])
        .args([
            "--install",
            "pm2",
            "--config",
            "pm.toml",
            "--state-dir",
            "pm-state",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("ready: agent pm is connected and verified"),
        "{}",
        stdout(&out)
    );
    let (pid, restarts) = pm2.online("agentcom-sidecar-pm").expect("online under pm2");
    assert_eq!(restarts, 0);

    // kill -9: pm2 starts it again and the hub sees it back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let (again, restarts) = wait_until(
        Duration::from_secs(30),
        "pm2 to restart the sidecar",
        || pm2.online("agentcom-sidecar-pm").filter(|(p, _)| *p != pid),
    );
    assert_eq!(restarts, 1);
    wait_until(
        Duration::from_secs(30),
        "the restarted sidecar to connect",
        || {
            let a = hub.agent("pm");
            (a["connected"] == true && a["state"] == "idle").then_some(())
        },
    );
    let done = a_task_completes(&hub, "after the restart");
    assert_eq!(done["assigned_to"], "pm");
    assert_eq!(ran(r), [done["id"].as_str().unwrap()]);
    let _ = again;
}

#[test]
fn a_second_sidecar_on_one_agent_is_refused_and_both_say_so() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    let runner = runner(r).display().to_string();
    let out = join(
        r,
        &hub,
        "twin",
        &enroll_token(&hub),
        &[
            "--capabilities",
            "code",
            "--runner",
            &runner,
            "--install",
            "none",
            "--config",
            "twin.toml",
            "--state-dir",
            "state-join",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let config = r.join("twin.toml");
    // The same config copied to a second place (a second machine): only
    // its state dir differs.
    let text = std::fs::read_to_string(&config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("state_dir"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (a, b) = (r.join("a.toml"), r.join("b.toml"));
    std::fs::write(
        &a,
        format!("state_dir = \"{}\"\n{text}", r.join("state-a").display()),
    )
    .unwrap();
    std::fs::write(
        &b,
        format!("state_dir = \"{}\"\n{text}", r.join("state-b").display()),
    )
    .unwrap();
    let start = |cfg: &Path, log: &str| {
        let mut c = Command::new(bin("agentcom-sidecar"));
        c.current_dir(r).args(["run", "--config"]).arg(cfg);
        Proc::spawn(c, &r.join(log))
    };
    let mut first = start(&a, "a.log");
    wait_until(
        Duration::from_secs(20),
        "the first sidecar to connect",
        || (hub.agent("twin")["state"] == "idle").then_some(()),
    );
    let mut second = start(&b, "b.log");
    let refused = wait_until(
        Duration::from_secs(20),
        "the second sidecar to be refused",
        || {
            second
                .log_text()
                .lines()
                .find(|l| l.contains("ERROR") && l.contains("agent_in_use"))
                .map(str::to_string)
        },
    );
    assert!(
        refused.contains("give each machine its own agent id"),
        "{refused}"
    );
    let told = wait_until(
        Duration::from_secs(20),
        "the first sidecar to be told",
        || {
            first
                .log_text()
                .lines()
                .find(|l| l.contains("agent_in_use_elsewhere"))
                .map(str::to_string)
        },
    );
    assert!(
        told.contains("was refused; this connection stays"),
        "{told}"
    );
    assert!(hub
        .log()
        .contains("a second sidecar tried to connect as this agent; refused"));
    // The first keeps the agent and its work; the second never was welcomed.
    let done = a_task_completes(&hub, "for the twin");
    assert_eq!(done["assigned_to"], "twin");
    assert!(
        !second.log_text().contains("welcomed by the hub"),
        "{}",
        second.log_text()
    );
    assert!(first.log_text().contains("welcomed by the hub"));
    second.terminate(Duration::from_secs(10));
    first.terminate(Duration::from_secs(10));
}
