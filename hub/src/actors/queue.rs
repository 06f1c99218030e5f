//! The `QueueActor`: the only writer of tasks and changes.
//!
//! It wraps a [`QueueCore`] and a [`ChangeCore`] (the rules, moved together
//! by the [`Pipeline`]) and the [`Store`] (durability) with
//! a group commit: a command mutates the core at once (so the next command
//! sees it), its changes join the pending group, and its reply waits until
//! that group is written and synced on a blocking thread. While one group
//! syncs, the next one collects; so concurrent writers share a flush.
//! Every reply — a verdict that changed nothing included — is sent only
//! after everything staged before it is durable, so nothing the hub says
//! or does (a 201, an `ack`, an `assign`) runs ahead of the disk.
//!
//! After each sync it publishes the durable changes: to the [`TaskView`]
//! and [`ChangeView`] the API reads, the event bus and the stats; and it
//! carries out the pipeline's effects of that group (measure a change,
//! wake a merge queue, raise an alert, `task_dead` for a task that went
//! dead) — never before they are durable. It also answers the repository
//! actors (the next change to merge, its outcome). The scheduler hears of
//! a task that became queued (a `Kick`) when it is staged, not when it is
//! durable: a claim's assignments join a later group, and groups finish in
//! order, so an `assign` still never runs ahead of its task. An operator's
//! paused lanes are written with a group (a meta key) like a red main. A
//! store write that fails is fatal: memory and disk no longer agree, so
//! the hub exits and recovers from the store.
//!
//! It never waits on another actor (it only `do_send`s to the recipients
//! it was built with), so every chain of waits in the hub ends here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use agentcom_protocol::{ChangeStatus, Priority, Task, TaskEvent, TaskStatus, Timestamp};
use serde_json::json;
use tokio::sync::oneshot;

use std::collections::BTreeMap;

use crate::actors::messages::{
    AbsolveFailures, ApproveChange, CancelTask, Claim, CommandError, CreateTask, CreateTasks,
    ExplainFacts, Given, Inspect, Inspected, Kick, MainChecked, MainHealth, MainSeen, MergeDone,
    MergeJob, MergeKick, MergeOutcome, NextMerge, OutstandingAttempts, PauseLane, PromoteDue,
    RejectChange, Release, Report, ReportKind, ReportSource, Reported, RetryTask, StopAttempt,
    Withdraw,
};
use crate::alerts::AlertBus;
use crate::domain::alert;
use crate::domain::changes::{ChangeCore, ChangeDelta};
use crate::domain::pipeline::{Effect, MergeResult, Pipeline};
use crate::domain::queue::{
    Assignment, Created, Judged, QueueCore, QueueError, TaskDelta, Verdict,
};
use crate::domain::repo::RepoConfig;
use crate::events::EventBus;
use crate::stats::Stats;
use crate::store::{Purge, Store};
use crate::views::{ChangeView, RepoView, TaskView};

type Durable = oneshot::Receiver<Result<(), String>>;

/// Who the queue tells about its changes.
pub(crate) struct QueueLinks {
    /// A task became queued: the scheduler may have a match.
    pub kick: Recipient<Kick>,
    /// Tasks given to standing agents, durable: the scheduler delivers
    /// them.
    pub given: Recipient<Given>,
    /// An operator cancelled an attempt an agent holds.
    pub stop_attempt: Recipient<StopAttempt>,
    /// A failure blamed on the task absolves the agents that failed it
    /// before.
    pub absolve: Recipient<AbsolveFailures>,
    /// Each repository's actor, by repository name.
    pub(crate) repos: BTreeMap<String, RepoLink>,
}

/// What the queue sends a repository actor.
#[derive(Clone)]
pub(crate) struct RepoLink {
    pub(crate) inspect: Recipient<Inspect>,
    pub(crate) kick: Recipient<MergeKick>,
}

