//! The sidecar daemon: the one event loop that keeps the agent connected
//! and working.
//!
//! It owns the loop and the things that are not rules: the connection to
//! the hub (with several hubs, the next one of a round at once after a
//! hub that is not the one to talk to — no connection, a 503, a Close
//! before `welcome` —, in the order `hubs.rs` decides, a standby's named
//! leader first; reconnecting after a capped, full-jitter exponential
//! pause once a round failed or a connection ended, reset only by a
//! connection that proved itself, see `backoff.rs`; about the longest
//! pause after a permanent refusal, logged at ERROR with its fix, see
//! `refusal.rs`), the heartbeat timer, the local self-test (at
//! start, every `selftest_interval_s` and for a verification task; off
//! the loop, one at a time, see `probe.rs`), the channels from the
//! runner and the control socket, the runner's stop handle, and carrying
//! out the
//! [`AttemptMachine`]'s effects against the state dir, the connection and
//! the runner, feeding their outcomes back. It must never decide what
//! happens to an attempt (the machine does, see `attempt.rs`), and never
//! block: the runner runs off the loop, so heartbeats never stall.
//! Everything runs on one thread (awc is `!Send`).

use std::time::Duration;

use agentcom_protocol::{AttemptRef, HubMsg, NotLeader, Timestamp};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::attempt::{AttemptMachine, AttemptSettings, Effect};
use crate::backoff::Backoff;
use crate::config::SidecarConfig;
use crate::connection::{Connection, OpenFailed, RawFrame, Received};
use crate::control;
use crate::hubs::{Hubs, Next};
use crate::launch::{self, GitLock, RunnerEvent, RunnerHandle};
use crate::probe;
use crate::recovery;
use crate::refusal;
use crate::report::RateLimits;
use crate::runner;
use crate::selftest::Report;
use crate::store::{OpenError, StateDir};
use crate::validate;

enum Event {
    Frame(RawFrame),
    Tick,
    Runner(RunnerEvent),
    Control(control::Incoming),
    /// A self-test run ended.
    SelfTest(SelfTestDone),
    /// Time for the periodic self-test.
    SelfTestDue,
    Stop,
}

/// A self-test run's report (`Err`: it could not run), and the
/// verification attempt it ran for, if any.
struct SelfTestDone {
    for_attempt: Option<AttemptRef>,
    report: Result<Report, String>,
}

/// Why a connection ended.
enum ConnectionEnded {
    /// Lost after the hub's `welcome`.
    Lost,
    /// Lost before `welcome` (the hub closed it right after connecting):
    /// not the hub to talk to now.
    NotWelcomed,
    /// The hub refused this sidecar for good (`refusal.rs`).
    Refused,
    Stop,
}

/// What comes before the next try to connect.
enum Pause {
    /// Nothing: another hub of the round, at once (`hubs.rs`).
    None,
    /// The reconnect backoff (`backoff.rs`).
    Backoff,
    /// About the longest delay: a permanent refusal.
    Refused,
}

pub struct Daemon {
    cfg: SidecarConfig,
    token: String,
    tls: crate::connection::Tls,
    state: StateDir,
    machine: AttemptMachine,
    runner: Option<RunnerHandle>,
    git_lock: GitLock,
    runner_tx: mpsc::UnboundedSender<RunnerEvent>,
    runner_rx: mpsc::UnboundedReceiver<RunnerEvent>,
    control_rx: mpsc::UnboundedReceiver<control::Incoming>,
    control_tx: mpsc::UnboundedSender<control::Incoming>,
    backoff: Backoff,
    /// The hubs and which to try next.
    hubs: Hubs,
    heartbeat_every: Duration,
    silence_limit: Duration,
    /// A look for the branch's last commit is under way (one at a time).
    commit_probe_busy: std::rc::Rc<std::cell::Cell<bool>>,
    selftest_tx: mpsc::UnboundedSender<SelfTestDone>,
    selftest_rx: mpsc::UnboundedReceiver<SelfTestDone>,
    /// A self-test runs (one at a time).
    selftest_running: bool,
    /// A verification attempt whose self-test waits for the one running.
    selftest_waiting: Option<AttemptRef>,
    /// When the periodic self-test is due.
    selftest_timer: tokio::time::Interval,
}

