//! What the demo is made of, and the files and git repositories it makes
//! from it in its directory: the example project "hello" (a `greetings/`
//! folder of one-line files and the `check.sh` that keeps them so,
//! compiled in from `hub/demo/hello/`) seeded into a bare remote, each
//! agent's clone with its git identity, the bundled runner
//! (`deploy/runner.demo.sh`), the hub's settings file, each sidecar's
//! config, and the example tasks. Git runs here as plain blocking
//! commands, before the hub starts. This module must never start a
//! process that outlives its call, nor write outside the demo directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use agentcom_protocol::{NewTask, Priority, Timestamp};
use serde_json::{json, Map};

use crate::cli::format::{sidecar_config, toml_str, SidecarConfigText};

/// The repository's name on the hub.
pub(super) const REPO: &str = "hello";

/// The agents, each with its own sidecar and clone.
pub(super) const AGENTS: [&str; 3] = ["ada", "grace", "linus"];

/// What every agent can do: write greetings, and review them.
pub(super) const CAPABILITIES: [&str; 2] = ["code", "review"];

/// The runner every agent runs.
const RUNNER: &str = include_str!("../../../deploy/runner.demo.sh");

/// The example project's files, as committed on main.
const PROJECT: [(&str, &str); 4] = [
    ("README.md", include_str!("../../demo/hello/README.md")),
    ("check.sh", include_str!("../../demo/hello/check.sh")),
    (
        "greetings/english.txt",
        include_str!("../../demo/hello/greetings/english.txt"),
    ),
    (
        "greetings/italian.txt",
        include_str!("../../demo/hello/greetings/italian.txt"),
    ),
];

/// The git the hub needs: `merge-tree --write-tree` came with 2.38.
const GIT_AT_LEAST: (u32, u32) = (2, 38);

/// One example task: write `text` as the one line of `file`, submitted
/// `after_s` seconds after the start (`run_at`).
pub(super) struct DemoTask {
    pub(super) title: &'static str,
    pub(super) file: &'static str,
    pub(super) text: &'static str,
    pub(super) priority: Priority,
    pub(super) after_s: u32,
}

/// The example tasks: three at once, three more a few seconds apart.
pub(super) const TASKS: [DemoTask; 6] = [
    task(
        "Say hello in French",
        "greetings/french.txt",
        "Bonjour, le monde !",
        Priority::High,
        0,
    ),
    task(
        "Say hello in Spanish",
        "greetings/spanish.txt",
        "¡Hola, mundo!",
        Priority::Normal,
        0,
    ),
    task(
        "Say hello in German",
        "greetings/german.txt",
        "Hallo, Welt!",
        Priority::Normal,
        0,
    ),
    task(
        "Say hello in Japanese",
        "greetings/japanese.txt",
        "こんにちは、世界！",
        Priority::Normal,
        6,
    ),
    task(
        "Say hello in Swahili",
        "greetings/swahili.txt",
        "Habari, dunia!",
        Priority::Normal,
        12,
    ),
    task(
        "Say hello in Welsh",
        "greetings/welsh.txt",
        "Helo, byd!",
        Priority::Low,
        18,
    ),
];

const fn task(
    title: &'static str,
    file: &'static str,
    text: &'static str,
    priority: Priority,
    after_s: u32,
) -> DemoTask {
    DemoTask {
        title,
        file,
        text,
        priority,
        after_s,
    }
}

impl DemoTask {
    /// The task as submitted `now`: on the repository, for a `code`
    /// agent, the file and line in its metadata (the runner reads them).
    pub(super) fn new_task(&self, now: Timestamp) -> NewTask {
        let mut metadata = Map::new();
        metadata.insert("file".into(), json!(self.file));
        metadata.insert("text".into(), json!(self.text));
        NewTask {
            title: self.title.into(),
            description: Some(format!("Add {} holding one line: {}", self.file, self.text)),
            priority: Some(self.priority),
            needed_capabilities: Some(vec!["code".into()]),
            repo: Some(REPO.into()),
            metadata: Some(metadata),
            run_at: (self.after_s > 0).then(|| now.plus_secs(self.after_s.into())),
            ..Default::default()
        }
    }
}

/// Where everything lives in the demo directory.
pub(super) struct Layout {
    pub(super) root: PathBuf,
}

