//! The `TaskQueue` actor: the only writer of tasks.
//!
//! It wraps a [`QueueCore`] (the rules) and the [`Store`] (durability) with
//! a group commit: a command mutates the core at once (so the next command
//! sees it), its changes join the pending group, and its reply waits until
//! that group is written and synced on a blocking thread. While one group
//! syncs, the next one collects; so concurrent writers share a flush.
//! Every reply — a verdict that changed nothing included — is sent only
//! after everything staged before it is durable, so nothing the hub says
//! or does (a 201, an `ack`, an `assign`) runs ahead of the disk.
//!
//! After each sync it publishes the durable changes: to the [`TaskView`]
//! the API reads, the event bus, the stats, and the scheduler (a `Kick`
//! when a task became queued). A store write that fails is fatal: memory
//! and disk no longer agree, so the hub exits and recovers from the store.
//!
//! It never waits on another actor (it only `do_send`s), so no cycle of
//! waiting can form through it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::{AttemptRef, NewTask, Task, TaskEvent, TaskResult, TaskStatus, Timestamp};
use serde_json::json;
use tokio::sync::oneshot;

use crate::actors::registry::StopAttempt;
use crate::actors::scheduler::Kick;
use crate::domain::matching::IdleAgent;
use crate::domain::queue::{Assignment, Change, Created, QueueCore, QueueError, Verdict};
use crate::events::EventBus;
use crate::stats::Stats;
use crate::store::Store;
use crate::views::TaskView;

/// Why a queue command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueFailure {
    #[error("no task {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the store failed: {0}")]
    Store(String),
}

impl From<QueueError> for QueueFailure {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::NotFound(id) => QueueFailure::NotFound(id),
            QueueError::Conflict(m) => QueueFailure::Conflict(m),
        }
    }
}

type Durable = oneshot::Receiver<Result<(), String>>;

// ----- messages ------------------------------------------------------------------

/// Create a task; the bool is true when it is new (false: idempotent repeat).
#[derive(Message)]
#[rtype(result = "Result<(Task, bool), QueueFailure>")]
pub struct CreateTask(pub NewTask);

#[derive(Message)]
#[rtype(result = "Result<Task, QueueFailure>")]
pub struct CancelTask {
    pub id: String,
    pub reason: String,
}

#[derive(Message)]
#[rtype(result = "Result<Task, QueueFailure>")]
pub struct RetryTask {
    pub id: String,
}

/// Assign queued tasks to these idle agents.
#[derive(Message)]
#[rtype(result = "Result<Vec<Assignment>, QueueFailure>")]
pub struct Claim {
    pub agents: Vec<IdleAgent>,
}

#[derive(Debug, Clone)]
pub enum ReportKind {
    Accept,
    Complete(TaskResult),
    Fail { error: String, retryable: bool },
}

/// A report about an attempt, from its agent (or the hub on its behalf).
#[derive(Message)]
#[rtype(result = "Result<Verdict, QueueFailure>")]
pub struct Report {
    pub agent: String,
    pub task: AttemptRef,
    pub kind: ReportKind,
    /// Sent by the sidecar (counts towards stale messages when stale).
    pub from_sidecar: bool,
}

/// Take an attempt back from its agent.
#[derive(Message)]
#[rtype(result = "Result<Verdict, QueueFailure>")]
pub struct Release {
    pub task: AttemptRef,
    pub reason: String,
}

/// The attempts agents hold, for the stuck-work sweep.
#[derive(Message)]
#[rtype(result = "Vec<ActiveAttempt>")]
pub struct ActiveAttempts;

#[derive(Debug, Clone)]
pub struct ActiveAttempt {
    pub task: AttemptRef,
    pub agent: String,
    pub status: TaskStatus,
    pub since: Timestamp,
}

/// Queue failed tasks whose backoff has ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PromoteDue;

/// Who the queue tells about its changes (set once at start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wire {
    pub scheduler: Recipient<Kick>,
    pub registry: Recipient<StopAttempt>,
}

// ----- the actor -------------------------------------------------------------------

#[derive(Default)]
struct Group {
    changes: Vec<Change>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

pub struct TaskQueue {
    core: QueueCore,
    store: Store,
    view: Arc<TaskView>,
    events: Arc<EventBus>,
    stats: Arc<Stats>,
    wire: Option<Wire>,
    pending: Group,
    syncing: bool,
    promotion: Option<(Timestamp, SpawnHandle)>,
}

impl TaskQueue {
    /// `core` must have been restored from `store`; the view is filled here.
    pub fn new(
        core: QueueCore,
        store: Store,
        view: Arc<TaskView>,
        events: Arc<EventBus>,
        stats: Arc<Stats>,
    ) -> Self {
        TaskQueue {
            core,
            store,
            view,
            events,
            stats,
            wire: None,
            pending: Group::default(),
            syncing: false,
            promotion: None,
        }
    }