impl Daemon {
    /// Open the state dir and recover from whatever the last run left.
    pub fn new(cfg: SidecarConfig) -> Result<Daemon, String> {
        let token = cfg.token()?;
        validate::agent_id(&cfg.agent_id)?;
        let repos: Vec<String> = cfg.git.iter().filter_map(|g| g.repo.clone()).collect();
        for repo in &repos {
            validate::repo_name(repo).map_err(|e| format!("[git] repo: {e}"))?;
        }
        let tls = crate::connection::Tls::load(&cfg.hub_urls, cfg.ca_file.as_deref())?;
        let mut state = StateDir::open(&cfg.state_dir).map_err(|e| match e {
            OpenError::Unusable(e) => format!("{e}: {}", cfg.state_dir_fix()),
            OpenError::InUse(e) => e,
        })?;
        let instance_id = state
            .instance_id()
            .map_err(|e| format!("{e}: {}", cfg.state_dir_fix()))?;
        let settings = AttemptSettings {
            agent_id: cfg.agent_id.clone(),
            capabilities: cfg.capabilities.clone(),
            sidecar_version: env!("CARGO_PKG_VERSION").to_string(),
            mode: cfg.runner.mode,
            runner_timeout_s: cfg.runner.timeout_s,
            repos,
            context_window_tokens: cfg.context_window_tokens,
            rate_limits: RateLimits {
                exit_code: cfg.runner.rate_limit_exit_code,
                default_s: cfg.runner.rate_limit_default_s,
            },
            cancel_command: !cfg.runner.cancel_command.is_empty(),
            instance_id: Some(instance_id),
        };
        let machine = recovery::recover(&mut state, settings)?;
        let (runner_tx, runner_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (selftest_tx, selftest_rx) = mpsc::unbounded_channel();
        let every = Duration::from_secs(cfg.selftest_interval_s.max(1));
        let mut selftest_timer = tokio::time::interval_at(Instant::now() + every, every);
        selftest_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let backoff = Backoff::new(
            Duration::from_millis(cfg.reconnect.initial_ms.max(1)),
            Duration::from_secs(cfg.reconnect.max_s.max(1)),
        );
        let hubs = Hubs::new(cfg.hub_urls.clone());
        Ok(Daemon {
            cfg,
            token,
            tls,
            state,
            machine,
            runner: None,
            git_lock: GitLock::default(),
            runner_tx,
            runner_rx,
            control_rx,
            control_tx,
            backoff,
            hubs,
            heartbeat_every: Duration::from_secs(30),
            silence_limit: Duration::from_secs(90),
            commit_probe_busy: Default::default(),
            selftest_tx,
            selftest_rx,
            selftest_running: false,
            selftest_waiting: None,
            selftest_timer,
        })
    }

    /// Run until SIGTERM/SIGINT.
    pub async fn run(self) -> Result<(), String> {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        let (mut term, mut int) = (
            listen(SignalKind::terminate())?,
            listen(SignalKind::interrupt())?,
        );
        self.run_until(async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        })
        .await
    }

