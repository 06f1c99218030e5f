//! The admin subcommands: `agent add|list|revoke|pause|resume`, `task
//! submit|import|list|show|cancel|retry|why`, `lane pause|resume`,
//! `alerts`. Each is one HTTP call to a running hub (`task import` one a
//! batch of up to 1,000, in order, stopping at a refused one; `task wait`
//! polls) with the admin token (from
//! `AGENTCOM_ADMIN_TOKEN` or `<data_dir>/admin.token`), printing a human
//! answer (tables and views made in `format`) or, with `--json`, the
//! hub's JSON. An `https://` hub is trusted through the system's roots, or
//! exactly the CA certificates of `--ca-file`. Given several hubs on one
//! database (`--hub` again, or a comma list), every request goes to the
//! hub that leads (the order of tries is `cli/hubs.rs`'s), and `agent add`
//! writes `hub_urls`. `agent add --out` writes
//! the sidecar's config (0600) only after the hub created the agent, and
//! never over an existing file. It must never decide anything the hub
//! decides, nor print text from outside unescaped.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentcom_protocol::{
    AgentCreated, AgentList, ApiError, NewAgent, NewTask, NewTaskBatch, NotLeader, Priority, Task,
    TaskPage, TaskStatus, TasksCreated, Timestamp,
};
use agentcom_tls::PemFile;
use awc::error::{ConnectError, SendRequestError};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::token_file;
use crate::logging::printable;

pub(crate) mod format;
mod hubs;
pub(crate) mod import;

/// Where the hub is and how to prove we are its admin.
pub struct Conn {
    /// The hub's address; several hubs on one database (one leads, the
    /// others stand by): each one's, in the order to try them.
    pub hubs: Vec<String>,
    pub data_dir: PathBuf,
    pub json: bool,
    /// PEM CA certificates to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

pub enum AgentCmd {
    Add {
        name: String,
        capabilities: Vec<String>,
        state_dir: Option<String>,
        runner: Option<String>,
        /// Write the config here (0600) instead of printing it.
        out: Option<PathBuf>,
    },
    List,
    Revoke {
        name: String,
    },
    /// Pause (drain) or resume.
    Pause {
        name: String,
        paused: bool,
    },
}

/// Pause or resume a priority lane.
pub struct LaneCmd {
    pub priority: Priority,
    pub paused: bool,
}

pub enum TaskCmd {
    Submit {
        spec: Box<NewTask>,
        /// Print only the id.
        quiet: bool,
    },
    /// Wait until the task ended.
    Wait {
        id: String,
        timeout: Duration,
    },
    List {
        status: Option<String>,
        limit: usize,
    },
    Show {
        id: String,
    },
    Cancel {
        id: String,
    },
    Retry {
        id: String,
    },
    Why {
        id: String,
    },
}

/// An HTTP client of the hub's API with the admin token. With several
/// hubs, each request goes to the one that answered last; one that
/// cannot be reached or answers 503 `not_leader` sends it on (to the
/// leader it names, then the next hub: `hubs.rs`).
pub(crate) struct Client {
    hubs: Vec<String>,
    /// The hub that answered the last request.
    last: RefCell<String>,
    token: String,
    http: awc::Client,
}

/// What one hub made of a request.
enum Tried<T> {
    /// The answer for the caller.
    Answered(Result<T, String>),
    /// No connection (or, for a request that only reads, no answer): why.
    Unreachable(String),
    /// 503 `not_leader`: its message and the leader it names.
    NotLeader {
        message: String,
        leader: Option<String>,
    },
}

impl Client {
    /// A client of a plain-HTTP hub at `base` with `token` (the demo's
    /// own hub).
    pub(crate) fn with_token(base: &str, token: String) -> Client {
        let base = base.trim_end_matches('/').to_string();
        Client {
            hubs: vec![base.clone()],
            last: RefCell::new(base),
            token,
            http: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    fn new(conn: &Conn) -> Result<Client, String> {
        if conn.hubs.is_empty() {
            return Err(
                "--hub names no hub: write http://HOST:PORT or https://HOST:PORT \
                 (e.g. http://127.0.0.1:4000), or set AGENTCOM_HUB_URL"
                    .into(),
            );
        }
        for hub in &conn.hubs {
            if !(hub.starts_with("http://") || hub.starts_with("https://")) {
                return Err(format!(
                    "--hub {hub:?} is not the hub's address: write http://HOST:PORT or https://HOST:PORT \
                     (e.g. http://127.0.0.1:4000), or set AGENTCOM_HUB_URL"
                ));
            }
        }
        let token = match std::env::var("AGENTCOM_ADMIN_TOKEN") {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let path = token_file(&conn.data_dir);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| format!("no admin token: set AGENTCOM_ADMIN_TOKEN or pass --data-dir of the hub ({}: {e})", path.display()))?
            }
        };
        let mut connector = awc::Connector::new();
        if conn.hubs.iter().any(|h| h.starts_with("https://")) || conn.ca_file.is_some() {
            let ca_file = conn
                .ca_file
                .as_deref()
                .map(|p| PemFile::new("--ca-file", p));
            let tls = agentcom_tls::client_config(ca_file).map_err(|e| e.to_string())?;
            connector = connector.rustls_0_23(Arc::new(tls));
        }
        let http = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(30))
            .finish();
        let hubs: Vec<String> = conn
            .hubs
            .iter()
            .map(|h| h.trim_end_matches('/').to_string())
            .collect();
        Ok(Client {
            last: RefCell::new(hubs[0].clone()),
            hubs,
            token,
            http,
        })
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, String> {
        let mut tries = hubs::Tries::new(&self.hubs, &self.last.borrow());
        while let Some(base) = tries.next() {
            match self.call_at(&base, method, path, body.clone()).await {
                Tried::Answered(answer) => {
                    *self.last.borrow_mut() = base;
                    return answer;
                }
                Tried::Unreachable(why) => tries.unreachable(&base, why),
                Tried::NotLeader { message, leader } => tries.not_leader(&base, message, leader),
            }
        }
        Err(tries.give_up())
    }

