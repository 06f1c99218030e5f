//! A real hub process in a temporary directory, and a small HTTP client
//! for its API (with the admin token unless told otherwise), over HTTP or,
//! for a hub started with TLS, HTTPS trusting the test's CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::pg;
use crate::procs::{bin, free_port, Proc};
use crate::wait_until;

pub struct Hub {
    pub dir: PathBuf,
    pub port: u16,
    pub url: String,
    pub token: String,
    /// The CA file a client needs to trust this hub (TLS hubs only).
    pub ca_file: Option<PathBuf>,
    env: Vec<(String, String)>,
    /// The open-file limits (soft, hard) the hub runs under, if set.
    nofile: Option<(u64, u64)>,
    /// The settings file passed with `--config`, if any.
    config: Option<PathBuf>,
    proc: Proc,
    http: ureq::Agent,
    /// Another hub may lead the store: being up as a standby is enough at
    /// a (re)start. Otherwise a (re)start waits until this hub leads.
    may_stand_by: bool,
    /// The hub's own database when the run's store is PostgreSQL (see
    /// [`crate::pg`]); the same across restarts. Last, so that it is
    /// dropped after the hub process is killed.
    db: Option<pg::Database>,
}

impl Hub {
    /// Start a hub with its data under `root/hub`; `env` adds
    /// `AGENTCOM_*` settings (timeouts shrunk to seconds, say).
    pub fn start(root: &Path, env: &[(&str, &str)]) -> Hub {
        Self::start_with(root, env, None)
    }

    /// As [`Hub::start`]; with `ca_file`, the hub serves TLS (`env` names
    /// its `AGENTCOM_TLS__*` files) and the client speaks HTTPS trusting
    /// exactly the CA certificates in that PEM file.
    pub fn start_with(root: &Path, env: &[(&str, &str)], ca_file: Option<&Path>) -> Hub {
        Self::start_full(root, env, ca_file, None, None, false)
    }

    /// As [`Hub::start`], under open-file limits (`soft`, `hard`) set by
    /// `prlimit`, which then runs the hub as the same process.
    pub fn start_with_nofile(root: &Path, env: &[(&str, &str)], soft: u64, hard: u64) -> Hub {
        Self::start_full(root, env, None, Some((soft, hard)), None, false)
    }

    /// As [`Hub::start`], with the settings file `root/hub/hub.toml`
    /// holding `toml` (passed with `--config`; `env` still overrides it).
    pub fn start_with_config(root: &Path, toml: &str, env: &[(&str, &str)]) -> Hub {
        Self::start_full(root, env, None, None, Some(toml), false)
    }

    fn start_full(
        root: &Path,
        env: &[(&str, &str)],
        ca_file: Option<&Path>,
        nofile: Option<(u64, u64)>,
        config_toml: Option<&str>,
        may_stand_by: bool,
    ) -> Hub {
        let dir = root.join("hub");
        std::fs::create_dir_all(&dir).unwrap();
        let config_file = config_toml.map(|text| {
            let path = dir.join("hub.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        let port = free_port();
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)));
        if let Some(ca) = ca_file {
            config = config.tls_config(trusting(ca));
        }
        let http: ureq::Agent = config.build().into();
        let scheme = if ca_file.is_some() { "https" } else { "http" };
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // On a PostgreSQL run, a fresh database of its own (unless the
        // test chose the store backend itself).
        let db = (pg::backend() == pg::Backend::Postgres
            && !env.iter().any(|(k, _)| k == "AGENTCOM_STORE__BACKEND"))
        .then(pg::Database::create);
        let store = pg::store_env(&env, db.as_ref().map(|d| d.url.as_str()));
        env.extend(store);
        let proc = Proc {
            child: None,
            log: dir.join("hub.log"),
        };
        let mut hub = Hub {
            url: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            port,
            token: String::new(),
            ca_file: ca_file.map(Path::to_path_buf),
            env,
            nofile,
            config: config_file,
            proc,
            http,
            may_stand_by,
            db,
        };
        hub.restart();
        hub
    }

    /// As [`Hub::start`], for one of several hubs sharing a store: ready
    /// once it answers, leading or standing by.
    pub fn start_may_stand_by(root: &Path, env: &[(&str, &str)]) -> Hub {
        Self::start_full(root, env, None, None, None, true)
    }

