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
//! A claim offers the idle agents longest idle first (the matching rule's
//! own order, so its sort has nothing to do), and offers every idle agent
//! only when something other than agents becoming idle may have made a
//! match possible: the queue's `Kick` (a task queued, a lane or
//! repository reopened, room under the fleet cap), the sweep (a new day's
//! token budgets), the start, a failed claim. Otherwise it offers only the
//! agents that became idle since the last claim: the agents that claim
//! left idle can take none of the tasks it left queued (matching is
//! exhaustive), so the answer is the same, and with 20,000 agents
//! connecting it is not 20,000 agents copied and sorted for each one.
//! A claim of everyone says so (`Claim::all`) and goes even when nobody is
//! idle: the queue then knows every task it holds was offered to every
//! idle agent, and may give one to an agent as its attempt completes
//! (decision 0017).
//!
//! The agents a claim leaves idle stand with the queue, which gives a
//! task queued later to one of them in the task's own group (decision
//! 0018) and sends the scheduler those assignments once durable
//! (`Given`), to hand out as a claim's. So the scheduler withdraws an
//! agent that stops being idle (`Withdraw`), and each claim says which of
//! the queue's numbered gifts it has seen, so the queue leaves out of it
//! an agent it gave a task the scheduler does not know of yet.
//!
//! It owns no durable state and never decides whether a task may run
//! (the queue does) or what an agent's state is (its state machine does).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::{AttemptRef, Timestamp};

use crate::actors::messages::{
    AgentBusy, AgentIdle, AssignTask, Claim, Given, Holds, Kick, Lookup, OutstandingAttempts,
    PromoteDue, Release, Withdraw,
};
use crate::domain::matching::IdleAgent;
use crate::domain::queue::Assignment;

/// The idle agents (each with a handle `H` to give it work), in the order
/// the matching rule prefers them, and which of them the next claim offers.
struct IdleSet<H> {
    /// By (idle since, id): longest idle first, as `matching::plan` sorts.
    order: BTreeMap<(Timestamp, String), (IdleAgent, H)>,
    /// Each idle agent's place in `order`.
    since: HashMap<String, Timestamp>,
    /// Idle since the last claim was offered.
    unseen: HashSet<String>,
    /// The next claim offers every idle agent.
    all_due: bool,
}

impl<H> IdleSet<H> {
    fn new() -> Self {
        IdleSet {
            order: BTreeMap::new(),
            since: HashMap::new(),
            unseen: HashSet::new(),
            all_due: true,
        }
    }

    fn insert(&mut self, agent: IdleAgent, handle: H) {
        self.remove(&agent.id);
        self.since.insert(agent.id.clone(), agent.idle_since);
        self.unseen.insert(agent.id.clone());
        self.order
            .insert((agent.idle_since, agent.id.clone()), (agent, handle));
    }

    fn remove(&mut self, id: &str) -> Option<H> {
        let since = self.since.remove(id)?;
        self.unseen.remove(id);
        self.order
            .remove(&(since, id.to_string()))
            .map(|(_, handle)| handle)
    }

    /// A match may have become possible for any idle agent.
    fn want_all(&mut self) {
        self.all_due = true;
    }

    /// The next claim: the agents it offers, longest idle first — all of
    /// them when due, else those not offered yet. They count as offered.
    /// `seen`: the last of the queue's gifts the scheduler has had.
    fn offer(&mut self, seen: u64) -> Claim {
        let unseen = std::mem::take(&mut self.unseen);
        if std::mem::take(&mut self.all_due) {
            return Claim {
                agents: self.order.values().map(|(a, _)| a.clone()).collect(),
                all: true,
                seen,
            };
        }
        let mut keys: Vec<(Timestamp, &String)> = unseen
            .iter()
            .filter_map(|id| self.since.get(id).map(|t| (*t, id)))
            .collect();
        keys.sort();
        let agents = keys
            .into_iter()
            .filter_map(|(t, id)| self.order.get(&(t, id.clone())).map(|(a, _)| a.clone()))
            .collect();
        Claim {
            agents,
            all: false,
            seen,
        }
    }
}

