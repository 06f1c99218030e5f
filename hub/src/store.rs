//! The durable store: an embedded sled database under `data_dir`.
//!
//! Trees:
//! - `tasks`: every task, its history and the indexes over them (their
//!   keys and the way they are written and read are in [`tasks`]), and
//!   every change (in [`changes`]), so that a task and its change are
//!   written in one atomic batch.
//! - `agents`: `<id>` → the agent record (capabilities, SHA-256 of its token).
//! - `meta`: hub-wide values (the admin token's hash, the store format, a
//!   red main's commit, the paused lanes).
//! - `sessions`: SHA-256 of a dashboard session id → its record (the hash
//!   of the token it was opened with, its expiry); never the id itself.
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
//! written only by the queue actor (tasks), the registry actor (agents),
//! the dashboard's sessions (`crate::sessions`, on blocking threads) and
//! start-up (meta), and read by anyone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use agentcom_protocol::{Priority, Timestamp};
use serde::{Deserialize, Serialize};

use crate::domain::fsm::Breaker;

mod changes;
mod tasks;

pub(crate) use tasks::{Fields, Purge, Purged};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store file: {0}")]
    Io(#[from] std::io::Error),
    #[error("store record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

/// An agent as stored. Only the hash of its token is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub capabilities: Vec<String>,
    pub token_sha256: String,
    pub created_at: Timestamp,
    /// Its failure record (kept across restarts).
    #[serde(default)]
    pub breaker: Breaker,
    /// Paused by an operator (kept across restarts).
    #[serde(default)]
    pub paused: bool,
    /// Its verification task, queued when it was enrolled
    /// (`POST /api/agents/enroll`); none for an agent added by an admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_task: Option<String>,
}