/// The views and buses the queue publishes to.
pub(crate) struct QueueViews {
    pub(crate) tasks: Arc<TaskView>,
    pub(crate) changes: Arc<ChangeView>,
    pub(crate) repos: Arc<RepoView>,
    pub(crate) events: Arc<EventBus>,
    pub(crate) alerts: Arc<AlertBus>,
    pub(crate) stats: Arc<Stats>,
}

// ----- the actor -------------------------------------------------------------------

#[derive(Default)]
struct Group {
    changes: Vec<TaskDelta>,
    change_deltas: Vec<ChangeDelta>,
    purge: Option<Purge>,
    /// Repositories whose main turned red (at a commit) or green again.
    health: Vec<(String, Option<String>)>,
    /// The paused priorities, when an operator changed them.
    lanes: Option<Vec<Priority>>,
    /// The day's usage per agent (JSON), when a result changed it.
    usage: Option<String>,
    /// What to do once this group is durable.
    effects: Vec<Effect>,
    /// Tasks given to standing agents in this group, and the last gift's
    /// number.
    given: Vec<Assignment>,
    upto: u64,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// When its first change was staged (for the store's timings).
    staged_at: Option<Instant>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.change_deltas.is_empty()
            && self.purge.is_none()
            && self.health.is_empty()
            && self.lanes.is_none()
            && self.usage.is_none()
            && self.effects.is_empty()
            && self.given.is_empty()
            && self.waiters.is_empty()
    }
}

/// A group written into the store, waiting to be made durable.
struct Written {
    /// Whether it wrote anything (a group of waiters alone did not).
    wrote: bool,
    changes: Vec<TaskDelta>,
    change_deltas: Vec<ChangeDelta>,
    purged: Vec<crate::store::Purged>,
    lanes: Option<Vec<Priority>>,
    effects: Vec<Effect>,
    given: Vec<Assignment>,
    upto: u64,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    staged_at: Instant,
}

/// Most finished tasks one retention pass deletes.
const PURGE_BATCH: usize = 10_000;

/// How long finished tasks are kept, and how often retention runs.
pub(crate) struct Retention {
    pub finished_ms: i64,
    pub every: Duration,
}

pub struct QueueActor {
    core: QueueCore,
    changes: ChangeCore,
    repos: Arc<BTreeMap<String, RepoConfig>>,
    store: Store,
    view: Arc<TaskView>,
    change_view: Arc<ChangeView>,
    repo_view: Arc<RepoView>,
    events: Arc<EventBus>,
    alerts: Arc<AlertBus>,
    stats: Arc<Stats>,
    links: QueueLinks,
    retention: Retention,
    pending: Group,
    /// A group is being written (stage 1).
    writing: bool,
    /// Groups written and waiting for a sync, oldest first.
    written: Vec<Written>,
    /// A sync runs (stage 2).
    syncing: bool,
    promotion: Option<(Timestamp, SpawnHandle)>,
    /// A `Kick` was sent and no claim has come since.
    kick_open: bool,
}

