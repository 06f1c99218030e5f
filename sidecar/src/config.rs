//! The sidecar's settings file (`sidecar.toml`), as in the contract, with
//! optional extras (`ca_file`, `[reconnect]`, `selftest_interval_s`,
//! `hub_urls` instead of `hub_url` for several hubs on one database), and
//! the defaults that depend on the machine (`state_dir`: see
//! [`default_state_dir`]). Reading and checking only: it never acts on a
//! setting (it creates no directory and opens no socket).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// `hub_url` as written: the one hub.
    #[serde(default, rename = "hub_url")]
    hub_url_setting: Option<String>,
    /// `hub_urls` as written: several hubs on one database, one of them
    /// leading (instead of `hub_url`).
    #[serde(default, rename = "hub_urls")]
    hub_urls_setting: Option<Vec<String>>,
    /// The hubs' WebSocket addresses in the order they are tried:
    /// `hub_url` as a list of one, or `hub_urls` (set by
    /// [`SidecarConfig::load`]).
    #[serde(skip)]
    pub(crate) hub_urls: Vec<String>,
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
    /// `state_dir` as written; unset: [`default_state_dir`].
    #[serde(default, rename = "state_dir")]
    state_dir_setting: Option<PathBuf>,
    /// The state dir in use: `state_dir`, or the default (set by
    /// [`SidecarConfig::load`]).
    #[serde(skip)]
    pub(crate) state_dir: PathBuf,
    /// The file these settings came from (for messages that name it).
    #[serde(skip)]
    pub(crate) path: PathBuf,
    /// How often the daemon repeats its local self-test, in seconds.
    #[serde(default = "default_selftest_interval_s")]
    pub(crate) selftest_interval_s: u64,
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

fn default_selftest_interval_s() -> u64 {
    300
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
        Self::parse(&text, path)
    }

    /// The settings in `text`, as if read from `path` (named in errors;
    /// `join` checks a config before it writes it).
    pub fn parse(text: &str, path: &Path) -> Result<SidecarConfig, String> {
        let mut cfg: SidecarConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.hub_urls = hub_urls(cfg.hub_url_setting.take(), cfg.hub_urls_setting.take())?;
        cfg.check()?;
        cfg.path = path.to_path_buf();
        cfg.state_dir = match &cfg.state_dir_setting {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err("state_dir must name a directory (or be left out)".into())
            }
            Some(dir) => dir.clone(),
            None => default_state_dir(&cfg.agent_id)
                .map_err(|e| format!("{e}: set state_dir in {}", path.display()))?,
        };
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        crate::validate::agent_id(&self.agent_id)?;
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
        if self.selftest_interval_s == 0 {
            return Err("selftest_interval_s must be at least 1".into());
        }
        Ok(())
    }

    /// What to do when the state dir cannot be used, in words.
    pub(crate) fn state_dir_fix(&self) -> String {
        format!(
            "set state_dir in {} to a directory this user can write",
            self.path.display()
        )
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

    /// The setting that names the hubs, for messages: `hub_url` or
    /// `hub_urls`.
    pub(crate) fn hub_setting(&self) -> &'static str {
        if self.hub_urls.len() == 1 {
            "hub_url"
        } else {
            "hub_urls"
        }
    }
}

/// The most hubs `hub_urls` may name.
pub(crate) const MAX_HUB_URLS: usize = 16;

/// The hubs from `hub_url` or `hub_urls` (exactly one of them), each
/// checked by [`check_hub_url`].
fn hub_urls(one: Option<String>, several: Option<Vec<String>>) -> Result<Vec<String>, String> {
    match (one, several) {
        (Some(_), Some(_)) => Err(
            "set hub_url (one hub) or hub_urls (several hubs on one database), not both".into(),
        ),
        (None, None) => Err(
            "set hub_url (the hub's WebSocket address, ws://HOST:PORT/ws) or hub_urls (several hubs on one database)".into(),
        ),
        (Some(url), None) => {
            check_hub_url(&url)?;
            Ok(vec![url])
        }
        (None, Some(urls)) => {
            if urls.is_empty() || urls.len() > MAX_HUB_URLS {
                return Err(format!(
                    "hub_urls must name 1 to {MAX_HUB_URLS} hubs, not {}",
                    urls.len()
                ));
            }
            for (i, url) in urls.iter().enumerate() {
                check_url_named(&format!("hub_urls[{i}]"), url)?;
                if urls[..i].contains(url) {
                    return Err(format!("hub_urls names {url:?} twice"));
                }
            }
            Ok(urls)
        }
    }
}

