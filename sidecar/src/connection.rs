//! One WebSocket connection to the hub (awc), `ws://` or `wss://`.
//!
//! It owns the socket: connecting with the agent's token (over TLS, with
//! the trust [`Tls`] loaded once at start), writing
//! [`SidecarMsg`] frames, reading frames into [`HubMsg`]s, answering
//! pings, the close handshake, and knowing when the hub was last heard
//! and whether the socket broke. Frames over `MAX_FRAME_BYTES` go neither
//! way: an incoming one ends the connection from its header
//! (`frame_limit.rs`), an outgoing one is not sent (the attempt machine
//! never makes a report that large; anything else is dropped with an
//! error in the log). It must never decide what to say: the
//! attempt machine does, and the daemon loop decides when to reconnect
//! (with [`crate::backoff`]) and which hub to try (`hubs.rs`); it only
//! reads what a hub that refused the upgrade with 503 says when asked
//! plainly ([`Connection::standby_answer`]: a standby names the leader).
//! awc is `!Send`: a connection lives on the daemon's one thread.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_codec::Framed;
use agentcom_protocol::{HubMsg, NotLeader, SidecarMsg, MAX_FRAME_BYTES};
use agentcom_tls::{ClientConfig, PemFile};
use awc::error::{ConnectError, SendRequestError, WsClientError, WsProtocolError};
use awc::ws::{CloseCode, Frame, Message};
use awc::BoxedSocket;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;

use crate::frame_limit::FrameLimit;

/// What [`Connection::next_frame`] yields.
pub(crate) type RawFrame = Option<Result<Frame, WsProtocolError>>;

/// Why [`Connection::open`] failed.
#[derive(Debug)]
pub(crate) enum OpenFailed {
    /// The hub answered the upgrade with this status, not 101 (see
    /// `refusal.rs` for what each means).
    Status(u16),
    /// No answer: the network, TLS, a timeout (in words).
    Other(String),
}

impl std::fmt::Display for OpenFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFailed::Status(s) => write!(f, "the hub answered {s}"),
            OpenFailed::Other(e) => f.write_str(e),
        }
    }
}

/// What a frame from the hub meant.
pub(crate) enum Received {
    /// A message for the sidecar.
    Msg(HubMsg),
    /// Nothing for the sidecar (a ping answered, a pong, a frame it cannot
    /// read).
    Nothing,
    /// The connection is over (closed by the hub, an error, or gone).
    Ended,
}

pub(crate) struct Connection {
    framed: Framed<BoxedSocket, FrameLimit>,
    last_heard: Instant,
    broken: bool,
}

/// What the sidecar trusts for a `wss://` hub: exactly the certificates of
/// the top-level `ca_file`, or else the system's roots. Loaded once, at
/// start, so a bad file stops the start with its name.
pub(crate) struct Tls(Option<Arc<ClientConfig>>);

impl Tls {
    /// The trust for `hub_urls` (needed if one of them is `wss://` or a
    /// `ca_file` is set).
    pub(crate) fn load(hub_urls: &[String], ca_file: Option<&Path>) -> Result<Tls, String> {
        if !hub_urls.iter().any(|u| u.starts_with("wss://")) && ca_file.is_none() {
            return Ok(Tls(None));
        }
        let config = agentcom_tls::client_config(ca_file.map(|p| PemFile::new("ca_file", p)))
            .map_err(|e| e.to_string())?;
        match ca_file {
            Some(p) => {
                tracing::info!(ca_file = %p.display(), "TLS: trusting only the CA certificates in ca_file")
            }
            None => tracing::info!("TLS: trusting the system's root certificates"),
        }
        Ok(Tls(Some(Arc::new(config))))
    }
}

