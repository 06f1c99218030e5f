//! `agentcom-sidecar join`: one command that makes this machine an agent
//! of a hub and proves it works.
//!
//! In order, each step only after the one before passed: the plan is
//! checked (the agent id, the runner's words, `[git]` given whole, the
//! config file not there yet); this machine is checked before anything is
//! enrolled (the hub answers `/healthz`, the runner can be run, the git
//! remote answers, the state dir takes a file, the disk has room); the
//! agent is enrolled (`POST /api/agents/enroll` with the enrollment
//! token, which also queues its verification task); the config is
//! written (0600, its folder 0700); the whole self-test runs with the new
//! token; the service is installed (`service.rs`: a systemd unit checked
//! by `systemd-analyze verify`, or a pm2 app) and started where its
//! manager runs; then it waits until the hub says the verification task
//! completed — the sidecar took it, answered it with its self-test and the
//! hub made the answer durable — and prints `ready`. Where no service
//! runs the daemon (`--install none`, or systemd not running here) the
//! daemon runs inside `join` until the verification is back, then stops.
//!
//! With several hubs on one database (`--hub` given again, or a comma
//! list), every request goes to the hub that answered last, moving on
//! from one that cannot be reached or answers 503 `not_leader` (to the
//! leader it names, else the next, in the order of `hubs.rs`), so the
//! hub that leads enrolls; the config written names them all
//! (`hub_urls`).
//!
//! It owns the order and what each failure tells a person. It never
//! decides a check (`selftest.rs`), what a service file says
//! (`service.rs`) or how the daemon works (`daemon.rs`).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcom_protocol::{ApiError, Enrolled, NewAgent, NotLeader, TaskStatus, Verification};
use agentcom_tls::PemFile;
use awc::error::{ConnectError, SendRequestError};
use serde::de::DeserializeOwned;

use crate::config::SidecarConfig;
use crate::daemon::Daemon;
use crate::hubs::{Hubs, Next};
use crate::selftest::Report;
use crate::service::{self, Manager, Service};

/// What `join` was asked.
#[derive(Clone, Debug)]
pub struct JoinArgs {
    /// The hub: `http://host:port` (or `https://`, or its `ws://…/ws`);
    /// several hubs on one database separated by commas.
    pub hub: String,
    pub enroll_token: String,
    pub id: String,
    pub capabilities: Vec<String>,
    /// The runner command as one line of shell words.
    pub runner: String,
    pub repo: Option<String>,
    pub repo_dir: Option<PathBuf>,
    pub remote: String,
    pub main_branch: String,
    pub context_window_tokens: Option<u64>,
    pub install: Manager,
    /// Where the config goes (None: the per-user default).
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Where the systemd unit goes (None: systemd's own folder).
    pub service_dir: Option<PathBuf>,
    /// How long to wait for the verification.
    pub wait: Duration,
}

/// The checked plan: every value `join` writes or calls with.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Each hub's `http(s)://host:port`, no trailing slash, in the order
    /// given.
    pub http: Vec<String>,
    /// The sidecar's `hub_url` (one hub) or `hub_urls`, in the same
    /// order.
    pub ws: Vec<String>,
    pub config: PathBuf,
    pub runner: Vec<String>,
    pub args: JoinArgs,
}

