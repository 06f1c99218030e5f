//! `agentcom-hub demo`: one command, no setup, the whole path to see. It
//! makes a fresh demo directory (`dir`: only ever deleting an earlier
//! demo's), an example project in a bare git remote and a clone of it for
//! each of three agents (`project`), starts the real hub on it (guarding
//! the project, review by an agent), creates the agents through the hub's
//! HTTP API, writes their `sidecar.toml`s and runs their sidecars in this
//! process (`fleet`), submits the example tasks through the API, and
//! prints the dashboard's sign-in link, where the data is and what is
//! happening. SIGINT or SIGTERM stops the sidecars, then the hub; exit 0.
//!
//! Why in-process: `cargo run -p agentcom-hub -- demo` must work from a
//! fresh clone, where no `agentcom-sidecar` binary may have been built
//! (docs/decisions/0011-the-demo.md). This module only orchestrates: it
//! must never reach into the hub's actors or store (it speaks to the hub
//! as any client does, over HTTP), nor change how the hub or a sidecar
//! behaves.

mod dir;
mod fleet;
mod project;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentcom_protocol::{AgentCreated, AgentList, AgentState, Task, Timestamp};
use agentcom_sidecar::config::SidecarConfig;
use serde_json::json;

use crate::app;
use crate::cli::{ws_url, Client};
use crate::config::{Overrides, Settings};
use dir::DemoDir;
use fleet::{Fleet, Signals};
use project::{Layout, AGENTS, CAPABILITIES, REPO, TASKS};

/// Where the demo listens unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";

/// Where the demo keeps its data unless told.
pub const DEFAULT_DATA_DIR: &str = "./data/demo";

/// How long the sidecars get to connect and say hello.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// `agentcom-hub demo [--listen ADDR] [--data-dir DIR]`.
pub struct DemoArgs {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// What the running demo needs to know.
struct Plan {
    layout: Layout,
    /// The hub's HTTP address, as a person (and the sidecars) reach it.
    http_url: String,
    /// This program, for the commands the banner suggests.
    exe: String,
}

/// Run the demo until SIGINT or SIGTERM.
pub fn run(args: DemoArgs) -> Result<(), String> {
    let listen = args.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let data_dir = std::path::absolute(&data_dir)
        .map_err(|e| format!("cannot tell where {} is: {e}", data_dir.display()))?;
    project::check_git()?;
    // The port first: a busy one is one clear error, with nothing touched.
    let listener = crate::app::bind(&listen, "with --listen")?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listen address: {e}"))?;
    let dir = DemoDir::prepare(&data_dir)?;
    let layout = Layout {
        root: dir.path().to_path_buf(),
    };
    project::make(&layout)?;
    let hub_toml = layout.hub_toml();
    std::fs::write(&hub_toml, project::hub_toml(&layout, &addr.to_string()))
        .map_err(|e| format!("cannot write {}: {e}", hub_toml.display()))?;
    // The demo's settings are its file's only: no AGENTCOM_* from outside.
    let settings = Settings::load_with_env(Some(&hub_toml), &Overrides::default(), Some(vec![]))
        .map_err(|e| format!("the demo's settings in {}: {e}", hub_toml.display()))?;
    let plan = Plan {
        layout,
        http_url: format!("http://{}", reachable(addr)),
        exe: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "agentcom-hub".into()),
    };
    actix_rt::System::new().block_on(async move {
        let signals = Signals::listen()?;
        app::serve_until(settings, Some(listener), demo(plan, signals)).await
    })?;
    println!(
        "Stopped. The demo's data stays in {} until the next `agentcom-hub demo`.",
        dir.path().display()
    );
    Ok(())
}

/// The address a person reaches `addr` at (loopback for "any").
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// Once the hub serves: the agents, their sidecars and the tasks; then
/// wait for a signal; then stop the sidecars (the hub stops after).
async fn demo(plan: Plan, mut signals: Signals) -> Result<(), String> {
    let mut fleet = Fleet::default();
    let started = tokio::select! {
        r = start(&plan, &mut fleet) => Some(r),
        why = signals.recv() => {
            println!("{why} during start-up: stopping.");
            None
        }
    };
    let outcome = match started {
        Some(Ok(token)) => {
            print!("{}", banner(&plan, &token));
            let why = signals.recv().await;
            println!("{why}: stopping the sidecars, then the hub.");
            Ok(())
        }
        Some(Err(e)) => Err(e),
        None => Ok(()),
    };
    let stopped = fleet.stop().await;
    outcome.and(stopped)
}