/// Who the scheduler asks and tells.
pub(crate) struct SchedulerLinks {
    pub claim: Recipient<Claim>,
    pub release: Recipient<Release>,
    pub outstanding: Recipient<OutstandingAttempts>,
    pub promote_due: Recipient<PromoteDue>,
    pub lookup: Recipient<Lookup>,
    pub withdraw: Recipient<Withdraw>,
}

pub(crate) struct SchedulerActor {
    links: SchedulerLinks,
    idle: IdleSet<Recipient<AssignTask>>,
    dispatching: bool,
    dirty: bool,
    /// The last of the queue's gifts seen (`Given::upto`).
    seen: u64,
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
            idle: IdleSet::new(),
            dispatching: false,
            dirty: false,
            seen: 0,
            sweep_interval,
            stuck_after_ms,
        }
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.dispatching {
            self.dirty = true;
            return;
        }
        let offer = self.idle.offer(self.seen);
        // A claim of everyone goes even when nobody is idle: the queue
        // learns that every task queued now was offered (to nobody), so an
        // agent whose attempt ends may take one with its completion.
        if offer.agents.is_empty() && !offer.all {
            return;
        }
        self.dispatching = true;
        self.dirty = false;
        let claim = self.links.claim.send(offer);
        ctx.spawn(claim.into_actor(self).map(|res, act, ctx| {
            act.dispatching = false;
            match res {
                Ok(Ok(assignments)) => act.deliver(assignments),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "claim failed");
                    act.idle.want_all();
                }
                Err(e) => {
                    tracing::error!(error = %e, "queue unreachable");
                    act.idle.want_all();
                }
            }
            if act.dirty {
                act.dispatch(ctx);
            }
        }));
    }

    /// Give each durable assignment (a claim's, or the queue's own) to
    /// its agent's actor, which pushes it.
    fn deliver(&mut self, assignments: Vec<Assignment>) {
        for a in assignments {
            let attempt = AttemptRef::new(a.task.id.clone(), a.task.generation);
            let release = self.links.release.clone();
            let Some(agent) = self.idle.remove(&a.agent_id) else {
                // It stopped being idle (went offline, was paused) while
                // the claim was open or the queue's group was written:
                // the task goes back now, not when the sweep finds it.
                let reason = format!(
                    "agent {} was no longer idle when its assignment was durable",
                    a.agent_id
                );
                undelivered(&release, attempt, reason);
                continue;
            };
            let agent_id = a.agent_id.clone();
            actix::spawn(async move {
                let refused = match agent.send(AssignTask { task: a.task }).await {
                    Ok(Ok(())) => None,
                    Ok(Err(state)) => Some(format!(
                        "agent {agent_id} could no longer take it before the push ({state}, or paused)"
                    )),
                    Err(_) => Some(format!("agent {agent_id} is not running")),
                };
                if let Some(reason) = refused {
                    undelivered(&release, attempt, reason);
                }
            });
        }
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

/// An assignment that did not reach its agent goes back to the queue.
fn undelivered(release: &Recipient<Release>, attempt: AttemptRef, reason: String) {
    tracing::info!(%attempt, %reason, "assignment not delivered; releasing");
    release.do_send(Release { attempt, reason });
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(self.sweep_interval, |act, ctx| {
            act.links.promote_due.do_send(PromoteDue);
            act.sweep_stuck(ctx);
            act.idle.want_all();
            act.dispatch(ctx);
        });
    }
}

impl Handler<Kick> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.idle.want_all();
        self.dispatch(ctx);
    }
}

impl Handler<AgentIdle> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: AgentIdle, ctx: &mut Context<Self>) {
        self.idle.insert(msg.agent, msg.assign);
        self.dispatch(ctx);
    }
}

impl Handler<AgentBusy> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: AgentBusy, _: &mut Context<Self>) {
        if self.idle.remove(&msg.id).is_some() {
            // It may stand with the queue.
            self.links.withdraw.do_send(Withdraw { id: msg.id });
        }
    }
}

impl Handler<Given> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: Given, _: &mut Context<Self>) {
        self.seen = self.seen.max(msg.upto);
        self.deliver(msg.assignments);
    }
}

