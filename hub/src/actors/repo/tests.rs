//! The repository actor against real git repositories, with a small
//! actor standing in for the queue: it hands out the jobs it is given
//! (the same one until its `MergeDone`, as the queue does) and records
//! everything it receives on a channel the test awaits.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;
use crate::domain::gate::{GateConfig, ReviewMode};
use crate::git::testing::{git, Fixture};

#[derive(Debug, Clone, PartialEq)]
enum Got {
    Inspected(String, Result<Diffstat, String>),
    Done(String, MergeOutcome),
    Checked(String, MainHealth),
    Seen(String),
}

struct FakeQueue {
    jobs: VecDeque<MergeJob>,
    got: mpsc::UnboundedSender<Got>,
}

impl Actor for FakeQueue {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Enqueue(MergeJob);

impl Handler<Enqueue> for FakeQueue {
    type Result = ();
    fn handle(&mut self, m: Enqueue, _: &mut Context<Self>) {
        self.jobs.push_back(m.0);
    }
}

impl Handler<NextMerge> for FakeQueue {
    type Result = Option<MergeJob>;
    fn handle(&mut self, m: NextMerge, _: &mut Context<Self>) -> Option<MergeJob> {
        assert_eq!(m.repo, "app");
        self.jobs.front().cloned()
    }
}

impl Handler<MergeDone> for FakeQueue {
    type Result = Result<(), CommandError>;
    fn handle(&mut self, m: MergeDone, _: &mut Context<Self>) -> Result<(), CommandError> {
        if self
            .jobs
            .front()
            .is_some_and(|j| j.change_id == m.change_id)
        {
            self.jobs.pop_front();
        }
        let _ = self.got.send(Got::Done(m.change_id, m.outcome));
        Ok(())
    }
}

impl Handler<Inspected> for FakeQueue {
    type Result = ();
    fn handle(&mut self, m: Inspected, _: &mut Context<Self>) {
        let _ = self.got.send(Got::Inspected(m.change_id, m.outcome));
    }
}

impl Handler<MainChecked> for FakeQueue {
    type Result = ();
    fn handle(&mut self, m: MainChecked, _: &mut Context<Self>) {
        assert_eq!(m.repo, "app");
        let _ = self.got.send(Got::Checked(m.sha, m.health));
    }
}

impl Handler<MainSeen> for FakeQueue {
    type Result = ();
    fn handle(&mut self, m: MainSeen, _: &mut Context<Self>) {
        assert_eq!(m.repo, "app");
        let _ = self.got.send(Got::Seen(m.sha));
    }
}

/// A repository actor for the fixture's origin (its check: `status.txt`
/// must not say "bad"; while the file `gate` exists it first announces
/// itself in `started` and waits), and its fake queue.
struct Harness {
    f: Fixture,
    queue: Addr<FakeQueue>,
    repo: Addr<RepoActor>,
    got: mpsc::UnboundedReceiver<Got>,
    /// Everything received so far, in order.
    log: Vec<Got>,
}

fn config(f: &Fixture, url: String, poll_s: u64) -> RepoConfig {
    let dir = f.tmp.path();
    let script = format!(
        "echo run >> {runs}; if [ -e {gate} ]; then touch {started}; while [ -e {gate} ]; do sleep 0.05; done; fi; cat status.txt; ! grep -q bad status.txt",
        runs = dir.join("runs").display(),
        gate = dir.join("gate").display(),
        started = dir.join("started").display(),
    );
    RepoConfig {
        name: "app".into(),
        url,
        main_branch: "main".into(),
        check_command: vec!["sh".into(), "-c".into(), script],
        check_timeout_s: 120,
        poll_s,
        gate: GateConfig::new(true, 20, 400, vec![], vec![], ReviewMode::None).unwrap(),
    }
}

impl Harness {
    fn start(f: Fixture, poll_s: u64) -> Harness {
        let url = f.url();
        Harness::start_with(f, |f| config(f, url, poll_s))
    }

