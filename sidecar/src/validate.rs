//! The rules for values that come from outside the sidecar and end up in
//! a path, a process argument, the runner's environment, a git ref or a
//! timer: the task id and the assignment the hub sends, the heartbeat
//! settings of its `welcome`, the agent id (a branch name's first half)
//! and repository names (a task's `repo`, `[git] repo`).
//!
//! A task id names the attempt's folder (`tasks/<id>-<generation>`), its
//! outbox file, `AGENTCOM_TASK_ID` and the branch `{agent_id}/{task_id}`,
//! so it must be a plain name: `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$` (the
//! hub's ids are 26-character ULIDs). Nothing else can then climb out of
//! the state dir, pass for an option, or make an invalid ref.
//!
//! Pure: it never touches the disk, the clock or a socket, and it decides
//! nothing about an attempt — the attempt machine and the daemon ask it
//! before they use a value.

use std::time::Duration;

use agentcom_protocol::{AttemptRef, FailClass, Task};

/// The longest task id the sidecar takes.
pub(crate) const MAX_TASK_ID_LEN: usize = 128;

/// The longest heartbeat interval the sidecar keeps, whatever the hub says.
pub(crate) const MAX_HEARTBEAT_INTERVAL_S: u64 = 3600;

/// The longest silence from the hub the sidecar waits out before it
/// reconnects, whatever the hub says.
pub(crate) const MAX_SILENCE_S: u64 = 3 * MAX_HEARTBEAT_INTERVAL_S;

/// Whether `id` may name a task on this machine.
pub(crate) fn task_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if first_ok && rest_ok && id.len() <= MAX_TASK_ID_LEN {
        Ok(())
    } else {
        Err(format!(
            "invalid task id {}: it must be 1 to {MAX_TASK_ID_LEN} of A-Z, a-z, 0-9, '_' and '-', starting with a letter or digit",
            shown(id, 64)
        ))
    }
}

/// Whether the sidecar may take an assignment: its task id is valid and
/// its body is about the same attempt (the body is what the runner reads).
pub(crate) fn assignment(attempt: &AttemptRef, body: &Task) -> Result<(), String> {
    task_id(&attempt.task_id)?;
    if body.id != attempt.task_id {
        return Err(format!(
            "invalid assignment: its task body names task {}, not {}",
            shown(&body.id, 64),
            attempt.task_id
        ));
    }
    if body.generation != attempt.generation {
        return Err(format!(
            "invalid assignment: its task body is generation {}, the assignment {}",
            body.generation, attempt.generation
        ));
    }
    Ok(())
}

/// Whether `id` may be this sidecar's agent id (the hub's rule: 1 to 64
/// of a-z, 0-9, '-' and '_', starting with a letter or digit).
pub(crate) fn agent_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && id.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "agent_id {}: it must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit",
            shown(id, 64)
        ))
    }
}

/// The longest repository name the sidecar takes.
pub(crate) const MAX_REPO_NAME_LEN: usize = 64;

/// Whether `name` may name a repository (a task's `repo`, `[git] repo`):
/// 1 to 64 of a-z, 0-9, '-', '_' and '.', starting with a letter or
/// digit (the agent id's rule, with '.').
pub(crate) fn repo_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' || c == '.');
    if first_ok && rest_ok && name.len() <= MAX_REPO_NAME_LEN {
        Ok(())
    } else {
        Err(format!(
            "invalid repository name {}: it must be 1 to {MAX_REPO_NAME_LEN} of a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
            shown(name, 64)
        ))
    }
}

/// The heartbeat timing the sidecar keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    /// How often to send a heartbeat.
    pub(crate) every: Duration,
    /// How long the hub may stay silent before the sidecar reconnects.
    pub(crate) silence_limit: Duration,
}