#[cfg(test)]
mod tests {
    use super::{IdleSet, SchedulerActor, SchedulerLinks};
    use crate::actors::messages::{
        AgentBusy, AgentHandle, AgentIdle, AssignTask, Claim, CommandError, Lookup,
        OutstandingAttempts, PromoteDue, Release, Withdraw,
    };
    use crate::domain::matching::IdleAgent;
    use crate::domain::queue::{Assignment, Outstanding, QueueCore, QueueSettings, Verdict};
    use actix::prelude::*;
    use agentcom_protocol::{NewTask, Timestamp};
    use std::time::Duration;
    use tokio::sync::{mpsc, oneshot};

    /// The queue (and registry) the scheduler talks to: it holds a claim's
    /// answer until the test gives it, and reports releases.
    struct FakeQueue {
        claimed: Option<oneshot::Sender<Claim>>,
        answer: Option<oneshot::Receiver<Vec<Assignment>>>,
        released: mpsc::UnboundedSender<Release>,
    }

    impl Actor for FakeQueue {
        type Context = Context<Self>;
    }

    impl Handler<Claim> for FakeQueue {
        type Result = ResponseFuture<Result<Vec<Assignment>, CommandError>>;
        fn handle(&mut self, claim: Claim, _: &mut Context<Self>) -> Self::Result {
            if let Some(c) = self.claimed.take() {
                let _ = c.send(claim);
            }
            let answer = self.answer.take();
            Box::pin(async move {
                match answer {
                    Some(rx) => Ok(rx.await.unwrap_or_default()),
                    None => Ok(vec![]),
                }
            })
        }
    }

    impl Handler<Release> for FakeQueue {
        type Result = Result<Verdict, CommandError>;
        fn handle(&mut self, msg: Release, _: &mut Context<Self>) -> Self::Result {
            let _ = self.released.send(msg);
            Err(CommandError::Unavailable("a fake".into()))
        }
    }

    impl Handler<OutstandingAttempts> for FakeQueue {
        type Result = Vec<Outstanding>;
        fn handle(&mut self, _: OutstandingAttempts, _: &mut Context<Self>) -> Self::Result {
            vec![]
        }
    }

    impl Handler<PromoteDue> for FakeQueue {
        type Result = ();
        fn handle(&mut self, _: PromoteDue, _: &mut Context<Self>) {}
    }

    impl Handler<Withdraw> for FakeQueue {
        type Result = ();
        fn handle(&mut self, _: Withdraw, _: &mut Context<Self>) {}
    }

    impl Handler<Lookup> for FakeQueue {
        type Result = Option<AgentHandle>;
        fn handle(&mut self, _: Lookup, _: &mut Context<Self>) -> Self::Result {
            None
        }
    }

    /// An agent's actor that counts the assignments pushed to it.
    struct FakeAgent(mpsc::UnboundedSender<AssignTask>);

    impl Actor for FakeAgent {
        type Context = Context<Self>;
    }

    impl Handler<AssignTask> for FakeAgent {
        type Result = Result<(), agentcom_protocol::AgentState>;
        fn handle(&mut self, msg: AssignTask, _: &mut Context<Self>) -> Self::Result {
            let _ = self.0.send(msg);
            Ok(())
        }
    }

    /// A scheduler that asks `queue` (and sweeps only after an hour).
    fn scheduler_of(queue: &Addr<FakeQueue>) -> Addr<SchedulerActor> {
        SchedulerActor::new(
            SchedulerLinks {
                claim: queue.clone().recipient(),
                release: queue.clone().recipient(),
                outstanding: queue.clone().recipient(),
                promote_due: queue.clone().recipient(),
                lookup: queue.clone().recipient(),
                withdraw: queue.clone().recipient(),
            },
            Duration::from_secs(3600),
            60_000,
        )
        .start()
    }

