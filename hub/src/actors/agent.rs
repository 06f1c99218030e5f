//! The `AgentFsm` actor: one per known agent, a thin shell around
//! [`AgentMachine`].
//!
//! It turns messages (a session's hello, heartbeats and reports, the
//! scheduler's assignments, an operator's cancel, its own deadline timer)
//! into machine events, carries out the effects (frames to its session,
//! releases and failures to the TaskQueue, sessions to close), and after
//! each event publishes the agent to the [`AgentView`], the event bus (on a
//! transition) and the scheduler (idle or busy).
//!
//! Reports that need the queue's verdict (`accept`, `complete`, `fail`)
//! are handled atomically: the actor handles nothing else until the queue
//! has made the report durable and answered, so the sidecar's messages are
//! applied strictly in the order it sent them, and `ack` follows only
//! durable state.
//!
//! It runs under an actix `Supervisor` (a stopped FSM is restarted with its
//! state); the Registry also replaces one whose mailbox died. It never
//! writes the store and never decides a task's fate: the queue does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::{
    AckOf, AgentState, AttemptRef, HubMsg, SidecarMsg, SidecarState, Task, Timestamp,
};
use serde_json::json;

use crate::actors::queue::{Release, Report, ReportKind, TaskQueue};
use crate::actors::scheduler::{AgentBusy, AgentIdle, Scheduler};
use crate::actors::session::{CloseConn, Push, WsSession};
use crate::domain::fsm::{AgentMachine, Effect, HelloFacts};
use crate::domain::matching::IdleAgent;
use crate::domain::queue::Verdict;
use crate::events::EventBus;
use crate::views::AgentView;

/// What every AgentFsm needs from the rest of the hub.
pub struct AgentDeps {
    pub queue: Addr<TaskQueue>,
    pub scheduler: Addr<Scheduler>,
    pub view: Arc<AgentView>,
    pub events: Arc<EventBus>,
    pub heartbeat_interval_s: u64,
    pub heartbeat_timeout_s: u64,
}

// ----- messages ------------------------------------------------------------------

/// A session said `hello`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub session: u64,
    pub addr: Addr<WsSession>,
    pub hello: HelloFacts,
}

/// A session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: u64,
}

/// Any message a session received after `hello`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromSidecar {
    pub session: u64,
    pub msg: SidecarMsg,
}

/// The scheduler gives the agent an attempt; Err carries the state that
/// prevented it.
#[derive(Message)]
#[rtype(result = "Result<(), AgentState>")]
pub struct AssignTask {
    pub task: Task,
}

/// The attempt was cancelled; tell the sidecar to stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelAttempt {
    pub task: AttemptRef,
    pub reason: String,
}

/// Does the agent hold this attempt?
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Holds {
    pub task: AttemptRef,
}

/// The agent was revoked: close, release, stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Revoke;

/// Make the actor panic (tests of supervision only).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(test)]
impl Handler<Crash> for AgentFsm {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("crash requested by a test");
    }
}

/// Close the session (hub shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

// ----- the actor --------------------------------------------------------------------

pub struct AgentFsm {
    machine: AgentMachine,
    deps: Arc<AgentDeps>,
    sessions: HashMap<u64, Addr<WsSession>>,
    timer: Option<SpawnHandle>,
    published: Option<AgentState>,
    idle_announced: bool,
    retired: bool,
}

impl AgentFsm {
    pub fn new(machine: AgentMachine, deps: Arc<AgentDeps>) -> Self {
        AgentFsm {
            machine,
            deps,
            sessions: HashMap::new(),
            timer: None,
            published: None,
            idle_announced: false,
            retired: false,
        }
    }

    fn id(&self) -> String {
        self.machine.id().to_string()
    }

