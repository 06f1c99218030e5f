//! Unit tests of explain: the sentences for each thing that holds a task.

use super::*;
use crate::domain::queue::testing;
use agentcom_protocol::AttemptRef;

fn t(ms: i64) -> Timestamp {
    Timestamp(1_800_000_000_000 + ms)
}

fn task(needs: &[&str]) -> Task {
    Task {
        needed_capabilities: needs.iter().map(|s| s.to_string()).collect(),
        status: TaskStatus::Queued,
        generation: 0,
        assigned_to: None,
        ..testing::task("T1", 0)
    }
}

fn agent(id: &str, caps: &[&str], state: AgentState) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        state,
        capabilities: caps.iter().map(|s| s.to_string()).collect(),
        repos: vec![],
        connected: state != AgentState::Offline,
        current_task: matches!(state, AgentState::Working | AgentState::Stalled)
            .then(|| AttemptRef::new("OTHER", 1)),
        last_heartbeat_at: None,
        consecutive_failures: 0,
        degraded_until: (state == AgentState::Degraded).then(|| t(60_000)),
        degraded_reason: (state == AgentState::Degraded).then(|| "environment: disk full".into()),
        state_since: t(-120_000),
        created_at: t(-1_000_000),
        sidecar_version: None,
        recent: vec![],
        paused: false,
        context_window_tokens: None,
    }
}

#[test]
fn a_capability_nobody_has_is_named() {
    let r = explain(
        &task(&["gpu", "rust"]),
        &QueueFacts::default(),
        &[agent("a", &["rust"], AgentState::Idle)],
        t(0),
    );
    assert_eq!(r, ["No agent has capability gpu."]);
}

#[test]
fn each_able_agent_says_why_it_does_not_have_it() {
    let agents = [
        agent("off", &["rust"], AgentState::Offline),
        agent("busy", &["rust"], AgentState::Working),
        agent("sick", &["rust", "go"], AgentState::Degraded),
        agent("other", &["python"], AgentState::Idle),
    ];
    let facts = QueueFacts {
        place: Some(Place {
            lane: 4,
            ahead_in_lane: 2,
            in_earlier_lanes: 1,
        }),
        ..Default::default()
    };
    let r = explain(&task(&["rust"]), &facts, &agents, t(0));
    assert_eq!(
        r,
        [
            "Agent off is offline (for 2m 0s).".to_string(),
            "Agent busy is busy with task OTHER.".into(),
            format!(
                "Agent sick is degraded until {} (environment: disk full).",
                t(60_000)
            ),
            "In the normal lane, 2 tasks wait ahead of it, and 1 in lanes served before.".into(),
        ]
    );
}

#[test]
fn an_idle_able_agent_means_it_goes_at_the_next_match() {
    let r = explain(
        &task(&[]),
        &QueueFacts::default(),
        &[agent("ready", &[], AgentState::Idle)],
        t(0),
    );
    assert_eq!(
        r,
        [
            "Agent ready is idle.",
            "Agent ready can take it: it goes at the next match, in its turn."
        ]
    );
}

#[test]
fn time_red_main_review_author_and_other_statuses() {
    let mut waiting = task(&[]);
    waiting.not_before = Some(t(90_000));
    let r = explain(&waiting, &QueueFacts::default(), &[], t(0));
    assert_eq!(
        r[0],
        format!("It waits until {} (run_at), 1m 30s from now.", t(90_000))
    );

    let mut repo = task(&[]);
    repo.repo = Some("app".into());
    let r = explain(
        &repo,
        &QueueFacts {
            repo_red: true,
            ..Default::default()
        },
        &[],
        t(0),
    );
    assert!(r[0].contains("app's main fails its check"), "{r:?}");
    assert!(r[1].contains("clone of repository app"), "{r:?}");

    let mut review = task(&["review"]);
    review.exclude_agents = vec!["author".into()];
    let r = explain(
        &review,
        &QueueFacts::default(),
        &[agent("author", &["review"], AgentState::Idle)],
        t(0),
    );
    assert_eq!(
        r,
        [
            "Agent author is never given it (the author of the change it reviews).",
            "No other agent can take it."
        ]
    );

    let mut working = task(&[]);
    working.status = TaskStatus::Working;
    working.assigned_to = Some("w".into());
    working.generation = 2;
    assert_eq!(
        explain(&working, &QueueFacts::default(), &[], t(0)),
        ["It is working on agent w (attempt 2)."]
    );
}

