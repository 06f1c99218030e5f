//! `AttemptMachine`: the rules of the attempt a sidecar holds, as plain
//! Rust.
//!
//! It owns what the sidecar knows of its work: the attempt it holds
//! ([`Current`]), whether that attempt's runner is running or being
//! stopped, the reports waiting in the outbox for the hub's `ack` (oldest
//! first), whether the connection is up and welcomed, and the wake-mode
//! deadline (derived from when the attempt was accepted). Events come in
//! as method calls, with the current time where it matters; what the daemon
//! must do comes out as [`Effect`]s, in order. It must never do I/O, read
//! the clock, spawn or signal a process, or touch a socket: the daemon loop
//! carries out the effects and feeds their outcome back.
//!
//! The order of effects is what makes the sidecar safe:
//!
//! - **Nothing invalid touches the disk.** An assignment whose task id is
//!   not a plain name, or whose body is about another attempt, is
//!   rejected before anything is saved or run (see `validate.rs`).
//! - **Persist before accept.** `assign` yields [`Effect::SaveCurrent`] and
//!   nothing else; `accept` is sent and the runner started only once
//!   [`AttemptMachine::current_saved`] says the save succeeded. A failed
//!   save rejects the assignment.
//! - **Outbox before clearing the current attempt.** Finishing yields
//!   [`Effect::PushOutbox`]; [`AttemptMachine::outbox_pushed`] then clears
//!   the attempt and sends the report.
//! - **An unsaved report is never sent.** If the outbox write fails, the
//!   attempt stays held (heartbeats say working), nothing is sent, and the
//!   write is tried again at every heartbeat tick until it succeeds; the
//!   hub's own timeouts still apply. The first report of an attempt
//!   stands: a cancel or a late runner end changes nothing.
//! - **Every report fits in a frame.** A report whose encoding is larger
//!   than `MAX_FRAME_BYTES` becomes a final `fail` saying so before it
//!   is saved (`report::sendable`), and so does one found in the outbox at
//!   start-up.
//! - **Resend after reconnect.** After `welcome`: `accept` for the attempt
//!   held, every outbox report oldest first, then a heartbeat.
//! - **A stale cancel is ignored**: only the attempt held is stopped.
//! - **A repository task completes only with its branch pushed.** A task
//!   naming a repository this sidecar does not have is rejected. When the
//!   runner of a task that names the sidecar's repository succeeds (exec:
//!   exit 0; wake: the woken agent's `complete`), the machine asks for
//!   [`Effect::Push`] and nothing else; only [`AttemptMachine::pushed`]
//!   makes the report: `complete` with the branch, its base and head (or
//!   `no_changes`), or a retryable `fail` naming what git said. A cancel
//!   meanwhile fails the attempt at once and the push's outcome is
//!   ignored.
//!
//! - **Every failure says whose it is** (`fail.class`, see
//!   `report.rs`): `environment` for what the sidecar itself saw fail
//!   (the runner could not be started or its files written, git could
//!   not fetch, prepare or push), `rate_limited` with `retry_after_s` when
//!   the runner says so, `agent` for a woken agent that never reported or
//!   a runner that died with the sidecar, `task` otherwise; with the end of
//!   the runner's output as `log_tail`.
//! - **A verification task runs no runner.** An assignment of kind
//!   `verify` is persisted and accepted like any other, but no branch is
//!   prepared and no runner starts: the machine asks for
//!   [`Effect::RunSelfTest`], and [`AttemptMachine::selftest_done`] makes
//!   the report: `complete` with the checks (`selftest`) and a summary, or
//!   a retryable `environment` failure naming the failing checks and their
//!   fixes. The same order holds: saved before `accept`, in the outbox
//!   before it is cleared.
//! - **Hub and heartbeats know the last self-test.** The machine keeps the
//!   last local self-test's status ([`AttemptMachine::selftest_done`]) and
//!   says it in `hello` and every heartbeat; when its findings change, a
//!   heartbeat goes at once (once welcomed).
//! - **Heartbeats say what the runner does** while an attempt is held
//!   (`activity`): the daemon looks ([`AttemptMachine::probe`]) and feeds
//!   what it saw back ([`AttemptMachine::output_seen`],
//!   [`AttemptMachine::commit_seen`]); the machine decides when the output
//!   last moved, and counts the runner alive only while it runs.
//!
//! Effects that are followed by a completion call ([`Effect::SaveCurrent`],
//! [`Effect::PushOutbox`], [`Effect::RemoveFromOutbox`],
//! [`Effect::StartRunner`]) must have it fed back before anything else
//! happens. [`Effect::Push`] is different: it runs off the loop, other
//! events come in meanwhile, and its outcome comes later as
//! [`AttemptMachine::pushed`]. If a [`Effect::Send`] fails, the
//! connection is gone: the rest of that batch of effects is dropped (what
//! matters is resent after the next `welcome`); so a runner whose
//! `accept` could not be sent is not started, and the machine learns that
//! from the missing [`AttemptMachine::runner_launched`].

use agentcom_protocol::{
    AckOf, Activity, AttemptRef, FailClass, SelfTestStatus, SidecarMsg, SidecarState, Task,
    TaskKind, TaskResult, Timestamp, PROTOCOL_VERSION,
};
use serde_json::Value;

use crate::config::Mode;
use crate::control::{Reply, Request};
use crate::git::{Prepared, PushFailed, Pushed};
use crate::report::{self, fail_msg, failure, RateLimits, Retry};
use crate::runner::Outcome;
use crate::selftest::{self, Report};
use crate::store::Current;
use crate::validate;