    /// Carry out effects, publish, re-arm the deadline timer.
    fn after(&mut self, ctx: &mut Context<Self>, effects: Vec<Effect>) {
        for e in effects {
            self.carry_out(e);
        }
        self.publish(ctx);
        self.rearm(ctx);
    }

    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Send(msg) => self.send(msg),
            Effect::Release { task, reason } => self.deps.queue.do_send(Release { task, reason }),
            Effect::Fail {
                task,
                error,
                retryable,
            } => self.deps.queue.do_send(Report {
                agent: self.id(),
                task,
                kind: ReportKind::Fail { error, retryable },
                from_sidecar: false,
            }),
            Effect::CloseSession { session, reason } => {
                if let Some(addr) = self.sessions.remove(&session) {
                    addr.do_send(CloseConn { reason });
                }
            }
        }
    }

    fn send(&self, msg: HubMsg) {
        if let Some(addr) = self.machine.session().and_then(|s| self.sessions.get(&s)) {
            addr.do_send(Push(msg));
        }
    }

    fn publish(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        let info = self.machine.info();
        let state = info.state;
        self.deps.view.publish(info.clone());
        if self.published != Some(state) {
            self.published = Some(state);
            let transition = self.machine.recent().last().cloned();
            self.deps
                .events
                .publish("agent", json!({ "agent": info, "transition": transition }));
        }
        let idle = state == AgentState::Idle;
        if idle && !self.idle_announced {
            self.deps.scheduler.do_send(AgentIdle {
                agent: IdleAgent {
                    id: self.id(),
                    capabilities: self.machine.capabilities().iter().cloned().collect(),
                    idle_since: self.machine.state_since(),
                },
                addr: ctx.address(),
            });
        } else if !idle && self.idle_announced {
            self.deps.scheduler.do_send(AgentBusy { id: self.id() });
        }
        self.idle_announced = idle;
    }

    fn rearm(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        if let Some(at) = self.machine.next_deadline() {
            let wait = at.millis_since(Timestamp::now()).max(0) as u64 + 1;
            self.timer = Some(ctx.run_later(Duration::from_millis(wait), |act, ctx| {
                act.timer = None;
                let fx = act.machine.tick(Timestamp::now());
                act.after(ctx, fx);
            }));
        }
    }

    fn is_current_session(&self, session: u64) -> bool {
        self.machine.session() == Some(session)
    }

    /// Ask the queue about a report; apply its verdict when durable.
    fn report(
        &mut self,
        task: AttemptRef,
        kind: ReportKind,
        of: AckOf,
    ) -> AtomicResponse<Self, ()> {
        let fut = self.deps.queue.send(Report {
            agent: self.id(),
            task: task.clone(),
            kind,
            from_sidecar: true,
        });
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            let verdict = match res {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::error!(agent = %act.id(), task = %task, error = %e, "report not recorded; the sidecar will resend it");
                    return;
                }
                Err(e) => {
                    tracing::error!(agent = %act.id(), task = %task, error = %e, "queue unreachable");
                    return;
                }
            };
            let now = Timestamp::now();
            let counted = matches!(verdict, Verdict::Applied | Verdict::Duplicate);
            // Answer the report first (ack), then whatever follows from it.
            let mut fx = Vec::new();
            if of != AckOf::Accept || !counted {
                fx.push(Effect::Send(HubMsg::Ack { task_id: task.task_id.clone(), generation: task.generation, of }));
            }
            fx.extend(match of {
                AckOf::Accept => act.machine.accepted(&task, counted, now),
                AckOf::Complete => act.machine.reported(&task, true, verdict == Verdict::Applied, now),
                AckOf::Fail => act.machine.reported(&task, false, verdict == Verdict::Applied, now),
            });
            act.after(ctx, fx);
        })))
    }
}

impl Actor for AgentFsm {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.publish(ctx);
        self.rearm(ctx);
    }
}

impl Supervised for AgentFsm {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(agent = %self.id(), "agent FSM restarting");
        self.timer = None;
        self.published = None;
        self.idle_announced = false;
    }
}

impl Handler<Connect> for AgentFsm {
    type Result = ();
    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        if self.retired {
            msg.addr.do_send(CloseConn {
                reason: "agent revoked".into(),
            });
            return;
        }
        self.sessions.insert(msg.session, msg.addr.clone());
        msg.addr.do_send(Push(HubMsg::Welcome {
            protocol_version: agentcom_protocol::PROTOCOL_VERSION,
            heartbeat_interval_s: self.deps.heartbeat_interval_s,
            heartbeat_timeout_s: Some(self.deps.heartbeat_timeout_s),
            hub_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        }));
        tracing::info!(agent = %self.id(), session = msg.session, current = ?msg.hello.current_task, pending = msg.hello.pending_results.len(), "sidecar hello");
        let claimed: BTreeSet<&String> = msg.hello.capabilities.iter().collect();
        let registered: BTreeSet<&String> = self.machine.capabilities().iter().collect();
        if claimed != registered {
            tracing::warn!(agent = %self.id(), sidecar = ?claimed, registered = ?registered,
                "the sidecar's capabilities differ from the agent's registered ones; scheduling uses the registered ones");
        }
        let fx = self
            .machine
            .connect(msg.session, msg.hello, Timestamp::now());
        self.after(ctx, fx);
    }
}

