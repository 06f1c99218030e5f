//! The admin subcommands: `agent add|list|revoke|pause|resume`, `task
//! submit|list|show|cancel|retry`, `lane pause|resume`. Each is one HTTP call to a running hub
//! with the admin token (from `AGENTCOM_ADMIN_TOKEN` or
//! `<data_dir>/admin.token`), printing a human answer (or JSON). An
//! `https://` hub is trusted through the system's roots, or exactly the
//! CA certificates of `--ca-file`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentcom_protocol::{
    AgentCreated, AgentList, ApiError, NewAgent, NewTask, Priority, Task, TaskPage,
};
use agentcom_tls::{HandshakeFailure, PemFile};
use awc::error::{ConnectError, SendRequestError};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::token_file;

/// Where the hub is and how to prove we are its admin.
pub struct Conn {
    pub hub: String,
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

struct Client {
    base: String,
    token: String,
    http: awc::Client,
}

impl Client {
    fn new(conn: &Conn) -> Result<Client, String> {
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
        if conn.hub.starts_with("https://") || conn.ca_file.is_some() {
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
        Ok(Client {
            base: conn.hub.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, String> {
        let url = format!("{}{path}", self.base);
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
        let mut resp = sent.map_err(|e| {
            let why = match &e {
                SendRequestError::Connect(ConnectError::Io(io)) => {
                    match agentcom_tls::handshake_failure(io) {
                        Some(f @ HandshakeFailure::Untrusted(_)) => format!(
                            "{f}; pass --ca-file (or set AGENTCOM_CA_FILE) with the PEM file of the CA that signed it"
                        ),
                        Some(f) => f.to_string(),
                        None => e.to_string(),
                    }
                }
                _ => e.to_string(),
            };
            format!("cannot reach the hub at {}: {why}", self.base)
        })?;
        let bytes = resp
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if !resp.status().is_success() {
            return Err(match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => format!(
                    "{} ({}): {}",
                    e.error.code,
                    resp.status().as_u16(),
                    e.error.message
                ),
                Err(_) => format!("{}: {}", resp.status(), String::from_utf8_lossy(&bytes)),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("unexpected answer from the hub: {e}"))
    }
}

fn ws_url(hub: &str) -> String {
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

pub async fn agent(conn: Conn, cmd: AgentCmd) -> Result<(), String> {
    let c = Client::new(&conn)?;
    match cmd {
        AgentCmd::Add {
            name,
            capabilities,
            state_dir,
            runner,
        } => {
            let body = serde_json::to_value(NewAgent {
                id: name.clone(),
                capabilities,
            })
            .expect("serialises");
            let created: AgentCreated = c.call("POST", "/api/agents", Some(body)).await?;
            if conn.json {
                print_json(&created);
                return Ok(());
            }
            let caps: Vec<String> = created
                .capabilities
                .iter()
                .map(|c| format!("{c:?}"))
                .collect();
            let state_dir = state_dir.unwrap_or_else(|| format!("/var/lib/agentcom/{name}"));
            let runner = runner.unwrap_or_else(|| "/path/to/agent-runner".into());
            eprintln!("agent {name} created; its token is shown only this once. Save this as its sidecar.toml:");
            // The CA the CLI trusted is the one the sidecar needs (at this
            // path on the agent's machine).
            let ca_line = conn
                .ca_file
                .as_deref()
                .map(|p| {
                    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
                    format!("ca_file = {:?}\n", p.display().to_string())
                })
                .unwrap_or_default();
            println!(
                "hub_url = {:?}\nagent_id = {:?}\ntoken = {:?}\ncapabilities = [{}]\nstate_dir = {:?}\n{ca_line}\n[runner]\nmode = \"exec\"\ncommand = [{:?}]\ntimeout_s = 3600",
                ws_url(&conn.hub),
                created.id,
                created.token,
                caps.join(", "),
                state_dir,
                runner
            );
        }
        AgentCmd::List => {
            let list: AgentList = c.call("GET", "/api/agents", None).await?;
            if conn.json {
                print_json(&list);
                return Ok(());
            }
            println!(
                "{:<20} {:<9} {:<10} {:<32} CAPABILITIES",
                "AGENT", "STATE", "CONNECTED", "TASK"
            );
            for a in list.agents {
                let state = if a.paused {
                    format!("{},paused", a.state)
                } else {
                    a.state.to_string()
                };
                let task = a
                    .current_task
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<20} {:<9} {:<10} {:<32} {}",
                    a.id,
                    state,
                    a.connected,
                    task,
                    a.capabilities.join(",")
                );
            }
        }
        AgentCmd::Revoke { name } => {
            let _: Value = c
                .call("DELETE", &format!("/api/agents/{name}"), None)
                .await?;
            println!("revoked {name}");
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
        TaskCmd::Submit { spec } => {
            let t: Task = c
                .call(
                    "POST",
                    "/api/tasks",
                    Some(serde_json::to_value(spec).expect("serialises")),
                )
                .await?;
            if conn.json {
                print_json(&t);
            } else {
                println!("{} {} {}", t.id, t.status, t.title);
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
            println!(
                "{:<26} {:<9} {:<7} {:>3} {:>3} {:<16} TITLE",
                "ID", "STATUS", "PRIO", "GEN", "TRY", "AGENT"
            );
            for t in page.tasks {
                println!(
                    "{:<26} {:<9} {:<7} {:>3} {:>3} {:<16} {}",
                    t.id,
                    t.status,
                    t.priority,
                    t.generation,
                    t.attempts,
                    t.assigned_to.as_deref().unwrap_or("-"),
                    t.title
                );
            }
        }
        TaskCmd::Show { id } => {
            let t: Value = c.call("GET", &format!("/api/tasks/{id}"), None).await?;
            print_json(&t);
        }
        TaskCmd::Cancel { id } => {
            let t: Task = c
                .call("POST", &format!("/api/tasks/{id}/cancel"), None)
                .await?;
            println!("{} {}", t.id, t.status);
        }
        TaskCmd::Retry { id } => {
            let t: Task = c
                .call("POST", &format!("/api/tasks/{id}/retry"), None)
                .await?;
            println!("{} {}", t.id, t.status);
        }
        TaskCmd::Why { id } => {
            let why: Value = c
                .call("GET", &format!("/api/tasks/{id}/explain"), None)
                .await?;
            println!("{} is {}.", id, why["status"].as_str().unwrap_or("?"));
            for r in why["reasons"].as_array().into_iter().flatten() {
                println!("- {}", r.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
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