    /// Set (or replace) an `AGENTCOM_*` setting for the next restart.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Start (again) on the same port and data dir; wait until healthy.
    pub fn restart(&mut self) {
        let mut cmd = match self.nofile {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}"))
                    .arg("--")
                    .arg(bin("agentcom-hub"));
                c
            }
            None => Command::new(bin("agentcom-hub")),
        };
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--data-dir",
        ])
        .arg(self.dir.join("data"))
        .args(
            self.config
                .iter()
                .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
        )
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .env(
            "RUST_LOG",
            std::env::var("AGENTCOM_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.proc = Proc::spawn(cmd, &self.dir.join("hub.log"));
        let url = format!("{}/healthz", self.url);
        let http = self.http.clone();
        let proc = &mut self.proc;
        let may_stand_by = self.may_stand_by;
        wait_until(
            Duration::from_secs(20),
            "the hub to answer /healthz (and to lead, unless it may stand by)",
            || {
                assert!(
                    proc.running(),
                    "the hub exited at start:\n{}",
                    proc.log_text()
                );
                let mut r = http.get(&url).call().ok().filter(|r| r.status() == 200)?;
                let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                (may_stand_by || body["role"] != "standby").then_some(())
            },
        );
        self.token = std::fs::read_to_string(self.dir.join("data").join("admin.token"))
            .expect("admin.token written on first start")
            .trim()
            .to_string();
    }

    /// The URL of this hub's PostgreSQL database (PostgreSQL runs only).
    pub fn store_url(&self) -> Option<&str> {
        self.db.as_ref().map(|d| d.url.as_str())
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Whether the hub process is still running.
    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// SIGTERM; the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.proc.terminate(Duration::from_secs(15))
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn log(&self) -> String {
        self.proc.log_text()
    }

    pub fn ws_url(&self) -> String {
        let scheme = if self.ca_file.is_some() { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/ws", self.port)
    }

    /// This hub's HTTP client (HTTPS with the CA for a TLS hub).
    pub fn http(&self) -> &ureq::Agent {
        &self.http
    }

    /// Any request, with any token and raw body: (status, JSON body or Null).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = token.map(|t| format!("Bearer {t}"));
        let resp = match method {
            "GET" | "DELETE" => {
                let mut r = if method == "GET" {
                    self.http.get(&url)
                } else {
                    self.http.delete(&url)
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = self.http.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some(b) => r.header("Content-Type", "application/json").send(b),
                    None => r.send_empty(),
                }
            }
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An admin request with a JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        self.raw(method, path, Some(&self.token), text.as_deref())
    }

    /// Like [`Hub::call`] but the status must be 2xx.
    /// Run the admin CLI (`agentcom-hub ARGS --hub URL --data-dir DIR`,
    /// the admin token read from the data dir); its stdout. It must succeed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(crate::procs::bin("agentcom-hub"))
            .args(args)
            .args(["--hub", &self.url, "--data-dir"])
            .arg(self.dir.join("data"))
            .env_remove("AGENTCOM_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} → {status}: {v}"
        );
        v
    }

    /// Create an agent; its token.
    pub fn add_agent(&self, id: &str, capabilities: &[&str]) -> String {
        let v = self.ok(
            "POST",
            "/api/agents",
            Some(json!({ "id": id, "capabilities": capabilities })),
        );
        v["token"].as_str().expect("token").to_string()
    }

    pub fn submit(&self, body: Value) -> Value {
        let (status, v) = self.call("POST", "/api/tasks", Some(body));
        assert_eq!(status, 201, "create → {status}: {v}");
        v
    }

    pub fn task(&self, id: &str) -> Value {
        self.ok("GET", &format!("/api/tasks/{id}"), None)
    }

    pub fn agent(&self, id: &str) -> Value {
        self.ok("GET", &format!("/api/agents/{id}"), None)
    }

    pub fn state(&self) -> Value {
        self.ok("GET", "/api/state", None)
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// One sample of `/metrics`, by its full name with labels.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics();
        sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }

    /// Every task (all pages, every field), optionally of one status.
    pub fn tasks(&self, status: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/api/tasks?limit=1000&fields=description,metadata,result".to_string();
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.ok("GET", &path, None);
            out.extend(page["tasks"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// `clients` concurrent HTTP clients each create `per_client` tasks
    /// titled `<prefix> <client>-<n>`; every create must answer 201.
    pub fn submit_concurrently(&self, clients: usize, per_client: usize, prefix: &str) {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let (url, token, prefix) =
                    (self.url.clone(), self.token.clone(), prefix.to_string());
                std::thread::spawn(move || {
                    let http: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    for n in 0..per_client {
                        let r = http
                            .post(format!("{url}/api/tasks"))
                            .header("Authorization", format!("Bearer {token}"))
                            .send_json(json!({ "title": format!("{prefix} {c}-{n}") }))
                            .expect("POST /api/tasks");
                        assert_eq!(r.status(), 201, "create");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a submitting client failed");
        }
    }

    /// Wait until a task has the status.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        wait_until(timeout, &format!("task {id} to be {status}"), || {
            let t = self.task(id);
            (t["status"] == status).then_some(t)
        })
    }

    /// Wait until an agent is in the state.
    pub fn wait_agent(&self, id: &str, state: &str, timeout: Duration) -> Value {
        wait_until(timeout, &format!("agent {id} to be {state}"), || {
            let a = self.agent(id);
            (a["state"] == state).then_some(a)
        })
    }
}

/// A TLS client configuration that trusts exactly the certificates of the
/// PEM file `ca_file`.
pub fn trusting(ca_file: &Path) -> ureq::tls::TlsConfig {
    let pem = std::fs::read(ca_file).expect("the CA file");
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item.expect("PEM") {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    assert!(!certs.is_empty(), "no certificate in {}", ca_file.display());
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
        .build()
}

/// The events of a task's history, in order.
pub fn events(task: &Value) -> Vec<String> {
    task["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| e["event"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// When `event` first happened to `task` (as the API shows it, with its
/// history), by its history.
pub fn event_at(task: &Value, event: &str) -> String {
    task["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["event"] == event)
        .unwrap_or_else(|| panic!("no {event} in {task}"))["at"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Milliseconds between two RFC 3339 times (b − a).
pub fn millis_between(a: &str, b: &str) -> i64 {
    parse_ms(b) - parse_ms(a)
}

/// Milliseconds since the epoch of an RFC 3339 UTC time like
/// `2026-11-23T10:00:00.123Z`.
pub fn parse_ms(t: &str) -> i64 {
    let (date, time) = t.trim_end_matches('Z').split_once('T').expect("RFC 3339");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + h[0]) * 60 + h[1]) * 60_000 + h[2] * 1000 + ms
}

/// One sample of a `/metrics` text, by its full name with labels.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_times() {
        assert_eq!(super::parse_ms("1970-01-01T00:00:01.500Z"), 1500);
        assert_eq!(
            super::millis_between("2026-11-23T23:59:59.900Z", "2026-11-24T00:00:00.100Z"),
            200
        );
    }
}