impl Plan {
    /// Check what was asked; nothing is looked at outside.
    pub fn new(args: JoinArgs, cwd: &Path) -> Result<Plan, String> {
        crate::validate::agent_id(&args.id).map_err(|e| format!("--id: {e}"))?;
        let (http, ws) = hubs_addresses(&args.hub)?;
        let runner = shlex::split(&args.runner)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| {
                format!(
                    "--runner {:?} is not a command (one line of shell words, e.g. --runner \"/usr/local/bin/agent-runner --fast\")",
                    args.runner
                )
            })?;
        match (&args.repo, &args.repo_dir) {
            (Some(r), Some(_)) => {
                crate::validate::repo_name(r).map_err(|e| format!("--repo: {e}"))?
            }
            (None, None) => {}
            _ => return Err("give --repo and --repo-dir together (the hub's name for the repository and this machine's clone of it)".into()),
        }
        if args.enroll_token.trim().is_empty() {
            return Err("no enrollment token: pass --enroll-token (the hub writes it to <data_dir>/enroll.token) or set AGENTCOM_ENROLL_TOKEN".into());
        }
        let config = match &args.config {
            Some(p) => absolute(p, cwd),
            None => default_config_path(&args.id)?,
        };
        Ok(Plan {
            http,
            ws,
            config,
            runner,
            args,
        })
    }

    /// The sidecar's config, as written (with the agent's token).
    pub fn config_text(&self, token: &str, cwd: &Path) -> String {
        let a = &self.args;
        let list = |v: &[String]| v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
        let hubs = match &self.ws[..] {
            [one] => format!("hub_url = {}", toml_str(one)),
            several => format!("hub_urls = [{}]", list(several)),
        };
        let mut out = format!(
            "# Written by `agentcom-sidecar join`; every setting is explained in\n\
             # deploy/sidecar.example.toml of the AgentCom repository.\n\
             {hubs}\nagent_id = {}\ntoken = {}\ncapabilities = [{}]\n",
            toml_str(&a.id),
            toml_str(token),
            list(&a.capabilities),
        );
        if let Some(dir) = &a.state_dir {
            out.push_str(&format!(
                "state_dir = {}\n",
                toml_str(&absolute(dir, cwd).display().to_string())
            ));
        }
        if let Some(ca) = &a.ca_file {
            out.push_str(&format!(
                "ca_file = {}\n",
                toml_str(&absolute(ca, cwd).display().to_string())
            ));
        }
        if let Some(n) = a.context_window_tokens {
            out.push_str(&format!("context_window_tokens = {n}\n"));
        }
        out.push_str(&format!(
            "\n[runner]\nmode = \"exec\"\ncommand = [{}]\ntimeout_s = 3600\n",
            list(&self.runner)
        ));
        if let (Some(repo), Some(dir)) = (&a.repo, &a.repo_dir) {
            out.push_str(&format!(
                "\n[git]\nrepo = {}\nrepo_dir = {}\nremote = {}\nmain_branch = {}\n",
                toml_str(repo),
                toml_str(&absolute(dir, cwd).display().to_string()),
                toml_str(&a.remote),
                toml_str(&a.main_branch),
            ));
        }
        out
    }
}

/// The per-user config file: `/etc/agentcom/<id>.toml` for root,
/// else `$XDG_CONFIG_HOME/agentcom/<id>.toml` or
/// `~/.config/agentcom/<id>.toml`.
fn default_config_path(id: &str) -> Result<PathBuf, String> {
    if nix::unistd::geteuid().is_root() {
        return Ok(Path::new("/etc/agentcom").join(format!("{id}.toml")));
    }
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = absolute(std::env::var_os("XDG_CONFIG_HOME"))
        .or_else(|| absolute(std::env::var_os("HOME")).map(|h| h.join(".config")))
        .ok_or("no HOME to put the config under: pass --config FILE")?;
    Ok(base.join("agentcom").join(format!("{id}.toml")))
}