impl QueueActor {
    /// The cores must have been restored from `store`, and the views
    /// filled from it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        core: QueueCore,
        changes: ChangeCore,
        repos: Arc<BTreeMap<String, RepoConfig>>,
        store: Store,
        views: QueueViews,
        links: QueueLinks,
        retention: Retention,
    ) -> Self {
        QueueActor {
            core,
            changes,
            repos,
            store,
            view: views.tasks,
            change_view: views.changes,
            repo_view: views.repos,
            events: views.events,
            alerts: views.alerts,
            stats: views.stats,
            links,
            retention,
            pending: Group::default(),
            writing: false,
            written: Vec::new(),
            syncing: false,
            promotion: None,
            kick_open: false,
        }
    }

    /// Stage the core's changes; the receiver resolves once they (and
    /// everything staged before them) are durable.
    fn commit(&mut self, ctx: &mut Context<Self>) -> Durable {
        // A task queued now goes to a standing agent in this same group
        // (decision 0018): one sync for both, no claim to wait for.
        let given = self.core.assign_standing(Timestamp::now());
        if !given.is_empty() {
            self.pending.given.extend(given);
            self.pending.upto = self.core.last_gift();
        }
        self.count_standing();
        let changes = self.core.take_deltas();
        let change_deltas = self.changes.take_deltas();
        // The scheduler's claim may take a task staged now: its assignment
        // joins a later group, and groups finish in order, so it is
        // never pushed before the task's own change is durable. Asking
        // now rather than once this group is durable overlaps the claim's
        // write with this group's sync. One Kick until a claim comes: that
        // claim (or the full one the Kick causes) sees everything staged.
        if !self.kick_open && self.may_match(&changes) {
            self.kick_open = true;
            self.links.kick.do_send(Kick);
        }
        let (tx, rx) = oneshot::channel();
        if changes.is_empty()
            && change_deltas.is_empty()
            && !self.writing
            && !self.syncing
            && self.written.is_empty()
            && self.pending.is_empty()
        {
            let _ = tx.send(Ok(()));
            return rx;
        }
        self.pending.changes.extend(changes);
        self.pending.change_deltas.extend(change_deltas);
        self.pending.waiters.push(tx);
        self.sync_next(ctx);
        rx
    }

    /// The standing agents' count, for `/metrics`.
    fn count_standing(&self) {
        self.stats
            .agents_standing
            .set(self.core.standing_len() as i64);
    }

    /// The pipeline over this actor's cores.
    fn pipeline(&mut self) -> Pipeline<'_> {
        Pipeline {
            queue: &mut self.core,
            changes: &mut self.changes,
            repos: &self.repos,
        }
    }

    /// Effects to carry out once what is staged now is durable.
    fn stage_effects(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                // Written with the group, not after it.
                Effect::RememberHealth { repo, red_at } => self.pending.health.push((repo, red_at)),
                e => self.pending.effects.push(e),
            }
        }
    }

    fn carry_out(&self, effects: Vec<Effect>) {
        let now = Timestamp::now();
        for e in effects {
            match e {
                Effect::Inspect {
                    repo,
                    change_id,
                    branch,
                    base,
                    head,
                } => match self.links.repos.get(&repo) {
                    Some(r) => r.inspect.do_send(Inspect {
                        change_id,
                        branch,
                        base,
                        head,
                    }),
                    None => tracing::error!(%repo, %change_id, "no actor for this repository"),
                },
                Effect::MergeKick { repo } => {
                    if let Some(r) = self.links.repos.get(&repo) {
                        r.kick.do_send(MergeKick);
                    }
                }
                Effect::Alert {
                    kind,
                    subject,
                    message,
                } => self.alerts.raise(kind, &subject, &message, now),
                // Staged into the group itself (see `stage_effects`).
                Effect::RememberHealth { .. } => {}
            }
        }
    }

    /// Whether a result changed what agents spent (the view has an older copy).
    fn view_usage_differs(&self) -> bool {
        self.view.usage_today_json() != self.core.usage_state().today_json()
    }

    /// Move the group commit on: write the pending group if no group is
    /// being written, and make the written groups durable if no sync runs.
    /// The two stages overlap (the next group is written while the last
    /// one syncs), and groups finish in the order they were staged.
    fn sync_next(&mut self, ctx: &mut Context<Self>) {
        if !self.pending.is_empty() {
            self.pending.staged_at.get_or_insert_with(Instant::now);
        }
        self.start_write(ctx);
        self.start_sync(ctx);
    }

    /// Stage 1: write the pending group into the store (not yet durable),
    /// on a blocking thread, one group at a time.
    fn start_write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.pending.is_empty() {
            return;
        }
        self.writing = true;
        let Group {
            changes,
            change_deltas,
            purge,
            health,
            lanes,
            usage,
            effects,
            given,
            upto,
            waiters,
            staged_at,
        } = std::mem::take(&mut self.pending);
        let staged_at = staged_at.unwrap_or_else(Instant::now);
        self.view.begin(&changes);
        self.change_view.begin(&change_deltas);
        let store = self.store.clone();
        let work = actix_rt::task::spawn_blocking(move || {
            let started = Instant::now();
            let wrote = !(changes.is_empty()
                && change_deltas.is_empty()
                && purge.is_none()
                && health.is_empty()
                && lanes.is_none()
                && usage.is_none());
            let res = if !wrote {
                Ok(vec![])
            } else {
                health
                    .iter()
                    .try_for_each(|(repo, red_at)| store.put_repo_red(repo, red_at.as_deref()))
                    .and_then(|()| match &lanes {
                        Some(l) => store.put_paused_lanes(l),
                        None => Ok(()),
                    })
                    .and_then(|()| match &usage {
                        Some(u) => store.put_usage(u),
                        None => Ok(()),
                    })
                    .and_then(|()| store.write_tasks(&changes, &change_deltas, purge.as_ref()))
            };
            (res, wrote, started.elapsed(), changes, change_deltas, lanes)
        });
        ctx.spawn(work.into_actor(self).map(move |joined, act, ctx| {
            act.writing = false;
            match joined {
                Ok((Ok(purged), wrote, took, changes, change_deltas, lanes)) => {
                    if wrote {
                        act.stats.store_write_time.observe(took.as_secs_f64());
                        act.stats
                            .store_group_changes
                            .observe((changes.len() + change_deltas.len()) as f64);
                    }
                    act.written.push(Written {
                        wrote,
                        changes,
                        change_deltas,
                        purged,
                        lanes,
                        effects,
                        given,
                        upto,
                        waiters,
                        staged_at,
                    });
                    act.sync_next(ctx);
                }
                Ok((Err(e), ..)) => fatal(&e.to_string(), waiters),
                Err(e) => fatal(&format!("write thread failed: {e}"), waiters),
            }
        }));
    }

    /// Stage 2: make every group written so far durable with one sync, on
    /// a blocking thread, then finish them in order.
    fn start_sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing || self.written.is_empty() {
            return;
        }
        self.syncing = true;
        let groups = std::mem::take(&mut self.written);
        let any = groups.iter().any(|g| g.wrote);
        let store = self.store.clone();
        let work = actix_rt::task::spawn_blocking(move || {
            let started = Instant::now();
            let res = if any { store.sync() } else { Ok(()) };
            (res, started.elapsed(), groups)
        });
        ctx.spawn(work.into_actor(self).map(move |joined, act, ctx| {
            act.syncing = false;
            match joined {
                Ok((Ok(()), took, groups)) => {
                    if any {
                        act.stats.store_syncs.inc();
                        act.stats.store_sync_time.observe(took.as_secs_f64());
                    }
                    for g in groups {
                        act.finish(g, ctx);
                    }
                    act.schedule_promotion(ctx);
                    act.sync_next(ctx);
                }
                Ok((Err(e), _, groups)) => fatal(
                    &e.to_string(),
                    groups.into_iter().flat_map(|g| g.waiters).collect(),
                ),
                Err(e) => fatal(&format!("sync thread failed: {e}"), vec![]),
            }
        }));
    }

    /// A group is durable: tell the world, carry out its effects, answer
    /// its waiters.
    fn finish(&mut self, g: Written, ctx: &mut Context<Self>) {
        let Written {
            changes,
            change_deltas,
            purged,
            lanes,
            effects,
            given,
            upto,
            waiters,
            staged_at,
            ..
        } = g;
        self.stats
            .store_writes
            .inc_by((changes.len() + change_deltas.len()) as u64);
        self.publish(&changes);
        self.publish_changes(&change_deltas);
        let now = Timestamp::now();
        self.core.durable(&changes, now);
        self.changes.durable(&change_deltas, now);
        self.carry_out(effects);
        if !given.is_empty() {
            self.links.given.do_send(Given {
                assignments: given,
                upto,
            });
        }
        if let Some(lanes) = lanes {
            self.lanes_durable(lanes);
        }
        if !purged.is_empty() {
            self.view.purged(&purged);
            let statuses: Vec<_> = purged
                .iter()
                .flat_map(|p| p.changes.iter().copied())
                .collect();
            self.change_view.purged(&statuses);
            let ids: Vec<String> = purged.iter().map(|p| p.id.clone()).collect();
            self.core.purged(&ids);
            self.changes.purged(&ids);
            tracing::info!(tasks = ids.len(), "retention deleted finished tasks");
            if ids.len() >= PURGE_BATCH {
                self.purge(ctx); // more are due
            }
        }
        for w in waiters {
            let _ = w.send(Ok(()));
        }
        self.stats
            .store_group_latency
            .observe(staged_at.elapsed().as_secs_f64());
    }

    /// The paused priorities are durably `lanes`: tell the view, the
    /// event bus, and the scheduler (a resumed lane may have a match).
    fn lanes_durable(&self, lanes: Vec<Priority>) {
        let names: Vec<&str> = lanes.iter().map(|p| p.as_str()).collect();
        tracing::info!(paused = %if names.is_empty() { "none".to_string() } else { names.join(", ") }, "paused lanes kept");
        self.events
            .publish("lanes", json!({ "paused_lanes": names }));
        self.view.set_paused_lanes(lanes);
        self.links.kick.do_send(Kick);
    }

    /// Tell the world about durable changes.
    fn publish(&self, changes: &[TaskDelta]) {
        if changes.is_empty() {
            return;
        }
        self.view.apply_deltas(changes);
        let now = Timestamp::now();
        for a in alert::dead_tasks(changes) {
            self.alerts.raise(a.kind, &a.subject, &a.message, now);
        }
        for c in changes {
            let t = &c.task;
            // The task once for all its transitions' events: without its
            // description and metadata (a page reads them).
            let head = (!c.new_history.is_empty()).then(|| {
                let mut head = t.clone();
                head.description = String::new();
                head.metadata = None;
                serde_json::to_string(&head).expect("task serialises")
            });
            for (_, h) in &c.new_history {
                tracing::debug!(
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
                    | TaskEvent::Due
                    | TaskEvent::InReview
                    | TaskEvent::SentBack
                    | TaskEvent::Rejected
                    | TaskEvent::Cancelled
                    | TaskEvent::Revived
                    | TaskEvent::Released
                    | TaskEvent::StaleReport => {}
                }
                let transition = serde_json::to_string(h).expect("history serialises");
                self.events.publish_json(
                    "task",
                    format!(
                        r#"{{"task":{},"transition":{transition}}}"#,
                        head.as_deref().expect("a head for each transition")
                    ),
                );
            }
        }
    }

    /// Staged changes may allow a match: a task became queued, or (under
    /// a fleet cap) a task stopped being out and freed a place.
    fn may_match(&self, changes: &[TaskDelta]) -> bool {
        let capped = self.core.settings().max_concurrent > 0;
        changes.iter().any(|c| {
            c.task.status == TaskStatus::Queued
                || (capped
                    && c.previous_status.is_some_and(TaskStatus::is_active)
                    && !c.task.status.is_active())
        })
    }

    /// Tell the world about durable change deltas.
    fn publish_changes(&self, deltas: &[ChangeDelta]) {
        if deltas.is_empty() {
            return;
        }
        self.change_view.apply(deltas);
        let mut repos = std::collections::BTreeSet::new();
        for d in deltas {
            let c = &d.change;
            repos.insert(c.repo.clone());
            for (_, h) in &d.new_history {
                tracing::info!(
                    change = %c.id, task = %c.task_id, repo = %c.repo, event = %h.event,
                    from = h.from.map(|s| s.as_str()).unwrap_or("-"),
                    to = h.to.map(|s| s.as_str()).unwrap_or("-"),
                    detail = h.detail.as_deref().unwrap_or(""),
                    "change transition"
                );
                match h.to {
                    Some(ChangeStatus::Merged) => {
                        self.stats.changes_merged.inc();
                        let secs = h.at.millis_since(c.created_at).max(0) as f64 / 1000.0;
                        self.stats.change_merge_time.observe(secs);
                    }
                    Some(ChangeStatus::SentBack) => {
                        self.stats.changes_sent_back.inc();
                    }
                    _ => {}
                }
                self.events
                    .publish("change", json!({ "change": c, "transition": h }));
            }
        }
        for repo in repos {
            let queue = self.changes.merge_queue(&repo);
            self.repo_view.update(&repo, |r| r.queue = queue);
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
        for (name, link) in &self.links.repos {
            let queue = self.changes.merge_queue(name);
            self.repo_view.update(name, |r| r.queue = queue);
            link.kick.do_send(MergeKick);
        }
        // Changes opened but not measured before the hub stopped.
        let unmeasured: Vec<Effect> = self
            .changes
            .live()
            .filter(|c| c.status == agentcom_protocol::ChangeStatus::Open && c.gate.is_none())
            .map(|c| Effect::Inspect {
                repo: c.repo.clone(),
                change_id: c.id.clone(),
                branch: c.branch.clone(),
                base: c.base.clone(),
                head: c.head.clone(),
            })
            .collect();
        self.carry_out(unmeasured);
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

impl Handler<CreateTasks> for QueueActor {
    type Result = ResponseFuture<Result<Result<Vec<Created>, (usize, QueueError)>, CommandError>>;
    fn handle(&mut self, msg: CreateTasks, ctx: &mut Context<Self>) -> Self::Result {
        // Every task's changes are staged by this one commit, so the whole
        // batch is one group: one write, one sync.
        let created = self.core.create_batch(msg.0, Timestamp::now());
        after_durable(self.commit(ctx), Ok(created))
    }
}

impl Handler<ExplainFacts> for QueueActor {
    type Result = MessageResult<ExplainFacts>;
    fn handle(&mut self, msg: ExplainFacts, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.facts(&msg.id, Timestamp::now()))
    }
}

impl Handler<CancelTask> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Task, CommandError>>;
    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.id.clone();
        self.with_whole(
            id,
            move |act, ctx| {
                let res = act
                    .pipeline()
                    .cancel(&msg.id, &msg.reason, Timestamp::now());
                let res = match res {
                    Ok((c, fx)) => {
                        act.stage_effects(fx);
                        Ok(c)
                    }
                    Err(e) => Err(e),
                };
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

impl Handler<PauseLane> for QueueActor {
    type Result = ResponseFuture<Result<(), CommandError>>;
    fn handle(&mut self, msg: PauseLane, ctx: &mut Context<Self>) -> Self::Result {
        // Idempotent: an unchanged set is still answered after what was
        // staged before it is durable.
        if self.core.set_lane_paused(msg.priority, msg.paused) {
            self.pending.lanes = Some(self.core.paused_lanes());
        }
        let (tx, rx) = oneshot::channel();
        self.pending.waiters.push(tx);
        self.sync_next(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the queue stopped".into()))
                .map_err(CommandError::Unavailable)
        })
    }
}

impl Handler<Claim> for QueueActor {
    type Result = ResponseFuture<Result<Vec<Assignment>, CommandError>>;
    fn handle(&mut self, msg: Claim, ctx: &mut Context<Self>) -> Self::Result {
        // This claim sees everything staged so far.
        self.kick_open = false;
        let got = self
            .core
            .claim_offered(msg.agents, msg.all, msg.seen, Timestamp::now());
        after_durable(self.commit(ctx), Ok(got))
    }
}

impl Handler<Withdraw> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Withdraw, _: &mut Context<Self>) {
        self.core.withdraw(&msg.id);
        self.count_standing();
    }
}

