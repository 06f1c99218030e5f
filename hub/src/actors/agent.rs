//! The `AgentActor`: one per known agent, a thin shell around
//! [`AgentMachine`].
//!
//! It turns messages (a connection opening, its hello, heartbeats and reports, the
//! scheduler's assignments, an operator's cancel or pause, its own deadline
//! timer)
//! into machine events, carries out the effects (frames to its connection,
//! releases and failures to the queue, connections to close), and after
//! each event publishes the agent to the [`AgentView`], the event bus (on a
//! transition) and the scheduler (idle or busy).
//!
//! Reports that need the queue's verdict (`accept`, `complete`, `fail`)
//! are handled atomically: the actor handles nothing else until the queue
//! has made the report durable and answered, so the sidecar's messages are
//! applied strictly in the order it sent them, and `ack` follows only
//! durable state. A completion that its machine says leaves the agent free
//! carries the agent to the queue, which may answer with its next task,
//! assigned in the same durable step: the `ack`, then the `assign`.
//!
//! It knows every connection of its agent from the moment it opens
//! (`Attach`, before any hello), so revoking the agent or stopping the hub
//! closes them all. A `progress` note is published only when the machine
//! accepts it (holder, size); otherwise the sidecar gets an `error` frame.
//!
//! It runs under an actix `Supervisor` (a stopped actor is restarted with
//! its state); the registry also replaces one whose mailbox died. It never
//! writes the store and never decides a task's fate: the queue does.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::{
    AckOf, AgentInfo, AgentState, AgentTransition, AttemptRef, HubMsg, SidecarMsg, SidecarState,
    Timestamp,
};
use serde_json::json;

use crate::actors::messages::{
    Absolve, AgentBusy, AgentHandle, AgentIdle, AssignTask, Attach, CancelAttempt, CloseConn,
    ConnId, ConnLink, Connect, Disconnect, FromSidecar, Holds, Push, Release, Report, ReportKind,
    ReportSource, Reported, Revoke, SaveBreaker, SetPaused, Shutdown,
};
use crate::alerts::AlertBus;
use crate::domain::alert::AlertKind;
use crate::domain::fsm::{AgentMachine, Breaker, Effect, Ending, RECENT_TRANSITIONS};
use crate::domain::matching::IdleAgent;
use crate::domain::queue::FailReport;
use crate::domain::rate::MessageLimit;
use crate::domain::retry::Retryable;
use crate::events::EventBus;
use crate::views::AgentView;

/// An `agent` event: the agent as the API shows it (its recent
/// transitions apart) and the transition that made it so.
#[derive(serde::Serialize)]
struct AgentEvent<'a> {
    agent: &'a AgentInfo,
    transition: Option<&'a AgentTransition>,
}

/// What every agent actor needs from the rest of the hub.
pub struct AgentLinks {
    pub report: Recipient<Report>,
    pub release: Recipient<Release>,
    pub idle: Recipient<AgentIdle>,
    pub busy: Recipient<AgentBusy>,
    /// Its failure record changed: keep it.
    pub save_breaker: Recipient<SaveBreaker>,
    pub view: Arc<AgentView>,
    pub events: Arc<EventBus>,
    pub(crate) alerts: Arc<AlertBus>,
    pub heartbeat_interval_s: u64,
    pub heartbeat_timeout_s: u64,
    /// Each agent's message limit (`limits.agent_messages_*`).
    pub messages_per_s: u32,
    pub messages_burst: u32,
}

/// Make the actor panic (tests of supervision only).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Crash;

#[cfg(test)]
impl Handler<Crash> for AgentActor {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("crash requested by a test");
    }
}

pub(crate) struct AgentActor {
    machine: AgentMachine,
    links: Arc<AgentLinks>,
    conns: HashMap<ConnId, ConnLink>,
    timer: Option<SpawnHandle>,
    /// The state and paused flag last published on the event bus.
    published: Option<(AgentState, bool)>,
    /// How many of the machine's transitions the view has.
    published_transitions: u64,
    idle_announced: bool,
    retired: bool,
    /// The failure record as last sent to be kept.
    saved_breaker: Breaker,
}

impl AgentActor {
    pub(crate) fn new(machine: AgentMachine, links: Arc<AgentLinks>) -> Self {
        let machine_breaker = machine.breaker();
        AgentActor {
            machine,
            links,
            conns: HashMap::new(),
            timer: None,
            published: None,
            published_transitions: 0,
            idle_announced: false,
            retired: false,
            saved_breaker: machine_breaker,
        }
    }

