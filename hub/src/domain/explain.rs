//! Explain: why a task is not running, in sentences that name what holds
//! it — its status, its time (`run_at`, a backoff), a paused lane, its
//! repository's red main, the capabilities no agent has, the one agent it
//! is pinned to (`for_agent`), the agents that have them and why each
//! cannot take it now (offline, busy, degraded — by its breaker or a
//! failing self-test —, stalled, paused, its author), and its place in the
//! lanes.
//!
//! Pure: it reads a task, what the queue knows of it ([`QueueFacts`]) and
//! the agents as the hub sees them; no I/O, no clock (time passed in).

use agentcom_protocol::{AgentInfo, AgentState, Task, TaskStatus, Timestamp};

use crate::domain::lanes::{lane_name, Place};
use crate::domain::limits::SELFTEST_FAILING;

/// What the queue knows of a task beyond the task itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueFacts {
    /// Where it waits, when queued in a lane.
    pub place: Option<Place>,
    /// Its repository's main is red: its tasks are held.
    pub repo_red: bool,
    /// An operator paused its priority's lane.
    pub lane_paused: bool,
    /// `scheduler.max_concurrent` is reached: (the cap, the tasks out).
    pub fleet_cap: Option<(usize, usize)>,
    /// `budgets.agent_daily_tokens` (0: none).
    pub daily_tokens: u64,
    /// Tokens each agent spent today.
    pub spent_today: std::collections::BTreeMap<String, u64>,
}