impl Layout {
    /// The hub's settings file.
    pub(super) fn hub_toml(&self) -> PathBuf {
        self.root.join("hub.toml")
    }
    /// The example project's bare remote (the `[[repos]]` url).
    pub(super) fn remote(&self) -> PathBuf {
        self.root.join(format!("{REPO}.git"))
    }
    /// The runner every sidecar runs.
    pub(super) fn runner(&self) -> PathBuf {
        self.root.join("runner.sh")
    }
    /// Agent `name`'s folder: its `sidecar.toml`, clone and state.
    pub(super) fn agent(&self, name: &str) -> PathBuf {
        self.root.join("agents").join(name)
    }
    pub(super) fn sidecar_toml(&self, name: &str) -> PathBuf {
        self.agent(name).join("sidecar.toml")
    }
    fn clone_of(&self, name: &str) -> PathBuf {
        self.agent(name).join(REPO)
    }
    /// The hub's admin token (the hub writes it at its first start).
    pub(super) fn admin_token(&self) -> PathBuf {
        crate::auth::token_file(&self.root)
    }
}

/// Run git with `args` in `dir`; its output, or what went wrong in words.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} (in {}) failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// git must be there, and new enough for the hub's merges.
pub(super) fn check_git() -> Result<(), String> {
    let version = git(Path::new("."), &["--version"]).map_err(|e| {
        format!(
            "the demo needs git {}.{} or newer: {e}",
            GIT_AT_LEAST.0, GIT_AT_LEAST.1
        )
    })?;
    match parse_git_version(&version) {
        Some(v) if v >= GIT_AT_LEAST => Ok(()),
        _ => Err(format!(
            "the demo needs git {}.{} or newer (the hub merges with `git merge-tree --write-tree`); this is {version:?}",
            GIT_AT_LEAST.0, GIT_AT_LEAST.1
        )),
    }
}

/// `git version 2.47.3` → (2, 47).
fn parse_git_version(text: &str) -> Option<(u32, u32)> {
    let v = text.strip_prefix("git version ")?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Write `text` to `path` with `mode`, whatever the umask.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

/// The bare remote with the example project on main, the runner, and a
/// clone for each agent, its git identity set.
pub(super) fn make(layout: &Layout) -> Result<(), String> {
    let remote = layout.remote();
    let remote_s = remote.display().to_string();
    git(
        &layout.root,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            &remote_s,
        ],
    )?;
    let seed = tempfile::Builder::new()
        .prefix("seed-")
        .tempdir_in(&layout.root)
        .map_err(|e| format!("cannot make a scratch folder: {e}"))?;
    let work = seed.path();
    git(work, &["init", "--quiet", "--initial-branch=main"])?;
    for (name, text) in PROJECT {
        write(&work.join(name), text, 0o644)?;
    }
    git(work, &["add", "--all"])?;
    git(
        work,
        &[
            "-c",
            "user.name=AgentCom demo",
            "-c",
            "user.email=demo@agentcom.invalid",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--quiet",
            "-m",
            "The hello project: greetings, one line each",
        ],
    )?;
    git(work, &["push", "--quiet", &remote_s, "main"])?;
    drop(seed);

    write(&layout.runner(), RUNNER, 0o700)?;
    for name in AGENTS {
        let clone = layout.clone_of(name);
        std::fs::create_dir_all(layout.agent(name))
            .map_err(|e| format!("cannot create {}: {e}", layout.agent(name).display()))?;
        let clone_s = clone.display().to_string();
        git(&layout.root, &["clone", "--quiet", &remote_s, &clone_s])?;
        for (key, value) in [
            ("user.name", name.to_string()),
            ("user.email", format!("{name}@agentcom.invalid")),
            ("commit.gpgsign", "false".into()),
        ] {
            git(&clone, &["config", key, &value])?;
        }
    }
    Ok(())
}

/// The hub's settings: listening on `listen`, its data in the demo
/// directory, guarding the example project with review by an agent.
pub(super) fn hub_toml(layout: &Layout, listen: &str) -> String {
    format!(
        "# The hub's settings for `agentcom-hub demo`, written at every start;\n\
         # deploy/hub.example.toml has every setting, explained.\n\
         listen = {listen}\n\
         data_dir = {data_dir}\n\
         \n\
         # The example project: agents push their branches to it, the hub\n\
         # merges into its main after check.sh passed on the merge.\n\
         [[repos]]\n\
         name = {repo}\n\
         url = {url}\n\
         main_branch = \"main\"\n\
         check_command = [\"sh\", \"check.sh\"]\n\
         check_timeout_s = 60\n\
         poll_s = 10\n\
         \n\
         # A change this small goes to another agent for review, then merges.\n\
         [repos.gate]\n\
         auto_merge = true\n\
         max_files = 5\n\
         max_lines = 20\n\
         deny_paths = [\".ci/**\", \"deploy/**\"]\n\
         review = \"agent\"\n",
        listen = toml_str(listen),
        data_dir = toml_str(&layout.root.display().to_string()),
        repo = toml_str(REPO),
        url = toml_str(&layout.remote().display().to_string()),
    )
}

