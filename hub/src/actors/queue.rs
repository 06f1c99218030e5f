//! The `QueueActor`: the only writer of tasks.
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
//! It never waits on another actor (it only `do_send`s to the recipients
//! it was built with), so every chain of waits in the hub ends here.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::{Task, TaskEvent, TaskStatus, Timestamp};
use serde_json::json;
use tokio::sync::oneshot;

use crate::actors::messages::{
    CancelTask, Claim, CommandError, CreateTask, Kick, OutstandingAttempts, PromoteDue, Release,
    Report, ReportKind, ReportSource, RetryTask, StopAttempt,
};
use crate::domain::queue::{Assignment, Created, QueueCore, QueueError, TaskDelta, Verdict};
use crate::events::EventBus;
use crate::stats::Stats;
use crate::store::{Purge, Store};
use crate::views::TaskView;

type Durable = oneshot::Receiver<Result<(), String>>;

/// Who the queue tells about its changes.
pub struct QueueLinks {
    /// A task became queued: the scheduler may have a match.
    pub kick: Recipient<Kick>,
    /// An operator cancelled an attempt an agent holds.
    pub stop_attempt: Recipient<StopAttempt>,
}

// ----- the actor -------------------------------------------------------------------

#[derive(Default)]
struct Group {
    changes: Vec<TaskDelta>,
    purge: Option<Purge>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.purge.is_none() && self.waiters.is_empty()
    }
}

/// Most finished tasks one retention pass deletes.
const PURGE_BATCH: usize = 10_000;

/// How long finished tasks are kept, and how often retention runs.
pub struct Retention {
    pub finished_ms: i64,
    pub every: Duration,
}

pub struct QueueActor {
    core: QueueCore,
    store: Store,
    view: Arc<TaskView>,
    events: Arc<EventBus>,
    stats: Arc<Stats>,
    links: QueueLinks,
    retention: Retention,
    pending: Group,
    syncing: bool,
    promotion: Option<(Timestamp, SpawnHandle)>,
}

impl QueueActor {
    /// `core` must have been restored from `store`, and `view` filled from it.
    pub fn new(
        core: QueueCore,
        store: Store,
        view: Arc<TaskView>,
        events: Arc<EventBus>,
        stats: Arc<Stats>,
        links: QueueLinks,
        retention: Retention,
    ) -> Self {
        QueueActor {
            core,
            store,
            view,
            events,
            stats,
            links,
            retention,
            pending: Group::default(),
            syncing: false,
            promotion: None,
        }
    }

