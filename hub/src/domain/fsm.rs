//! `AgentMachine`: one agent's state machine, as plain Rust.
//!
//! It holds what the hub knows of one agent: whether its sidecar is
//! connected (and through which connection), the attempt it holds (assigned or
//! working), its heartbeat and failure record, whether an operator paused
//! it (it then wants no work — [`AgentMachine::wants_work`] is the one place
//! that decides — but its state stays derived), and its recent transitions.
//! Its state (offline, idle, assigned, working, stalled, degraded) is
//! *derived* from those facts, so every transition is the consequence of an
//! event and is logged with the event's reason.
//!
//! Failures count on its breaker as the queue judged them ([`Charge`]): a
//! task's own failure counts until another agent fails the same task (then
//! the queue absolves it), an environment failure degrades it at once, a
//! rate limit holds it back without counting. Its breaker ([`Breaker`])
//! is what the hub keeps of it across restarts. A working attempt whose
//! reported activity does not change for `stall_ms` turns it `stalled`;
//! after `stall_kill_ms` the attempt is failed against it and cancelled.
//! Offline for `offline_alert_ms` after a connection this hub saw end, it
//! says so once (`Effect::Offline`), until it connects again.
//!
//! One sidecar per agent: a `hello` from another installation (another
//! `instance_id`) while the agent's current connection is alive is refused
//! (`agent_in_use`; the current sidecar hears `agent_in_use_elsewhere`)
//! and changes nothing else; the same installation reconnecting, or a
//! sidecar that says no instance id, replaces the current connection. A
//! sidecar whose self-test fails (`hello`/heartbeat `selftest`) makes the
//! agent degraded, with the failures as the reason, until it reports a
//! passing one: not on the breaker, not kept across restarts.
//!
//! Events come in as method calls with the current time; what the hub must
//! do about them comes out as [`Effect`]s (frames to send, attempts to
//! release or fail, a connection to close). It must never do I/O, read the
//! clock, or touch the task queue itself: the agent actor carries out the
//! effects.

use std::collections::{BTreeSet, VecDeque};

use agentcom_protocol::{
    Activity, AgentInfo, AgentState, AgentTransition, AttemptRef, HubMsg, SelfTestStatus,
    SidecarState, Task, TaskStatus, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::domain::blame::Charge;
use crate::domain::limits::{self, MAX_PROGRESS_NOTE_BYTES};
use crate::domain::queue::{repo_mark, Outstanding, Verdict};
use crate::domain::repo::valid_name;

/// Timeouts and the circuit breaker, in milliseconds.
#[derive(Clone, Debug)]
pub struct FsmSettings {
    pub heartbeat_timeout_ms: i64,
    pub accept_timeout_ms: i64,
    pub circuit_failures: u32,
    pub circuit_cooldown_ms: i64,
    /// A working attempt whose activity has not changed this long is
    /// stalled.
    pub stall_ms: i64,
    /// ... and after this long it is failed and cancelled.
    pub stall_kill_ms: i64,
    /// Offline this long (after a connection this hub saw end): alert
    /// `agent_offline`, once per offline period.
    pub offline_alert_ms: i64,
}

impl Default for FsmSettings {
    fn default() -> Self {
        FsmSettings {
            heartbeat_timeout_ms: 90_000,
            accept_timeout_ms: 60_000,
            circuit_failures: 3,
            circuit_cooldown_ms: 300_000,
            stall_ms: 900_000,
            stall_kill_ms: 1_800_000,
            offline_alert_ms: 120_000,
        }
    }
}

/// The failures a breaker remembers (by task), at most.
const FAILURES_KEPT: usize = 64;

/// Why an agent is degraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradedBy {
    /// `circuit_failures` failures in a row.
    Breaker,
    /// Its machine failed (an environment failure).
    Environment,
    /// The model provider's rate limit.
    RateLimit,
}

/// What the hub keeps of an agent's failure record across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// The task of each failure in the current run of failures, oldest
    /// first.
    #[serde(default)]
    pub failures: Vec<String>,
    #[serde(default)]
    pub degraded_until: Option<Timestamp>,
    #[serde(default)]
    pub degraded_reason: Option<String>,
    #[serde(default)]
    pub degraded_by: Option<DegradedBy>,
}

/// How many recent transitions an agent keeps.
pub(crate) const RECENT_TRANSITIONS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `assign` sent, waiting for `accept`.
    Assigned,
    /// Accepted; the runner works on it.
    Working,
}

/// The attempt an agent holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Holding {
    pub task: AttemptRef,
    pub phase: Phase,
    pub since: Timestamp,
    /// Accept deadline (assigned) or task deadline (working).
    pub deadline: Option<Timestamp>,
    pub timeout_s: u64,
    /// The hub told the sidecar to stop; waiting for it to confirm.
    pub cancelling: bool,
    /// The activity the sidecar last reported for it (working only).
    pub activity: Option<Activity>,
    /// When that activity last changed (or the attempt was accepted).
    pub active_at: Timestamp,
    /// No activity for `stall_ms`.
    pub stalled: bool,
}