    /// Stage the core's changes; the receiver resolves once they (and
    /// everything staged before them) are durable.
    fn commit(&mut self, ctx: &mut Context<Self>) -> Durable {
        let changes = self.core.take_changes();
        let (tx, rx) = oneshot::channel();
        if changes.is_empty() && !self.syncing && self.pending.waiters.is_empty() {
            let _ = tx.send(Ok(()));
            return rx;
        }
        self.pending.changes.extend(changes);
        self.pending.waiters.push(tx);
        self.sync_next(ctx);
        rx
    }

    fn sync_next(&mut self, ctx: &mut Context<Self>) {
        if self.syncing || self.pending.waiters.is_empty() {
            return;
        }
        self.syncing = true;
        let group = std::mem::take(&mut self.pending);
        let store = self.store.clone();
        let Group { changes, waiters } = group;
        let work = actix_rt::task::spawn_blocking(move || {
            let res = if changes.is_empty() {
                Ok(())
            } else {
                store.write_changes(&changes).and_then(|_| store.sync())
            };
            (res, changes)
        });
        ctx.spawn(work.into_actor(self).map(move |joined, act, ctx| {
            act.syncing = false;
            match joined {
                Ok((Ok(()), changes)) => {
                    if !changes.is_empty() {
                        act.stats.store_syncs.inc();
                        act.stats.store_writes.inc_by(changes.len() as u64);
                    }
                    act.publish(&changes);
                    for w in waiters {
                        let _ = w.send(Ok(()));
                    }
                    act.schedule_promotion(ctx);
                    act.sync_next(ctx);
                }
                Ok((Err(e), _)) => fatal(&e.to_string(), waiters),
                Err(e) => fatal(&format!("sync thread failed: {e}"), waiters),
            }
        }));
    }

    /// Tell the world about durable changes.
    fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.view.apply_changes(changes);
        let mut kick = false;
        for c in changes {
            let t = &c.task;
            for (_, h) in &c.new_history {
                tracing::info!(
                    task = %t.id, event = %h.event,
                    from = h.from.map(|s| s.as_str()).unwrap_or("-"),
                    to = h.to.map(|s| s.as_str()).unwrap_or("-"),
                    agent = h.agent_id.as_deref().unwrap_or("-"),
                    generation = h.generation,
                    detail = h.detail.as_deref().unwrap_or(""),
                    "task transition"
                );
                match h.event {
                    TaskEvent::Created => {
                        self.stats.tasks_created.inc();
                    }
                    TaskEvent::Assigned => self
                        .stats
                        .assignment_latency(h.at.millis_since(t.queued_at.unwrap_or(t.created_at))),
                    TaskEvent::Completed => self
                        .stats
                        .completed(h.at, t.started_at.map(|s| h.at.millis_since(s))),
                    TaskEvent::Failed => {
                        self.stats.attempt_failures.inc();
                    }
                    TaskEvent::Dead => {
                        self.stats.attempt_failures.inc();
                        self.stats.tasks_dead.inc();
                    }
                    TaskEvent::Requeued => {
                        self.stats.retries.inc();
                    }
                    TaskEvent::Accepted
                    | TaskEvent::Cancelled
                    | TaskEvent::Revived
                    | TaskEvent::Released
                    | TaskEvent::StaleReport => {}
                }
                let mut summary = serde_json::to_value(t).expect("task serialises");
                if let Some(obj) = summary.as_object_mut() {
                    obj.remove("description");
                }
                self.events
                    .publish("task", json!({ "task": summary, "transition": h }));
            }
            kick |= t.status == TaskStatus::Queued;
        }
        if kick {
            if let Some(w) = &self.wire {
                w.scheduler.do_send(Kick);
            }
        }
    }

    /// Keep one timer armed for the earliest backoff end.
    fn schedule_promotion(&mut self, ctx: &mut Context<Self>) {
        let next = self.core.next_due();
        if let Some((at, handle)) = self.promotion {
            if Some(at) == next {
                return;
            }
            ctx.cancel_future(handle);
            self.promotion = None;
        }
        if let Some(at) = next {
            let wait = at.millis_since(Timestamp::now()).max(0) as u64;
            let handle = ctx.run_later(Duration::from_millis(wait), |act, ctx| {
                act.promotion = None;
                act.promote(ctx);
            });
            self.promotion = Some((at, handle));
        }
    }

    fn promote(&mut self, ctx: &mut Context<Self>) {
        if self.core.promote_due(Timestamp::now()) > 0 {
            // Nobody waits on a promotion; the commit still makes it durable.
            drop(self.commit(ctx));
        }
        self.schedule_promotion(ctx);
    }
}

/// The store could not make a change durable: memory is now ahead of the
/// disk, so stop and let the supervisor (systemd, pm2) restart the hub,
/// which recovers from what is durable.
fn fatal(message: &str, waiters: Vec<oneshot::Sender<Result<(), String>>>) {
    tracing::error!(
        error = message,
        "store write failed; exiting so the hub restarts from the durable state"
    );
    for w in waiters {
        let _ = w.send(Err(message.to_string()));
    }
    std::process::exit(70);
}