/// What the machine needs to know of the sidecar's settings.
#[derive(Clone, Debug)]
pub(crate) struct AttemptSettings {
    pub(crate) agent_id: String,
    pub(crate) capabilities: Vec<String>,
    pub(crate) sidecar_version: String,
    pub(crate) mode: Mode,
    /// The runner's own time limit (`runner.timeout_s`).
    pub(crate) runner_timeout_s: u64,
    /// The repositories this sidecar has a clone of (`[git] repo`).
    pub(crate) repos: Vec<String>,
    /// The model's context window (`context_window_tokens`), said in `hello`.
    pub(crate) context_window_tokens: Option<u64>,
    /// How a rate-limited runner is told (`[runner]`).
    pub(crate) rate_limits: RateLimits,
    /// Wake mode: `runner.cancel_command` is set, so a cancel reaches the
    /// woken agent through it.
    pub(crate) cancel_command: bool,
    /// This installation's id (kept in the state dir), said in `hello`.
    pub(crate) instance_id: Option<String>,
}

/// What the daemon should look at, at a heartbeat tick, to tell the hub
/// what the held attempt's runner is doing (see
/// [`AttemptMachine::output_seen`], [`AttemptMachine::commit_seen`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Probe {
    pub(crate) attempt: AttemptRef,
    /// The runner's process group, once it runs.
    pub(crate) pgid: Option<i32>,
    /// The attempt's branch, with `[git]`.
    pub(crate) branch: Option<Prepared>,
}

/// What was last seen of the held attempt's runner.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    attempt: AttemptRef,
    activity: Activity,
}

/// What the daemon must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Effect {
    /// Send this frame to the hub.
    Send(SidecarMsg),
    /// Write `current.json`; then call [`AttemptMachine::current_saved`].
    SaveCurrent(Current),
    /// Remove `current.json` (a failure is only logged).
    ClearCurrent,
    /// Write this report to the outbox; then call
    /// [`AttemptMachine::outbox_pushed`].
    PushOutbox(SidecarMsg),
    /// The hub acknowledged this report: delete it from the outbox; then
    /// call [`AttemptMachine::outbox_acked`].
    RemoveFromOutbox {
        attempt: AttemptRef,
        kind: &'static str,
    },
    /// Prepare and start the runner of this attempt, off the loop; then
    /// call [`AttemptMachine::runner_launched`].
    StartRunner(Current),
    /// Tell the runner of this attempt to stop.
    StopRunner { attempt: AttemptRef, reason: String },
    /// Wake mode: run `runner.cancel_command` for this attempt (in the
    /// runner's environment), off the loop, so the woken agent stops.
    CancelWoken {
        current: Box<Current>,
        reason: String,
    },
    /// Publish the attempt's branch, off the loop (nothing to push when it
    /// has no commit beyond `base`); its outcome comes later as
    /// [`AttemptMachine::pushed`].
    Push {
        attempt: AttemptRef,
        branch: String,
        base: String,
    },
    /// Run the local self-test for this verification attempt, off the
    /// loop; its report comes later as [`AttemptMachine::selftest_done`].
    RunSelfTest(AttemptRef),
    /// Start-up only: kill what is left of a runner group that outlived
    /// the last run.
    KillLeftover { pgid: i32, task_id: String },
    /// Start-up only: put `new` in the outbox in place of `old` (a report
    /// too large to send, left by an older sidecar).
    ReplaceInOutbox { old: SidecarMsg, new: SidecarMsg },
}

/// The connection to the hub, as far as the machine cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    Down,
    /// `hello` sent; reports may go out, heartbeats wait for `welcome`.
    Connected,
    Welcomed,
}

/// The runner of the attempt held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunnerState {
    /// Never started, or ended.
    NotRunning,
    /// Started; it can be told to stop.
    Running,
    /// Told to stop; its end is awaited. Like `NotRunning`, it cannot be
    /// told again: a second cancel finishes the attempt at once.
    Stopping,
}

/// An effect whose outcome the machine waits for.
#[derive(Clone, Debug, PartialEq)]
enum Awaiting {
    /// An assignment being persisted before `accept`.
    AssignmentSaved(Box<Current>),
    /// The runner's process group being recorded.
    PgidSaved { attempt: AttemptRef, pgid: i32 },
    /// A finished attempt's report being written to the outbox.
    ReportPushed(SidecarMsg),
    /// An acknowledged report being deleted from the outbox.
    ReportRemoved {
        attempt: AttemptRef,
        kind: &'static str,
    },
}

/// A succeeded attempt whose branch is being pushed: the report waits for
/// the push.
#[derive(Clone, Debug, PartialEq)]
struct Pushing {
    attempt: AttemptRef,
    branch: Prepared,
    /// What the runner (or the woken agent) reported; the branch, base,
    /// head and `no_changes` are the push's.
    result: TaskResult,
}

#[derive(Clone, Debug)]
pub(crate) struct AttemptMachine {
    settings: AttemptSettings,
    current: Option<Current>,
    runner: RunnerState,
    /// The held attempt's branch push under way, if any.
    pushing: Option<Pushing>,
    /// Reports on disk waiting for the hub's `ack`, oldest first.
    outbox: Vec<SidecarMsg>,
    /// The held attempt's report that could not be written to the outbox:
    /// never sent; saving it is tried again at every tick.
    unsaved: Option<SidecarMsg>,
    link: Link,
    awaiting: Option<Awaiting>,
    /// What was last seen of the held attempt's runner, for heartbeats.
    seen: Option<Seen>,
    /// The last local self-test's findings, for `hello` and heartbeats.
    selftest: Option<SelfTestStatus>,
}

