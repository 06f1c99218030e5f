//! What the hub's refusals mean: a WebSocket upgrade it answered with
//! another status than 101, an `error` frame that ends the connection
//! (`agent_in_use`), and the reason of a Close frame, each in words that
//! name the fix.
//!
//! It owns which refusals are permanent (trying again in a second cannot
//! help: a wrong or revoked token, a forbidden sidecar, a `hub_url` that is
//! not the hub's `/ws`, another sidecar connected as this agent) and the
//! sentence for each. The daemon logs a permanent one at ERROR and waits
//! the longest reconnect delay ([`crate::backoff::Backoff::refused_delay`]);
//! `selftest` shows the same words for its `token` check. A 503 is not
//! permanent: with several hubs it is a standby's answer
//! ([`not_leading`] says which hub leads), and the daemon moves on to the
//! next hub (`hubs.rs`). Pure: it never
//! touches a socket, sleeps, reads the clock or decides when to reconnect.

use std::path::Path;

use agentcom_protocol::NotLeader;

use crate::config::ws_address;

/// A refusal by the hub, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Trying again soon cannot help: only a change on this machine or the
    /// hub can.
    pub(crate) permanent: bool,
    /// What happened and how to fix it.
    pub(crate) message: String,
}

/// The hub at `hub_url` answered the WebSocket upgrade of agent
/// `agent_id` (configured in the file `config`) with `status` (the words
/// for a sidecar of one hub, `hub_url`).
#[cfg(test)]
pub(crate) fn upgrade_refused(
    status: u16,
    hub_url: &str,
    agent_id: &str,
    config: &Path,
) -> Refusal {
    upgrade_refused_in("hub_url", status, hub_url, agent_id, config)
}

/// [`upgrade_refused`] for a `hub_url` named by the setting `setting`
/// (`hub_url`, or one of several in `hub_urls`).
pub(crate) fn upgrade_refused_in(
    setting: &str,
    status: u16,
    hub_url: &str,
    agent_id: &str,
    config: &Path,
) -> Refusal {
    let one = setting == "hub_url";
    let config = config.display();
    let permanent = |message: String| Refusal {
        permanent: true,
        message,
    };
    match status {
        401 => permanent(format!(
            "the hub refused this agent's token (401): it is wrong, or agent {agent_id} was revoked; \
             fix token or token_file in {config}, or get a new token \
             (agentcom-hub agent add {agent_id}, or agentcom-sidecar join)"
        )),
        403 => permanent(format!(
            "the hub refused this sidecar (403 forbidden): check that {} is your hub, \
             and ask its operator why (the hub's log says)",
            if one {
                format!("hub_url ({hub_url})")
            } else {
                format!("{hub_url} (in {setting})")
            }
        )),
        404 | 300..=399 => {
            let what = if status == 404 {
                "404 not found".to_string()
            } else {
                format!("a redirect, {status}")
            };
            let fix = match ws_address(hub_url) {
                Some(right) if right != hub_url && one => {
                    format!("set hub_url in {config} to {right}")
                }
                Some(right) if right != hub_url => {
                    format!("write {right} for {hub_url} in {setting} in {config}")
                }
                _ => format!(
                    "{setting} must name the hub's /ws address: is something other than the hub (a proxy?) answering at {hub_url}?"
                ),
            };
            permanent(format!(
                "the hub has no WebSocket at {hub_url} (it answered {what}): {fix}"
            ))
        }
        _ => Refusal {
            permanent: false,
            message: format!(
                "the hub answered the WebSocket upgrade with {status} instead of 101 (switching protocols)"
            ),
        },
    }
}

/// The hub at `hub_url` answered the upgrade with 503, and said `answer`
/// when asked plainly (a standby's `not_leader`, naming the leader or
/// none; None: it said nothing a sidecar reads), in words.
pub(crate) fn not_leading(hub_url: &str, answer: Option<&NotLeader>) -> String {
    let Some(answer) = answer else {
        return format!(
            "the hub at {hub_url} answered the WebSocket upgrade with 503 (a standby, or too busy)"
        );
    };
    let said = crate::validate::shown(&answer.error.message, 200);
    match &answer.error.leader {
        Some(leader) => format!(
            "the hub at {hub_url} is a standby (503 not_leader: {said}); the leader is {}",
            crate::validate::shown(leader, 200)
        ),
        None => format!(
            "the hub at {hub_url} is a standby (503 not_leader: {said}); no hub leads right now"
        ),
    }
}

/// The hub's `error` frame `code` (with its `message`, already made safe
/// to show), if it refuses the connection for good; None for the others
/// (a frame it could not use: the connection goes on).
pub(crate) fn hub_error(code: &str, message: &str, agent_id: &str) -> Option<Refusal> {
    match code {
        "agent_in_use" => Some(Refusal {
            permanent: true,
            message: format!(
                "another sidecar is connected as agent {agent_id} (the hub says: {message}); \
                 two sidecars must not share one agent: give each machine its own agent id \
                 (agentcom-sidecar join --id …)"
            ),
        }),
        _ => None,
    }
}

