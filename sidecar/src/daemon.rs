//! The sidecar daemon: one loop that keeps the agent connected and working.
//!
//! It owns the WebSocket to the hub (awc; reconnects with capped,
//! full-jitter exponential backoff), the attempt it holds (`current`), the
//! runner of that attempt, and the outbox. The order of things is what
//! makes it safe:
//!
//! - on `assign`, the attempt is written to disk *before* `accept` is sent,
//!   and the runner starts after;
//! - a finished attempt's `complete`/`fail` is written to the outbox
//!   *before* the attempt is cleared, and it stays there until the hub's
//!   `ack`; every reconnect resends it (and any `accept` for the attempt
//!   held), right after `welcome` and before the first heartbeat;
//! - `hello` says what it holds and which results are pending, so the hub
//!   never mistakes a finished-but-unsent attempt for a lost one;
//! - heartbeats carry the real state; the hub's `cancel` kills the
//!   runner's process group.
//!
//! After a `kill -9` it starts from the disk: a result in the outbox is
//! delivered; an attempt without one had its runner die with the daemon
//! (it is killed if it somehow survived) and is reported as a retryable
//! failure. The runner runs off this loop, so heartbeats never stall.
//! Everything runs on one thread (awc is `!Send`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use actix_codec::Framed;
use agentcom_protocol::{
    AckOf, AttemptRef, HubMsg, SidecarMsg, SidecarState, TaskResult, Timestamp, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use awc::ws::{Codec, Frame, Message};
use awc::BoxedSocket;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{Mode, SidecarConfig};
use crate::control::{self, Reply, Request};
use crate::runner::{self, Outcome, RunSpec};
use crate::store::{write_atomic, Current, StateDir};

type Conn = Framed<BoxedSocket, Codec>;

/// Largest result the sidecar sends (well under the 1 MiB frame limit).
const MAX_RESULT_BYTES: u64 = 512 * 1024;

/// Things that happen off the connection loop.
enum Local {
    RunnerStarted {
        task: AttemptRef,
        pgid: i32,
    },
    RunnerDone {
        task: AttemptRef,
        outcome: Outcome,
        result_file: PathBuf,
    },
}

enum Event {
    Frame(Option<Result<Frame, awc::error::WsProtocolError>>),
    Tick,
    Local(Local),
    Control(control::Incoming),
    Stop,
}

/// Why a session ended.
enum Ended {
    Lost,
    Stop,
}

pub struct Daemon {
    cfg: SidecarConfig,
    token: String,
    state: StateDir,
    current: Option<Current>,
    cancel_runner: Option<oneshot::Sender<String>>,
    local_tx: mpsc::UnboundedSender<Local>,
    local_rx: mpsc::UnboundedReceiver<Local>,
    control_rx: mpsc::UnboundedReceiver<control::Incoming>,
    control_tx: mpsc::UnboundedSender<control::Incoming>,
    backoff: Backoff,
    heartbeat_every: Duration,
    silence_limit: Duration,
}

impl Daemon {
    /// Open the state dir and recover from whatever the last run left.
    pub fn new(cfg: SidecarConfig) -> Result<Daemon, String> {
        let token = cfg.token()?;
        let mut state = StateDir::open(&cfg.state_dir)?;
        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let mut current = state.load_current()?;
        if let Some(c) = current.clone() {
            let pending = state.outbox().iter().any(|e| e.attempt_ref() == c.task);
            if pending {
                tracing::info!(task = %c.task, "the last run finished this attempt; its result is in the outbox");
                state.clear_current()?;
                current = None;
            } else {
                if let Some(pgid) = c.runner_pgid {
                    if runner::kill_leftover(pgid, &c.task.task_id) {
                        tracing::warn!(task = %c.task, pgid, "killed a runner that outlived the last run");
                    }
                }
                tracing::warn!(task = %c.task, "the runner died with the last run of the sidecar; reporting a retryable failure");
                state.push_outbox(SidecarMsg::Fail {
                    task_id: c.task.task_id.clone(),
                    generation: c.task.generation,
                    error: "the runner died when the sidecar stopped unexpectedly".into(),
                    retryable: true,
                })?;
                state.clear_current()?;
                current = None;
            }
        }
        let backoff = Backoff::new(
            Duration::from_millis(cfg.reconnect.initial_ms.max(1)),
            Duration::from_secs(cfg.reconnect.max_s.max(1)),
        );
        Ok(Daemon {
            cfg,
            token,
            state,
            current,
            cancel_runner: None,
            local_tx,
            local_rx,
            control_rx,
            control_tx,
            backoff,
            heartbeat_every: Duration::from_secs(30),
            silence_limit: Duration::from_secs(90),
        })
    }

    /// Run until SIGTERM/SIGINT.
    pub async fn run(mut self) -> Result<(), String> {
        let socket = self.cfg.control_socket();
        let control_tx = self.control_tx.clone();
        actix_rt::spawn(async move {
            if let Err(e) = control::serve(&socket, control_tx).await {
                tracing::error!(error = %e, socket = %socket.display(), "control socket failed");
            }
        });
        let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<()>();
        actix_rt::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            let _ = stop_tx.send(());
        });
        tracing::info!(agent = %self.cfg.agent_id, hub = %self.cfg.hub_url, state_dir = %self.state.root().display(), "sidecar started");
        loop {
            let conn = tokio::select! {
                c = self.connect() => c,
                _ = stop_rx.recv() => return self.shutdown(None).await,
            };
            match conn {
                Ok(conn) => {
                    if let Ended::Stop = self.session(conn, &mut stop_rx).await {
                        return Ok(());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect to the hub"),
            }
            let delay = self.backoff.next_delay(rand::random::<f64>());
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                failures = self.backoff.failures(),
                "reconnecting after a pause"
            );
            let until = Instant::now() + delay;
            loop {
                let ev = tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    Some(l) = self.local_rx.recv() => Event::Local(l),
                    Some(c) = self.control_rx.recv() => Event::Control(c),
                    _ = stop_rx.recv() => Event::Stop,
                };
                match ev {
                    Event::Local(l) => self.on_local(l, None).await,
                    Event::Control(c) => self.on_control(c, None).await,
                    Event::Stop => return self.shutdown(None).await,
                    _ => {}
                }
            }
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let (_resp, conn) = client
            .ws(self.cfg.hub_url.as_str())
            .bearer_auth(&self.token)
            .max_frame_size(MAX_FRAME_BYTES)
            .connect()
            .await
            .map_err(|e| match e {
                awc::error::WsClientError::InvalidResponseStatus(s) if s.as_u16() == 401 => {
                    "the hub refused this agent's token (401): check token/token_file, or whether the agent was revoked".to_string()
                }
                other => other.to_string(),
            })?;
        Ok(conn)
    }

    fn hello(&self) -> SidecarMsg {
        SidecarMsg::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_id: self.cfg.agent_id.clone(),
            capabilities: self.cfg.capabilities.clone(),
            state: if self.current.is_some() {
                SidecarState::Working
            } else {
                SidecarState::Idle
            },
            current_task: self.current.as_ref().map(|c| c.task.clone()),
            sidecar_version: env!("CARGO_PKG_VERSION").to_string(),
            pending_results: self
                .state
                .outbox()
                .iter()
                .map(|e| e.attempt_ref())
                .collect(),
        }
    }

    fn heartbeat(&self) -> SidecarMsg {
        match &self.current {
            Some(c) => SidecarMsg::Heartbeat {
                state: SidecarState::Working,
                task_id: Some(c.task.task_id.clone()),
                generation: Some(c.task.generation),
            },
            None => SidecarMsg::Heartbeat {
                state: SidecarState::Idle,
                task_id: None,
                generation: None,
            },
        }
    }

    /// One connection, from `hello` until it is lost or we stop.
    async fn session(
        &mut self,
        mut conn: Conn,
        stop_rx: &mut mpsc::UnboundedReceiver<()>,
    ) -> Ended {
        tracing::info!("connected to the hub; saying hello");
        if send(&mut conn, &self.hello()).await.is_err() {
            return Ended::Lost;
        }
        let mut welcomed = false;
        let mut last_heard = Instant::now();
        let mut tick =
            tokio::time::interval_at(Instant::now() + self.heartbeat_every, self.heartbeat_every);
        loop {
            let ev = tokio::select! {
                f = conn.next() => Event::Frame(f),
                _ = tick.tick() => Event::Tick,
                Some(l) = self.local_rx.recv() => Event::Local(l),
                Some(c) = self.control_rx.recv() => Event::Control(c),
                _ = stop_rx.recv() => Event::Stop,
            };
            let ok = match ev {
                Event::Frame(Some(Ok(frame))) => {
                    last_heard = Instant::now();
                    match frame {
                        Frame::Text(bytes) => match std::str::from_utf8(&bytes)
                            .map_err(|e| e.to_string())
                            .and_then(|t| HubMsg::decode(t).map_err(|e| e.to_string()))
                        {
                            Ok(HubMsg::Welcome {
                                heartbeat_interval_s,
                                heartbeat_timeout_s,
                                ..
                            }) => {
                                self.heartbeat_every =
                                    Duration::from_secs(heartbeat_interval_s.max(1));
                                self.silence_limit = Duration::from_secs(
                                    heartbeat_timeout_s
                                        .unwrap_or(heartbeat_interval_s * 3)
                                        .max(2),
                                );
                                tick = tokio::time::interval_at(
                                    Instant::now() + self.heartbeat_every,
                                    self.heartbeat_every,
                                );
                                welcomed = true;
                                self.backoff.reset();
                                tracing::info!(
                                    heartbeat_s = heartbeat_interval_s,
                                    "welcomed by the hub"
                                );
                                self.resend(&mut conn).await.is_ok()
                            }
                            Ok(msg) => self.on_hub(msg, &mut conn).await.is_ok(),
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring a frame the sidecar cannot read");
                                true
                            }
                        },
                        Frame::Ping(p) => conn.send(Message::Pong(p)).await.is_ok(),
                        Frame::Close(reason) => {
                            tracing::info!(?reason, "the hub closed the connection");
                            let _ = conn.send(Message::Close(None)).await;
                            false
                        }
                        Frame::Pong(_) => true,
                        Frame::Binary(_) | Frame::Continuation(_) => {
                            tracing::warn!("ignoring a binary frame");
                            true
                        }
                    }
                }
                Event::Frame(Some(Err(e))) => {
                    tracing::warn!(error = %e, "connection error");
                    false
                }
                Event::Frame(None) => {
                    tracing::warn!("connection lost");
                    false
                }
                Event::Tick => {
                    if last_heard.elapsed() > self.silence_limit {
                        tracing::warn!(
                            silent_s = last_heard.elapsed().as_secs(),
                            "nothing from the hub for too long; reconnecting"
                        );
                        false
                    } else {
                        self.check_wake_deadline(Some(&mut conn)).await;
                        let beat = if welcomed {
                            send(&mut conn, &self.heartbeat()).await.is_ok()
                        } else {
                            true
                        };
                        beat && conn.send(Message::Ping(Default::default())).await.is_ok()
                    }
                }
                Event::Local(l) => {
                    self.on_local(l, Some(&mut conn)).await;
                    true
                }
                Event::Control(c) => {
                    self.on_control(c, Some(&mut conn)).await;
                    true
                }
                Event::Stop => {
                    let _ = self.shutdown(Some(&mut conn)).await;
                    return Ended::Stop;
                }
            };
            if !ok {
                return Ended::Lost;
            }
        }
    }

    /// After `welcome`: the accept of the attempt held, every unacked
    /// report, then a heartbeat with the real state.
    async fn resend(&mut self, conn: &mut Conn) -> Result<(), ()> {
        if let Some(c) = &self.current {
            let accept = SidecarMsg::Accept {
                task_id: c.task.task_id.clone(),
                generation: c.task.generation,
            };
            send(conn, &accept).await?;
        }
        for e in self.state.outbox() {
            tracing::info!(task = %e.attempt_ref(), kind = e.msg.kind(), "resending an unacknowledged report");
            send(conn, &e.msg).await?;
        }
        send(conn, &self.heartbeat()).await
    }

    async fn on_hub(&mut self, msg: HubMsg, conn: &mut Conn) -> Result<(), ()> {
        match msg {
            HubMsg::Welcome { .. } => Ok(()),
            HubMsg::Assign {
                task_id,
                generation,
                task,
            } => {
                let r = AttemptRef::new(task_id, generation);
                if let Some(c) = &self.current {
                    let reply = if c.task == r {
                        SidecarMsg::Accept {
                            task_id: r.task_id,
                            generation: r.generation,
                        }
                    } else {
                        tracing::warn!(offered = %r, holding = %c.task, "assignment while busy; rejecting");
                        SidecarMsg::Reject {
                            task_id: r.task_id,
                            generation: r.generation,
                            reason: format!("busy with {}", c.task),
                        }
                    };
                    return send(conn, &reply).await;
                }
                let c = Current {
                    task: r.clone(),
                    body: *task,
                    accepted_at: Timestamp::now(),
                    runner_pgid: None,
                };
                if let Err(e) = self.state.save_current(&c) {
                    tracing::error!(error = %e, "cannot persist the assignment; rejecting it");
                    let reject = SidecarMsg::Reject {
                        task_id: r.task_id,
                        generation: r.generation,
                        reason: format!("cannot persist: {e}"),
                    };
                    return send(conn, &reject).await;
                }
                tracing::info!(task = %r, title = %c.body.title, "assignment accepted");
                self.current = Some(c);
                send(
                    conn,
                    &SidecarMsg::Accept {
                        task_id: r.task_id.clone(),
                        generation: r.generation,
                    },
                )
                .await?;
                self.start_runner();
                Ok(())
            }
            HubMsg::Cancel {
                task_id,
                generation,
                reason,
            } => {
                let r = AttemptRef::new(task_id, generation);
                let reason = reason.unwrap_or_else(|| "cancelled by the hub".into());
                if self.current.as_ref().is_some_and(|c| c.task == r) {
                    tracing::info!(task = %r, %reason, "cancel: stopping the runner");
                    match self.cancel_runner.take() {
                        Some(tx) => {
                            let _ = tx.send(reason);
                        }
                        None => {
                            let fail = fail_msg(&r, format!("cancelled: {reason}"), true);
                            self.finish(fail, Some(conn)).await;
                        }
                    }
                } else {
                    tracing::info!(task = %r, "cancel for an attempt this sidecar does not hold");
                }
                Ok(())
            }
            HubMsg::Ack {
                task_id,
                generation,
                of,
            } => {
                let r = AttemptRef::new(task_id, generation);
                let kind = match of {
                    AckOf::Accept => "accept",
                    AckOf::Complete => "complete",
                    AckOf::Fail => "fail",
                };
                match self.state.ack(&r, kind) {
                    Ok(true) => tracing::info!(task = %r, kind, "the hub recorded the report"),
                    Ok(false) => tracing::debug!(task = %r, kind, "ack for nothing pending"),
                    Err(e) => tracing::error!(error = %e, "cannot clear an acknowledged report"),
                }
                Ok(())
            }
            HubMsg::Error { code, message } => {
                tracing::warn!(%code, %message, "the hub reported an error");
                Ok(())
            }
        }
    }

    /// Start the runner of the current attempt off the loop.
    fn start_runner(&mut self) {
        let Some(c) = self.current.clone() else {
            return;
        };
        let tx = self.local_tx.clone();
        let (cancel_tx, cancel_rx) = oneshot::channel();
        self.cancel_runner = Some(cancel_tx);
        let dir = match self.state.task_dir(&c.task) {
            Ok(d) => d,
            Err(e) => {
                let _ = tx.send(Local::RunnerDone {
                    task: c.task,
                    outcome: Outcome::SpawnFailed(e),
                    result_file: PathBuf::new(),
                });
                return;
            }
        };
        let task_file = dir.join("task.json");
        let result_file = dir.join("result.json");
        let _ = std::fs::remove_file(&result_file);
        let cfg = self.cfg.clone();
        actix_rt::spawn(async move {
            let done = |outcome| Local::RunnerDone {
                task: c.task.clone(),
                outcome,
                result_file: result_file.clone(),
            };
            if let Err(e) = write_atomic(
                &task_file,
                &serde_json::to_vec_pretty(&c.body).expect("serialises"),
            ) {
                let _ = tx.send(done(Outcome::SpawnFailed(e)));
                return;
            }
            let mut env = BTreeMap::from([
                ("AGENTCOM_TASK_ID".to_string(), c.task.task_id.clone()),
                (
                    "AGENTCOM_GENERATION".to_string(),
                    c.task.generation.to_string(),
                ),
                (
                    "AGENTCOM_TASK_FILE".to_string(),
                    task_file.display().to_string(),
                ),
                (
                    "AGENTCOM_RESULT_FILE".to_string(),
                    result_file.display().to_string(),
                ),
                ("AGENTCOM_AGENT_ID".to_string(), cfg.agent_id.clone()),
            ]);
            let mut cwd = dir.clone();
            if let Some(git) = cfg.git.clone() {
                let (agent, task_id) = (cfg.agent_id.clone(), c.task.task_id.clone());
                let git_for_env = git.clone();
                match actix_rt::task::spawn_blocking(move || {
                    crate::git::start_task(&git, &agent, &task_id)
                })
                .await
                {
                    Ok(Ok(p)) => {
                        tracing::info!(task = %c.task, branch = %p.branch, base = %p.base, "branch prepared from the fresh main");
                        env.insert("AGENTCOM_BRANCH".into(), p.branch);
                        env.insert(
                            "AGENTCOM_REPO_DIR".into(),
                            git_for_env.repo_dir.display().to_string(),
                        );
                        cwd = git_for_env.repo_dir.clone();
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(done(Outcome::SpawnFailed(format!(
                            "preparing the git branch failed: {e}"
                        ))));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(done(Outcome::SpawnFailed(format!(
                            "git preparation crashed: {e}"
                        ))));
                        return;
                    }
                }
            }
            let timeout = Duration::from_secs(cfg.runner.timeout_s.min(c.body.timeout_s.max(1)));
            let spec = RunSpec {
                command: cfg.runner.command.clone(),
                env,
                cwd,
                log: dir.join("runner.log"),
                timeout,
            };
            let started_tx = tx.clone();
            let task = c.task.clone();
            let outcome = runner::run(spec, cancel_rx, move |pgid| {
                let _ = started_tx.send(Local::RunnerStarted { task, pgid });
            })
            .await;
            let _ = tx.send(done(outcome));
        });
    }

    async fn on_local(&mut self, ev: Local, conn: Option<&mut Conn>) {
        match ev {
            Local::RunnerStarted { task, pgid } => {
                if let Some(c) = self.current.as_mut().filter(|c| c.task == task) {
                    c.runner_pgid = Some(pgid);
                    if let Err(e) = self.state.save_current(c) {
                        tracing::error!(error = %e, "cannot record the runner's process group");
                    }
                    tracing::info!(task = %task, pgid, "runner started");
                }
            }
            Local::RunnerDone {
                task,
                outcome,
                result_file,
            } => {
                if self.current.as_ref().is_none_or(|c| c.task != task) {
                    tracing::info!(task = %task, ?outcome, "runner of an attempt already reported ended");
                    return;
                }
                self.cancel_runner = None;
                if self.cfg.runner.mode == Mode::Wake {
                    if let Outcome::Exited { code: Some(0), .. } = outcome {
                        tracing::info!(task = %task, "agent woken; waiting for it to report");
                        return;
                    }
                }
                let msg = report_for(&task, outcome, &result_file);
                self.finish(msg, conn).await;
            }
        }
    }

    async fn on_control(&mut self, (req, reply): control::Incoming, conn: Option<&mut Conn>) {
        let holding = self.current.as_ref().map(|c| c.task.clone());
        let answer = match (&req, &holding) {
            (Request::Status, _) => Reply {
                ok: true,
                message: match &holding {
                    Some(t) => format!(
                        "working on {t}; {} report(s) waiting for the hub",
                        self.state.outbox().len()
                    ),
                    None => format!(
                        "idle; {} report(s) waiting for the hub",
                        self.state.outbox().len()
                    ),
                },
            },
            (Request::Complete { task_id, .. } | Request::Fail { task_id, .. }, Some(t))
                if &t.task_id == task_id =>
            {
                let msg = match req {
                    Request::Complete {
                        summary,
                        pr_url,
                        branch,
                        ..
                    } => SidecarMsg::Complete {
                        task_id: t.task_id.clone(),
                        generation: t.generation,
                        result: TaskResult {
                            summary,
                            pr_url,
                            branch,
                            ..Default::default()
                        },
                    },
                    Request::Fail {
                        error, retryable, ..
                    } => fail_msg(t, error, retryable),
                    Request::Status => unreachable!(),
                };
                if let Some(tx) = self.cancel_runner.take() {
                    let _ = tx.send("the agent reported".into());
                }
                self.finish(msg, conn).await;
                Reply {
                    ok: true,
                    message: format!("reported {t}"),
                }
            }
            (Request::Complete { task_id, .. } | Request::Fail { task_id, .. }, _) => Reply {
                ok: false,
                message: match &holding {
                    Some(t) => format!("this sidecar works on {t}, not {task_id}"),
                    None => format!("this sidecar holds no task (asked about {task_id})"),
                },
            },
        };
        let _ = reply.send(answer);
    }

    /// Wake mode: give up on an agent that never reports.
    async fn check_wake_deadline(&mut self, conn: Option<&mut Conn>) {
        if self.cfg.runner.mode != Mode::Wake || self.cancel_runner.is_some() {
            return;
        }
        let Some(c) = &self.current else { return };
        let limit = self.cfg.runner.timeout_s.min(c.body.timeout_s.max(1));
        if Timestamp::now().millis_since(c.accepted_at) > (limit as i64) * 1000 {
            let msg = fail_msg(
                &c.task,
                format!("the woken agent did not report within {limit}s"),
                true,
            );
            self.finish(msg, conn).await;
        }
    }

    /// The attempt is over: outbox first, then forget it, then send.
    async fn finish(&mut self, msg: SidecarMsg, conn: Option<&mut Conn>) {
        if let Err(e) = self.state.push_outbox(msg.clone()) {
            tracing::error!(error = %e, "cannot persist the report; sending it anyway");
        }
        if let Err(e) = self.state.clear_current() {
            tracing::error!(error = %e, "cannot clear the finished attempt");
        }
        self.current = None;
        self.cancel_runner = None;
        tracing::info!(task = ?msg.attempt_ref(), kind = msg.kind(), "attempt finished");
        if let Some(conn) = conn {
            if send(conn, &msg).await.is_ok() {
                let _ = send(conn, &self.heartbeat()).await;
            }
        }
    }

    /// SIGTERM/SIGINT: stop the runner (its attempt is reported as a
    /// retryable failure), say goodbye, exit.
    async fn shutdown(&mut self, mut conn: Option<&mut Conn>) -> Result<(), String> {
        tracing::info!("stopping");
        if let Some(tx) = self.cancel_runner.take() {
            let _ = tx.send("the sidecar is stopping".into());
            let wait = tokio::time::sleep(runner::KILL_GRACE + Duration::from_secs(1));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    Some(l) = self.local_rx.recv() => {
                        let done = matches!(l, Local::RunnerDone { .. });
                        self.on_local(l, conn.as_deref_mut()).await;
                        if done { break; }
                    }
                }
            }
        }
        if let Some(conn) = conn {
            let _ = conn
                .send(Message::Close(Some(awc::ws::CloseCode::Away.into())))
                .await;
        }
        let _ = std::fs::remove_file(self.cfg.control_socket());
        tracing::info!("stopped");
        Ok(())
    }
}