    /// What others may send to the actor at `addr`; its connections draw
    /// on `limit`.
    pub(crate) fn handle_of(
        addr: &Addr<AgentActor>,
        limit: Arc<Mutex<MessageLimit>>,
    ) -> AgentHandle {
        AgentHandle {
            attach: addr.clone().recipient(),
            connect: addr.clone().recipient(),
            disconnect: addr.clone().recipient(),
            from_sidecar: addr.clone().recipient(),
            holds: addr.clone().recipient(),
            limit,
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
        let breaker = self.machine.breaker();
        if breaker != self.saved_breaker {
            self.links.save_breaker.do_send(SaveBreaker {
                agent: self.id(),
                breaker: breaker.clone(),
            });
            self.saved_breaker = breaker;
        }
        self.publish(ctx);
        self.rearm(ctx);
    }

    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Send(msg) => self.send(msg),
            Effect::Release { task, reason } => self.links.release.do_send(Release {
                attempt: task,
                reason,
            }),
            Effect::Fail {
                task,
                error,
                retryable,
            } => self.links.report.do_send(Report {
                agent: self.id(),
                attempt: task,
                kind: ReportKind::Fail(FailReport {
                    retryable: Retryable::from(retryable),
                    ..FailReport::by_hub(&error)
                }),
                source: ReportSource::Hub,
                next: None,
            }),
            Effect::Stalled { task, idle_s } => self.links.alerts.raise(
                AlertKind::TaskStalled,
                &task.task_id,
                &format!(
                    "agent {} shows no activity on task {} (generation {}) for {idle_s}s",
                    self.machine.id(),
                    task.task_id,
                    task.generation
                ),
                Timestamp::now(),
            ),
            Effect::Offline { since, offline_s } => self.links.alerts.raise(
                AlertKind::AgentOffline,
                self.machine.id(),
                &format!(
                    "agent {} has been offline for {offline_s}s (since {since})",
                    self.machine.id()
                ),
                Timestamp::now(),
            ),
            Effect::CloseConnection { conn, reason } => {
                if let Some(link) = self.conns.remove(&conn) {
                    link.close.do_send(CloseConn { reason });
                }
            }
            Effect::Refuse {
                conn,
                code,
                message,
            } => {
                if let Some(link) = self.conns.remove(&conn) {
                    link.push.do_send(Push(HubMsg::error(code, message)));
                    link.close.do_send(CloseConn {
                        reason: code.to_string(),
                    });
                }
            }
        }
    }

    fn send(&self, msg: HubMsg) {
        if let Some(link) = self.machine.conn().and_then(|c| self.conns.get(&c)) {
            link.push.do_send(Push(msg));
        }
    }

    fn publish(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        let info = self.machine.info();
        let shown = (info.state, info.paused);
        let changed = self.published != Some(shown);
        if changed {
            self.published = Some(shown);
            let transition = self.machine.recent().last();
            self.links.events.publish(
                "agent",
                &AgentEvent {
                    agent: &info,
                    transition,
                },
            );
        }
        self.links.view.publish(info);
        // The transitions the view has not seen yet.
        let made = self.machine.transitions();
        let new = (made - self.published_transitions).min(RECENT_TRANSITIONS as u64) as usize;
        if new > 0 {
            let recent = self.machine.recent();
            let seen = recent.len() - new;
            let unseen: Vec<AgentTransition> = recent.skip(seen).cloned().collect();
            self.links
                .view
                .push_recent(self.machine.id(), &unseen, RECENT_TRANSITIONS);
            self.published_transitions = made;
        }
        let idle = self.machine.wants_work();
        if idle && !self.idle_announced {
            self.links.idle.do_send(AgentIdle {
                agent: self.matchable(),
                assign: ctx.address().recipient(),
            });
        } else if !idle && self.idle_announced {
            self.links.busy.do_send(AgentBusy { id: self.id() });
        }
        self.idle_announced = idle;
    }

    /// The agent as matching sees it (for the scheduler, or the queue
    /// giving it its next task).
    fn matchable(&self) -> IdleAgent {
        IdleAgent {
            id: self.id(),
            capabilities: self.machine.matchable(),
            idle_since: self.machine.state_since(),
            context_window_tokens: self.machine.context_window_tokens(),
        }
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

    /// A revoked agent takes no connection: close it; true if it did.
    fn turned_away(&self, link: &ConnLink) -> bool {
        if self.retired {
            link.close.do_send(CloseConn {
                reason: "agent revoked".into(),
            });
        }
        self.retired
    }

    fn is_current_conn(&self, conn: ConnId) -> bool {
        self.machine.conn() == Some(conn)
    }

    fn close_all(&mut self, reason: &str) {
        for (_, link) in self.conns.drain() {
            link.close.do_send(CloseConn {
                reason: reason.into(),
            });
        }
    }

    /// Ask the queue about a report; apply its verdict when durable.
    fn report(
        &mut self,
        attempt: AttemptRef,
        kind: ReportKind,
        of: AckOf,
    ) -> AtomicResponse<Self, ()> {
        // A completion that leaves the agent free asks for its next task,
        // given in the completion's own durable step.
        let free =
            of == AckOf::Complete && self.machine.free_once_completed(&attempt, Timestamp::now());
        let fut = self.links.report.send(Report {
            agent: self.id(),
            attempt: attempt.clone(),
            kind,
            source: ReportSource::Sidecar,
            next: free.then(|| self.matchable()),
        });
        AtomicResponse::new(Box::pin(fut.into_actor(self).then(move |res, act, _| {
            let Reported { judged, next } = match res {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(agent = %act.id(), %attempt, error = %e, "report not recorded; the sidecar will resend it");
                    return actix::fut::ready(()).boxed_local();
                }
                Err(e) => {
                    tracing::error!(agent = %act.id(), %attempt, error = %e, "queue unreachable");
                    return actix::fut::ready(()).boxed_local();
                }
            };
            let now = Timestamp::now();
            // Answer the report first (ack), then whatever follows from it.
            // A counted accept needs no ack: the attempt going on says it.
            let mut fx = Vec::new();
            let verdict = judged.verdict;
            let counted = !matches!(verdict, crate::domain::queue::Verdict::Stale(_));
            if of != AckOf::Accept || !counted {
                fx.push(Effect::Send(HubMsg::Ack { task_id: attempt.task_id.clone(), generation: attempt.generation, of }));
            }
            fx.extend(match of {
                AckOf::Accept => act.machine.accepted(&attempt, &verdict, now),
                AckOf::Complete => act.machine.reported(&attempt, Ending::Completed, &verdict, now),
                AckOf::Fail => act.machine.reported(&attempt, Ending::Failed(judged.charge), &verdict, now),
            });
            if let Some(task) = next {
                let given = AttemptRef::new(task.id.clone(), task.generation);
                match act.machine.assign(&task, now) {
                    Ok(push) => fx.extend(push),
                    // It stopped being free while the report was made
                    // durable (its sidecar went, say): the task goes back now.
                    Err(e) => fx.push(Effect::Release {
                        task: given,
                        reason: format!("agent {} could no longer take its next task ({})", act.id(), e.0),
                    }),
                }
            }
            // A changed failure record is durable before the ack goes out
            // (and before anyone sees the new state).
            let breaker = act.machine.breaker();
            if breaker == act.saved_breaker {
                return actix::fut::ready(()).into_actor(act).map(move |_, act, ctx| act.after(ctx, fx)).boxed_local();
            }
            act.saved_breaker = breaker.clone();
            let save = act.links.save_breaker.send(SaveBreaker { agent: act.id(), breaker });
            save.into_actor(act)
                .map(move |res, act, ctx| {
                    match res {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(agent = %act.id(), error = %e, "failure record not kept"),
                        Err(e) => tracing::error!(agent = %act.id(), error = %e, "registry unreachable; failure record not kept"),
                    }
                    act.after(ctx, fx);
                })
                .boxed_local()
        })))
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.publish(ctx);
        self.rearm(ctx);
    }
}

