//! Bounds on what agents (not fully trusted) can make the hub keep: text
//! cut to a size, results cut down to their known fields, a sidecar's
//! instance id (kept only when short and plain), a failing self-test as a
//! bounded reason.
//!
//! Pure functions over values; they never refuse anything (a report that
//! is too large is still a report), they only make it small enough to keep.
//! The one bound that refuses, a progress note's, is applied by the agent
//! machine.

use agentcom_protocol::{SelfTestStatus, TaskResult, MAX_RESULT_BYTES};

/// Longest `detail` of a history entry that quotes an agent (a late
/// result's summary, a failure's error), in bytes.
pub(crate) const MAX_DETAIL_BYTES: usize = 1024;
/// Longest note of a `progress` message, in bytes; a longer one is refused
/// (it would be published to every event stream and kept in the replay).
pub(crate) const MAX_PROGRESS_NOTE_BYTES: usize = 4096;
/// Longest error kept as a task's `last_error`, in bytes.
pub(crate) const MAX_ERROR_BYTES: usize = 8 * 1024;
/// Longest reason a person gives for rejecting a change, in bytes (the
/// next attempt's agent reads it in the dossier).
pub(crate) const MAX_REASON_BYTES: usize = 4096;
/// Longest log tail an attempt's dossier record keeps, in bytes.
pub(crate) const MAX_LOG_TAIL_BYTES: usize = 8 * 1024;
/// Longest summary kept when a result has to be cut down, in bytes.
const MAX_SUMMARY_BYTES: usize = 8 * 1024;

/// Longest instance id a sidecar's `hello` may carry; a longer one (or
/// one with anything but visible ASCII) is ignored, as if none was said.
pub(crate) const MAX_INSTANCE_ID_CHARS: usize = 64;
/// Most failing checks of a self-test the hub keeps in an agent's reason.
pub(crate) const MAX_SELFTEST_FAILURES: usize = 8;
/// Longest check name kept, in bytes.
pub(crate) const MAX_CHECK_NAME_BYTES: usize = 32;
/// Longest detail of one failing check kept, in bytes.
pub(crate) const MAX_CHECK_DETAIL_BYTES: usize = 300;
/// How a degradation by a failing self-test's reason starts.
pub(crate) const SELFTEST_FAILING: &str = "self-test failing";

/// The instance id the hub keeps from a `hello`: 1 to
/// [`MAX_INSTANCE_ID_CHARS`] visible ASCII characters, else none.
pub(crate) fn instance_id(said: Option<&str>) -> Option<String> {
    said.filter(|s| {
        !s.is_empty() && s.len() <= MAX_INSTANCE_ID_CHARS && s.bytes().all(|b| b.is_ascii_graphic())
    })
    .map(str::to_string)
}

/// Why an agent whose self-test fails is degraded, in words and bounded
/// (`self-test failing: runner: …; disk: …`): at most
/// [`MAX_SELFTEST_FAILURES`] checks, each name and detail cut; `None`
/// when the self-test passed.
pub(crate) fn selftest_reason(status: &SelfTestStatus) -> Option<String> {
    if status.ok {
        return None;
    }
    let mut parts: Vec<String> = status
        .failures
        .iter()
        .take(MAX_SELFTEST_FAILURES)
        .map(|f| {
            format!(
                "{}: {}",
                cap_text(f.check.trim(), MAX_CHECK_NAME_BYTES),
                cap_text(f.detail.trim(), MAX_CHECK_DETAIL_BYTES)
            )
        })
        .collect();
    let more = status.failures.len().saturating_sub(MAX_SELFTEST_FAILURES);
    if more > 0 {
        parts.push(format!("and {more} more"));
    }
    if parts.is_empty() {
        parts.push("no failing check named".into());
    }
    Some(format!("{SELFTEST_FAILING}: {}", parts.join("; ")))
}

/// `text` if it fits in `max` bytes, else its longest prefix that does
/// (on a character boundary) followed by a note of how much was cut.
pub(crate) fn cap_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end)
}