/// What the actor must do after an event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Effect {
    /// Send this frame to the connected sidecar.
    Send(HubMsg),
    /// Take the attempt back (queued again if never accepted, else a
    /// retryable failure).
    Release { task: AttemptRef, reason: String },
    /// Fail the current attempt on the agent's behalf.
    Fail {
        task: AttemptRef,
        error: String,
        retryable: bool,
    },
    /// Close this connection.
    CloseConnection { conn: u64, reason: String },
    /// Refuse connection `conn` (not the agent's current one): send it an
    /// `error` frame of `code` and `message`, then close it.
    Refuse {
        conn: u64,
        code: &'static str,
        message: String,
    },
    /// The attempt stalled: tell people (`task_stalled`).
    Stalled { task: AttemptRef, idle_s: i64 },
    /// Offline for `offline_alert_ms` since `since`: tell people
    /// (`agent_offline`).
    Offline { since: Timestamp, offline_s: i64 },
}

/// How the sidecar says an attempt ended (a failure with what the queue
/// made of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Completed,
    Failed(Charge),
}

/// Why the machine refuses something a sidecar sent (answered with an
/// `error` frame of this code; nothing else happens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The message is about an attempt this agent (on this connection)
    /// does not hold.
    NotHolder(String),
    /// Larger than the hub keeps.
    TooLarge(String),
}

impl Refusal {
    /// The `code` of the `error` frame.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::NotHolder(_) => "not_holder",
            Refusal::TooLarge(_) => "too_large",
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Refusal::NotHolder(m) | Refusal::TooLarge(m) => m,
        }
    }
}

/// The agent cannot take an assignment now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NotAvailable(pub AgentState);

/// What a sidecar said in `hello`, as the machine needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HelloFacts {
    /// What the sidecar's config claims; the hub schedules on the
    /// capabilities registered for the agent.
    pub capabilities: Vec<String>,
    /// The repositories the sidecar has a clone of.
    pub repos: Vec<String>,
    /// The model's context window the sidecar reports, in tokens.
    pub context_window_tokens: Option<u64>,
    pub current_task: Option<AttemptRef>,
    pub pending_results: Vec<AttemptRef>,
    pub sidecar_version: String,
    /// The sidecar installation's id (bounded by
    /// [`limits::instance_id`]); none from older sidecars.
    pub instance_id: Option<String>,
    /// Its last self-test, if it said one.
    pub selftest: Option<SelfTestStatus>,
}

#[derive(Clone, Debug)]
pub(crate) struct AgentMachine {
    id: String,
    capabilities: Vec<String>,
    /// What the sidecar's last `hello` said it has a clone of.
    repos: Vec<String>,
    /// What the sidecar's last `hello` said its context window is.
    context_window_tokens: Option<u64>,
    created_at: Timestamp,
    settings: FsmSettings,
    state: AgentState,
    state_since: Timestamp,
    conn: Option<u64>,
    /// The instance id the current connection's sidecar said, and when
    /// it connected (meaningful while `conn` is some).
    conn_instance: Option<String>,
    conn_since: Timestamp,
    holding: Option<Holding>,
    last_heartbeat: Option<Timestamp>,
    /// While offline with an attempt held: when it is given up.
    offline_deadline: Option<Timestamp>,
    /// While offline: when it went offline and when that is worth an
    /// `agent_offline` alert (taken when raised: once per offline period).
    offline_alert: Option<(Timestamp, Timestamp)>,
    /// The task of each failure in the current run, oldest first.
    failures: VecDeque<String>,
    degraded_until: Option<Timestamp>,
    degraded_reason: Option<String>,
    degraded_by: Option<DegradedBy>,
    /// Its sidecar's self-test fails: the reason (degraded until a
    /// passing one is reported; never on the breaker).
    selftest_failing: Option<String>,
    sidecar_version: Option<String>,
    recent: VecDeque<AgentTransition>,
    /// Transitions since the machine was made (`recent` keeps the last
    /// [`RECENT_TRANSITIONS`]).
    transitions: u64,
    /// Paused by an operator: offered no new attempt (drain).
    paused: bool,
}

impl AgentMachine {
    pub(crate) fn new(
        id: &str,
        capabilities: Vec<String>,
        created_at: Timestamp,
        settings: FsmSettings,
        now: Timestamp,
    ) -> Self {
        AgentMachine {
            id: id.to_string(),
            capabilities,
            repos: Vec::new(),
            context_window_tokens: None,
            created_at,
            settings,
            state: AgentState::Offline,
            state_since: now,
            conn: None,
            conn_instance: None,
            conn_since: now,
            holding: None,
            last_heartbeat: None,
            offline_deadline: None,
            offline_alert: None,
            failures: VecDeque::new(),
            degraded_until: None,
            degraded_reason: None,
            degraded_by: None,
            selftest_failing: None,
            sidecar_version: None,
            recent: VecDeque::new(),
            transitions: 0,
            paused: false,
        }
    }

