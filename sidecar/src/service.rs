//! The service a joined sidecar runs under: a systemd unit or a pm2 app,
//! as text, and where each goes.
//!
//! It owns what `agentcom-sidecar join --install systemd|pm2` writes: the
//! unit (`agentcom-sidecar-<id>.service`: `run --config <file>`, restarted
//! always, stopped with SIGTERM) or the pm2 app file
//! (`agentcom-sidecar-<id>.pm2.json`, the binary run without an
//! interpreter, restarted always), with every path absolute and quoted as
//! its format wants. Pure: it never writes a file, runs a command or reads
//! the environment; `join` does, with the values it found.

use std::path::{Path, PathBuf};

/// The service manager to install under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Pm2,
    /// Nothing is installed; `join` prints how to run the daemon.
    None,
}

impl Manager {
    pub fn parse(s: &str) -> Result<Manager, String> {
        match s {
            "systemd" => Ok(Manager::Systemd),
            "pm2" => Ok(Manager::Pm2),
            "none" => Ok(Manager::None),
            other => Err(format!("{other:?} is not one of systemd, pm2, none")),
        }
    }
}

/// What the service runs.
#[derive(Clone, Debug)]
pub struct Service {
    pub agent_id: String,
    /// The `agentcom-sidecar` binary, absolute.
    pub exe: PathBuf,
    /// The sidecar's config file, absolute.
    pub config: PathBuf,
    /// Whether it is a system service (run by root) or the user's own.
    pub system: bool,
}

impl Service {
    /// `agentcom-sidecar-<id>`: the unit's and the pm2 app's name.
    pub fn name(&self) -> String {
        format!("agentcom-sidecar-{}", self.agent_id)
    }

    /// The unit's file name.
    pub fn unit_file_name(&self) -> String {
        format!("{}.service", self.name())
    }

    /// The systemd unit.
    pub fn systemd_unit(&self) -> String {
        let target = if self.system {
            "multi-user.target"
        } else {
            "default.target"
        };
        format!(
            "# Written by `agentcom-sidecar join` for agent {id}.\n\
             # {scope}: systemctl{user} status {name}\n\
             [Unit]\n\
             Description=AgentCom sidecar for agent {id}\n\
             After=network-online.target\n\
             Wants=network-online.target\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStart={exe} run --config {config}\n\
             # SIGTERM: the runner is stopped and its attempt reported as a\n\
             # retryable failure before the sidecar exits.\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=20\n\
             Restart=always\n\
             RestartSec=2\n\
             Environment=RUST_LOG=info\n\
             \n\
             [Install]\n\
             WantedBy={target}\n",
            id = self.agent_id,
            scope = if self.system {
                "A system service"
            } else {
                "A user service"
            },
            user = if self.system { "" } else { " --user" },
            name = self.name(),
            exe = systemd_word(&self.exe),
            config = systemd_word(&self.config),
        )
    }

    /// The pm2 app file (JSON, which `pm2 start FILE` reads).
    pub fn pm2_app(&self) -> String {
        let app = serde_json::json!({
            "apps": [{
                "name": self.name(),
                "script": self.exe,
                "args": ["run", "--config", self.config],
                "interpreter": "none",
                "autorestart": true,
                "kill_timeout": 20000,
                "restart_delay": 1000,
                "env": {"RUST_LOG": "info"},
            }]
        });
        serde_json::to_string_pretty(&app).expect("serialises") + "\n"
    }

    /// The pm2 app file's name, beside the config.
    pub fn pm2_file(&self) -> PathBuf {
        let dir = self.config.parent().unwrap_or(Path::new("."));
        dir.join(format!("{}.pm2.json", self.name()))
    }
}

/// Where systemd units go: the system's for root, else the user's
/// (`$XDG_CONFIG_HOME/systemd/user`, or `~/.config/systemd/user`).
pub fn systemd_dir(system: bool, xdg_config_home: Option<&Path>, home: Option<&Path>) -> PathBuf {
    if system {
        return PathBuf::from("/etc/systemd/system");
    }
    match (xdg_config_home, home) {
        (Some(x), _) if x.is_absolute() => x.join("systemd/user"),
        (_, Some(h)) => h.join(".config/systemd/user"),
        _ => PathBuf::from(".config/systemd/user"),
    }
}

/// A path as one word of a systemd command line: quoted when it holds
/// spaces or quotes, with `%` (a specifier) doubled.
fn systemd_word(p: &Path) -> String {
    let s = p.display().to_string().replace('%', "%%");
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(system: bool) -> Service {
        Service {
            agent_id: "loash".into(),
            exe: "/usr/local/bin/agentcom-sidecar".into(),
            config: "/home/a b/.config/agentcom/loash.toml".into(),
            system,
        }
    }

    #[test]
    fn a_user_unit_runs_the_daemon_on_its_config() {
        let unit = service(false).systemd_unit();
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/agentcom-sidecar run --config \"/home/a b/.config/agentcom/loash.toml\"\n"
        ), "{unit}");
        assert!(unit.contains("Restart=always\n"));
        assert!(unit.contains("WantedBy=default.target\n"));
        assert!(unit.contains("systemctl --user status agentcom-sidecar-loash"));
        assert_eq!(
            service(false).unit_file_name(),
            "agentcom-sidecar-loash.service"
        );
    }

    #[test]
    fn a_system_unit_is_wanted_by_multi_user() {
        let unit = service(true).systemd_unit();
        assert!(unit.contains("WantedBy=multi-user.target\n"));
        assert!(!unit.contains("--user"));
    }

    #[test]
    fn specifiers_and_quotes_are_escaped() {
        assert_eq!(systemd_word(Path::new("/a/100%")), "/a/100%%");
        assert_eq!(systemd_word(Path::new("/a/\"b\"")), "\"/a/\\\"b\\\"\"");
        assert_eq!(systemd_word(Path::new("/plain")), "/plain");
    }

    #[test]
    fn the_pm2_app_runs_the_binary_without_an_interpreter() {
        let s = service(false);
        let v: serde_json::Value = serde_json::from_str(&s.pm2_app()).unwrap();
        let app = &v["apps"][0];
        assert_eq!(app["name"], "agentcom-sidecar-loash");
        assert_eq!(app["script"], "/usr/local/bin/agentcom-sidecar");
        assert_eq!(app["interpreter"], "none");
        assert_eq!(
            app["args"],
            serde_json::json!(["run", "--config", "/home/a b/.config/agentcom/loash.toml"])
        );
        assert_eq!(app["autorestart"], true);
        assert_eq!(
            s.pm2_file(),
            Path::new("/home/a b/.config/agentcom/agentcom-sidecar-loash.pm2.json")
        );
    }

    #[test]
    fn units_go_to_the_users_config_unless_root() {
        assert_eq!(
            systemd_dir(true, None, Some(Path::new("/root"))),
            Path::new("/etc/systemd/system")
        );
        assert_eq!(
            systemd_dir(false, Some(Path::new("/x")), Some(Path::new("/home/u"))),
            Path::new("/x/systemd/user")
        );
        assert_eq!(
            systemd_dir(false, None, Some(Path::new("/home/u"))),
            Path::new("/home/u/.config/systemd/user")
        );
    }

    #[test]
    fn managers_parse() {
        assert_eq!(Manager::parse("pm2"), Ok(Manager::Pm2));
        assert!(Manager::parse("launchd")
            .unwrap_err()
            .contains("systemd, pm2, none"));
    }
}