/// The end of `text` in at most `max` bytes (a log's tail: the start is
/// what goes), on a character boundary.
pub(crate) fn tail_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// A result small enough to keep: as it is when its JSON fits in
/// [`MAX_RESULT_BYTES`]; otherwise its known fields only (the summary
/// capped), with `truncated: true`.
pub(crate) fn cap_result(result: TaskResult) -> TaskResult {
    let size = serde_json::to_vec(&result).map_or(usize::MAX, |v| v.len());
    if size <= MAX_RESULT_BYTES {
        return result;
    }
    let mut extra = serde_json::Map::new();
    extra.insert("truncated".into(), serde_json::Value::Bool(true));
    extra.insert("original_bytes".into(), serde_json::Value::from(size));
    let cap = |s: Option<String>, max| s.map(|s| cap_text(&s, max));
    TaskResult {
        summary: cap(result.summary, MAX_SUMMARY_BYTES),
        branch: cap(result.branch, 1024),
        pr_url: cap(result.pr_url, 2048),
        base: cap(result.base, 128),
        head: cap(result.head, 128),
        no_changes: result.no_changes,
        tokens_used: result.tokens_used,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary_with_a_note() {
        assert_eq!(cap_text("short", 10), "short");
        let cut = cap_text("ééééé", 3); // 10 bytes; 3 falls inside a character
        assert_eq!(cut, "é… (8 bytes cut)");
    }

    #[test]
    fn instance_ids_are_kept_only_when_short_and_plain() {
        assert_eq!(instance_id(Some("a1b2-c3")), Some("a1b2-c3".into()));
        assert_eq!(instance_id(None), None);
        assert_eq!(instance_id(Some("")), None);
        assert_eq!(instance_id(Some("has space")), None);
        assert_eq!(instance_id(Some("é")), None);
        let longest = "x".repeat(MAX_INSTANCE_ID_CHARS);
        assert_eq!(instance_id(Some(&longest)), Some(longest.clone()));
        assert_eq!(instance_id(Some(&format!("{longest}x"))), None);
    }

    #[test]
    fn a_failing_selftest_is_a_bounded_reason() {
        use agentcom_protocol::CheckFailure;
        let fail = |check: &str, detail: &str| CheckFailure {
            check: check.into(),
            detail: detail.into(),
        };
        let status = |ok, failures| SelfTestStatus {
            ok,
            failures,
            at: None,
        };
        assert_eq!(selftest_reason(&status(true, vec![])), None);
        assert_eq!(
            selftest_reason(&status(
                false,
                vec![
                    fail("runner", "/bin/agent is not executable"),
                    fail("disk", "12 MB free")
                ]
            ))
            .as_deref(),
            Some("self-test failing: runner: /bin/agent is not executable; disk: 12 MB free")
        );
        assert_eq!(
            selftest_reason(&status(false, vec![])).as_deref(),
            Some("self-test failing: no failing check named")
        );
        let many: Vec<CheckFailure> = (0..50)
            .map(|i| fail(&"c".repeat(1000), &format!("{i}{}", "d".repeat(10_000))))
            .collect();
        let reason = selftest_reason(&status(false, many)).unwrap();
        assert!(reason.ends_with("; and 42 more"), "{reason}");
        assert_eq!(
            reason.matches("bytes cut").count(),
            16,
            "names and details cut"
        );
        assert!(reason.len() < 4096, "{} bytes", reason.len());
    }

    #[test]
    fn a_huge_result_keeps_its_known_fields_only() {
        let mut extra = serde_json::Map::new();
        extra.insert("log".into(), "x".repeat(200_000).into());
        let big = TaskResult {
            summary: Some("s".repeat(100_000)),
            branch: Some("a1/t1".into()),
            pr_url: None,
            tokens_used: Some(7),
            extra,
            ..Default::default()
        };
        let kept = cap_result(big);
        assert!(serde_json::to_vec(&kept).unwrap().len() <= MAX_RESULT_BYTES);
        assert_eq!(kept.branch.as_deref(), Some("a1/t1"));
        assert_eq!(kept.tokens_used, Some(7));
        assert_eq!(kept.extra["truncated"], true);
        assert!(kept.summary.unwrap().ends_with("bytes cut)"));
        let small = TaskResult {
            summary: Some("ok".into()),
            ..Default::default()
        };
        assert_eq!(cap_result(small.clone()), small);
    }
}
