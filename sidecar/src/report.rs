//! The report of a finished attempt: how a runner's [`Outcome`] and its
//! result file become the `complete` or `fail` the hub gets.
//!
//! It owns the result file's reading rules (size limit, JSON or plain
//! text), the rule that a report must fit in one frame once encoded
//! ([`sendable`]), the wording of every failure the sidecar reports, and
//! its class: `rate_limited` when the runner says so ([`rate_limited`]),
//! `environment` for what the sidecar itself saw fail, `task` otherwise,
//! with the runner's last 8 KiB of output as `log_tail`. It must
//! never decide *when* an attempt ends or what happens to the report
//! afterwards (that is the attempt machine's), and [`report_for`] must stay
//! pure: only [`read_result`] touches the disk.

use std::path::Path;

use agentcom_protocol::{AttemptRef, FailClass, SidecarMsg, TaskResult, MAX_FRAME_BYTES};
use serde_json::Value;

use crate::runner::{last_bytes, Outcome, MAX_LOG_TAIL};
use crate::validate::MAX_RETRY_AFTER_S;

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

/// How the sidecar tells a rate-limited runner (`[runner]`
/// `rate_limit_exit_code`, `rate_limit_default_s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimits {
    /// The exit code that says "rate-limited", if any.
    pub(crate) exit_code: Option<i32>,
    /// The wait when the runner names none.
    pub(crate) default_s: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            exit_code: None,
            default_s: 60,
        }
    }
}

/// A `fail` report for `attempt`, of class `task`, without a log tail.
pub(crate) fn fail_msg(attempt: &AttemptRef, error: String, retry: Retry) -> SidecarMsg {
    failure(attempt, error, retry, FailClass::Task, None, None)
}

/// A `fail` report for `attempt` of `class` (`retry_after_s` kept only
/// for `rate_limited`), with the end of `log_tail` (at most
/// [`MAX_LOG_TAIL`] bytes; none when empty).
pub(crate) fn failure(
    attempt: &AttemptRef,
    error: String,
    retry: Retry,
    class: FailClass,
    retry_after_s: Option<u64>,
    log_tail: Option<String>,
) -> SidecarMsg {
    let log_tail = log_tail
        .map(|t| last_bytes(t.trim(), MAX_LOG_TAIL).to_string())
        .filter(|t| !t.is_empty());
    SidecarMsg::Fail {
        task_id: attempt.task_id.clone(),
        generation: attempt.generation,
        error,
        retryable: retry == Retry::Retryable,
        class,
        retry_after_s: retry_after_s.filter(|_| class == FailClass::RateLimited),
        log_tail,
    }
}

/// A failure of the machine the sidecar runs on (git, the runner's
/// program, the disk): class `environment`, retryable, with the error as
/// its log tail.
pub(crate) fn environment_failure(attempt: &AttemptRef, error: String) -> SidecarMsg {
    let tail = error.clone();
    failure(
        attempt,
        error,
        Retry::Retryable,
        FailClass::Environment,
        None,
        Some(tail),
    )
}

/// Whether the runner says the model provider limits it, and for how
/// long (seconds): its result file holds `"rate_limited": true` (with
/// `retry_after_s`, else `limits.default_s`), or it exited with
/// `limits.exit_code` (with the result file's `retry_after_s`, if any).
/// A `retry_after_s` over a day is cut to a day; one that is not a whole
/// number of seconds is ignored.
pub(crate) fn rate_limited(
    code: Option<i32>,
    file: Option<&Value>,
    limits: RateLimits,
) -> Option<u64> {
    let said = file
        .and_then(|v| v.get("rate_limited"))
        .and_then(Value::as_bool)
        == Some(true);
    let by_code = code.is_some() && code == limits.exit_code;
    if !(said || by_code) {
        return None;
    }
    let asked = file
        .and_then(|v| v.get("retry_after_s"))
        .and_then(Value::as_u64)
        .map(|s| s.min(MAX_RETRY_AFTER_S));
    Some(asked.unwrap_or(limits.default_s))
}

