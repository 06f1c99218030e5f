//! The report of a finished attempt: how a runner's [`Outcome`] and its
//! result file become the `complete` or `fail` the hub gets.
//!
//! It owns the result file's reading rules (size limit, JSON or plain
//! text), the rule that a report must fit in one frame once encoded
//! ([`sendable`]), and the wording of every failure the sidecar reports. It must
//! never decide *when* an attempt ends or what happens to the report
//! afterwards (that is the attempt machine's), and [`report_for`] must stay
//! pure: only [`read_result`] touches the disk.

use std::path::Path;

use agentcom_protocol::{AttemptRef, SidecarMsg, TaskResult, MAX_FRAME_BYTES};
use serde_json::Value;

use crate::runner::Outcome;

/// Largest result the sidecar sends (well under the 1 MiB frame limit).
const MAX_RESULT_BYTES: u64 = 512 * 1024;

/// Whether the hub may run a failed attempt again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// A retry may succeed.
    Retryable,
    /// The failure will not go away on a retry.
    Final,
}

impl Retry {
    pub(crate) fn from_retryable(retryable: bool) -> Retry {
        if retryable {
            Retry::Retryable
        } else {
            Retry::Final
        }
    }
}

/// A `fail` report for `attempt`.
pub(crate) fn fail_msg(attempt: &AttemptRef, error: String, retry: Retry) -> SidecarMsg {
    SidecarMsg::Fail {
        task_id: attempt.task_id.clone(),
        generation: attempt.generation,
        error,
        retryable: retry == Retry::Retryable,
        class: Default::default(),
        retry_after_s: None,
        log_tail: None,
    }
}

/// The report as the hub can take it: one whose encoding fits in a
/// frame ([`MAX_FRAME_BYTES`]) goes as it is; a larger one (a result of
/// control characters grows sixfold in JSON) becomes a `fail` saying so.
/// Not retryable: the same runner on the same task would most likely say
/// as much again, and every retry would end the same way after a whole
/// run; an operator can retry it once the runner says less.
pub(crate) fn sendable(msg: SidecarMsg) -> SidecarMsg {
    let bytes = msg.encode().len();
    if bytes <= MAX_FRAME_BYTES {
        return msg;
    }
    let what = match &msg {
        SidecarMsg::Complete { .. } => "the result",
        SidecarMsg::Fail { .. } => "the failure report",
        _ => return msg,
    };
    let Some(attempt) = msg.attempt_ref() else {
        return msg;
    };
    tracing::error!(task = %attempt, bytes, "a report too large to send becomes a failure");
    fail_msg(
        &attempt,
        format!(
            "{what} is too large to send: {bytes} bytes encoded, the limit is {MAX_FRAME_BYTES}"
        ),
        Retry::Final,
    )
}

/// Turn a runner's outcome (and what its result file held, see
/// [`read_result`]) into the report.
pub(crate) fn report_for(
    attempt: &AttemptRef,
    outcome: Outcome,
    file: Option<Value>,
) -> SidecarMsg {
    match outcome {
        Outcome::Exited { code: Some(0), .. } => SidecarMsg::Complete {
            task_id: attempt.task_id.clone(),
            generation: attempt.generation,
            result: result_from(file),
        },
        Outcome::Exited { code, log_tail } => {
            let said = file
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let retry = file
                .as_ref()
                .and_then(|v| v.get("retryable"))
                .and_then(|v| v.as_bool())
                .map_or(Retry::Retryable, Retry::from_retryable);
            let how = match code {
                Some(c) => format!("the runner exited with code {c}"),
                None => "the runner was killed by a signal".to_string(),
            };
            let tail: String = log_tail
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let error = match said {
                Some(s) => format!("{how}: {s}"),
                None if tail.is_empty() => how,
                None => format!("{how}: …{tail}"),
            };
            fail_msg(attempt, error, retry)
        }
        Outcome::TimedOut { after } => fail_msg(
            attempt,
            format!("the runner timed out after {}s", after.as_secs()),
            Retry::Retryable,
        ),
        Outcome::Cancelled { reason } => {
            fail_msg(attempt, format!("cancelled: {reason}"), Retry::Retryable)
        }
        Outcome::SpawnFailed(e) => fail_msg(attempt, e, Retry::Retryable),
    }
}

/// What a successful runner's result file (see [`read_result`]) says:
/// a JSON object is the result; any other text is its summary.
pub(crate) fn result_from(file: Option<Value>) -> TaskResult {
    match file {
        Some(Value::Object(map)) => {
            serde_json::from_value(Value::Object(map)).unwrap_or_else(|e| TaskResult {
                summary: Some(format!("(unreadable result file: {e})")),
                ..Default::default()
            })
        }
        Some(Value::String(s)) => TaskResult {
            summary: Some(s),
            ..Default::default()
        },
        Some(other) => TaskResult {
            summary: Some(other.to_string()),
            ..Default::default()
        },
        None => TaskResult::default(),
    }
}