    #[actix_rt::test]
    async fn an_agent_no_longer_idle_when_its_claim_answers_has_the_task_released_at_once() {
        let (claimed_tx, claimed) = oneshot::channel();
        let (answer, answer_rx) = oneshot::channel();
        let (released_tx, mut released) = mpsc::unbounded_channel();
        let queue = FakeQueue {
            claimed: Some(claimed_tx),
            answer: Some(answer_rx),
            released: released_tx,
        }
        .start();
        let scheduler = scheduler_of(&queue);
        let (pushed_tx, mut pushed) = mpsc::unbounded_channel();
        let agent = FakeAgent(pushed_tx).start();

        scheduler
            .send(AgentIdle {
                agent: IdleAgent::new("a1", &[], 0),
                assign: agent.recipient(),
            })
            .await
            .unwrap();
        claimed.await.expect("the scheduler claimed for a1");
        // While the claim is open, a1 stops being idle (it went offline).
        scheduler.send(AgentBusy { id: "a1".into() }).await.unwrap();
        // The queue assigns it a task all the same.
        let mut q = QueueCore::new(QueueSettings::default());
        q.create(
            NewTask {
                title: "t".into(),
                ..Default::default()
            },
            Timestamp(1),
        )
        .unwrap();
        let assignments = q.claim(&[IdleAgent::new("a1", &[], 0)], Timestamp(2));
        let task = assignments[0].task.clone();
        answer.send(assignments).unwrap();

        let release = tokio::time::timeout(Duration::from_secs(10), released.recv())
            .await
            .expect("the task is released at once, not at the sweep")
            .unwrap();
        assert_eq!(release.attempt.task_id, task.id);
        assert_eq!(release.attempt.generation, task.generation);
        assert!(
            release.reason.contains("no longer idle"),
            "{}",
            release.reason
        );
        assert!(pushed.try_recv().is_err(), "nothing was pushed to a1");
    }

    #[actix_rt::test]
    async fn a_kick_claims_for_everyone_even_when_nobody_is_idle() {
        let (claimed_tx, claimed) = oneshot::channel();
        let (released_tx, _released) = mpsc::unbounded_channel();
        let queue = FakeQueue {
            claimed: Some(claimed_tx),
            answer: None,
            released: released_tx,
        }
        .start();
        let scheduler = scheduler_of(&queue);
        scheduler.send(crate::actors::messages::Kick).await.unwrap();
        let claim = tokio::time::timeout(Duration::from_secs(10), claimed)
            .await
            .expect("a claim although no agent is idle")
            .unwrap();
        assert!(claim.all && claim.agents.is_empty());
    }

    fn ids(agents: &[IdleAgent]) -> Vec<&str> {
        agents.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn a_claim_offers_everyone_only_when_due_and_longest_idle_first() {
        let mut set = IdleSet::new();
        set.insert(IdleAgent::new("b", &[], 20), ());
        set.insert(IdleAgent::new("a", &[], 30), ());
        set.insert(IdleAgent::new("c", &[], 10), ());
        let first = set.offer(0);
        assert_eq!(ids(&first.agents), ["c", "b", "a"], "at the start: all");
        assert!(first.all, "and the claim says so");
        assert!(
            set.offer(0).agents.is_empty(),
            "nothing new: nothing to offer"
        );
        set.insert(IdleAgent::new("d", &[], 5), ());
        let newly = set.offer(0);
        assert_eq!(ids(&newly.agents), ["d"], "only the newly idle");
        assert!(!newly.all);
        set.want_all();
        let everyone = set.offer(0);
        assert_eq!(ids(&everyone.agents), ["d", "c", "b", "a"]);
        assert!(everyone.all);
    }

    #[test]
    fn an_agent_idle_again_is_offered_again_and_a_busy_one_not_at_all() {
        let mut set = IdleSet::new();
        set.insert(IdleAgent::new("a", &["rust"], 10), ());
        set.insert(IdleAgent::new("b", &[], 20), ());
        set.offer(0);
        // Idle again (its capabilities may have changed): offered again,
        // in its new place.
        set.insert(IdleAgent::new("a", &["python"], 30), ());
        set.insert(IdleAgent::new("c", &[], 40), ());
        assert!(set.remove("c").is_some());
        assert!(set.remove("c").is_none());
        let offered = set.offer(0).agents;
        assert_eq!(ids(&offered), ["a"]);
        assert!(offered[0].capabilities.contains("python"));
        set.want_all();
        assert_eq!(
            ids(&set.offer(0).agents),
            ["b", "a"],
            "one entry each, by idle time"
        );
    }
}
