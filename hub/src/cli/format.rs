//! What the admin CLI prints for people: a task with its history, the
//! task and agent tables, a sidecar's config. Pure functions, data in and
//! text out (the current time passed in); every text that came from
//! outside (titles, errors, results) is made printable first, so nothing
//! a submitter or an agent wrote can drive the operator's terminal. This
//! module must never call the hub, read a file or the clock.

use agentcom_protocol::{AgentInfo, AgentState, Task, Timestamp};

use crate::logging::printable;

/// How many lines of a task's description `task show` prints.
const DESCRIPTION_LINES: usize = 12;

/// `task submit`'s answer: the id, the status, the title.
pub(crate) fn submitted_line(t: &Task) -> String {
    format!("{} {} {}", cell(&t.id), t.status, cell(&t.title))
}

/// `task wait`'s progress line: the task's status, and its agent once it
/// has one.
pub(crate) fn status_line(t: &Task) -> String {
    match &t.assigned_to {
        Some(a) if t.generation > 0 => format!("{} {} ({})", cell(&t.id), t.status, cell(a)),
        _ => format!("{} {}", cell(&t.id), t.status),
    }
}

/// `task wait`'s last line: how the task ended, with its summary or
/// error.
pub(crate) fn ended_line(t: &Task) -> String {
    let why = match (&t.result, &t.last_error) {
        (Some(r), _) if t.status == agentcom_protocol::TaskStatus::Completed => {
            r.summary.as_deref().map(cell).unwrap_or_default()
        }
        (_, Some(e)) => cell(e),
        _ => String::new(),
    };
    let by = t
        .assigned_to
        .as_deref()
        .map(|a| format!(" by {}", cell(a)))
        .unwrap_or_default();
    if why.is_empty() {
        format!("{} {}{by}", cell(&t.id), t.status)
    } else {
        format!("{} {}{by}: {why}", cell(&t.id), t.status)
    }
}

