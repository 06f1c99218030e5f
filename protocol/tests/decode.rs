//! Property tests of the protocol's decoders: whatever text arrives in a
//! frame, decoding answers `Ok` or `Err` and never panics; every message
//! survives its own encoding; timestamps parse or refuse.

use agentcom_protocol::{
    AckOf, AttemptRef, HubMsg, SidecarMsg, SidecarState, TaskResult, Timestamp,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Any JSON value, nested a little, with awkward strings and numbers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[\\x00-\\x1f\\u{202e}\\u{feff}../]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const SIDECAR_TYPES: &[&str] = &[
    "hello",
    "heartbeat",
    "accept",
    "reject",
    "progress",
    "complete",
    "fail",
    "nope",
    "",
];
const HUB_TYPES: &[&str] = &["welcome", "assign", "cancel", "ack", "error", "HELLO"];
const FIELDS: &[&str] = &[
    "task_id",
    "generation",
    "state",
    "result",
    "error",
    "retryable",
    "note",
    "reason",
    "protocol_version",
    "agent_id",
    "capabilities",
    "current_task",
    "sidecar_version",
    "pending_results",
    "heartbeat_interval_s",
    "heartbeat_timeout_s",
    "task",
    "of",
    "code",
    "message",
];

/// An object with a `type` and some of the fields messages have, each of
/// any JSON: the shape a confused or hostile peer sends.
fn message_like(types: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(types),
        prop::collection::btree_map(prop::sample::select(FIELDS), any_json(), 0..8),
    )
        .prop_map(|(ty, fields)| {
            let mut m: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            m.insert("type".into(), json!(ty));
            Value::Object(m)
        })
}

fn valid_sidecar_msg() -> impl Strategy<Value = SidecarMsg> {
    let id = "[A-Z0-9]{1,26}";
    prop_oneof![
        (id, any::<u64>()).prop_map(|(task_id, generation)| SidecarMsg::Accept {
            task_id,
            generation
        }),
        (id, any::<u64>(), ".{0,100}").prop_map(|(task_id, generation, reason)| {
            SidecarMsg::Reject {
                task_id,
                generation,
                reason,
            }
        }),
        (id, any::<u64>(), ".{0,100}", any::<bool>()).prop_map(
            |(task_id, generation, error, retryable)| {
                SidecarMsg::Fail {
                    task_id,
                    generation,
                    error,
                    retryable,
                    class: Default::default(),
                    retry_after_s: None,
                    log_tail: None,
                }
            }
        ),
        (
            id,
            any::<u64>(),
            prop::option::of(".{0,100}"),
            prop::option::of(any::<u64>())
        )
            .prop_map(
                |(task_id, generation, summary, tokens_used)| SidecarMsg::Complete {
                    task_id,
                    generation,
                    result: TaskResult {
                        summary,
                        tokens_used,
                        ..Default::default()
                    },
                }
            ),
        (prop::option::of((id, any::<u64>())), any::<bool>()).prop_map(|(t, working)| {
            SidecarMsg::Heartbeat {
                state: if working {
                    SidecarState::Working
                } else {
                    SidecarState::Idle
                },
                task_id: t.as_ref().map(|(i, _)| i.clone()),
                generation: t.map(|(_, g)| g),
                activity: None,
                selftest: None,
            }
        }),
        (
            "[a-z0-9-]{1,20}",
            prop::collection::vec("[a-z]{1,8}", 0..4),
            prop::option::of((id, any::<u64>()))
        )
            .prop_map(|(agent_id, capabilities, cur)| SidecarMsg::Hello {
                protocol_version: 1,
                agent_id,
                capabilities,
                state: SidecarState::Idle,
                current_task: cur.map(|(i, g)| AttemptRef::new(i, g)),
                sidecar_version: "x".into(),
                pending_results: vec![],
                repos: vec![],
                context_window_tokens: None,
                instance_id: None,
                selftest: None,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_decodes_or_is_refused(text in ".{0,300}") {
        let _ = SidecarMsg::decode(&text);
        let _ = HubMsg::decode(&text);
    }

    #[test]
    fn any_bytes_as_lossy_text_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = SidecarMsg::decode(&text);
        let _ = HubMsg::decode(&text);
    }

    #[test]
    fn message_shaped_objects_decode_or_are_refused_and_round_trip(
        s in message_like(SIDECAR_TYPES),
        h in message_like(HUB_TYPES),
    ) {
        if let Ok(m) = SidecarMsg::decode(&s.to_string()) {
            prop_assert_eq!(SidecarMsg::decode(&m.encode()).unwrap(), m);
        }
        if let Ok(m) = HubMsg::decode(&h.to_string()) {
            prop_assert_eq!(HubMsg::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn valid_messages_survive_their_encoding_and_truncation_is_refused(
        m in valid_sidecar_msg(),
        cut in any::<prop::sample::Index>(),
    ) {
        let text = m.encode();
        prop_assert_eq!(SidecarMsg::decode(&text).unwrap(), m);
        // Any proper prefix of an object is not a message.
        let end = cut.index(text.len());
        if let Some(prefix) = text.get(..end) {
            prop_assert!(SidecarMsg::decode(prefix).is_err());
        }
    }

    #[test]
    fn acks_and_cancels_round_trip(id in ".{0,40}", generation in any::<u64>(), reason in prop::option::of(".{0,40}")) {
        for m in [
            HubMsg::Ack { task_id: id.clone(), generation, of: AckOf::Complete },
            HubMsg::Cancel { task_id: id.clone(), generation, reason: reason.clone() },
        ] {
            prop_assert_eq!(HubMsg::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn timestamps_parse_or_refuse(text in ".{0,40}", ms in -62_000_000_000_000i64..250_000_000_000_000i64) {
        let _ = Timestamp::parse(&text);
        let t = Timestamp(ms);
        prop_assert_eq!(Timestamp::parse(&t.to_string()), Ok(t));
    }
}