impl Connection {
    /// Open the WebSocket at `url` with the agent's token.
    pub(crate) async fn open(url: &str, token: &str, tls: &Tls) -> Result<Connection, OpenFailed> {
        let mut connector = awc::Connector::new();
        if let Some(config) = &tls.0 {
            connector = connector.rustls_0_23(config.clone());
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(10))
            .finish();
        let (_resp, framed) = client
            .ws(url)
            .bearer_auth(token)
            .max_frame_size(MAX_FRAME_BYTES)
            .connect()
            .await
            .map_err(|e| match e {
                WsClientError::InvalidResponseStatus(s) => OpenFailed::Status(s.as_u16()),
                WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Io(io))) => {
                    OpenFailed::Other(
                        agentcom_tls::connect_failure(
                            &io,
                            "set ca_file in the sidecar's config to the PEM file of the CA that signed it",
                        )
                        .unwrap_or_else(|| io.to_string()),
                    )
                }
                other => OpenFailed::Other(other.to_string()),
            })?;
        Ok(Connection {
            framed: framed.into_map_codec(|c| FrameLimit::new(c, MAX_FRAME_BYTES)),
            last_heard: Instant::now(),
            broken: false,
        })
    }

    /// What a hub that answered the upgrade at `url` with 503 says when
    /// asked plainly (a `GET` of the same address over HTTP(S), with the
    /// token, within a few seconds): a standby's `not_leader` answer
    /// naming the leader, or None (another answer, or none). The upgrade's
    /// own answer cannot be read (awc drops it).
    pub(crate) async fn standby_answer(url: &str, token: &str, tls: &Tls) -> Option<NotLeader> {
        let http = crate::hubs::http_base(url)? + "/ws";
        let mut connector = awc::Connector::new();
        if let Some(config) = &tls.0 {
            connector = connector.rustls_0_23(config.clone());
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(5))
            .finish();
        let mut resp = client.get(&http).bearer_auth(token).send().await.ok()?;
        if resp.status().as_u16() != 503 {
            return None;
        }
        let body = resp.body().limit(16 * 1024).await.ok()?;
        NotLeader::parse(&body)
    }

    /// A send failed or a ping could not be answered: the socket is no
    /// good any more.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// How long since the hub was last heard from.
    pub(crate) fn silence(&self) -> Duration {
        self.last_heard.elapsed()
    }

    /// The next frame (cancel-safe: use it in `select!`, then
    /// [`Connection::read`] it).
    pub(crate) async fn next_frame(&mut self) -> RawFrame {
        self.framed.next().await
    }

    /// Make sense of a frame; answer pings and the hub's close.
    pub(crate) async fn read(&mut self, frame: RawFrame) -> Received {
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "connection error");
                return Received::Ended;
            }
            None => {
                tracing::warn!("connection lost");
                return Received::Ended;
            }
        };
        self.last_heard = Instant::now();
        match frame {
            Frame::Text(bytes) => match std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|t| HubMsg::decode(t).map_err(|e| e.to_string()))
            {
                Ok(msg) => Received::Msg(msg),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a frame the sidecar cannot read");
                    Received::Nothing
                }
            },
            Frame::Ping(p) => match self.write(Message::Pong(p)).await {
                Ok(()) => Received::Nothing,
                Err(()) => Received::Ended,
            },
            Frame::Close(reason) => {
                let reason = crate::refusal::closed(
                    reason.as_ref().map(|r| r.code.into()),
                    reason.as_ref().and_then(|r| r.description.as_deref()),
                );
                tracing::info!(%reason, "the hub closed the connection");
                let _ = self.framed.send(Message::Close(None)).await;
                Received::Ended
            }
            Frame::Pong(_) => Received::Nothing,
            Frame::Binary(_) | Frame::Continuation(_) => {
                tracing::warn!("ignoring a binary frame");
                Received::Nothing
            }
        }
    }

    /// Send one message; a failure breaks the connection. One too large
    /// for a frame is not sent (the hub would close the connection).
    pub(crate) async fn send(&mut self, msg: &SidecarMsg) -> Result<(), ()> {
        tracing::debug!(kind = msg.kind(), "→ hub");
        let text = msg.encode();
        if text.len() > MAX_FRAME_BYTES {
            tracing::error!(
                kind = msg.kind(),
                bytes = text.len(),
                "not sending a message larger than a frame may be"
            );
            return Ok(());
        }
        self.write(Message::Text(text.into())).await
    }

    /// A WebSocket ping, so a dead peer is noticed.
    pub(crate) async fn ping(&mut self) -> Result<(), ()> {
        self.write(Message::Ping(Default::default())).await
    }

    /// Say goodbye (the sidecar is stopping).
    pub(crate) async fn close(&mut self) {
        let _ = self
            .framed
            .send(Message::Close(Some(CloseCode::Away.into())))
            .await;
    }

    /// End a connection that was only a test (`selftest`): a normal
    /// Close, then the hub's answering Close (or `within` at most).
    pub(crate) async fn close_politely(mut self, within: Duration) {
        if self
            .framed
            .send(Message::Close(Some(CloseCode::Normal.into())))
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(within, async {
            while let Some(Ok(frame)) = self.framed.next().await {
                if matches!(frame, Frame::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    async fn write(&mut self, msg: Message) -> Result<(), ()> {
        if self.broken {
            return Err(());
        }
        self.framed.send(msg).await.map_err(|e| {
            tracing::warn!(error = %e, "send failed");
            self.broken = true;
        })
    }
}
