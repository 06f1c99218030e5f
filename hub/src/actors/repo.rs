//! The `RepoActor`: one per `[[repos]]`, the hub's hands on that
//! repository.
//!
//! It owns the hub's bare clone (`<data_dir>/repos/<name>/clone.git`), the
//! scratch work trees beside it, and what it knows of main's health (the
//! commits of main whose check passed, the one that failed, the commit it
//! last told the queue about). It does three kinds of work, every git
//! command and check on a blocking thread, never on the actors' thread:
//!
//! - **Inspect** a change (fetch, prove branch tip and base, count paths
//!   and lines) and tell the queue (`Inspected`). One at a time.
//! - **Merge** the queue's next change (`NextMerge` → `MergeJob`): merge
//!   it onto a main known to be green, check that exact merge commit in a
//!   scratch checkout, push it to main with a plain push (a
//!   compare-and-swap; redone on the new main when refused), and wait for
//!   the queue to make the outcome durable (`MergeDone`) before asking for
//!   the next job. A change already on main (a hub killed mid-merge) is
//!   reported merged, never merged twice.
//! - **Watch main**: at start and every `poll_s`, if main is at a commit
//!   whose health it does not know, fetch, tell the queue (`MainSeen`),
//!   check it and say so (`MainChecked`). Its own pushes are known green.
//!
//! Merges and main checks share one lane (one check at a time per
//! repository); inspections have their own lane, so a change is measured
//! while a 30-minute check runs. Git commands on the clone never overlap:
//! both lanes take the clone's lock around them (never around a check).
//! A git failure (the network, a broken clone) is logged with the
//! repository's name and retried with backoff; the work waits, nothing is
//! reported in its name. It never decides a change's fate or main's
//! consequences (pausing merges, alerts): the queue does. It never
//! force-pushes, never panics on a failure, and never waits on anyone but
//! the queue (`NextMerge`, `MergeDone`), which never waits on it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::CheckRun;

use crate::actors::messages::{
    CommandError, Diffstat, Inspect, Inspected, MainChecked, MainHealth, MainSeen, MergeDone,
    MergeJob, MergeKick, MergeOutcome, NextMerge,
};
use crate::check;
use crate::domain::repo::RepoConfig;
use crate::git::{self, GitError, MergeResult, PushResult, Scratch};

/// A check's exit code in words.
fn exit_words(code: Option<i32>) -> String {
    code.map_or(
        "none (killed at its timeout, or it could not start)".to_string(),
        |c| c.to_string(),
    )
}

#[cfg(test)]
mod tests;

/// Where a repository actor sends what it finds (all to the queue).
pub(crate) struct RepoLinks {
    pub inspected: Recipient<Inspected>,
    pub next: Recipient<NextMerge>,
    pub done: Recipient<MergeDone>,
    pub main_checked: Recipient<MainChecked>,
    pub main_seen: Recipient<MainSeen>,
}

/// How often one job merges onto a main that moved under it before the
/// job waits for the next poll (someone keeps pushing to main).
const MERGE_ROUNDS: u32 = 3;

/// A job whose local git work (not the network) failed this many times in
/// a row is reported unmergeable with git's words, not retried for ever.
const LOCAL_FAILURES_MAX: u32 = 3;

/// How many commits of main known to be green are remembered.
const GREEN_KEPT: usize = 32;

/// The longest wait before retrying after a failure.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What the actor knows of main's health.
#[derive(Clone, Debug, Default)]
struct Health {
    /// Commits of main (or merge commits it pushed) whose check passed,
    /// newest last.
    green: VecDeque<String>,
    /// The commit of main whose check failed last.
    red: Option<String>,
    /// The commit of main the queue was last told about.
    seen: Option<String>,
}

impl Health {
    fn is_green(&self, sha: &str) -> bool {
        self.green.iter().any(|g| g == sha)
    }

    fn is_red(&self, sha: &str) -> bool {
        self.red.as_deref() == Some(sha)
    }

