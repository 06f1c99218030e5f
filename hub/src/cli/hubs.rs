//! Which hub the admin CLI asks, when it was given several (`--hub a,b`:
//! hubs on one database, one leading, the others standing by).
//!
//! It owns the order of one request's tries: first the hub that answered
//! the last request (the first given, at first), then the others in the
//! order given. A hub that cannot be reached, or answers 503 with the
//! error code `not_leader`, sends the request on: to the leader that
//! answer names, first — one of the given hubs or not, but never from an
//! `https://` hub to an `http://` one (the admin token would cross the
//! network in the clear) —, then to the next hub not tried yet. Each hub
//! is tried once a request; when none answered as the leader,
//! [`Tries::give_up`] says what each one said (with one hub, in the words
//! the CLI always used). Pure: it never touches a socket or the clock.

use std::collections::VecDeque;

/// Why a hub did not answer the request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// No connection (or no answer to a request that only reads), why.
    Unreachable(String),
    /// 503 `not_leader`: its message, and the leader it named.
    NotLeader {
        message: String,
        leader: Option<String>,
    },
    /// It named a leader the CLI does not follow, and why.
    NotFollowed { leader: String, why: &'static str },
}

/// One request's tries.
#[derive(Clone, Debug)]
pub(crate) struct Tries {
    /// The hubs left to try, in order.
    todo: VecDeque<String>,
    /// The hubs tried (or given up on).
    tried: Vec<String>,
    /// What each hub said, in the order tried.
    failures: Vec<(String, Failure)>,
}