impl Handler<Report> for QueueActor {
    type Result = ResponseFuture<Result<Reported, CommandError>>;
    fn handle(&mut self, msg: Report, ctx: &mut Context<Self>) -> Self::Result {
        let now = Timestamp::now();
        let free = msg.next.filter(|a| a.id == msg.agent);
        let judged = match msg.kind {
            ReportKind::Accept => Judged::plain(self.core.accept(&msg.attempt, &msg.agent, now)),
            ReportKind::Complete(result) => {
                let (v, fx) = self
                    .pipeline()
                    .complete(&msg.attempt, &msg.agent, result, now);
                self.stage_effects(fx);
                if self.view_usage_differs() {
                    self.view.set_usage(self.core.usage_state().clone());
                    self.pending.usage = Some(self.core.usage_state().today_json());
                }
                Judged::plain(v)
            }
            ReportKind::Fail(report) => {
                let j = self.core.fail(&msg.attempt, &msg.agent, &report, now);
                let fx = self.pipeline().task_ended(&msg.attempt.task_id, now);
                self.stage_effects(fx);
                j
            }
        };
        if let Verdict::Stale(why) = &judged.verdict {
            if msg.source == ReportSource::Sidecar {
                self.stats.stale();
            }
            tracing::warn!(attempt = %msg.attempt, agent = %msg.agent, why = %why, "stale report");
        }
        // Its next task in the same group as the report that frees it.
        let next = match free {
            Some(agent) if judged.verdict == Verdict::Applied => self.core.claim_next(&agent, now),
            _ => None,
        };
        let durable = self.commit(ctx);
        let absolve = self.links.absolve.clone();
        let task_id = msg.attempt.task_id;
        Box::pin(async move {
            durably(durable).await?;
            if !judged.absolve.is_empty() {
                absolve.do_send(AbsolveFailures {
                    agents: judged.absolve.clone(),
                    task_id,
                });
            }
            Ok(Reported { judged, next })
        })
    }
}

