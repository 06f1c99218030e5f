//! A real HTTP receiver for the hub's alert webhooks: a `TcpListener` on
//! a thread that records each request's JSON body, answering `500` to the
//! first `refuse` requests and `204` after, one request per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

#[derive(Default)]
struct Shared {
    /// Bodies of the requests answered 2xx, in arrival order.
    accepted: Mutex<Vec<Value>>,
    /// Requests seen (refused ones included).
    requests: AtomicUsize,
    /// Requests still to refuse with a 500.
    refuse: AtomicUsize,
    stop: AtomicBool,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on a free port that accepts everything.
    pub fn start() -> Receiver {
        Self::start_on(0, 0)
    }

    /// A receiver on `port` (0: any free one) refusing the first `refuse`
    /// requests with a 500.
    pub fn start_on(port: u16, refuse: usize) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the receiver binds");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            refuse: AtomicUsize::new(refuse),
            ..Shared::default()
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &s),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Polling for the stop flag, not synchronising a test.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => {}
                }
            }
        });
        Receiver {
            port,
            shared,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Bodies of the requests answered 2xx, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// The accepted alerts of this kind (and subject, if given).
    pub fn alerts(&self, kind: &str, subject: Option<&str>) -> Vec<Value> {
        self.bodies()
            .into_iter()
            .filter(|b| b["alert"] == kind && subject.is_none_or(|s| b["subject"] == s))
            .collect()
    }

    /// Requests seen, refused ones included.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, s: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut length = 0usize;
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let l = line.trim_end();
        if first {
            first = false;
            if !l.starts_with("POST ") {
                return;
            }
            continue;
        }
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    s.requests.fetch_add(1, Ordering::SeqCst);
    let refuse = s
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if refuse {
        "500 Internal Server Error"
    } else {
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        s.accepted.lock().unwrap().push(v);
        "204 No Content"
    };
    let mut w = stream;
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = w.flush();
}
