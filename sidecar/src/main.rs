//! `agentcom-sidecar`: `join` makes this machine an agent of a hub; `run`
//! is the daemon; `complete`, `fail` and `status` talk to a running
//! daemon; `selftest` checks this machine and the hub; `git …` is the
//! branch workflow.

use std::path::PathBuf;
use std::process::ExitCode;

use agentcom_protocol::FailClass;
use agentcom_sidecar::config::SidecarConfig;
use agentcom_sidecar::control::{self, Request};
use agentcom_sidecar::daemon::Daemon;
use agentcom_sidecar::join::{self, JoinArgs};
use agentcom_sidecar::service::Manager;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agentcom-sidecar", version, about = "AgentCom sidecar daemon")]
struct Cli {
    /// The sidecar's settings file (default: sidecar.toml; for `join`, the
    /// file it writes: default /etc/agentcom/<id>.toml as root, else
    /// ~/.config/agentcom/<id>.toml).
    #[arg(long, global = true, env = "AGENTCOM_SIDECAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make this machine an agent of a hub: check it, enroll with the
    /// hub's enrollment token, write the config (0600), run the
    /// self-test, install the service, and print `ready` once the hub's
    /// verification task came back.
    #[command(after_help = "Examples:
  agentcom-sidecar join --hub http://127.0.0.1:4000 --enroll-token \"$(cat data/hub/enroll.token)\" \\
      --id loash --capabilities code --runner /usr/local/bin/agent-runner --install none
  agentcom-sidecar join --hub https://hub.example.org:4000 --enroll-token \"$TOKEN\" --id build-07 \\
      --capabilities rust,git --runner \"/opt/agent/run --fast\" --repo app --repo-dir ~/work/app --install systemd
  agentcom-sidecar join --hub https://hub-a.example.org:4000,https://hub-b.example.org:4000 --enroll-token \"$TOKEN\" \\
      --id build-08 --capabilities rust --runner /opt/agent/run --install systemd   # two hubs, one leads")]
    Join(Box<JoinCli>),
    /// Run the daemon.
    Run,
    /// Report the current task complete (wake mode).
    Complete {
        #[arg(long)]
        task: String,
        #[arg(long)]
        summary: Option<String>,
        #[arg(long)]
        pr_url: Option<String>,
        #[arg(long)]
        branch: Option<String>,
    },
    /// Report the current task failed (wake mode).
    Fail {
        #[arg(long)]
        task: String,
        #[arg(long)]
        error: String,
        /// The failure will not go away on a retry.
        #[arg(long)]
        not_retryable: bool,
        /// What kind of failure: task (the default), environment (this
        /// machine: git, disk, tools), agent (the agent's session) or
        /// rate_limited (the model provider limits the agent).
        #[arg(long, default_value = "task", value_parser = control::fail_class)]
        class: FailClass,
        /// With --class rate_limited: seconds to wait before the agent gets
        /// work again (at most 86400; runner.rate_limit_default_s if unset).
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        retry_after_s: Option<u64>,
        /// A file whose end (at most 8 KiB) goes with the report as its
        /// log tail, for the next attempt to read.
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// What the running daemon is doing.
    Status,
    /// Check that this sidecar can work: the hub is reachable, it takes
    /// the token, the runner can be run, the git remote answers, the
    /// state dir is writable, the disk has room. A table; exit 0 when all
    /// pass, else 1.
    Selftest,
    /// The git workflow.
    Git {
        #[command(subcommand)]
        cmd: GitCmd,
    },
}

#[derive(clap::Args)]
struct JoinCli {
    /// The hub's address: http://host:port or https://host:port. Several
    /// hubs on one database (one leads, the others stand by): --hub again,
    /// or a comma-separated list; the config then gets hub_urls.
    #[arg(long, env = "AGENTCOM_HUB_URL", value_delimiter = ',', required = true)]
    hub: Vec<String>,
    /// The hub's enrollment token (its <data_dir>/enroll.token, or its
    /// enroll_token setting).
    #[arg(long, env = "AGENTCOM_ENROLL_TOKEN", hide_env_values = true)]
    enroll_token: String,
    /// This agent's id on the hub: 1 to 64 of a-z, 0-9, '-' and '_'.
    #[arg(long)]
    id: String,
    /// Comma-separated capabilities.
    #[arg(long, value_delimiter = ',', default_value = "")]
    capabilities: Vec<String>,
    /// The program that does a task, as one line of shell words.
    #[arg(long)]
    runner: String,
    /// The hub's name for the repository this machine has a clone of.
    #[arg(long, requires = "repo_dir")]
    repo: Option<String>,
    /// This machine's clone of it (with user.name and user.email set).
    #[arg(long, requires = "repo")]
    repo_dir: Option<PathBuf>,
    /// The remote in that clone that is the hub's repository.
    #[arg(long, default_value = "origin")]
    remote: String,
    /// The repository's main branch.
    #[arg(long, default_value = "main")]
    main_branch: String,
    /// The model's context window, in tokens.
    #[arg(long)]
    context_window_tokens: Option<u64>,
    /// What runs the sidecar: a systemd unit, a pm2 app, or nothing (then
    /// `join` runs it until it is verified and tells you how to start it).
    #[arg(long, default_value = "systemd", value_parser = Manager::parse)]
    install: Manager,
    /// Where its state goes (default /var/lib/agentcom/<id> as root, else
    /// ~/.local/state/agentcom/<id>).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// PEM file of the CA certificates to trust for an https:// hub.
    #[arg(long, env = "AGENTCOM_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Write the systemd unit here instead of systemd's folder (it is
    /// then not started).
    #[arg(long)]
    service_dir: Option<PathBuf>,
    /// How long to wait for the hub's verification, in seconds.
    #[arg(long, default_value_t = 120)]
    wait_s: u64,
}

#[derive(Subcommand)]
enum GitCmd {
    /// Fetch main, prove it is current, branch {agent_id}/{task_id} from it.
    StartTask { task_id: String },
    /// Push the checked-out task branch (leased on what the last fetch saw).
    Submit,
    /// Where the work tree stands.
    Status,
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Join(j) = cli.cmd {
        // The one command that writes its config rather than reading it.
        return run_join(j, cli.config);
    }
    let config = cli.config.unwrap_or_else(|| PathBuf::from("sidecar.toml"));
    let cfg = match SidecarConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.cmd {
        Cmd::Join(_) => unreachable!("join returned above"),
        Cmd::Run => {
            init_logs("info");
            actix_rt::System::new().block_on(async move { Daemon::new(cfg)?.run().await })
        }
        Cmd::Complete {
            task,
            summary,
            pr_url,
            branch,
        } => ask(
            &cfg,
            Request::Complete {
                task_id: task,
                summary,
                pr_url,
                branch,
            },
        ),
        Cmd::Fail {
            task,
            error,
            not_retryable,
            class,
            retry_after_s,
            log_file,
        } => control::check_fail(class, retry_after_s)
            .and_then(|()| log_file.as_deref().map(control::log_tail).transpose())
            .and_then(|log_tail| {
                ask(
                    &cfg,
                    Request::Fail {
                        task_id: task,
                        error,
                        retryable: !not_retryable,
                        class,
                        retry_after_s,
                        log_tail,
                    },
                )
            }),
        Cmd::Status => ask(&cfg, Request::Status),
        Cmd::Selftest => {
            let report = actix_rt::System::new()
                .block_on(async { agentcom_sidecar::probe::full(&cfg).await });
            print!("{}", report.table());
            return if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Cmd::Git { cmd } => {
            let Some(git) = cfg.git.clone() else {
                eprintln!("error: {} has no [git] section", config.display());
                return ExitCode::FAILURE;
            };
            match cmd {
                GitCmd::StartTask { task_id } => {
                    agentcom_sidecar::git::start_task(&git, &cfg.agent_id, &task_id)
                        .map(|p| println!("on branch {} from {}", p.branch, p.base))
                }
                GitCmd::Submit => {
                    agentcom_sidecar::git::submit(&git).map(|b| println!("pushed {b}"))
                }
                GitCmd::Status => agentcom_sidecar::git::status(&git).map(|s| println!("{s}")),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `agentcom-sidecar join`.
fn run_join(j: Box<JoinCli>, config: Option<PathBuf>) -> ExitCode {
    let j = *j;
    init_logs("warn");
    let args = JoinArgs {
        hub: j.hub.join(","),
        enroll_token: j.enroll_token,
        id: j.id,
        capabilities: j
            .capabilities
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect(),
        runner: j.runner,
        repo: j.repo,
        repo_dir: j.repo_dir,
        remote: j.remote,
        main_branch: j.main_branch,
        context_window_tokens: j.context_window_tokens,
        install: j.install,
        config,
        state_dir: j.state_dir,
        ca_file: j.ca_file,
        service_dir: j.service_dir,
        wait: std::time::Duration::from_secs(j.wait_s),
    };
    match actix_rt::System::new().block_on(join::join(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ask(cfg: &SidecarConfig, req: Request) -> Result<(), String> {
    let socket = cfg.control_socket();
    let reply =
        actix_rt::System::new().block_on(async move { control::call(&socket, &req).await })?;
    if reply.ok {
        println!("{}", reply.message);
        Ok(())
    } else {
        Err(reply.message)
    }
}