impl Handler<Release> for QueueActor {
    type Result = ResponseFuture<Result<Verdict, CommandError>>;
    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) -> Self::Result {
        let now = Timestamp::now();
        let verdict = self.core.release(&msg.attempt, &msg.reason, now);
        let fx = self.pipeline().task_ended(&msg.attempt.task_id, now);
        self.stage_effects(fx);
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

// ----- the merge pipeline: repository actors and operators ----------------------

impl Handler<Inspected> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Inspected, ctx: &mut Context<Self>) {
        let outcome = msg
            .outcome
            .map(|d| (d.files, d.lines_added, d.lines_removed));
        match self
            .pipeline()
            .inspected(&msg.change_id, outcome, Timestamp::now())
        {
            Ok(fx) => self.stage_effects(fx),
            Err(e) => {
                tracing::warn!(change = %msg.change_id, error = %e, "measurement of a change not recorded")
            }
        }
        drop(self.commit(ctx));
    }
}

impl Handler<NextMerge> for QueueActor {
    type Result = Option<MergeJob>;
    fn handle(&mut self, msg: NextMerge, _: &mut Context<Self>) -> Self::Result {
        // The worker asks only when its merge lane is free: its last job
        // ended (reported or held back).
        self.changes.merge_handed_out(&msg.repo, None);
        if self.core.repo_paused(&msg.repo) {
            return None;
        }
        let c = self.changes.next_to_merge(&msg.repo)?;
        // Only a change whose place in the queue is durable.
        let durable = self
            .change_view
            .live(&c.id)
            .is_some_and(|(d, _)| d.status == agentcom_protocol::ChangeStatus::Merging);
        if !durable {
            return None;
        }
        let title = self
            .core
            .get(&c.task_id)
            .map(|t| t.title.clone())
            .unwrap_or_default();
        let id = c.id.clone();
        let job = MergeJob {
            change_id: c.id.clone(),
            task_id: c.task_id.clone(),
            task_title: title,
            agent_id: c.agent_id.clone(),
            branch: c.branch.clone(),
            head: c.head.clone(),
        };
        self.changes.merge_handed_out(&msg.repo, Some(&id));
        Some(job)
    }
}