/// `p` made absolute against `cwd`.
fn absolute(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// The hub's HTTP base and the sidecar's WebSocket address, from what a
/// person passes as `--hub`: `http://h:p`, `https://h:p` or the
/// WebSocket address itself.
pub fn hub_addresses(hub: &str) -> Result<(String, String), String> {
    let hub = hub.trim().trim_end_matches('/');
    let (scheme, rest) = hub
        .split_once("://")
        .ok_or_else(|| format!("--hub {hub:?} is not an address like http://127.0.0.1:4000"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("--hub {hub:?} names no host"));
    }
    let (http, ws) = match scheme {
        "http" | "ws" => ("http", "ws"),
        "https" | "wss" => ("https", "wss"),
        other => {
            return Err(format!(
                "--hub must start with http:// or https://, not {other}://"
            ))
        }
    };
    Ok((
        format!("{http}://{authority}"),
        format!("{ws}://{authority}/ws"),
    ))
}

/// [`hub_addresses`] of each hub in `hubs`, one or several separated by
/// commas (at most 16, none twice), in order.
pub fn hubs_addresses(hubs: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let mut http = Vec::new();
    let mut ws = Vec::new();
    for hub in hubs.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (h, w) = hub_addresses(hub)?;
        if ws.contains(&w) {
            return Err(format!("--hub names {h} twice"));
        }
        http.push(h);
        ws.push(w);
    }
    if http.is_empty() {
        return Err("--hub names no hub: give its address, like http://127.0.0.1:4000".into());
    }
    if http.len() > crate::config::MAX_HUB_URLS {
        return Err(format!(
            "--hub names {} hubs; a sidecar takes at most {}",
            http.len(),
            crate::config::MAX_HUB_URLS
        ));
    }
    Ok((http, ws))
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The hub, over HTTP with the enrollment token. With several hubs, each
/// request goes to the one that answered last; one that cannot be reached
/// or answers 503 `not_leader` sends it on to the leader it names, else to
/// the next hub, in the order of `hubs.rs`, once round.
struct Hub {
    /// Each hub's HTTP base, in the order of `hubs`.
    bases: Vec<String>,
    hubs: RefCell<Hubs>,
    token: String,
    http: awc::Client,
}

/// What one hub made of a request.
enum Tried<T> {
    /// An answer to give the caller: this hub is the one to ask.
    Answered(Result<T, (u16, String)>),
    /// Not this hub: it cannot be reached, or it does not lead (the
    /// status and message, and the leader it names).
    NotHere {
        status: u16,
        message: String,
        leader: Option<String>,
    },
}

impl Hub {
    fn new(plan: &Plan, cwd: &Path) -> Result<Hub, String> {
        let mut connector = awc::Connector::new();
        if plan.http.iter().any(|h| h.starts_with("https://")) || plan.args.ca_file.is_some() {
            let ca = plan.args.ca_file.as_ref().map(|p| absolute(p, cwd));
            let tls =
                agentcom_tls::client_config(ca.as_deref().map(|p| PemFile::new("--ca-file", p)))
                    .map_err(|e| e.to_string())?;
            connector = connector.rustls_0_23(Arc::new(tls));
        }
        Ok(Hub {
            bases: plan.http.clone(),
            hubs: RefCell::new(Hubs::new(plan.ws.clone())),
            token: plan.args.enroll_token.trim().to_string(),
            http: awc::Client::builder()
                .connector(connector)
                .timeout(Duration::from_secs(20))
                .finish(),
        })
    }

    /// The hub asked first: the one that answered last.
    fn base(&self) -> &str {
        &self.bases[self.hubs.borrow().current_index()]
    }

    /// `method path` with `body`; the answer's status and JSON. With
    /// several hubs, the first that leads answers; if none does, every
    /// hub and what it said.
    async fn call<T: DeserializeOwned>(
        &self,
        post: Option<serde_json::Value>,
        path: &str,
    ) -> Result<T, (u16, String)> {
        let mut failures = Vec::new();
        loop {
            let i = self.hubs.borrow().current_index();
            match self.call_at(&self.bases[i], post.clone(), path).await {
                Tried::Answered(answer) => {
                    self.hubs.borrow_mut().welcomed();
                    return answer;
                }
                Tried::NotHere {
                    status,
                    message,
                    leader,
                } => {
                    failures.push((self.bases[i].clone(), status, message));
                    if self.hubs.borrow_mut().not_this_hub(leader.as_deref()) == Next::AfterPause {
                        break;
                    }
                }
            }
        }
        if let [(_, status, message)] = &failures[..] {
            return Err((*status, message.clone()));
        }
        let each: Vec<String> = failures
            .iter()
            .map(|(base, status, message)| match status {
                0 => message.clone(),
                s => format!("{base} answered {s}: {message}"),
            })
            .collect();
        Err((
            0,
            format!(
                "no hub answered as the leader: {}. Is one of them running and leading, and are those the hubs' addresses (--hub)?",
                each.join("; ")
            ),
        ))
    }

    /// `call` at the hub `base`.
    async fn call_at<T: DeserializeOwned>(
        &self,
        base: &str,
        post: Option<serde_json::Value>,
        path: &str,
    ) -> Tried<T> {
        let url = format!("{base}{path}");
        let get = post.is_none();
        let sent = match post {
            Some(b) => {
                self.http
                    .post(&url)
                    .bearer_auth(&self.token)
                    .send_json(&b)
                    .await
            }
            None => self.http.get(&url).bearer_auth(&self.token).send().await,
        };
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                let why = match &e {
                    SendRequestError::Connect(ConnectError::Io(io)) => {
                        agentcom_tls::connect_failure(
                            io,
                            "pass --ca-file with the PEM file of the CA that signed it",
                        )
                        .unwrap_or_else(|| e.to_string())
                    }
                    _ => e.to_string(),
                };
                let message = format!("cannot reach the hub at {base}: {why}");
                // A request that may have arrived is not sent again
                // elsewhere, unless it only reads.
                if get || matches!(e, SendRequestError::Connect(_)) {
                    return Tried::NotHere {
                        status: 0,
                        message,
                        leader: None,
                    };
                }
                return Tried::Answered(Err((0, message)));
            }
        };
        let status = resp.status().as_u16();
        let bytes = match resp.body().limit(1024 * 1024).await {
            Ok(b) => b,
            Err(e) => {
                return Tried::Answered(Err((status, format!("reading the hub's answer: {e}"))))
            }
        };
        if status == 503 {
            if let Some(n) = NotLeader::parse(&bytes) {
                return Tried::NotHere {
                    status,
                    message: n.error.message,
                    leader: n.error.leader,
                };
            }
        }
        if !resp.status().is_success() {
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Tried::Answered(Err((status, message)));
        }
        Tried::Answered(serde_json::from_slice(&bytes).map_err(|e| {
            (
                status,
                format!("an answer from {base} this sidecar cannot read: {e}"),
            )
        }))
    }

    /// `GET /healthz` of each hub: Ok when one answers (every hub of
    /// several answers it, the standbys too).
    async fn reachable(&self) -> Result<(), String> {
        let mut failures = Vec::new();
        for base in &self.bases {
            let url = format!("{base}/healthz");
            match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => failures.push(format!(
                    "the hub at {base} answered /healthz with {}: is it an AgentCom hub?",
                    r.status()
                )),
                Err(e) => failures.push(format!(
                    "cannot reach the hub at {base}: {e}. Is it running, and is --hub its address?"
                )),
            }
        }
        Err(failures.join("; "))
    }
}

