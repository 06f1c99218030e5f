//! `agentcom-hub`: `serve` runs the hub; `demo` runs a hub with three
//! agents and an example project, made on the spot; `agent …`, `task …`,
//! `lane …` and `alerts` are admin commands against a running hub.

use std::path::PathBuf;
use std::process::ExitCode;

use agentcom_hub::cli::{self, AgentCmd, Conn, LaneCmd, TaskCmd};
use agentcom_hub::config::{Overrides, Settings};
use agentcom_protocol::NewTask;
use clap::{Args, Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read before `main`: memory the hub frees goes back
/// to the system within about a second, by jemalloc's background thread,
/// so its RSS follows what it holds rather than its peaks (jemalloc's
/// defaults keep freed pages for 10 s, and return them only when the same
/// arena allocates again). `_RJEM_MALLOC_CONF` in the environment adds to
/// these (decision 0016).
// SAFETY: jemalloc reads this symbol (its `malloc_conf` under the prefix
// tikv-jemalloc-sys builds it with) as a NUL-terminated C string; nothing
// else defines it, and the bytes end in NUL and never change.
#[allow(unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(name = "agentcom-hub", version, about = "AgentCom scheduler hub")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the hub.
    Serve {
        /// TOML settings file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:4000).
        #[arg(long)]
        listen: Option<String>,
        /// Where the store lives (default ./data/hub).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Try it: a hub, three agents and a small project, with example tasks
    /// flowing through review and merge. Ctrl-C stops all of it.
    #[command(after_help = "Example:
  agentcom-hub demo      # then open the printed dashboard link

Every start deletes and remakes the demo's data dir (only ever one an
earlier demo made; any other non-empty directory is refused).")]
    Demo {
        /// Address to listen on (default 127.0.0.1:4000).
        #[arg(long)]
        listen: Option<String>,
        /// The demo's data dir (default ./data/demo).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manage agents on a running hub.
    Agent {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: AgentArgs,
    },
    /// Manage tasks on a running hub.
    Task {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: TaskArgs,
    },
    /// Pause or resume a priority lane on a running hub.
    #[command(after_help = "Examples:
  agentcom-hub lane pause urgent     # urgent tasks stay queued; other lanes flow
  agentcom-hub lane resume urgent    # urgent tasks are assigned again
  curl -s -H \"Authorization: Bearer $AGENTCOM_ADMIN_TOKEN\" http://127.0.0.1:4000/api/state | jq .paused_lanes")]
    Lane {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: LaneArgs,
    },
    /// Move a hub's store: copy everything from one store into a new,
    /// empty one (the hub stopped).
    #[command(after_help = "Examples:
  agentcom-hub store copy --from ./data/hub --to postgres://agentcom@db:5432/agentcom
  agentcom-hub store copy --from postgres://agentcom@db:5432/agentcom --to ./data/hub-again

A store is a hub's data dir (sled) or a postgres:// URL. The hub must be
stopped (sled refuses a store another process holds); the destination must
hold no tasks and no agents. Then start the hub with store.backend and
store.url naming the destination, and the same data dir (it keeps the
admin and enrollment tokens and the repositories' clones).")]
    Store {
        #[command(subcommand)]
        cmd: StoreArgs,
    },
    /// Recent alerts of a running hub, newest first.
    #[command(after_help = "Examples:
  agentcom-hub alerts                # the last 20: when, what, about what, why
  agentcom-hub alerts --limit 100 --json")]
    Alerts {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum StoreArgs {
    /// Copy every task, change, agent, session and hub value.
    Copy {
        /// The store to copy: a data dir, or postgres://….
        #[arg(long)]
        from: String,
        /// The new store: a data dir, or postgres://….
        #[arg(long)]
        to: String,
    },
}

#[derive(Args)]
struct ConnArgs {
    /// The hub's address: http://… or https://…. Several hubs on one
    /// database (one leads, the others stand by): --hub again, or a
    /// comma-separated list (in AGENTCOM_HUB_URL too); each request goes
    /// to the hub that leads (a standby's 503 not_leader names it).
    #[arg(
        long,
        global = true,
        env = "AGENTCOM_HUB_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:4000"
    )]
    hub: Vec<String>,
    /// The hub's data dir, to find admin.token (or set AGENTCOM_ADMIN_TOKEN).
    #[arg(
        long,
        global = true,
        env = "AGENTCOM_DATA_DIR",
        default_value = "./data/hub"
    )]
    data_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// PEM file of the CA certificates to trust for an https:// hub,
    /// instead of the system's roots.
    #[arg(long, global = true, env = "AGENTCOM_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AgentArgs {
    /// Create an agent; prints its token (once) and a ready sidecar
    /// config, or writes it to --out.
    #[command(after_help = "Examples:
  agentcom-hub agent add build-01 --capabilities rust,git --runner /usr/local/bin/agent-runner --out build-01.toml
  agentcom-sidecar run --config build-01.toml      # then, on the agent's machine
  agentcom-hub agent add build-02 --capabilities rust > build-02.toml")]
    Add {
        name: String,
        /// Comma-separated capabilities.
        #[arg(long, value_delimiter = ',', default_value = "")]
        capabilities: Vec<String>,
        /// state_dir to put in the sidecar config (unset: the sidecar's
        /// default for its user).
        #[arg(long)]
        state_dir: Option<String>,
        /// Runner command to put in the sidecar config.
        #[arg(long)]
        runner: Option<String>,
        /// Write the sidecar config to this new file (mode 0600) once the
        /// hub created the agent; an existing file is refused before the
        /// hub is asked.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List agents.
    List,
    /// Revoke an agent's token and drop its connection.
    Revoke { name: String },
    /// Pause (drain) an agent: it finishes the task it has and takes no
    /// other until resumed. Kept across hub restarts.
    #[command(after_help = "Examples:
  agentcom-hub agent pause build-01    # take build-01 out for maintenance
  agentcom-hub agent list              # its STATE shows e.g. working,paused until it drained
  agentcom-hub agent resume build-01   # give it work again")]
    Pause { name: String },
    /// Resume a paused agent: it is offered work again.
    #[command(after_help = "Example:
  agentcom-hub agent resume build-01")]
    Resume { name: String },
}

