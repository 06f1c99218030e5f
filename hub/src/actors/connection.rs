//! `ConnectionActor`: one actor per sidecar WebSocket connection.
//!
//! It owns the connection's `actix_ws::Session` through a `SinkWrite`, so
//! any handler can write a frame. When it starts it attaches itself to its
//! agent's actor (so revoking the agent closes it even before `hello`) and
//! arms the hello timer: without a `hello` within `hello_timeout_s` it
//! closes. Every data frame first draws on the agent's message limit
//! (shared by the agent's connections, large frames costing more): over
//! it the frame is still handled but the actor reads nothing more until
//! the agent's rate has fallen to the limit (`ctx.wait`; the sidecar hears
//! `rate_limited` once a run), so nothing a sidecar sends is lost and a
//! flood costs the hub no more than the limit; slowed without a pause for
//! ten bursts' time, the connection is closed. It parses each text frame into a
//! [`SidecarMsg`]; the first must be `hello` for the agent whose token
//! opened the connection, with our protocol version. After that, every
//! message goes to the agent's actor in arrival order. Frames it cannot use
//! are answered with an `error` frame and the connection stays up; a frame
//! over 1 MiB ends the connection (its bytes cannot be skipped) after an
//! `error` and a Close (1009). Ping is answered with Pong by hand (actix-ws
//! does not).
//!
//! Closing: it writes the Close frame, closes the sink, and stops when the
//! sink has flushed (a fallback timer covers a half-open peer); stopping
//! straight after writing would drop the frame. When it stops it tells the
//! agent actor, with its connection id so a late close never disconnects a
//! newer connection.
//!
//! It holds no agent or task state: the agent's state machine decides
//! everything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Message, ProtocolError};
use agentcom_protocol::{HubMsg, SidecarMsg, Timestamp, PROTOCOL_VERSION};

use crate::actors::messages::{
    AgentHandle, Attach, CloseConn, ConnId, ConnLink, Connect, Disconnect, FromSidecar, Push,
};
use crate::domain::fsm::HelloFacts;
use crate::domain::limits;
use crate::domain::rate::{Admit, MessageLimit};
use crate::stats::Stats;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A connection's settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnSettings {
    pub hello_timeout: Duration,
    /// The agent's message limit, to name it to the sidecar.
    pub messages_per_s: u32,
    pub messages_burst: u32,
}

pub(crate) struct ConnectionActor {
    id: ConnId,
    agent_id: String,
    agent: AgentHandle,
    limit: Arc<Mutex<MessageLimit>>,
    settings: ConnSettings,
    sink: SinkWrite<Message, actix_ws::Session>,
    stats: Arc<Stats>,
    said_hello: bool,
    closing: bool,
}

impl ConnectionActor {
    pub(crate) fn new(
        agent_id: String,
        agent: AgentHandle,
        settings: ConnSettings,
        ws: actix_ws::Session,
        stats: Arc<Stats>,
        ctx: &mut Context<Self>,
    ) -> Self {
        ConnectionActor {
            id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
            agent_id,
            limit: agent.limit.clone(),
            agent,
            settings,
            sink: SinkWrite::new(ws, ctx),
            stats,
            said_hello: false,
            closing: false,
        }
    }

    fn link(ctx: &Context<Self>) -> ConnLink {
        ConnLink {
            push: ctx.address().recipient(),
            close: ctx.address().recipient(),
        }
    }