/// Whether `url` is a hub's WebSocket address, `ws://host[:port]/ws` or
/// `wss://…/ws`; if not, the error says why and names the address to
/// write instead.
pub(crate) fn check_hub_url(url: &str) -> Result<(), String> {
    check_url_named("hub_url", url)
}

/// [`check_hub_url`] for the setting `name` (`hub_url`, `hub_urls[1]`).
fn check_url_named(name: &str, url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{name} must start with ws:// or wss://, not {url:?}"
        ));
    };
    if scheme != "ws" && scheme != "wss" {
        let hint = match scheme {
            "http" => " (for a hub at http://…, use ws://…/ws)",
            "https" => " (for a hub at https://…, use wss://…/ws)",
            _ => "",
        };
        return Err(format!(
            "{name} must start with ws:// or wss://, not {url:?}{hint}"
        ));
    }
    let authority = authority(rest);
    if authority.is_empty() {
        return Err(format!("{name} {url:?} names no host"));
    }
    if &rest[authority.len()..] != "/ws" {
        return Err(format!(
            "{name} must be the hub's WebSocket address, ending in /ws: write {:?}, not {url:?}",
            ws_address(url).expect("a ws:// or wss:// URL with a host")
        ));
    }
    Ok(())
}

/// `url` with its path (and anything after it) replaced by `/ws`: the
/// address a hub at its scheme and host answers sidecars on. None if it is
/// not a `ws://` or `wss://` URL with a host.
pub(crate) fn ws_address(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = authority(rest);
    ((scheme == "ws" || scheme == "wss") && !authority.is_empty())
        .then(|| format!("{scheme}://{authority}/ws"))
}

/// The `host[:port]` a ws:// or wss:// `url` connects to, with the
/// scheme's port (80, 443) when it names none. None if it is not such a
/// URL.
pub(crate) fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let port = match scheme {
        "ws" => 80,
        "wss" => 443,
        _ => return None,
    };
    let authority = authority(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return None;
    }
    // A port follows the last ':' that is not inside an IPv6 literal.
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(before, _)| !before.starts_with('[') || before.ends_with(']'));
    Some(if has_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    })
}