    /// After a hub restart (or a restart of its actor): the agent is
    /// offline but still owns the attempt the queue says it holds. It has
    /// one heartbeat timeout to come back; a working attempt keeps its task
    /// deadline, an assigned one gets a fresh accept deadline.
    pub(crate) fn seed_holding(&mut self, held: &Outstanding, now: Timestamp) {
        let (phase, deadline) = if held.status == TaskStatus::Working {
            (Phase::Working, held.since.plus_secs(held.timeout_s as f64))
        } else {
            (
                Phase::Assigned,
                now.plus_millis(self.settings.accept_timeout_ms),
            )
        };
        self.holding = Some(Holding {
            task: held.attempt.clone(),
            phase,
            since: held.since,
            deadline: Some(deadline),
            timeout_s: held.timeout_s,
            cancelling: false,
            activity: None,
            active_at: now,
            stalled: false,
        });
        self.offline_deadline = Some(now.plus_millis(self.settings.heartbeat_timeout_ms));
        // It was working when the hub stopped: it is expected back.
        self.arm_offline_alert(now);
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Its failure record, as kept across restarts.
    pub(crate) fn breaker(&self) -> Breaker {
        Breaker {
            failures: self.failures.iter().cloned().collect(),
            degraded_until: self.degraded_until,
            degraded_reason: self.degraded_reason.clone(),
            degraded_by: self.degraded_by,
        }
    }

    /// The failure record kept from before a restart (a degradation that
    /// ended meanwhile is dropped at the next tick).
    pub(crate) fn restore_breaker(&mut self, b: Breaker, now: Timestamp) {
        self.failures = b.failures.into_iter().collect();
        while self.failures.len() > FAILURES_KEPT {
            self.failures.pop_front();
        }
        self.degraded_until = b.degraded_until;
        self.degraded_reason = b.degraded_reason;
        self.degraded_by = b.degraded_by;
        self.settle(now, "failure record restored");
    }

    pub(crate) fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// What the scheduler matches a task's needs against: the registered
    /// capabilities and the mark of each repository the sidecar has.
    pub(crate) fn matchable(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.capabilities.iter().cloned().collect();
        out.extend(self.repos.iter().map(|r| repo_mark(r)));
        out
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> AgentState {
        self.state
    }

    pub(crate) fn state_since(&self) -> Timestamp {
        self.state_since
    }

    /// The connection the agent's sidecar is on, if connected.
    pub(crate) fn conn(&self) -> Option<u64> {
        self.conn
    }

    pub(crate) fn holding(&self) -> Option<&Holding> {
        self.holding.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.failures.len() as u32
    }

    pub(crate) fn recent(
        &self,
    ) -> impl DoubleEndedIterator<Item = &AgentTransition> + ExactSizeIterator {
        self.recent.iter()
    }

    /// How many transitions the machine has made (the last
    /// [`RECENT_TRANSITIONS`] of them are [`AgentMachine::recent`]).
    pub(crate) fn transitions(&self) -> u64 {
        self.transitions
    }

    /// The context window the sidecar's last `hello` reported.
    pub(crate) fn context_window_tokens(&self) -> Option<u64> {
        self.context_window_tokens
    }

    /// The agent as the API shows it, without its recent transitions
    /// (`recent` is empty: see [`AgentMachine::recent`]).
    pub(crate) fn info(&self) -> AgentInfo {
        AgentInfo {
            id: self.id.clone(),
            state: self.state,
            capabilities: self.capabilities.clone(),
            repos: self.repos.clone(),
            connected: self.conn.is_some(),
            current_task: self.holding.as_ref().map(|h| h.task.clone()),
            last_heartbeat_at: self.last_heartbeat,
            consecutive_failures: self.failures.len() as u32,
            degraded_until: self.degraded_until,
            degraded_reason: self.shown_degraded_reason(),
            state_since: self.state_since,
            created_at: self.created_at,
            sidecar_version: self.sidecar_version.clone(),
            // The view keeps them apart (appended as they happen): copying
            // them at every event cost more than the rest of it.
            recent: Vec::new(),
            paused: self.paused,
            context_window_tokens: self.context_window_tokens,
        }
    }

    /// Pause (drain) or resume the agent. A paused agent keeps the attempt
    /// it holds and takes no other; its derived state is unchanged. True
    /// if that changed anything.
    pub(crate) fn set_paused(&mut self, paused: bool) -> bool {
        std::mem::replace(&mut self.paused, paused) != paused
    }

    /// Whether the scheduler may offer it work: idle and not paused. The
    /// one place that decides it.
    pub(crate) fn wants_work(&self) -> bool {
        wants_work(self.state, self.holding.is_some(), self.paused)
    }

    /// Whether it would want work once `task`, the attempt it holds,
    /// completes now: what [`AgentMachine::reported`] would leave, asked
    /// of [`AgentMachine::wants_work`]. The queue may then give it its
    /// next task in the completion's own durable step.
    pub(crate) fn free_once_completed(&self, task: &AttemptRef, now: Timestamp) -> bool {
        if self.holding.as_ref().is_none_or(|h| &h.task != task) {
            return false;
        }
        // Only what `derive` reads, as `reported` would leave it (a clone
        // of the whole machine, its recent transitions too, cost a
        // noticeable share of a busy hub's CPU).
        let after = Derived {
            conn: self.conn.is_some(),
            holding: None,
            selftest_failing: self.selftest_failing.is_some(),
            degraded_until: if self.success_forgives_degradation() {
                None
            } else {
                self.degraded_until
            },
        };
        wants_work(after.state(now), false, self.paused)
    }

    /// The next moment [`AgentMachine::tick`] has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        let mut out: Option<Timestamp> = None;
        let mut consider = |t: Option<Timestamp>| {
            if let Some(t) = t {
                out = Some(out.map_or(t, |o| o.min(t)));
            }
        };
        if self.conn.is_some() {
            consider(
                self.last_heartbeat
                    .map(|h| h.plus_millis(self.settings.heartbeat_timeout_ms)),
            );
        } else {
            if self.holding.is_some() {
                consider(self.offline_deadline);
            }
            consider(self.offline_alert.map(|(_, at)| at));
        }
        if let Some(h) = &self.holding {
            if !h.cancelling {
                consider(h.deadline);
                if h.activity.is_some() {
                    if !h.stalled {
                        consider(Some(h.active_at.plus_millis(self.settings.stall_ms)));
                    }
                    consider(Some(h.active_at.plus_millis(self.settings.stall_kill_ms)));
                }
            }
        }
        consider(self.degraded_until);
        out
    }

    // ----- events -------------------------------------------------------------

    /// A sidecar said `hello` on connection `conn`. Another installation
    /// of a sidecar for an agent whose connection is alive is refused
    /// ([`Effect::Refuse`]) and changes nothing else.
    pub(crate) fn connect(&mut self, conn: u64, hello: HelloFacts, now: Timestamp) -> Vec<Effect> {
        if let Some(refused) = self.refuse_second_sidecar(conn, &hello, now) {
            return refused;
        }
        let mut fx = Vec::new();
        self.conn_instance = hello.instance_id.clone();
        self.conn_since = now;
        if let Some(status) = &hello.selftest {
            self.selftest_failing = limits::selftest_reason(status);
        }
        if let Some(old) = self.conn.replace(conn) {
            if old != conn {
                fx.push(Effect::CloseConnection {
                    conn: old,
                    reason: "replaced by a new connection".into(),
                });
            }
        }
        self.last_heartbeat = Some(now);
        self.offline_deadline = None;
        self.offline_alert = None;
        self.sidecar_version = Some(hello.sidecar_version.clone());
        self.repos = sane_repos(&hello.repos);
        self.context_window_tokens = hello.context_window_tokens;
        let sidecar_has = hello.current_task.clone();
        match (self.holding.clone(), sidecar_has) {
            (Some(h), Some(c)) if h.task == c => {
                if h.cancelling {
                    fx.push(cancel(&c, "cancelled while the sidecar was away"));
                }
            }
            (Some(h), other) => {
                if let Some(c) = other {
                    fx.push(cancel(&c, "the hub does not assign this attempt to you"));
                }
                if !hello.pending_results.contains(&h.task) {
                    let reason = match h.phase {
                        Phase::Assigned => "sidecar reconnected without the assignment",
                        Phase::Working => "sidecar reconnected without the task it was working on",
                    };
                    fx.extend(self.give_up(reason, now));
                }
            }
            (None, Some(c)) => fx.push(cancel(&c, "the hub does not assign this attempt to you")),
            (None, None) => {}
        }
        let reason = match &self.selftest_failing {
            Some(failing) => format!("sidecar connected; {failing}"),
            None => "sidecar connected".to_string(),
        };
        self.settle(now, &reason);
        fx
    }

    /// The refusal of a `hello` on `conn` when the agent's current
    /// connection is alive and its sidecar is another installation (both
    /// said an instance id, and they differ); `None` to let it replace
    /// the current one.
    fn refuse_second_sidecar(
        &self,
        conn: u64,
        hello: &HelloFacts,
        now: Timestamp,
    ) -> Option<Vec<Effect>> {
        let current = self.conn.filter(|c| *c != conn)?;
        let alive = self
            .last_heartbeat
            .is_some_and(|h| h.plus_millis(self.settings.heartbeat_timeout_ms) > now);
        let (Some(theirs), Some(ours)) = (&hello.instance_id, &self.conn_instance) else {
            return None;
        };
        if !alive || theirs == ours {
            return None;
        }
        let id = &self.id;
        tracing::warn!(agent = %id, conn, current, instance = %theirs, connected = %ours,
            "a second sidecar tried to connect as this agent; refused (the connected one stays)");
        Some(vec![
            Effect::Refuse {
                conn,
                code: "agent_in_use",
                message: format!(
                    "agent {id} is already connected from another sidecar since {since}; \
                     two sidecars must not share one agent: give each machine its own agent \
                     (e.g. `agentcom-sidecar join --id OTHER`), or stop the other one",
                    since = self.conn_since
                ),
            },
            Effect::Send(HubMsg::error(
                "agent_in_use_elsewhere",
                format!(
                    "another sidecar (instance {theirs}) tried to connect as agent {id} at {now} \
                     and was refused; this connection stays. Two sidecars must not share one \
                     agent's token: give the other machine its own agent"
                ),
            )),
        ])
    }

    /// Connection `conn` closed. The close of a replaced connection is ignored.
    pub(crate) fn disconnect(&mut self, conn: u64, now: Timestamp) -> Vec<Effect> {
        if self.conn != Some(conn) {
            return vec![];
        }
        self.conn = None;
        if self.holding.is_some() {
            self.offline_deadline = Some(now.plus_millis(self.settings.heartbeat_timeout_ms));
        }
        self.arm_offline_alert(now);
        self.settle(now, "connection closed");
        vec![]
    }

    /// A heartbeat carrying the sidecar's real state; divergences are
    /// resolved here.
    /// A self-test status, when said, replaces the last one.
    pub(crate) fn heartbeat(
        &mut self,
        state: SidecarState,
        task: Option<AttemptRef>,
        activity: Option<Activity>,
        selftest: Option<&SelfTestStatus>,
        now: Timestamp,
    ) -> Vec<Effect> {
        self.last_heartbeat = Some(now);
        let mut fx = Vec::new();
        if let Some(status) = selftest {
            self.selftest_failing = limits::selftest_reason(status);
            let reason = match &self.selftest_failing {
                Some(failing) => failing.clone(),
                None => "self-test passes".to_string(),
            };
            self.settle(now, &reason);
        }
        match (state, task) {
            (SidecarState::Working, Some(t)) => match &self.holding {
                Some(h) if h.task == t => {
                    if h.cancelling {
                        fx.push(cancel(&t, "cancelled"));
                    } else if h.phase == Phase::Working {
                        self.observe(activity, now);
                    }
                }
                _ => {
                    tracing::warn!(agent = %self.id, sidecar = %t, hub = %self.holding.as_ref().map_or("nothing".to_string(), |h| h.task.to_string()),
                        "divergence: the sidecar works on an attempt the hub did not give it; cancelling it");
                    fx.push(cancel(&t, "the hub does not assign this attempt to you"))
                }
            },
            (SidecarState::Working, None) => {}
            (SidecarState::Idle, _) => {
                if let Some(h) = self.holding.clone() {
                    if h.cancelling {
                        self.holding = None;
                        self.settle(now, "sidecar confirmed it stopped");
                    } else if h.phase == Phase::Working {
                        tracing::warn!(agent = %self.id, task = %h.task,
                            "divergence: the sidecar reports idle while the hub has it working; failing the attempt as retryable");
                        fx.extend(
                            self.give_up("sidecar reports idle while the hub has it working", now),
                        );
                        self.settle(now, "sidecar reports idle");
                    }
                    // Assigned: the assign may still be in flight; the
                    // accept timeout covers a lost one.
                }
            }
        }
        fx
    }

    /// The scheduler gives this agent an attempt.
    pub(crate) fn assign(
        &mut self,
        task: &Task,
        now: Timestamp,
    ) -> Result<Vec<Effect>, NotAvailable> {
        if !self.wants_work() {
            return Err(NotAvailable(self.state));
        }
        let r = AttemptRef::new(task.id.clone(), task.generation);
        self.holding = Some(Holding {
            task: r.clone(),
            phase: Phase::Assigned,
            since: now,
            deadline: Some(now.plus_millis(self.settings.accept_timeout_ms)),
            timeout_s: task.timeout_s,
            cancelling: false,
            activity: None,
            active_at: now,
            stalled: false,
        });
        self.settle(now, &format!("assigned {r}"));
        Ok(vec![Effect::Send(HubMsg::Assign {
            task_id: r.task_id.clone(),
            generation: r.generation,
            task: Box::new(task.clone()),
        })])
    }

    /// The queue's verdict on the sidecar's `accept` for `task` is in.
    pub(crate) fn accepted(
        &mut self,
        task: &AttemptRef,
        verdict: &Verdict,
        now: Timestamp,
    ) -> Vec<Effect> {
        let holds = self.holding.as_ref().is_some_and(|h| &h.task == task);
        if let Verdict::Stale(_) = verdict {
            if holds {
                let h = self.holding.as_mut().expect("holds");
                h.phase = Phase::Working;
                h.cancelling = true;
                self.settle(now, &format!("accepted {task} after it was taken back"));
            }
            return vec![cancel(task, "this attempt is no longer yours")];
        }
        if holds {
            let h = self.holding.as_mut().expect("holds");
            if h.phase == Phase::Assigned {
                h.phase = Phase::Working;
                h.since = now;
                h.active_at = now;
                h.deadline = Some(now.plus_secs(h.timeout_s as f64));
                self.settle(now, &format!("accepted {task}"));
            }
        }
        vec![]
    }

    /// The sidecar reported how `task` ended, and the queue gave its
    /// verdict and its charge: only a failure the queue applied (not one
    /// it already had, nor one of an attempt being cancelled) is charged.
    pub(crate) fn reported(
        &mut self,
        task: &AttemptRef,
        ending: Ending,
        verdict: &Verdict,
        now: Timestamp,
    ) -> Vec<Effect> {
        let holds = self.holding.as_ref().is_some_and(|h| &h.task == task);
        if !holds {
            return vec![];
        }
        let was_cancelling = self.holding.as_ref().is_some_and(|h| h.cancelling);
        self.holding = None;
        let what = match &ending {
            Ending::Completed => "completed",
            Ending::Failed(_) => "failed",
        };
        match ending {
            Ending::Completed => self.succeeded(),
            Ending::Failed(charge) if *verdict == Verdict::Applied && !was_cancelling => {
                self.charge(&task.task_id, charge, now)
            }
            Ending::Failed(_) => {}
        }
        self.settle(now, &format!("{what} {task}"));
        vec![]
    }

    /// The queue blamed `task_id` on the task: this agent's earlier
    /// failure of it no longer counts (a degradation by the breaker that
    /// no longer holds ends).
    pub(crate) fn absolve(&mut self, task_id: &str, now: Timestamp) {
        let before = self.failures.len();
        self.failures.retain(|t| t != task_id);
        if self.failures.len() == before {
            return;
        }
        if self.degraded_by == Some(DegradedBy::Breaker)
            && (self.failures.len() as u32) < self.settings.circuit_failures
        {
            self.undegrade();
        }
        self.settle(
            now,
            &format!("absolved of task {task_id}: it failed elsewhere too"),
        );
    }

    /// The sidecar refused the assignment.
    pub(crate) fn rejected(
        &mut self,
        task: &AttemptRef,
        reason: &str,
        now: Timestamp,
    ) -> Vec<Effect> {
        let holds = self
            .holding
            .as_ref()
            .is_some_and(|h| &h.task == task && h.phase == Phase::Assigned);
        if !holds {
            return vec![];
        }
        self.holding = None;
        self.note_failure(&task.task_id, now);
        self.settle(now, &format!("rejected {task}: {reason}"));
        vec![Effect::Release {
            task: task.clone(),
            reason: format!("rejected by the agent: {reason}"),
        }]
    }

    /// The sidecar on `conn` reports progress on `task` with a note of
    /// `note_len` bytes: published only if it comes on the agent's current
    /// connection about the very attempt the agent holds, with a note of at
    /// most [`MAX_PROGRESS_NOTE_BYTES`]. Nothing changes either way.
    pub(crate) fn progress(
        &self,
        conn: u64,
        task: &AttemptRef,
        note_len: usize,
    ) -> Result<(), Refusal> {
        if self.conn != Some(conn) {
            return Err(Refusal::NotHolder(
                "this is not the agent's current connection".into(),
            ));
        }
        if self.holding.as_ref().is_none_or(|h| &h.task != task) {
            return Err(Refusal::NotHolder(format!(
                "agent {} does not hold attempt {task}; progress is taken only from the agent working on it",
                self.id
            )));
        }
        if note_len > MAX_PROGRESS_NOTE_BYTES {
            return Err(Refusal::TooLarge(format!(
                "a progress note is at most {MAX_PROGRESS_NOTE_BYTES} bytes; this one has {note_len}"
            )));
        }
        Ok(())
    }

    /// The task was cancelled (by an operator): tell the sidecar to stop.
    pub(crate) fn cancel_task(&mut self, task: &AttemptRef, reason: &str) -> Vec<Effect> {
        match self.holding.as_mut() {
            Some(h) if &h.task == task => {
                h.cancelling = true;
                vec![cancel(task, reason)]
            }
            _ => vec![],
        }
    }

    /// Deadlines: heartbeat, offline grace, accept, task timeout, cooldown.
    pub(crate) fn tick(&mut self, now: Timestamp) -> Vec<Effect> {
        let mut fx = Vec::new();
        let hb_timeout = self.settings.heartbeat_timeout_ms;
        if let Some(conn) = self.conn {
            let silent = self
                .last_heartbeat
                .is_none_or(|h| h.plus_millis(hb_timeout) <= now);
            if silent {
                let reason = format!("no heartbeat for {}s", hb_timeout / 1000);
                fx.push(Effect::CloseConnection {
                    conn,
                    reason: reason.clone(),
                });
                self.conn = None;
                self.arm_offline_alert(now);
                fx.extend(self.give_up(&reason, now));
                self.settle(now, &reason);
            }
        } else if self.holding.is_some() && self.offline_deadline.is_some_and(|d| d <= now) {
            self.offline_deadline = None;
            let reason = format!("agent offline for {}s", hb_timeout / 1000);
            fx.extend(self.give_up(&reason, now));
            self.settle(now, &reason);
        }
        if self.conn.is_none() {
            if let Some((since, at)) = self.offline_alert {
                if at <= now {
                    self.offline_alert = None;
                    fx.push(Effect::Offline {
                        since,
                        offline_s: now.millis_since(since) / 1000,
                    });
                }
            }
        }
        if let Some(h) = self.holding.clone() {
            if !h.cancelling && h.phase == Phase::Working && h.activity.is_some() {
                let idle = now.0 - h.active_at.0;
                if idle >= self.settings.stall_kill_ms {
                    let reason = format!("stalled: no activity for {}s", idle / 1000);
                    fx.push(Effect::Fail {
                        task: h.task.clone(),
                        error: reason.clone(),
                        retryable: true,
                    });
                    fx.push(cancel(&h.task, &reason));
                    self.holding.as_mut().expect("holding").cancelling = true;
                    self.note_failure(&h.task.task_id, now);
                    self.settle(now, &reason);
                    return fx;
                }
                if !h.stalled && idle >= self.settings.stall_ms {
                    self.holding.as_mut().expect("holding").stalled = true;
                    fx.push(Effect::Stalled {
                        task: h.task.clone(),
                        idle_s: idle / 1000,
                    });
                    self.settle(
                        now,
                        &format!("no activity for {}s on {}", idle / 1000, h.task),
                    );
                }
            }
        }
        if let Some(h) = self.holding.clone() {
            if !h.cancelling && h.deadline.is_some_and(|d| d <= now) {
                match h.phase {
                    Phase::Assigned => {
                        let reason = format!(
                            "not accepted within {}s",
                            self.settings.accept_timeout_ms / 1000
                        );
                        fx.extend(self.give_up(&reason, now));
                        fx.push(cancel(&h.task, &reason));
                        self.settle(now, &reason);
                    }
                    Phase::Working => {
                        let reason = format!("timed out after {}s", h.timeout_s);
                        fx.push(Effect::Fail {
                            task: h.task.clone(),
                            error: reason.clone(),
                            retryable: true,
                        });
                        fx.push(cancel(&h.task, &reason));
                        self.holding.as_mut().expect("holding").cancelling = true;
                        self.note_failure(&h.task.task_id, now);
                        self.settle(now, &reason);
                    }
                }
            }
        }
        if self.degraded_until.is_some_and(|d| d <= now) {
            let over = match self.degraded_by {
                Some(DegradedBy::RateLimit) => "rate limit over",
                Some(DegradedBy::Environment) => "environment cooldown over",
                _ => "circuit cooldown over",
            };
            self.undegrade();
            self.settle(now, over);
        }
        fx
    }

    /// The agent was revoked: close its session and give back its attempt.
    pub(crate) fn revoke(&mut self, now: Timestamp) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.offline_alert = None;
        if let Some(conn) = self.conn.take() {
            fx.push(Effect::CloseConnection {
                conn,
                reason: "agent revoked".into(),
            });
        }
        if let Some(h) = self.holding.take() {
            fx.push(Effect::Release {
                task: h.task,
                reason: "agent revoked".into(),
            });
        }
        self.settle(now, "revoked");
        fx
    }