impl Supervised for AgentActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(agent = %self.id(), "agent actor restarting");
        self.timer = None;
        self.published = None;
        self.idle_announced = false;
    }
}

impl Handler<Attach> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
        if !self.turned_away(&msg.link) {
            self.conns.insert(msg.conn, msg.link);
        }
    }
}

impl Handler<Connect> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        if self.turned_away(&msg.link) {
            return;
        }
        let link = msg.link.clone();
        self.conns.insert(msg.conn, msg.link);
        tracing::info!(agent = %self.id(), conn = msg.conn,
            current = %msg.hello.current_task.as_ref().map_or("none".to_string(), |a| a.to_string()),
            pending = msg.hello.pending_results.len(),
            instance = msg.hello.instance_id.as_deref().unwrap_or("none"),
            selftest = match &msg.hello.selftest { None => "not said", Some(s) if s.ok => "passes", Some(_) => "fails" },
            "sidecar hello");
        let claimed: BTreeSet<&String> = msg.hello.capabilities.iter().collect();
        let registered: BTreeSet<&String> = self.machine.capabilities().iter().collect();
        let differ = (claimed != registered).then(|| (joined(claimed), joined(registered)));
        let fx = self.machine.connect(msg.conn, msg.hello, Timestamp::now());
        if self.machine.conn() == Some(msg.conn) {
            // Accepted: welcome first, then whatever the hello called for.
            link.push.do_send(Push(HubMsg::Welcome {
                protocol_version: agentcom_protocol::PROTOCOL_VERSION,
                heartbeat_interval_s: self.links.heartbeat_interval_s,
                heartbeat_timeout_s: Some(self.links.heartbeat_timeout_s),
                hub_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            }));
            if let Some((claimed, registered)) = differ {
                tracing::warn!(agent = %self.id(), sidecar = %claimed, registered = %registered,
                    "the sidecar's capabilities differ from the agent's registered ones; scheduling uses the registered ones");
            }
        }
        self.after(ctx, fx);
    }
}