async fn send(conn: &mut Conn, msg: &SidecarMsg) -> Result<(), ()> {
    tracing::debug!(kind = msg.kind(), "→ hub");
    conn.send(Message::Text(msg.encode().into()))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "send failed");
        })
}

fn fail_msg(task: &AttemptRef, error: String, retryable: bool) -> SidecarMsg {
    SidecarMsg::Fail {
        task_id: task.task_id.clone(),
        generation: task.generation,
        error,
        retryable,
    }
}

/// Turn a runner's outcome (and its result file) into the report.
pub fn report_for(
    task: &AttemptRef,
    outcome: Outcome,
    result_file: &std::path::Path,
) -> SidecarMsg {
    let file = read_result(result_file);
    match outcome {
        Outcome::Exited { code: Some(0), .. } => {
            let result = match file {
                Some(serde_json::Value::Object(map)) => {
                    serde_json::from_value(serde_json::Value::Object(map)).unwrap_or_else(|e| {
                        TaskResult {
                            summary: Some(format!("(unreadable result file: {e})")),
                            ..Default::default()
                        }
                    })
                }
                Some(serde_json::Value::String(s)) => TaskResult {
                    summary: Some(s),
                    ..Default::default()
                },
                Some(other) => TaskResult {
                    summary: Some(other.to_string()),
                    ..Default::default()
                },
                None => TaskResult::default(),
            };
            SidecarMsg::Complete {
                task_id: task.task_id.clone(),
                generation: task.generation,
                result,
            }
        }
        Outcome::Exited { code, log_tail } => {
            let said = file
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let retryable = file
                .as_ref()
                .and_then(|v| v.get("retryable"))
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
            let how = match code {
                Some(c) => format!("the runner exited with code {c}"),
                None => "the runner was killed by a signal".to_string(),
            };
            let tail: String = log_tail
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let error = match said {
                Some(s) => format!("{how}: {s}"),
                None if tail.is_empty() => how,
                None => format!("{how}: …{tail}"),
            };
            fail_msg(task, error, retryable)
        }
        Outcome::TimedOut { after } => fail_msg(
            task,
            format!("the runner timed out after {}s", after.as_secs()),
            true,
        ),
        Outcome::Cancelled { reason } => fail_msg(task, format!("cancelled: {reason}"), true),
        Outcome::SpawnFailed(e) => fail_msg(task, e, true),
    }
}

