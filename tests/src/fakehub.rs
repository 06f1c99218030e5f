//! A fake hub: a WebSocket server on a free port that a real sidecar
//! connects to, for tests that need a hub to misbehave (traversal ids,
//! absurd `welcome` values, garbage frames) where the real hub never
//! would.
//!
//! It owns the listening socket and, per connection, the server side of
//! the WebSocket. It decides nothing by itself: the test scripts every
//! frame it sends (text, binary, pings, raw frames, bytes cut mid-frame)
//! and reads every message the sidecar sends, in order. [`FakeConn::sync`]
//! is the barrier that makes scripts deterministic: a WebSocket ping with
//! a unique payload, answered by the sidecar's one event loop only after
//! every frame sent before it was handled.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::{Message, WebSocket};

/// The listening side; each sidecar connection is a [`FakeConn`].
pub struct FakeHub {
    listener: TcpListener,
    pub port: u16,
}

/// What [`FakeConn::recv`] got.
#[derive(Debug, PartialEq)]
pub enum Got {
    /// A JSON text frame from the sidecar.
    Msg(Value),
    /// The connection ended (closed by the sidecar, or broken).
    Ended,
    /// Nothing before the deadline.
    Nothing,
}

/// One sidecar connection, server side.
pub struct FakeConn {
    ws: WebSocket<TcpStream>,
    /// The `Authorization` header of the upgrade.
    pub authorization: Option<String>,
    /// Every JSON message received so far, in order.
    pub received: Vec<Value>,
    next_ping: u64,
}

impl FakeHub {
    /// Listen on a free loopback port.
    pub fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        FakeHub { listener, port }
    }

    /// The URL a sidecar's `hub_url` names.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// The next TCP connection within `timeout`, blocking, with a 5 s read
    /// timeout.
    fn next_stream(&self, timeout: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Some(stream)
    }

    /// Answer the next connection's upgrade request with `status_line`
    /// (such as `404 Not Found`) and `headers` (each `Name: value`), not
    /// 101, and close it. False if no connection came within `timeout`.
    pub fn refuse(&self, status_line: &str, headers: &[&str], timeout: Duration) -> bool {
        let Some(mut stream) = self.next_stream(timeout) else {
            return false;
        };
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") {
            match std::io::Read::read(&mut stream, &mut byte) {
                Ok(1) => request.push(byte[0]),
                _ => break,
            }
        }
        let mut answer = format!("HTTP/1.1 {status_line}\r\n");
        for h in headers {
            answer.push_str(h);
            answer.push_str("\r\n");
        }
        answer.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(answer.as_bytes());
        let _ = stream.shutdown(Shutdown::Both);
        true
    }

    /// The next sidecar connection within `timeout`, upgraded.
    pub fn accept(&self, timeout: Duration) -> Option<FakeConn> {
        let stream = self.next_stream(timeout)?;
        stream.set_nodelay(true).ok();
        let mut authorization = None;
        // The callback's signature is tungstenite's (its error is a whole
        // HTTP response).
        #[allow(clippy::result_large_err)]
        let ws = tungstenite::accept_hdr(stream, |req: &Request, resp: Response| {
            authorization = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok::<Response, ErrorResponse>(resp)
        })
        .ok()?;
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        Some(FakeConn {
            ws,
            authorization,
            received: Vec::new(),
            next_ping: 0,
        })
    }

    /// The next connection, its `hello` read and answered with a normal
    /// `welcome` (30 s heartbeats).
    pub fn accept_welcomed(&self, timeout: Duration) -> (FakeConn, Value) {
        let mut conn = self
            .accept(timeout)
            .expect("the sidecar to connect to the fake hub");
        let hello = conn
            .recv_type("hello", timeout)
            .expect("the sidecar to say hello");
        conn.welcome(30, Some(json!(90)));
        (conn, hello)
    }
}

impl FakeConn {
    /// Send a JSON message.
    pub fn send(&mut self, v: &Value) -> Result<(), tungstenite::Error> {
        self.send_raw(Message::text(v.to_string()))
    }

    /// Send any text, JSON or not.
    pub fn send_text(&mut self, text: impl Into<String>) -> Result<(), tungstenite::Error> {
        self.send_raw(Message::text(text.into()))
    }

    /// Send any WebSocket message (binary, ping, close, a raw frame).
    pub fn send_raw(&mut self, m: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(m)
    }

