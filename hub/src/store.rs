//! The durable store: an embedded sled database under `data_dir` (the
//! default), or a PostgreSQL database (`store.backend = "postgres"`); the
//! trees below are ordered maps of bytes either way ([`kv`]), so every
//! layout in this module and its children is written once.
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
//! (see docs/decisions/0002 and 0003). With PostgreSQL a sync commits
//! every write made since the last one in one transaction
//! ([`postgres`], decision 0014). Nothing is acknowledged to anyone before
//! it returns.
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
mod kv;
mod postgres;
mod tasks;

use kv::{Batch, Tree};

pub(crate) use postgres::Leader;
pub(crate) use tasks::{Fields, Purge, Purged};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store file: {0}")]
    Io(#[from] std::io::Error),
    #[error("store record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    #[error("store (PostgreSQL): {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("store (PostgreSQL): {0}")]
    Unavailable(String),
    #[error("store (PostgreSQL): the schema's migrations failed: {0}")]
    Migration(String),
    #[error("store (PostgreSQL): this hub no longer leads (its term {0} was taken over); its write was refused")]
    Deposed(i64),
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
    engine: Engine,
    tasks: Tree,
    agents: Tree,
    meta: Tree,
    sessions: Tree,
    /// Where large task values live, one file each (see [`tasks`]); sled
    /// only (PostgreSQL keeps them in their records).
    files: Option<Arc<PathBuf>>,
}

/// What a sync makes durable.
#[derive(Clone)]
enum Engine {
    Sled {
        db: sled::Db,
        durability: Arc<Durability>,
    },
    Postgres(Arc<postgres::Postgres>),
}

/// The trees' numbers in PostgreSQL's table.
const TASKS: i16 = 1;
const AGENTS: i16 = 2;
const META: i16 = 3;
const SESSIONS: i16 = 4;

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
        // Make the data file's directory entry durable too.
        durability.dir.sync_all()?;
        sync_dir(dir)?;
        let store = Store {
            tasks: Tree::Sled(db.open_tree("tasks")?),
            agents: Tree::Sled(db.open_tree("agents")?),
            meta: Tree::Sled(db.open_tree("meta")?),
            sessions: Tree::Sled(db.open_tree("sessions")?),
            engine: Engine::Sled {
                db,
                durability: Arc::new(durability),
            },
            files: Some(Arc::new(dir.join("values"))),
        };
        store.migrate()?;
        store.remove_orphan_files()?;
        Ok(store)
    }

    /// Open the store in the PostgreSQL database at `url`, applying the
    /// schema's migrations.
    pub(crate) fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let db = postgres::Postgres::open(url)?;
        let tree = |tree| Tree::Postgres {
            db: db.clone(),
            tree,
        };
        let store = Store {
            tasks: tree(TASKS),
            agents: tree(AGENTS),
            meta: tree(META),
            sessions: tree(SESSIONS),
            engine: Engine::Postgres(db),
            files: None,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Take the lead if no hub holds it: the new term. A sled store has
    /// one hub: it always leads, in term 0.
    pub(crate) fn try_lead(
        &self,
        holder: &str,
        url: Option<&str>,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        match &self.engine {
            Engine::Sled { .. } => Ok(Some(0)),
            Engine::Postgres(pg) => {
                let term = pg.try_lead(holder, url, lease_ms)?;
                if let Some(term) = term {
                    pg.fence(holder, term);
                }
                Ok(term)
            }
        }
    }

    /// Extend the lead of `term`: false if another hub took it.
    pub(crate) fn renew_lead(
        &self,
        holder: &str,
        term: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        match &self.engine {
            Engine::Sled { .. } => Ok(true),
            Engine::Postgres(pg) => pg.renew(holder, term, lease_ms),
        }
    }

    /// Give up the lead (a clean stop), so a standby takes it at once.
    pub(crate) fn step_down(&self, holder: &str, term: i64) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled { .. } => Ok(()),
            Engine::Postgres(pg) => pg.step_down(holder, term),
        }
    }

    /// Who leads (PostgreSQL); none for sled, whose one hub leads.
    pub(crate) fn leader(&self) -> Result<Option<Leader>, StoreError> {
        match &self.engine {
            Engine::Sled { .. } => Ok(None),
            Engine::Postgres(pg) => pg.leader().map(Some),
        }
    }

    /// Whether several hubs may share this store (PostgreSQL).
    pub(crate) fn shared(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// The engine's name, for logs.
    pub(crate) fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Sled { .. } => "sled",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// Make every file of the store's file system durable at once (the
    /// value files written for a group, before the group's records).
    pub(crate) fn sync_files(&self) -> Result<(), StoreError> {
        if let Engine::Sled { durability, .. } = &self.engine {
            nix::unistd::syncfs(&durability.dir).map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    /// Make everything written so far durable: flush, then fdatasync (and
    /// syncfs when blob files came or went).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let (db, d) = match &self.engine {
            Engine::Sled { db, durability } => (db, durability),
            Engine::Postgres(pg) => return pg.sync(),
        };
        db.flush()?;
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
        match &self.engine {
            Engine::Sled { .. } => {
                self.meta.get(b"ping")?;
                Ok(())
            }
            Engine::Postgres(pg) => pg.ping(),
        }
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
        }
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
        let mut batch = Batch::default();
        for id in ids_sha256 {
            batch.remove(id.as_bytes());
        }
        self.sessions.apply_batch(batch)?;
        self.sync()
    }
}

