//! Older store formats, brought to the current one at open, in place and
//! durably, before anything else reads the store.
//!
//! - Format 1 kept each task whole in `t/<id>`, with no body, result or
//!   index keys.
//! - Format 2 split a task over many keys: `t/<id>` its head (the task
//!   without description, metadata and result, with its history length),
//!   `b/<id>` and `r/<id>` its body and result (or [`IN_FILE`]), one
//!   `h/<id>/<seq>` key per history entry, and `s/<status>/<id>` for every
//!   status.
//! - Format 3 (the current one, see the parent module) keeps a task in one
//!   record, under `l/` while live and `t/` once finished.
//!
//! Each step can be interrupted and run again: format 2's body key is
//! removed only with the task's format-3 record in the same batch, so a
//! task whose `b/` key is gone is migrated already. This module knows the
//! old layouts, never the rules.

use agentcom_protocol::{HistoryEntry, Task, TaskResult, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{finished_key, json, key, status_key, KeyRecord, Record, INLINE_MAX, IN_FILE};
use crate::domain::queue::spec_digest;
use crate::store::kv::Batch;
use crate::store::{decode, Store, StoreError};

/// A format-2 head.
#[derive(Serialize, Deserialize)]
struct Head {
    task: Task,
    history_len: u32,
}

/// A format-2 body.
#[derive(Serialize, Deserialize)]
pub(super) struct Body {
    pub(super) description: String,
    pub(super) metadata: Option<Map<String, Value>>,
}

/// Tasks migrated per batch.
const CHUNK: usize = 1000;

fn history_key(id: &str, seq: u32) -> Vec<u8> {
    let mut k = key("h/", id);
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// Bring the store to format [`super::FORMAT`].
    pub(crate) fn migrate(&self) -> Result<(), StoreError> {
        let format = self.meta_get("store_format")?;
        match format.as_deref() {
            Some(super::FORMAT) => return Ok(()),
            Some("2") => {}
            _ => self.format_1_to_2()?,
        }
        self.format_2_to_3()?;
        // meta_put syncs: the migrated records are durable with the format.
        self.meta_put("store_format", super::FORMAT)
    }

    /// Format 1 → 2 (a store never opened by a format-2 hub; an empty
    /// store takes this way too, doing nothing).
    fn format_1_to_2(&self) -> Result<(), StoreError> {
        let mut migrated = 0usize;
        let mut batch = Batch::default();
        for kv in self.tasks.scan_prefix(b"t/") {
            let (k, v) = kv?;
            let old: Head = decode(&k, &v)?;
            let mut t = old.task;
            if t.status.is_terminal() && t.finished_at.is_none() {
                t.finished_at = Some(t.updated_at);
            }
            if self.tasks.contains_key(key("b/", &t.id))? {
                continue; // migrated before a crash stopped the last run
            }
            let body = json(&Body {
                description: std::mem::take(&mut t.description),
                metadata: t.metadata.take(),
            });
            let result = t.result.take();
            batch.insert(key("b/", &t.id), self.v2_value("body", &t.id, body)?);
            if let Some(r) = &result {
                batch.insert(key("r/", &t.id), self.v2_value("result", &t.id, json(r))?);
            }
            batch.insert(status_key(t.status, &t.id), vec![]);
            if let Some(at) = t.finished_at {
                batch.insert(finished_key(at, &t.id), vec![]);
            }
            if let Some(k) = &t.idempotency_key {
                batch.insert(
                    key("k/", k),
                    json(&KeyRecord {
                        id: t.id.clone(),
                        digest: spec_digest(&t),
                    }),
                );
            }
            t.history = None;
            batch.insert(
                key("t/", &t.id),
                json(&Head {
                    task: t,
                    history_len: old.history_len,
                }),
            );
            migrated += 1;
        }
        if migrated > 0 {
            // The values in files before the records that point at them.
            self.sync_files()?;
            self.tasks.apply_batch(batch)?;
            tracing::info!(tasks = migrated, "store migrated from format 1 to 2");
        }
        Ok(())
    }

    /// A format-2 body or result value: inline when small, else in its file.
    fn v2_value(&self, ext: &str, id: &str, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if bytes.len() <= INLINE_MAX {
            return Ok(bytes);
        }
        let path = self.value_path(id, ext);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, &bytes)?;
        Ok(IN_FILE.to_vec())
    }

    /// Format 2 → 3: every task's head, body, result and history become
    /// one record (`l/` live, `t/` finished); the body, result and history
    /// keys and the live statuses' index keys go. A body or result that was
    /// in its file stays there.
    fn format_2_to_3(&self) -> Result<(), StoreError> {
        let mut migrated = 0usize;
        loop {
            let mut batch = Batch::default();
            let mut n = 0;
            // Format-2 heads whose body key is still there.
            for kv in self.tasks.scan_prefix(b"b/") {
                let (k, _) = kv?;
                let id = String::from_utf8_lossy(&k[2..]).into_owned();
                self.stage_format_3(&id, &mut batch)?;
                n += 1;
                if n == CHUNK {
                    break;
                }
            }
            if n == 0 {
                break;
            }
            self.tasks.apply_batch(batch)?;
            migrated += n;
        }
        if migrated > 0 {
            self.write_counts(&self.count_finished()?)?;
            tracing::info!(tasks = migrated, "store migrated from format 2 to 3");
        }
        Ok(())
    }

    /// Stage one format-2 task's record and the removal of its old keys.
    fn stage_format_3(&self, id: &str, batch: &mut Batch) -> Result<(), StoreError> {
        let head_key = key("t/", id);
        let Some(v) = self.tasks.get(&head_key)? else {
            batch.remove(key("b/", id)); // a body without its head: nothing to keep
            return Ok(());
        };
        let head: Head = decode(&head_key, &v)?;
        let mut task = head.task;
        let mut record_body_in_file = false;
        let mut record_result_in_file = false;
        if let Some(b) = self.tasks.get(key("b/", id))? {
            if &b[..] == IN_FILE {
                record_body_in_file = true;
            } else {
                let body: Body = decode(&key("b/", id), &b)?;
                task.description = body.description;
                task.metadata = body.metadata;
            }
        }
        if let Some(r) = self.tasks.get(key("r/", id))? {
            if &r[..] == IN_FILE {
                record_result_in_file = true;
            } else {
                task.result = Some(decode::<TaskResult>(&key("r/", id), &r)?);
            }
        }
        let mut history: Vec<HistoryEntry> = Vec::with_capacity(head.history_len as usize);
        for kv in self
            .tasks
            .range(history_key(id, 0)..history_key(id, head.history_len))
        {
            let (k, v) = kv?;
            history.push(decode(&k, &v)?);
            batch.remove(k);
        }
        task.history = None;
        let status = task.status;
        let record = Record {
            task,
            history,
            body_in_file: record_body_in_file,
            result_in_file: record_result_in_file,
        };
        batch.remove(key("b/", id));
        batch.remove(key("r/", id));
        if status.is_terminal() {
            batch.insert(head_key, json(&record));
        } else {
            batch.remove(head_key);
            batch.remove(status_key(status, id));
            batch.insert(key("l/", id), json(&record));
        }
        Ok(())
    }

    /// Finished tasks per status, counted from their index (migration only).
    fn count_finished(&self) -> Result<super::Counts, StoreError> {
        let mut out = super::Counts::default();
        for status in TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            let mut n = 0u64;
            for kv in self.tasks.scan_prefix(super::status_prefix(status)) {
                kv?;
                n += 1;
            }
            out.set(status, n);
        }
        Ok(out)
    }
}
