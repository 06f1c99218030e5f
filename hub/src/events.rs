//! The event bus behind `GET /api/events`: every durable task transition
//! and every agent transition, numbered.
//!
//! Publishing appends to a replay ring bounded both by count and by bytes
//! (so a client reconnecting with `Last-Event-ID` misses nothing recent,
//! and large events cannot make it hold more than `events.replay_bytes`;
//! the newest event always stays) and to a bounded broadcast
//! channel. Each subscriber reads the channel at its own pace; one that
//! falls more than the channel's capacity behind gets `Lagged`, is dropped,
//! and resumes from the ring when it reconnects. Publishing never waits for
//! a subscriber.
//!
//! The bus carries observations only; no part of the hub's own logic may
//! depend on receiving an event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use agentcom_protocol::Timestamp;
use tokio::sync::broadcast;

/// One event: its number, kind (`task`, `agent`, `progress`) and payload,
/// kept as JSON text: serialised once, sent as is to every client (and a
/// `Value` tree would cost ten times the memory in the replay ring).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: u64,
    pub at: Timestamp,
    pub kind: &'static str,
    pub data: String,
}

struct Ring {
    next_id: u64,
    recent: VecDeque<Arc<Event>>,
    /// Bytes of event data in `recent`.
    bytes: usize,
}

pub struct EventBus {
    ring: Mutex<Ring>,
    replay: usize,
    replay_bytes: usize,
    tx: broadcast::Sender<Arc<Event>>,
}

/// What a new subscriber gets: events it missed, then the live feed.
pub struct Subscription {
    pub missed: Vec<Arc<Event>>,
    /// The requested id was older than the ring holds: some events were lost.
    pub gap: bool,
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl EventBus {
    /// A bus replaying at most `replay` events and `replay_bytes` of their
    /// data, buffering `client_buffer` events per client.
    pub fn new(replay: usize, replay_bytes: usize, client_buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(client_buffer.max(1));
        EventBus {
            ring: Mutex::new(Ring {
                next_id: 1,
                recent: VecDeque::new(),
                bytes: 0,
            }),
            replay: replay.max(1),
            replay_bytes,
            tx,
        }
    }

    pub fn publish(&self, kind: &'static str, data: impl serde::Serialize) -> u64 {
        self.publish_json(
            kind,
            serde_json::to_string(&data).expect("events serialise"),
        )
    }

    /// Publish an event whose data is JSON text already (one serialisation
    /// shared by several events).
    pub fn publish_json(&self, kind: &'static str, data: String) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let ev = Arc::new(Event {
            id: ring.next_id,
            at: Timestamp::now(),
            kind,
            data,
        });
        ring.next_id += 1;
        ring.bytes += ev.data.len();
        ring.recent.push_back(ev.clone());
        while ring.recent.len() > self.replay
            || (ring.bytes > self.replay_bytes && ring.recent.len() > 1)
        {
            if let Some(old) = ring.recent.pop_front() {
                ring.bytes -= old.data.len();
            }
        }
        // Sent under the lock so the ring and the feed agree on order.
        let _ = self.tx.send(ev.clone());
        ev.id
    }

    /// Subscribe, replaying what came after `last_id` (if given).
    pub fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.tx.subscribe();
        let (missed, gap) = match last_id {
            None => (vec![], false),
            Some(last) => {
                let oldest = ring.recent.front().map_or(ring.next_id, |e| e.id);
                let gap = last + 1 < oldest;
                (
                    ring.recent
                        .iter()
                        .filter(|e| e.id > last)
                        .cloned()
                        .collect(),
                    gap,
                )
            }
        };
        Subscription { missed, gap, live }
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).next_id
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Events and bytes of event data the replay ring holds.
    pub fn replay_held(&self) -> (usize, usize) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (ring.recent.len(), ring.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replay_after_last_event_id() {
        let bus = EventBus::new(3, 1 << 20, 16);
        for i in 0..5 {
            bus.publish("task", json!(i));
        }
        let sub = bus.subscribe(Some(3));
        assert_eq!(sub.missed.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5]);
        assert!(!sub.gap);
        let sub = bus.subscribe(Some(1));
        assert!(sub.gap, "events 2 fell out of the ring");
        assert_eq!(sub.missed.len(), 3);
    }

    #[test]
    fn the_ring_is_bounded_in_bytes_too() {
        let bus = EventBus::new(10_000, 1000, 16);
        for i in 0..10 {
            bus.publish("progress", json!("x".repeat(300 + i)));
        }
        let (held, bytes) = bus.replay_held();
        assert!(bytes <= 1000, "{bytes}");
        assert_eq!(held, 3, "the newest that fit");
        let sub = bus.subscribe(Some(0));
        assert!(sub.gap);
        assert_eq!(
            sub.missed.iter().map(|e| e.id).collect::<Vec<_>>(),
            [8, 9, 10]
        );
        // One event larger than the whole budget still replays, alone.
        bus.publish("progress", json!("y".repeat(5000)));
        assert_eq!(bus.replay_held().0, 1);
        bus.publish("task", json!(1));
        assert_eq!(bus.replay_held(), (1, 1), "the big one went first");
    }

    #[test]
    fn live_feed_and_lagging_subscriber() {
        let bus = EventBus::new(100, 1 << 20, 2);
        let mut sub = bus.subscribe(None).live;
        bus.publish("task", json!(1));
        assert_eq!(sub.try_recv().unwrap().data, "1");
        for i in 0..5 {
            bus.publish("task", json!(i));
        }
        assert!(matches!(
            sub.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
