//! The `Scheduler` actor: decides *when* to match, and hands out the
//! matches.
//!
//! It keeps the set of idle agents (fed by AgentFsm actors as they become
//! idle or busy) and runs a dispatch on every event that can make a match
//! possible: a task became queued (`Kick` from the queue), an agent became
//! idle, and a periodic sweep. A dispatch asks the TaskQueue to `Claim`
//! tasks for the idle agents (the queue applies the matching rule and makes
//! the assignments durable), then gives each assignment to its agent's FSM,
//! which pushes `assign` over the WebSocket. An FSM that can no longer take
//! it (it went offline meanwhile) makes the scheduler release the attempt.
//!
//! Only one dispatch runs at a time; events during one mark it dirty and a
//! new one follows. The sweep also looks for stuck work: attempts the queue
//! thinks an agent holds but whose agent does not.
//!
//! It owns no durable state and never decides whether a task may run
//! (the queue does) or what an agent's state is (its FSM does).

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::Timestamp;

use crate::actors::agent::{AgentFsm, AssignTask, Holds};
use crate::actors::queue::{ActiveAttempts, Claim, PromoteDue, Release, TaskQueue};
use crate::actors::registry::{Lookup, Registry};
use crate::domain::matching::IdleAgent;

/// Something changed that may allow a match.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Kick;

/// An agent became idle (or its idle record changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentIdle {
    pub agent: IdleAgent,
    pub addr: Addr<AgentFsm>,
}

/// An agent is no longer idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentBusy {
    pub id: String,
}

pub struct Scheduler {
    queue: Addr<TaskQueue>,
    registry: Addr<Registry>,
    idle: HashMap<String, (IdleAgent, Addr<AgentFsm>)>,
    dispatching: bool,
    dirty: bool,
    sweep_interval: Duration,
    /// An attempt nobody holds is released once it is this old.
    stuck_after_ms: i64,
}

impl Scheduler {
    pub fn new(
        queue: Addr<TaskQueue>,
        registry: Addr<Registry>,
        sweep_interval: Duration,
        stuck_after_ms: i64,
    ) -> Self {
        Scheduler {
            queue,
            registry,
            idle: HashMap::new(),
            dispatching: false,
            dirty: false,
            sweep_interval,
            stuck_after_ms,
        }
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.dispatching {
            self.dirty = true;
            return;
        }
        if self.idle.is_empty() {
            return;
        }
        self.dispatching = true;
        self.dirty = false;
        let agents: Vec<IdleAgent> = self.idle.values().map(|(a, _)| a.clone()).collect();
        let claim = self.queue.send(Claim { agents });
        ctx.spawn(claim.into_actor(self).map(|res, act, ctx| {
            act.dispatching = false;
            match res {
                Ok(Ok(assignments)) => {
                    for a in assignments {
                        let Some((_, fsm)) = act.idle.remove(&a.agent_id) else {
                            // Cannot happen: claims only name agents we listed.
                            tracing::error!(agent = %a.agent_id, "claim named an agent that is not idle");
                            continue;
                        };
                        let queue = act.queue.clone();
                        let attempt_ref = agentcom_protocol::AttemptRef::new(a.task.id.clone(), a.task.generation);
                        let agent_id = a.agent_id.clone();
                        actix::spawn(async move {
                            let refused = match fsm.send(AssignTask { task: a.task }).await {
                                Ok(Ok(())) => None,
                                Ok(Err(state)) => Some(format!("agent {agent_id} became {state} before the push")),
                                Err(_) => Some(format!("agent {agent_id} is not running")),
                            };
                            if let Some(reason) = refused {
                                tracing::info!(task = %attempt_ref, %reason, "assignment not delivered; releasing");
                                queue.do_send(Release { task: attempt_ref, reason });
                            }
                        });
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "claim failed"),
                Err(e) => tracing::error!(error = %e, "queue unreachable"),
            }
            if act.dirty {
                act.dispatch(ctx);
            }
        }));
    }

    /// Release attempts the queue says an agent holds but no agent does.
    fn sweep_stuck(&mut self, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let queue = self.queue.clone();
        let stuck_after = self.stuck_after_ms;
        let active = self.queue.send(ActiveAttempts);
        ctx.spawn(
            async move {
                let Ok(active) = active.await else { return };
                let now = Timestamp::now();
                for a in active {
                    if now.millis_since(a.since) < stuck_after {
                        continue;
                    }
                    let holds = match registry.send(Lookup { id: a.agent.clone() }).await {
                        Ok(Some(fsm)) => fsm.send(Holds { task: a.task.clone() }).await.unwrap_or(false),
                        _ => false,
                    };
                    if !holds {
                        tracing::warn!(task = %a.task, agent = %a.agent, status = %a.status, "sweep: no agent holds this attempt; releasing");
                        queue.do_send(Release { task: a.task, reason: format!("sweep: agent {} does not hold it", a.agent) });
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(self.sweep_interval, |act, ctx| {
            act.queue.do_send(PromoteDue);
            act.sweep_stuck(ctx);
            act.dispatch(ctx);
        });
    }
}

impl Handler<Kick> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.dispatch(ctx);
    }
}

impl Handler<AgentIdle> for Scheduler {
    type Result = ();
    fn handle(&mut self, msg: AgentIdle, ctx: &mut Context<Self>) {
        self.idle
            .insert(msg.agent.id.clone(), (msg.agent, msg.addr));
        self.dispatch(ctx);
    }
}

impl Handler<AgentBusy> for Scheduler {
    type Result = ();
    fn handle(&mut self, msg: AgentBusy, _: &mut Context<Self>) {
        self.idle.remove(&msg.id);
    }
}
