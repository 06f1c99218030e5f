//! Raw HTTP/1.1 over a `TcpStream`, for requests an ordinary client would
//! not send: heads and bodies that stop half-way, exact headers (`Origin`,
//! `Cookie`, `Content-Type`), and whether anything comes back at all.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// A reply as it came over the wire.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The value of the cookie `name` that the reply sets, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, v)| {
                let (pair, _) = v.split_once(';').unwrap_or((v, ""));
                let (k, val) = pair.split_once('=')?;
                (k.trim() == name).then(|| val.trim().to_string())
            })
    }
}

/// Parse a reply once its head and its whole body (by `Content-Length`,
/// or up to the close when `closed`) are in `buf`.
fn parse(buf: &[u8], closed: bool) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = &buf[end + 4..];
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body = match length {
        Some(n) if body.len() >= n => &body[..n],
        Some(_) => return None,
        None if closed => body,
        None => return None,
    };
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

/// Send one whole request (`Connection: close`) and read the whole reply.
/// `headers` come after `Host` as given; a body gets its `Content-Length`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        text.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    text.push_str("\r\n");
    text.push_str(body.unwrap_or(""));
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(text.as_bytes()).expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf, true).unwrap_or_else(|| {
        panic!(
            "{method} {path}: no reply: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// What became of a held request.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The hub answered.
    Reply(Reply),
    /// The hub closed the connection without a reply.
    Closed,
}

/// A connection that sent part of a request and holds it open.
pub struct Held {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Held {
    /// Connect and send `bytes` (say, a head and half a body).
    pub fn open(port: u16, bytes: &[u8]) -> std::io::Result<Held> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.write_all(bytes)?;
        stream.set_nonblocking(true)?;
        Ok(Held {
            stream,
            buf: Vec::new(),
        })
    }

    /// Send more of the request (say, one more chunk of a body).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Read what has arrived, without waiting; whether the hub has closed
    /// the connection (what it answered before is in [`Held::reply`]).
    pub fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// The reply received so far, if a whole one has arrived.
    pub fn reply(&self) -> Option<Reply> {
        parse(&self.buf, true)
    }

    /// Read what has arrived, without waiting: `Some` once the hub has
    /// answered or closed the connection, `None` while it says nothing.
    pub fn poll(&mut self) -> Option<Outcome> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Some(match parse(&self.buf, true) {
                        Some(r) => Outcome::Reply(r),
                        None => Outcome::Closed,
                    })
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return parse(&self.buf, false).map(Outcome::Reply)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    return Some(match parse(&self.buf, true) {
                        Some(r) => Outcome::Reply(r),
                        None => Outcome::Closed,
                    })
                }
            }
        }
    }
}