impl Handler<MergeDone> for QueueActor {
    type Result = ResponseFuture<Result<(), CommandError>>;
    fn handle(&mut self, msg: MergeDone, ctx: &mut Context<Self>) -> Self::Result {
        let result = match msg.outcome {
            MergeOutcome::Merged { sha, check } => MergeResult::Merged { sha, check },
            MergeOutcome::Conflict { paths } => MergeResult::Failed {
                event: "conflict",
                reasons: format!("the change conflicts with main in: {}", paths.join(", ")),
                check: None,
            },
            MergeOutcome::CheckFailed { check } => MergeResult::Failed {
                event: "check_failed",
                reasons: format!(
                    "the repository's check failed on the merge result ({})",
                    check
                        .exit_code
                        .map_or("killed at its timeout".to_string(), |c| format!("exit {c}"))
                ),
                check: Some(check),
            },
            MergeOutcome::Unmergeable { reason } => MergeResult::Failed {
                event: "unmergeable",
                reasons: reason,
                check: None,
            },
        };
        let res = self
            .pipeline()
            .merge_done(&msg.change_id, result, Timestamp::now());
        let res = match res {
            Ok(fx) => {
                self.stage_effects(fx);
                Ok(())
            }
            Err(e) => Err(CommandError::from_pipeline(e)),
        };
        after_durable(self.commit(ctx), res)
    }
}

