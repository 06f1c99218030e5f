//! The local control socket (`<state_dir>/control.sock`): how a woken agent
//! reports in `wake` mode (`agentcom-sidecar complete|fail`), one JSON line
//! in, one JSON line out. Only the daemon's user can reach it (0600).
//! It carries requests and replies; it must never decide them: the
//! attempt machine answers, through the daemon loop.

use std::path::Path;

use agentcom_protocol::FailClass;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// A request from the `complete`/`fail`/`status` subcommands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Complete {
        task_id: String,
        #[serde(default)]
        summary: Option<String>,
        #[serde(default)]
        pr_url: Option<String>,
        #[serde(default)]
        branch: Option<String>,
    },
    Fail {
        task_id: String,
        error: String,
        #[serde(default = "yes")]
        retryable: bool,
        /// What kind of failure (`task` when absent).
        #[serde(default)]
        class: FailClass,
        /// With `rate_limited`: when to try again (at most a day; the
        /// sidecar's `runner.rate_limit_default_s` when absent).
        #[serde(default)]
        retry_after_s: Option<u64>,
        /// The end of the agent's output, for the next attempt (at most
        /// 8 KiB is kept).
        #[serde(default)]
        log_tail: Option<String>,
    },
    Status,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
}

/// The failure class named `name`, for `agentcom-sidecar fail --class`.
pub fn fail_class(name: &str) -> Result<FailClass, String> {
    crate::validate::fail_class(name)
}

/// Whether a `fail` request's class and `retry_after_s` go together (the
/// daemon checks again).
pub fn check_fail(class: FailClass, retry_after_s: Option<u64>) -> Result<(), String> {
    crate::validate::fail_report(class, retry_after_s)
}

/// The end of the file at `path` (at most 8 KiB), for `fail --log-file`.
pub fn log_tail(path: &Path) -> Result<String, String> {
    std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(crate::runner::tail(path, crate::runner::MAX_LOG_TAIL))
}

/// A request and where its reply goes.
pub(crate) type Incoming = (Request, oneshot::Sender<Reply>);

/// Serve the socket until the daemon exits.
pub(crate) async fn serve(
    path: &Path,
    to_daemon: mpsc::UnboundedSender<Incoming>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let to_daemon = to_daemon.clone();
        actix_rt::spawn(async move {
            if let Err(e) = handle(stream, to_daemon).await {
                tracing::warn!(error = %e, "control connection failed");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    to_daemon: mpsc::UnboundedSender<Incoming>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            let (tx, rx) = oneshot::channel();
            if to_daemon.send((req, tx)).is_err() {
                Reply {
                    ok: false,
                    message: "the daemon is stopping".into(),
                }
            } else {
                rx.await.unwrap_or(Reply {
                    ok: false,
                    message: "the daemon dropped the request".into(),
                })
            }
        }
        Err(e) => Reply {
            ok: false,
            message: format!("bad request: {e}"),
        },
    };
    write
        .write_all(
            serde_json::to_string(&reply)
                .expect("serialises")
                .as_bytes(),
        )
        .await?;
    write.write_all(b"\n").await?;
    Ok(())
}

/// Client side: send one request to a running daemon.
pub async fn call(path: &Path, req: &Request) -> Result<Reply, String> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        format!(
            "the sidecar daemon is not reachable at {} ({e}); is `agentcom-sidecar run` running?",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(req).expect("serialises");
    text.push('\n');
    write
        .write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("unexpected reply {line:?}: {e}"))
}
