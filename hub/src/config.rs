//! Hub settings: built-in defaults, then the TOML file, then
//! `AGENTCOM_<KEY>` environment variables (`__` for nesting, lists
//! comma-separated), then command-line flags — each overriding the last.
//!
//! This module only reads and validates settings; it must never start
//! anything or touch the store.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Deserializer};

use std::collections::BTreeMap;

use crate::domain::fsm::FsmSettings;
use crate::domain::gate::{GateConfig, ReviewMode};
use crate::domain::queue::QueueSettings;
use crate::domain::repo::{self, RepoConfig};
use crate::domain::retry::RetryPolicy;

/// The shortest admin or viewer token accepted (a guessable token would
/// make every limit on guessing moot).
const MIN_TOKEN_CHARS: usize = 16;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A read-only token for dashboards and scripts (optional).
    #[serde(default)]
    pub viewer_token: Option<String>,
    /// The token that enrolls agents (`POST /api/agents/enroll`); unset,
    /// one is generated on the first start into `<data_dir>/enroll.token`.
    #[serde(default)]
    pub enroll_token: Option<String>,
    pub timeouts: Timeouts,
    pub retry: Retry,
    pub circuit: Circuit,
    pub events: Events,
    pub store: StoreSettings,
    pub retention: RetentionSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    pub http: HttpSettings,
    pub limits: Limits,
    /// The repositories the hub guards (`[[repos]]`).
    #[serde(default)]
    pub repos: Vec<RepoSettings>,
    pub alerts: AlertSettings,
    #[serde(default)]
    pub budgets: BudgetSettings,
    #[serde(default)]
    pub scheduler: SchedulerSettings,
    pub ha: HaSettings,
}

/// `[ha]`: several hubs on one PostgreSQL store.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSettings {
    /// A standby leads within this many seconds of the leader's death.
    pub takeover_s: f64,
    /// This hub's address as clients and the other hubs reach it
    /// (`http://host:port`): what a standby names as the leader in its
    /// `not_leader` answers. Default: the listen address's, with the
    /// scheme the hub serves.
    #[serde(default)]
    pub advertise_url: Option<String>,
}

/// `[budgets]`: what an agent may spend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// Tokens an agent may spend per UTC day (its results' `tokens_used`);
    /// past it, it gets no new task until the next day. 0: no limit.
    #[serde(default)]
    pub agent_daily_tokens: u64,
}

/// `[scheduler]`: fleet-wide limits on assigning.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Most tasks out at once (assigned or working) across the fleet. 0: no cap.
    #[serde(default)]
    pub max_concurrent: usize,
}

/// `[alerts]`: who is told, and when an agent counts as gone.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// `[[alerts.webhooks]]`: each gets every alert POSTed as JSON.
    #[serde(default)]
    pub webhooks: Vec<WebhookSettings>,
    /// An agent offline this long raises `agent_offline` (once per
    /// offline period).
    pub offline_after_s: u64,
}

impl AlertSettings {
    pub(crate) fn webhook_urls(&self) -> Vec<String> {
        self.webhooks.iter().map(|w| w.url.clone()).collect()
    }
}

/// One `[[alerts.webhooks]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://…` or `https://…` (the system's root certificates).
    pub url: String,
}

/// One `[[repos]]` table, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSettings {
    pub name: String,
    pub url: String,
    #[serde(default = "default_main")]
    pub main_branch: String,
    #[serde(default)]
    pub check_command: Vec<String>,
    #[serde(default = "default_check_timeout")]
    pub check_timeout_s: u64,
    /// How often the hub looks whether main moved outside it.
    #[serde(default = "default_poll")]
    pub poll_s: u64,
    #[serde(default)]
    pub gate: GateSettings,
}

/// `[repos.gate]`, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct GateSettings {
    pub auto_merge: bool,
    pub max_files: u64,
    pub max_lines: u64,
    pub allow_paths: Vec<String>,
    pub deny_paths: Vec<String>,
    /// `"none"` or `"agent"`.
    pub review: String,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            auto_merge: true,
            max_files: 20,
            max_lines: 400,
            allow_paths: vec![],
            deny_paths: vec![".ci/**".into(), "deploy/**".into()],
            review: "none".into(),
        }
    }
}

fn default_main() -> String {
    "main".into()
}

fn default_check_timeout() -> u64 {
    1800
}

