//! Which hub to try next, when the sidecar knows several (`hub_urls`:
//! hubs on one database, one leading, the others standing by).
//!
//! It owns the order of tries. A round tries each URL at most once. It
//! starts with the hub that last welcomed the sidecar (the first URL
//! until one did), or with the leader a standby named in the round
//! before. A failure that means "not this hub" (no connection, a timeout,
//! an upgrade answered 503 or any other transient status, a Close before
//! `welcome`) moves on at once: to the leader the standby named, if it is
//! one of the URLs and was not tried in this round, else to the next URL
//! not tried yet, in the configured order (wrapping around). When every
//! URL of the round failed, the round is over: the caller pauses
//! (`backoff.rs`) and the next round begins. A connection that was
//! welcomed and then ended, and a permanent refusal (`refusal.rs`), end
//! the round at once, so the caller pauses as it always did; with one
//! URL every failure ends the round, as before there were several.
//! `join` uses the same order to find the hub that enrolls.
//!
//! Pure: it never touches a socket, sleeps or reads the clock; the caller
//! says what happened.

/// What the caller does after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try [`Hubs::current`] at once.
    Now,
    /// Every URL of the round failed: pause (the reconnect backoff), then
    /// try [`Hubs::current`], the first of a new round.
    AfterPause,
}

/// The hubs' WebSocket addresses and where the tries stand.
#[derive(Clone, Debug)]
pub(crate) struct Hubs {
    urls: Vec<String>,
    /// The URL tried now (an index into `urls`).
    current: usize,
    /// The URL that last welcomed the sidecar.
    last_good: usize,
    /// The leader a standby named in this round that was tried already:
    /// where the next round starts.
    named: Option<usize>,
    /// Which URLs this round tried.
    tried: Vec<bool>,
}

impl Hubs {
    /// `urls` in the configured order; at least one (the config checked).
    pub(crate) fn new(urls: Vec<String>) -> Hubs {
        assert!(!urls.is_empty(), "at least one hub URL");
        let n = urls.len();
        Hubs {
            urls,
            current: 0,
            last_good: 0,
            named: None,
            tried: vec![false; n],
        }
    }

    /// The URL to try now.
    pub(crate) fn current(&self) -> &str {
        &self.urls[self.current]
    }

    /// Its place in the configured order.
    pub(crate) fn current_index(&self) -> usize {
        self.current
    }

    /// Whether there is more than one hub to try.
    pub(crate) fn several(&self) -> bool {
        self.urls.len() > 1
    }

    /// [`Hubs::current`] is not the hub to talk to now; `leader` is the
    /// base URL a standby named as the leader (`http://host:port`), if
    /// any. Where to go next, and whether to pause first.
    pub(crate) fn not_this_hub(&mut self, leader: Option<&str>) -> Next {
        self.tried[self.current] = true;
        let named = leader
            .and_then(leader_ws)
            .and_then(|ws| self.urls.iter().position(|u| *u == ws));
        if let Some(i) = named {
            if !self.tried[i] {
                self.current = i;
                return Next::Now;
            }
            self.named = Some(i);
        }
        let n = self.urls.len();
        if let Some(i) = (1..n)
            .map(|step| (self.current + step) % n)
            .find(|&i| !self.tried[i])
        {
            self.current = i;
            return Next::Now;
        }
        self.new_round();
        Next::AfterPause
    }

    /// [`Hubs::current`] welcomed the sidecar: rounds start with it from
    /// now on.
    pub(crate) fn welcomed(&mut self) {
        self.last_good = self.current;
        self.named = None;
        self.tried.fill(false);
    }

    /// The round ends without another try now (a welcomed connection
    /// ended, or a permanent refusal): the caller pauses, then tries
    /// [`Hubs::current`], the first of a new round.
    pub(crate) fn round_over(&mut self) {
        self.new_round();
    }

    fn new_round(&mut self) {
        self.current = self.named.take().unwrap_or(self.last_good);
        self.tried.fill(false);
    }
}