    // ----- internals ----------------------------------------------------------

    /// It went offline at `now`: alert if it stays away `offline_alert_ms`.
    /// Only a connection this hub saw end (or an attempt held across a
    /// restart) arms it, so agents that never connected since the hub
    /// started raise nothing at every start.
    fn arm_offline_alert(&mut self, now: Timestamp) {
        if self.settings.offline_alert_ms > 0 && self.offline_alert.is_none() {
            self.offline_alert = Some((now, now.plus_millis(self.settings.offline_alert_ms)));
        }
    }

    /// Give up the held attempt: release it, and count the loss as the
    /// agent's failure unless the attempt was already being cancelled.
    fn give_up(&mut self, reason: &str, now: Timestamp) -> Option<Effect> {
        let h = self.holding.take()?;
        if !h.cancelling {
            self.note_failure(&h.task.task_id, now);
        }
        Some(Effect::Release {
            task: h.task,
            reason: reason.to_string(),
        })
    }

    /// What the queue charged for a failure of `task_id`.
    fn charge(&mut self, task_id: &str, charge: Charge, now: Timestamp) {
        match charge {
            Charge::None => {}
            Charge::Failure => self.note_failure(task_id, now),
            Charge::Environment(reason) => {
                let until = now.plus_millis(self.settings.circuit_cooldown_ms);
                self.degrade(
                    until,
                    DegradedBy::Environment,
                    format!("environment: {reason}"),
                );
            }
            Charge::HoldUntil(until, reason) => {
                // A longer degradation already running stands.
                if self.degraded_until.is_none_or(|d| d < until) {
                    self.degrade(
                        until,
                        DegradedBy::RateLimit,
                        format!("rate limited: {reason}"),
                    );
                }
            }
        }
    }