impl Handler<Disconnect> for AgentFsm {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        self.sessions.remove(&msg.session);
        let fx = self.machine.disconnect(msg.session, Timestamp::now());
        self.after(ctx, fx);
    }
}

impl Handler<FromSidecar> for AgentFsm {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: FromSidecar, ctx: &mut Context<Self>) -> Self::Result {
        let done = || AtomicResponse::new(Box::pin(actix::fut::ready(())));
        if !self.is_current_session(msg.session) {
            // A message from a replaced session that was still in flight.
            return done();
        }
        let now = Timestamp::now();
        match msg.msg {
            SidecarMsg::Heartbeat {
                state,
                task_id,
                generation,
            } => {
                let task = match (state, task_id, generation) {
                    (SidecarState::Working, Some(id), Some(g)) => Some(AttemptRef::new(id, g)),
                    _ => None,
                };
                let fx = self.machine.heartbeat(state, task, now);
                self.after(ctx, fx);
                done()
            }
            SidecarMsg::Accept {
                task_id,
                generation,
            } => self.report(
                AttemptRef::new(task_id, generation),
                ReportKind::Accept,
                AckOf::Accept,
            ),
            SidecarMsg::Complete {
                task_id,
                generation,
                result,
            } => self.report(
                AttemptRef::new(task_id, generation),
                ReportKind::Complete(result),
                AckOf::Complete,
            ),
            SidecarMsg::Fail {
                task_id,
                generation,
                error,
                retryable,
            } => self.report(
                AttemptRef::new(task_id, generation),
                ReportKind::Fail { error, retryable },
                AckOf::Fail,
            ),
            SidecarMsg::Reject {
                task_id,
                generation,
                reason,
            } => {
                let fx = self
                    .machine
                    .rejected(&AttemptRef::new(task_id, generation), &reason, now);
                self.after(ctx, fx);
                done()
            }
            SidecarMsg::Progress {
                task_id,
                generation,
                note,
            } => {
                self.deps.events.publish(
                    "progress",
                    json!({ "agent_id": self.id(), "task_id": task_id, "generation": generation, "note": note }),
                );
                done()
            }
            SidecarMsg::Hello { .. } => done(), // the session handles hello
        }
    }
}

impl Handler<AssignTask> for AgentFsm {
    type Result = Result<(), AgentState>;
    fn handle(&mut self, msg: AssignTask, ctx: &mut Context<Self>) -> Self::Result {
        if self.retired {
            return Err(AgentState::Offline);
        }
        match self.machine.assign(&msg.task, Timestamp::now()) {
            Ok(fx) => {
                self.after(ctx, fx);
                Ok(())
            }
            // Not idle: the scheduler already learnt that (AgentBusy).
            Err(e) => Err(e.0),
        }
    }
}

impl Handler<CancelAttempt> for AgentFsm {
    type Result = ();
    fn handle(&mut self, msg: CancelAttempt, ctx: &mut Context<Self>) {
        let fx = self.machine.cancel_task(&msg.task, &msg.reason);
        self.after(ctx, fx);
    }
}

impl Handler<Holds> for AgentFsm {
    type Result = bool;
    fn handle(&mut self, msg: Holds, _: &mut Context<Self>) -> bool {
        self.machine.holding().is_some_and(|h| h.task == msg.task)
    }
}

impl Handler<Revoke> for AgentFsm {
    type Result = ();
    fn handle(&mut self, _: Revoke, ctx: &mut Context<Self>) {
        let fx = self.machine.revoke(Timestamp::now());
        for e in fx {
            self.carry_out(e);
        }
        for (_, addr) in self.sessions.drain() {
            addr.do_send(CloseConn {
                reason: "agent revoked".into(),
            });
        }
        self.retired = true;
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        self.deps.scheduler.do_send(AgentBusy { id: self.id() });
        self.deps.view.remove(self.machine.id());
        self.deps.events.publish(
            "agent",
            json!({ "agent": self.machine.info(), "removed": true }),
        );
    }
}

impl Handler<Shutdown> for AgentFsm {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        for (_, addr) in self.sessions.drain() {
            addr.do_send(CloseConn {
                reason: "hub shutting down".into(),
            });
        }
    }
}
