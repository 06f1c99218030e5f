//! The `SchedulerActor`: decides *when* to match, and hands out the
//! matches.
//!
//! It keeps the set of idle agents (fed by agent actors as they become
//! idle or busy) and runs a dispatch on every event that can make a match
//! possible: a task became queued (`Kick` from the queue), an agent became
//! idle, and a periodic sweep. A dispatch asks the queue to `Claim` tasks
//! for the idle agents (the queue applies the matching rule and makes the
//! assignments durable), then gives each assignment to its agent's actor,
//! which pushes `assign` over the WebSocket. An agent that can no longer
//! take it (it went offline meanwhile) makes the scheduler release the
//! attempt.
//!
//! Only one dispatch runs at a time; events during one mark it dirty and a
//! new one follows. The sweep also looks for stuck work: attempts the queue
//! thinks an agent holds but whose agent does not.
//!
//! It owns no durable state and never decides whether a task may run
//! (the queue does) or what an agent's state is (its state machine does).

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::{AttemptRef, Timestamp};

use crate::actors::messages::{
    AgentBusy, AgentIdle, AssignTask, Claim, Holds, Kick, Lookup, OutstandingAttempts, PromoteDue,
    Release,
};
use crate::domain::matching::IdleAgent;

/// Who the scheduler asks and tells.
pub(crate) struct SchedulerLinks {
    pub claim: Recipient<Claim>,
    pub release: Recipient<Release>,
    pub outstanding: Recipient<OutstandingAttempts>,
    pub promote_due: Recipient<PromoteDue>,
    pub lookup: Recipient<Lookup>,
}

pub(crate) struct SchedulerActor {
    links: SchedulerLinks,
    idle: HashMap<String, (IdleAgent, Recipient<AssignTask>)>,
    dispatching: bool,
    dirty: bool,
    sweep_interval: Duration,
    /// An attempt nobody holds is released once it is this old.
    stuck_after_ms: i64,
}

impl SchedulerActor {
    pub(crate) fn new(
        links: SchedulerLinks,
        sweep_interval: Duration,
        stuck_after_ms: i64,
    ) -> Self {
        SchedulerActor {
            links,
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
        let claim = self.links.claim.send(Claim { agents });
        ctx.spawn(claim.into_actor(self).map(|res, act, ctx| {
            act.dispatching = false;
            match res {
                Ok(Ok(assignments)) => {
                    for a in assignments {
                        let Some((_, agent)) = act.idle.remove(&a.agent_id) else {
                            // Cannot happen: claims only name agents we listed.
                            tracing::error!(agent = %a.agent_id, "claim named an agent that is not idle");
                            continue;
                        };
                        let release = act.links.release.clone();
                        let attempt = AttemptRef::new(a.task.id.clone(), a.task.generation);
                        let agent_id = a.agent_id.clone();
                        actix::spawn(async move {
                            let refused = match agent.send(AssignTask { task: a.task }).await {
                                Ok(Ok(())) => None,
                                Ok(Err(state)) => Some(format!("agent {agent_id} could no longer take it before the push ({state}, or paused)")),
                                Err(_) => Some(format!("agent {agent_id} is not running")),
                            };
                            if let Some(reason) = refused {
                                tracing::info!(%attempt, %reason, "assignment not delivered; releasing");
                                release.do_send(Release { attempt, reason });
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
        let lookup = self.links.lookup.clone();
        let release = self.links.release.clone();
        let stuck_after = self.stuck_after_ms;
        let outstanding = self
            .links
            .outstanding
            .send(OutstandingAttempts { agent: None });
        ctx.spawn(
            async move {
                let Ok(outstanding) = outstanding.await else { return };
                let now = Timestamp::now();
                for o in outstanding {
                    if now.millis_since(o.since) < stuck_after {
                        continue;
                    }
                    let holds = match lookup.send(Lookup { id: o.agent.clone() }).await {
                        Ok(Some(agent)) => agent
                            .holds
                            .send(Holds { attempt: o.attempt.clone() })
                            .await
                            .unwrap_or(false),
                        _ => false,
                    };
                    if !holds {
                        tracing::warn!(attempt = %o.attempt, agent = %o.agent, status = %o.status, "sweep: no agent holds this attempt; releasing");
                        release.do_send(Release {
                            attempt: o.attempt,
                            reason: format!("sweep: agent {} does not hold it", o.agent),
                        });
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(self.sweep_interval, |act, ctx| {
            act.links.promote_due.do_send(PromoteDue);
            act.sweep_stuck(ctx);
            act.dispatch(ctx);
        });
    }
}

impl Handler<Kick> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.dispatch(ctx);
    }
}

impl Handler<AgentIdle> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: AgentIdle, ctx: &mut Context<Self>) {
        self.idle
            .insert(msg.agent.id.clone(), (msg.agent, msg.assign));
        self.dispatch(ctx);
    }
}

impl Handler<AgentBusy> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: AgentBusy, _: &mut Context<Self>) {
        self.idle.remove(&msg.id);
    }
}