impl AttemptMachine {
    /// Start from what the last run left on disk: the attempt it held and
    /// its outbox (oldest first). Returns the machine and the clean-up,
    /// which must all succeed before the daemon goes on:
    ///
    /// - an attempt whose report is in the outbox was finished: forget it;
    /// - an attempt without one had its runner die with the sidecar: kill
    ///   what may be left of the runner's group, put a retryable `fail` in
    ///   the outbox, then forget the attempt;
    /// - a report too large to send (left by an older sidecar) is replaced
    ///   by the `fail` that says so;
    /// - an attempt whose task id is not valid (taken by an older sidecar)
    ///   is forgotten without a report: its id must not name a file.
    ///
    /// The machine already counts on the plan: its effects take no
    /// completion calls, and a failed step stops the sidecar.
    pub(crate) fn recover(
        settings: AttemptSettings,
        current: Option<Current>,
        outbox: Vec<SidecarMsg>,
    ) -> (AttemptMachine, Vec<Effect>) {
        let mut fx = Vec::new();
        let outbox = outbox
            .into_iter()
            .map(|old| {
                let new = report::sendable(old.clone());
                if new != old {
                    fx.push(Effect::ReplaceInOutbox {
                        old,
                        new: new.clone(),
                    });
                }
                new
            })
            .collect();
        let mut m = AttemptMachine {
            settings,
            current: None,
            runner: RunnerState::NotRunning,
            pushing: None,
            outbox,
            unsaved: None,
            link: Link::Down,
            awaiting: None,
            seen: None,
            selftest: None,
        };
        if let Some(c) = current {
            if let Err(e) = validate::task_id(&c.attempt.task_id) {
                tracing::error!(error = %e, "forgetting an attempt an older sidecar took");
                fx.push(Effect::ClearCurrent);
                return (m, fx);
            }
            let finished = m
                .outbox
                .iter()
                .any(|msg| msg.attempt_ref().as_ref() == Some(&c.attempt));
            if finished {
                tracing::info!(task = %c.attempt, "the last run finished this attempt; its result is in the outbox");
            } else {
                if let Some(pgid) = c.runner_pgid {
                    fx.push(Effect::KillLeftover {
                        pgid,
                        task_id: c.attempt.task_id.clone(),
                    });
                }
                let fail = if c.body.kind == TaskKind::Verify {
                    tracing::warn!(task = %c.attempt, "the last run of the sidecar stopped during a verification task's self-test; reporting a retryable failure");
                    report::environment_failure(
                        &c.attempt,
                        "the sidecar stopped before the self-test of this verification task ended"
                            .into(),
                    )
                } else {
                    tracing::warn!(task = %c.attempt, "the runner died with the last run of the sidecar; reporting a retryable failure");
                    // The agent's session died with the sidecar.
                    failure(
                        &c.attempt,
                        "the runner died when the sidecar stopped unexpectedly".into(),
                        Retry::Retryable,
                        FailClass::Agent,
                        None,
                        None,
                    )
                };
                m.outbox.push(fail.clone());
                fx.push(Effect::PushOutbox(fail));
            }
            fx.push(Effect::ClearCurrent);
        }
        (m, fx)
    }

    /// In wake mode, when the woken agent's time is up (if it holds an
    /// attempt whose runner is not running).
    pub(crate) fn wake_deadline(&self) -> Option<Timestamp> {
        if self.settings.mode != Mode::Wake
            || self.runner == RunnerState::Running
            || self.pushing.is_some()
            || self.is_verify_task()
        {
            return None;
        }
        let c = self.current.as_ref()?;
        Some(
            c.accepted_at
                .plus_millis(self.wake_limit_s(c) as i64 * 1000),
        )
    }

    /// Whether the held attempt is ending and its report will follow on
    /// its own: its runner was told to stop, or its branch is being
    /// pushed. (A stopping sidecar waits a little for that.)
    pub(crate) fn ending(&self) -> bool {
        self.runner == RunnerState::Stopping || self.pushing.is_some()
    }

    // ----- the connection ------------------------------------------------------

    /// A connection is open: say `hello` with what the sidecar holds.
    pub(crate) fn connected(&mut self) -> Vec<Effect> {
        self.link = Link::Connected;
        vec![Effect::Send(self.hello())]
    }

    /// The hub said `welcome`: `accept` of the attempt held, every report
    /// in the outbox (oldest first), then a heartbeat with the real state.
    pub(crate) fn welcomed(&mut self) -> Vec<Effect> {
        self.link = Link::Welcomed;
        let mut fx = Vec::new();
        if let Some(c) = &self.current {
            fx.push(Effect::Send(accept(&c.attempt)));
        }
        for msg in &self.outbox {
            tracing::info!(task = %report_task(msg), kind = msg.kind(), "resending an unacknowledged report");
            fx.push(Effect::Send(msg.clone()));
        }
        fx.push(Effect::Send(self.heartbeat()));
        fx
    }

    /// The connection is gone.
    pub(crate) fn disconnected(&mut self) {
        self.link = Link::Down;
    }

    // ----- the hub's messages ----------------------------------------------------

    /// The hub offers an attempt. Invalid (see `validate.rs`): `reject`,
    /// touching nothing. Busy: `accept` again if it is the attempt held,
    /// else `reject`. Idle: persist it first (see
    /// [`AttemptMachine::current_saved`]).
    pub(crate) fn assign(
        &mut self,
        attempt: AttemptRef,
        body: Task,
        now: Timestamp,
    ) -> Vec<Effect> {
        if let Err(reason) = validate::assignment(&attempt, &body) {
            tracing::warn!(%reason, generation = attempt.generation, "rejecting an invalid assignment");
            return self.send(SidecarMsg::Reject {
                task_id: attempt.task_id,
                generation: attempt.generation,
                reason,
            });
        }
        if let Err(reason) = self.has_repo(&body) {
            tracing::warn!(%reason, task = %attempt, "rejecting a task on a repository this sidecar does not have");
            return self.send(SidecarMsg::Reject {
                task_id: attempt.task_id,
                generation: attempt.generation,
                reason,
            });
        }
        if let Some(c) = &self.current {
            let reply = if c.attempt == attempt {
                accept(&attempt)
            } else {
                tracing::warn!(offered = %attempt, holding = %c.attempt, "assignment while busy; rejecting");
                SidecarMsg::Reject {
                    task_id: attempt.task_id,
                    generation: attempt.generation,
                    reason: format!("busy with {}", c.attempt),
                }
            };
            return self.send(reply);
        }
        let c = Current {
            attempt,
            body,
            accepted_at: now,
            runner_pgid: None,
            branch: None,
        };
        self.awaiting = Some(Awaiting::AssignmentSaved(Box::new(c.clone())));
        vec![Effect::SaveCurrent(c)]
    }