#[test]
fn a_paused_lane_and_a_paused_agent_are_named() {
    let mut paused = agent("resting", &[], AgentState::Idle);
    paused.paused = true;
    let r = explain(
        &task(&[]),
        &QueueFacts {
            lane_paused: true,
            ..Default::default()
        },
        &[paused],
        t(0),
    );
    assert_eq!(
        r,
        [
            "The normal lane is paused by an operator (POST /api/lanes/normal/resume).",
            "Agent resting is paused by an operator (draining: it takes no new task)."
        ]
    );
}

#[test]
fn a_window_too_small_or_unsaid_is_named() {
    let mut task = task(&[]);
    task.context_budget_tokens = Some(100_000);
    let mut small = agent("small", &[], AgentState::Idle);
    small.context_window_tokens = Some(32_000);
    let unsaid = agent("unsaid", &[], AgentState::Idle);
    let mut big = agent("big", &[], AgentState::Working);
    big.context_window_tokens = Some(200_000);
    let r = explain(&task, &QueueFacts::default(), &[small, unsaid, big], t(0));
    assert!(
        r.contains(&"Agent small's context window (32000 tokens) is smaller than the task's budget (100000).".to_string()),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|s| s.starts_with("Agent unsaid reports no context window")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|s| s.starts_with("Agent big is busy")),
        "{r:?}"
    );
    assert!(!r.iter().any(|s| s.contains("can take it")), "{r:?}");
}

#[test]
fn an_agent_over_its_daily_tokens_and_the_fleet_cap_are_named() {
    let task = task(&[]);
    let facts = QueueFacts {
        daily_tokens: 1_000,
        spent_today: [("a1".to_string(), 1_200)].into(),
        fleet_cap: Some((2, 2)),
        ..QueueFacts::default()
    };
    let r = explain(
        &task,
        &facts,
        &[
            agent("a1", &[], AgentState::Idle),
            agent("a2", &[], AgentState::Idle),
        ],
        t(0),
    );
    assert!(
        r.iter()
            .any(|s| s.starts_with("Agent a1 spent its daily tokens (1200 of 1000)")),
        "{r:?}"
    );
    assert!(
        r.contains(
            &"The fleet cap (scheduler.max_concurrent = 2) is reached: 2 tasks are out."
                .to_string()
        ),
        "{r:?}"
    );
    assert!(
        !r.iter().any(|s| s.contains("can take it")),
        "held by the cap: {r:?}"
    );
}

#[test]
fn a_task_for_one_agent_names_it_and_only_it() {
    let mut pinned = task(&[]);
    pinned.for_agent = Some("new".into());
    let others = [
        agent("new", &[], AgentState::Offline),
        agent("old", &[], AgentState::Idle),
    ];
    let r = explain(&pinned, &QueueFacts::default(), &others, t(0));
    assert_eq!(
        r,
        [
            "Only agent new may take it (for_agent); no other agent is given it.",
            "Agent new is offline (for 2m 0s).",
        ],
        "the idle agent old is not offered as able"
    );

    let busy = [agent("new", &[], AgentState::Working)];
    let r = explain(&pinned, &QueueFacts::default(), &busy, t(0));
    assert_eq!(r[1], "Agent new is busy with task OTHER.");

    let idle = [agent("new", &[], AgentState::Idle)];
    let r = explain(&pinned, &QueueFacts::default(), &idle, t(0));
    assert_eq!(
        r[2],
        "Agent new can take it: it goes at the next match, in its turn."
    );

    let r = explain(&pinned, &QueueFacts::default(), &others[1..], t(0));
    assert_eq!(
        r,
        ["Only agent new may take it, and there is no agent new (revoked?)."]
    );

    let mut needy = task(&["gpu"]);
    needy.for_agent = Some("old".into());
    let r = explain(&needy, &QueueFacts::default(), &others, t(0));
    assert_eq!(
        r,
        ["Only agent old may take it, and it lacks what the task needs (gpu)."]
    );
}

#[test]
fn an_agent_whose_selftest_fails_is_named_with_the_failures() {
    let mut sick = agent("sick", &[], AgentState::Degraded);
    sick.degraded_until = None;
    sick.degraded_reason =
        Some("self-test failing: runner: not executable; disk: 12 MB free".into());
    let r = explain(&task(&[]), &QueueFacts::default(), &[sick], t(0));
    assert_eq!(
        r,
        ["Agent sick is degraded: its sidecar's self-test fails (runner: not executable; disk: 12 MB free); it takes work again once a self-test passes."]
    );
}