    fn start_with(f: Fixture, cfg: impl FnOnce(&Fixture) -> RepoConfig) -> Harness {
        let (tx, got) = mpsc::unbounded_channel();
        let queue = FakeQueue {
            jobs: VecDeque::new(),
            got: tx,
        }
        .start();
        let links = RepoLinks {
            inspected: queue.clone().recipient(),
            next: queue.clone().recipient(),
            done: queue.clone().recipient(),
            main_checked: queue.clone().recipient(),
            main_seen: queue.clone().recipient(),
        };
        let repo = RepoActor::new(cfg(&f), &f.tmp.path().join("hub"), links).start();
        Harness {
            f,
            queue,
            repo,
            got,
            log: Vec::new(),
        }
    }

    /// The next message the queue got that `want` picks (others are
    /// logged and skipped).
    async fn wait_for<T>(&mut self, what: &str, mut want: impl FnMut(&Got) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let got = tokio::time::timeout_at(deadline, self.got.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what}; got {:#?}", self.log))
                .expect("the fake queue lives");
            self.log.push(got.clone());
            if let Some(t) = want(&got) {
                return t;
            }
        }
    }

    async fn main_checked(&mut self, sha: &str) -> MainHealth {
        self.wait_for(&format!("MainChecked for {sha}"), |g| match g {
            Got::Checked(s, h) if s == sha => Some(h.clone()),
            _ => None,
        })
        .await
    }

    async fn done(&mut self, change: &str) -> MergeOutcome {
        self.wait_for(&format!("MergeDone for {change}"), |g| match g {
            Got::Done(c, o) if c == change => Some(o.clone()),
            _ => None,
        })
        .await
    }

    /// Wait until the actor checked main as it is at start.
    async fn settled(&mut self) -> String {
        let main = self.f.origin_rev("main");
        assert!(matches!(
            self.main_checked(&main).await,
            MainHealth::Green { .. }
        ));
        main
    }