/// Run `join`: see the module's comment. Prints as it goes; `Err` is what
/// went wrong and what to do.
pub async fn join(args: JoinArgs) -> Result<(), String> {
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let plan = Plan::new(args, &cwd)?;
    let a = &plan.args;
    if plan.config.exists() {
        return Err(format!(
            "{} exists: this machine may be an agent already. Choose another file with --config, or remove it (and `agentcom-hub agent revoke {}` on the hub) to join again",
            plan.config.display(),
            a.id
        ));
    }
    let hub = Hub::new(&plan, &cwd)?;

    // 1. This machine, before anything is enrolled or written.
    hub.reachable().await?;
    let draft = plan.config_text("not-enrolled-yet", &cwd);
    let draft = SidecarConfig::parse(&draft, &plan.config)?;
    let local = run_blocking(draft.clone(), crate::probe::local).await?;
    if !local.ok() {
        print!("{}", local.table());
        return Err(format!(
            "this machine is not ready: {}. (Here the config is not written yet: --runner, --repo-dir and --state-dir set what these checks look at.) Nothing was enrolled and no config was written: fix it and run join again",
            local.failures_line()
        ));
    }

    // 2. Enroll.
    let body = serde_json::to_value(NewAgent {
        id: a.id.clone(),
        capabilities: a.capabilities.clone(),
    })
    .expect("serialises");
    let enrolled: Enrolled = hub
        .call(Some(body), "/api/agents/enroll")
        .await
        .map_err(|(status, message)| match status {
            401 => format!("the hub refused the enrollment token (401: {message}). Use the token in <data_dir>/enroll.token on the hub (or its enroll_token setting)"),
            403 => format!("that token may not enroll agents (403: {message}): use the hub's enrollment token"),
            409 => format!("{message} (409)"),
            0 => message,
            s => format!("the hub refused the enrollment ({s}): {message}"),
        })?;
    println!(
        "enrolled agent {} on {} (verification task {})",
        enrolled.id,
        hub.base(),
        enrolled.verification_task
    );

    // 3. The config, with the token.
    let text = plan.config_text(&enrolled.token, &cwd);
    if let Err(e) = write_private(&plan.config, &text) {
        println!("{text}");
        return Err(format!(
            "cannot write {}: {e}. The config is printed above (its token is shown only once): save it with mode 0600",
            plan.config.display()
        ));
    }
    println!("wrote {} (mode 0600)", plan.config.display());
    let cfg = SidecarConfig::load(&plan.config)?;

    // 4. The whole self-test, with the token.
    let report = crate::probe::full(&cfg).await;
    print!("{}", report.table());
    if !report.ok() {
        return Err(format!(
            "the self-test fails: {}. Fix it, check with `agentcom-sidecar selftest --config {}`, then start the sidecar",
            report.failures_line(),
            plan.config.display()
        ));
    }

    // 5. The service; 6. the verification.
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let svc = Service {
        agent_id: a.id.clone(),
        exe,
        config: plan.config.clone(),
        system: nix::unistd::geteuid().is_root(),
    };
    let started_by_service = install(&plan, &svc)?;
    println!(
        "waiting for the hub's verification task (up to {}s)…",
        a.wait.as_secs()
    );
    let verified = if started_by_service {
        wait_verified(&hub, &a.id, a.wait).await
    } else {
        verify_in_process(cfg, &hub, &a.id, a.wait).await
    }
    .map_err(|e| {
        let logs = match (a.install, started_by_service) {
            (Manager::Systemd, true) => format!(
                " (its log: journalctl{} -u {})",
                if svc.system { "" } else { " --user" },
                svc.name()
            ),
            (Manager::Pm2, _) => format!(" (its log: pm2 logs {})", svc.name()),
            _ => String::new(),
        };
        format!("{e}{logs}")
    })?;
    let summary = verified
        .result
        .as_ref()
        .and_then(|r| r.summary.clone())
        .unwrap_or_else(|| "completed".into());
    println!(
        "ready: agent {} is connected and verified ({summary}; task {})",
        a.id, verified.task_id
    );
    match (a.install, started_by_service) {
        (Manager::None, _) => println!(
            "next: start it with `{} run --config {}` (or join again with --install systemd|pm2)",
            svc.exe.display(),
            plan.config.display()
        ),
        (Manager::Systemd, false) => println!(
            "next: start it with `systemctl{} enable --now {}` where systemd runs, or `{} run --config {}`",
            if svc.system { "" } else { " --user" },
            svc.name(),
            svc.exe.display(),
            plan.config.display()
        ),
        (Manager::Pm2, _) => println!(
            "next: `pm2 save` and `pm2 startup` keep it across reboots; `pm2 logs {}` shows it",
            svc.name()
        ),
        (Manager::Systemd, true) => println!(
            "it runs as {} (systemctl{} status {})",
            svc.unit_file_name(),
            if svc.system { "" } else { " --user" },
            svc.name()
        ),
    }
    Ok(())
}