/// `url` without a trailing `/`, as hubs are compared.
fn normal(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

impl Tries {
    /// The tries of one request to `hubs` (in the order given, at least
    /// one), the one that answered `last` first.
    pub(crate) fn new(hubs: &[String], last: &str) -> Tries {
        let last = normal(last);
        let hubs: Vec<String> = hubs.iter().map(|h| normal(h)).collect();
        let mut todo: VecDeque<String> = match hubs.iter().position(|h| *h == last) {
            Some(i) => hubs[i..].iter().chain(&hubs[..i]).cloned().collect(),
            // The last answer came from a leader that was named, not given.
            None => std::iter::once(last).chain(hubs).collect(),
        };
        let mut seen = Vec::new();
        todo.retain(|h| {
            let first = !seen.contains(h);
            seen.push(h.clone());
            first
        });
        Tries {
            todo,
            tried: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// The hub to try now; None when every one was tried.
    pub(crate) fn next(&mut self) -> Option<String> {
        let hub = self.todo.pop_front()?;
        self.tried.push(hub.clone());
        Some(hub)
    }

    /// `hub` could not be reached (`why`).
    pub(crate) fn unreachable(&mut self, hub: &str, why: String) {
        self.failures.push((normal(hub), Failure::Unreachable(why)));
    }

    /// `hub` answered 503 `not_leader` with `message`, naming `leader`
    /// (its base URL): that one is tried next, unless it was tried
    /// already or would take the token from https:// to http://.
    pub(crate) fn not_leader(&mut self, hub: &str, message: String, leader: Option<String>) {
        let hub = normal(hub);
        self.failures.push((
            hub.clone(),
            Failure::NotLeader {
                message,
                leader: leader.clone(),
            },
        ));
        let Some(leader) = leader.map(|l| normal(&l)) else {
            return;
        };
        if self.tried.contains(&leader) {
            return;
        }
        let why = if !(leader.starts_with("http://") || leader.starts_with("https://")) {
            Some("it is not an http:// or https:// address")
        } else if hub.starts_with("https://") && leader.starts_with("http://") {
            Some("the admin token would go over plain http")
        } else {
            None
        };
        if let Some(why) = why {
            self.failures
                .push((hub, Failure::NotFollowed { leader, why }));
            return;
        }
        self.todo.retain(|h| *h != leader);
        self.todo.push_front(leader);
    }

    /// Every hub was tried and none answered as the leader: what each
    /// said, in words. With one hub (and no leader named), the CLI's
    /// words for that one.
    pub(crate) fn give_up(self) -> String {
        let hint = "(--hub or AGENTCOM_HUB_URL)";
        if let [(hub, failure)] = &self.failures[..] {
            match failure {
                Failure::Unreachable(why) => {
                    return format!(
                        "cannot reach the hub at {hub}: {why}. Is it running, and is that its address {hint}?"
                    )
                }
                Failure::NotLeader {
                    message,
                    leader: None,
                } => return format!("not_leader (503): {message}"),
                _ => {}
            }
        }
        let each: Vec<String> = self
            .failures
            .iter()
            .map(|(hub, failure)| match failure {
                Failure::Unreachable(why) => format!("{hub}: cannot reach it: {why}"),
                Failure::NotLeader { message, leader } => format!(
                    "{hub}: not the leader (503 not_leader: {message}; {})",
                    match leader {
                        Some(l) => format!("it names {l} as the leader"),
                        None => "no hub leads right now, it says".to_string(),
                    }
                ),
                Failure::NotFollowed { leader, why } => {
                    format!("{hub}: not following it to {leader}: {why}")
                }
            })
            .collect();
        format!(
            "no hub answered as the leader: {}. Is one of them running and leading, and are those the hubs' addresses {hint}?",
            each.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(hubs: &[&str]) -> Vec<String> {
        hubs.iter().map(|h| h.to_string()).collect()
    }

    /// Every hub `t` would try, failing each as unreachable.
    fn order(mut t: Tries) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(h) = t.next() {
            t.unreachable(&h, "refused".into());
            out.push(h);
        }
        out
    }

    const A: &str = "http://a:4000";
    const B: &str = "http://b:4000";
    const C: &str = "http://c:4000";

    #[test]
    fn the_hub_that_answered_last_first_then_the_others_in_order() {
        let hubs = given(&[A, B, C]);
        assert_eq!(order(Tries::new(&hubs, A)), [A, B, C]);
        assert_eq!(order(Tries::new(&hubs, "http://b:4000/")), [B, C, A]);
        // A leader that was named, not given, answered last.
        assert_eq!(
            order(Tries::new(&hubs, "http://d:1")),
            ["http://d:1", A, B, C]
        );
        // The same hub given twice is asked once.
        assert_eq!(order(Tries::new(&given(&[A, "http://a:4000/"]), A)), [A]);
    }

    #[test]
    fn a_standby_sends_the_request_to_the_leader_it_names_given_or_not() {
        let hubs = given(&[A, B, C]);
        let mut t = Tries::new(&hubs, A);
        assert_eq!(t.next().as_deref(), Some(A));
        t.not_leader(A, "standby".into(), Some("http://c:4000/".into()));
        assert_eq!(t.next().as_deref(), Some(C));
        // C lost the lead and names one nobody gave.
        t.not_leader(C, "standby".into(), Some("http://d:4000".into()));
        assert_eq!(t.next().as_deref(), Some("http://d:4000"));
        t.unreachable("http://d:4000", "refused".into());
        // Then the rest, B; then nothing.
        assert_eq!(t.next().as_deref(), Some(B));
        t.not_leader(B, "standby".into(), Some(A.into()));
        assert_eq!(t.next(), None, "A was tried");
        let said = t.give_up();
        assert_eq!(
            said,
            "no hub answered as the leader: \
             http://a:4000: not the leader (503 not_leader: standby; it names http://c:4000/ as the leader); \
             http://c:4000: not the leader (503 not_leader: standby; it names http://d:4000 as the leader); \
             http://d:4000: cannot reach it: refused; \
             http://b:4000: not the leader (503 not_leader: standby; it names http://a:4000 as the leader). \
             Is one of them running and leading, and are those the hubs' addresses (--hub or AGENTCOM_HUB_URL)?"
        );
    }

    #[test]
    fn no_leader_is_followed_from_https_to_http_or_to_something_else() {
        let hubs = given(&["https://a", "https://b"]);
        let mut t = Tries::new(&hubs, "https://a");
        assert_eq!(t.next().as_deref(), Some("https://a"));
        t.not_leader("https://a", "s".into(), Some("http://b".into()));
        assert_eq!(t.next().as_deref(), Some("https://b"));
        t.not_leader("https://b", "s".into(), Some("ftp://x".into()));
        assert_eq!(t.next(), None);
        let said = t.give_up();
        assert!(
            said.contains(
                "https://a: not following it to http://b: the admin token would go over plain http"
            ) && said.contains(
                "https://b: not following it to ftp://x: it is not an http:// or https:// address"
            ),
            "{said}"
        );
        // From http to https is fine.
        let mut t = Tries::new(&given(&[A]), A);
        t.next();
        t.not_leader(A, "s".into(), Some("https://z".into()));
        assert_eq!(t.next().as_deref(), Some("https://z"));
    }

    #[test]
    fn one_hub_fails_in_the_words_the_cli_always_used() {
        let mut t = Tries::new(&given(&[A]), A);
        assert_eq!(t.next().as_deref(), Some(A));
        t.unreachable(A, "Connection refused (os error 111)".into());
        assert_eq!(t.next(), None);
        assert_eq!(
            t.give_up(),
            "cannot reach the hub at http://a:4000: Connection refused (os error 111). Is it running, and is that its address (--hub or AGENTCOM_HUB_URL)?"
        );
        let mut t = Tries::new(&given(&[A]), A);
        t.next();
        t.not_leader(A, "no hub leads".into(), None);
        assert_eq!(t.next(), None);
        assert_eq!(t.give_up(), "not_leader (503): no hub leads");
    }

    #[test]
    fn every_dead_hub_is_named_with_what_it_said() {
        let mut t = Tries::new(&given(&[A, B]), A);
        while let Some(h) = t.next() {
            t.unreachable(&h, format!("refused at {h}"));
        }
        let said = t.give_up();
        assert!(
            said.starts_with("no hub answered as the leader: http://a:4000: cannot reach it: refused at http://a:4000; http://b:4000: cannot reach it: refused at http://b:4000."),
            "{said}"
        );
    }
}