    /// `call` at the hub `base`.
    async fn call_at<T: DeserializeOwned>(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Tried<T> {
        let url = format!("{base}{path}");
        let req = match method {
            "POST" => self.http.post(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.get(&url),
        }
        .bearer_auth(&self.token);
        let sent = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        };
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                let why = match &e {
                    SendRequestError::Connect(ConnectError::Io(io)) => agentcom_tls::connect_failure(
                        io,
                        "pass --ca-file (or set AGENTCOM_CA_FILE) with the PEM file of the CA that signed it",
                    )
                    .unwrap_or_else(|| e.to_string()),
                    _ => e.to_string(),
                };
                // A write that may have arrived is not sent again
                // elsewhere; a read is.
                if method == "GET" || matches!(e, SendRequestError::Connect(_)) {
                    return Tried::Unreachable(why);
                }
                return Tried::Answered(Err(format!(
                    "cannot reach the hub at {base}: {why}. Is it running, and is that its address (--hub or AGENTCOM_HUB_URL)?"
                )));
            }
        };
        let bytes = match resp.body().limit(64 * 1024 * 1024).await {
            Ok(b) => b,
            Err(e) => return Tried::Answered(Err(format!("reading the answer: {e}"))),
        };
        if resp.status().as_u16() == 503 {
            if let Some(n) = NotLeader::parse(&bytes) {
                return Tried::NotLeader {
                    message: n.error.message,
                    leader: n.error.leader,
                };
            }
        }
        if !resp.status().is_success() {
            return Tried::Answered(Err(match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => format!(
                    "{} ({}): {}",
                    e.error.code,
                    resp.status().as_u16(),
                    e.error.message
                ),
                Err(_) => format!("{}: {}", resp.status(), String::from_utf8_lossy(&bytes)),
            }));
        }
        Tried::Answered(
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("unexpected answer from the hub: {e}")),
        )
    }
}