fn default_poll() -> u64 {
    30
}

/// HTTPS and WSS on the listen address: both files, or neither (plain
/// HTTP). The files are read at start-up (`app::serve`), not here.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM: the hub's certificate, then any intermediates.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM: the certificate's private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// `(cert_file, key_file)` when TLS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

/// The HTTP face: how long a client may take, how many may be connected,
/// how long a dashboard session lasts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// A request's head (line and headers) must arrive within this.
    pub header_timeout_s: u64,
    /// A request's body must arrive within this once its head is in.
    pub body_timeout_s: u64,
    /// Open connections served at once (sidecars, event streams and API
    /// calls alike); at most the open-file limit less a reserve. Over it a
    /// connection is answered 503 and closed.
    pub max_connections: usize,
    /// Lifetime of a dashboard session (its cookie and its record).
    pub session_ttl_s: u64,
}

/// Rates the hub allows its clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Messages a second an agent's sidecar may send, sustained.
    pub agent_messages_per_s: u32,
    /// Messages an agent's sidecar may send at once.
    pub agent_messages_burst: u32,
    /// Failed token checks (sign-ins, bearer tokens) a client address may
    /// make a minute, sustained.
    pub sign_in_per_minute: u32,
    /// Failed token checks a client address may make at once.
    pub sign_in_burst: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Completed, cancelled and dead tasks older than this many days are
    /// deleted with their history (fractions allowed; 0: at once).
    pub finished_days: f64,
}