    /// Write raw bytes to the TCP stream, bypassing the WebSocket framing
    /// (frames no WebSocket library would write).
    pub fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let s = self.ws.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Write raw bytes (a frame cut mid-way, say), then shut the
    /// connection down.
    pub fn write_bytes_and_drop(mut self, bytes: &[u8]) {
        let _ = self.write_bytes(bytes);
        let _ = self.ws.get_mut().shutdown(Shutdown::Both);
    }

    /// `welcome` with these heartbeat settings (`timeout_s: None` leaves
    /// the field out).
    pub fn welcome(&mut self, interval_s: impl Into<Value>, timeout_s: Option<Value>) {
        let mut w = json!({ "type": "welcome", "protocol_version": 1,
            "heartbeat_interval_s": interval_s.into(), "hub_version": "fake" });
        if let Some(t) = timeout_s {
            w["heartbeat_timeout_s"] = t;
        }
        self.send(&w).expect("send welcome");
    }

    /// `ack` of a report the sidecar sent.
    pub fn ack(&mut self, report: &Value) {
        let of = report["type"].clone();
        let ack = json!({ "type": "ack", "task_id": report["task_id"],
            "generation": report["generation"], "of": of });
        let _ = self.send(&ack);
    }

    /// The next message within `timeout` (pongs and pings are skipped).
    pub fn recv(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_frame(deadline) {
                None => return Got::Nothing,
                Some(Err(())) | Some(Ok(Message::Close(_))) => return Got::Ended,
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("the sidecar sent non-JSON {t:?}: {e}"));
                    self.received.push(v.clone());
                    return Got::Msg(v);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next message of this `type` within `timeout`, skipping others.
    pub fn recv_type(&mut self, ty: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Got::Msg(v) if v["type"] == ty => return Some(v),
                Got::Msg(_) => {}
                Got::Ended | Got::Nothing => return None,
            }
        }
    }

    /// The barrier: a ping with a unique payload; every message the
    /// sidecar sent before its pong (so: its answers to everything sent
    /// before the ping). None if the connection ended or no pong came
    /// within `timeout`.
    pub fn sync(&mut self, timeout: Duration) -> Option<Vec<Value>> {
        self.next_ping += 1;
        let payload = format!("sync-{}", self.next_ping).into_bytes();
        self.send_raw(Message::Ping(payload.clone().into())).ok()?;
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            match self.next_frame(deadline)? {
                Ok(Message::Pong(p)) if p.as_ref() == payload.as_slice() => return Some(got),
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("the sidecar sent non-JSON {t:?}: {e}"));
                    self.received.push(v.clone());
                    got.push(v);
                    // An (ignored) pong carries the TCP ack at once, so the
                    // sidecar's next small write is not held back waiting
                    // for a delayed ack (Nagle): ~40 ms per answer saved.
                    let _ = self.send_raw(Message::Pong(Default::default()));
                }
                Ok(Message::Close(_)) | Err(()) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Whether the sidecar ended the connection within `timeout`.
    pub fn ended_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_frame(deadline) {
                None => return false,
                Some(Ok(Message::Close(_)) | Err(())) => return true,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Close the connection (a Close frame, then the socket).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        let _ = self.ws.get_mut().shutdown(Shutdown::Both);
    }

    /// The next frame before `deadline`: Some(Ok) a frame, Some(Err(()))
    /// the connection ended, None the time ran out.
    fn next_frame(&mut self, deadline: Instant) -> Option<Result<Message, ()>> {
        loop {
            match self.ws.read() {
                Ok(m) => return Some(Ok(m)),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(_) => return Some(Err(())),
            }
        }
    }
}

/// A whole, valid task body as the hub sends it in `assign`.
pub fn task_json(id: &str, generation: u64) -> Value {
    json!({
        "id": id, "title": format!("task {id}"), "description": "", "priority": "normal",
        "needed_capabilities": [], "max_retries": 0, "timeout_s": 60, "status": "assigned",
        "generation": generation, "attempts": 0, "assigned_to": "fake",
        "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
        "not_before": null, "result": null, "last_error": null
    })
}

/// An `assign` of `id#generation` with a body that names the same attempt.
pub fn assign_json(id: &str, generation: u64) -> Value {
    json!({ "type": "assign", "task_id": id, "generation": generation,
        "task": task_json(id, generation) })
}