    fn mark_green(&mut self, sha: &str) {
        if !self.is_green(sha) {
            self.green.push_back(sha.to_string());
            while self.green.len() > GREEN_KEPT {
                self.green.pop_front();
            }
        }
        if self.is_red(sha) {
            self.red = None;
        }
    }

    fn mark_red(&mut self, sha: &str) {
        self.green.retain(|g| g != sha);
        self.red = Some(sha.to_string());
    }
}

/// How a merge job ended on its blocking thread.
#[derive(Debug)]
enum JobEnd {
    /// Report this to the queue.
    Done(MergeOutcome),
    /// Not the change's doing (main is red, main kept moving): report
    /// nothing; the queue hands the job out again later.
    Held(String),
    /// Git failed; `local`: after the fetch succeeded (so likely the same
    /// again), not the network.
    Failed { error: GitError, local: bool },
}

/// A git failure and whether it happened in the clone rather than on the
/// way to the remote.
struct Failure {
    error: GitError,
    local: bool,
}

fn network(error: GitError) -> Failure {
    Failure {
        error,
        local: false,
    }
}

fn local(error: GitError) -> Failure {
    Failure { error, local: true }
}

/// What the blocking jobs need: the settings, the clone and its lock, and
/// where main's news goes (as it happens, not when the job ends).
#[derive(Clone)]
struct Work {
    cfg: Arc<RepoConfig>,
    dir: PathBuf,
    lock: Arc<Mutex<()>>,
    main_seen: Recipient<MainSeen>,
    main_checked: Recipient<MainChecked>,
}