    /// The hub says stop `attempt`. Held with a runner: stop it (its end
    /// is the report). Held without one: fail it now, retryable. Not held:
    /// a stale cancel, ignored.
    pub(crate) fn cancel(&mut self, attempt: AttemptRef, reason: Option<String>) -> Vec<Effect> {
        let reason = reason.unwrap_or_else(|| "cancelled by the hub".into());
        if self.current.as_ref().is_none_or(|c| c.attempt != attempt) {
            tracing::info!(task = %validate::shown(&attempt.task_id, 64), generation = attempt.generation, "cancel for an attempt this sidecar does not hold");
            return vec![];
        }
        if self.pushing.take().is_some() {
            tracing::info!(task = %attempt, %reason, "cancel while the branch is pushed: failing the attempt now; the push's outcome will be ignored");
            let mut fx: Vec<Effect> = self
                .stop_runner(&attempt, reason.clone())
                .into_iter()
                .collect();
            fx.extend(self.finish(fail_msg(
                &attempt,
                format!("cancelled: {reason}"),
                Retry::Retryable,
            )));
            return fx;
        }
        tracing::info!(task = %attempt, %reason, "cancel: stopping the runner");
        // The woken agent outlives its wake command: tell it too.
        let woken: Vec<Effect> = match &self.current {
            Some(c)
                if self.settings.mode == Mode::Wake
                    && self.settings.cancel_command
                    && self.unsaved.is_none() =>
            {
                vec![Effect::CancelWoken {
                    current: Box::new(c.clone()),
                    reason: reason.clone(),
                }]
            }
            _ => vec![],
        };
        let mut fx = woken;
        match self.stop_runner(&attempt, reason.clone()) {
            Some(stop) => fx.push(stop),
            None => fx.extend(self.finish(fail_msg(
                &attempt,
                format!("cancelled: {reason}"),
                Retry::Retryable,
            ))),
        }
        fx
    }

    /// The hub durably recorded a report: delete it from the outbox.
    pub(crate) fn ack(&mut self, attempt: AttemptRef, of: AckOf) -> Vec<Effect> {
        let kind = match of {
            AckOf::Accept => "accept",
            AckOf::Complete => "complete",
            AckOf::Fail => "fail",
        };
        self.awaiting = Some(Awaiting::ReportRemoved {
            attempt: attempt.clone(),
            kind,
        });
        vec![Effect::RemoveFromOutbox { attempt, kind }]
    }

    // ----- the runner ------------------------------------------------------------

    /// The runner of `attempt` was launched (its preparation runs off the
    /// loop; its end comes as [`AttemptMachine::runner_done`]).
    pub(crate) fn runner_launched(&mut self, attempt: &AttemptRef) -> Vec<Effect> {
        if self.holds(attempt) {
            self.runner = RunnerState::Running;
        }
        vec![]
    }

    /// The runner runs as process group `pgid`, on `branch` if one was
    /// prepared: record both, so a restart can kill what it left and the
    /// branch can be pushed when it succeeds.
    pub(crate) fn runner_started(
        &mut self,
        attempt: &AttemptRef,
        pgid: i32,
        branch: Option<Prepared>,
    ) -> Vec<Effect> {
        let Some(c) = self.current.as_mut().filter(|c| &c.attempt == attempt) else {
            return vec![];
        };
        c.runner_pgid = Some(pgid);
        c.branch = branch;
        let c = c.clone();
        self.awaiting = Some(Awaiting::PgidSaved {
            attempt: attempt.clone(),
            pgid,
        });
        vec![Effect::SaveCurrent(c)]
    }

    /// The runner of `attempt` ended; `result` is what its result file
    /// held. Exec mode: that is the report (for a repository task's
    /// success, once its branch is pushed). Wake mode, exit 0: the agent
    /// is awake and reports itself.
    pub(crate) fn runner_done(
        &mut self,
        attempt: &AttemptRef,
        outcome: Outcome,
        result: Option<Value>,
    ) -> Vec<Effect> {
        if !self.holds(attempt) {
            tracing::info!(task = %attempt, %outcome, "runner of an attempt already reported ended");
            return vec![];
        }
        self.runner = RunnerState::NotRunning;
        if self.pushing.is_some() {
            tracing::info!(task = %attempt, %outcome, "the runner ended while the branch is pushed");
            return vec![];
        }
        let limits = self.settings.rate_limits;
        let succeeded = report::succeeded(&outcome, result.as_ref(), limits);
        if self.settings.mode == Mode::Wake && succeeded {
            tracing::info!(task = %attempt, "agent woken; waiting for it to report");
            return vec![];
        }
        if succeeded && self.is_repo_task() {
            return self.push(attempt.clone(), report::result_from(result));
        }
        self.finish(report::report_for(attempt, outcome, result, limits))
    }