/// A dashboard session as stored, under the SHA-256 of its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// SHA-256 of the token it was opened with: its role is that token's,
    /// and it ends when that token is no longer valid.
    pub token_sha256: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tasks: sled::Tree,
    agents: sled::Tree,
    meta: sled::Tree,
    sessions: sled::Tree,
    durability: Arc<Durability>,
    /// Where large task values live, one file each (see [`tasks`]).
    files: Arc<PathBuf>,
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
            sessions: db.open_tree("sessions")?,
            db,
            durability: Arc::new(durability),
            files: Arc::new(dir.join("values")),
        };
        // Make the data file's directory entry durable too.
        store.durability.dir.sync_all()?;
        sync_dir(dir)?;
        store.migrate()?;
        store.remove_orphan_files()?;
        Ok(store)
    }

    /// Make every file of the store's file system durable at once (the
    /// value files written for a group, before the group's records).
    pub(crate) fn sync_files(&self) -> Result<(), StoreError> {
        nix::unistd::syncfs(&self.durability.dir).map_err(std::io::Error::from)?;
        Ok(())
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

    /// Insert or replace several agents, durably (one sync).
    pub(crate) fn put_agents(&self, agents: &[AgentRecord]) -> Result<(), StoreError> {
        for agent in agents {
            self.agents.insert(
                agent.id.as_bytes(),
                serde_json::to_vec(agent).expect("agent serialises"),
            )?;
        }
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

    /// The commit at which `repo`'s main was last found red, if it has not
    /// passed a check since.
    pub(crate) fn repo_red(&self, repo: &str) -> Result<Option<String>, StoreError> {
        self.meta_get(&format!("repo_red/{repo}"))
    }

    /// Remember `repo`'s main red at `sha` (`None`: green again). Not
    /// synced: the group commit that calls it syncs.
    pub(crate) fn put_repo_red(&self, repo: &str, sha: Option<&str>) -> Result<(), StoreError> {
        let key = format!("repo_red/{repo}");
        match sha {
            Some(sha) => self.meta.insert(key.as_bytes(), sha.as_bytes())?,
            None => self.meta.remove(key.as_bytes())?,
        };
        Ok(())
    }

    /// The priorities an operator paused.
    pub(crate) fn paused_lanes(&self) -> Result<Vec<Priority>, StoreError> {
        Ok(self
            .meta_get("paused_lanes")?
            .map(|v| v.split(',').filter_map(Priority::parse).collect())
            .unwrap_or_default())
    }

    /// Remember the paused priorities. Not synced: the group commit that
    /// calls it syncs.
    pub(crate) fn put_paused_lanes(&self, lanes: &[Priority]) -> Result<(), StoreError> {
        let value: Vec<&str> = lanes.iter().map(|p| p.as_str()).collect();
        self.meta
            .insert(b"paused_lanes", value.join(",").as_bytes())?;
        Ok(())
    }

    /// The current day's usage per agent, as [`crate::domain::usage::Usage::today_json`]
    /// wrote it (none yet: empty).
    pub(crate) fn usage(&self) -> Result<Option<String>, StoreError> {
        self.meta_get("usage_today")
    }

    /// Remember the day's usage. Not synced: the group commit that calls it
    /// syncs.
    pub(crate) fn put_usage(&self, json: &str) -> Result<(), StoreError> {
        self.meta.insert(b"usage_today", json.as_bytes())?;
        Ok(())
    }

    pub fn meta_put(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(key.as_bytes(), value.as_bytes())?;
        self.sync()
    }

    // ----- sessions ----------------------------------------------------------------

    /// Every stored session, by the SHA-256 of its id.
    pub(crate) fn load_sessions(&self) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.sessions.iter() {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k).into_owned(), decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Store a session under the SHA-256 of its id, durably.
    pub(crate) fn put_session(&self, id_sha256: &str, s: &SessionRecord) -> Result<(), StoreError> {
        self.sessions.insert(
            id_sha256.as_bytes(),
            serde_json::to_vec(s).expect("session serialises"),
        )?;
        self.sync()
    }

    /// Delete sessions, durably.
    pub(crate) fn delete_sessions(&self, ids_sha256: &[String]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for id in ids_sha256 {
            batch.remove(id.as_bytes());
        }
        self.sessions.apply_batch(batch)?;
        self.sync()
    }
}

/// Decode a stored JSON value, naming its key if it is corrupt.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        message: e.to_string(),
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Open a store in tests, waiting out the moment after a drop when sled's
/// background threads still hold the previous handle's file lock.
#[cfg(test)]
pub(crate) fn open_for_test(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, 16) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "store still locked; retrying");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentcom-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_red_main_is_remembered_until_green() {
        let dir = tmp("repo-red");
        let s = open_for_test(&dir);
        assert_eq!(s.repo_red("app").unwrap(), None);
        s.put_repo_red("app", Some("bad")).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open_for_test(&dir);
        assert_eq!(s.repo_red("app").unwrap().as_deref(), Some("bad"));
        assert_eq!(s.repo_red("other").unwrap(), None);
        s.put_repo_red("app", None).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open_for_test(&dir);
        assert_eq!(s.repo_red("app").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn agents_and_meta_round_trip() {
        let dir = tmp("agents");
        let s = open_for_test(&dir);
        let a = AgentRecord {
            id: "a1".into(),
            capabilities: vec!["x".into()],
            token_sha256: "h".into(),
            created_at: Timestamp(1),
            breaker: Breaker {
                failures: vec!["t1".into(), "t2".into()],
                degraded_until: Some(Timestamp(5)),
                degraded_reason: Some("environment: disk full".into()),
                degraded_by: Some(crate::domain::fsm::DegradedBy::Environment),
            },
            paused: true,
            verification_task: Some("T1".into()),
        };
        s.put_agent(&a).unwrap();
        s.meta_put("k", "v").unwrap();
        drop(s);
        let s = open_for_test(&dir);
        assert_eq!(s.load_agents().unwrap(), vec![a]);
        assert_eq!(s.meta_get("k").unwrap().as_deref(), Some("v"));
        s.delete_agent("a1").unwrap();
        assert!(s.load_agents().unwrap().is_empty());
        let session = SessionRecord {
            token_sha256: "t".into(),
            created_at: Timestamp(1),
            expires_at: Timestamp(2),
        };
        s.put_session("h1", &session).unwrap();
        s.put_session("h2", &session).unwrap();
        s.delete_sessions(&["h1".into()]).unwrap();
        assert_eq!(s.load_sessions().unwrap(), vec![("h2".into(), session)]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn paused_lanes_round_trip_and_an_old_agent_record_is_not_paused() {
        let dir = tmp("lanes");
        let s = open_for_test(&dir);
        assert!(s.paused_lanes().unwrap().is_empty());
        s.put_paused_lanes(&[Priority::Urgent, Priority::Low])
            .unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open_for_test(&dir);
        assert_eq!(s.paused_lanes().unwrap(), [Priority::Urgent, Priority::Low]);
        s.put_paused_lanes(&[]).unwrap();
        assert!(s.paused_lanes().unwrap().is_empty());
        // A record written before `paused` existed.
        let old: AgentRecord = serde_json::from_str(
            r#"{"id":"a","capabilities":[],"token_sha256":"h","created_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(!old.paused);
        std::fs::remove_dir_all(dir).ok();
    }
}