impl Work {
    /// Hold the clone: no other git command runs on it meanwhile.
    fn hold(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn main(&self) -> &str {
        &self.cfg.main_branch
    }

    fn has_check(&self) -> bool {
        !self.cfg.check_command.is_empty()
    }

    /// Make the clone usable and clear what a killed hub left.
    fn setup(&self) -> Result<(), GitError> {
        let _clone = self.hold();
        git::ensure_clone(&self.cfg.url, &self.dir)?;
        git::clean_scratch(&self.dir)
    }

    fn inspect(&self, req: &Inspect) -> Result<Result<Diffstat, String>, GitError> {
        let _clone = self.hold();
        git::inspect(&self.dir, self.main(), &req.branch, &req.base, &req.head)
    }

    /// Run the check on `sha` in a scratch checkout (None: no check).
    fn check(&self, sha: &str) -> Result<Option<CheckRun>, GitError> {
        if !self.has_check() {
            return Ok(None);
        }
        let scratch = {
            let _clone = self.hold();
            git::checkout_scratch(&self.dir, sha)?
        };
        let timeout = Duration::from_secs(self.cfg.check_timeout_s.max(1));
        tracing::info!(repo = %self.name(), sha, "running the check");
        let run = check::run_check(&self.cfg.check_command, scratch.path(), timeout, sha);
        self.discard(scratch);
        Ok(run)
    }

    fn discard(&self, scratch: Scratch) {
        let _clone = self.hold();
        drop(scratch);
    }

    /// Tell the queue main is at `sha` (when that is news).
    fn seen(&self, health: &mut Health, sha: &str) {
        if health.seen.as_deref() != Some(sha) {
            health.seen = Some(sha.to_string());
            self.main_seen.do_send(MainSeen {
                repo: self.name().to_string(),
                sha: sha.to_string(),
            });
        }
    }

    /// Is main at `sha` (fetched) green? Checked and reported unless known.
    fn check_main(&self, health: &mut Health, sha: &str) -> Result<bool, GitError> {
        if health.is_green(sha) {
            return Ok(true);
        }
        if health.is_red(sha) {
            return Ok(false);
        }
        let run = self.check(sha)?;
        let verdict = match run {
            Some(run) if !check::passed(Some(&run)) => {
                tracing::warn!(repo = %self.name(), sha, exit_code = %exit_words(run.exit_code), "main is red: its check failed");
                health.mark_red(sha);
                MainHealth::Red { check: run }
            }
            run => {
                tracing::info!(repo = %self.name(), sha, "main is green");
                health.mark_green(sha);
                MainHealth::Green { check: run }
            }
        };
        let green = matches!(verdict, MainHealth::Green { .. });
        self.main_checked.do_send(MainChecked {
            repo: self.name().to_string(),
            sha: sha.to_string(),
            health: verdict,
        });
        Ok(green)
    }

    /// Look at the remote's main; check it if its health is unknown.
    fn watch_main(&self, health: &mut Health) -> Result<(), GitError> {
        let listed = {
            let _clone = self.hold();
            git::ls_remote_head(&self.dir, self.main())?
        };
        let Some(remote) = listed else {
            return Err(GitError {
                command: format!("ls-remote --heads origin {}", self.main()),
                detail: format!("the remote has no branch {}", self.main()),
            });
        };
        if health.is_green(&remote) || health.is_red(&remote) {
            self.seen(health, &remote);
            return Ok(());
        }
        let sha = {
            let _clone = self.hold();
            git::fetch(&self.dir)?;
            git::fetched_main(&self.dir, self.main())?
        };
        self.seen(health, &sha);
        self.check_main(health, &sha).map(drop)
    }

    /// Merge one change, start to end (see the module's comment).
    fn merge_job(&self, job: &MergeJob, health: &mut Health) -> JobEnd {
        match self.try_merge(job, health) {
            Ok(end) => end,
            Err(Failure { error, local }) => JobEnd::Failed { error, local },
        }
    }

    fn try_merge(&self, job: &MergeJob, health: &mut Health) -> Result<JobEnd, Failure> {
        let (dir, main, head) = (self.dir.as_path(), self.main(), job.head.as_str());
        if !git::is_sha(head) {
            return Ok(JobEnd::Done(MergeOutcome::Unmergeable {
                reason: format!("its head {head:?} is not a commit id"),
            }));
        }
        for round in 1..=MERGE_ROUNDS {
            let onto = {
                let _clone = self.hold();
                git::fetch(dir).map_err(network)?;
                if !git::has_commit(dir, head).map_err(local)? {
                    return Ok(JobEnd::Done(MergeOutcome::Unmergeable {
                        reason: format!(
                            "its head {head} is not in the repository (branch {} was rewritten or deleted before it merged)",
                            job.branch
                        ),
                    }));
                }
                if let Some(sha) = git::is_merged(dir, main, head).map_err(local)? {
                    tracing::info!(repo = %self.name(), change = %job.change_id, sha, "already on main");
                    return Ok(JobEnd::Done(MergeOutcome::Merged { sha, check: None }));
                }
                git::fetched_main(dir, main).map_err(network)?
            };
            self.seen(health, &onto);
            // Never merge onto a main whose check is unknown: a failure
            // would be blamed on the change.
            if !self.check_main(health, &onto).map_err(local)? {
                return Ok(JobEnd::Held(format!("{main} is red at {onto}")));
            }
            let merged = {
                let _clone = self.hold();
                git::merge(dir, &onto, head, &merge_message(job)).map_err(local)?
            };
            let sha = match merged {
                MergeResult::Conflict { paths } => {
                    return Ok(JobEnd::Done(MergeOutcome::Conflict { paths }))
                }
                MergeResult::Clean { sha, .. } => sha,
            };
            let check = self.check(&sha).map_err(local)?;
            if let Some(run) = check.as_ref().filter(|c| !check::passed(Some(c))) {
                return Ok(JobEnd::Done(MergeOutcome::CheckFailed {
                    check: run.clone(),
                }));
            }
            let pushed = {
                let _clone = self.hold();
                git::push_main(dir, main, &sha, &onto).map_err(network)?
            };
            match pushed {
                PushResult::Pushed => {
                    health.mark_green(&sha);
                    self.seen(health, &sha);
                    return Ok(JobEnd::Done(MergeOutcome::Merged { sha, check }));
                }
                PushResult::MainMoved => {
                    tracing::info!(repo = %self.name(), change = %job.change_id, round, "main moved during the merge; merging again onto the new main");
                }
            }
        }
        Ok(JobEnd::Held(format!(
            "{main} moved {MERGE_ROUNDS} times while this change was merged"
        )))
    }
}

/// The merge commit's message: the change, its task and its author.
fn merge_message(job: &MergeJob) -> String {
    let title: String = job
        .task_title
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    format!(
        "Merge change {}: {title}\n\nTask: {}\nAgent: {}\nBranch: {}\nHead: {}\n",
        job.change_id, job.task_id, job.agent_id, job.branch, job.head
    )
}

/// The wait before retry `n` (1, 2, 4 … seconds, at most [`BACKOFF_MAX`]).
fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(16)).min(BACKOFF_MAX)
}

