//! The sidecar's settings file (`sidecar.toml`), as in the contract, with
//! optional extras (`ca_file`, `[reconnect]`). Reading and checking only: it never
//! acts on a setting.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    pub(crate) hub_url: String,
    /// PEM CA certificates to trust for a `wss://` hub, instead of the
    /// system's roots.
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    pub agent_id: String,
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) token_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) capabilities: Vec<String>,
    /// The model's context window, in tokens, said in `hello`: a task
    /// with a `context_budget_tokens` larger than this never comes here.
    /// Unset: only tasks without a budget come.
    #[serde(default)]
    pub(crate) context_window_tokens: Option<u64>,
    pub(crate) state_dir: PathBuf,
    pub(crate) runner: Runner,
    #[serde(default)]
    pub git: Option<Git>,
    #[serde(default)]
    pub(crate) reconnect: Reconnect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// The command does the task and exits: 0 is complete, else fail.
    Exec,
    /// The command only wakes the agent, which reports with
    /// `agentcom-sidecar complete|fail`.
    Wake,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Runner {
    pub(crate) mode: Mode,
    pub(crate) command: Vec<String>,
    #[serde(default = "default_timeout")]
    pub(crate) timeout_s: u64,
    /// The exit code by which the runner says the model provider limits
    /// it (`fail.class = "rate_limited"`); unset: none does.
    #[serde(default)]
    pub(crate) rate_limit_exit_code: Option<i32>,
    /// How long a rate-limited agent waits when its runner names no
    /// `retry_after_s`, in seconds.
    #[serde(default = "default_rate_limit_s")]
    pub(crate) rate_limit_default_s: u64,
    /// Wake mode: run when the hub cancels an attempt (in the runner's
    /// environment, with `AGENTCOM_CANCEL_REASON`), so the woken agent
    /// stops; empty: only the wake command's process group is stopped.
    #[serde(default)]
    pub(crate) cancel_command: Vec<String>,
}

fn default_timeout() -> u64 {
    3600
}

fn default_rate_limit_s() -> u64 {
    60
}

/// `[git]`: the agent's clone. With it every task gets a branch
/// `{agent_id}/{task_id}` from the freshly fetched main; with `repo` too,
/// the sidecar has that repository (it says so in `hello.repos`), takes
/// the tasks that name it and pushes their branch itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Git {
    /// The name the hub's `[[repos]]` gives this clone's repository.
    #[serde(default)]
    pub(crate) repo: Option<String>,
    pub(crate) repo_dir: PathBuf,
    #[serde(default = "default_remote")]
    pub(crate) remote: String,
    #[serde(default = "default_main")]
    pub(crate) main_branch: String,
}

fn default_remote() -> String {
    "origin".into()
}

fn default_main() -> String {
    "main".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reconnect {
    #[serde(default = "default_initial_ms")]
    pub(crate) initial_ms: u64,
    #[serde(default = "default_max_s")]
    pub(crate) max_s: u64,
}

fn default_initial_ms() -> u64 {
    500
}

fn default_max_s() -> u64 {
    30
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_ms: default_initial_ms(),
            max_s: default_max_s(),
        }
    }
}

