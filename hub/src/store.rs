//! The durable store: an embedded sled database under `data_dir`.
//!
//! Trees:
//! - `tasks`: `t/<id>` → the task record (task + history length), and
//!   `h/<id>/<seq: u32 BE>` → one history entry. A task's record and its new
//!   history entries are written in one atomic batch.
//! - `agents`: `<id>` → the agent record (capabilities, SHA-256 of its token).
//! - `meta`: hub-wide values (the admin token's hash).
//!
//! [`Store::sync`] is the durability point: sled's flush, then an
//! `fdatasync` of the data file through a handle opened once, because sled
//! 0.34's flush does not fsync on Linux; when sled wrote or removed blob
//! files (large values) since the last sync, a `syncfs` through a handle of
//! the store's directory makes them durable too, without opening any file
//! (see docs/decisions/0002 and 0003). Nothing is acknowledged to anyone
//! before it returns.
//!
//! The store knows bytes and records, never the rules of the queue; it is
//! written only by the queue actor (tasks), the registry actor (agents)
//! and start-up (meta), and read by anyone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use agentcom_protocol::{HistoryEntry, Task, Timestamp};
use serde::{Deserialize, Serialize};

use crate::domain::queue::Change;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store file: {0}")]
    Io(#[from] std::io::Error),
    #[error("store record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

/// A task as stored: the task and how many history entries it has.
#[derive(Serialize, Deserialize)]
struct TaskRecord {
    task: Task,
    history_len: u32,
}

/// An agent as stored. Only the hash of its token is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub capabilities: Vec<String>,
    pub token_sha256: String,
    pub created_at: Timestamp,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tasks: sled::Tree,
    agents: sled::Tree,
    meta: sled::Tree,
    durability: Arc<Durability>,
}

/// The handles a sync uses, opened once: syncing never opens a file (so it
/// cannot race sled removing one, nor fail for want of descriptors).
struct Durability {
    /// sled's data file.
    data: File,
    /// sled's directory (for `syncfs`).
    dir: File,
    blobs: PathBuf,
    /// The blob directory's modification time when it was last made durable.
    blobs_synced: Mutex<Option<SystemTime>>,
}

/// sled writes values larger than a quarter segment to separate blob
/// files; a larger segment keeps task records inline in the data file.
const SEGMENT_SIZE: usize = 2 * 1024 * 1024;

impl Store {
    /// Open (creating) the store in `dir`, with a page cache of `cache_mb`.
    pub(crate) fn open(dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let sled_dir = dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(cache_mb.max(1) * 1024 * 1024)
            .segment_size(SEGMENT_SIZE)
            // We flush ourselves at every group commit; no background timer.
            .flush_every_ms(None)
            .open()?;
        let durability = Durability {
            data: File::open(sled_dir.join("db"))?,
            dir: File::open(&sled_dir)?,
            blobs: sled_dir.join("blobs"),
            blobs_synced: Mutex::new(None),
        };
        let store = Store {
            tasks: db.open_tree("tasks")?,
            agents: db.open_tree("agents")?,
            meta: db.open_tree("meta")?,
            db,
            durability: Arc::new(durability),
        };
        // Make the data file's directory entry durable too.
        store.durability.dir.sync_all()?;
        sync_dir(dir)?;
        Ok(store)
    }

