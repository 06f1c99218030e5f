//! A hand-driven WebSocket client speaking the sidecar protocol, for
//! tests that need to misbehave (never accept, send garbage, huge frames,
//! stale generations) where the real sidecar would not.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub struct RawSidecar {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl RawSidecar {
    /// Open `/ws` with a token; Err(status) if the upgrade is refused.
    pub fn connect(url: &str, token: &str) -> Result<RawSidecar, u16> {
        let mut req = url.into_client_request().expect("request");
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        match tungstenite::connect(req) {
            Ok((ws, _)) => {
                if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                }
                Ok(RawSidecar { ws })
            }
            Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("connect: {e}"),
        }
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    pub fn send_raw(&mut self, m: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(m)
    }

    /// The next frame before `deadline`: Some(Ok) a frame, Some(Err(())) the
    /// connection ended, None the time ran out.
    fn next_frame(&mut self, deadline: Instant) -> Option<Result<Message, ()>> {
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(m) => return Some(Ok(m)),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(Err(())),
            }
        }
        None
    }

    /// The next JSON text frame within `timeout` (pings are answered).
    pub fn recv(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_frame(deadline)? {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("hub sends JSON"))
                }
                Ok(Message::Close(_)) | Err(()) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next frame of this `type`, skipping others.
    pub fn recv_type(&mut self, ty: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(v) = self.recv(deadline.saturating_duration_since(Instant::now())) {
                if v["type"] == ty {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Whether the hub closed the connection within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_frame(deadline) {
                None => return false,
                Some(Ok(Message::Close(_)) | Err(())) => return true,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Say hello as an idle sidecar and wait for `welcome`.
    pub fn hello(&mut self, agent: &str) -> Value {
        self.try_hello(agent, Duration::from_secs(5))
            .expect("welcome")
    }

    /// Say hello as an idle sidecar; `welcome` if it comes within `timeout`.
    pub fn try_hello(&mut self, agent: &str, timeout: Duration) -> Option<Value> {
        self.send(json!({
            "type": "hello", "protocol_version": 1, "agent_id": agent, "capabilities": [],
            "state": "idle", "current_task": null, "sidecar_version": "raw-test"
        }));
        self.recv_type("welcome", timeout)
    }
}

/// A fake agent on a thread: it accepts every assignment and completes it
/// at once with `result`, until `stop` is set; joins with how many tasks
/// it completed.
pub fn quick_agent(
    url: &str,
    token: &str,
    id: &str,
    result: Value,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let mut ws = RawSidecar::connect(url, token).expect("the agent connects");
    ws.hello(id);
    std::thread::spawn(move || {
        let mut done = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Some(m) = ws.recv(Duration::from_millis(200)) else {
                continue;
            };
            if m["type"] == "assign" {
                let (tid, g) = (m["task_id"].clone(), m["generation"].clone());
                ws.send(json!({ "type": "accept", "task_id": tid, "generation": g }));
                ws.send(json!({ "type": "complete", "task_id": tid, "generation": g,
                    "result": result }));
                done += 1;
            }
        }
        done
    })
}