    /// Draw a message of `bytes` on the agent's limit: true to handle it;
    /// over the limit, the connection reads nothing more until the agent's
    /// rate has fallen to it (the sidecar told once a run); flooding for
    /// long closes the connection (false).
    fn admit(&mut self, bytes: usize, ctx: &mut Context<Self>) -> bool {
        let verdict = self
            .limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Timestamp::now(), bytes);
        let (per_s, burst) = (self.settings.messages_per_s, self.settings.messages_burst);
        match verdict {
            Admit::Now => true,
            Admit::Slow { wait_ms, tell } => {
                self.stats.ws_rate_limited.inc();
                if tell {
                    tracing::warn!(agent = %self.agent_id, conn = self.id, per_s, burst,
                        "the sidecar is over its message rate; reading it at that rate");
                    self.refuse(
                        "rate_limited",
                        format!("more than {per_s} messages per second (bursts of {burst}); the hub reads this connection at that rate until it falls"),
                    );
                }
                ctx.wait(actix::fut::wrap_future(tokio::time::sleep(
                    Duration::from_millis(wait_ms),
                )));
                true
            }
            Admit::Disconnect => {
                self.stats.ws_rate_limited.inc();
                let reason = format!("message rate limit exceeded without a pause ({per_s} per second, bursts of {burst})");
                self.refuse("rate_limited", reason.clone());
                self.close(ctx, CloseCode::Policy, &reason);
                false
            }
        }
    }

    fn push(&mut self, msg: &HubMsg) {
        if self.closing {
            return;
        }
        let text = msg.encode();
        self.stats.message_out(text.len());
        tracing::debug!(agent = %self.agent_id, conn = self.id, kind = msg.kind(), "→ sidecar");
        let _ = self.sink.write(Message::Text(text.into()));
    }

    fn refuse(&mut self, code: &str, message: String) {
        tracing::warn!(agent = %self.agent_id, conn = self.id, code, %message, "frame refused");
        self.stats.ws_bad_frames.inc();
        self.push(&HubMsg::error(code, message));
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: &str) {
        if self.closing {
            return;
        }
        tracing::info!(agent = %self.agent_id, conn = self.id, reason, "closing connection");
        self.closing = true;
        let _ = self.sink.write(Message::Close(Some(CloseReason {
            code,
            description: Some(reason.to_string()),
        })));
        self.sink.close();
        ctx.run_later(Duration::from_secs(5), |_, ctx| ctx.stop());
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        self.stats.message_in(text.len());
        let msg = match SidecarMsg::decode(text) {
            Ok(m) => m,
            Err(e) => return self.refuse("bad_message", format!("not a valid message: {e}")),
        };
        tracing::debug!(agent = %self.agent_id, conn = self.id, kind = msg.kind(), "← sidecar");
        match msg {
            SidecarMsg::Hello {
                protocol_version,
                agent_id,
                capabilities,
                current_task,
                sidecar_version,
                pending_results,
                repos,
                context_window_tokens,
                instance_id,
                selftest,
                ..
            } => {
                if protocol_version != PROTOCOL_VERSION {
                    self.refuse(
                        "protocol_version",
                        format!("this hub speaks protocol {PROTOCOL_VERSION}, the sidecar {protocol_version}"),
                    );
                    return self.close(ctx, CloseCode::Policy, "unsupported protocol version");
                }
                if agent_id != self.agent_id {
                    self.refuse(
                        "wrong_agent",
                        format!("this token belongs to {}, not {agent_id}", self.agent_id),
                    );
                    return self.close(ctx, CloseCode::Policy, "hello names another agent");
                }
                if self.said_hello {
                    return self.refuse(
                        "duplicate_hello",
                        "hello was already received on this connection".into(),
                    );
                }
                self.said_hello = true;
                self.agent.connect.do_send(Connect {
                    conn: self.id,
                    link: Self::link(ctx),
                    hello: HelloFacts {
                        capabilities,
                        repos,
                        context_window_tokens,
                        current_task,
                        pending_results,
                        sidecar_version,
                        instance_id: limits::instance_id(instance_id.as_deref()),
                        selftest,
                    },
                });
            }
            other if !self.said_hello => {
                self.refuse("hello_first", format!("send hello before {}", other.kind()));
            }
            other => self.agent.from_sidecar.do_send(FromSidecar {
                conn: self.id,
                msg: other,
            }),
        }
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(agent = %self.agent_id, conn = self.id, "sidecar connected");
        self.agent.attach.do_send(Attach {
            conn: self.id,
            link: Self::link(ctx),
        });
        let within = self.settings.hello_timeout;
        ctx.run_later(within, move |act, ctx| {
            if !act.said_hello {
                let reason = format!("no hello within {} s", within.as_secs());
                act.refuse("hello_timeout", reason.clone());
                act.close(ctx, CloseCode::Policy, &reason);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::info!(agent = %self.agent_id, conn = self.id, "sidecar connection ended");
        self.agent.disconnect.do_send(Disconnect { conn: self.id });
    }
}

impl WriteHandler<actix_ws::Closed> for ConnectionActor {
    fn error(&mut self, _: actix_ws::Closed, _: &mut Self::Context) -> Running {
        Running::Stop
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for ConnectionActor {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        let bytes = match &item {
            Ok(AggregatedMessage::Text(t)) => Some(t.len()),
            Ok(AggregatedMessage::Binary(b) | AggregatedMessage::Ping(b)) => Some(b.len()),
            _ => None,
        };
        if let Some(bytes) = bytes {
            if !self.admit(bytes, ctx) {
                return;
            }
        }
        match item {
            Ok(AggregatedMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(AggregatedMessage::Binary(b)) => {
                self.stats.message_in(b.len());
                self.refuse(
                    "bad_message",
                    "binary frames are not part of the protocol; send JSON text".into(),
                );
            }
            Ok(AggregatedMessage::Ping(p)) => {
                let _ = self.sink.write(Message::Pong(p));
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(reason)) => {
                let reason = reason.map_or("none given".to_string(), |r| {
                    let code = u16::from(r.code);
                    match r.description {
                        Some(d) => format!("{code} {d}"),
                        None => code.to_string(),
                    }
                });
                tracing::info!(agent = %self.agent_id, conn = self.id, %reason, "sidecar closed the connection");
                self.close(ctx, CloseCode::Normal, "bye");
            }
            Err(ProtocolError::Overflow) => {
                self.refuse(
                    "frame_too_large",
                    format!(
                        "frames are limited to {} bytes",
                        agentcom_protocol::MAX_FRAME_BYTES
                    ),
                );
                self.close(ctx, CloseCode::Size, "frame too large");
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("continuation size") {
                    self.refuse(
                        "frame_too_large",
                        format!(
                            "messages are limited to {} bytes",
                            agentcom_protocol::MAX_FRAME_BYTES
                        ),
                    );
                    self.close(ctx, CloseCode::Size, "message too large");
                } else {
                    self.refuse("protocol_error", text);
                    self.close(ctx, CloseCode::Protocol, "protocol error");
                }
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Push> for ConnectionActor {
    type Result = ();
    fn handle(&mut self, msg: Push, _: &mut Context<Self>) {
        self.push(&msg.0);
    }
}

impl Handler<CloseConn> for ConnectionActor {
    type Result = ();
    fn handle(&mut self, msg: CloseConn, ctx: &mut Context<Self>) {
        self.close(ctx, CloseCode::Normal, &msg.reason);
    }
}