    fn note_failure(&mut self, task_id: &str, now: Timestamp) {
        self.failures.push_back(task_id.to_string());
        while self.failures.len() > FAILURES_KEPT {
            self.failures.pop_front();
        }
        let n = self.failures.len() as u32;
        if n >= self.settings.circuit_failures && self.degraded_by != Some(DegradedBy::Environment)
        {
            let until = now.plus_millis(self.settings.circuit_cooldown_ms);
            self.degrade(until, DegradedBy::Breaker, format!("{n} failures in a row"));
        }
    }

    fn degrade(&mut self, until: Timestamp, by: DegradedBy, reason: String) {
        self.degraded_until = Some(until);
        self.degraded_by = Some(by);
        self.degraded_reason = Some(reason);
    }

    /// Why it is degraded, as shown: a failing self-test first, then
    /// what its breaker says.
    fn shown_degraded_reason(&self) -> Option<String> {
        match (&self.selftest_failing, &self.degraded_reason) {
            (Some(s), Some(b)) => Some(format!("{s}; also {b}")),
            (Some(s), None) => Some(s.clone()),
            (None, b) => b.clone(),
        }
    }

    /// An attempt succeeded: its failures are forgiven, and so is a
    /// degradation by the breaker.
    fn succeeded(&mut self) {
        self.failures.clear();
        if self.success_forgives_degradation() {
            self.undegrade();
        }
    }