/// The hub's `welcome` values, made safe: the interval within
/// 1..=3600 s; the silence limit (the hub's timeout, else 3 intervals)
/// at least 2 intervals and at most [`MAX_SILENCE_S`]. Any `u64` goes.
pub(crate) fn heartbeat(interval_s: u64, timeout_s: Option<u64>) -> Heartbeat {
    let every = interval_s.clamp(1, MAX_HEARTBEAT_INTERVAL_S);
    let silence = timeout_s
        .unwrap_or(every.saturating_mul(3))
        .clamp(2 * every, MAX_SILENCE_S);
    Heartbeat {
        every: Duration::from_secs(every),
        silence_limit: Duration::from_secs(silence),
    }
}

/// The longest wait a rate-limited failure may ask for (a day).
pub(crate) const MAX_RETRY_AFTER_S: u64 = 86_400;

/// Whether `s` may be a `retry_after_s`: at most [`MAX_RETRY_AFTER_S`].
pub(crate) fn retry_after_s(s: u64) -> Result<u64, String> {
    if s <= MAX_RETRY_AFTER_S {
        Ok(s)
    } else {
        Err(format!(
            "retry_after_s must be at most {MAX_RETRY_AFTER_S} (a day), not {s}"
        ))
    }
}

/// Every failure class, in the order the help lists them.
pub(crate) const FAIL_CLASSES: [FailClass; 4] = [
    FailClass::Task,
    FailClass::Environment,
    FailClass::Agent,
    FailClass::RateLimited,
];

/// The failure class named `name` (`task`, `environment`, `agent`,
/// `rate_limited`).
pub(crate) fn fail_class(name: &str) -> Result<FailClass, String> {
    FAIL_CLASSES
        .into_iter()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = FAIL_CLASSES.iter().map(|c| c.as_str()).collect();
            format!(
                "unknown failure class {}: it is one of {}",
                shown(name, 32),
                names.join(", ")
            )
        })
}

/// Whether a woken agent's `fail` is consistent: `retry_after_s` only
/// with `rate_limited`, and at most [`MAX_RETRY_AFTER_S`].
pub(crate) fn fail_report(class: FailClass, retry_after: Option<u64>) -> Result<(), String> {
    match retry_after {
        None => Ok(()),
        Some(_) if class != FailClass::RateLimited => Err(format!(
            "retry_after_s goes only with class rate_limited, not {}",
            class.as_str()
        )),
        Some(s) => retry_after_s(s).map(drop),
    }
}