pub(crate) struct RepoActor {
    work: Work,
    links: RepoLinks,
    health: Health,
    /// The clone is set up.
    ready: bool,
    setting_up: bool,
    /// The inspection lane is busy.
    inspecting: bool,
    inspections: VecDeque<Inspect>,
    /// The merge lane (merges and main checks) is busy.
    merging: bool,
    /// Ask the queue for a merge job when the lane is free.
    merge_wanted: bool,
    /// Look at main when the merge lane is free.
    poll_due: bool,
    /// Failing: nothing new starts until the backoff timer fires.
    paused: bool,
    failures: u32,
    /// A change whose local git work failed, and how often in a row.
    local_failures: Option<(String, u32)>,
}

impl RepoActor {
    /// The actor of `cfg`, keeping its clone under `data_dir`.
    pub(crate) fn new(cfg: RepoConfig, data_dir: &Path, links: RepoLinks) -> Self {
        let dir = data_dir.join("repos").join(&cfg.name).join("clone.git");
        RepoActor {
            work: Work {
                cfg: Arc::new(cfg),
                dir,
                lock: Arc::new(Mutex::new(())),
                main_seen: links.main_seen.clone(),
                main_checked: links.main_checked.clone(),
            },
            links,
            health: Health::default(),
            ready: false,
            setting_up: false,
            inspecting: false,
            inspections: VecDeque::new(),
            merging: false,
            merge_wanted: true,
            poll_due: true,
            paused: false,
            failures: 0,
            local_failures: None,
        }
    }

    fn name(&self) -> String {
        self.work.cfg.name.clone()
    }