/// Agent `name`'s `sidecar.toml`: what `agentcom-hub agent add` prints,
/// with its state and clone in the demo directory and the demo's runner.
pub(super) fn sidecar_toml(
    layout: &Layout,
    hub_ws_url: &str,
    name: &str,
    token: &str,
    capabilities: &[String],
) -> String {
    let state = layout.agent(name).join("state").display().to_string();
    let runner = layout.runner().display().to_string();
    let base = sidecar_config(&SidecarConfigText {
        hub_urls: &[hub_ws_url.to_string()],
        agent_id: name,
        token,
        capabilities,
        state_dir: Some(&state),
        ca_file: None,
        runner: Some(&runner),
    });
    format!(
        "# Agent {name}'s sidecar, run by `agentcom-hub demo` inside its own process.\n\
         # On its own it would be: agentcom-sidecar run --config {config}\n\
         {base}\n\
         [git]\n\
         repo = {repo}\n\
         repo_dir = {dir}\n\
         remote = \"origin\"\n\
         main_branch = \"main\"\n",
        config = layout.sidecar_toml(name).display(),
        repo = toml_str(REPO),
        dir = toml_str(&layout.clone_of(name).display().to_string()),
    )
}

/// Write agent `name`'s sidecar config (0600: it holds its token).
pub(super) fn write_sidecar_toml(layout: &Layout, name: &str, text: &str) -> Result<(), String> {
    write(&layout.sidecar_toml(name), text, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, Settings};

    #[test]
    fn git_versions_are_read() {
        assert_eq!(parse_git_version("git version 2.47.3"), Some((2, 47)));
        assert_eq!(
            parse_git_version("git version 2.39.5 (Apple Git-154)"),
            Some((2, 39))
        );
        assert_eq!(
            parse_git_version("git version 2.38.0.windows.1"),
            Some((2, 38))
        );
        assert_eq!(parse_git_version("nonsense"), None);
        assert!((2, 37) < GIT_AT_LEAST && (3, 0) > GIT_AT_LEAST);
    }

    #[test]
    fn the_hub_settings_load_and_guard_the_project_with_agent_review() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            root: dir.path().join("demo \"quoted\""),
        };
        std::fs::create_dir_all(&layout.root).unwrap();
        std::fs::write(layout.hub_toml(), hub_toml(&layout, "127.0.0.1:4555")).unwrap();
        let s = Settings::load_with_env(
            Some(&layout.hub_toml()),
            &Overrides::default(),
            Some(vec![]),
        )
        .unwrap();
        assert_eq!(s.listen, "127.0.0.1:4555");
        assert_eq!(s.data_dir, layout.root);
        let repos = s.repo_configs().unwrap();
        let hello = &repos[REPO];
        assert_eq!(hello.url, layout.remote().display().to_string());
        assert_eq!(hello.check_command, ["sh", "check.sh"]);
        assert_eq!(hello.gate.review, crate::domain::gate::ReviewMode::Agent);
    }

    #[test]
    fn each_task_names_its_file_and_line_and_the_later_ones_wait() {
        let now = Timestamp::parse("2026-05-01T10:00:00Z").unwrap();
        for t in &TASKS {
            let language = t.title.strip_prefix("Say hello in ").unwrap();
            assert_eq!(t.file, format!("greetings/{}.txt", language.to_lowercase()));
            let n = t.new_task(now);
            assert_eq!(n.repo.as_deref(), Some(REPO));
            let meta = n.metadata.unwrap();
            assert_eq!(meta["file"], t.file);
            assert_eq!(meta["text"], t.text);
            assert_eq!(
                n.run_at,
                (t.after_s > 0).then(|| now.plus_secs(t.after_s.into()))
            );
        }
        assert!(TASKS.iter().filter(|t| t.after_s == 0).count() >= 3);
    }

    #[test]
    fn a_sidecar_config_loads_as_the_sidecar_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            root: dir.path().to_path_buf(),
        };
        let caps: Vec<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
        let text = sidecar_toml(
            &layout,
            "ws://127.0.0.1:4000/ws",
            "ada",
            "acm_agent_x",
            &caps,
        );
        write_sidecar_toml(&layout, "ada", &text).unwrap();
        let cfg =
            agentcom_sidecar::config::SidecarConfig::load(&layout.sidecar_toml("ada")).unwrap();
        assert_eq!(cfg.agent_id, "ada");
        assert!(cfg.git.is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(layout.sidecar_toml("ada"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