/// The runner's result file as JSON (a non-JSON file becomes a string).
fn read_result(path: &std::path::Path) -> Option<serde_json::Value> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_RESULT_BYTES {
        return Some(serde_json::Value::String(format!(
            "(result file of {} bytes exceeds the {MAX_RESULT_BYTES}-byte limit)",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).ok()?;
    if text.trim().is_empty() {
        return None;
    }
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|_| serde_json::Value::String(text.trim().to_string())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("agentcom-result-{name}-{}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn r() -> AttemptRef {
        AttemptRef::new("t", 2)
    }

    #[test]
    fn exit_zero_with_a_result_file_completes() {
        let p = file(
            "ok",
            r#"{"summary":"did it","pr_url":"https://x/pr/1","files":2}"#,
        );
        match report_for(
            &r(),
            Outcome::Exited {
                code: Some(0),
                log_tail: String::new(),
            },
            &p,
        ) {
            SidecarMsg::Complete {
                result,
                generation: 2,
                ..
            } => {
                assert_eq!(result.summary.as_deref(), Some("did it"));
                assert_eq!(result.pr_url.as_deref(), Some("https://x/pr/1"));
                assert_eq!(result.extra["files"], 2);
            }
            other => panic!("{other:?}"),
        }
        let plain = file("plain", "just text\n");
        assert!(
            matches!(report_for(&r(), Outcome::Exited { code: Some(0), log_tail: String::new() }, &plain),
            SidecarMsg::Complete { result, .. } if result.summary.as_deref() == Some("just text"))
        );
        let none = std::env::temp_dir().join("agentcom-result-none-does-not-exist");
        assert!(matches!(
            report_for(
                &r(),
                Outcome::Exited {
                    code: Some(0),
                    log_tail: String::new()
                },
                &none
            ),
            SidecarMsg::Complete { .. }
        ));
    }

    #[test]
    fn failures_carry_the_reason_and_retryability() {
        let none = std::env::temp_dir().join("agentcom-result-none-does-not-exist");
        match report_for(
            &r(),
            Outcome::Exited {
                code: Some(2),
                log_tail: "boom".into(),
            },
            &none,
        ) {
            SidecarMsg::Fail {
                error, retryable, ..
            } => {
                assert!(
                    error.contains("code 2") && error.contains("boom"),
                    "{error}"
                );
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
        let said = file("said", r#"{"error":"bad spec","retryable":false}"#);
        match report_for(
            &r(),
            Outcome::Exited {
                code: Some(1),
                log_tail: String::new(),
            },
            &said,
        ) {
            SidecarMsg::Fail {
                error, retryable, ..
            } => {
                assert!(error.contains("bad spec"));
                assert!(!retryable);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            report_for(
                &r(),
                Outcome::TimedOut {
                    after: Duration::from_secs(5)
                },
                &none
            ),
            SidecarMsg::Fail {
                retryable: true,
                ..
            }
        ));
    }
}