    /// The push asked for by [`Effect::Push`] ended: `Ok` with what was
    /// pushed (no commits: nothing), or `Err` with what git said. The
    /// report is made now: `complete` with the branch, its base and head
    /// (overriding whatever the runner said of them), or a retryable
    /// `fail`. The outcome of a push the machine no longer waits for (the
    /// attempt was cancelled meanwhile) is ignored.
    pub(crate) fn pushed(
        &mut self,
        attempt: &AttemptRef,
        outcome: Result<Pushed, PushFailed>,
    ) -> Vec<Effect> {
        let Some(p) = self.pushing.take_if(|p| &p.attempt == attempt) else {
            let outcome = match &outcome {
                Ok(p) => format!("pushed {} ({} commits)", p.head, p.commits),
                Err(e) => format!("failed: {e}"),
            };
            tracing::info!(task = %attempt, %outcome, "the push of an attempt already reported ended; ignored");
            return vec![];
        };
        let msg = match outcome {
            Ok(pushed) => {
                let no_changes = pushed.commits == 0;
                if no_changes {
                    tracing::info!(task = %attempt, branch = %p.branch.branch, "no commits beyond the base; nothing pushed");
                } else {
                    tracing::info!(task = %attempt, branch = %p.branch.branch, head = %pushed.head, commits = pushed.commits, "branch pushed");
                }
                SidecarMsg::Complete {
                    task_id: attempt.task_id.clone(),
                    generation: attempt.generation,
                    result: TaskResult {
                        branch: Some(p.branch.branch),
                        base: Some(p.branch.base),
                        head: Some(pushed.head),
                        no_changes,
                        ..p.result
                    },
                }
            }
            Err(e) => {
                tracing::warn!(task = %attempt, branch = %p.branch.branch, error = %e, "pushing the branch failed");
                let error = format!("pushing the task branch {} failed: {e}", p.branch.branch);
                if e.branch_gone {
                    // The runner deleted its branch: its doing, not the machine's.
                    let tail = error.clone();
                    failure(
                        attempt,
                        error,
                        Retry::Retryable,
                        FailClass::Task,
                        None,
                        Some(tail),
                    )
                } else {
                    report::environment_failure(attempt, error)
                }
            }
        };
        self.finish(msg)
    }

    // ----- the local control socket ------------------------------------------------