/// The WebSocket address of a hub whose base URL is `leader`
/// (`http://h:p` → `ws://h:p/ws`, `https://…` → `wss://…/ws`; a trailing
/// `/` is ignored). None for anything else.
pub(crate) fn leader_ws(leader: &str) -> Option<String> {
    let leader = leader.trim().trim_end_matches('/');
    let (scheme, rest) = leader.split_once("://")?;
    let ws = match scheme {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    (!rest.is_empty() && !rest.contains(['/', '?', '#', ' '])).then(|| format!("{ws}://{rest}/ws"))
}

/// The HTTP base of a hub's WebSocket address (`ws://h:p/ws` →
/// `http://h:p`, `wss://…` → `https://…`), where it answers plain
/// requests. None if `ws` is not such an address.
pub(crate) fn http_base(ws: &str) -> Option<String> {
    let (scheme, rest) = ws.split_once("://")?;
    let http = match scheme {
        "ws" => "http",
        "wss" => "https",
        _ => return None,
    };
    let authority = rest.strip_suffix("/ws")?;
    (!authority.is_empty()).then(|| format!("{http}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ws://a:4000/ws";
    const B: &str = "ws://b:4000/ws";
    const C: &str = "ws://c:4000/ws";

    fn hubs(urls: &[&str]) -> Hubs {
        Hubs::new(urls.iter().map(|u| u.to_string()).collect())
    }

    /// Fail `h`'s current URL (naming `leader`); the URL tried next and
    /// whether a pause comes first.
    fn fail(h: &mut Hubs, leader: Option<&str>) -> (String, Next) {
        let next = h.not_this_hub(leader);
        (h.current().to_string(), next)
    }

    #[test]
    fn one_hub_pauses_after_every_failure_as_before() {
        let mut h = hubs(&[A]);
        assert!(!h.several());
        assert_eq!(h.current(), A);
        for _ in 0..3 {
            assert_eq!(fail(&mut h, None), (A.into(), Next::AfterPause));
        }
        // A standby's hint naming itself or a stranger changes nothing.
        assert_eq!(
            fail(&mut h, Some("http://a:4000")),
            (A.into(), Next::AfterPause)
        );
        assert_eq!(
            fail(&mut h, Some("http://x:1")),
            (A.into(), Next::AfterPause)
        );
        h.welcomed();
        h.round_over();
        assert_eq!(h.current(), A);
    }

    #[test]
    fn a_round_tries_each_hub_in_order_then_pauses() {
        let mut h = hubs(&[A, B, C]);
        assert!(h.several());
        assert_eq!(h.current(), A);
        assert_eq!(fail(&mut h, None), (B.into(), Next::Now));
        assert_eq!(fail(&mut h, None), (C.into(), Next::Now));
        assert_eq!(fail(&mut h, None), (A.into(), Next::AfterPause));
        // The next round is the same again.
        assert_eq!(fail(&mut h, None), (B.into(), Next::Now));
        assert_eq!(h.current_index(), 1);
    }

    #[test]
    fn rounds_start_with_the_hub_that_last_welcomed() {
        let mut h = hubs(&[A, B, C]);
        assert_eq!(fail(&mut h, None), (B.into(), Next::Now));
        h.welcomed();
        // Its connection ends: a pause, then B first.
        h.round_over();
        assert_eq!(h.current(), B);
        // B is a standby now: C, then A (wrapping around), then a pause
        // and B again.
        assert_eq!(fail(&mut h, None), (C.into(), Next::Now));
        assert_eq!(fail(&mut h, None), (A.into(), Next::Now));
        assert_eq!(fail(&mut h, None), (B.into(), Next::AfterPause));
    }

    #[test]
    fn a_standby_naming_a_leader_among_the_hubs_sends_the_next_try_there() {
        let mut h = hubs(&[A, B, C]);
        // A names C: C next, skipping B.
        assert_eq!(fail(&mut h, Some("http://c:4000")), (C.into(), Next::Now));
        // C refuses too (it lost the lead): B, the one left.
        assert_eq!(fail(&mut h, None), (B.into(), Next::Now));
        h.welcomed();
        h.round_over();
        assert_eq!(h.current(), B);

        // https and a trailing slash name the wss:// address.
        let mut h = hubs(&["wss://a/ws", "wss://b:443/ws", "wss://b/ws"]);
        assert_eq!(
            fail(&mut h, Some("https://b/")),
            ("wss://b/ws".into(), Next::Now)
        );
    }

    #[test]
    fn a_leader_that_is_not_among_the_hubs_or_unknown_changes_nothing() {
        for leader in [
            None,
            Some("http://elsewhere:4000"),
            Some("ws://b:4000/ws"),
            Some("not a url"),
            Some(""),
        ] {
            let mut h = hubs(&[A, B, C]);
            assert_eq!(fail(&mut h, leader), (B.into(), Next::Now), "{leader:?}");
        }
    }

    #[test]
    fn a_leader_tried_already_in_the_round_starts_the_next_one() {
        let mut h = hubs(&[A, B, C]);
        assert_eq!(fail(&mut h, None), (B.into(), Next::Now));
        // B names A, which was tried (perhaps before it took the lead):
        // C first, as nobody untried was named.
        assert_eq!(fail(&mut h, Some("http://a:4000")), (C.into(), Next::Now));
        // The round is over: after the pause, A, the named leader, first.
        assert_eq!(fail(&mut h, None), (A.into(), Next::AfterPause));
        // A standby's hint lasts one round only.
        assert_eq!(fail(&mut h, None), (B.into(), Next::Now));
        assert_eq!(fail(&mut h, None), (C.into(), Next::Now));
        assert_eq!(fail(&mut h, None), (A.into(), Next::AfterPause));
    }

    #[test]
    fn two_standbys_naming_each_other_still_leave_no_hub_untried() {
        let mut h = hubs(&[A, B, C]);
        assert_eq!(fail(&mut h, Some("http://b:4000")), (B.into(), Next::Now));
        assert_eq!(fail(&mut h, Some("http://a:4000")), (C.into(), Next::Now));
        assert_eq!(
            fail(&mut h, Some("http://b:4000")),
            (B.into(), Next::AfterPause)
        );
    }

    #[test]
    fn a_refusal_or_a_lost_connection_ends_the_round_at_once() {
        let mut h = hubs(&[A, B]);
        assert_eq!(fail(&mut h, None), (B.into(), Next::Now));
        // B refuses for good (a wrong token): a pause, then a new round
        // from the hub that last welcomed (none yet: the first).
        h.round_over();
        assert_eq!(h.current(), A);
        assert_eq!(fail(&mut h, None), (B.into(), Next::Now));
        h.welcomed();
        h.round_over();
        assert_eq!(h.current(), B);
        assert_eq!(fail(&mut h, None), (A.into(), Next::Now));
    }

    #[test]
    fn leader_and_http_addresses() {
        assert_eq!(
            leader_ws("http://127.0.0.1:4001").as_deref(),
            Some("ws://127.0.0.1:4001/ws")
        );
        assert_eq!(
            leader_ws(" https://hub.example/ ").as_deref(),
            Some("wss://hub.example/ws")
        );
        assert_eq!(
            leader_ws("http://[::1]:9").as_deref(),
            Some("ws://[::1]:9/ws")
        );
        for no in ["ws://h/ws", "http://", "http://h/base", "h:4000", "ftp://h"] {
            assert_eq!(leader_ws(no), None, "{no}");
        }
        assert_eq!(http_base("ws://h:1/ws").as_deref(), Some("http://h:1"));
        assert_eq!(http_base("wss://h/ws").as_deref(), Some("https://h"));
        assert_eq!(http_base("ws:///ws"), None);
        assert_eq!(http_base("http://h/ws"), None);
    }
}