/// The runner's result file as JSON (a non-JSON file becomes a string;
/// a missing or empty one is `None`).
pub(crate) fn read_result(path: &Path) -> Option<Value> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_RESULT_BYTES {
        return Some(Value::String(format!(
            "(result file of {} bytes exceeds the {MAX_RESULT_BYTES}-byte limit)",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).ok()?;
    if text.trim().is_empty() {
        return None;
    }
    Some(serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.trim().to_string())))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("agentcom-result-{name}-{}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn r() -> AttemptRef {
        AttemptRef::new("t", 2)
    }

    /// The report for `outcome` with the result file at `path`.
    fn report(outcome: Outcome, path: &Path) -> SidecarMsg {
        report_for(&r(), outcome, read_result(path))
    }

    #[test]
    fn exit_zero_with_a_result_file_completes() {
        let p = file(
            "ok",
            r#"{"summary":"did it","pr_url":"https://x/pr/1","files":2}"#,
        );
        match report(
            Outcome::Exited {
                code: Some(0),
                log_tail: String::new(),
            },
            &p,
        ) {
            SidecarMsg::Complete {
                result,
                generation: 2,
                ..
            } => {
                assert_eq!(result.summary.as_deref(), Some("did it"));
                assert_eq!(result.pr_url.as_deref(), Some("https://x/pr/1"));
                assert_eq!(result.extra["files"], 2);
            }
            other => panic!("{other:?}"),
        }
        let plain = file("plain", "just text\n");
        assert!(
            matches!(report(Outcome::Exited { code: Some(0), log_tail: String::new() }, &plain),
            SidecarMsg::Complete { result, .. } if result.summary.as_deref() == Some("just text"))
        );
        let none = std::env::temp_dir().join("agentcom-result-none-does-not-exist");
        assert!(matches!(
            report(
                Outcome::Exited {
                    code: Some(0),
                    log_tail: String::new()
                },
                &none
            ),
            SidecarMsg::Complete { .. }
        ));
    }

    #[test]
    fn a_report_too_large_to_send_becomes_a_final_failure() {
        // 400 KB of control bytes: under the result file's limit, but
        // 2.4 MB once each byte is escaped as \u0001.
        let p = file("control", &"\u{1}".repeat(400 * 1024));
        let report = report(
            Outcome::Exited {
                code: Some(0),
                log_tail: String::new(),
            },
            &p,
        );
        let bytes = report.encode().len();
        assert!(bytes > MAX_FRAME_BYTES, "{bytes}");
        match sendable(report) {
            SidecarMsg::Fail {
                task_id,
                generation: 2,
                error,
                retryable: false,
                ..
            } => {
                assert_eq!(task_id, "t");
                assert_eq!(
                    error,
                    format!("the result is too large to send: {bytes} bytes encoded, the limit is 1048576")
                );
            }
            other => panic!("{other:?}"),
        }
        let huge_fail = fail_msg(&r(), "e".repeat(MAX_FRAME_BYTES), Retry::Retryable);
        assert!(matches!(
            sendable(huge_fail),
            SidecarMsg::Fail { error, retryable: false, .. } if error.starts_with("the failure report is too large")
        ));
        // At the limit exactly, it goes as it is.
        let small = fail_msg(&r(), "x".into(), Retry::Retryable);
        let pad = MAX_FRAME_BYTES - small.encode().len();
        let at_limit = fail_msg(&r(), "x".repeat(pad + 1), Retry::Retryable);
        assert_eq!(at_limit.encode().len(), MAX_FRAME_BYTES);
        assert_eq!(sendable(at_limit.clone()), at_limit);
    }

    #[test]
    fn failures_carry_the_reason_and_retryability() {
        let none = std::env::temp_dir().join("agentcom-result-none-does-not-exist");
        match report(
            Outcome::Exited {
                code: Some(2),
                log_tail: "boom".into(),
            },
            &none,
        ) {
            SidecarMsg::Fail {
                error, retryable, ..
            } => {
                assert!(
                    error.contains("code 2") && error.contains("boom"),
                    "{error}"
                );
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
        let said = file("said", r#"{"error":"bad spec","retryable":false}"#);
        match report(
            Outcome::Exited {
                code: Some(1),
                log_tail: String::new(),
            },
            &said,
        ) {
            SidecarMsg::Fail {
                error, retryable, ..
            } => {
                assert!(error.contains("bad spec"));
                assert!(!retryable);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            report(
                Outcome::TimedOut {
                    after: Duration::from_secs(5)
                },
                &none
            ),
            SidecarMsg::Fail {
                retryable: true,
                ..
            }
        ));
    }
}