    /// Make everything written so far durable: flush, then fdatasync (and
    /// syncfs when blob files came or went).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        let d = &self.durability;
        d.data.sync_data()?;
        // A stat, not an open: the directory's mtime moves whenever sled
        // creates or removes a blob file.
        let blobs_now = std::fs::metadata(&d.blobs).and_then(|m| m.modified()).ok();
        let mut synced = d.blobs_synced.lock().unwrap_or_else(|e| e.into_inner());
        if blobs_now != *synced {
            nix::unistd::syncfs(&d.dir).map_err(std::io::Error::from)?;
            *synced = blobs_now;
        }
        Ok(())
    }

    /// The store answers (for `/healthz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.meta.get(b"ping")?;
        Ok(())
    }

    // ----- tasks ----------------------------------------------------------------

    /// Stage a group of task changes as one atomic batch (not yet durable:
    /// call [`Store::sync`]).
    pub fn write_changes(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for c in changes {
            let mut task = c.task.clone();
            task.history = None;
            let record = TaskRecord {
                task,
                history_len: c.history_len,
            };
            batch.insert(
                task_key(&c.task.id),
                serde_json::to_vec(&record).expect("task serialises"),
            );
            for (seq, entry) in &c.new_history {
                batch.insert(
                    history_key(&c.task.id, *seq),
                    serde_json::to_vec(entry).expect("history serialises"),
                );
            }
        }
        self.tasks.apply_batch(batch)?;
        Ok(())
    }

    /// Every stored task with its history length (for rebuilding the queue).
    pub fn load_tasks(&self) -> Result<Vec<(Task, u32)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tasks.scan_prefix(b"t/") {
            let (k, v) = kv?;
            let rec: TaskRecord = decode(&k, &v)?;
            out.push((rec.task, rec.history_len));
        }
        Ok(out)
    }

    /// A task's first `len` history entries, oldest first. Pass the
    /// durable history length: entries past it may be written but not yet
    /// synced, and must not be shown.
    pub fn history(&self, id: &str, len: u32) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tasks.range(history_key(id, 0)..history_key(id, len)) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    // ----- agents and meta ---------------------------------------------------------

    pub fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.agents.iter() {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Insert or replace an agent, durably.
    pub fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.agents.insert(
            agent.id.as_bytes(),
            serde_json::to_vec(agent).expect("agent serialises"),
        )?;
        self.sync()
    }

    /// Remove an agent, durably.
    pub fn delete_agent(&self, id: &str) -> Result<(), StoreError> {
        self.agents.remove(id.as_bytes())?;
        self.sync()
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn meta_put(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(key.as_bytes(), value.as_bytes())?;
        self.sync()
    }
}

/// Decode a stored JSON value, naming its key if it is corrupt.
fn decode<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        message: e.to_string(),
    })
}

fn task_key(id: &str) -> Vec<u8> {
    let mut k = b"t/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn history_key(id: &str, seq: u32) -> Vec<u8> {
    let mut k = b"h/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue::{QueueCore, QueueSettings};
    use agentcom_protocol::NewTask;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentcom-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn changes_survive_reopen_with_history_in_order() {
        let dir = tmp("reopen");
        let mut q = QueueCore::new(QueueSettings::default());
        let now = Timestamp(1_800_000_000_000);
        let id = match q.create(
            NewTask {
                title: "a".into(),
                ..Default::default()
            },
            now,
        ) {
            crate::domain::queue::Created::New(t) => t.id,
            _ => unreachable!(),
        };
        q.cancel(&id, "test", now.plus_millis(5)).unwrap();
        {
            let s = Store::open(&dir, 16).unwrap();
            s.write_changes(&q.take_changes()).unwrap();
            s.sync().unwrap();
        }
        let s = Store::open(&dir, 16).unwrap();
        let tasks = s.load_tasks().unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].0.id, id);
        assert_eq!(tasks[0].1, 2);
        let hist = s.history(&id, 2).unwrap();
        assert_eq!(
            s.history(&id, 1).unwrap().len(),
            1,
            "only up to the length asked"
        );
        let events: Vec<&str> = hist.iter().map(|h| h.event.as_str()).collect();
        assert_eq!(events, ["created", "cancelled"]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn agents_and_meta_round_trip() {
        let dir = tmp("agents");
        let s = Store::open(&dir, 16).unwrap();
        let a = AgentRecord {
            id: "a1".into(),
            capabilities: vec!["x".into()],
            token_sha256: "h".into(),
            created_at: Timestamp(1),
        };
        s.put_agent(&a).unwrap();
        s.meta_put("k", "v").unwrap();
        drop(s);
        let s = Store::open(&dir, 16).unwrap();
        assert_eq!(s.load_agents().unwrap(), vec![a]);
        assert_eq!(s.meta_get("k").unwrap().as_deref(), Some("v"));
        s.delete_agent("a1").unwrap();
        assert!(s.load_agents().unwrap().is_empty());
        std::fs::remove_dir_all(dir).ok();
    }
}