    fn success_forgives_degradation(&self) -> bool {
        self.degraded_by == Some(DegradedBy::Breaker)
    }

    fn undegrade(&mut self) {
        self.degraded_until = None;
        self.degraded_by = None;
        self.degraded_reason = None;
    }

    /// A heartbeat's activity for the working attempt: a change is life.
    fn observe(&mut self, activity: Option<Activity>, now: Timestamp) {
        let Some(a) = activity else { return };
        let h = self.holding.as_mut().expect("holding");
        if h.activity.as_ref() == Some(&a) {
            return;
        }
        // The first report is the baseline: a runner silent from the
        // start stalls counting from its acceptance.
        if h.activity.is_some() {
            h.active_at = now;
        }
        h.activity = Some(a);
        if h.stalled {
            h.stalled = false;
            let task = h.task.clone();
            self.settle(now, &format!("activity again on {task}"));
        }
    }

    fn derive(&self, now: Timestamp) -> AgentState {
        Derived {
            conn: self.conn.is_some(),
            holding: self.holding.as_ref(),
            selftest_failing: self.selftest_failing.is_some(),
            degraded_until: self.degraded_until,
        }
        .state(now)
    }

    /// Recompute the state; record a transition if it changed.
    fn settle(&mut self, now: Timestamp, reason: &str) {
        let to = self.derive(now);
        if to == self.state {
            return;
        }
        let from = self.state;
        self.state = to;
        self.state_since = now;
        tracing::debug!(agent = %self.id, %from, %to, reason, "agent transition");
        self.transitions += 1;
        self.recent.push_back(AgentTransition {
            at: now,
            from,
            to,
            reason: reason.to_string(),
        });
        while self.recent.len() > RECENT_TRANSITIONS {
            self.recent.pop_front();
        }
    }
}