/// An untrusted string as it may appear in a log line or a reason: at
/// most `max_chars` characters, quoted, control characters escaped.
pub(crate) fn shown(s: &str, max_chars: usize) -> String {
    let cut: String = s.chars().take(max_chars).collect();
    let more = if s.chars().nth(max_chars).is_some() {
        "…"
    } else {
        ""
    };
    format!("{cut:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_plain_names() {
        let longest = format!("A{}", "b".repeat(127));
        for ok in [
            "01J0000000000000000000000A",
            "t1",
            "a",
            "9",
            "task_1-x",
            longest.as_str(),
        ] {
            assert_eq!(task_id(ok), Ok(()), "{ok}");
        }
        let too_long = "a".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "-rf",
            "--upload-pack=x",
            "_x",
            "x.lock",
            "x y",
            "x\0y",
            "a\nb",
            "ünïcode",
            "x@{1}",
            "~x",
            "$(x)",
            too_long.as_str(),
        ] {
            let err = task_id(bad).unwrap_err();
            assert!(err.starts_with("invalid task id"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_refusal_shows_the_id_escaped_and_cut() {
        let err = task_id("a\nb\u{1b}[2J").unwrap_err();
        assert!(err.contains(r#""a\nb\u{1b}[2J""#), "{err}");
        assert!(!err.contains('\n'));
        let err = task_id(&"/".repeat(10_000)).unwrap_err();
        assert!(err.len() < 300, "{err}");
        assert!(err.contains('…'));
    }

    #[test]
    fn an_assignment_must_be_about_one_attempt() {
        let body = crate::testing::task("t1", 2);
        assert_eq!(assignment(&AttemptRef::new("t1", 2), &body), Ok(()));
        let other_task = assignment(&AttemptRef::new("t2", 2), &body).unwrap_err();
        assert!(other_task.contains("names task \"t1\""), "{other_task}");
        let other_gen = assignment(&AttemptRef::new("t1", 3), &body).unwrap_err();
        assert!(other_gen.contains("generation 2"), "{other_gen}");
        let mut hostile = body.clone();
        hostile.id = "../../x".into();
        assert!(assignment(&AttemptRef::new("../../x", 2), &hostile)
            .unwrap_err()
            .starts_with("invalid task id"));
    }

    #[test]
    fn agent_ids_follow_the_hubs_rule() {
        for ok in ["loash", "a1", "agent-7_b"] {
            assert_eq!(agent_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Loash", "-x", "a/b", "a b", "..", &"a".repeat(65)] {
            assert!(agent_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_names_are_agent_ids_with_dots() {
        let longest = "r".repeat(64);
        for ok in ["app", "app.web", "a1", "my-repo_2", "9.x", longest.as_str()] {
            assert_eq!(repo_name(ok), Ok(()), "{ok}");
        }
        let too_long = "r".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            ".app",
            "-app",
            "_app",
            "App",
            "a/b",
            "../x",
            "a b",
            "a\nb",
            "a\0b",
            "ünïcode",
            too_long.as_str(),
        ] {
            let err = repo_name(bad).unwrap_err();
            assert!(err.starts_with("invalid repository name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn failure_classes_and_retry_delays_are_checked() {
        for c in FAIL_CLASSES {
            assert_eq!(fail_class(c.as_str()), Ok(c));
        }
        let err = fail_class("rate-limited").unwrap_err();
        assert_eq!(
            err,
            "unknown failure class \"rate-limited\": it is one of task, environment, agent, rate_limited"
        );
        assert!(fail_class("").is_err() && fail_class("Task").is_err());
        assert_eq!(retry_after_s(0), Ok(0));
        assert_eq!(retry_after_s(86_400), Ok(86_400));
        assert_eq!(
            retry_after_s(86_401).unwrap_err(),
            "retry_after_s must be at most 86400 (a day), not 86401"
        );
        assert_eq!(fail_report(FailClass::RateLimited, Some(30)), Ok(()));
        assert_eq!(fail_report(FailClass::RateLimited, None), Ok(()));
        assert_eq!(fail_report(FailClass::Environment, None), Ok(()));
        assert!(fail_report(FailClass::RateLimited, Some(u64::MAX))
            .unwrap_err()
            .contains("at most 86400"));
        assert_eq!(
            fail_report(FailClass::Task, Some(5)).unwrap_err(),
            "retry_after_s goes only with class rate_limited, not task"
        );
    }

    #[test]
    fn welcome_values_are_clamped_for_any_u64() {
        let secs = |h: Heartbeat| (h.every.as_secs(), h.silence_limit.as_secs());
        assert_eq!(secs(heartbeat(30, Some(90))), (30, 90));
        assert_eq!(secs(heartbeat(30, None)), (30, 90));
        assert_eq!(secs(heartbeat(u64::MAX, Some(u64::MAX))), (3600, 10_800));
        assert_eq!(secs(heartbeat(u64::MAX, None)), (3600, 10_800));
        assert_eq!(secs(heartbeat(0, Some(0))), (1, 2));
        assert_eq!(secs(heartbeat(0, None)), (1, 3));
        assert_eq!(secs(heartbeat(1, Some(u64::MAX))), (1, 10_800));
        assert_eq!(
            secs(heartbeat(10, Some(5))),
            (10, 20),
            "at least 2 intervals"
        );
        assert_eq!(secs(heartbeat(1 << 63, Some(1))), (3600, 7200));
    }
}
