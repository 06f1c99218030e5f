//! Field rules for what operators submit: task bodies (a `verify` task is
//! the hub's own, never submitted; `for_agent` names an agent by a valid
//! id), agent ids and capability names. Pure checks that answer which field is wrong and why;
//! the HTTP layer turns a failure into a 422.

use agentcom_protocol::{
    NewTask, TaskKind, Timestamp, MAX_DESCRIPTION_BYTES, MAX_METADATA_BYTES, MAX_TITLE_CHARS,
};

/// A field out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> Result<(), FieldError> {
    Err(FieldError {
        field: field.to_string(),
        message: message.into(),
    })
}

/// Longest task timeout accepted: 7 days.
pub(crate) const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;
pub(crate) const MAX_RETRIES: u32 = 100;
pub(crate) const MAX_KEY_CHARS: usize = 200;
/// Most capabilities a task may need.
pub(crate) const MAX_NEEDS: usize = 32;

pub(crate) fn new_task(t: &NewTask) -> Result<(), FieldError> {
    let chars = t.title.trim().chars().count();
    if chars == 0 || t.title.chars().count() > MAX_TITLE_CHARS {
        return err(
            "title",
            format!("must be 1 to {MAX_TITLE_CHARS} characters"),
        );
    }
    if t.description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_BYTES)
    {
        return err(
            "description",
            format!("must be at most {MAX_DESCRIPTION_BYTES} bytes"),
        );
    }
    if let Some(m) = &t.metadata {
        let size = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA_BYTES {
            return err(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes of JSON (is {size})"),
            );
        }
    }
    if t.needed_capabilities
        .as_ref()
        .is_some_and(|n| n.len() > MAX_NEEDS)
    {
        return err(
            "needed_capabilities",
            format!("at most {MAX_NEEDS} capabilities"),
        );
    }
    for c in t.needed_capabilities.iter().flatten() {
        capability("needed_capabilities", c)?;
    }
    if t.max_retries.is_some_and(|r| r > MAX_RETRIES) {
        return err("max_retries", format!("must be 0 to {MAX_RETRIES}"));
    }
    if t.timeout_s.is_some_and(|s| s == 0 || s > MAX_TIMEOUT_S) {
        return err("timeout_s", format!("must be 1 to {MAX_TIMEOUT_S} seconds"));
    }
    if let Some(k) = &t.idempotency_key {
        if k.is_empty() || k.chars().count() > MAX_KEY_CHARS {
            return err(
                "idempotency_key",
                format!("must be 1 to {MAX_KEY_CHARS} characters"),
            );
        }
    }
    if t.repo
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 1000)
    {
        return err("repo", "must be 1 to 1000 characters");
    }
    if t.kind == Some(TaskKind::Verify) {
        return err(
            "kind",
            "verify tasks are the hub's own, queued at enrollment (POST /api/agents/enroll)",
        );
    }
    if let Some(only) = &t.for_agent {
        agent_id(only).map_err(|e| FieldError {
            field: "for_agent".into(),
            message: e.message,
        })?;
    }
    Ok(())
}

/// The longest a task may be scheduled ahead (`run_at`).
pub(crate) const MAX_RUN_AT_AHEAD_MS: i64 = 366 * 24 * 3600 * 1000;

/// `run_at` at most [`MAX_RUN_AT_AHEAD_MS`] after `now` (a time already
/// past means now).
pub(crate) fn run_at(at: Timestamp, now: Timestamp) -> Result<(), FieldError> {
    if at.0 - now.0 > MAX_RUN_AT_AHEAD_MS {
        return err("run_at", "must be at most 366 days ahead");
    }
    Ok(())
}

/// Agent ids end up in branch names (`{agent_id}/{task_id}`): lowercase
/// letters, digits, `-` and `_`, starting with a letter or digit, ≤ 64.
pub(crate) fn agent_id(id: &str) -> Result<(), FieldError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        err(
            "id",
            "must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit",
        )
    }
}