    /// `status`, or a woken agent's `complete`/`fail` (which must name the
    /// task held). Returns the reply (to send after the effects).
    pub(crate) fn control(&mut self, req: Request) -> (Reply, Vec<Effect>) {
        let holding = self.current.as_ref().map(|c| c.attempt.clone());
        let waiting = self.outbox.len();
        match (req, holding) {
            (Request::Status, holding) => {
                let message = match holding {
                    Some(t) if self.pushing.is_some() => format!(
                        "working on {t} (pushing its branch); {waiting} report(s) waiting for the hub"
                    ),
                    Some(t) => format!("working on {t}; {waiting} report(s) waiting for the hub"),
                    None => format!("idle; {waiting} report(s) waiting for the hub"),
                };
                (Reply { ok: true, message }, vec![])
            }
            (req @ (Request::Complete { .. } | Request::Fail { .. }), Some(t))
                if request_task(&req) == t.task_id && self.is_verify_task() =>
            {
                let message = format!(
                    "{t} is a verification task: the sidecar answers it with its self-test"
                );
                (Reply { ok: false, message }, vec![])
            }
            (req @ (Request::Complete { .. } | Request::Fail { .. }), Some(t))
                if request_task(&req) == t.task_id && self.unsaved.is_some() =>
            {
                let message = format!("{t} already ended; its report waits to be saved");
                (Reply { ok: false, message }, vec![])
            }
            (req @ (Request::Complete { .. } | Request::Fail { .. }), Some(t))
                if request_task(&req) == t.task_id && self.pushing.is_some() =>
            {
                let message = format!("{t} already succeeded; the sidecar is pushing its branch");
                (Reply { ok: false, message }, vec![])
            }
            (
                Request::Complete {
                    task_id,
                    summary,
                    pr_url,
                    ..
                },
                Some(t),
            ) if task_id == t.task_id && self.is_repo_task() => {
                // The branch is the sidecar's to push and to report.
                let result = TaskResult {
                    summary,
                    pr_url,
                    ..Default::default()
                };
                let mut fx: Vec<Effect> = self
                    .stop_runner(&t, "the agent reported".into())
                    .into_iter()
                    .collect();
                fx.extend(self.push(t.clone(), result));
                let message = match &self.pushing {
                    Some(p) => format!(
                        "reported {t}: the sidecar pushes branch {} and then completes it",
                        p.branch.branch
                    ),
                    None => format!("reported {t}"),
                };
                (Reply { ok: true, message }, fx)
            }
            (req @ (Request::Complete { .. } | Request::Fail { .. }), Some(t))
                if request_task(&req) == t.task_id =>
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
                        error,
                        retryable,
                        class,
                        retry_after_s,
                        log_tail,
                        ..
                    } => {
                        if let Err(message) = validate::fail_report(class, retry_after_s) {
                            return (Reply { ok: false, message }, vec![]);
                        }
                        let wait = (class == FailClass::RateLimited)
                            .then(|| retry_after_s.unwrap_or(self.settings.rate_limits.default_s));
                        failure(
                            &t,
                            error,
                            Retry::from_retryable(retryable),
                            class,
                            wait,
                            log_tail,
                        )
                    }
                    Request::Status => unreachable!("matched above"),
                };
                let mut fx: Vec<Effect> = self
                    .stop_runner(&t, "the agent reported".into())
                    .into_iter()
                    .collect();
                fx.extend(self.finish(msg));
                let reply = Reply {
                    ok: true,
                    message: format!("reported {t}"),
                };
                (reply, fx)
            }
            (req, holding) => {
                let task_id = request_task(&req);
                let message = match holding {
                    Some(t) => format!("this sidecar works on {t}, not {task_id}"),
                    None => format!("this sidecar holds no task (asked about {task_id})"),
                };
                (Reply { ok: false, message }, vec![])
            }
        }
    }

    // ----- what the runner is doing ------------------------------------------------

    /// What to look at for the next heartbeat, if an attempt is held: its
    /// runner's process group and log, and its branch.
    pub(crate) fn probe(&self) -> Option<Probe> {
        let c = self.current.as_ref()?;
        Some(Probe {
            attempt: c.attempt.clone(),
            pgid: c.runner_pgid,
            branch: c.branch.clone(),
        })
    }

    /// The held attempt's runner as seen now: whether its process group
    /// has a live process, how large its log is and when the file was
    /// last modified. `last_output_at` moves only when the size changed
    /// (to the file's modification time, else `now`), so it says when the
    /// runner last wrote, as the sidecar saw it.
    pub(crate) fn output_seen(
        &mut self,
        attempt: &AttemptRef,
        runner_alive: bool,
        output_bytes: u64,
        modified: Option<Timestamp>,
        now: Timestamp,
    ) {
        if !self.holds(attempt) {
            return;
        }
        let seen = self.seen_mut(attempt);
        let a = &mut seen.activity;
        a.runner_alive = runner_alive;
        if output_bytes != a.output_bytes || (a.last_output_at.is_none() && output_bytes > 0) {
            a.last_output_at = Some(modified.unwrap_or(now));
        }
        a.output_bytes = output_bytes;
    }

    /// When the last commit on the held attempt's branch was made (`None`:
    /// no commit beyond its base).
    pub(crate) fn commit_seen(&mut self, attempt: &AttemptRef, at: Option<Timestamp>) {
        if self.holds(attempt) {
            self.seen_mut(attempt).activity.last_commit_at = at;
        }
    }

    /// The activity of the held attempt for a heartbeat: what was last
    /// seen, with the runner alive only while the machine knows it runs.
    fn activity(&self, c: &Current) -> Activity {
        let mut a = self
            .seen
            .as_ref()
            .filter(|s| s.attempt == c.attempt)
            .map(|s| s.activity.clone())
            .unwrap_or_else(|| Activity {
                runner_alive: true,
                ..Activity::default()
            });
        a.runner_alive &= self.runner == RunnerState::Running;
        a
    }

    fn seen_mut(&mut self, attempt: &AttemptRef) -> &mut Seen {
        if self.seen.as_ref().is_none_or(|s| &s.attempt != attempt) {
            self.seen = Some(Seen {
                attempt: attempt.clone(),
                activity: Activity::default(),
            });
        }
        self.seen.as_mut().expect("just set")
    }

    // ----- the self-test ---------------------------------------------------------------

    /// A local self-test ended at `now` (`Err`: it could not run), run for
    /// the verification attempt `for_attempt` or on the timer. Its
    /// findings are kept for `hello` and heartbeats; changed ones are
    /// logged (each failure at ERROR, with its fix) and, once welcomed,
    /// sent at once in a heartbeat. A verification attempt still held is
    /// reported: `complete` with every check, or a retryable
    /// `environment` failure naming the failing ones.
    pub(crate) fn selftest_done(
        &mut self,
        for_attempt: Option<&AttemptRef>,
        report: Result<Report, String>,
        now: Timestamp,
    ) -> Vec<Effect> {
        let changed = match &report {
            Ok(r) => self.keep_selftest(r.status(now)),
            Err(e) => {
                tracing::error!(error = %e, "the self-test could not run");
                false
            }
        };
        let verifying = for_attempt.filter(|a| self.holds(a) && self.is_verify_task());
        if let Some(attempt) = verifying {
            let msg = match &report {
                Ok(r) if r.ok() => {
                    let mut extra = serde_json::Map::new();
                    extra.insert("selftest".into(), r.checks_json());
                    tracing::info!(task = %attempt, checks = r.results.len(), "verification task: the self-test passed");
                    SidecarMsg::Complete {
                        task_id: attempt.task_id.clone(),
                        generation: attempt.generation,
                        result: TaskResult {
                            summary: Some(format!("self-test passed: {} checks", r.results.len())),
                            extra,
                            ..Default::default()
                        },
                    }
                }
                Ok(r) => report::environment_failure(
                    attempt,
                    format!("self-test failed: {}", r.failures_line()),
                ),
                Err(e) => report::environment_failure(
                    attempt,
                    format!("the self-test could not run: {e}"),
                ),
            };
            // The report's heartbeat carries the new findings.
            return self.finish(msg);
        }
        if changed && self.link == Link::Welcomed {
            vec![Effect::Send(self.heartbeat())]
        } else {
            vec![]
        }
    }

    /// Keep `status` as the last self-test's; whether its findings differ
    /// from the last ones (logged if so).
    fn keep_selftest(&mut self, status: SelfTestStatus) -> bool {
        let first = self.selftest.is_none();
        let changed = !selftest::same_findings(self.selftest.as_ref(), &status);
        if changed || first {
            for f in &status.failures {
                tracing::error!(check = %f.check, problem = %f.detail, "self-test failed");
            }
            if status.ok {
                tracing::info!("self-test passed");
            }
        }
        self.selftest = Some(status);
        changed
    }

    // ----- time and shutdown --------------------------------------------------------

    /// The heartbeat timer fired: try again to save a report that could
    /// not be saved; in wake mode, give up on an agent that did not report
    /// in time (retryable). Then call [`AttemptMachine::heartbeat_due`].
    pub(crate) fn tick(&mut self, now: Timestamp) -> Vec<Effect> {
        if let Some(msg) = self.unsaved.clone() {
            tracing::info!(task = %report_task(&msg), "trying again to save the report");
            return self.finish(msg);
        }
        let (Some(deadline), Some(c)) = (self.wake_deadline(), &self.current) else {
            return vec![];
        };
        if now <= deadline {
            return vec![];
        }
        let limit = self.wake_limit_s(c);
        // The agent's session is gone or stuck: the agent's failure.
        let msg = failure(
            &c.attempt,
            format!("the woken agent did not report within {limit}s"),
            Retry::Retryable,
            FailClass::Agent,
            None,
            None,
        );
        self.finish(msg)
    }

    /// The periodic heartbeat, once welcomed.
    pub(crate) fn heartbeat_due(&self) -> Vec<Effect> {
        if self.link == Link::Welcomed {
            vec![Effect::Send(self.heartbeat())]
        } else {
            vec![]
        }
    }

    /// SIGTERM/SIGINT: stop a running runner (its end is reported as a
    /// retryable failure, if it comes in time).
    pub(crate) fn shutdown(&mut self) -> Vec<Effect> {
        match self.current.as_ref().map(|c| c.attempt.clone()) {
            Some(attempt) => self
                .stop_runner(&attempt, "the sidecar is stopping".into())
                .into_iter()
                .collect(),
            None => vec![],
        }
    }

    // ----- completions ----------------------------------------------------------------

    /// The outcome of [`Effect::SaveCurrent`].
    pub(crate) fn current_saved(&mut self, result: Result<(), String>) -> Vec<Effect> {
        match self.awaiting.take() {
            Some(Awaiting::AssignmentSaved(c)) => {
                let c = *c;
                match result {
                    Ok(()) => {
                        tracing::info!(task = %c.attempt, title = %c.body.title, "assignment accepted");
                        self.current = Some(c.clone());
                        self.seen = None;
                        self.runner = RunnerState::NotRunning;
                        let mut fx = self.send(accept(&c.attempt));
                        if c.body.kind == TaskKind::Verify {
                            tracing::info!(task = %c.attempt, "a verification task: running the self-test, no runner");
                            fx.push(Effect::RunSelfTest(c.attempt));
                        } else {
                            fx.push(Effect::StartRunner(c));
                        }
                        fx
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot persist the assignment; rejecting it");
                        self.send(SidecarMsg::Reject {
                            task_id: c.attempt.task_id,
                            generation: c.attempt.generation,
                            reason: format!("cannot persist: {e}"),
                        })
                    }
                }
            }
            Some(Awaiting::PgidSaved { attempt, pgid }) => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "cannot record the runner's process group");
                }
                tracing::info!(task = %attempt, pgid, "runner started");
                vec![]
            }
            other => self.unexpected("current_saved", other),
        }
    }

    /// The outcome of [`Effect::PushOutbox`]. Saved: forget the attempt,
    /// then send the report (and a heartbeat saying idle). Not saved: send
    /// nothing, keep the attempt held, and try again at the next tick.
    pub(crate) fn outbox_pushed(&mut self, result: Result<(), String>) -> Vec<Effect> {
        let msg = match self.awaiting.take() {
            Some(Awaiting::ReportPushed(msg)) => msg,
            other => return self.unexpected("outbox_pushed", other),
        };
        if let Err(e) = result {
            tracing::error!(
                task = %report_task(&msg),
                error = %e,
                "cannot save the report to the outbox; it is not sent, the attempt stays held, and saving is tried again at the next heartbeat"
            );
            self.unsaved = Some(msg);
            return vec![];
        }
        self.outbox.push(msg.clone());
        self.current = None;
        self.seen = None;
        self.runner = RunnerState::NotRunning;
        tracing::info!(task = %report_task(&msg), kind = msg.kind(), "attempt finished");
        let mut fx = vec![Effect::ClearCurrent];
        if self.link != Link::Down {
            fx.push(Effect::Send(msg));
            fx.push(Effect::Send(self.heartbeat()));
        }
        fx
    }

    /// The outcome of [`Effect::RemoveFromOutbox`]: whether an entry was
    /// removed.
    pub(crate) fn outbox_acked(&mut self, result: Result<bool, String>) -> Vec<Effect> {
        let (attempt, kind) = match self.awaiting.take() {
            Some(Awaiting::ReportRemoved { attempt, kind }) => (attempt, kind),
            other => return self.unexpected("outbox_acked", other),
        };
        match result {
            Ok(true) => {
                self.outbox.retain(|msg| {
                    !(msg.attempt_ref().as_ref() == Some(&attempt) && msg.kind() == kind)
                });
                tracing::info!(task = %attempt, kind, "the hub recorded the report");
            }
            Ok(false) => {
                tracing::debug!(task = %validate::shown(&attempt.task_id, 64), generation = attempt.generation, kind, "ack for nothing pending")
            }
            Err(e) => tracing::error!(error = %e, "cannot clear an acknowledged report"),
        }
        vec![]
    }

    // ----- internals --------------------------------------------------------------------

    /// The attempt is over: its report, made sendable, goes to the outbox
    /// first (then [`AttemptMachine::outbox_pushed`]). If an earlier report
    /// of it is still unsaved, that one stands and is saved instead.
    fn finish(&mut self, msg: SidecarMsg) -> Vec<Effect> {
        let msg = match self.unsaved.take() {
            Some(first) => {
                if first != msg {
                    tracing::info!(task = %report_task(&first), "the attempt already ended; its first report stands");
                }
                first
            }
            None => report::sendable(msg),
        };
        self.awaiting = Some(Awaiting::ReportPushed(msg.clone()));
        vec![Effect::PushOutbox(msg)]
    }

    /// The attempt succeeded and its branch must be pushed before it is
    /// reported: [`Effect::Push`] (then [`AttemptMachine::pushed`]). A
    /// branch never prepared cannot be: a retryable `fail`.
    fn push(&mut self, attempt: AttemptRef, result: TaskResult) -> Vec<Effect> {
        let Some(branch) = self.current.as_ref().and_then(|c| c.branch.clone()) else {
            tracing::error!(task = %attempt, "a repository task succeeded without a prepared branch");
            return self.finish(report::environment_failure(
                &attempt,
                "the task's git branch was never prepared, so there is nothing to push".into(),
            ));
        };
        tracing::info!(task = %attempt, branch = %branch.branch, "the runner succeeded; pushing its branch");
        self.pushing = Some(Pushing {
            attempt: attempt.clone(),
            branch: branch.clone(),
            result,
        });
        vec![Effect::Push {
            attempt,
            branch: branch.branch,
            base: branch.base,
        }]
    }

    /// Whether the held attempt is a task on a repository (which this
    /// sidecar has: [`AttemptMachine::assign`] saw to that).
    fn is_repo_task(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.body.repo.is_some())
    }

    /// Whether the held attempt is a verification task (answered by the
    /// self-test, no runner).
    fn is_verify_task(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.body.kind == TaskKind::Verify)
    }

    /// Whether this sidecar can work on `body`'s repository, if it names
    /// one.
    fn has_repo(&self, body: &Task) -> Result<(), String> {
        let Some(repo) = &body.repo else {
            return Ok(());
        };
        validate::repo_name(repo)?;
        if self.settings.repos.contains(repo) {
            return Ok(());
        }
        let have = if self.settings.repos.is_empty() {
            "none".to_string()
        } else {
            self.settings.repos.join(", ")
        };
        Err(format!(
            "this sidecar has no clone of repository {repo} (it has: {have})"
        ))
    }

    /// Stop the runner of `attempt` if it is running.
    fn stop_runner(&mut self, attempt: &AttemptRef, reason: String) -> Option<Effect> {
        if self.runner != RunnerState::Running {
            return None;
        }
        self.runner = RunnerState::Stopping;
        Some(Effect::StopRunner {
            attempt: attempt.clone(),
            reason,
        })
    }

    fn holds(&self, attempt: &AttemptRef) -> bool {
        self.current.as_ref().is_some_and(|c| &c.attempt == attempt)
    }

    fn send(&self, msg: SidecarMsg) -> Vec<Effect> {
        if self.link == Link::Down {
            vec![]
        } else {
            vec![Effect::Send(msg)]
        }
    }

    fn wake_limit_s(&self, c: &Current) -> u64 {
        self.settings.runner_timeout_s.min(c.body.timeout_s.max(1))
    }

    fn unexpected(&self, what: &str, awaiting: Option<Awaiting>) -> Vec<Effect> {
        let awaiting = match awaiting {
            None => "nothing".to_string(),
            Some(Awaiting::AssignmentSaved(c)) => format!("the save of assignment {}", c.attempt),
            Some(Awaiting::PgidSaved { attempt, .. }) => {
                format!("the save of {attempt}'s runner group")
            }
            Some(Awaiting::ReportPushed(msg)) => {
                format!("the save of {}'s {}", report_task(&msg), msg.kind())
            }
            Some(Awaiting::ReportRemoved { attempt, kind }) => {
                format!("the removal of {attempt}'s {kind}")
            }
        };
        tracing::error!(%awaiting, "{what} without the effect it answers; ignored");
        vec![]
    }

    fn hello(&self) -> SidecarMsg {
        SidecarMsg::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_id: self.settings.agent_id.clone(),
            capabilities: self.settings.capabilities.clone(),
            state: if self.current.is_some() {
                SidecarState::Working
            } else {
                SidecarState::Idle
            },
            current_task: self.current.as_ref().map(|c| c.attempt.clone()),
            sidecar_version: self.settings.sidecar_version.clone(),
            pending_results: self.outbox.iter().filter_map(|m| m.attempt_ref()).collect(),
            repos: self.settings.repos.clone(),
            context_window_tokens: self.settings.context_window_tokens,
            instance_id: self.settings.instance_id.clone(),
            selftest: self.selftest.clone(),
        }
    }

    fn heartbeat(&self) -> SidecarMsg {
        match &self.current {
            Some(c) => SidecarMsg::Heartbeat {
                state: SidecarState::Working,
                task_id: Some(c.attempt.task_id.clone()),
                generation: Some(c.attempt.generation),
                activity: Some(self.activity(c)),
                selftest: self.selftest.clone(),
            },
            None => SidecarMsg::Heartbeat {
                state: SidecarState::Idle,
                task_id: None,
                generation: None,
                activity: None,
                selftest: self.selftest.clone(),
            },
        }
    }
}