/// What [`Store::copy_into`] copied: entries per tree.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Copied {
    pub tasks: u64,
    pub agents: u64,
    pub meta: u64,
    pub sessions: u64,
}

impl Store {
    /// Copy everything this store holds into `to`, which must hold no
    /// tasks and no agents: every tree entry by entry, task records with
    /// their value files put back in them, `to` synced every 1,000 entries
    /// and at the end. Checks that `to` then holds as many entries of each
    /// tree as this store.
    pub(crate) fn copy_into(&self, to: &Store) -> Result<Copied, StoreError> {
        if to.tasks.iter().next().is_some() || to.agents.iter().next().is_some() {
            return Err(StoreError::Unavailable(
                "the destination already holds tasks or agents; copy only into a new, empty store"
                    .into(),
            ));
        }
        let mut copied = Copied::default();
        for (name, from, into, count) in [
            ("agents", &self.agents, &to.agents, &mut copied.agents),
            ("meta", &self.meta, &to.meta, &mut copied.meta),
            (
                "sessions",
                &self.sessions,
                &to.sessions,
                &mut copied.sessions,
            ),
            ("tasks", &self.tasks, &to.tasks, &mut copied.tasks),
        ] {
            let mut batch = Batch::default();
            let mut in_batch = 0;
            for kv in from.iter() {
                let (k, v) = kv?;
                batch.insert(&k, self.portable(&k, &v)?);
                in_batch += 1;
                *count += 1;
                if in_batch == 1000 {
                    into.apply_batch(std::mem::take(&mut batch))?;
                    to.sync()?;
                    in_batch = 0;
                }
            }
            into.apply_batch(batch)?;
            to.sync()?;
            let there = into.iter().count() as u64;
            if there != *count {
                return Err(StoreError::Corrupt {
                    key: name.into(),
                    message: format!("copied {count} entries but the destination holds {there}"),
                });
            }
        }
        Ok(copied)
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

/// Run a store test on each engine: sled in a fresh directory, and
/// PostgreSQL in a fresh database when the test PostgreSQL runs
/// (`AGENTCOM_TEST_PG_URL`, set by scripts/test.sh). `open` opens the same
/// store again each time it is called (after a drop: a restart).
#[cfg(test)]
pub(crate) fn each_engine(name: &str, test: impl Fn(&dyn Fn() -> Store)) {
    let dir = std::env::temp_dir().join(format!("agentcom-engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    test(&|| open_for_test(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    match postgres::testing::fresh_database(name) {
        Some(url) => test(&|| Store::open_postgres(&url).expect("the test database")),
        None => eprintln!("{name}: not run on PostgreSQL (AGENTCOM_TEST_PG_URL is not set)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_red_main_is_remembered_until_green() {
        crate::store::each_engine("repo-red", |open| {
            let s = open();
            assert_eq!(s.repo_red("app").unwrap(), None);
            s.put_repo_red("app", Some("bad")).unwrap();
            s.sync().unwrap();
            drop(s);
            let s = open();
            assert_eq!(s.repo_red("app").unwrap().as_deref(), Some("bad"));
            assert_eq!(s.repo_red("other").unwrap(), None);
            s.put_repo_red("app", None).unwrap();
            s.sync().unwrap();
            drop(s);
            let s = open();
            assert_eq!(s.repo_red("app").unwrap(), None);
        });
    }

    #[test]
    fn agents_and_meta_round_trip() {
        crate::store::each_engine("agents", |open| {
            let s = open();
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
            let s = open();
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
        });
    }

    #[test]
    fn paused_lanes_round_trip_and_an_old_agent_record_is_not_paused() {
        crate::store::each_engine("lanes", |open| {
            let s = open();
            assert!(s.paused_lanes().unwrap().is_empty());
            s.put_paused_lanes(&[Priority::Urgent, Priority::Low])
                .unwrap();
            s.sync().unwrap();
            drop(s);
            let s = open();
            assert_eq!(s.paused_lanes().unwrap(), [Priority::Urgent, Priority::Low]);
            s.put_paused_lanes(&[]).unwrap();
            assert!(s.paused_lanes().unwrap().is_empty());
            // A record written before `paused` existed.
            let old: AgentRecord = serde_json::from_str(
                r#"{"id":"a","capabilities":[],"token_sha256":"h","created_at":"2026-01-01T00:00:00Z"}"#,
            )
            .unwrap();
            assert!(!old.paused);
        });
    }
}