/// Install the service; whether its manager started it.
fn install(plan: &Plan, svc: &Service) -> Result<bool, String> {
    match plan.args.install {
        Manager::None => Ok(false),
        Manager::Systemd => {
            let custom = plan.args.service_dir.is_some();
            let dir = match &plan.args.service_dir {
                Some(d) => d.clone(),
                None => service::systemd_dir(
                    svc.system,
                    std::env::var_os("XDG_CONFIG_HOME")
                        .as_deref()
                        .map(Path::new),
                    std::env::var_os("HOME").as_deref().map(Path::new),
                ),
            };
            let unit = dir.join(svc.unit_file_name());
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&unit, svc.systemd_unit()))
                .map_err(|e| format!("cannot write the unit {}: {e}", unit.display()))?;
            println!("wrote the systemd unit {}", unit.display());
            if which("systemd-analyze").is_some() {
                let mut verify = Command::new("systemd-analyze");
                if !svc.system {
                    verify.arg("--user");
                }
                let out = verify
                    .arg("verify")
                    .arg(&unit)
                    .output()
                    .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "systemd-analyze verify {} refused the unit: {}",
                        unit.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                println!("systemd-analyze verify: the unit is sound");
            }
            let systemd_runs =
                Path::new("/run/systemd/system").exists() && which("systemctl").is_some();
            if custom || !systemd_runs {
                println!(
                    "{}: the sidecar runs inside join until it is verified",
                    if custom {
                        "the unit is outside systemd's folders (--service-dir)"
                    } else {
                        "systemd is not running on this machine"
                    }
                );
                return Ok(false);
            }
            let user: &[&str] = if svc.system { &[] } else { &["--user"] };
            run("systemctl", &[user, &["daemon-reload"]].concat())?;
            run(
                "systemctl",
                &[user, &["enable", "--now", &svc.name()]].concat(),
            )?;
            println!(
                "started {} (systemctl{} enable --now)",
                svc.name(),
                if svc.system { "" } else { " --user" }
            );
            Ok(true)
        }
        Manager::Pm2 => {
            if which("pm2").is_none() {
                return Err("pm2 is not on PATH: install it (npm install -g pm2), or join with --install systemd|none".into());
            }
            let file = svc.pm2_file();
            std::fs::write(&file, svc.pm2_app())
                .map_err(|e| format!("cannot write the pm2 app file {}: {e}", file.display()))?;
            println!("wrote the pm2 app file {}", file.display());
            run("pm2", &["start", &file.display().to_string()])?;
            println!("started {} under pm2", svc.name());
            Ok(true)
        }
    }
}