    fn merge(&self, change: &str, branch: &str, head: &str) {
        self.queue.do_send(Enqueue(MergeJob {
            change_id: change.into(),
            task_id: format!("task-{change}"),
            task_title: format!("Do {change}"),
            agent_id: "agent1".into(),
            branch: branch.into(),
            head: head.into(),
        }));
        self.repo.do_send(MergeKick);
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.f.tmp.path().join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn parents(&self, sha: &str) -> Vec<String> {
        git(&self.f.origin, &["rev-list", "--parents", "-n1", sha])
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    }
}

/// Poll a condition (the check running) until it holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[actix_rt::test]
async fn a_change_is_merged_checked_and_pushed() {
    let mut h = Harness::start(Fixture::new(), 3600);
    let main = h.settled().await;
    let (_, head) = h.f.agent_branch("agent1/t1", &[("feature.txt", "new\n")]);
    h.merge("c1", "agent1/t1", &head);
    let MergeOutcome::Merged { sha, check } = h.done("c1").await else {
        panic!("merged: {:#?}", h.log)
    };
    // Main is the merge commit: main then the change's head.
    assert_eq!(h.f.origin_rev("main"), sha);
    assert_eq!(h.parents(&sha), vec![main, head]);
    assert_eq!(h.f.origin_show(&sha, "feature.txt"), "new");
    // Its check ran on exactly that commit, and passed.
    let check = check.expect("a check ran");
    assert_eq!(
        (check.exit_code, check.sha.as_deref()),
        (Some(0), Some(sha.as_str()))
    );
    assert!(h.log.contains(&Got::Seen(sha.clone())));
    let message = git(&h.f.origin, &["log", "-1", "--format=%s%n%b", &sha]);
    assert!(message.starts_with("Merge change c1: Do c1"), "{message}");
    assert!(message.contains("Task: task-c1"), "{message}");
    // No scratch work tree is left behind.
    let clone = h.f.clone_dir();
    assert_eq!(git(&clone, &["worktree", "list"]).lines().count(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(clone.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("scratch-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[actix_rt::test]
async fn a_failing_check_leaves_main_where_it_was() {
    let mut h = Harness::start(Fixture::new(), 3600);
    let main = h.settled().await;
    let (_, head) = h.f.agent_branch("agent1/t1", &[("status.txt", "bad\n")]);
    h.merge("c1", "agent1/t1", &head);
    let MergeOutcome::CheckFailed { check } = h.done("c1").await else {
        panic!("check failed: {:#?}", h.log)
    };
    assert_eq!(check.exit_code, Some(1));
    assert!(check.log_tail.contains("bad"), "{}", check.log_tail);
    let merge = check.sha.expect("the merge commit it ran on");
    assert_ne!(merge, main);
    assert_eq!(h.f.origin_rev("main"), main);
    // The next change goes on.
    let (_, good) = h.f.agent_branch("agent1/t2", &[("ok.txt", "ok\n")]);
    h.merge("c2", "agent1/t2", &good);
    assert!(matches!(h.done("c2").await, MergeOutcome::Merged { .. }));
}

#[actix_rt::test]
async fn a_conflict_names_its_paths() {
    let mut h = Harness::start(Fixture::new(), 3600);
    h.settled().await;
    let (_, head) =
        h.f.agent_branch("agent1/t1", &[("README", "agent's words\n")]);
    let theirs =
        h.f.push_to_main(&[("README", "a person's words\n")], "edit");
    h.merge("c1", "agent1/t1", &head);
    assert_eq!(
        h.done("c1").await,
        MergeOutcome::Conflict {
            paths: vec!["README".into()]
        }
    );
    assert_eq!(h.f.origin_rev("main"), theirs);
}

#[actix_rt::test]
async fn main_moving_during_the_check_is_merged_again_onto_the_new_main() {
    let mut h = Harness::start(Fixture::new(), 3600);
    h.settled().await;
    let (_, head) = h.f.agent_branch("agent1/t1", &[("feature.txt", "new\n")]);
    let (gate, started) = (h.f.tmp.path().join("gate"), h.f.tmp.path().join("started"));
    std::fs::write(&gate, "").unwrap();
    h.merge("c1", "agent1/t1", &head);
    until("the merge's check starting", || exists(&started)).await;

    // While that check runs, an inspection is not held up behind it.
    let (base2, head2) = h.f.agent_branch("agent2/t2", &[("x.txt", "1\n2\n")]);
    h.repo.do_send(Inspect {
        change_id: "c2".into(),
        branch: "agent2/t2".into(),
        base: base2,
        head: head2,
    });
    let stat = h
        .wait_for("Inspected c2", |g| match g {
            Got::Inspected(c, o) if c == "c2" => Some(o.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(
        (stat.files, stat.lines_added),
        (vec!["x.txt".to_string()], 2)
    );

    // A person pushes to main meanwhile; then the check finishes (green).
    let theirs = h.f.push_to_main(&[("theirs.txt", "x\n")], "theirs");
    std::fs::remove_file(&gate).unwrap();
    let MergeOutcome::Merged { sha, check } = h.done("c1").await else {
        panic!("merged: {:#?}", h.log)
    };
    assert_eq!(h.f.origin_rev("main"), sha);
    assert_eq!(h.parents(&sha), vec![theirs.clone(), head.clone()]);
    assert_eq!(check.unwrap().sha.as_deref(), Some(sha.as_str()));
    // The new main was checked before anything was merged onto it.
    assert!(h
        .log
        .iter()
        .any(|g| matches!(g, Got::Checked(s, MainHealth::Green { .. }) if *s == theirs)));
}

#[actix_rt::test]
async fn a_change_already_on_main_is_reported_merged_without_merging_again() {
    let f = Fixture::new();
    let (_, head) = f.agent_branch("agent1/t1", &[("feature.txt", "new\n")]);
    // A hub before this one merged and pushed it, then died before its
    // outcome was recorded.
    let dir = f.tmp.path().join("earlier-hub").join("clone.git");
    git::ensure_clone(&f.url(), &dir).unwrap();
    let main = git::fetched_main(&dir, "main").unwrap();
    let MergeResult::Clean { sha: earlier, .. } =
        git::merge(&dir, &main, &head, "Merge c1").unwrap()
    else {
        panic!("clean")
    };
    git::push_main(&dir, "main", &earlier, &main).unwrap();

    let mut h = Harness::start(f, 3600);
    h.settled().await;
    let runs = h.runs();
    h.merge("c1", "agent1/t1", &head);
    assert_eq!(
        h.done("c1").await,
        MergeOutcome::Merged {
            sha: earlier.clone(),
            check: None
        }
    );
    assert_eq!(h.f.origin_rev("main"), earlier);
    assert_eq!(h.runs(), runs, "no check ran for it");
}

#[actix_rt::test]
async fn a_head_that_is_gone_is_unmergeable() {
    let mut h = Harness::start(Fixture::new(), 3600);
    h.settled().await;
    h.merge("c1", "agent1/t1", &"ab".repeat(20));
    let outcome = h.done("c1").await;
    let MergeOutcome::Unmergeable { reason } = outcome else {
        panic!("unmergeable: {outcome:?}")
    };
    assert!(reason.contains("not in the repository"), "{reason}");
}

#[actix_rt::test]
async fn a_direct_push_that_breaks_main_turns_it_red_and_a_fix_green() {
    let mut h = Harness::start(Fixture::new(), 1);
    h.settled().await;
    let broken = h.f.push_to_main(&[("status.txt", "bad\n")], "oops");
    let MainHealth::Red { check } = h.main_checked(&broken).await else {
        panic!("red: {:#?}", h.log)
    };
    assert_eq!(check.sha.as_deref(), Some(broken.as_str()));
    assert!(h.log.contains(&Got::Seen(broken.clone())));
    // While red, a change waits: nothing is merged onto a red main.
    let (_, head) = h.f.agent_branch("agent1/t1", &[("feature.txt", "new\n")]);
    h.merge("c1", "agent1/t1", &head);

    let fixed = h.f.push_to_main(&[("status.txt", "ok\n")], "fix");
    assert!(matches!(
        h.main_checked(&fixed).await,
        MainHealth::Green { .. }
    ));
    // Then the waiting change merges onto the fixed main.
    let MergeOutcome::Merged { sha, .. } = h.done("c1").await else {
        panic!("merged: {:#?}", h.log)
    };
    assert_eq!(h.parents(&sha)[0], fixed);
    assert!(!h
        .log
        .iter()
        .any(|g| matches!(g, Got::Done(_, o) if !matches!(o, MergeOutcome::Merged { .. }))));
}

#[actix_rt::test]
async fn an_unreachable_remote_is_retried_until_it_answers() {
    let f = Fixture::new();
    let later = f.tmp.path().join("not-yet.git");
    let url = later.display().to_string();
    let mut h = Harness::start_with(f, |f| config(f, url, 3600));
    // The remote appears after the actor's first attempt failed.
    let deadline = Instant::now() + Duration::from_secs(120);
    while h.repo.send(Failures).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&h.f.origin, &later).unwrap();
    let main = git(&later, &["rev-parse", "main"]);
    assert!(matches!(
        h.main_checked(&main).await,
        MainHealth::Green { .. }
    ));
}

#[actix_rt::test]
async fn inspections_report_the_measure_or_the_refusal() {
    let mut h = Harness::start(Fixture::new(), 3600);
    h.settled().await;
    let (base, head) = h.f.agent_branch("agent1/t1", &[("a.txt", "1\n2\n3\n")]);
    h.repo.do_send(Inspect {
        change_id: "c1".into(),
        branch: "agent1/t1".into(),
        base: base.clone(),
        head: head.clone(),
    });
    h.repo.do_send(Inspect {
        change_id: "c2".into(),
        branch: "agent1/none".into(),
        base,
        head,
    });
    let mut pending = vec!["c1", "c2"];
    while !pending.is_empty() {
        let (id, outcome) = h
            .wait_for("Inspected", |g| match g {
                Got::Inspected(c, o) => Some((c.clone(), o.clone())),
                _ => None,
            })
            .await;
        pending.retain(|p| *p != id);
        match id.as_str() {
            "c1" => assert_eq!(
                outcome.unwrap(),
                Diffstat {
                    files: vec!["a.txt".into()],
                    lines_added: 3,
                    lines_removed: 0
                }
            ),
            _ => assert!(outcome.unwrap_err().contains("gone")),
        }
    }
}

#[test]
fn backoff_grows_and_is_capped() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(3), Duration::from_secs(4));
    assert_eq!(backoff(40), BACKOFF_MAX);
}

#[test]
fn health_remembers_green_and_red() {
    let mut h = Health::default();
    h.mark_red("a");
    assert!(h.is_red("a") && !h.is_green("a"));
    h.mark_green("a");
    assert!(!h.is_red("a") && h.is_green("a"));
    for i in 0..(GREEN_KEPT + 5) {
        h.mark_green(&i.to_string());
    }
    assert_eq!(h.green.len(), GREEN_KEPT);
    assert!(!h.is_green("a"));
}