/// The authority part of what follows `scheme://`.
fn authority(rest: &str) -> &str {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// The state dir when `state_dir` is unset: `/var/lib/agentcom/<agent_id>`
/// for root; otherwise `$XDG_STATE_HOME/agentcom/<agent_id>`, else
/// `$HOME/.local/state/agentcom/<agent_id>`. `agent_id` must be valid
/// (it becomes a path's last part). Err when there is no `HOME` to put it
/// under.
pub fn default_state_dir(agent_id: &str) -> Result<PathBuf, String> {
    crate::validate::agent_id(agent_id)?;
    state_dir_for(
        agent_id,
        nix::unistd::geteuid().is_root(),
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_state_dir`] for a user who is root or not, with these
/// `XDG_STATE_HOME` and `HOME`. A relative or empty `XDG_STATE_HOME` is
/// ignored (the XDG rule), and so is a relative `HOME`.
fn state_dir_for(
    agent_id: &str,
    root: bool,
    xdg_state_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, String> {
    if root {
        return Ok(Path::new("/var/lib/agentcom").join(agent_id));
    }
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(state) = absolute(xdg_state_home) {
        return Ok(state.join("agentcom").join(agent_id));
    }
    match absolute(home) {
        Some(home) => Ok(home.join(".local/state/agentcom").join(agent_id)),
        None => Err("no default state_dir: neither XDG_STATE_HOME nor HOME is set".into()),
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
        let base = "hub_url = \"ws://x/ws\"\nagent_id = \"a\"\ntoken = \"t\"\nstate_dir = \"/tmp\"\n[runner]\nmode = \"exec\"\ncommand = [\"x\"]\n";
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
        let p2 = write("typo", "hub_url = \"ws://x/ws\"\nagent_id = \"a\"\ntoken = \"t\"\nstate_dir = \"/tmp\"\ncapabilites = []\n[runner]\nmode = \"exec\"\ncommand = [\"x\"]\n");
        assert!(SidecarConfig::load(&p2)
            .unwrap_err()
            .contains("capabilites"));
        std::fs::remove_file(p).ok();
        std::fs::remove_file(p2).ok();
    }

    const REST: &str =
        "agent_id = \"a\"\ntoken = \"t\"\nstate_dir = \"/tmp\"\n[runner]\nmode = \"exec\"\ncommand = [\"x\"]\n";

    #[test]
    fn a_hub_url_that_is_not_the_websocket_address_is_refused_with_the_right_one() {
        for (name, url, fix) in [
            ("no-path", "ws://127.0.0.1:4000", "ws://127.0.0.1:4000/ws"),
            ("slash", "ws://host:4000/", "ws://host:4000/ws"),
            (
                "dash",
                "wss://hub.example.org/dashboard",
                "wss://hub.example.org/ws",
            ),
            ("trailing", "ws://h:1/ws/", "ws://h:1/ws"),
            ("query", "ws://h:1/ws?x=1", "ws://h:1/ws"),
        ] {
            let p = write(
                &format!("url-{name}"),
                &format!("hub_url = {url:?}\n{REST}"),
            );
            let err = SidecarConfig::load(&p).unwrap_err();
            assert!(err.contains(&format!("write {fix:?}")), "{url}: {err}");
            assert!(err.contains("ending in /ws"), "{url}: {err}");
            std::fs::remove_file(p).ok();
        }
        let p = write("url-https", &format!("hub_url = \"https://h/ws\"\n{REST}"));
        let err = SidecarConfig::load(&p).unwrap_err();
        assert!(err.contains("use wss://…/ws"), "{err}");
        assert!(check_hub_url("ws:///ws")
            .unwrap_err()
            .contains("names no host"));
        assert_eq!(check_hub_url("ws://[::1]:4000/ws"), Ok(()));
        std::fs::remove_file(p).ok();
    }

    #[test]
    fn hub_urls_is_a_list_of_hubs_and_hub_url_a_list_of_one() {
        let p = write("one", &format!("hub_url = \"ws://a:4000/ws\"\n{REST}"));
        let c = SidecarConfig::load(&p).unwrap();
        assert_eq!(c.hub_urls, ["ws://a:4000/ws"]);
        assert_eq!(c.hub_setting(), "hub_url");
        let p2 = write(
            "several",
            &format!("hub_urls = [\"ws://a:4000/ws\", \"wss://b/ws\"]\n{REST}"),
        );
        let c = SidecarConfig::load(&p2).unwrap();
        assert_eq!(c.hub_urls, ["ws://a:4000/ws", "wss://b/ws"]);
        assert_eq!(c.hub_setting(), "hub_urls");
        // A list of one is one hub.
        std::fs::write(&p2, format!("hub_urls = [\"ws://a/ws\"]\n{REST}")).unwrap();
        assert_eq!(SidecarConfig::load(&p2).unwrap().hub_urls, ["ws://a/ws"]);
        std::fs::remove_file(p).ok();
        std::fs::remove_file(p2).ok();
    }

    #[test]
    fn hub_url_and_hub_urls_are_one_or_the_other_and_each_url_is_checked() {
        let seventeen: Vec<String> = (0..17).map(|i| format!("\"ws://h{i}/ws\"")).collect();
        for (name, top, said) in [
            (
                "both",
                "hub_url = \"ws://a/ws\"\nhub_urls = [\"ws://b/ws\"]\n".to_string(),
                "set hub_url (one hub) or hub_urls (several hubs on one database), not both",
            ),
            (
                "neither",
                String::new(),
                "set hub_url (the hub's WebSocket address, ws://HOST:PORT/ws) or hub_urls",
            ),
            (
                "empty",
                "hub_urls = []\n".to_string(),
                "hub_urls must name 1 to 16 hubs, not 0",
            ),
            (
                "many",
                format!("hub_urls = [{}]\n", seventeen.join(", ")),
                "hub_urls must name 1 to 16 hubs, not 17",
            ),
            (
                "http",
                "hub_urls = [\"ws://a/ws\", \"http://b:4000\"]\n".to_string(),
                "hub_urls[1] must start with ws:// or wss://, not \"http://b:4000\" (for a hub at http://…, use ws://…/ws)",
            ),
            (
                "path",
                "hub_urls = [\"ws://a:1\"]\n".to_string(),
                "hub_urls[0] must be the hub's WebSocket address, ending in /ws: write \"ws://a:1/ws\"",
            ),
            (
                "twice",
                "hub_urls = [\"ws://a/ws\", \"ws://b/ws\", \"ws://a/ws\"]\n".to_string(),
                "hub_urls names \"ws://a/ws\" twice",
            ),
            (
                "not-a-list",
                "hub_urls = \"ws://a/ws\"\n".to_string(),
                "hub_urls",
            ),
        ] {
            let p = write(&format!("urls-{name}"), &format!("{top}{REST}"));
            let err = SidecarConfig::load(&p).unwrap_err();
            assert!(err.contains(said), "{name}: {err}");
            std::fs::remove_file(p).ok();
        }
        let sixteen = &seventeen[..16];
        let p = write(
            "urls-16",
            &format!("hub_urls = [{}]\n{REST}", sixteen.join(", ")),
        );
        assert_eq!(SidecarConfig::load(&p).unwrap().hub_urls.len(), 16);
        std::fs::remove_file(p).ok();
    }

    #[test]
    fn host_and_port_of_a_hub_url() {
        assert_eq!(
            host_port("ws://127.0.0.1:4000/ws").as_deref(),
            Some("127.0.0.1:4000")
        );
        assert_eq!(host_port("ws://hub/ws").as_deref(), Some("hub:80"));
        assert_eq!(host_port("wss://hub/ws").as_deref(), Some("hub:443"));
        assert_eq!(host_port("wss://[::1]/ws").as_deref(), Some("[::1]:443"));
        assert_eq!(host_port("ws://[::1]:9/ws").as_deref(), Some("[::1]:9"));
        assert_eq!(host_port("http://hub/ws"), None);
        assert_eq!(ws_address("ws://h:1").as_deref(), Some("ws://h:1/ws"));
        assert_eq!(ws_address("http://h:1"), None);
    }

    #[test]
    fn the_default_state_dir_is_roots_or_the_users() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            state_dir_for("loash", true, os("/x"), os("/home/a")).unwrap(),
            Path::new("/var/lib/agentcom/loash")
        );
        assert_eq!(
            state_dir_for("loash", false, os("/xdg"), os("/home/a")).unwrap(),
            Path::new("/xdg/agentcom/loash")
        );
        for xdg in [None, os(""), os("relative")] {
            assert_eq!(
                state_dir_for("loash", false, xdg, os("/home/a")).unwrap(),
                Path::new("/home/a/.local/state/agentcom/loash")
            );
        }
        assert!(state_dir_for("loash", false, None, None)
            .unwrap_err()
            .contains("neither XDG_STATE_HOME nor HOME"));
        assert!(
            default_state_dir("../x").is_err(),
            "the agent id is a path's last part"
        );
    }

    #[test]
    fn state_dir_and_selftest_interval_may_be_left_out() {
        let text = "hub_url = \"ws://x/ws\"\nagent_id = \"a1\"\ntoken = \"t\"\n[runner]\nmode = \"exec\"\ncommand = [\"x\"]\n";
        let p = write("defaults", text);
        let c = SidecarConfig::load(&p).unwrap();
        assert_eq!(c.state_dir, default_state_dir("a1").unwrap());
        assert!(
            c.state_dir.ends_with("agentcom/a1"),
            "{}",
            c.state_dir.display()
        );
        assert_eq!(c.selftest_interval_s, 300);
        assert_eq!(c.path, p);
        assert!(c
            .state_dir_fix()
            .contains(&format!("set state_dir in {}", p.display())));
        let p2 = write("interval", &format!("selftest_interval_s = 0\n{text}"));
        assert!(SidecarConfig::load(&p2)
            .unwrap_err()
            .contains("selftest_interval_s must be at least 1"));
        std::fs::write(
            &p2,
            format!("selftest_interval_s = 7\nstate_dir = \"/s\"\n{text}"),
        )
        .unwrap();
        let c = SidecarConfig::load(&p2).unwrap();
        assert_eq!(
            (c.selftest_interval_s, c.state_dir.as_path()),
            (7, Path::new("/s"))
        );
        std::fs::remove_file(p).ok();
        std::fs::remove_file(p2).ok();
    }
}