impl SidecarConfig {
    pub fn load(path: &Path) -> Result<SidecarConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let cfg: SidecarConfig = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if !(self.hub_url.starts_with("ws://") || self.hub_url.starts_with("wss://")) {
            return Err(format!(
                "hub_url must start with ws:// or wss://, not {:?}",
                self.hub_url
            ));
        }
        if self.token.is_none() && self.token_file.is_none() {
            return Err("set token or token_file".into());
        }
        if self.runner.command.is_empty() {
            return Err("runner.command must name a program".into());
        }
        if self
            .runner
            .cancel_command
            .first()
            .is_some_and(|p| p.is_empty())
        {
            return Err("runner.cancel_command must name a program (or be left out)".into());
        }
        if self.runner.timeout_s == 0 {
            return Err("runner.timeout_s must be at least 1".into());
        }
        if let Some(code) = self.runner.rate_limit_exit_code {
            if !(1..=255).contains(&code) {
                return Err(format!(
                    "runner.rate_limit_exit_code must be an exit code from 1 to 255, not {code}"
                ));
            }
        }
        crate::validate::retry_after_s(self.runner.rate_limit_default_s)
            .map_err(|e| format!("runner.rate_limit_default_s: {e}"))?;
        Ok(())
    }

    /// The agent token, from `token` or `token_file`.
    pub(crate) fn token(&self) -> Result<String, String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_string());
        }
        let path = self.token_file.as_ref().expect("checked");
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("cannot read token_file {}: {e}", path.display()))
    }

    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "agentcom-sidecar-cfg-{name}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn contract_example_loads() {
        let p = write(
            "example",
            r#"
hub_url = "ws://127.0.0.1:4000/ws"
agent_id = "loash"
token = "abc"
capabilities = ["rust", "git"]
state_dir = "/var/lib/agentcom/loash"

[runner]
mode = "exec"
command = ["/path/to/agent-runner"]
timeout_s = 3600

[git]
repo = "app"
repo_dir = "/home/agent/work/repo"
remote = "origin"
main_branch = "main"
"#,
        );
        let c = SidecarConfig::load(&p).unwrap();
        assert_eq!(c.agent_id, "loash");
        assert_eq!(c.runner.mode, Mode::Exec);
        let git = c.git.unwrap();
        assert_eq!(git.main_branch, "main");
        assert_eq!(git.repo.as_deref(), Some("app"));
        assert_eq!(c.reconnect.max_s, 30);
        std::fs::remove_file(p).ok();
    }

    #[test]
    fn the_deploy_example_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sidecar.example.toml");
        let c = SidecarConfig::load(&p).unwrap();
        assert_eq!(c.agent_id, "loash");
        assert_eq!(c.runner.mode, Mode::Exec);
        let git = c.git.unwrap();
        assert_eq!(git.repo.as_deref(), Some("app"));
        assert_eq!(git.remote, "origin");
        assert_eq!(c.reconnect.initial_ms, 500);
        assert_eq!(c.runner.rate_limit_exit_code, Some(75));
        assert_eq!(c.runner.rate_limit_default_s, 60);
        assert_eq!(c.context_window_tokens, Some(200_000));
    }

    #[test]
    fn rate_limit_settings_are_checked() {
        let base = "hub_url = \"ws://x\"\nagent_id = \"a\"\ntoken = \"t\"\nstate_dir = \"/tmp\"\n[runner]\nmode = \"exec\"\ncommand = [\"x\"]\n";
        let p = write("rl-default", base);
        let c = SidecarConfig::load(&p).unwrap();
        assert_eq!(c.runner.rate_limit_exit_code, None);
        assert_eq!(c.runner.rate_limit_default_s, 60);
        assert_eq!(c.context_window_tokens, None);
        for (name, extra, said) in [
            (
                "rl-zero",
                "rate_limit_exit_code = 0\n",
                "from 1 to 255, not 0",
            ),
            (
                "rl-big",
                "rate_limit_exit_code = 256\n",
                "from 1 to 255, not 256",
            ),
            (
                "rl-long",
                "rate_limit_default_s = 86401\n",
                "runner.rate_limit_default_s: retry_after_s must be at most 86400",
            ),
        ] {
            let p = write(name, &format!("{base}{extra}"));
            let err = SidecarConfig::load(&p).unwrap_err();
            assert!(err.contains(said), "{name}: {err}");
            std::fs::remove_file(p).ok();
        }
        std::fs::remove_file(p).ok();
    }

    #[test]
    fn mistakes_are_named() {
        let p = write("bad", "hub_url = \"http://x\"\nagent_id = \"a\"\ntoken = \"t\"\nstate_dir = \"/tmp\"\n[runner]\nmode = \"exec\"\ncommand = [\"x\"]\n");
        assert!(SidecarConfig::load(&p).unwrap_err().contains("ws://"));
        let p2 = write("typo", "hub_url = \"ws://x\"\nagent_id = \"a\"\ntoken = \"t\"\nstate_dir = \"/tmp\"\ncapabilites = []\n[runner]\nmode = \"exec\"\ncommand = [\"x\"]\n");
        assert!(SidecarConfig::load(&p2)
            .unwrap_err()
            .contains("capabilites"));
        std::fs::remove_file(p).ok();
        std::fs::remove_file(p2).ok();
    }
}