/// The hub's WebSocket address from its HTTP one.
pub(crate) fn ws_url(hub: &str) -> String {
    let base = hub.trim_end_matches('/');
    let base = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .unwrap_or_else(|| {
            base.strip_prefix("http://")
                .map(|r| format!("ws://{r}"))
                .unwrap_or_else(|| base.to_string())
        });
    format!("{base}/ws")
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialises"));
}

/// `--out FILE` must be a new file in a folder that exists.
fn check_out_file(out: &std::path::Path) -> Result<(), String> {
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(format!(
            "{} already exists; not overwriting it, and the agent was not created \
             (choose another --out, or move the file away first)",
            out.display()
        ));
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "{} is not a folder, so {} cannot be written; the agent was not created",
            dir.display(),
            out.display()
        ));
    }
    Ok(())
}

/// Write `text` to a new file `path`, readable by its owner only (0600
/// whatever the umask), synced.
fn write_private_new(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

pub async fn agent(conn: Conn, cmd: AgentCmd) -> Result<(), String> {
    // Before anything else (the hub included): a file --out would
    // overwrite, or one it cannot write, stops here with nothing done.
    if let AgentCmd::Add { out: Some(out), .. } = &cmd {
        check_out_file(out)?;
    }
    let c = Client::new(&conn)?;
    match cmd {
        AgentCmd::Add {
            name,
            capabilities,
            state_dir,
            runner,
            out,
        } => {
            let body = serde_json::to_value(NewAgent {
                id: name.clone(),
                capabilities,
            })
            .expect("serialises");
            let created: AgentCreated = c.call("POST", "/api/agents", Some(body)).await?;
            // The CA the CLI trusted is the one the sidecar needs (at this
            // path on the agent's machine).
            let ca_file = conn.ca_file.as_deref().map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.to_path_buf())
                    .display()
                    .to_string()
            });
            let hub_urls: Vec<String> = conn.hubs.iter().map(|h| ws_url(h)).collect();
            let text = format::sidecar_config(&format::SidecarConfigText {
                hub_urls: &hub_urls,
                agent_id: &created.id,
                token: &created.token,
                capabilities: &created.capabilities,
                state_dir: state_dir.as_deref(),
                ca_file: ca_file.as_deref(),
                runner: runner.as_deref(),
            });
            let Some(out) = out else {
                if conn.json {
                    print_json(&created);
                } else {
                    eprintln!("agent {name} created; its token is shown only this once. Save this as its sidecar.toml:");
                    print!("{text}");
                }
                return Ok(());
            };
            if let Err(e) = write_private_new(&out, &text) {
                // The token is shown only once: never lose it.
                print!("{text}");
                return Err(format!(
                    "agent {name} was created, but its config could not be written to {}: {e}. \
                     It is printed above instead; save it now (its token is not shown again)",
                    out.display()
                ));
            }
            if conn.json {
                print_json(&created);
                return Ok(());
            }
            println!(
                "agent {name} created; its sidecar config, with its token, is in {} (mode 0600).",
                out.display()
            );
            if runner.is_none() {
                println!("Set runner.command in it: the program that does a task.");
            }
            println!(
                "Next, on the agent's machine:\n  agentcom-sidecar run --config {}",
                out.display()
            );
        }
        AgentCmd::List => {
            let list: AgentList = c.call("GET", "/api/agents", None).await?;
            if conn.json {
                print_json(&list);
                return Ok(());
            }
            print!("{}", format::agent_table(&list.agents, Timestamp::now()));
        }
        AgentCmd::Revoke { name } => {
            let answer: Value = c
                .call("DELETE", &format!("/api/agents/{name}"), None)
                .await?;
            if conn.json {
                print_json(&answer);
            } else {
                println!("revoked {name}");
            }
        }
        AgentCmd::Pause { name, paused } => {
            let verb = if paused { "pause" } else { "resume" };
            let answer: Value = c
                .call("POST", &format!("/api/agents/{name}/{verb}"), None)
                .await?;
            if conn.json {
                print_json(&answer);
            } else if paused {
                println!("paused {name}: it finishes its current task and takes no other");
            } else {
                println!("resumed {name}");
            }
        }
    }
    Ok(())
}