#[derive(Subcommand)]
enum LaneArgs {
    /// Pause a priority lane (urgent, high, normal or low): its tasks,
    /// retries included, stay queued while the other lanes flow. Kept
    /// across hub restarts.
    #[command(after_help = "Example:
  agentcom-hub lane pause low")]
    Pause {
        #[arg(value_parser = cli::parse_priority)]
        priority: agentcom_protocol::Priority,
    },
    /// Resume a paused priority lane.
    #[command(after_help = "Example:
  agentcom-hub lane resume low")]
    Resume {
        #[arg(value_parser = cli::parse_priority)]
        priority: agentcom_protocol::Priority,
    },
}

#[derive(Subcommand)]
enum TaskArgs {
    /// Submit a task.
    Submit {
        #[arg(long)]
        title: String,
        #[arg(long, value_parser = cli::parse_priority)]
        priority: Option<agentcom_protocol::Priority>,
        /// Comma-separated capabilities the task needs.
        #[arg(long, value_delimiter = ',')]
        needs: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        repo: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        max_retries: Option<u32>,
        #[arg(long)]
        timeout_s: Option<u64>,
        /// Not before then (RFC 3339, e.g. 2026-12-01T09:00:00Z).
        #[arg(long, value_parser = agentcom_protocol::Timestamp::parse)]
        run_at: Option<agentcom_protocol::Timestamp>,
        /// Only for an agent with at least this context window.
        #[arg(long)]
        context_budget_tokens: Option<u64>,
        /// Print only the new task's id (for `TASK=$(agentcom-hub task submit -q …)`).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create many tasks from a file: a JSON array of task bodies (as
    /// `POST /api/tasks` takes them), or one a line (JSON lines). Posted in
    /// batches of at most 1,000 (`POST /api/tasks/batch`), each all or
    /// nothing; a refused task is named by its line (or index).
    #[command(after_help = "Examples:
  agentcom-hub task import backlog.jsonl       # {\"title\": \"…\", \"idempotency_key\": \"…\"} a line
  jq -c '.[] | {title, idempotency_key: \"issue-\\(.number)\"}' issues.json | agentcom-hub task import -
  agentcom-hub task import backlog.json --json | jq -r '.tasks[].id'

Give each task an idempotency_key: importing the same file again then
creates only the tasks that are missing (the others answer as existing).")]
    Import {
        /// The file, or - for standard input.
        file: String,
        /// Most tasks a batch (1 to 1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
        batch_size: u64,
    },
    /// Wait until a task has ended; print how. Exit 0 when it completed,
    /// 1 when it went dead, was cancelled, or the wait ran out.
    #[command(after_help = "Example:
  TASK=$(agentcom-hub task submit -q --title \"Say hello\" --needs code)
  agentcom-hub task wait \"$TASK\" --timeout-s 120 && agentcom-hub task show \"$TASK\"")]
    Wait {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a task with its history (a table; --json for the hub's JSON).
    #[command(after_help = "Examples:
  agentcom-hub task show 01J9Z3K8Q4B5N6M7P8R9S0T1V2
  agentcom-hub task show 01J9Z3K8Q4B5N6M7P8R9S0T1V2 --json | jq .history")]
    Show { id: String },
    /// Cancel a task.
    Cancel { id: String },
    /// Requeue a dead, failed or cancelled task.
    Retry { id: String },
    /// Why a task is not running, in sentences.
    ///
    /// Example: agentcom-hub task why 01J9Z3K8Q4B5N6M7P8R9S0T1V2
    Why { id: String },
}

fn init_logs(default: &str) {
    agentcom_hub::app::init_logs(default);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve {
            config,
            listen,
            data_dir,
        } => {
            init_logs("info");
            match Settings::load(config.as_deref(), &Overrides { listen, data_dir }) {
                Ok(settings) => {
                    actix_rt::System::new().block_on(agentcom_hub::app::serve(settings))
                }
                Err(e) => Err(format!("settings: {e}")),
            }
        }
        Cmd::Demo { listen, data_dir } => {
            // Quiet, so the banner is what a person reads; the hub's note of
            // each sidecar's socket closing at the stop is not for them
            // (docs/decisions/0011-the-demo.md).
            init_logs("warn,agentcom_hub::actors::connection=error");
            agentcom_hub::demo::run(agentcom_hub::demo::DemoArgs { listen, data_dir })
        }
        Cmd::Agent { conn, cmd } => {
            init_logs("warn");
            let cmd = match cmd {
                AgentArgs::Add {
                    name,
                    capabilities,
                    state_dir,
                    runner,
                    out,
                } => AgentCmd::Add {
                    name,
                    capabilities: capabilities.into_iter().filter(|c| !c.is_empty()).collect(),
                    state_dir,
                    runner,
                    out,
                },
                AgentArgs::List => AgentCmd::List,
                AgentArgs::Revoke { name } => AgentCmd::Revoke { name },
                AgentArgs::Pause { name } => AgentCmd::Pause { name, paused: true },
                AgentArgs::Resume { name } => AgentCmd::Pause {
                    name,
                    paused: false,
                },
            };
            actix_rt::System::new().block_on(cli::agent(conn.into(), cmd))
        }
        Cmd::Task { conn, cmd } => {
            init_logs("warn");
            let cmd = match cmd {
                TaskArgs::Submit {
                    title,
                    priority,
                    needs,
                    description,
                    repo,
                    idempotency_key,
                    max_retries,
                    timeout_s,
                    run_at,
                    context_budget_tokens,
                    quiet,
                } => TaskCmd::Submit {
                    quiet,
                    spec: Box::new(NewTask {
                        title,
                        description,
                        priority,
                        needed_capabilities: (!needs.is_empty()).then_some(needs),
                        repo,
                        idempotency_key,
                        max_retries,
                        timeout_s,
                        run_at,
                        context_budget_tokens,
                        ..Default::default()
                    }),
                },
                TaskArgs::Import { file, batch_size } => {
                    return finish(actix_rt::System::new().block_on(cli::task_import(
                        conn.into(),
                        &file,
                        batch_size as usize,
                    )))
                }
                TaskArgs::List { status, limit } => TaskCmd::List { status, limit },
                TaskArgs::Show { id } => TaskCmd::Show { id },
                TaskArgs::Wait { id, timeout_s } => TaskCmd::Wait {
                    id,
                    timeout: std::time::Duration::from_secs(timeout_s),
                },
                TaskArgs::Cancel { id } => TaskCmd::Cancel { id },
                TaskArgs::Retry { id } => TaskCmd::Retry { id },
                TaskArgs::Why { id } => TaskCmd::Why { id },
            };
            actix_rt::System::new().block_on(cli::task(conn.into(), cmd))
        }
        Cmd::Lane { conn, cmd } => {
            init_logs("warn");
            let cmd = match cmd {
                LaneArgs::Pause { priority } => LaneCmd {
                    priority,
                    paused: true,
                },
                LaneArgs::Resume { priority } => LaneCmd {
                    priority,
                    paused: false,
                },
            };
            actix_rt::System::new().block_on(cli::lane(conn.into(), cmd))
        }
        Cmd::Store {
            cmd: StoreArgs::Copy { from, to },
        } => {
            init_logs("warn");
            agentcom_hub::app::copy_store(&from, &to).map(|summary| println!("{summary}"))
        }
        Cmd::Alerts { conn, limit } => {
            init_logs("warn");
            actix_rt::System::new().block_on(cli::alerts(conn.into(), limit))
        }
    };
    finish(result)
}

/// The exit code of a command's result (its error printed).
fn finish(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

impl From<ConnArgs> for Conn {
    fn from(a: ConnArgs) -> Conn {
        Conn {
            hubs: a
                .hub
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            data_dir: a.data_dir,
            json: a.json,
            ca_file: a.ca_file,
        }
    }
}