impl Actor for TaskQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        self.schedule_promotion(ctx);
    }
}

/// Await durability, then produce the reply.
fn after_durable<T: 'static>(
    durable: Durable,
    reply: Result<T, QueueFailure>,
) -> ResponseFuture<Result<T, QueueFailure>> {
    Box::pin(async move {
        durably(durable).await?;
        reply
    })
}

/// Wait until a commit is durable.
async fn durably(durable: Durable) -> Result<(), QueueFailure> {
    match durable.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(QueueFailure::Store(e)),
        Err(_) => Err(QueueFailure::Store("the queue stopped".into())),
    }
}

impl Handler<Wire> for TaskQueue {
    type Result = ();
    fn handle(&mut self, msg: Wire, ctx: &mut Context<Self>) {
        self.wire = Some(msg);
        if self.core.queued_len() > 0 {
            if let Some(w) = &self.wire {
                w.scheduler.do_send(Kick);
            }
        }
        self.promote(ctx);
    }
}

impl Handler<CreateTask> for TaskQueue {
    type Result = ResponseFuture<Result<(Task, bool), QueueFailure>>;
    fn handle(&mut self, msg: CreateTask, ctx: &mut Context<Self>) -> Self::Result {
        let out = match self.core.create(msg.0, Timestamp::now()) {
            Created::New(t) => (t, true),
            Created::Existing(t) => (t, false),
        };
        after_durable(self.commit(ctx), Ok(out))
    }
}

impl Handler<CancelTask> for TaskQueue {
    type Result = ResponseFuture<Result<Task, QueueFailure>>;
    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> Self::Result {
        let res = self.core.cancel(&msg.id, &msg.reason, Timestamp::now());
        let durable = self.commit(ctx);
        let registry = self.wire.as_ref().map(|w| w.registry.clone());
        Box::pin(async move {
            durably(durable).await?;
            let c = res?;
            if let (Some((agent, task)), Some(registry)) = (c.stop.clone(), registry) {
                registry.do_send(StopAttempt {
                    agent,
                    task,
                    reason: msg.reason,
                });
            }
            Ok(c.task)
        })
    }
}

impl Handler<RetryTask> for TaskQueue {
    type Result = ResponseFuture<Result<Task, QueueFailure>>;
    fn handle(&mut self, msg: RetryTask, ctx: &mut Context<Self>) -> Self::Result {
        let res = self
            .core
            .retry(&msg.id, Timestamp::now())
            .map_err(QueueFailure::from);
        after_durable(self.commit(ctx), res)
    }
}

impl Handler<Claim> for TaskQueue {
    type Result = ResponseFuture<Result<Vec<Assignment>, QueueFailure>>;
    fn handle(&mut self, msg: Claim, ctx: &mut Context<Self>) -> Self::Result {
        let got = self.core.claim(&msg.agents, Timestamp::now());
        after_durable(self.commit(ctx), Ok(got))
    }
}

impl Handler<Report> for TaskQueue {
    type Result = ResponseFuture<Result<Verdict, QueueFailure>>;
    fn handle(&mut self, msg: Report, ctx: &mut Context<Self>) -> Self::Result {
        let now = Timestamp::now();
        let verdict = match msg.kind {
            ReportKind::Accept => self.core.accept(&msg.task, &msg.agent, now),
            ReportKind::Complete(result) => self.core.complete(&msg.task, &msg.agent, result, now),
            ReportKind::Fail { error, retryable } => self
                .core
                .fail(&msg.task, &msg.agent, &error, retryable, now),
        };
        if let Verdict::Stale(why) = &verdict {
            if msg.from_sidecar {
                self.stats.stale();
            }
            tracing::warn!(task = %msg.task, agent = %msg.agent, why = %why, "stale report");
        }
        after_durable(self.commit(ctx), Ok(verdict))
    }
}

impl Handler<Release> for TaskQueue {
    type Result = ResponseFuture<Result<Verdict, QueueFailure>>;
    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) -> Self::Result {
        let verdict = self.core.release(&msg.task, &msg.reason, Timestamp::now());
        after_durable(self.commit(ctx), Ok(verdict))
    }
}

impl Handler<ActiveAttempts> for TaskQueue {
    type Result = MessageResult<ActiveAttempts>;
    fn handle(&mut self, _: ActiveAttempts, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.core
                .active()
                .map(|t| ActiveAttempt {
                    task: AttemptRef::new(t.id.clone(), t.generation),
                    agent: t.assigned_to.clone().unwrap_or_default(),
                    status: t.status,
                    since: t.updated_at,
                })
                .collect(),
        )
    }
}

impl Handler<PromoteDue> for TaskQueue {
    type Result = ();
    fn handle(&mut self, _: PromoteDue, ctx: &mut Context<Self>) {
        self.promote(ctx);
    }
}