/// Run `program args`; Err with its output when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Write `text` to `path` (0600; its folder made 0700 if missing),
/// never over an existing file.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// `probe` off this thread.
async fn run_blocking(
    cfg: SidecarConfig,
    probe: fn(&SidecarConfig) -> Report,
) -> Result<Report, String> {
    tokio::task::spawn_blocking(move || probe(&cfg))
        .await
        .map_err(|e| format!("the self-test stopped: {e}"))
}

/// Wait until the hub says the verification completed; what it said.
async fn wait_verified(hub: &Hub, id: &str, wait: Duration) -> Result<Verification, String> {
    let deadline = Instant::now() + wait;
    let mut last_said = String::new();
    loop {
        match hub
            .call::<Verification>(None, &format!("/api/agents/{id}/verification"))
            .await
        {
            Ok(v) if v.status == TaskStatus::Completed => return Ok(v),
            Ok(v) if matches!(v.status, TaskStatus::Dead | TaskStatus::Cancelled) => {
                return Err(format!(
                    "the verification task {} is {}: {}",
                    v.task_id,
                    v.status,
                    v.last_error.unwrap_or_default()
                ))
            }
            Ok(v) => {
                let said = match (&v.degraded_reason, v.connected) {
                    (Some(why), _) => format!("the hub says agent {id} is degraded: {why}"),
                    (None, false) => format!("agent {id} is not connected yet"),
                    (None, true) => format!(
                        "agent {id} is connected; its verification task is {}",
                        v.status
                    ),
                };
                if said != last_said {
                    println!("  {said}");
                    last_said = said;
                }
            }
            Err((_, message)) => {
                let said = format!("  asking the hub: {message}");
                if said != last_said {
                    println!("{said}");
                    last_said = said;
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the verification did not come back within {}s; last: {}",
                wait.as_secs(),
                last_said.trim()
            ));
        }
        actix_rt::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Run the daemon here until the hub says the verification completed,
/// then stop it.
async fn verify_in_process(
    cfg: SidecarConfig,
    hub: &Hub,
    id: &str,
    wait: Duration,
) -> Result<Verification, String> {
    let daemon = Daemon::new(cfg)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut running = actix_rt::spawn(daemon.run_until(async move {
        let _ = stopped.await;
    }));
    let verified = tokio::select! {
        v = wait_verified(hub, id, wait) => v,
        ended = &mut running => {
            return Err(match ended {
                Ok(Err(e)) => format!("the sidecar stopped: {e}"),
                _ => "the sidecar stopped before the verification came back".into(),
            });
        }
    };
    // Stopped as on SIGTERM: its socket closed, its state dir released.
    let _ = stop.send(());
    match running.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the sidecar stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the sidecar's task ended badly"),
    }
    verified
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> JoinArgs {
        JoinArgs {
            hub: "http://127.0.0.1:4000".into(),
            enroll_token: "acm_enroll_x".into(),
            id: "loash".into(),
            capabilities: vec!["code".into(), "review".into()],
            runner: "/usr/local/bin/agent-runner --model \"big one\"".into(),
            repo: None,
            repo_dir: None,
            remote: "origin".into(),
            main_branch: "main".into(),
            context_window_tokens: None,
            install: Manager::None,
            config: Some("loash.toml".into()),
            state_dir: None,
            ca_file: None,
            service_dir: None,
            wait: Duration::from_secs(120),
        }
    }

    #[test]
    fn hub_addresses_from_what_a_person_types() {
        assert_eq!(
            hub_addresses("http://127.0.0.1:4000/").unwrap(),
            (
                "http://127.0.0.1:4000".into(),
                "ws://127.0.0.1:4000/ws".into()
            )
        );
        assert_eq!(
            hub_addresses("https://hub.example").unwrap(),
            ("https://hub.example".into(), "wss://hub.example/ws".into())
        );
        assert_eq!(
            hub_addresses("ws://h:1/ws").unwrap(),
            ("http://h:1".into(), "ws://h:1/ws".into())
        );
        assert!(hub_addresses("127.0.0.1:4000")
            .unwrap_err()
            .contains("http://127.0.0.1:4000"));
        assert!(hub_addresses("ftp://h")
            .unwrap_err()
            .contains("http:// or https://"));
    }

    #[test]
    fn the_config_written_loads_and_says_what_was_asked() {
        let cwd = Path::new("/work/here");
        let mut a = args();
        a.repo = Some("app".into());
        a.repo_dir = Some("clone".into());
        a.state_dir = Some("state".into());
        a.context_window_tokens = Some(200_000);
        let plan = Plan::new(a, cwd).unwrap();
        assert_eq!(plan.config, Path::new("/work/here/loash.toml"));
        assert_eq!(
            plan.runner,
            ["/usr/local/bin/agent-runner", "--model", "big one"]
        );
        let text = plan.config_text("tok\"en", cwd);
        let cfg = SidecarConfig::parse(&text, &plan.config).unwrap();
        assert_eq!(cfg.agent_id, "loash");
        assert_eq!(cfg.hub_urls, ["ws://127.0.0.1:4000/ws"]);
        assert_eq!(cfg.token().unwrap(), "tok\"en");
        assert_eq!(cfg.capabilities, ["code", "review"]);
        assert_eq!(cfg.state_dir, Path::new("/work/here/state"));
        assert_eq!(cfg.context_window_tokens, Some(200_000));
        assert_eq!(
            cfg.runner.command,
            ["/usr/local/bin/agent-runner", "--model", "big one"]
        );
        let git = cfg.git.unwrap();
        assert_eq!(git.repo.as_deref(), Some("app"));
        assert_eq!(git.repo_dir, Path::new("/work/here/clone"));
    }

    #[test]
    fn several_hubs_are_written_as_hub_urls_in_the_order_given() {
        let cwd = Path::new("/w");
        let mut a = args();
        a.hub = "http://a:4000, https://b:4000/,,ws://c:1/ws".into();
        let plan = Plan::new(a, cwd).unwrap();
        assert_eq!(plan.http, ["http://a:4000", "https://b:4000", "http://c:1"]);
        assert_eq!(
            plan.ws,
            ["ws://a:4000/ws", "wss://b:4000/ws", "ws://c:1/ws"]
        );
        let text = plan.config_text("tok", cwd);
        assert!(
            text.contains(
                "\nhub_urls = [\"ws://a:4000/ws\", \"wss://b:4000/ws\", \"ws://c:1/ws\"]\n"
            ),
            "{text}"
        );
        assert!(!text.contains("hub_url ="), "{text}");
        let cfg = SidecarConfig::parse(&text, &plan.config).unwrap();
        assert_eq!(cfg.hub_urls, plan.ws);
        // One hub: hub_url, as always.
        let plan = Plan::new(args(), cwd).unwrap();
        let text = plan.config_text("tok", cwd);
        assert!(
            text.contains("\nhub_url = \"ws://127.0.0.1:4000/ws\"\n"),
            "{text}"
        );
        assert!(!text.contains("hub_urls"), "{text}");

        for (hubs, said) in [
            ("http://a:1,http://a:1/", "--hub names http://a:1 twice"),
            (" , ", "--hub names no hub"),
            (
                "http://a:1,b:2",
                "is not an address like http://127.0.0.1:4000",
            ),
        ] {
            let mut a = args();
            a.hub = hubs.into();
            let err = Plan::new(a, cwd).unwrap_err();
            assert!(err.contains(said), "{hubs}: {err}");
        }
        let seventeen: Vec<String> = (0..17).map(|i| format!("http://h{i}:1")).collect();
        let mut a = args();
        a.hub = seventeen.join(",");
        assert!(Plan::new(a, cwd)
            .unwrap_err()
            .contains("--hub names 17 hubs; a sidecar takes at most 16"));
    }

    #[test]
    fn mistakes_are_named_before_anything_happens() {
        let cwd = Path::new("/w");
        let mut a = args();
        a.id = "no spaces".into();
        assert!(Plan::new(a, cwd).unwrap_err().starts_with("--id"));
        let mut a = args();
        a.runner = "unbalanced \"quote".into();
        assert!(Plan::new(a, cwd).unwrap_err().contains("is not a command"));
        let mut a = args();
        a.runner = "  ".into();
        assert!(Plan::new(a, cwd).unwrap_err().contains("is not a command"));
        let mut a = args();
        a.repo = Some("app".into());
        assert!(Plan::new(a, cwd)
            .unwrap_err()
            .contains("--repo and --repo-dir together"));
        let mut a = args();
        a.enroll_token = " ".into();
        assert!(Plan::new(a, cwd).unwrap_err().contains("enroll.token"));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str("a\"b\\c\n\u{1b}"), "\"a\\\"b\\\\c\\n\\u001B\"");
    }
}