/// A capability: 1 to 64 visible characters, no spaces or commas.
pub(crate) fn capability(field: &str, c: &str) -> Result<(), FieldError> {
    let ok =
        !c.is_empty() && c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_graphic() && ch != ',');
    if ok {
        Ok(())
    } else {
        err(
            field,
            format!("capability {c:?} must be 1 to 64 visible characters without commas"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_new_task() -> impl Strategy<Value = NewTask> {
        let text = prop_oneof![".{0,300}", "[\\x00-\\x1f ]{0,10}", Just("x".repeat(70_000))];
        (
            text.clone(),
            prop::option::of(prop_oneof![
                ".{0,100}",
                Just("d".repeat(MAX_DESCRIPTION_BYTES + 1))
            ]),
            prop::option::of(prop::collection::vec(".{0,70}", 0..40)),
            prop::option::of(text.clone()),
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u64>()),
            prop::option::of(text),
            prop::option::of(prop::collection::btree_map(".{0,20}", ".{0,3000}", 0..10)),
        )
            .prop_map(
                |(title, description, needs, key, retries, timeout, repo, meta)| NewTask {
                    title,
                    description,
                    needed_capabilities: needs,
                    idempotency_key: key,
                    max_retries: retries,
                    timeout_s: timeout,
                    repo,
                    metadata: meta.map(|m| m.into_iter().map(|(k, v)| (k, v.into())).collect()),
                    ..Default::default()
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever is submitted, the validator answers; what it accepts
        /// is within every bound the hub relies on.
        #[test]
        fn what_is_accepted_is_within_bounds(t in any_new_task()) {
            if new_task(&t).is_ok() {
                let chars = t.title.chars().count();
                prop_assert!((1..=MAX_TITLE_CHARS).contains(&chars) && !t.title.trim().is_empty());
                prop_assert!(t.description.as_ref().is_none_or(|d| d.len() <= MAX_DESCRIPTION_BYTES));
                prop_assert!(t.needed_capabilities.as_ref().is_none_or(|n| n.len() <= MAX_NEEDS));
                prop_assert!(t.needed_capabilities.iter().flatten().all(|c| capability("c", c).is_ok()));
                prop_assert!(t.max_retries.is_none_or(|r| r <= MAX_RETRIES));
                prop_assert!(t.timeout_s.is_none_or(|s| (1..=MAX_TIMEOUT_S).contains(&s)));
                prop_assert!(t.metadata.as_ref().is_none_or(|m| serde_json::to_vec(m).unwrap().len() <= MAX_METADATA_BYTES));
            }
        }
    }

    fn task(title: &str) -> NewTask {
        NewTask {
            title: title.into(),
            ..Default::default()
        }
    }

    #[test]
    fn titles() {
        assert!(new_task(&task("ok")).is_ok());
        assert_eq!(new_task(&task("   ")).unwrap_err().field, "title");
        assert!(
            new_task(&task(&"é".repeat(200))).is_ok(),
            "characters, not bytes"
        );
        assert!(new_task(&task(&"x".repeat(201))).is_err());
    }

    #[test]
    fn ranges() {
        let big = NewTask {
            description: Some("x".repeat(MAX_DESCRIPTION_BYTES + 1)),
            ..task("t")
        };
        assert_eq!(new_task(&big).unwrap_err().field, "description");
        assert_eq!(
            new_task(&NewTask {
                timeout_s: Some(0),
                ..task("t")
            })
            .unwrap_err()
            .field,
            "timeout_s"
        );
        assert_eq!(
            new_task(&NewTask {
                max_retries: Some(101),
                ..task("t")
            })
            .unwrap_err()
            .field,
            "max_retries"
        );
        let caps = NewTask {
            needed_capabilities: Some(vec!["has space".into()]),
            ..task("t")
        };
        assert_eq!(new_task(&caps).unwrap_err().field, "needed_capabilities");
    }

    #[test]
    fn verify_is_never_submitted_and_for_agent_is_an_agent_id() {
        let verify = NewTask {
            kind: Some(TaskKind::Verify),
            ..task("t")
        };
        let e = new_task(&verify).unwrap_err();
        assert_eq!(e.field, "kind");
        assert!(e.message.contains("the hub's own"), "{}", e.message);
        let review = NewTask {
            kind: Some(TaskKind::Review),
            ..task("t")
        };
        assert!(new_task(&review).is_ok());
        let pinned = |id: &str| NewTask {
            for_agent: Some(id.into()),
            ..task("t")
        };
        assert!(new_task(&pinned("loash")).is_ok());
        for bad in ["", "Loash", "a/b", &"a".repeat(65)] {
            assert_eq!(
                new_task(&pinned(bad)).unwrap_err().field,
                "for_agent",
                "{bad}"
            );
        }
    }

    #[test]
    fn agent_ids() {
        for ok in ["loash", "a1", "agent-7_b"] {
            assert!(agent_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Loash", "-x", "a/b", "a b", &"a".repeat(65)] {
            assert!(agent_id(bad).is_err(), "{bad}");
        }
    }
}