impl Handler<Disconnect> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        self.conns.remove(&msg.conn);
        let fx = self.machine.disconnect(msg.conn, Timestamp::now());
        self.after(ctx, fx);
    }
}

impl Handler<FromSidecar> for AgentActor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: FromSidecar, ctx: &mut Context<Self>) -> Self::Result {
        let done = || AtomicResponse::new(Box::pin(actix::fut::ready(())));
        if !self.is_current_conn(msg.conn) {
            // A message from a replaced connection that was still in flight.
            return done();
        }
        let now = Timestamp::now();
        match msg.msg {
            SidecarMsg::Heartbeat {
                state,
                task_id,
                generation,
                activity,
                selftest,
            } => {
                let attempt = match (state, task_id, generation) {
                    (SidecarState::Working, Some(id), Some(g)) => Some(AttemptRef::new(id, g)),
                    _ => None,
                };
                let fx = self
                    .machine
                    .heartbeat(state, attempt, activity, selftest.as_ref(), now);
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
                class,
                retry_after_s,
                log_tail,
            } => self.report(
                AttemptRef::new(task_id, generation),
                ReportKind::Fail(FailReport {
                    error,
                    retryable: Retryable::from(retryable),
                    class,
                    retry_after_s,
                    log_tail,
                }),
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
                let attempt = AttemptRef::new(task_id, generation);
                match self.machine.progress(msg.conn, &attempt, note.len()) {
                    Ok(()) => {
                        self.links.events.publish(
                            "progress",
                            json!({ "agent_id": self.id(), "task_id": attempt.task_id, "generation": attempt.generation, "note": note }),
                        );
                    }
                    Err(refusal) => {
                        tracing::debug!(agent = %self.id(), %attempt, code = refusal.code(), "progress refused");
                        self.send(HubMsg::error(refusal.code(), refusal.message()));
                    }
                }
                done()
            }
            SidecarMsg::Hello { .. } => done(), // the connection handles hello
        }
    }
}

impl Handler<AssignTask> for AgentActor {
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

impl Handler<SetPaused> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: SetPaused, ctx: &mut Context<Self>) {
        if self.machine.set_paused(msg.paused) {
            tracing::info!(agent = %self.id(), paused = msg.paused, "agent paused or resumed by an operator");
        }
        self.after(ctx, vec![]);
    }
}

impl Handler<CancelAttempt> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: CancelAttempt, ctx: &mut Context<Self>) {
        let fx = self.machine.cancel_task(&msg.attempt, &msg.reason);
        self.after(ctx, fx);
    }
}

impl Handler<Absolve> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Absolve, ctx: &mut Context<Self>) {
        self.machine.absolve(&msg.task_id, Timestamp::now());
        self.after(ctx, vec![]);
    }
}

impl Handler<Holds> for AgentActor {
    type Result = bool;
    fn handle(&mut self, msg: Holds, _: &mut Context<Self>) -> bool {
        self.machine
            .holding()
            .is_some_and(|h| h.task == msg.attempt)
    }
}

impl Handler<Revoke> for AgentActor {
    type Result = ();
    fn handle(&mut self, _: Revoke, ctx: &mut Context<Self>) {
        let fx = self.machine.revoke(Timestamp::now());
        for e in fx {
            self.carry_out(e);
        }
        self.close_all("agent revoked");
        self.retired = true;
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        self.links.busy.do_send(AgentBusy { id: self.id() });
        self.links.view.remove(self.machine.id());
        self.links.events.publish(
            "agent",
            json!({ "agent": self.machine.info(), "removed": true }),
        );
    }
}

impl Handler<Shutdown> for AgentActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.close_all("hub shutting down");
    }
}

/// A set of names as words: comma-joined, or `none`.
fn joined(names: BTreeSet<&String>) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
