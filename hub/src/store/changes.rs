//! Changes in the store: their keys in the `tasks` tree (so a change and
//! its task are written in one atomic batch), and how they are read back.
//!
//! Keys (change ids are ULIDs):
//! - `C/<id>` → the change (without history) and its history length.
//! - `CH/<id>/<seq: u32 BE>` → one history entry.
//! - `CS/<status>/<id>` → (empty): changes by status.
//! - `CT/<task id>/<id>` → (empty): the changes of a task (retention
//!   deletes them with it).
//!
//! This module knows the layout, never the rules.

use agentcom_protocol::{Change, ChangeEntry, ChangeStatus};
use serde::{Deserialize, Serialize};

use crate::domain::changes::ChangeDelta;
use crate::store::kv::Batch;
use crate::store::{decode, Store, StoreError};

#[derive(Serialize, Deserialize)]
struct Record {
    change: Change,
    history_len: u32,
}

fn key(prefix: &str, id: &str) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn history_key(id: &str, seq: u32) -> Vec<u8> {
    let mut k = key("CH/", id);
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn status_prefix(status: ChangeStatus) -> Vec<u8> {
    format!("CS/{}/", status.as_str()).into_bytes()
}

fn task_prefix(task_id: &str) -> Vec<u8> {
    format!("CT/{task_id}/").into_bytes()
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialise")
}

/// A change read from the store, with its history length.
pub(crate) struct StoredChange {
    pub change: Change,
    pub history_len: u32,
}

impl Store {
    /// Stage change deltas into a group's batch.
    pub(super) fn stage_changes(&self, batch: &mut Batch, deltas: &[ChangeDelta]) {
        for d in deltas {
            let c = &d.change;
            let mut head = c.clone();
            head.history = None;
            batch.insert(
                key("C/", &c.id),
                json(&Record {
                    change: head,
                    history_len: d.history_len,
                }),
            );
            for (seq, entry) in &d.new_history {
                batch.insert(history_key(&c.id, *seq), json(entry));
            }
            if d.previous_status != Some(c.status) {
                if let Some(prev) = d.previous_status {
                    let mut k = status_prefix(prev);
                    k.extend_from_slice(c.id.as_bytes());
                    batch.remove(k);
                }
                let mut k = status_prefix(c.status);
                k.extend_from_slice(c.id.as_bytes());
                batch.insert(k, vec![]);
            }
            if d.previous_status.is_none() {
                let mut k = task_prefix(&c.task_id);
                k.extend_from_slice(c.id.as_bytes());
                batch.insert(k, vec![]);
            }
        }
    }

    /// Stage the deletion of every change of a task (retention); answers
    /// the statuses they had.
    pub(super) fn stage_purge_changes(
        &self,
        batch: &mut Batch,
        task_id: &str,
    ) -> Result<Vec<ChangeStatus>, StoreError> {
        let mut statuses = Vec::new();
        let prefix = task_prefix(task_id);
        for kv in self.tasks.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            batch.remove(k);
            if let Some(s) = self.change(&id)? {
                for seq in 0..s.history_len {
                    batch.remove(history_key(&id, seq));
                }
                let mut sk = status_prefix(s.change.status);
                sk.extend_from_slice(id.as_bytes());
                batch.remove(sk);
                statuses.push(s.change.status);
            }
            batch.remove(key("C/", &id));
        }
        Ok(statuses)
    }

    /// How many changes are in each status.
    pub(crate) fn count_changes_by_status(
        &self,
    ) -> Result<std::collections::BTreeMap<ChangeStatus, usize>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        for status in ChangeStatus::ALL {
            let mut n = 0;
            for kv in self.tasks.scan_prefix(status_prefix(status)) {
                kv?;
                n += 1;
            }
            out.insert(status, n);
        }
        Ok(out)
    }

    /// One change.
    pub(crate) fn change(&self, id: &str) -> Result<Option<StoredChange>, StoreError> {
        let k = key("C/", id);
        match self.tasks.get(&k)? {
            Some(v) => {
                let r: Record = decode(&k, &v)?;
                Ok(Some(StoredChange {
                    change: r.change,
                    history_len: r.history_len,
                }))
            }
            None => Ok(None),
        }
    }

    /// The live changes (open, reviewing, escalated, merging), to rebuild
    /// the change core at start.
    pub(crate) fn load_live_changes(&self) -> Result<Vec<StoredChange>, StoreError> {
        let mut out = Vec::new();
        for status in ChangeStatus::ALL.into_iter().filter(|s| s.is_live()) {
            let prefix = status_prefix(status);
            for kv in self.tasks.scan_prefix(&prefix) {
                let (k, _) = kv?;
                let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                if let Some(c) = self.change(&id)? {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// Changes newest first, of one status or all, that `wanted` keeps, at
    /// most `limit`.
    pub(crate) fn change_page(
        &self,
        status: Option<ChangeStatus>,
        limit: usize,
        mut wanted: impl FnMut(&Change) -> bool,
    ) -> Result<Vec<StoredChange>, StoreError> {
        let mut out = Vec::new();
        let prefix = match status {
            Some(s) => status_prefix(s),
            None => b"C/".to_vec(),
        };
        for kv in self.tasks.scan_prefix(&prefix).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(c) = self.change(&id)? {
                if wanted(&c.change) {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// History entries `from..to` of a change, oldest first.
    pub(crate) fn change_history(
        &self,
        id: &str,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChangeEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tasks.range(history_key(id, from)..history_key(id, to)) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}