/// Why `task` is where it is, in sentences (the first says what it is
/// doing; the rest, for a queued task, what holds it).
pub(crate) fn explain(
    task: &Task,
    facts: &QueueFacts,
    agents: &[AgentInfo],
    now: Timestamp,
) -> Vec<String> {
    let mut out = Vec::new();
    match task.status {
        TaskStatus::Queued => {}
        TaskStatus::Assigned | TaskStatus::Working => {
            out.push(format!(
                "It is {} on agent {} (attempt {}).",
                task.status,
                task.assigned_to.as_deref().unwrap_or("?"),
                task.generation
            ));
            return out;
        }
        TaskStatus::InReview => {
            out.push(
                "It is in review: its change must merge (see GET /api/changes?status= for it)."
                    .into(),
            );
            return out;
        }
        TaskStatus::Failed => {
            out.push(format!(
                "Its last attempt failed ({}); it waits out its backoff until {}.",
                task.last_error.as_deref().unwrap_or("no error given"),
                task.not_before.map_or("now".into(), |t| t.to_string())
            ));
            return out;
        }
        TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled => {
            out.push(format!(
                "It is {}{}; nothing will run it unless it is retried.",
                task.status,
                task.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
            return out;
        }
    }
    if let Some(at) = task.not_before.filter(|at| *at > now) {
        out.push(format!(
            "It waits until {at} (run_at), {} from now.",
            duration(at.0 - now.0)
        ));
    }
    if facts.lane_paused {
        out.push(format!(
            "The {} lane is paused by an operator (POST /api/lanes/{}/resume).",
            task.priority.as_str(),
            task.priority.as_str()
        ));
    }
    if let Some(repo) = &task.repo {
        if facts.repo_red {
            out.push(format!(
                "Repository {repo}'s main fails its check: its tasks wait until a check of main passes."
            ));
        }
    }
    if let Some((cap, n)) = facts.fleet_cap {
        out.push(format!(
            "The fleet cap (scheduler.max_concurrent = {cap}) is reached: {n} tasks are out."
        ));
    }
    let able = agents_able(task, agents, &mut out);
    if !able.is_empty() {
        let spent = |a: &AgentInfo| facts.spent_today.get(&a.id).copied().unwrap_or(0);
        let over = |a: &AgentInfo| facts.daily_tokens > 0 && spent(a) >= facts.daily_tokens;
        let free: Vec<&AgentInfo> = able
            .iter()
            .copied()
            .filter(|a| a.state == AgentState::Idle && !a.paused && !over(a))
            .collect();
        for a in &able {
            if over(a) {
                out.push(format!(
                    "Agent {} spent its daily tokens ({} of {}); it gets work again the next UTC day.",
                    a.id,
                    spent(a),
                    facts.daily_tokens
                ));
            } else {
                out.push(why_not(a, now));
            }
        }
        let held = facts.repo_red
            || facts.lane_paused
            || facts.fleet_cap.is_some()
            || out.iter().any(|r| r.starts_with("It waits"));
        if !free.is_empty() && !held {
            out.push(format!(
                "Agent{} {} can take it: it goes at the next match, in its turn.",
                if free.len() == 1 { "" } else { "s" },
                names(&free)
            ));
        }
    }
    if let Some(p) = facts.place {
        out.push(format!(
            "In the {} lane, {} task{} wait{} ahead of it, and {} in lanes served before.",
            lane_name(p.lane),
            p.ahead_in_lane,
            if p.ahead_in_lane == 1 { "" } else { "s" },
            if p.ahead_in_lane == 1 { "s" } else { "" },
            p.in_earlier_lanes
        ));
    }
    out
}

/// The agents that could ever take `task` (the one it is pinned to,
/// capabilities, repository, not excluded); says so when there are none.
fn agents_able<'a>(
    task: &Task,
    agents: &'a [AgentInfo],
    out: &mut Vec<String>,
) -> Vec<&'a AgentInfo> {
    let has = |a: &AgentInfo| {
        task.needed_capabilities
            .iter()
            .all(|c| a.capabilities.contains(c))
            && task.repo.as_ref().is_none_or(|r| a.repos.contains(r))
    };
    let agents: Vec<&AgentInfo> = match &task.for_agent {
        None => agents.iter().collect(),
        Some(only) => {
            let Some(a) = agents.iter().find(|a| &a.id == only) else {
                out.push(format!(
                    "Only agent {only} may take it, and there is no agent {only} (revoked?)."
                ));
                return Vec::new();
            };
            if !has(a) {
                out.push(format!(
                    "Only agent {only} may take it, and it lacks what the task needs ({}).",
                    needs_of(task)
                ));
                return Vec::new();
            }
            out.push(format!(
                "Only agent {only} may take it (for_agent); no other agent is given it."
            ));
            vec![a]
        }
    };
    let agents = &agents[..];
    let able: Vec<&AgentInfo> = agents.iter().copied().filter(|a| has(a)).collect();
    if able.is_empty() {
        let before = out.len();
        let missing: Vec<&String> = task
            .needed_capabilities
            .iter()
            .filter(|c| !agents.iter().any(|a| a.capabilities.contains(c)))
            .collect();
        if !missing.is_empty() {
            out.push(format!(
                "No agent has capability {}.",
                missing
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(repo) = &task.repo {
            if !agents.iter().any(|a| a.repos.contains(repo)) {
                out.push(format!(
                    "No connected agent has a clone of repository {repo} (its sidecar's [git] repo)."
                ));
            }
        }
        if out.len() == before {
            out.push(format!(
                "No agent has all of {} together.",
                task.needed_capabilities.join(", ")
            ));
        }
        return able;
    }
    let (excluded, able): (Vec<&AgentInfo>, Vec<&AgentInfo>) = able
        .into_iter()
        .partition(|a| task.exclude_agents.contains(&a.id));
    for a in excluded {
        out.push(format!(
            "Agent {} is never given it (the author of the change it reviews).",
            a.id
        ));
    }
    let (small, able): (Vec<&AgentInfo>, Vec<&AgentInfo>) =
        able.into_iter()
            .partition(|a| match task.context_budget_tokens {
                Some(b) => a.context_window_tokens.is_none_or(|w| w < b),
                None => false,
            });
    for a in small {
        let budget = task.context_budget_tokens.unwrap_or(0);
        out.push(match a.context_window_tokens {
            Some(w) => format!(
                "Agent {}'s context window ({w} tokens) is smaller than the task's budget ({budget}).",
                a.id
            ),
            None => format!(
                "Agent {} reports no context window (context_window_tokens in its sidecar's config), so it takes only tasks without a budget; this one's is {budget}.",
                a.id
            ),
        });
    }
    if able.is_empty() {
        out.push("No other agent can take it.".into());
    }
    able
}

/// Why an able agent does not have it now.
fn why_not(a: &AgentInfo, now: Timestamp) -> String {
    let since = duration(now.0 - a.state_since.0);
    if a.paused && matches!(a.state, AgentState::Idle) {
        return format!(
            "Agent {} is paused by an operator (draining: it takes no new task).",
            a.id
        );
    }
    match a.state {
        AgentState::Offline => format!("Agent {} is offline (for {since}).", a.id),
        AgentState::Assigned | AgentState::Working => format!(
            "Agent {} is busy with task {}.",
            a.id,
            a.current_task
                .as_ref()
                .map_or("?".to_string(), |t| t.task_id.clone())
        ),
        AgentState::Stalled => format!(
            "Agent {} is stalled on task {} (no activity for {since}).",
            a.id,
            a.current_task
                .as_ref()
                .map_or("?".to_string(), |t| t.task_id.clone())
        ),
        AgentState::Degraded => {
            let reason = a.degraded_reason.as_deref().unwrap_or("too many failures");
            match reason
                .strip_prefix(SELFTEST_FAILING)
                .map(|r| r.trim_start_matches(':').trim())
            {
                Some(failures) => format!(
                    "Agent {} is degraded: its sidecar's self-test fails ({failures}); it takes work again once a self-test passes.",
                    a.id
                ),
                None => format!(
                    "Agent {} is degraded until {} ({reason}).",
                    a.id,
                    a.degraded_until.map_or("?".to_string(), |t| t.to_string()),
                ),
            }
        }
        AgentState::Idle => format!("Agent {} is idle.", a.id),
    }
}

/// What a task needs, in words.
fn needs_of(task: &Task) -> String {
    let mut needs: Vec<String> = task.needed_capabilities.clone();
    if let Some(repo) = &task.repo {
        needs.push(format!("a clone of repository {repo}"));
    }
    needs.join(", ")
}

fn names(agents: &[&AgentInfo]) -> String {
    agents
        .iter()
        .map(|a| a.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ms` in words: `45s`, `3m 20s`, `2h 5m`.
fn duration(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests;