impl Handler<MainChecked> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: MainChecked, ctx: &mut Context<Self>) {
        let (green, check) = match &msg.health {
            MainHealth::Green { check } => (true, check.as_ref()),
            MainHealth::Red { check } => (false, Some(check)),
        };
        let fx = self
            .pipeline()
            .main_checked(&msg.repo, &msg.sha, green, check);
        self.stage_effects(fx);
        let durable = self.commit(ctx);
        // Shown (and acted on) once durable: a red main shown before it was
        // stored could be forgotten by a crash in between.
        let MainChecked { repo, sha, .. } = msg;
        ctx.spawn(
            async move { durably(durable).await.is_ok() }
                .into_actor(self)
                .map(move |durable, act, _| {
                    if !durable {
                        return;
                    }
                    act.repo_view.update(&repo, |r| {
                        r.main_sha = Some(sha);
                        r.health = if green {
                            agentcom_protocol::Health::Green
                        } else {
                            agentcom_protocol::Health::Red
                        };
                        r.merges_paused = !green;
                    });
                    if green {
                        // Held-back tasks of this repository may go now.
                        act.links.kick.do_send(Kick);
                    }
                }),
        );
    }
}

impl Handler<MainSeen> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: MainSeen, _: &mut Context<Self>) {
        self.repo_view
            .update(&msg.repo, |r| r.main_sha = Some(msg.sha));
    }
}

impl Handler<ApproveChange> for QueueActor {
    type Result = ResponseFuture<Result<(), CommandError>>;
    fn handle(&mut self, msg: ApproveChange, ctx: &mut Context<Self>) -> Self::Result {
        let res = match self.pipeline().approve(&msg.id, Timestamp::now()) {
            Ok(fx) => {
                self.stage_effects(fx);
                Ok(())
            }
            Err(e) => Err(CommandError::from_pipeline(e)),
        };
        after_durable(self.commit(ctx), res)
    }
}

impl Handler<RejectChange> for QueueActor {
    type Result = ResponseFuture<Result<(), CommandError>>;
    fn handle(&mut self, msg: RejectChange, ctx: &mut Context<Self>) -> Self::Result {
        let res = match self
            .pipeline()
            .reject(&msg.id, &msg.reason, msg.requeue, Timestamp::now())
        {
            Ok(fx) => {
                self.stage_effects(fx);
                Ok(())
            }
            Err(e) => Err(CommandError::from_pipeline(e)),
        };
        after_durable(self.commit(ctx), res)
    }
}