/// What an agent's state is derived from.
struct Derived<'a> {
    conn: bool,
    holding: Option<&'a Holding>,
    selftest_failing: bool,
    degraded_until: Option<Timestamp>,
}

impl Derived<'_> {
    /// The one rule of an agent's state.
    fn state(&self, now: Timestamp) -> AgentState {
        if !self.conn {
            AgentState::Offline
        } else if let Some(h) = self.holding {
            match h.phase {
                Phase::Assigned => AgentState::Assigned,
                Phase::Working if h.stalled => AgentState::Stalled,
                Phase::Working => AgentState::Working,
            }
        } else if self.selftest_failing || self.degraded_until.is_some_and(|d| d > now) {
            AgentState::Degraded
        } else {
            AgentState::Idle
        }
    }
}

/// Whether an agent in `state` wants work: the one rule of it.
fn wants_work(state: AgentState, holding: bool, paused: bool) -> bool {
    state == AgentState::Idle && !holding && !paused
}

fn cancel(task: &AttemptRef, reason: &str) -> Effect {
    Effect::Send(HubMsg::Cancel {
        task_id: task.task_id.clone(),
        generation: task.generation,
        reason: Some(reason.to_string()),
    })
}

#[cfg(test)]
mod tests;

/// Most repositories one agent's `hello` may name.
pub(crate) const MAX_AGENT_REPOS: usize = 64;

/// The repositories a sidecar names, as the hub keeps them: valid names
/// only, each once, at most [`MAX_AGENT_REPOS`] (a sidecar is not fully
/// trusted; an unknown name is harmless, no task needs its mark).
fn sane_repos(claimed: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = claimed.iter().filter(|r| valid_name(r)).collect();
    set.into_iter().take(MAX_AGENT_REPOS).cloned().collect()
}
