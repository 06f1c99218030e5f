//! A real sidecar process: its agent created on the hub, its config and
//! runner script written to a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::fakehub::FakeHub;
use crate::hub::Hub;
use crate::procs::{bin, Proc};

/// Where a sidecar connects: the real hub, or a [`FakeHub`].
pub trait HubAddress {
    fn ws_url(&self) -> String;
    /// The CA file that proves the hub's certificate (a TLS hub).
    fn ca_file(&self) -> Option<PathBuf> {
        None
    }
}

impl HubAddress for Hub {
    fn ws_url(&self) -> String {
        Hub::ws_url(self)
    }
    fn ca_file(&self) -> Option<PathBuf> {
        self.ca_file.clone()
    }
}

impl HubAddress for FakeHub {
    fn ws_url(&self) -> String {
        FakeHub::ws_url(self)
    }
}

pub struct Sidecar {
    pub id: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    proc: Proc,
}

/// Write an executable `sh` script.
pub fn script(path: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

impl Sidecar {
    /// Create agent `id` on the hub and start its sidecar with `runner`
    /// (an `sh` script body) in `exec` mode. `extra` is appended to the
    /// config file (more tables, such as `[git]`).
    pub fn start(
        root: &Path,
        hub: &Hub,
        id: &str,
        capabilities: &[&str],
        runner: &str,
        extra: &str,
    ) -> Sidecar {
        let token = hub.add_agent(id, capabilities);
        Self::start_with_token(root, hub, id, &token, capabilities, "exec", runner, extra)
    }

    /// As [`Sidecar::start`], with `top` (lines of top-level keys, such as
    /// `context_window_tokens = 200000`) written before the first table.
    pub fn start_with_top(
        root: &Path,
        hub: &Hub,
        id: &str,
        capabilities: &[&str],
        runner: &str,
        top: &str,
    ) -> Sidecar {
        let token = hub.add_agent(id, capabilities);
        Self::launch(root, hub, id, &token, capabilities, "exec", runner, top, "")
    }

    #[allow(clippy::too_many_arguments)]
    pub fn start_with_token(
        root: &Path,
        hub: &impl HubAddress,
        id: &str,
        token: &str,
        capabilities: &[&str],
        mode: &str,
        runner: &str,
        extra: &str,
    ) -> Sidecar {
        Self::launch(root, hub, id, token, capabilities, mode, runner, "", extra)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        root: &Path,
        hub: &impl HubAddress,
        id: &str,
        token: &str,
        capabilities: &[&str],
        mode: &str,
        runner: &str,
        top: &str,
        extra: &str,
    ) -> Sidecar {
        let mut s = Self::prepare(root, hub, id, token, capabilities, mode, runner, top, extra);
        s.restart();
        s
    }

    /// As [`Sidecar::start_with_token`], with `top` (top-level keys), but
    /// not started: its config and runner script written (start it with
    /// [`Sidecar::restart`], or run [`Sidecar::selftest`]).
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        root: &Path,
        hub: &impl HubAddress,
        id: &str,
        token: &str,
        capabilities: &[&str],
        mode: &str,
        runner: &str,
        top: &str,
        extra: &str,
    ) -> Sidecar {
        let dir = root.join(format!("sidecar-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let runner = script(&dir.join("runner.sh"), runner);
        let caps: Vec<String> = capabilities.iter().map(|c| format!("{c:?}")).collect();
        let config = dir.join("sidecar.toml");
        // A TLS hub: trust its CA (a top-level key, so before any table).
        let ca_line = hub
            .ca_file()
            .map(|p| format!("ca_file = {:?}\n", p.display().to_string()))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "hub_url = {:?}\nagent_id = {id:?}\ntoken = {token:?}\ncapabilities = [{}]\nstate_dir = {:?}\n{ca_line}{top}\n[reconnect]\ninitial_ms = 100\nmax_s = 1\n\n[runner]\nmode = {mode:?}\ncommand = [{:?}]\ntimeout_s = 3600\n{extra}\n",
                hub.ws_url(),
                caps.join(", "),
                dir.join("state").display().to_string(),
                runner.display().to_string(),
            ),
        )
        .unwrap();
        Sidecar {
            id: id.to_string(),
            dir: dir.clone(),
            config,
            proc: Proc {
                child: None,
                log: dir.join("sidecar.log"),
            },
        }
    }

    /// `agentcom-sidecar selftest --config <its config>`: its exit code,
    /// what it printed (stdout), and what it said on stderr.
    pub fn selftest(&self) -> (Option<i32>, String, String) {
        let out = Command::new(bin("agentcom-sidecar"))
            .arg("selftest")
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run agentcom-sidecar selftest");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Its `state_dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// What exists below `root` that is neither in the state dir nor one
    /// of the sidecar's own files (config, runner script, log) nor named
    /// in `also_allowed` (names of files or folders the test itself
    /// writes, anywhere; what is below such a folder too).
    pub fn strays(&self, root: &Path, also_allowed: &[&str]) -> Vec<PathBuf> {
        let own = self
            .dir
            .strip_prefix(root)
            .unwrap_or(&self.dir)
            .to_path_buf();
        let state = own.join("state");
        files_under(root)
            .into_iter()
            .filter(|p| *p != own && !p.starts_with(&state))
            .filter(|p| {
                let own_file = p.parent() == Some(own.as_path())
                    && p.file_name().is_some_and(|n| {
                        ["sidecar.toml", "runner.sh", "sidecar.log"]
                            .contains(&&*n.to_string_lossy())
                    });
                let allowed = p
                    .components()
                    .any(|c| also_allowed.contains(&&*c.as_os_str().to_string_lossy()));
                !own_file && !allowed
            })
            .collect()
    }

    /// Connect to any of `urls` (`hub_urls` in its config instead of its
    /// one `hub_url`), from its next (re)start.
    pub fn use_hub_urls(&self, urls: &[String]) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let (_, rest) = text
            .split_once('\n')
            .filter(|(first, _)| first.starts_with("hub_url = "))
            .unwrap_or_else(|| panic!("the config starts with hub_url:\n{text}"));
        let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        std::fs::write(
            &self.config,
            format!("hub_urls = [{}]\n{rest}", list.join(", ")),
        )
        .unwrap();
    }

    pub fn restart(&mut self) {
        let mut cmd = Command::new(bin("agentcom-sidecar"));
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info");
        self.proc = Proc::spawn(cmd, &self.dir.join("sidecar.log"));
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    pub fn terminate(&mut self) -> Option<i32> {
        self.proc.terminate(Duration::from_secs(15))
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    pub fn log(&self) -> String {
        self.proc.log_text()
    }
}

/// Every file and folder below `root` (recursively, symlinks not
/// followed), as paths relative to it.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            }
        }
    }
    out.sort();
    out
}
