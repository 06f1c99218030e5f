//! `agentcom-sidecar`: `run` is the daemon; `complete`, `fail` and
//! `status` talk to a running daemon; `selftest` checks this machine and
//! the hub; `git …` is the branch workflow.

use std::path::PathBuf;
use std::process::ExitCode;

use agentcom_protocol::FailClass;
use agentcom_sidecar::config::SidecarConfig;
use agentcom_sidecar::control::{self, Request};
use agentcom_sidecar::daemon::Daemon;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agentcom-sidecar", version, about = "AgentCom sidecar daemon")]
struct Cli {
    /// The sidecar's settings file.
    #[arg(
        long,
        global = true,
        env = "AGENTCOM_SIDECAR_CONFIG",
        default_value = "sidecar.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    let cfg = match SidecarConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.cmd {
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
                eprintln!("error: {} has no [git] section", cli.config.display());
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