/// Create the agents, start their sidecars, wait until they are idle,
/// submit the tasks; the admin token.
async fn start(plan: &Plan, fleet: &mut Fleet) -> Result<String, String> {
    let layout = &plan.layout;
    let token = std::fs::read_to_string(layout.admin_token())
        .map_err(|e| format!("cannot read {}: {e}", layout.admin_token().display()))?
        .trim()
        .to_string();
    let hub = Client::with_token(&plan.http_url, token.clone());
    let ws = ws_url(&plan.http_url);
    for name in AGENTS {
        let created: AgentCreated = hub
            .call(
                "POST",
                "/api/agents",
                Some(json!({"id": name, "capabilities": CAPABILITIES})),
            )
            .await?;
        let text = project::sidecar_toml(layout, &ws, name, &created.token, &created.capabilities);
        project::write_sidecar_toml(layout, name, &text)?;
        let config = SidecarConfig::load(&layout.sidecar_toml(name))?;
        fleet.start(name, config)?;
    }
    wait_for_agents(&hub, fleet).await?;
    let now = Timestamp::now();
    for t in &TASKS {
        let body = serde_json::to_value(t.new_task(now)).expect("serialises");
        let _: Task = hub.call("POST", "/api/tasks", Some(body)).await?;
    }
    Ok(token)
}

/// Wait until every agent's sidecar is connected and idle.
async fn wait_for_agents(hub: &Client, fleet: &mut Fleet) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_WITHIN;
    loop {
        if let Some(why) = fleet.ended() {
            return Err(why);
        }
        let list: AgentList = hub.call("GET", "/api/agents", None).await?;
        let ready = |name: &str| {
            list.agents
                .iter()
                .any(|a| a.id == name && a.connected && a.state == AgentState::Idle)
        };
        if AGENTS.iter().all(|a| ready(a)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let states: Vec<String> = list
                .agents
                .iter()
                .map(|a| format!("{} {}", a.id, a.state))
                .collect();
            return Err(format!(
                "the sidecars were not all connected and idle within {}s ({})",
                CONNECT_WITHIN.as_secs(),
                states.join(", ")
            ));
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a person reads once everything runs.
fn banner(plan: &Plan, token: &str) -> String {
    let root = plan.layout.root.display();
    let later = TASKS.iter().filter(|t| t.after_s > 0).count();
    let last = TASKS.iter().map(|t| t.after_s).max().unwrap_or(0);
    let conn = format!("--hub {} --data-dir {root}", plan.http_url);
    format!(
        "
AgentCom demo: a hub, three agents and a small project, all in this process.

  Dashboard  {url}/dashboard#token={token}
             (the link signs you in as the admin)
  Data       {root}
             hub.toml and the hub's store; {repo}.git, the example project;
             agents/<name>/: each agent's sidecar.toml, git clone and state
  Happening  {agents} take {n} tasks on the project \"{repo}\": each
             writes a greeting into greetings/, another agent reviews it,
             the hub runs check.sh on the merge and moves main.
             {now} start now, {later} more over the next {last} seconds.
  Watch      {exe} task list {conn}
             git -C {remote} log --oneline main
  Try        {exe} task submit {conn} --repo {repo} --needs code --title \"Say hello in Dutch\"

Ctrl-C stops all of it.
",
        url = plan.http_url,
        repo = REPO,
        agents = {
            let (last_agent, rest) = AGENTS.split_last().expect("three agents");
            format!("{} and {last_agent}", rest.join(", "))
        },
        n = TASKS.len(),
        now = TASKS.len() - later,
        exe = plan.exe,
        remote = plan.layout.remote().display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_has_the_sign_in_link_the_data_and_how_to_stop() {
        let plan = Plan {
            layout: Layout {
                root: PathBuf::from("/home/me/data/demo"),
            },
            http_url: "http://127.0.0.1:4000".into(),
            exe: "agentcom-hub".into(),
        };
        let text = banner(&plan, "acm_admin_x");
        for want in [
            "  Dashboard  http://127.0.0.1:4000/dashboard#token=acm_admin_x\n",
            "  Data       /home/me/data/demo\n",
            "ada, grace and linus take 6 tasks on the project \"hello\"",
            "3 start now, 3 more over the next 18 seconds.",
            "  Watch      agentcom-hub task list --hub http://127.0.0.1:4000 --data-dir /home/me/data/demo\n",
            "git -C /home/me/data/demo/hello.git log --oneline main\n",
            "\nCtrl-C stops all of it.\n",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
    }

    #[test]
    fn any_address_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert_eq!(reachable(any).to_string(), "127.0.0.1:4000");
        let any6: SocketAddr = "[::]:4000".parse().unwrap();
        assert_eq!(reachable(any6).to_string(), "[::1]:4000");
        let one: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        assert_eq!(reachable(one), one);
    }
}