fn accept(attempt: &AttemptRef) -> SidecarMsg {
    SidecarMsg::Accept {
        task_id: attempt.task_id.clone(),
        generation: attempt.generation,
    }
}

/// The attempt a report is about, for the log (`task#generation`).
fn report_task(msg: &SidecarMsg) -> String {
    msg.attempt_ref()
        .map_or_else(|| "?".to_string(), |a| a.to_string())
}

/// The task a `complete`/`fail` request names.
fn request_task(req: &Request) -> &str {
    match req {
        Request::Complete { task_id, .. } | Request::Fail { task_id, .. } => task_id,
        Request::Status => "",
    }
}

#[cfg(test)]
impl AttemptMachine {
    pub(crate) fn current(&self) -> Option<&Current> {
        self.current.as_ref()
    }

    pub(crate) fn runner(&self) -> RunnerState {
        self.runner
    }

    pub(crate) fn link(&self) -> Link {
        self.link
    }

    /// The reports waiting for the hub's `ack`, oldest first.
    pub(crate) fn outbox(&self) -> &[SidecarMsg] {
        &self.outbox
    }

    /// The held attempt's report that could not be saved yet.
    pub(crate) fn unsaved(&self) -> Option<&SidecarMsg> {
        self.unsaved.as_ref()
    }

    /// Whether the held attempt's branch is being pushed.
    pub(crate) fn is_pushing(&self) -> bool {
        self.pushing.is_some()
    }
}

#[cfg(test)]
mod tests;
