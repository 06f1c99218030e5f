//! A Server-Sent Events client for `/api/events`: connect (optionally
//! resuming after an id), then read events one at a time.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use crate::hub::Hub;

#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

pub struct SseClient {
    reader: BufReader<Box<dyn Read + Send>>,
}

impl SseClient {
    pub fn connect(hub: &Hub, last_event_id: Option<u64>) -> SseClient {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        let mut req = http
            .get(format!("{}/api/events", hub.url))
            .header("Authorization", format!("Bearer {}", hub.token));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.call().expect("GET /api/events");
        assert_eq!(resp.status(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let reader: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
        SseClient {
            reader: BufReader::new(reader),
        }
    }
}

/// Events in order (comments and `retry:` skipped); ends with the stream.
impl Iterator for SseClient {
    type Item = SseEvent;

    fn next(&mut self) -> Option<SseEvent> {
        let mut ev = SseEvent {
            id: None,
            event: "message".into(),
            data: String::new(),
        };
        let mut seen = false;
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if seen {
                    return Some(ev);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line
                .split_once(':')
                .map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)))
                .unwrap_or((line, ""));
            match field {
                "id" => {
                    ev.id = value.parse().ok();
                    seen = true;
                }
                "event" => {
                    ev.event = value.to_string();
                    seen = true;
                }
                "data" => {
                    if !ev.data.is_empty() {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                    seen = true;
                }
                _ => {}
            }
        }
    }
}