/// `agentcom-hub alerts`: the hub's recent alerts, newest first.
pub async fn alerts(conn: Conn, limit: usize) -> Result<(), String> {
    let c = Client::new(&conn)?;
    let answer: Value = c
        .call("GET", &format!("/api/alerts?limit={limit}"), None)
        .await?;
    if conn.json {
        print_json(&answer);
        return Ok(());
    }
    let list = answer["alerts"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no alerts");
    }
    for a in list {
        let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
        println!(
            "{}  {:<16} {}  {}",
            s("at"),
            s("alert"),
            s("subject"),
            s("message")
        );
    }
    Ok(())
}

pub async fn lane(conn: Conn, cmd: LaneCmd) -> Result<(), String> {
    let c = Client::new(&conn)?;
    let verb = if cmd.paused { "pause" } else { "resume" };
    let answer: Value = c
        .call(
            "POST",
            &format!("/api/lanes/{}/{verb}", cmd.priority.as_str()),
            None,
        )
        .await?;
    if conn.json {
        print_json(&answer);
        return Ok(());
    }
    let paused: Vec<&str> = answer["paused_lanes"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    println!(
        "{}d lane {}; paused lanes: {}",
        verb,
        cmd.priority.as_str(),
        if paused.is_empty() {
            "none".to_string()
        } else {
            paused.join(", ")
        }
    );
    Ok(())
}

pub async fn task(conn: Conn, cmd: TaskCmd) -> Result<(), String> {
    let c = Client::new(&conn)?;
    match cmd {
        TaskCmd::Submit { spec, quiet } => {
            let t: Task = c
                .call(
                    "POST",
                    "/api/tasks",
                    Some(serde_json::to_value(spec).expect("serialises")),
                )
                .await?;
            if conn.json {
                print_json(&t);
            } else if quiet {
                println!("{}", t.id);
            } else {
                println!("{}", format::submitted_line(&t));
            }
        }
        TaskCmd::Wait { id, timeout } => {
            let deadline = std::time::Instant::now() + timeout;
            let mut seen: Option<(TaskStatus, Option<String>)> = None;
            loop {
                let t: Task = c.call("GET", &format!("/api/tasks/{id}"), None).await?;
                let now = (t.status, t.assigned_to.clone());
                if seen.as_ref() != Some(&now) {
                    // Progress to stderr: stdout stays the one last line.
                    eprintln!("{}", format::status_line(&t));
                    seen = Some(now);
                }
                if matches!(
                    t.status,
                    TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled
                ) {
                    if conn.json {
                        print_json(&t);
                    } else {
                        println!("{}", format::ended_line(&t));
                    }
                    return if t.status == TaskStatus::Completed {
                        Ok(())
                    } else {
                        Err(format!(
                            "task {id} is {}; `agentcom-hub task show {id}` has its history",
                            t.status
                        ))
                    };
                }
                if std::time::Instant::now() >= deadline {
                    return Err(format!(
                        "task {id} is still {} after {}s; `agentcom-hub task why {id}` says what holds it",
                        t.status,
                        timeout.as_secs()
                    ));
                }
                actix_rt::time::sleep(Duration::from_millis(250)).await;
            }
        }
        TaskCmd::List { status, limit } => {
            let mut path = format!("/api/tasks?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            let page: TaskPage = c.call("GET", &path, None).await?;
            if conn.json {
                print_json(&page);
                return Ok(());
            }
            print!("{}", format::task_table(&page.tasks, Timestamp::now()));
        }
        TaskCmd::Show { id } => {
            let t: Value = c.call("GET", &format!("/api/tasks/{id}"), None).await?;
            // A shape this CLI does not know (a newer hub) is shown as JSON.
            match serde_json::from_value::<Task>(t.clone()) {
                Ok(task) if !conn.json => print!("{}", format::task_view(&task, Timestamp::now())),
                _ => print_json(&t),
            }
        }
        TaskCmd::Cancel { id } => {
            let t: Task = c
                .call("POST", &format!("/api/tasks/{id}/cancel"), None)
                .await?;
            if conn.json {
                print_json(&t);
            } else {
                println!("{} {}", t.id, t.status);
            }
        }
        TaskCmd::Retry { id } => {
            let t: Task = c
                .call("POST", &format!("/api/tasks/{id}/retry"), None)
                .await?;
            if conn.json {
                print_json(&t);
            } else {
                println!("{} {}", t.id, t.status);
            }
        }
        TaskCmd::Why { id } => {
            let why: Value = c
                .call("GET", &format!("/api/tasks/{id}/explain"), None)
                .await?;
            if conn.json {
                print_json(&why);
                return Ok(());
            }
            println!("{} is {}.", id, why["status"].as_str().unwrap_or("?"));
            for r in why["reasons"].as_array().into_iter().flatten() {
                println!("- {}", r.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

/// How `task import` names its source.
fn source_name(file: &str) -> String {
    if file == "-" {
        "standard input".to_string()
    } else {
        file.to_string()
    }
}

/// `agentcom-hub task import FILE`: the tasks of a file (`-`: standard
/// input), a JSON array of task bodies or one a line, created in batches
/// of at most `batch_size`; how many were created and existing (`--json`:
/// the answers together).
pub async fn task_import(conn: Conn, file: &str, batch_size: usize) -> Result<(), String> {
    let all = import_file(&conn, file, batch_size)
        .await
        .map_err(|e| printable(&e).into_owned())?;
    if conn.json {
        print_json(&all);
    } else {
        println!(
            "{} created, {} existing (their idempotency keys were used before), from {}",
            all.created,
            all.existing,
            printable(&source_name(file))
        );
    }
    Ok(())
}

/// The file's tasks posted in batches, in order; the answers together. A
/// file that does not parse is refused before the hub is asked; a batch
/// the hub refuses creates nothing of itself and stops the import, naming
/// the task's place in the file.
async fn import_file(conn: &Conn, file: &str, batch_size: usize) -> Result<TasksCreated, String> {
    let name = source_name(file);
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| format!("cannot read {name}: {e}"))?;
    let items = import::parse(&text).map_err(|e| format!("{name}: {e}; nothing was imported"))?;
    if items.is_empty() {
        return Err(format!("{name} has no tasks; nothing was imported"));
    }
    let c = Client::new(conn)?;
    let mut all = TasksCreated {
        tasks: Vec::with_capacity(items.len()),
        created: 0,
        existing: 0,
    };
    for range in import::batches(&items, batch_size) {
        let batch = NewTaskBatch {
            tasks: items[range.clone()]
                .iter()
                .map(|i| i.task.clone())
                .collect(),
        };
        let body = serde_json::to_value(&batch).expect("serialises");
        let answer: TasksCreated = match c.call("POST", "/api/tasks/batch", Some(body)).await {
            Ok(a) => a,
            Err(e) => {
                let why = import::locate(&e, &items, &range);
                let before = if range.start == 0 {
                    "nothing before it was imported".to_string()
                } else {
                    format!(
                        "the {} task(s) before {} were imported ({} created, {} existing); \
                         with an idempotency_key on each task, importing the file again \
                         creates only what is missing",
                        range.start, items[range.start].place, all.created, all.existing
                    )
                };
                return Err(format!(
                    "{name}: the batch from {} to {} failed: {why}; {before}",
                    items[range.start].place,
                    items[range.end - 1].place
                ));
            }
        };
        all.created += answer.created;
        all.existing += answer.existing;
        all.tasks.extend(answer.tasks);
    }
    Ok(all)
}

/// Parse `--priority`.
pub fn parse_priority(s: &str) -> Result<Priority, String> {
    Priority::parse(s).ok_or_else(|| format!("{s:?} is not one of urgent, high, normal, low"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_from_hub_url() {
        assert_eq!(ws_url("http://127.0.0.1:4000"), "ws://127.0.0.1:4000/ws");
        assert_eq!(ws_url("https://hub.example/"), "wss://hub.example/ws");
    }
}