/// A Close frame's reason in words: its code's meaning and number, and
/// the peer's description (quoted, cut, control characters escaped).
pub(crate) fn closed(code: Option<u16>, description: Option<&str>) -> String {
    let Some(code) = code else {
        return "no reason given".into();
    };
    let meaning = match code {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1006 => "abnormal closure",
        1007 => "invalid data",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "extension required",
        1011 => "internal error",
        1012 => "restarting",
        1013 => "try again later",
        1015 => "TLS failure",
        _ => "close code",
    };
    match description.filter(|d| !d.is_empty()) {
        Some(d) => format!("{meaning} ({code}): {}", crate::validate::shown(d, 200)),
        None => format!("{meaning} ({code})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "ws://127.0.0.1:4000/ws";

    #[test]
    fn a_wrong_token_is_permanent_and_names_the_fix() {
        let r = upgrade_refused(401, URL, "loash", Path::new("/etc/s.toml"));
        assert!(r.permanent);
        for said in [
            "401",
            "token or token_file in /etc/s.toml",
            "agentcom-hub agent add loash",
            "agentcom-sidecar join",
            "revoked",
        ] {
            assert!(r.message.contains(said), "{said}: {}", r.message);
        }
        let r = upgrade_refused(403, URL, "loash", Path::new("/etc/s.toml"));
        assert!(r.permanent && r.message.contains("403 forbidden"), "{r:?}");
    }

    #[test]
    fn no_websocket_at_the_address_names_the_right_one() {
        for (status, url, said) in [
            (
                404,
                "ws://h:4000/",
                "set hub_url in /etc/s.toml to ws://h:4000/ws",
            ),
            (
                302,
                "ws://h:4000",
                "set hub_url in /etc/s.toml to ws://h:4000/ws",
            ),
            (308, "wss://h/x", "a redirect, 308"),
            (
                404,
                URL,
                "is something other than the hub (a proxy?) answering",
            ),
        ] {
            let r = upgrade_refused(status, url, "a", Path::new("/etc/s.toml"));
            assert!(r.permanent, "{status}");
            assert!(r.message.contains(said), "{status} {url}: {}", r.message);
            assert!(
                r.message.contains(&format!("no WebSocket at {url}")),
                "{}",
                r.message
            );
        }
    }

    #[test]
    fn a_hub_of_several_is_named_as_an_entry_of_hub_urls() {
        let c = Path::new("/etc/s.toml");
        let r = upgrade_refused_in("hub_urls", 404, "ws://h:4000/", "a", c);
        assert!(r.permanent);
        assert!(
            r.message
                .contains("write ws://h:4000/ws for ws://h:4000/ in hub_urls in /etc/s.toml"),
            "{}",
            r.message
        );
        let r = upgrade_refused_in("hub_urls", 404, URL, "a", c);
        assert!(
            r.message
                .contains("hub_urls must name the hub's /ws address"),
            "{}",
            r.message
        );
        let r = upgrade_refused_in("hub_urls", 403, URL, "a", c);
        assert!(
            r.message
                .contains("check that ws://127.0.0.1:4000/ws (in hub_urls) is your hub"),
            "{}",
            r.message
        );
        assert!(!upgrade_refused_in("hub_urls", 503, URL, "a", c).permanent);
    }

    #[test]
    fn a_standby_is_named_with_the_leader_it_names() {
        assert_eq!(
            not_leading(URL, Some(&NotLeader::new("standby", Some("http://b:4000".into())))),
            "the hub at ws://127.0.0.1:4000/ws is a standby (503 not_leader: \"standby\"); the leader is \"http://b:4000\""
        );
        assert!(
            not_leading(URL, Some(&NotLeader::new("x", None))).ends_with("no hub leads right now")
        );
        assert!(not_leading(URL, None).contains("answered the WebSocket upgrade with 503"));
    }

    #[test]
    fn other_answers_are_transient() {
        for status in [500, 502, 503, 429, 400] {
            let r = upgrade_refused(status, URL, "a", Path::new("/etc/s.toml"));
            assert!(!r.permanent, "{status}");
            assert!(r.message.contains(&status.to_string()), "{}", r.message);
        }
    }

    #[test]
    fn agent_in_use_is_permanent_and_says_each_machine_needs_its_own_agent() {
        let r = hub_error(
            "agent_in_use",
            "\"agent loash is connected from 10.0.0.2\"",
            "loash",
        )
        .unwrap();
        assert!(r.permanent);
        assert!(r.message.contains("10.0.0.2"), "{}", r.message);
        assert!(
            r.message.contains("two sidecars must not share one agent")
                && r.message.contains("agentcom-sidecar join --id"),
            "{}",
            r.message
        );
        assert_eq!(hub_error("bad_message", "x", "loash"), None);
    }

    #[test]
    fn close_reasons_are_words() {
        assert_eq!(
            closed(Some(1000), Some("replaced by a new connection")),
            "normal closure (1000): \"replaced by a new connection\""
        );
        assert_eq!(closed(Some(1008), None), "policy violation (1008)");
        assert_eq!(closed(Some(4001), Some("")), "close code (4001)");
        assert_eq!(closed(None, None), "no reason given");
        assert_eq!(
            closed(Some(1011), Some("a\nb")),
            "internal error (1011): \"a\\nb\""
        );
    }
}