impl RetentionSettings {
    /// The retention window in milliseconds.
    pub fn finished_ms(&self) -> i64 {
        (self.finished_days * 86_400_000.0) as i64
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Where tasks, agents and changes are kept: `sled` (embedded, under
    /// `data_dir`) or `postgres` (the database at `url`).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The PostgreSQL database (`postgres://user@host:port/db`), for
    /// `backend = "postgres"`.
    #[serde(default)]
    pub url: Option<String>,
    /// sled's page cache, in MiB (sled's own default is 1 GiB).
    pub cache_mb: u64,
}

/// `store.backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sled,
    Postgres,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Unset (or 0): a third of the heartbeat timeout, at most 30 s — so
    /// shrinking only the timeout (as tests do) keeps a valid pair.
    #[serde(default)]
    pub heartbeat_interval_s: u64,
    pub heartbeat_timeout_s: u64,
    pub accept_timeout_s: u64,
    pub sweep_interval_s: u64,
    pub task_timeout_s: u64,
    /// A sidecar connection that has not said `hello` by then is closed.
    pub hello_timeout_s: u64,
    /// A working attempt whose reported activity has not changed this long
    /// turns its agent `stalled` (alert `task_stalled`).
    pub stall_s: u64,
    /// ... and after this long the attempt is failed against the agent and
    /// its task queued again. Unset (or 0): twice `stall_s`.
    #[serde(default)]
    pub stall_kill_s: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_retries: u32,
    #[serde(deserialize_with = "one_or_many")]
    pub backoff_s: Vec<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circuit {
    pub failures: u32,
    pub cooldown_s: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    /// How many recent events `/api/events` can replay to a client that
    /// reconnects with `Last-Event-ID`.
    pub replay: usize,
    /// At most this many bytes of events in that ring (the older ones go).
    pub replay_bytes: usize,
    /// Events buffered per client before a slow one is dropped.
    pub client_buffer: usize,
}

/// The top-level keys of the settings.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "admin_token",
    "viewer_token",
    "enroll_token",
    "timeouts",
    "retry",
    "circuit",
    "events",
    "store",
    "retention",
    "tls",
    "http",
    "limits",
    "repos",
    "alerts",
    "budgets",
    "scheduler",
    "ha",
];

/// Whether environment variable `name` sets a setting
/// (`AGENTCOM_<KEY>`, `__` for nesting, KEY one of the top-level keys).
fn names_a_setting(name: &str) -> bool {
    name.strip_prefix("AGENTCOM_")
        .map(|rest| {
            rest.split("__")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .is_some_and(|top| TOP_LEVEL_KEYS.contains(&top.as_str()))
}

/// Values given on the command line; they win over everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Settings {
    /// Load settings from the layers described in the module docs.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, SettingsError> {
        Self::load_with_env(file, overrides, None)
    }

    /// As [`Settings::load`], with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: Option<Vec<(String, String)>>,
    ) -> Result<Settings, SettingsError> {
        let mut b = Config::builder()
            .set_default("listen", "127.0.0.1:4000")?
            .set_default("data_dir", "./data/hub")?
            .set_default("timeouts.heartbeat_timeout_s", 90)?
            .set_default("timeouts.accept_timeout_s", 60)?
            .set_default("timeouts.sweep_interval_s", 30)?
            .set_default("timeouts.task_timeout_s", 7200)?
            .set_default("timeouts.hello_timeout_s", 10)?
            .set_default("timeouts.stall_s", 900)?
            .set_default("retry.max_retries", 3)?
            .set_default("retry.backoff_s", vec![0, 30, 120])?
            .set_default("circuit.failures", 3)?
            .set_default("circuit.cooldown_s", 300)?
            .set_default("events.replay", 10_000)?
            .set_default("events.replay_bytes", 64 * 1024 * 1024)?
            .set_default("events.client_buffer", 4096)?
            .set_default("store.cache_mb", 64)?
            .set_default("retention.finished_days", 30)?
            .set_default("http.header_timeout_s", 10)?
            .set_default("http.body_timeout_s", 30)?
            .set_default("http.max_connections", 10_000)?
            .set_default("http.session_ttl_s", 12 * 3600)?
            .set_default("limits.agent_messages_per_s", 50)?
            .set_default("limits.agent_messages_burst", 200)?
            .set_default("limits.sign_in_per_minute", 10)?
            .set_default("limits.sign_in_burst", 10)?
            .set_default("alerts.offline_after_s", 120)?
            .set_default("ha.takeover_s", 5.0)?;
        if let Some(f) = file {
            b = b.add_source(File::from(f).format(FileFormat::Toml).required(true));
        }
        let mut env_source = Environment::with_prefix("AGENTCOM")
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("retry.backoff_s")
            .try_parsing(true);
        // Only variables that name a setting: others of the AGENTCOM_
        // family (the CLI's AGENTCOM_HUB_URL, a test's) are not settings,
        // while a mistyped key inside a setting's table is refused.
        let vars = env.unwrap_or_else(|| std::env::vars().collect());
        env_source = env_source.source(Some(
            vars.into_iter()
                .filter(|(k, _)| names_a_setting(k))
                .collect(),
        ));
        b = b.add_source(env_source);
        if let Some(l) = &overrides.listen {
            b = b.set_override("listen", l.clone())?;
        }
        if let Some(d) = &overrides.data_dir {
            b = b.set_override("data_dir", d.to_string_lossy().to_string())?;
        }
        let mut s: Settings = b.build()?.try_deserialize()?;
        if s.timeouts.stall_kill_s == 0 {
            s.timeouts.stall_kill_s = s.timeouts.stall_s.saturating_mul(2);
        }
        if s.timeouts.heartbeat_interval_s == 0 {
            s.timeouts.heartbeat_interval_s = (s.timeouts.heartbeat_timeout_s / 3).clamp(1, 30);
        }
        s.validate()?;
        s.repo_configs()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let t = &self.timeouts;
        let invalid = |key, message: String| Err(SettingsError::Invalid { key, message });
        if !(self.ha.takeover_s >= 0.5 && self.ha.takeover_s <= 3600.0) {
            return invalid(
                "ha.takeover_s",
                format!(
                    "must be between 0.5 and 3600 seconds, not {}",
                    self.ha.takeover_s
                ),
            );
        }
        if let Some(u) = &self.ha.advertise_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return invalid(
                    "ha.advertise_url",
                    format!("must be this hub's http:// or https:// address, not {u:?}"),
                );
            }
        }
        match (self.store.backend, &self.store.url) {
            (StoreBackend::Postgres, None) => {
                return invalid(
                    "store.url",
                    "store.backend = \"postgres\" needs the database's URL, e.g. \
                     store.url = \"postgres://agentcom@127.0.0.1:5432/agentcom\" \
                     (or AGENTCOM_STORE__URL)"
                        .into(),
                )
            }
            (StoreBackend::Postgres, Some(url))
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) =>
            {
                return invalid("store.url", format!("{url:?} is not a postgres:// URL"))
            }
            (StoreBackend::Sled, Some(_)) => {
                return invalid(
                    "store.url",
                    "is for store.backend = \"postgres\"; the sled store lives under data_dir"
                        .into(),
                )
            }
            _ => {}
        }
        if t.stall_s == 0 || t.stall_kill_s <= t.stall_s {
            return invalid(
                "timeouts.stall_kill_s",
                format!(
                    "must be longer than stall_s ({}), and stall_s at least 1",
                    t.stall_s
                ),
            );
        }
        if t.heartbeat_timeout_s <= t.heartbeat_interval_s {
            return invalid(
                "timeouts.heartbeat_timeout_s",
                format!(
                    "must be longer than heartbeat_interval_s ({})",
                    t.heartbeat_interval_s
                ),
            );
        }
        for (key, v) in [
            ("timeouts.accept_timeout_s", t.accept_timeout_s),
            ("timeouts.sweep_interval_s", t.sweep_interval_s),
            ("timeouts.task_timeout_s", t.task_timeout_s),
            ("timeouts.hello_timeout_s", t.hello_timeout_s),
            ("http.header_timeout_s", self.http.header_timeout_s),
            ("http.body_timeout_s", self.http.body_timeout_s),
            ("http.session_ttl_s", self.http.session_ttl_s),
            ("http.max_connections", self.http.max_connections as u64),
            ("events.replay_bytes", self.events.replay_bytes as u64),
            (
                "limits.agent_messages_per_s",
                self.limits.agent_messages_per_s.into(),
            ),
            (
                "limits.agent_messages_burst",
                self.limits.agent_messages_burst.into(),
            ),
            (
                "limits.sign_in_per_minute",
                self.limits.sign_in_per_minute.into(),
            ),
            ("limits.sign_in_burst", self.limits.sign_in_burst.into()),
            ("alerts.offline_after_s", self.alerts.offline_after_s),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if self.circuit.failures == 0 {
            return invalid("circuit.failures", "must be at least 1".into());
        }
        let days = self.retention.finished_days;
        if !days.is_finite() || !(0.0..=36_500.0).contains(&days) {
            return invalid(
                "retention.finished_days",
                "must be a number of days from 0 to 36500".into(),
            );
        }
        if self.events.client_buffer == 0 {
            return invalid("events.client_buffer", "must be at least 1".into());
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => {
                return invalid("tls.key_file", "must be set with tls.cert_file".into())
            }
            (None, Some(_)) => {
                return invalid("tls.cert_file", "must be set with tls.key_file".into())
            }
            _ => {}
        }
        for (key, path) in [
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return invalid(key, "must name a file".into());
            }
        }
        for (key, token) in [
            ("admin_token", &self.admin_token),
            ("viewer_token", &self.viewer_token),
            ("enroll_token", &self.enroll_token),
        ] {
            if token
                .as_deref()
                .is_some_and(|t| t.trim().chars().count() < MIN_TOKEN_CHARS)
            {
                return invalid(
                    key,
                    format!("must be at least {MIN_TOKEN_CHARS} characters"),
                );
            }
        }
        for w in &self.alerts.webhooks {
            let rest = w
                .url
                .strip_prefix("http://")
                .or_else(|| w.url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return invalid(
                    "alerts.webhooks",
                    format!("url {:?} is not an http:// or https:// URL", w.url),
                );
            }
        }
        if self.admin_token.is_some() && self.admin_token == self.viewer_token {
            return invalid(
                "viewer_token",
                "must differ from admin_token (it would only read)".into(),
            );
        }
        if self.enroll_token.is_some()
            && (self.enroll_token == self.admin_token || self.enroll_token == self.viewer_token)
        {
            return invalid(
                "enroll_token",
                "must differ from admin_token and viewer_token (it only enrolls agents)".into(),
            );
        }
        Ok(())
    }

    /// The repositories, checked: unique valid names, a URL, a main branch
    /// git accepts, globs that compile.
    pub(crate) fn repo_configs(&self) -> Result<BTreeMap<String, RepoConfig>, SettingsError> {
        let invalid = |message: String| SettingsError::Invalid {
            key: "repos",
            message,
        };
        let mut out = BTreeMap::new();
        for r in &self.repos {
            if !repo::valid_name(&r.name) {
                return Err(invalid(format!(
                    "{:?}: a name is 1 to 64 of letters, digits, '-', '_' and '.'",
                    r.name
                )));
            }
            if r.url.trim().is_empty() {
                return Err(invalid(format!("{}: url is empty", r.name)));
            }
            let branch_ok = !r.main_branch.is_empty()
                && !r.main_branch.starts_with(['-', '/', '.'])
                && !r.main_branch.contains("..")
                && r.main_branch
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
            if !branch_ok {
                return Err(invalid(format!(
                    "{}: main_branch {:?} is not a branch name",
                    r.name, r.main_branch
                )));
            }
            if r.check_timeout_s == 0 || r.poll_s == 0 {
                return Err(invalid(format!(
                    "{}: check_timeout_s and poll_s must be at least 1",
                    r.name
                )));
            }
            let review = match r.gate.review.as_str() {
                "none" => ReviewMode::None,
                "agent" => ReviewMode::Agent,
                other => {
                    return Err(invalid(format!(
                        "{}: gate.review {other:?} is not \"none\" or \"agent\"",
                        r.name
                    )))
                }
            };
            let gate = GateConfig::new(
                r.gate.auto_merge,
                r.gate.max_files,
                r.gate.max_lines,
                r.gate.allow_paths.clone(),
                r.gate.deny_paths.clone(),
                review,
            )
            .map_err(|e| invalid(format!("{}: gate.{e}", r.name)))?;
            let config = RepoConfig {
                name: r.name.clone(),
                url: r.url.clone(),
                main_branch: r.main_branch.clone(),
                check_command: r.check_command.clone(),
                check_timeout_s: r.check_timeout_s,
                poll_s: r.poll_s,
                gate,
            };
            if out.insert(r.name.clone(), config).is_some() {
                return Err(invalid(format!("{}: named twice", r.name)));
            }
        }
        Ok(out)
    }

    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            default_max_retries: self.retry.max_retries,
            default_timeout_s: self.timeouts.task_timeout_s,
            retry: RetryPolicy {
                backoff_s: self.retry.backoff_s.clone(),
            },
            // Finished tasks stay in memory at most an hour, and never
            // longer than they are kept at all.
            keep_finished_ms: self.retention.finished_ms().min(3_600_000),
            max_concurrent: self.scheduler.max_concurrent,
            agent_daily_tokens: self.budgets.agent_daily_tokens,
            ..QueueSettings::default()
        }
    }

    pub fn fsm_settings(&self) -> FsmSettings {
        FsmSettings {
            heartbeat_timeout_ms: self.timeouts.heartbeat_timeout_s as i64 * 1000,
            accept_timeout_ms: self.timeouts.accept_timeout_s as i64 * 1000,
            circuit_failures: self.circuit.failures,
            circuit_cooldown_ms: self.circuit.cooldown_s as i64 * 1000,
            stall_ms: self.timeouts.stall_s as i64 * 1000,
            stall_kill_ms: self.timeouts.stall_kill_s as i64 * 1000,
            offline_alert_ms: self.alerts.offline_after_s as i64 * 1000,
        }
    }
}