/// Columns under their headers, each as wide as its widest cell, two
/// spaces apart; the last column is not padded.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// How long ago `then` was, in one unit or two: `4s`, `3m 20s`, `2h 5m`,
/// `3d 4h`; a time ahead of `now` counts as now.
pub(crate) fn age(then: Timestamp, now: Timestamp) -> String {
    let s = now.millis_since(then).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s % 60 == 0 => format!("{}m", s / 60),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A time for people: `2026-05-01 10:00:00` (UTC).
pub(crate) fn when(t: Timestamp) -> String {
    let text = t.to_rfc3339();
    text.get(..19).unwrap_or(&text).replace('T', " ")
}

/// A time with its milliseconds, for ordered events: `10:00:00.123`
/// after the date.
fn when_ms(t: Timestamp) -> String {
    t.to_rfc3339().trim_end_matches('Z').replace('T', " ")
}

/// One cell from outside text: printable, on one line.
fn cell(text: &str) -> String {
    printable(text).into_owned()
}

fn or_dash(v: Option<&str>) -> String {
    v.map(cell).unwrap_or_else(|| "-".into())
}

/// `task show ID`: the task's fields, what its earlier attempts left, its
/// history as a table.
pub(crate) fn task_view(t: &Task, now: Timestamp) -> String {
    let mut out = format!("Task {}\n  {}\n", cell(&t.id), cell(&t.title));
    let description: Vec<&str> = t.description.lines().collect();
    if !description.is_empty() {
        out.push('\n');
        for line in description.iter().take(DESCRIPTION_LINES) {
            out.push_str(&format!("  | {}\n", cell(line)));
        }
        if description.len() > DESCRIPTION_LINES {
            out.push_str(&format!(
                "  | … ({} more lines; --json shows them)\n",
                description.len() - DESCRIPTION_LINES
            ));
        }
    }
    out.push('\n');
    let mut fields: Vec<(&str, String)> = vec![
        (
            "status",
            format!(
                "{} since {} ({} ago)",
                t.status,
                when(t.updated_at),
                age(t.updated_at, now)
            ),
        ),
        ("priority", t.priority.to_string()),
        (
            "kind",
            serde_json::to_value(t.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "task".into()),
        ),
        ("repo", or_dash(t.repo.as_deref())),
        ("agent", or_dash(t.assigned_to.as_deref())),
        ("needs", {
            let caps = t.needed_capabilities.join(", ");
            if caps.is_empty() {
                "-".into()
            } else {
                cell(&caps)
            }
        }),
        ("generation", t.generation.to_string()),
        ("attempts", {
            let mut a = format!("{} (max retries {})", t.attempts, t.max_retries);
            if t.free_attempts > 0 {
                a.push_str(&format!(
                    ", {} not counted (environment or rate limit)",
                    t.free_attempts
                ));
            }
            a
        }),
        ("created", when(t.created_at)),
    ];
    if let Some(at) = t.not_before {
        fields.push(("not before", when(at)));
    }
    if let Some(at) = t.started_at {
        fields.push(("started", when(at)));
    }
    if let Some(at) = t.finished_at {
        fields.push(("finished", when(at)));
    }
    if let Some(agent) = &t.for_agent {
        fields.push(("only for", cell(agent)));
    }
    if !t.exclude_agents.is_empty() {
        fields.push(("never to", cell(&t.exclude_agents.join(", "))));
    }
    if let Some(tokens) = t.context_budget_tokens {
        fields.push(("context", format!("{tokens} tokens")));
    }
    if let Some(e) = &t.last_error {
        fields.push(("last error", cell(e)));
    }
    if let Some(r) = &t.result {
        let text = |k: &str| r.extra.get(k).and_then(|v| v.as_str()).map(cell);
        if let Some(v) = text("verdict") {
            fields.push(("verdict", v));
        }
        if let Some(n) = text("notes") {
            fields.push(("notes", n));
        }
        if let Some(s) = &r.summary {
            fields.push(("result", cell(s)));
        } else if !r.no_changes && text("verdict").is_none() {
            fields.push(("result", "(no summary)".into()));
        }
        if r.no_changes {
            fields.push(("changes", "none: nothing to merge".into()));
        }
        for (name, v) in [
            ("branch", &r.branch),
            ("base", &r.base),
            ("head", &r.head),
            ("pr", &r.pr_url),
        ] {
            if let Some(v) = v {
                fields.push((name, cell(v)));
            }
        }
        if let Some(n) = r.tokens_used {
            fields.push(("tokens", n.to_string()));
        }
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in fields {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }

    if !t.dossier.attempts.is_empty() {
        out.push_str("\nEarlier attempts\n");
        let rows: Vec<Vec<String>> = t
            .dossier
            .attempts
            .iter()
            .map(|a| {
                vec![
                    a.generation.to_string(),
                    cell(&a.agent_id),
                    cell(&a.outcome),
                    a.blame.map_or("-".into(), |b| b.to_string()),
                    when(a.at),
                    or_dash(a.error.as_deref()),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["GEN", "AGENT", "OUTCOME", "BLAME", "ENDED", "ERROR"],
            &rows,
        )));
    }

    out.push_str("\nHistory (UTC)\n");
    match &t.history {
        Some(h) if !h.is_empty() => {
            let rows: Vec<Vec<String>> = h
                .iter()
                .map(|e| {
                    let status = |s: Option<agentcom_protocol::TaskStatus>| {
                        s.map_or("-".to_string(), |s| s.to_string())
                    };
                    let mut detail = or_dash(e.detail.as_deref());
                    if let Some(b) = e.blame {
                        detail = format!("[blame: {b}] {detail}");
                    }
                    vec![
                        when_ms(e.at),
                        e.event.to_string(),
                        format!("{} → {}", status(e.from), status(e.to)),
                        or_dash(e.agent_id.as_deref()),
                        e.generation.to_string(),
                        detail,
                    ]
                })
                .collect();
            out.push_str(&indent(&table(
                &["TIME", "EVENT", "FROM → TO", "AGENT", "GEN", "DETAIL"],
                &rows,
            )));
        }
        _ => out.push_str("  (none shown)\n"),
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `task list`: one task a line, newest first as given.
pub(crate) fn task_table(tasks: &[Task], now: Timestamp) -> String {
    if tasks.is_empty() {
        return "no tasks\n".into();
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                cell(&t.id),
                t.status.to_string(),
                t.priority.to_string(),
                t.generation.to_string(),
                t.attempts.to_string(),
                or_dash(t.assigned_to.as_deref()),
                or_dash(t.repo.as_deref()),
                format!("{} ago", age(t.updated_at, now)),
                cell(&t.title),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATUS", "PRIO", "GEN", "TRY", "AGENT", "REPO", "UPDATED", "TITLE",
        ],
        &rows,
    )
}

/// `agent list`: one agent a line, with its last heartbeat's age and,
/// while degraded, why and until when.
pub(crate) fn agent_table(agents: &[AgentInfo], now: Timestamp) -> String {
    if agents.is_empty() {
        return "no agents\n".into();
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let state = if a.paused {
                format!("{},paused", a.state)
            } else {
                a.state.to_string()
            };
            let note = if a.state == AgentState::Degraded {
                let mut n = "degraded".to_string();
                if let Some(until) = a.degraded_until {
                    n.push_str(&format!(" until {}", when(until)));
                }
                if let Some(why) = &a.degraded_reason {
                    n.push_str(&format!(": {}", cell(why)));
                }
                n
            } else {
                String::new()
            };
            vec![
                cell(&a.id),
                state,
                if a.connected { "yes" } else { "no" }.into(),
                a.current_task
                    .as_ref()
                    .map_or("-".into(), |t| cell(&t.to_string())),
                a.last_heartbeat_at
                    .map_or("never".into(), |t| format!("{} ago", age(t, now))),
                a.consecutive_failures.to_string(),
                cell(&a.capabilities.join(",")),
                note,
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "STATE",
            "CONNECTED",
            "TASK",
            "HEARTBEAT",
            "FAILS",
            "CAPABILITIES",
            "NOTE",
        ],
        &rows,
    )
}

/// What goes into a sidecar's config file.
pub(crate) struct SidecarConfigText<'a> {
    /// The hub's WebSocket, `ws://…/ws` or `wss://…/ws` (`hub_url`);
    /// several hubs on one database: each one's (`hub_urls`).
    pub(crate) hub_urls: &'a [String],
    pub(crate) agent_id: &'a str,
    pub(crate) token: &'a str,
    pub(crate) capabilities: &'a [String],
    /// Unset: left to the sidecar's per-user default (said in a comment).
    pub(crate) state_dir: Option<&'a str>,
    /// The CA file the sidecar trusts for `wss://`, if any.
    pub(crate) ca_file: Option<&'a str>,
    /// The runner program; unset: a comment says where to set it.
    pub(crate) runner: Option<&'a str>,
}

/// A TOML basic string.
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A sidecar's `sidecar.toml`: the hub, the agent and its token, its
/// capabilities, where its state lives and what runs its tasks.
pub(crate) fn sidecar_config(c: &SidecarConfigText<'_>) -> String {
    let caps: Vec<String> = c.capabilities.iter().map(|s| toml_str(s)).collect();
    let hubs = match c.hub_urls {
        [one] => format!("hub_url = {}", toml_str(one)),
        several => format!(
            "hub_urls = [{}]",
            several
                .iter()
                .map(|u| toml_str(u))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut out = format!(
        "{hubs}\nagent_id = {}\ntoken = {}\ncapabilities = [{}]\n",
        toml_str(c.agent_id),
        toml_str(c.token),
        caps.join(", ")
    );
    match c.state_dir {
        Some(dir) => out.push_str(&format!("state_dir = {}\n", toml_str(dir))),
        None => out.push_str(&format!(
            "# state_dir is not set: the sidecar uses /var/lib/agentcom/{id} when it runs\n\
             # as root, else ~/.local/state/agentcom/{id}. Set it to choose another.\n",
            id = c.agent_id
        )),
    }
    if let Some(ca) = c.ca_file {
        out.push_str(&format!("ca_file = {}\n", toml_str(ca)));
    }
    out.push_str("\n[runner]\nmode = \"exec\"\n");
    match c.runner {
        Some(r) => out.push_str(&format!("command = [{}]\n", toml_str(r))),
        None => out.push_str(
            "# The program that does a task: set it before starting the sidecar (it\n\
             # reads AGENTCOM_TASK_FILE and writes AGENTCOM_RESULT_FILE; see\n\
             # deploy/runner.example.sh).\n\
             # command = [\"/path/to/agent-runner\"]\n",
        ),
    }
    out.push_str("timeout_s = 3600\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_lines_say_the_status_the_agent_and_how_it_ended() {
        let mut t = task();
        assert_eq!(ended_line(&t), "01JTASK completed by ada");
        t.result =
            Some(serde_json::from_value(serde_json::json!({"summary": "said bonjour"})).unwrap());
        assert_eq!(ended_line(&t), "01JTASK completed by ada: said bonjour");
        assert_eq!(status_line(&t), "01JTASK completed (ada)");
        t.status = agentcom_protocol::TaskStatus::Dead;
        t.last_error = Some("no\u{1b}[31m".into());
        assert_eq!(ended_line(&t), "01JTASK dead by ada: no\\u{1b}[31m");
        t.assigned_to = None;
        t.generation = 0;
        t.status = agentcom_protocol::TaskStatus::Queued;
        assert_eq!(status_line(&t), "01JTASK queued");
    }
    use agentcom_protocol::{
        AttemptRecord, AttemptRef, Blame, Dossier, HistoryEntry, Priority, TaskEvent, TaskResult,
        TaskStatus,
    };

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn task() -> Task {
        serde_json::from_value(serde_json::json!({
            "id": "01JTASK",
            "title": "Say hello in French",
            "priority": "high",
            "max_retries": 3,
            "timeout_s": 3600,
            "status": "completed",
            "generation": 2,
            "attempts": 2,
            "assigned_to": "ada",
            "created_at": "2026-05-01T10:00:00.000Z",
            "updated_at": "2026-05-01T10:00:09.500Z",
            "not_before": null,
            "result": null,
            "last_error": null,
        }))
        .unwrap()
    }

    fn entry(
        t: &str,
        event: TaskEvent,
        from: Option<TaskStatus>,
        to: TaskStatus,
        agent: Option<&str>,
        generation: u64,
        detail: Option<&str>,
    ) -> HistoryEntry {
        HistoryEntry {
            at: at(t),
            event,
            from,
            to: Some(to),
            agent_id: agent.map(str::to_string),
            generation,
            detail: detail.map(str::to_string),
            blame: None,
        }
    }

    #[test]
    fn a_table_lines_up_its_columns_and_leaves_the_last_unpadded() {
        let t = table(
            &["A", "BEE", "C"],
            &[
                vec!["long cell".into(), "x".into(), "end".into()],
                vec!["y".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(t, "A          BEE  C\nlong cell  x    end\ny\n");
    }

    #[test]
    fn ages_read_in_one_or_two_units() {
        let now = at("2026-05-01T12:00:00Z");
        let ago = |s: i64| age(now.plus_millis(-s * 1000), now);
        assert_eq!(ago(0), "0s");
        assert_eq!(ago(59), "59s");
        assert_eq!(ago(120), "2m");
        assert_eq!(ago(200), "3m 20s");
        assert_eq!(ago(7500), "2h 5m");
        assert_eq!(ago(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(age(now.plus_millis(5000), now), "0s", "ahead counts as now");
        assert_eq!(when(at("2026-05-01T10:00:00.123Z")), "2026-05-01 10:00:00");
    }

    #[test]
    fn a_task_shows_its_fields_result_dossier_and_history_table() {
        let mut t = task();
        t.repo = Some("hello".into());
        t.needed_capabilities = vec!["code".into()];
        t.started_at = Some(at("2026-05-01T10:00:05Z"));
        t.result = Some(TaskResult {
            summary: Some("wrote greetings/french.txt".into()),
            branch: Some("ada/01JTASK".into()),
            head: Some("abc123".into()),
            ..Default::default()
        });
        t.last_error = Some("check failed".into());
        t.dossier = Dossier {
            attempts: vec![AttemptRecord {
                generation: 1,
                agent_id: "grace".into(),
                outcome: "sent_back".into(),
                blame: Some(Blame::Task),
                error: Some("the check failed on the merge".into()),
                log_tail: None,
                branch: None,
                head: None,
                at: at("2026-05-01T10:00:04Z"),
            }],
        };
        t.history = Some(vec![
            entry(
                "2026-05-01T10:00:00.000Z",
                TaskEvent::Created,
                None,
                TaskStatus::Queued,
                None,
                0,
                None,
            ),
            entry(
                "2026-05-01T10:00:00.250Z",
                TaskEvent::Assigned,
                Some(TaskStatus::Queued),
                TaskStatus::Assigned,
                Some("grace"),
                1,
                Some("to grace"),
            ),
            entry(
                "2026-05-01T10:00:09.500Z",
                TaskEvent::Completed,
                Some(TaskStatus::InReview),
                TaskStatus::Completed,
                Some("ada"),
                2,
                Some("merged as def456"),
            ),
        ]);
        let text = task_view(&t, at("2026-05-01T10:01:09.500Z"));
        let want = [
            "Task 01JTASK\n  Say hello in French\n",
            "  status      completed since 2026-05-01 10:00:09 (1m ago)\n",
            "  priority    high\n",
            "  kind        task\n",
            "  repo        hello\n",
            "  agent       ada\n",
            "  needs       code\n",
            "  generation  2\n",
            "  attempts    2 (max retries 3)\n",
            "  started     2026-05-01 10:00:05\n",
            "  last error  check failed\n",
            "  result      wrote greetings/french.txt\n",
            "  branch      ada/01JTASK\n",
            "  head        abc123\n",
            "\nEarlier attempts\n  GEN  AGENT  OUTCOME    BLAME  ENDED                ERROR\n  1    grace  sent_back  task   2026-05-01 10:00:04  the check failed on the merge\n",
            "\nHistory (UTC)\n  TIME                     EVENT      FROM → TO              AGENT  GEN  DETAIL\n",
            "  2026-05-01 10:00:00.000  created    - → queued             -      0    -\n",
            "  2026-05-01 10:00:00.250  assigned   queued → assigned      grace  1    to grace\n",
            "  2026-05-01 10:00:09.500  completed  in_review → completed  ada    2    merged as def456\n",
        ];
        for w in want {
            assert!(text.contains(w), "missing {w:?} in:\n{text}");
        }
        assert!(!text.contains("finished"), "{text}");
    }

    #[test]
    fn a_review_task_shows_its_verdict_and_a_long_description_is_cut() {
        let mut t = task();
        t.kind = agentcom_protocol::TaskKind::Review;
        t.description = (1..=20).map(|i| format!("line {i}\n")).collect();
        let mut r = TaskResult {
            no_changes: true,
            ..Default::default()
        };
        r.extra.insert("verdict".into(), "approve".into());
        r.extra
            .insert("notes".into(), "one line\u{1b}[31m each".into());
        t.result = Some(r);
        let text = task_view(&t, at("2026-05-01T10:00:10Z"));
        assert!(text.contains("  kind        review\n"), "{text}");
        assert!(text.contains("  verdict     approve\n"), "{text}");
        assert!(
            text.contains("  notes       one line\\u{1b}[31m each\n"),
            "control characters are shown, not obeyed: {text}"
        );
        assert!(
            text.contains("  changes     none: nothing to merge\n"),
            "{text}"
        );
        assert!(!text.contains("  result "), "{text}");
        assert!(text.contains("  | line 12\n"), "{text}");
        assert!(!text.contains("line 13"), "{text}");
        assert!(text.contains("  | … (8 more lines; --json shows them)\n"));
        assert!(text.contains("History (UTC)\n  (none shown)\n"), "{text}");
    }

    #[test]
    fn the_task_table_has_one_line_a_task() {
        let now = at("2026-05-01T10:00:19.500Z");
        let mut queued = task();
        queued.id = "01JOTHER".into();
        queued.status = TaskStatus::Queued;
        queued.priority = Priority::Normal;
        queued.assigned_to = None;
        queued.generation = 0;
        queued.attempts = 0;
        queued.title = "Tab\there".into();
        let mut done = task();
        done.repo = Some("hello".into());
        let text = task_table(&[done, queued], now);
        assert_eq!(
            text,
            "ID        STATUS     PRIO    GEN  TRY  AGENT  REPO   UPDATED  TITLE\n\
             01JTASK   completed  high    2    2    ada    hello  10s ago  Say hello in French\n\
             01JOTHER  queued     normal  0    0    -      -      10s ago  Tab\\there\n"
        );
        assert_eq!(task_table(&[], now), "no tasks\n");
    }

    #[test]
    fn the_agent_table_shows_heartbeat_age_and_why_an_agent_is_degraded() {
        let now = at("2026-05-01T10:00:30Z");
        let agent = |id: &str, state: AgentState| AgentInfo {
            id: id.into(),
            state,
            capabilities: vec!["code".into(), "review".into()],
            repos: vec![],
            connected: state != AgentState::Offline,
            current_task: None,
            last_heartbeat_at: Some(at("2026-05-01T10:00:26Z")),
            consecutive_failures: 0,
            degraded_until: None,
            degraded_reason: None,
            state_since: at("2026-05-01T10:00:00Z"),
            created_at: at("2026-05-01T10:00:00Z"),
            sidecar_version: None,
            recent: vec![],
            paused: false,
            context_window_tokens: None,
        };
        let mut ada = agent("ada", AgentState::Working);
        ada.current_task = Some(AttemptRef::new("01JTASK", 2));
        let mut grace = agent("grace", AgentState::Degraded);
        grace.consecutive_failures = 3;
        grace.degraded_until = Some(at("2026-05-01T10:05:00Z"));
        grace.degraded_reason = Some("3 failures in a row".into());
        let mut linus = agent("linus", AgentState::Offline);
        linus.last_heartbeat_at = None;
        linus.paused = true;
        let text = agent_table(&[ada, grace, linus], now);
        assert_eq!(
            text,
            "AGENT  STATE           CONNECTED  TASK       HEARTBEAT  FAILS  CAPABILITIES  NOTE\n\
             ada    working         yes        01JTASK#2  4s ago     0      code,review\n\
             grace  degraded        yes        -          4s ago     3      code,review   degraded until 2026-05-01 10:05:00: 3 failures in a row\n\
             linus  offline,paused  no         -          never      0      code,review\n"
        );
        assert_eq!(agent_table(&[], now), "no agents\n");
    }

    #[test]
    fn a_sidecar_config_leaves_state_dir_and_the_runner_to_be_set() {
        let caps = vec!["git".to_string(), "rust".to_string()];
        let text = sidecar_config(&SidecarConfigText {
            hub_urls: &["ws://127.0.0.1:4000/ws".to_string()],
            agent_id: "loash",
            token: "acm_agent_x",
            capabilities: &caps,
            state_dir: None,
            ca_file: None,
            runner: None,
        });
        assert!(text.starts_with("hub_url = \"ws://127.0.0.1:4000/ws\"\nagent_id = \"loash\"\ntoken = \"acm_agent_x\"\ncapabilities = [\"git\", \"rust\"]\n"), "{text}");
        assert!(!text.contains("\nstate_dir"), "{text}");
        assert!(
            text.contains("# state_dir is not set: the sidecar uses /var/lib/agentcom/loash when it runs\n# as root, else ~/.local/state/agentcom/loash."),
            "{text}"
        );
        assert!(
            text.contains("# command = [\"/path/to/agent-runner\"]\n"),
            "{text}"
        );
        assert!(!text.contains("\ncommand"), "{text}");

        let text = sidecar_config(&SidecarConfigText {
            hub_urls: &["wss://hub:4000/ws".to_string()],
            agent_id: "loash",
            token: "t",
            capabilities: &[],
            state_dir: Some("/srv/a \"b\""),
            ca_file: Some("/etc/ca.pem"),
            runner: Some("/usr/local/bin/run"),
        });
        assert!(
            text.contains("state_dir = \"/srv/a \\\"b\\\"\"\n"),
            "{text}"
        );
        assert!(text.contains("ca_file = \"/etc/ca.pem\"\n"), "{text}");
        assert!(
            text.contains("\n[runner]\nmode = \"exec\"\ncommand = [\"/usr/local/bin/run\"]\ntimeout_s = 3600\n"),
            "{text}"
        );
        assert!(!text.contains('#'), "nothing left to set: {text}");
    }

    #[test]
    fn a_sidecar_config_for_several_hubs_names_each_in_hub_urls() {
        let urls = ["ws://a:4000/ws".to_string(), "ws://b:4000/ws".to_string()];
        let text = sidecar_config(&SidecarConfigText {
            hub_urls: &urls,
            agent_id: "loash",
            token: "t",
            capabilities: &[],
            state_dir: None,
            ca_file: None,
            runner: None,
        });
        assert!(
            text.starts_with(
                "hub_urls = [\"ws://a:4000/ws\", \"ws://b:4000/ws\"]\nagent_id = \"loash\"\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn toml_strings_escape_what_toml_needs() {
        assert_eq!(toml_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