    /// Run until `stop` ends (a signal for the binary; the caller's word
    /// for a daemon inside another program, such as `agentcom-hub demo` or
    /// `agentcom-sidecar join`), then stop as on SIGTERM.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()> + 'static,
    ) -> Result<(), String> {
        let socket = self.cfg.control_socket();
        let control_tx = self.control_tx.clone();
        actix_rt::spawn(async move {
            if let Err(e) = control::serve(&socket, control_tx).await {
                tracing::error!(error = %e, socket = %socket.display(), "control socket failed");
            }
        });
        let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<()>();
        actix_rt::spawn(async move {
            stop.await;
            let _ = stop_tx.send(());
        });
        tracing::info!(agent = %self.cfg.agent_id, hub = %self.cfg.hub_urls.join(","), state_dir = %self.state.root().display(), "sidecar started");
        // The first self-test: a missing runner is caught before any task
        // burns an attempt.
        self.start_selftest(None);
        loop {
            let url = self.hubs.current().to_string();
            let conn = tokio::select! {
                c = self.open(&url) => c,
                _ = stop_rx.recv() => return self.shutdown(None).await,
            };
            let pause = match conn {
                Ok(conn) => match self.serve_connection(conn, &url, &mut stop_rx).await {
                    ConnectionEnded::Stop => return Ok(()),
                    ConnectionEnded::Lost => {
                        self.hubs.round_over();
                        Pause::Backoff
                    }
                    ConnectionEnded::NotWelcomed => self.not_this_hub(None),
                    ConnectionEnded::Refused => {
                        self.hubs.round_over();
                        Pause::Refused
                    }
                },
                Err((OpenFailed::Status(status), answer)) => {
                    let r = refusal::upgrade_refused_in(
                        self.cfg.hub_setting(),
                        status,
                        &url,
                        &self.cfg.agent_id,
                        &self.cfg.path,
                    );
                    if r.permanent {
                        tracing::error!(hub = %url, error = %r.message, "cannot connect to the hub");
                        self.hubs.round_over();
                        Pause::Refused
                    } else if status == 503 && self.hubs.several() {
                        let said = refusal::not_leading(&url, answer.as_ref());
                        tracing::info!(hub = %url, error = %said, "cannot connect to the hub");
                        let leader = answer.and_then(|a| a.error.leader);
                        self.not_this_hub(leader.as_deref())
                    } else {
                        tracing::warn!(hub = %url, error = %r.message, "cannot connect to the hub");
                        self.not_this_hub(None)
                    }
                }
                Err((OpenFailed::Other(e), _)) => {
                    tracing::warn!(hub = %url, error = %e, "cannot connect to the hub");
                    self.not_this_hub(None)
                }
            };
            // Another hub of the round at once; after a round that failed,
            // a permanent refusal or a lost connection, a pause; a
            // permanent refusal waits about the longest delay at once.
            let draw = rand::random::<f64>();
            let (delay, refused) = match pause {
                Pause::None => {
                    if self.handle_ready(&mut stop_rx).await {
                        return self.shutdown(None).await;
                    }
                    continue;
                }
                Pause::Backoff => (self.backoff.next_delay(draw), false),
                Pause::Refused => (self.backoff.refused_delay(draw), true),
            };
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                failures = self.backoff.failures(),
                refused,
                hub = %self.hubs.current(),
                "reconnecting after a pause"
            );
            let until = Instant::now() + delay;
            loop {
                let ev = tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    Some(r) = self.runner_rx.recv() => Event::Runner(r),
                    Some(c) = self.control_rx.recv() => Event::Control(c),
                    Some(d) = self.selftest_rx.recv() => Event::SelfTest(d),
                    _ = self.selftest_timer.tick() => Event::SelfTestDue,
                    _ = stop_rx.recv() => Event::Stop,
                };
                match ev {
                    Event::Runner(r) => self.on_runner(r, None).await,
                    Event::Control(c) => self.on_control(c, None).await,
                    Event::SelfTest(d) => self.on_selftest(d, None).await,
                    Event::SelfTestDue => self.start_selftest(None),
                    Event::Stop => return self.shutdown(None).await,
                    Event::Frame(_) | Event::Tick => {}
                }
            }
        }
    }

    /// Open the WebSocket at `url`; after a 503 from one of several hubs,
    /// what the hub says when asked plainly (a standby names the leader).
    async fn open(&self, url: &str) -> Result<Connection, (OpenFailed, Option<NotLeader>)> {
        match Connection::open(url, &self.token, &self.tls).await {
            Ok(conn) => Ok(conn),
            Err(OpenFailed::Status(503)) if self.hubs.several() => {
                let answer = Connection::standby_answer(url, &self.token, &self.tls).await;
                Err((OpenFailed::Status(503), answer))
            }
            Err(e) => Err((e, None)),
        }
    }

    /// Between two hubs of a round: handle what the runner, the control
    /// socket and the self-test sent meanwhile, without waiting. True when
    /// asked to stop.
    async fn handle_ready(&mut self, stop_rx: &mut mpsc::UnboundedReceiver<()>) -> bool {
        loop {
            if stop_rx.try_recv().is_ok() {
                return true;
            }
            if let Ok(r) = self.runner_rx.try_recv() {
                self.on_runner(r, None).await;
            } else if let Ok(c) = self.control_rx.try_recv() {
                self.on_control(c, None).await;
            } else if let Ok(d) = self.selftest_rx.try_recv() {
                self.on_selftest(d, None).await;
            } else {
                return false;
            }
        }
    }

    /// The hub tried is not the one to talk to now (`leader`: the one a
    /// standby named): the next of the round at once, or a pause when the
    /// round is over.
    fn not_this_hub(&mut self, leader: Option<&str>) -> Pause {
        match self.hubs.not_this_hub(leader) {
            Next::Now => {
                tracing::info!(hub = %self.hubs.current(), "trying the next hub");
                Pause::None
            }
            Next::AfterPause => Pause::Backoff,
        }
    }

    /// One connection, from `hello` until it is lost or we stop.
    async fn serve_connection(
        &mut self,
        mut conn: Connection,
        url: &str,
        stop_rx: &mut mpsc::UnboundedReceiver<()>,
    ) -> ConnectionEnded {
        tracing::info!(hub = %url, "connected to the hub; saying hello");
        // A self-test that ended while connecting goes in the hello.
        while let Ok(d) = self.selftest_rx.try_recv() {
            self.on_selftest(d, None).await;
        }
        let mut welcomed_at: Option<Instant> = None;
        let mut refused = false;
        let fx = self.machine.connected();
        self.carry_out(fx, Some(&mut conn)).await;
        let mut tick =
            tokio::time::interval_at(Instant::now() + self.heartbeat_every, self.heartbeat_every);
        let ended = loop {
            if conn.is_broken() {
                break ConnectionEnded::Lost;
            }
            let ev = tokio::select! {
                f = conn.next_frame() => Event::Frame(f),
                _ = tick.tick() => Event::Tick,
                Some(r) = self.runner_rx.recv() => Event::Runner(r),
                Some(c) = self.control_rx.recv() => Event::Control(c),
                Some(d) = self.selftest_rx.recv() => Event::SelfTest(d),
                _ = self.selftest_timer.tick() => Event::SelfTestDue,
                _ = stop_rx.recv() => Event::Stop,
            };
            match ev {
                Event::Frame(frame) => match conn.read(frame).await {
                    Received::Msg(HubMsg::Welcome {
                        heartbeat_interval_s,
                        heartbeat_timeout_s,
                        ..
                    }) => {
                        let hb = validate::heartbeat(heartbeat_interval_s, heartbeat_timeout_s);
                        self.heartbeat_every = hb.every;
                        self.silence_limit = hb.silence_limit;
                        tick = tokio::time::interval_at(
                            Instant::now() + self.heartbeat_every,
                            self.heartbeat_every,
                        );
                        welcomed_at.get_or_insert_with(Instant::now);
                        self.hubs.welcomed();
                        tracing::info!(
                            heartbeat_s = hb.every.as_secs(),
                            silence_limit_s = hb.silence_limit.as_secs(),
                            "welcomed by the hub"
                        );
                        let fx = self.machine.welcomed();
                        self.carry_out(fx, Some(&mut conn)).await;
                    }
                    Received::Msg(HubMsg::Error { code, message }) => {
                        let message = validate::shown(&message, 300);
                        let refusal = refusal::hub_error(&code, &message, &self.cfg.agent_id);
                        let code = validate::shown(&code, 64);
                        match refusal {
                            Some(r) if r.permanent => {
                                tracing::error!(%code, error = %r.message, "the hub refused this sidecar");
                                refused = true;
                            }
                            _ => tracing::warn!(%code, %message, "the hub reported an error"),
                        }
                    }
                    Received::Msg(msg) => self.on_hub(msg, &mut conn).await,
                    Received::Nothing => {}
                    Received::Ended => break ConnectionEnded::Lost,
                },
                Event::Tick => {
                    if conn.silence() > self.silence_limit {
                        tracing::warn!(
                            silent_s = conn.silence().as_secs(),
                            "nothing from the hub for too long; reconnecting"
                        );
                        break ConnectionEnded::Lost;
                    }
                    let fx = self.machine.tick(Timestamp::now());
                    self.carry_out(fx, Some(&mut conn)).await;
                    self.observe_runner();
                    let fx = self.machine.heartbeat_due();
                    self.carry_out(fx, Some(&mut conn)).await;
                    if !conn.is_broken() {
                        let _ = conn.ping().await;
                    }
                }
                Event::Runner(r) => self.on_runner(r, Some(&mut conn)).await,
                Event::Control(c) => self.on_control(c, Some(&mut conn)).await,
                Event::SelfTest(d) => self.on_selftest(d, Some(&mut conn)).await,
                Event::SelfTestDue => self.start_selftest(None),
                Event::Stop => {
                    let _ = self.shutdown(Some(&mut conn)).await;
                    break ConnectionEnded::Stop;
                }
            }
        };
        self.machine.disconnected();
        self.backoff
            .connection_ended(welcomed_at.map(|at| at.elapsed()));
        match ended {
            ConnectionEnded::Lost if refused => ConnectionEnded::Refused,
            ConnectionEnded::Lost if welcomed_at.is_none() => ConnectionEnded::NotWelcomed,
            other => other,
        }
    }

    async fn on_hub(&mut self, msg: HubMsg, conn: &mut Connection) {
        let fx = match msg {
            HubMsg::Welcome { .. } => vec![],
            HubMsg::Assign {
                task_id,
                generation,
                task,
            } => self.machine.assign(
                AttemptRef::new(task_id, generation),
                *task,
                Timestamp::now(),
            ),
            HubMsg::Cancel {
                task_id,
                generation,
                reason,
            } => self
                .machine
                .cancel(AttemptRef::new(task_id, generation), reason),
            HubMsg::Ack {
                task_id,
                generation,
                of,
            } => self.machine.ack(AttemptRef::new(task_id, generation), of),
            // Handled by the connection's loop (some end it).
            HubMsg::Error { .. } => vec![],
        };
        self.carry_out(fx, Some(conn)).await;
    }

    async fn on_runner(&mut self, ev: RunnerEvent, conn: Option<&mut Connection>) {
        let fx = match ev {
            RunnerEvent::Started {
                attempt,
                pgid,
                branch,
            } => self.machine.runner_started(&attempt, pgid, branch),
            RunnerEvent::Done {
                attempt,
                outcome,
                result,
            } => {
                // Its runner is over: the handle has nothing left to stop.
                if self
                    .runner
                    .as_ref()
                    .is_some_and(|h| h.attempt() == &attempt)
                {
                    self.runner = None;
                }
                self.machine.runner_done(&attempt, outcome, result)
            }
            RunnerEvent::Pushed { attempt, outcome } => self.machine.pushed(&attempt, outcome),
            RunnerEvent::CommitSeen { attempt, at } => {
                self.machine.commit_seen(&attempt, at);
                vec![]
            }
        };
        self.carry_out(fx, conn).await;
    }

    /// Before a heartbeat: what the held attempt's runner is doing. Its
    /// process group and log are looked at here (a signal 0 and a stat);
    /// its branch's last commit off the loop, answered by the next
    /// heartbeat.
    fn observe_runner(&mut self) {
        let Some(probe) = self.machine.probe() else {
            return;
        };
        let alive = probe.pgid.is_some_and(runner::group_alive);
        let log = std::fs::metadata(self.state.runner_log(&probe.attempt)).ok();
        let bytes = log.as_ref().map_or(0, |m| m.len());
        let modified = log
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| Timestamp::from_millis(d.as_millis() as i64));
        self.machine
            .output_seen(&probe.attempt, alive, bytes, modified, Timestamp::now());
        if let Some(branch) = probe.branch {
            if !self.commit_probe_busy.get() {
                launch::probe_commit(
                    &self.cfg,
                    probe.attempt,
                    branch,
                    self.commit_probe_busy.clone(),
                    self.runner_tx.clone(),
                );
            }
        }
    }

    /// Run the local self-test off the loop (for a verification attempt,
    /// or on the timer), unless one runs: then a verification attempt's
    /// waits for it to end, and a periodic one is skipped.
    fn start_selftest(&mut self, for_attempt: Option<AttemptRef>) {
        if self.selftest_running {
            if for_attempt.is_some() {
                self.selftest_waiting = for_attempt;
            }
            return;
        }
        self.selftest_running = true;
        let cfg = self.cfg.clone();
        let done = self.selftest_tx.clone();
        actix_rt::spawn(async move {
            let report = actix_rt::task::spawn_blocking(move || probe::local(&cfg))
                .await
                .map_err(|e| format!("the self-test crashed: {e}"));
            let _ = done.send(SelfTestDone {
                for_attempt,
                report,
            });
        });
    }

    async fn on_selftest(&mut self, done: SelfTestDone, conn: Option<&mut Connection>) {
        self.selftest_running = false;
        let fx =
            self.machine
                .selftest_done(done.for_attempt.as_ref(), done.report, Timestamp::now());
        self.carry_out(fx, conn).await;
        if let Some(waiting) = self.selftest_waiting.take() {
            self.start_selftest(Some(waiting));
        }
    }

    async fn on_control(&mut self, (req, reply): control::Incoming, conn: Option<&mut Connection>) {
        let (answer, fx) = self.machine.control(req);
        self.carry_out(fx, conn).await;
        let _ = reply.send(answer);
    }

    /// Carry out `fx` in order, feeding each completion back to the
    /// machine and carrying out what it answers before going on. A failed
    /// send drops the rest of its batch (the connection is gone).
    async fn carry_out(&mut self, fx: Vec<Effect>, mut conn: Option<&mut Connection>) {
        let mut batches = vec![fx.into_iter()];
        while let Some(batch) = batches.last_mut() {
            let Some(effect) = batch.next() else {
                batches.pop();
                continue;
            };
            let answer = match effect {
                Effect::Send(msg) => {
                    if let Some(conn) = conn.as_deref_mut() {
                        if conn.send(&msg).await.is_err() {
                            batches.pop();
                        }
                    }
                    continue;
                }
                Effect::SaveCurrent(c) => {
                    let saved = self.state.save_current(&c);
                    self.machine.current_saved(saved)
                }
                Effect::ClearCurrent => {
                    if let Err(e) = self.state.clear_current() {
                        tracing::error!(error = %e, "cannot clear the finished attempt");
                    }
                    continue;
                }
                Effect::PushOutbox(msg) => {
                    let pushed = self.state.push_outbox(msg).map(drop);
                    self.machine.outbox_pushed(pushed)
                }
                Effect::RemoveFromOutbox { attempt, kind } => {
                    let removed = self.state.ack(&attempt, kind);
                    self.machine.outbox_acked(removed)
                }
                Effect::StartRunner(c) => {
                    let attempt = c.attempt.clone();
                    self.runner = Some(launch::launch(
                        &self.cfg,
                        &self.state,
                        &self.git_lock,
                        c,
                        self.runner_tx.clone(),
                    ));
                    self.machine.runner_launched(&attempt)
                }
                Effect::CancelWoken { current, reason } => {
                    launch::cancel_woken(&self.cfg, &self.state, &current, reason);
                    continue;
                }
                Effect::StopRunner { attempt, reason } => {
                    if let Some(h) = self.runner.take_if(|h| h.attempt() == &attempt) {
                        h.stop(reason);
                    }
                    continue;
                }
                Effect::Push {
                    attempt,
                    branch,
                    base,
                } => {
                    launch::push(
                        &self.cfg,
                        &self.git_lock,
                        attempt,
                        branch,
                        base,
                        self.runner_tx.clone(),
                    );
                    continue;
                }
                Effect::KillLeftover { pgid, task_id } => {
                    recovery::kill_leftover(pgid, &task_id);
                    continue;
                }
                Effect::RunSelfTest(attempt) => {
                    self.start_selftest(Some(attempt));
                    continue;
                }
                Effect::ReplaceInOutbox { old, new } => {
                    if let Err(e) = self.state.replace_in_outbox(&old, new) {
                        tracing::error!(error = %e, "cannot replace a report in the outbox");
                    }
                    continue;
                }
            };
            batches.push(answer.into_iter());
        }
    }

    /// SIGTERM/SIGINT: stop the runner (its attempt is reported as a
    /// retryable failure if it ends in time; a branch being pushed gets
    /// the same time to finish), say goodbye, exit.
    async fn shutdown(&mut self, mut conn: Option<&mut Connection>) -> Result<(), String> {
        tracing::info!("stopping");
        let fx = self.machine.shutdown();
        self.carry_out(fx, conn.as_deref_mut()).await;
        if self.machine.ending() {
            let wait = tokio::time::sleep(runner::KILL_GRACE + Duration::from_secs(1));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    Some(r) = self.runner_rx.recv() => {
                        self.on_runner(r, conn.as_deref_mut()).await;
                        if !self.machine.ending() { break; }
                    }
                }
            }
        }
        if let Some(conn) = conn {
            conn.close().await;
        }
        let _ = std::fs::remove_file(self.cfg.control_socket());
        tracing::info!("stopped");
        Ok(())
    }
}