/// `backoff_s` may come as a TOML list, a comma-separated string, or (from
/// a one-value environment variable) a single number.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Num(u64),
        Str(String),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Item>),
        One(Item),
    }
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| serde::de::Error::custom(format!("not a number of seconds: {s:?}")))
    };
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(i) => vec![i],
    };
    let mut out = Vec::new();
    for i in items {
        match i {
            Item::Num(n) => out.push(n),
            Item::Str(s) => {
                for part in s.split(',').filter(|p| !p.trim().is_empty()) {
                    out.push(parse(part)?);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::load_with_env(None, &Overrides::default(), env(&[])).unwrap();
        assert_eq!(s.listen, "127.0.0.1:4000");
        assert_eq!(s.data_dir, PathBuf::from("./data/hub"));
        assert_eq!(s.timeouts.heartbeat_interval_s, 30);
        assert_eq!(s.timeouts.heartbeat_timeout_s, 90);
        assert_eq!(s.timeouts.accept_timeout_s, 60);
        assert_eq!(s.timeouts.sweep_interval_s, 30);
        assert_eq!(s.timeouts.task_timeout_s, 7200);
        assert_eq!(s.retry.max_retries, 3);
        assert_eq!(s.retry.backoff_s, vec![0, 30, 120]);
        assert_eq!((s.circuit.failures, s.circuit.cooldown_s), (3, 300));
        assert!(s.admin_token.is_none());
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("agentcom-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hub.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:5000\"\n[timeouts]\nheartbeat_timeout_s = 40\naccept_timeout_s = 7\n[retry]\nbackoff_s = [1, 2]\n",
        )
        .unwrap();
        let s = Settings::load_with_env(
            Some(&file),
            &Overrides {
                listen: Some("127.0.0.1:6000".into()),
                data_dir: None,
            },
            env(&[
                ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "5"),
                ("AGENTCOM_RETRY__BACKOFF_S", "0,1,1"),
                ("AGENTCOM_ADMIN_TOKEN", "0123456789abcdef0123"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen, "127.0.0.1:6000", "flag wins");
        assert_eq!(s.timeouts.heartbeat_timeout_s, 5, "env wins over file");
        assert_eq!(
            s.timeouts.heartbeat_interval_s, 1,
            "derived from the timeout when not set"
        );
        assert_eq!(s.timeouts.accept_timeout_s, 7, "file wins over default");
        assert_eq!(s.retry.backoff_s, vec![0, 1, 1]);
        assert_eq!(s.admin_token.as_deref(), Some("0123456789abcdef0123"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn budgets_and_the_fleet_cap_default_to_none_and_reach_the_queue() {
        let s = Settings::load_with_env(None, &Overrides::default(), env(&[])).unwrap();
        assert_eq!(s.queue_settings().max_concurrent, 0);
        assert_eq!(s.queue_settings().agent_daily_tokens, 0);
        let s = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("AGENTCOM_SCHEDULER__MAX_CONCURRENT", "2"),
                ("AGENTCOM_BUDGETS__AGENT_DAILY_TOKENS", "50000"),
            ]),
        )
        .unwrap();
        assert_eq!(s.queue_settings().max_concurrent, 2);
        assert_eq!(s.queue_settings().agent_daily_tokens, 50_000);
    }

    #[test]
    fn the_deploy_example_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hub.example.toml");
        let s = Settings::load_with_env(Some(&p), &Overrides::default(), env(&[])).unwrap();
        assert_eq!(s.budgets.agent_daily_tokens, 0);
        assert_eq!(s.scheduler.max_concurrent, 0);
        assert!(s.enroll_token.is_none());
    }

    #[test]
    fn a_mistyped_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, said) in [
            ("top", "listne = \"127.0.0.1:1\"\n", "listne"),
            (
                "nested",
                "[timeouts]\nheartbeat_timeouts = 5\n",
                "heartbeat_timeouts",
            ),
            (
                "gate",
                "[[repos]]\nname = \"a\"\nurl = \"/x\"\n[repos.gate]\nautomerge = true\n",
                "automerge",
            ),
        ] {
            let file = dir.path().join(format!("{name}.toml"));
            std::fs::write(&file, text).unwrap();
            let err = Settings::load_with_env(Some(&file), &Overrides::default(), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("unknown field `{said}`")),
                "{name}: {err}"
            );
        }
        // In the environment: a mistyped key inside a table is refused;
        // variables of the family that are no setting are let be.
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUTS", "5")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("heartbeat_timeouts"), "{err}");
        Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("AGENTCOM_HUB_URL", "http://x"),
                ("AGENTCOM_TEST_LOG", "debug"),
                ("AGENTCOM_SKIP_BUILD", "1"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn the_top_level_keys_are_the_settings_fields() {
        // serde names every field it expects when it meets one it does not.
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_TIMEOUTS__X", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expected one of"), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "zzz = 1\n").unwrap();
        let err = config::Config::builder()
            .add_source(File::from(file.path()).format(FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize::<Settings>()
            .unwrap_err()
            .to_string();
        let expected: Vec<&str> = err
            .split("expected one of ")
            .nth(1)
            .unwrap()
            .split(", ")
            .map(|k| k.trim_matches(|c: char| c == '`' || !c.is_ascii() || c.is_whitespace()))
            .map(|k| k.split('`').next().unwrap())
            .collect();
        let mut expected = expected;
        expected.sort();
        let mut known = TOP_LEVEL_KEYS.to_vec();
        known.sort();
        assert_eq!(expected, known, "{err}");
    }

    #[test]
    fn single_value_backoff_from_env() {
        let s = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_RETRY__BACKOFF_S", "5")]),
        )
        .unwrap();
        assert_eq!(s.retry.backoff_s, vec![5]);
    }

    #[test]
    fn invalid_values_are_clear_errors() {
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "10"),
                ("AGENTCOM_TIMEOUTS__HEARTBEAT_INTERVAL_S", "10"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("heartbeat_timeout_s"), "{err}");
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_RETRY__BACKOFF_S", "0,soon")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_ADMIN_TOKEN", "short")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("admin_token"), "{err}");
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_VIEWER_TOKEN", "x")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("viewer_token") && err.to_string().contains("16"),
            "{err}"
        );
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_HTTP__BODY_TIMEOUT_S", "0")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("http.body_timeout_s"), "{err}");
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_ENROLL_TOKEN", "short")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("enroll_token"), "{err}");
        let same = "0123456789abcdef0123";
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("AGENTCOM_ENROLL_TOKEN", same),
                ("AGENTCOM_ADMIN_TOKEN", same),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("enroll_token"), "{err}");
    }

    #[test]
    fn hardening_settings_have_defaults_and_env_overrides() {
        let s = Settings::load_with_env(None, &Overrides::default(), env(&[])).unwrap();
        assert_eq!(s.http.header_timeout_s, 10);
        assert_eq!(s.http.body_timeout_s, 30);
        assert_eq!(s.http.max_connections, 10_000);
        assert_eq!(s.http.session_ttl_s, 43_200);
        assert_eq!(s.timeouts.hello_timeout_s, 10);
        assert_eq!(s.events.replay_bytes, 64 * 1024 * 1024);
        assert_eq!(
            (s.limits.agent_messages_per_s, s.limits.agent_messages_burst),
            (50, 200)
        );
        assert_eq!(
            (s.limits.sign_in_per_minute, s.limits.sign_in_burst),
            (10, 10)
        );
        let s = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("AGENTCOM_HTTP__MAX_CONNECTIONS", "200"),
                ("AGENTCOM_HTTP__BODY_TIMEOUT_S", "2"),
                ("AGENTCOM_LIMITS__AGENT_MESSAGES_BURST", "7"),
                ("AGENTCOM_TIMEOUTS__HELLO_TIMEOUT_S", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http.max_connections, 200);
        assert_eq!(s.http.body_timeout_s, 2);
        assert_eq!(s.limits.agent_messages_burst, 7);
        assert_eq!(s.timeouts.hello_timeout_s, 3);
    }

    #[test]
    fn alert_settings_default_and_check_their_urls() {
        let s = Settings::load_with_env(None, &Overrides::default(), env(&[])).unwrap();
        assert_eq!(s.alerts.offline_after_s, 120);
        assert!(s.alerts.webhooks.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hub.toml");
        std::fs::write(
            &file,
            "[alerts]\noffline_after_s = 5\n[[alerts.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\n[[alerts.webhooks]]\nurl = \"https://example.com/x\"\n",
        )
        .unwrap();
        let s = Settings::load_with_env(Some(&file), &Overrides::default(), env(&[])).unwrap();
        assert_eq!(s.alerts.offline_after_s, 5);
        assert_eq!(
            s.alerts.webhook_urls(),
            vec!["http://127.0.0.1:9/hook", "https://example.com/x"]
        );
        std::fs::write(&file, "[[alerts.webhooks]]\nurl = \"ftp://x\"\n").unwrap();
        let err =
            Settings::load_with_env(Some(&file), &Overrides::default(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("alerts.webhooks"), "{err}");
    }

    #[test]
    fn tls_takes_both_files_or_neither() {
        let s = Settings::load_with_env(None, &Overrides::default(), env(&[])).unwrap();
        assert!(s.tls.files().is_none(), "plain HTTP by default");
        let s = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[
                ("AGENTCOM_TLS__CERT_FILE", "/etc/agentcom/hub.crt"),
                ("AGENTCOM_TLS__KEY_FILE", "/etc/agentcom/hub.key"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.tls.files(),
            Some((
                Path::new("/etc/agentcom/hub.crt"),
                Path::new("/etc/agentcom/hub.key")
            ))
        );
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_TLS__CERT_FILE", "/etc/agentcom/hub.crt")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("tls.key_file: must be set with tls.cert_file"),
            "{err}"
        );
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            env(&[("AGENTCOM_TLS__KEY_FILE", "/etc/agentcom/hub.key")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tls.cert_file"), "{err}");
    }
}