    /// Start whatever work is due and its lane free.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.paused {
            return;
        }
        if !self.ready {
            if !self.setting_up && !self.inspecting && !self.merging {
                self.start_setup(ctx);
            }
            return;
        }
        if !self.inspecting {
            if let Some(req) = self.inspections.pop_front() {
                self.start_inspect(req, ctx);
            }
        }
        if !self.merging {
            if self.poll_due {
                self.start_watch(ctx);
            } else if self.merge_wanted {
                self.start_merge(ctx);
            }
        }
    }

    /// Something failed: wait (longer each time in a row), then go on.
    fn back_off(&mut self, what: &str, error: &dyn std::fmt::Display, ctx: &mut Context<Self>) {
        self.failures += 1;
        let wait = backoff(self.failures);
        tracing::warn!(repo = %self.work.cfg.name, error = %error, retry_in_s = wait.as_secs(), "{what} failed");
        if !self.work.dir.join("HEAD").exists() {
            self.ready = false;
        }
        if !self.paused {
            self.paused = true;
            ctx.run_later(wait, |act, ctx| {
                act.paused = false;
                act.pump(ctx);
            });
        }
    }

    fn start_setup(&mut self, ctx: &mut Context<Self>) {
        self.setting_up = true;
        let work = self.work.clone();
        let job = actix_rt::task::spawn_blocking(move || work.setup());
        ctx.spawn(fut::wrap_future(job).map(|res, act: &mut Self, ctx| {
            act.setting_up = false;
            match res {
                Ok(Ok(())) => {
                    tracing::info!(repo = %act.work.cfg.name, clone = %act.work.dir.display(), "clone ready");
                    act.ready = true;
                    act.failures = 0;
                    act.pump(ctx);
                }
                Ok(Err(e)) => act.back_off("setting up the clone", &e, ctx),
                Err(e) => act.back_off("setting up the clone", &e, ctx),
            }
        }));
    }

    fn start_inspect(&mut self, req: Inspect, ctx: &mut Context<Self>) {
        self.inspecting = true;
        let work = self.work.clone();
        let job = actix_rt::task::spawn_blocking(move || {
            let found = work.inspect(&req);
            (req, found)
        });
        ctx.spawn(fut::wrap_future(job).map(|res, act: &mut Self, ctx| {
            act.inspecting = false;
            match res {
                Ok((req, Ok(outcome))) => {
                    act.failures = 0;
                    match &outcome {
                        Ok(stat) => tracing::info!(repo = %act.work.cfg.name, change = %req.change_id, files = stat.files.len(), added = stat.lines_added, removed = stat.lines_removed, "change inspected"),
                        Err(why) => tracing::info!(repo = %act.work.cfg.name, change = %req.change_id, why, "change refused at inspection"),
                    }
                    act.links.inspected.do_send(Inspected {
                        change_id: req.change_id,
                        outcome,
                    });
                    act.pump(ctx);
                }
                Ok((req, Err(e))) => {
                    let what = format!("inspecting change {}", req.change_id);
                    act.inspections.push_front(req);
                    act.back_off(&what, &e, ctx);
                }
                // The request is lost with the thread: the queue asks again.
                Err(e) => act.back_off("an inspection", &e, ctx),
            }
        }));
    }

    fn start_watch(&mut self, ctx: &mut Context<Self>) {
        self.merging = true;
        self.poll_due = false;
        let work = self.work.clone();
        let mut health = self.health.clone();
        let job = actix_rt::task::spawn_blocking(move || {
            let res = work.watch_main(&mut health);
            (health, res)
        });
        ctx.spawn(fut::wrap_future(job).map(|res, act: &mut Self, ctx| {
            act.merging = false;
            match res {
                Ok((health, res)) => {
                    act.health = health;
                    match res {
                        Ok(()) => {
                            act.failures = 0;
                            act.pump(ctx);
                        }
                        Err(e) => {
                            act.poll_due = true;
                            act.back_off("looking at main", &e, ctx);
                        }
                    }
                }
                Err(e) => act.back_off("looking at main", &e, ctx),
            }
        }));
    }

    fn start_merge(&mut self, ctx: &mut Context<Self>) {
        self.merging = true;
        self.merge_wanted = false;
        let ask = self.links.next.send(NextMerge { repo: self.name() });
        ctx.spawn(
            fut::wrap_future(ask).map(|res, act: &mut Self, ctx| match res {
                Ok(Some(job)) => act.run_merge(job, ctx),
                Ok(None) => {
                    act.merging = false;
                    act.pump(ctx);
                }
                Err(e) => {
                    act.merging = false;
                    act.merge_wanted = true;
                    act.back_off("asking the queue for the next merge", &e, ctx);
                }
            }),
        );
    }

    fn run_merge(&mut self, job: MergeJob, ctx: &mut Context<Self>) {
        tracing::info!(repo = %self.work.cfg.name, change = %job.change_id, head = %job.head, "merging");
        let work = self.work.clone();
        let mut health = self.health.clone();
        let blocking = actix_rt::task::spawn_blocking(move || {
            let end = work.merge_job(&job, &mut health);
            (job, health, end)
        });
        ctx.spawn(fut::wrap_future(blocking).map(|res, act: &mut Self, ctx| {
            let (job, health, end) = match res {
                Ok(r) => r,
                Err(e) => {
                    act.merging = false;
                    act.merge_wanted = true;
                    return act.back_off("a merge", &e, ctx);
                }
            };
            act.health = health;
            let outcome = match end {
                JobEnd::Done(outcome) => outcome,
                JobEnd::Held(why) => {
                    // Asked again at the next poll or kick.
                    tracing::info!(repo = %act.work.cfg.name, change = %job.change_id, why, "merge waits");
                    act.merging = false;
                    act.local_failures = None;
                    return act.pump(ctx);
                }
                JobEnd::Failed { error, local } => {
                    let tries = match (&act.local_failures, local) {
                        (_, false) => 0,
                        (Some((id, n)), true) if *id == job.change_id => n + 1,
                        (_, true) => 1,
                    };
                    if tries < LOCAL_FAILURES_MAX {
                        act.local_failures = (tries > 0).then(|| (job.change_id.clone(), tries));
                        act.merging = false;
                        act.merge_wanted = true;
                        let what = format!("merging change {}", job.change_id);
                        return act.back_off(&what, &error, ctx);
                    }
                    MergeOutcome::Unmergeable {
                        reason: format!("git failed {tries} times merging it: {error}"),
                    }
                }
            };
            act.local_failures = None;
            act.report_merge(job, outcome, ctx);
        }));
    }

    /// Tell the queue how the merge ended; the next job only once that is
    /// durable.
    fn report_merge(&mut self, job: MergeJob, outcome: MergeOutcome, ctx: &mut Context<Self>) {
        match &outcome {
            MergeOutcome::Merged { sha, .. } => {
                tracing::info!(repo = %self.work.cfg.name, change = %job.change_id, sha, "merged")
            }
            MergeOutcome::Conflict { paths } => {
                tracing::info!(repo = %self.work.cfg.name, change = %job.change_id, outcome = "conflict", paths = %paths.join(", "), "not merged")
            }
            MergeOutcome::CheckFailed { check } => {
                tracing::info!(repo = %self.work.cfg.name, change = %job.change_id, outcome = "check failed", exit_code = %exit_words(check.exit_code), "not merged")
            }
            MergeOutcome::Unmergeable { reason } => {
                tracing::info!(repo = %self.work.cfg.name, change = %job.change_id, outcome = "unmergeable", reason = %reason, "not merged")
            }
        }
        let done = self.links.done.send(MergeDone {
            change_id: job.change_id.clone(),
            outcome,
        });
        ctx.spawn(fut::wrap_future(done).map(move |res, act: &mut Self, ctx| {
            act.merging = false;
            act.merge_wanted = true;
            let error: Box<dyn std::fmt::Display> = match res {
                Ok(Ok(())) => {
                    act.failures = 0;
                    return act.pump(ctx);
                }
                Ok(Err(e @ CommandError::Unavailable(_))) => Box::new(e),
                Ok(Err(refused)) => {
                    // The queue moved on (the change was cancelled meanwhile).
                    tracing::info!(repo = %act.work.cfg.name, change = %job.change_id, error = %refused, "the queue refused the merge's outcome");
                    return act.pump(ctx);
                }
                Err(e) => Box::new(e),
            };
            let what = format!("recording the merge of change {}", job.change_id);
            act.back_off(&what, &error, ctx);
        }));
    }
}

impl Actor for RepoActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = Duration::from_secs(self.work.cfg.poll_s.max(1));
        ctx.run_interval(every, |act, ctx| {
            act.poll_due = true;
            // A job held back (main red or moving) is asked for again.
            act.merge_wanted = true;
            act.pump(ctx);
        });
        self.pump(ctx);
    }
}

impl Handler<Inspect> for RepoActor {
    type Result = ();

    fn handle(&mut self, req: Inspect, ctx: &mut Context<Self>) {
        self.inspections.retain(|r| r.change_id != req.change_id);
        self.inspections.push_back(req);
        self.pump(ctx);
    }
}

/// How many failures in a row the actor is backing off from (tests).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "u32")]
pub(crate) struct Failures;

#[cfg(test)]
impl Handler<Failures> for RepoActor {
    type Result = u32;
    fn handle(&mut self, _: Failures, _: &mut Context<Self>) -> u32 {
        self.failures
    }
}

impl Handler<MergeKick> for RepoActor {
    type Result = ();

    fn handle(&mut self, _: MergeKick, ctx: &mut Context<Self>) {
        self.merge_wanted = true;
        self.pump(ctx);
    }
}