/// Whether the runner of an attempt succeeded: exit 0, without a result
/// file that says it was rate-limited.
pub(crate) fn succeeded(outcome: &Outcome, file: Option<&Value>, limits: RateLimits) -> bool {
    matches!(outcome, Outcome::Exited { code: Some(0), .. })
        && rate_limited(Some(0), file, limits).is_none()
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
/// [`read_result`]) into the report. The class: `rate_limited` when the
/// runner says so (see [`rate_limited`]); `environment` when it could not
/// be started or its files written; `task` otherwise. Every `fail` carries
/// the end of the runner's output (or the error) as `log_tail`.
pub(crate) fn report_for(
    attempt: &AttemptRef,
    outcome: Outcome,
    file: Option<Value>,
    limits: RateLimits,
) -> SidecarMsg {
    if succeeded(&outcome, file.as_ref(), limits) {
        return SidecarMsg::Complete {
            task_id: attempt.task_id.clone(),
            generation: attempt.generation,
            result: result_from(file),
        };
    }
    match outcome {
        Outcome::Exited { code, log_tail } => {
            let said = file
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let how = match code {
                Some(c) => format!("the runner exited with code {c}"),
                None => "the runner was killed by a signal".to_string(),
            };
            if let Some(wait) = rate_limited(code, file.as_ref(), limits) {
                let error = match said {
                    Some(s) => format!("rate-limited ({how}; retry after {wait}s): {s}"),
                    None => format!("rate-limited ({how}; retry after {wait}s)"),
                };
                return failure(
                    attempt,
                    error,
                    Retry::Retryable,
                    FailClass::RateLimited,
                    Some(wait),
                    Some(log_tail),
                );
            }
            let retry = file
                .as_ref()
                .and_then(|v| v.get("retryable"))
                .and_then(|v| v.as_bool())
                .map_or(Retry::Retryable, Retry::from_retryable);
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
            failure(attempt, error, retry, FailClass::Task, None, Some(log_tail))
        }
        Outcome::TimedOut { after, log_tail } => failure(
            attempt,
            format!("the runner timed out after {}s", after.as_secs()),
            Retry::Retryable,
            FailClass::Task,
            None,
            Some(log_tail),
        ),
        Outcome::Cancelled { reason, log_tail } => failure(
            attempt,
            format!("cancelled: {reason}"),
            Retry::Retryable,
            FailClass::Task,
            None,
            Some(log_tail),
        ),
        Outcome::SpawnFailed(e) => environment_failure(attempt, e),
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
        report_for(&r(), outcome, read_result(path), limits())
    }

    /// Exit code 75 says "rate-limited"; 60 s when the runner names no wait.
    fn limits() -> RateLimits {
        RateLimits {
            exit_code: Some(75),
            default_s: 60,
        }
    }

    fn exited(code: i32, log_tail: &str) -> Outcome {
        Outcome::Exited {
            code: Some(code),
            log_tail: log_tail.into(),
        }
    }

    /// The class, retry_after_s and log tail of a `fail`.
    fn class_of(msg: &SidecarMsg) -> (FailClass, Option<u64>, Option<&str>) {
        match msg {
            SidecarMsg::Fail {
                class,
                retry_after_s,
                log_tail,
                ..
            } => (*class, *retry_after_s, log_tail.as_deref()),
            other => panic!("{other:?}"),
        }
    }

    fn value(json: &str) -> Option<Value> {
        Some(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn an_ordinary_failure_is_the_tasks_with_the_log_tail() {
        let msg = report_for(&r(), exited(2, "compiling\nerror: boom"), None, limits());
        assert_eq!(
            class_of(&msg),
            (FailClass::Task, None, Some("compiling\nerror: boom"))
        );
        let killed = Outcome::Exited {
            code: None,
            log_tail: String::new(),
        };
        assert_eq!(
            class_of(&report_for(&r(), killed, None, limits())),
            (FailClass::Task, None, None),
            "no output: no log tail"
        );
        let timed_out = Outcome::TimedOut {
            after: Duration::from_secs(5),
            log_tail: "still thinking".into(),
        };
        assert_eq!(
            class_of(&report_for(&r(), timed_out, None, limits())),
            (FailClass::Task, None, Some("still thinking"))
        );
        let cancelled = Outcome::Cancelled {
            reason: "operator".into(),
            log_tail: "half done".into(),
        };
        assert_eq!(
            class_of(&report_for(&r(), cancelled, None, limits())),
            (FailClass::Task, None, Some("half done"))
        );
        // A tail longer than 8 KiB is cut to its last 8 KiB.
        let long = format!("{}END", "é".repeat(5000));
        let msg = report_for(&r(), exited(1, &long), None, limits());
        let tail = class_of(&msg).2.unwrap();
        assert!(
            tail.len() <= MAX_LOG_TAIL && tail.ends_with("END"),
            "{}",
            tail.len()
        );
    }

    #[test]
    fn a_runner_that_cannot_start_is_the_environments() {
        let msg = report_for(
            &r(),
            Outcome::SpawnFailed("cannot start \"/no/runner\": No such file or directory".into()),
            None,
            limits(),
        );
        let (class, wait, tail) = class_of(&msg);
        assert_eq!((class, wait), (FailClass::Environment, None));
        assert!(tail.unwrap().contains("No such file"), "{tail:?}");
        assert!(fail_error_retryable(&msg));
        let git = environment_failure(
            &r(),
            "preparing the git branch failed: git fetch failed: fatal: 'origin' does not appear to be a git repository".into(),
        );
        let (class, _, tail) = class_of(&git);
        assert_eq!(class, FailClass::Environment);
        assert!(tail
            .unwrap()
            .contains("does not appear to be a git repository"));
    }

    fn fail_error_retryable(msg: &SidecarMsg) -> bool {
        matches!(
            msg,
            SidecarMsg::Fail {
                retryable: true,
                ..
            }
        )
    }

    #[test]
    fn a_rate_limited_runner_is_told_by_its_result_file_or_its_exit_code() {
        // The result file says so, with a wait.
        let file =
            value(r#"{"rate_limited": true, "retry_after_s": 120, "error": "429 from the model"}"#);
        let msg = report_for(&r(), exited(1, "429"), file, limits());
        assert_eq!(
            class_of(&msg),
            (FailClass::RateLimited, Some(120), Some("429"))
        );
        match &msg {
            SidecarMsg::Fail {
                error, retryable, ..
            } => {
                assert_eq!(
                    error,
                    "rate-limited (the runner exited with code 1; retry after 120s): 429 from the model"
                );
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
        // Without a wait: the default.
        let file = value(r#"{"rate_limited": true}"#);
        let msg = report_for(&r(), exited(3, ""), file, limits());
        assert_eq!(class_of(&msg).0, FailClass::RateLimited);
        assert_eq!(class_of(&msg).1, Some(60));
        // Even with exit 0: a rate-limited runner did not do the task.
        let file = value(r#"{"rate_limited": true, "retry_after_s": 5}"#);
        assert!(!succeeded(&exited(0, ""), file.as_ref(), limits()));
        let msg = report_for(&r(), exited(0, ""), file, limits());
        assert_eq!(class_of(&msg).1, Some(5));
        // The exit code, with the file's wait or the default.
        let msg = report_for(&r(), exited(75, "slow down"), None, limits());
        assert_eq!(
            class_of(&msg),
            (FailClass::RateLimited, Some(60), Some("slow down"))
        );
        let file = value(r#"{"retry_after_s": 30}"#);
        assert_eq!(
            class_of(&report_for(&r(), exited(75, ""), file, limits())).1,
            Some(30)
        );
        // A wait over a day is cut to a day; a wait that is not a whole
        // number of seconds is ignored.
        for (said, wait) in [
            (
                r#"{"rate_limited": true, "retry_after_s": 999999999}"#,
                86_400,
            ),
            (r#"{"rate_limited": true, "retry_after_s": -5}"#, 60),
            (r#"{"rate_limited": true, "retry_after_s": "soon"}"#, 60),
            (r#"{"rate_limited": true, "retry_after_s": 1.5}"#, 60),
        ] {
            let msg = report_for(&r(), exited(1, ""), value(said), limits());
            assert_eq!(class_of(&msg).1, Some(wait), "{said}");
        }
        // Not rate-limited: `rate_limited` false or absent, another exit
        // code, or no exit code configured.
        let file = value(r#"{"rate_limited": false, "retry_after_s": 30}"#);
        assert_eq!(
            class_of(&report_for(&r(), exited(1, ""), file, limits())).0,
            FailClass::Task
        );
        let no_code = RateLimits {
            exit_code: None,
            default_s: 60,
        };
        assert_eq!(
            class_of(&report_for(&r(), exited(75, ""), None, no_code)).0,
            FailClass::Task
        );
        assert_eq!(rate_limited(None, None, limits()), None);
        assert!(succeeded(&exited(0, ""), None, limits()));
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
                    after: Duration::from_secs(5),
                    log_tail: String::new(),
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