    /// Stage the core's changes; the receiver resolves once they (and
    /// everything staged before them) are durable.
    fn commit(&mut self, ctx: &mut Context<Self>) -> Durable {
        let changes = self.core.take_deltas();
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
        if self.syncing || self.pending.is_empty() {
            return;
        }
        self.syncing = true;
        let Group {
            changes,
            purge,
            waiters,
        } = std::mem::take(&mut self.pending);
        self.view.begin(&changes);
        let store = self.store.clone();
        let work = actix_rt::task::spawn_blocking(move || {
            let res = if changes.is_empty() && purge.is_none() {
                Ok(vec![])
            } else {
                store
                    .write_tasks(&changes, purge.as_ref())
                    .and_then(|purged| store.sync().map(|_| purged))
            };
            (res, changes)
        });
        ctx.spawn(work.into_actor(self).map(move |joined, act, ctx| {
            act.syncing = false;
            match joined {
                Ok((Ok(purged), changes)) => {
                    if !changes.is_empty() || !purged.is_empty() {
                        act.stats.store_syncs.inc();
                        act.stats.store_writes.inc_by(changes.len() as u64);
                    }
                    act.publish(&changes);
                    let now = Timestamp::now();
                    act.core.durable(&changes, now);
                    if !purged.is_empty() {
                        act.view.purged(&purged);
                        let ids: Vec<String> = purged.iter().map(|p| p.id.clone()).collect();
                        act.core.purged(&ids);
                        tracing::info!(tasks = ids.len(), "retention deleted finished tasks");
                        if ids.len() >= PURGE_BATCH {
                            act.purge(ctx); // more are due
                        }
                    }
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
    fn publish(&self, changes: &[TaskDelta]) {
        if changes.is_empty() {
            return;
        }
        self.view.apply_deltas(changes);
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
                    | TaskEvent::InReview
                    | TaskEvent::SentBack
                    | TaskEvent::Rejected
                    | TaskEvent::Cancelled
                    | TaskEvent::Revived
                    | TaskEvent::Released
                    | TaskEvent::StaleReport => {}
                }
                let mut summary = serde_json::to_value(t).expect("task serialises");
                if let Some(obj) = summary.as_object_mut() {
                    obj.remove("description");
                    obj.remove("metadata");
                }
                self.events
                    .publish("task", json!({ "task": summary, "transition": h }));
            }
            kick |= t.status == TaskStatus::Queued;
        }
        if kick {
            self.links.kick.do_send(Kick);
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

    /// Stage a retention pass: finished tasks older than the retention
    /// window, except those the core still holds, go with the next group.
    fn purge(&mut self, ctx: &mut Context<Self>) {
        let before = Timestamp::now().plus_millis(-self.retention.finished_ms);
        self.pending.purge = Some(Purge {
            before,
            keep: self.core.held_ids(),
            max: PURGE_BATCH,
        });
        self.sync_next(ctx);
    }

    /// Load a task the core no longer holds whole, then run `op`; a task
    /// the store does not have either is not found.
    fn with_whole<T: 'static>(
        &mut self,
        id: String,
        op: impl FnOnce(&mut Self, &mut Context<Self>) -> ResponseFuture<Result<T, CommandError>>
            + 'static,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<T, CommandError>> {
        if !self.core.needs_load(&id) {
            return Box::pin(op(self, ctx).into_actor(self));
        }
        let store = self.store.clone();
        let lookup = id.clone();
        let load = actix_rt::task::spawn_blocking(move || store.task(&lookup));
        Box::pin(load.into_actor(self).then(move |loaded, act, ctx| {
            let fut: ResponseFuture<Result<T, CommandError>> = match loaded {
                Ok(Ok(Some(t))) => {
                    act.core.adopt(t.task, t.history_len);
                    op(act, ctx)
                }
                Ok(Ok(None)) => {
                    Box::pin(async move { Err(CommandError::Refused(QueueError::NotFound(id))) })
                }
                Ok(Err(e)) => {
                    let e = e.to_string();
                    Box::pin(async move { Err(CommandError::Unavailable(e)) })
                }
                Err(e) => {
                    let e = e.to_string();
                    Box::pin(async move { Err(CommandError::Unavailable(e)) })
                }
            };
            fut.into_actor(act)
        }))
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

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        if self.core.queued_len() > 0 {
            self.links.kick.do_send(Kick);
        }
        // Backoffs that ended while the hub was down are due now.
        self.promote(ctx);
        self.purge(ctx);
        ctx.run_interval(self.retention.every, |act, ctx| act.purge(ctx));
    }
}

/// Await durability, then produce the reply.
fn after_durable<T: 'static>(
    durable: Durable,
    reply: Result<T, CommandError>,
) -> ResponseFuture<Result<T, CommandError>> {
    Box::pin(async move {
        durably(durable).await?;
        reply
    })
}

/// Wait until a commit is durable.
async fn durably(durable: Durable) -> Result<(), CommandError> {
    match durable.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CommandError::Unavailable(e)),
        Err(_) => Err(CommandError::Unavailable("the queue stopped".into())),
    }
}

impl Handler<CreateTask> for QueueActor {
    type Result = ResponseFuture<Result<Created, CommandError>>;
    fn handle(&mut self, msg: CreateTask, ctx: &mut Context<Self>) -> Self::Result {
        let created = self
            .core
            .create(msg.0, Timestamp::now())
            .map_err(CommandError::from);
        after_durable(self.commit(ctx), created)
    }
}

impl Handler<CancelTask> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Task, CommandError>>;
    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.id.clone();
        self.with_whole(
            id,
            move |act, ctx| {
                let res = act.core.cancel(&msg.id, &msg.reason, Timestamp::now());
                let durable = act.commit(ctx);
                let stop_attempt = act.links.stop_attempt.clone();
                Box::pin(async move {
                    durably(durable).await?;
                    let c = res?;
                    if let Some((agent, attempt)) = c.stop.clone() {
                        stop_attempt.do_send(StopAttempt {
                            agent,
                            attempt,
                            reason: msg.reason,
                        });
                    }
                    Ok(c.task)
                })
            },
            ctx,
        )
    }
}

impl Handler<RetryTask> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Task, CommandError>>;
    fn handle(&mut self, msg: RetryTask, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.id.clone();
        self.with_whole(
            id,
            move |act, ctx| {
                let res = act
                    .core
                    .retry(&msg.id, Timestamp::now())
                    .map_err(CommandError::from);
                after_durable(act.commit(ctx), res)
            },
            ctx,
        )
    }
}

impl Handler<Claim> for QueueActor {
    type Result = ResponseFuture<Result<Vec<Assignment>, CommandError>>;
    fn handle(&mut self, msg: Claim, ctx: &mut Context<Self>) -> Self::Result {
        let got = self.core.claim(&msg.agents, Timestamp::now());
        after_durable(self.commit(ctx), Ok(got))
    }
}

impl Handler<Report> for QueueActor {
    type Result = ResponseFuture<Result<Verdict, CommandError>>;
    fn handle(&mut self, msg: Report, ctx: &mut Context<Self>) -> Self::Result {
        let now = Timestamp::now();
        let verdict = match msg.kind {
            ReportKind::Accept => self.core.accept(&msg.attempt, &msg.agent, now),
            ReportKind::Complete(result) => {
                self.core.complete(&msg.attempt, &msg.agent, result, now)
            }
            ReportKind::Fail { error, retryable } => {
                self.core
                    .fail(&msg.attempt, &msg.agent, &error, retryable, now)
            }
        };
        if let Verdict::Stale(why) = &verdict {
            if msg.source == ReportSource::Sidecar {
                self.stats.stale();
            }
            tracing::warn!(attempt = %msg.attempt, agent = %msg.agent, why = %why, "stale report");
        }
        after_durable(self.commit(ctx), Ok(verdict))
    }
}

impl Handler<Release> for QueueActor {
    type Result = ResponseFuture<Result<Verdict, CommandError>>;
    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) -> Self::Result {
        let verdict = self
            .core
            .release(&msg.attempt, &msg.reason, Timestamp::now());
        after_durable(self.commit(ctx), Ok(verdict))
    }
}

impl Handler<OutstandingAttempts> for QueueActor {
    type Result = MessageResult<OutstandingAttempts>;
    fn handle(&mut self, msg: OutstandingAttempts, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.outstanding(msg.agent.as_deref()))
    }
}

impl Handler<PromoteDue> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: PromoteDue, ctx: &mut Context<Self>) {
        self.promote(ctx);
    }
}
