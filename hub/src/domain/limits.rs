//! Bounds on what agents (not fully trusted) can make the hub keep: text
//! cut to a size, results cut down to their known fields.
//!
//! Pure functions over values; they never refuse anything (a report that
//! is too large is still a report), they only make it small enough to keep.
//! The one bound that refuses, a progress note's, is applied by the agent
//! machine.

use agentcom_protocol::{TaskResult, MAX_RESULT_BYTES};

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
