//! Tasks in the store: how they are laid out in the `tasks` tree, written
//! (one atomic batch per group commit), read back, and deleted by
//! retention.
//!
//! Format 3. A task is one record, rewritten whole at every change, so a
//! create is one write and each later step one more; sled's cost is per
//! key written far more than per byte (measured: docs/benchmarks.md).
//! Keys (ids are ULIDs, so ids sort by creation time):
//! - `l/<id>` → a live task's record (queued, assigned, working, failed,
//!   in review): the task with its description, metadata and result, and
//!   its whole history. The restart reads exactly these.
//! - `t/<id>` → a finished task's record (completed, dead, cancelled),
//!   moved from `l/` in the batch that finishes it (and back when it is
//!   retried).
//! - `s/<status>/<id>` → (empty): finished tasks by status, for pages of a
//!   finished status (live ones are paged from memory).
//! - `f/<finished_at ms: i64 BE>/<id>` → (empty): finished tasks by when
//!   they finished, for retention.
//! - `k/<idempotency key>` → the id and spec digest of the task it created.
//! - `m/finished_counts` → how many finished tasks of each status, kept in
//!   the same batches, so a restart never counts a million keys.
//!
//! A description and metadata (or a result) whose JSON is over
//! [`INLINE_MAX`] bytes lives in a file of its own,
//! `<data_dir>/values/<xx>/<id>.body|.result`, and the record says so:
//! sled keeps recent values in memory, so large ones are kept out of it.
//! A group's value files are made durable (`syncfs`) before its records
//! are written; files no record points at are removed at start.
//!
//! A change of a task that the queue holds only in part (a finished
//! task's head, or a step that did not touch the body or result) takes
//! the rest from the record already stored. Everything of one group goes
//! in one batch. This module knows the layout, never the rules.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use agentcom_protocol::{HistoryEntry, Task, TaskResult, TaskStatus, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::changes::ChangeDelta;
use crate::domain::queue::{spec_digest, StoredKey, TaskDelta};
use crate::store::kv::Batch;
use crate::store::{decode, Store, StoreError};

mod migrate;

/// The store format this code writes; older ones are migrated at open.
const FORMAT: &str = "3";

/// Bodies and results larger than this go to a file of their own.
pub(crate) const INLINE_MAX: usize = 4 * 1024;
/// A format-2 body or result key whose value is in a file.
const IN_FILE: &[u8] = b"@file";
/// The finished tasks' counts.
const COUNTS_KEY: &[u8] = b"m/finished_counts";

/// A task as stored: the task (its history apart), its history, and
/// whether its body or result is in a file.
#[derive(Serialize, Deserialize)]
struct Record {
    task: Task,
    #[serde(default)]
    history: Vec<HistoryEntry>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    body_in_file: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    result_in_file: bool,
}

/// The body as its file holds it.
#[derive(Serialize, Deserialize)]
struct Body {
    description: String,
    metadata: Option<Map<String, Value>>,
}

/// What the record of a finished task says of when it finished, read
/// without the rest of it.
#[derive(Deserialize)]
struct FinishedAt {
    task: FinishedAtTask,
}

#[derive(Deserialize)]
struct FinishedAtTask {
    #[serde(default)]
    finished_at: Option<Timestamp>,
}

/// Whether a record's values are in files, read without the rest.
#[derive(Deserialize)]
struct InFiles {
    #[serde(default)]
    body_in_file: bool,
    #[serde(default)]
    result_in_file: bool,
}

/// An idempotency key as stored.
#[derive(Serialize, Deserialize)]
struct KeyRecord {
    id: String,
    digest: String,
}

/// Finished tasks per status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counts {
    #[serde(default)]
    completed: u64,
    #[serde(default)]
    dead: u64,
    #[serde(default)]
    cancelled: u64,
}

impl Counts {
    fn get(&self, s: TaskStatus) -> u64 {
        match s {
            TaskStatus::Completed => self.completed,
            TaskStatus::Dead => self.dead,
            TaskStatus::Cancelled => self.cancelled,
            _ => 0,
        }
    }

    fn set(&mut self, s: TaskStatus, n: u64) {
        match s {
            TaskStatus::Completed => self.completed = n,
            TaskStatus::Dead => self.dead = n,
            TaskStatus::Cancelled => self.cancelled = n,
            _ => {}
        }
    }

    /// Whether a task going from `from` to `to` changes the counts: it
    /// enters or leaves a finished status.
    fn changed_by(from: Option<TaskStatus>, to: TaskStatus) -> bool {
        from != Some(to) && (to.is_terminal() || from.is_some_and(|s| s.is_terminal()))
    }

    /// A task left `from` (if finished) and entered `to` (if finished).
    fn moved(&mut self, from: Option<TaskStatus>, to: Option<TaskStatus>) {
        if let Some(f) = from.filter(|s| s.is_terminal()) {
            self.set(f, self.get(f).saturating_sub(1));
        }
        if let Some(t) = to.filter(|s| s.is_terminal()) {
            self.set(t, self.get(t) + 1);
        }
    }
}

/// A task read from the store, with its history length.
pub(crate) struct StoredTask {
    pub task: Task,
    pub history_len: u32,
}

/// Which heavy fields a read fills in besides the head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    pub description_and_metadata: bool,
    pub result: bool,
}

impl Fields {
    pub(crate) const ALL: Fields = Fields {
        description_and_metadata: true,
        result: true,
    };
}

/// Delete finished tasks that finished before `before`, except those in
/// `keep` (the queue still holds them), at most `max` at a time.
pub(crate) struct Purge {
    pub before: Timestamp,
    pub keep: BTreeSet<String>,
    pub max: usize,
}

/// A task retention deleted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Purged {
    pub id: String,
    pub status: TaskStatus,
    /// The statuses of the changes deleted with it.
    pub changes: Vec<agentcom_protocol::ChangeStatus>,
}

fn key(prefix: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Where a task's record is: `l/` while live, `t/` once finished.
fn record_key(status: TaskStatus, id: &str) -> Vec<u8> {
    key(if status.is_terminal() { "t/" } else { "l/" }, id)
}

fn status_prefix(status: TaskStatus) -> Vec<u8> {
    format!("s/{}/", status.as_str()).into_bytes()
}

fn status_key(status: TaskStatus, id: &str) -> Vec<u8> {
    let mut k = status_prefix(status);
    k.extend_from_slice(id.as_bytes());
    k
}

fn finished_key(at: Timestamp, id: &str) -> Vec<u8> {
    let mut k = b"f/".to_vec();
    k.extend_from_slice(&at.0.to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(id.as_bytes());
    k
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialise")
}

/// Which value file.
#[derive(Clone, Copy)]
enum Part {
    Body,
    Result,
}

impl Part {
    fn extension(self) -> &'static str {
        match self {
            Part::Body => "body",
            Part::Result => "result",
        }
    }
}

impl Store {
    fn value_path(&self, id: &str, extension: &str) -> std::path::PathBuf {
        // Fan out by the end of the id (a ULID's random part).
        let fan = &id[id.len().saturating_sub(2)..];
        self.files
            .as_ref()
            .expect("only sled keeps values in files")
            .join(fan)
            .join(format!("{id}.{extension}"))
    }

    /// Values larger than this go to a file: sled's [`INLINE_MAX`]; none
    /// with PostgreSQL, which keeps large values out of line itself.
    fn inline_max(&self) -> usize {
        if self.files.is_some() {
            INLINE_MAX
        } else {
            usize::MAX
        }
    }

    fn value_file(&self, part: Part, id: &str) -> std::path::PathBuf {
        self.value_path(id, part.extension())
    }

    /// Write a value file now (made durable by the caller before the
    /// batch that points at it).
    fn write_value_file(&self, part: Part, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.value_file(part, id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, bytes)?;
        Ok(())
    }

    /// A value file's bytes; None if it is gone (being deleted).
    fn read_value_file(&self, part: Part, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.value_file(part, id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(task = id, "a value file is missing; it was being deleted");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Remove the value files of these tasks (after retention deleted them).
    fn remove_files(&self, ids: &[String]) {
        if self.files.is_none() {
            return;
        }
        for id in ids {
            for part in [Part::Body, Part::Result] {
                let _ = std::fs::remove_file(self.value_file(part, id));
            }
        }
    }

    /// The record of task `id`, where it is, and its key; live first.
    fn record_with_key(&self, id: &str) -> Result<Option<(Vec<u8>, Record)>, StoreError> {
        for prefix in ["l/", "t/"] {
            let k = key(prefix, id);
            if let Some(v) = self.tasks.get(&k)? {
                let r: Record = decode(&k, &v)?;
                return Ok(Some((k, r)));
            }
        }
        Ok(None)
    }

    /// The records of tasks `ids` (live first), each with its key, read
    /// together (one round trip to PostgreSQL for a whole group).
    fn records_with_keys(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, (Vec<u8>, Record)>, StoreError> {
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .flat_map(|id| [key("l/", id), key("t/", id)])
            .collect();
        let values = self.tasks.get_many(&keys)?;
        let mut out = HashMap::new();
        for (pair, id) in keys.chunks(2).zip(values.chunks(2)).zip(ids) {
            let ((keys, values), id) = (pair, id);
            if let Some((k, v)) = keys
                .iter()
                .zip(values)
                .find_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            {
                out.insert(id.to_string(), (k.clone(), decode(k, v)?));
            }
        }
        Ok(out)
    }

    /// Value files whose record does not point at them (a group that never
    /// became durable wrote them) are removed; run at open.
    pub(crate) fn remove_orphan_files(&self) -> Result<(), StoreError> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let Ok(fans) = std::fs::read_dir(&**files) else {
            return Ok(());
        };
        let mut removed = 0usize;
        for fan in fans.flatten() {
            for f in std::fs::read_dir(fan.path())?.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some((id, ext)) = name.rsplit_once('.') else {
                    continue;
                };
                let mut referenced = false;
                for prefix in ["l/", "t/"] {
                    let k = key(prefix, id);
                    if let Some(v) = self.tasks.get(&k)? {
                        let flags: InFiles = decode(&k, &v)?;
                        referenced = match ext {
                            "body" => flags.body_in_file,
                            "result" => flags.result_in_file,
                            _ => true,
                        };
                        break;
                    }
                }
                if !referenced && (ext == "body" || ext == "result") {
                    std::fs::remove_file(f.path())?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed value files of writes that never became durable"
            );
        }
        Ok(())
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        match self.tasks.get(COUNTS_KEY)? {
            Some(v) => decode(COUNTS_KEY, &v),
            None => Ok(Counts::default()),
        }
    }

    fn write_counts(&self, c: &Counts) -> Result<(), StoreError> {
        self.tasks.insert(COUNTS_KEY, json(c))?;
        Ok(())
    }

    /// Stage a group of task changes, and a retention purge, as one atomic
    /// batch (not yet durable: call [`Store::sync`]). Large values are
    /// written to their files and made durable first. Answers what the
    /// purge deleted.
    pub(crate) fn write_tasks(
        &self,
        deltas: &[TaskDelta],
        change_deltas: &[ChangeDelta],
        purge: Option<&Purge>,
    ) -> Result<Vec<Purged>, StoreError> {
        let mut batch = Batch::default();
        let mut files = 0;
        self.stage_changes(&mut batch, change_deltas);
        // The finished counts change only when a task enters or leaves a
        // finished status (or retention deletes some): read them then only.
        let moves_finished = purge.is_some()
            || deltas
                .iter()
                .any(|d| Counts::changed_by(d.previous_status, d.task.status));
        let mut counts = if moves_finished {
            self.counts()?
        } else {
            Counts::default()
        };
        let counted = counts.clone();
        // Records written by this batch, by id: a task changed twice in one
        // group builds on its first change, which sled does not have yet.
        let mut written: HashMap<&str, (Vec<u8>, Record)> = HashMap::new();
        // The stored records the group changes, read at once.
        let mut changed: Vec<&str> = deltas
            .iter()
            .filter(|d| d.previous_status.is_some())
            .map(|d| d.task.id.as_str())
            .collect();
        changed.sort_unstable();
        changed.dedup();
        let mut stored = self.records_with_keys(&changed)?;
        for d in deltas {
            let t = &d.task;
            let old = match written.remove(t.id.as_str()) {
                Some(w) => Some(w),
                None if d.previous_status.is_some() => stored.remove(t.id.as_str()),
                None => None,
            };
            let (old_key, record) = self.record_of(d, old, &mut files)?;
            let new_key = record_key(t.status, &t.id);
            if let Some(k) = old_key.filter(|k| *k != new_key) {
                batch.remove(k);
            }
            batch.insert(new_key.clone(), json(&record));
            let previous = d.previous_status;
            if previous != Some(t.status) {
                if let Some(prev) = previous.filter(|s| s.is_terminal()) {
                    batch.remove(status_key(prev, &t.id));
                }
                if t.status.is_terminal() {
                    batch.insert(status_key(t.status, &t.id), vec![]);
                }
                counts.moved(previous, Some(t.status));
            }
            if d.previous_finished_at != t.finished_at {
                if let Some(prev) = d.previous_finished_at {
                    batch.remove(finished_key(prev, &t.id));
                }
                if let Some(at) = t.finished_at {
                    batch.insert(finished_key(at, &t.id), vec![]);
                }
            }
            if let Some(k) = &d.write_key {
                batch.insert(
                    key("k/", k),
                    json(&KeyRecord {
                        id: t.id.clone(),
                        digest: spec_digest(t),
                    }),
                );
            }
            written.insert(t.id.as_str(), (new_key, record));
        }
        let purged = match purge {
            Some(p) => self.stage_purge(p, &mut batch, &mut counts)?,
            None => vec![],
        };
        if counts != counted {
            batch.insert(COUNTS_KEY, json(&counts));
        }
        if files > 0 {
            // The values before the records that point at them.
            self.sync_files()?;
        }
        self.tasks.apply_batch(batch)?;
        if !purged.is_empty() {
            let ids: Vec<String> = purged.iter().map(|p| p.id.clone()).collect();
            self.remove_files(&ids);
        }
        Ok(purged)
    }

    /// The record a delta leaves: its task, with the body and result it
    /// brings (written to a file when large) or else those already stored,
    /// and the stored history with its new entries. Also where the old
    /// record was.
    fn record_of(
        &self,
        d: &TaskDelta,
        old: Option<(Vec<u8>, Record)>,
        files: &mut usize,
    ) -> Result<(Option<Vec<u8>>, Record), StoreError> {
        let (old_key, old) = match old {
            Some((k, r)) => (Some(k), Some(r)),
            None => (None, None),
        };
        let mut task = d.task.clone();
        task.history = None;
        let mut history = old.as_ref().map(|r| r.history.clone()).unwrap_or_default();
        for (seq, entry) in &d.new_history {
            let seq = *seq as usize;
            if seq < history.len() {
                history[seq] = entry.clone();
            } else {
                history.push(entry.clone());
            }
        }
        let mut body_in_file = false;
        if d.write_body || old.is_none() {
            let body = Body {
                description: std::mem::take(&mut task.description),
                metadata: task.metadata.take(),
            };
            let bytes = json(&body);
            if bytes.len() > self.inline_max() {
                self.write_value_file(Part::Body, &task.id, &bytes)?;
                *files += 1;
                body_in_file = true;
            } else {
                task.description = body.description;
                task.metadata = body.metadata;
            }
        } else if let Some(o) = &old {
            body_in_file = o.body_in_file;
            task.description = o.task.description.clone();
            task.metadata = o.task.metadata.clone();
        }
        let mut result_in_file = false;
        if d.write_result {
            if let Some(r) = task.result.take() {
                let bytes = json(&r);
                if bytes.len() > self.inline_max() {
                    self.write_value_file(Part::Result, &task.id, &bytes)?;
                    *files += 1;
                    result_in_file = true;
                } else {
                    task.result = Some(r);
                }
            }
        } else if let Some(o) = &old {
            result_in_file = o.result_in_file;
            task.result = o.task.result.clone();
        }
        Ok((
            old_key,
            Record {
                task,
                history,
                body_in_file,
                result_in_file,
            },
        ))
    }

    fn stage_purge(
        &self,
        p: &Purge,
        batch: &mut Batch,
        counts: &mut Counts,
    ) -> Result<Vec<Purged>, StoreError> {
        let mut out = Vec::new();
        let end = finished_key(p.before, "");
        for kv in self.tasks.range(b"f/".to_vec()..end) {
            if out.len() >= p.max {
                break;
            }
            let (k, _) = kv?;
            let id = String::from_utf8_lossy(&k[2 + 8 + 1..]).into_owned();
            if p.keep.contains(&id) {
                continue;
            }
            batch.remove(k);
            let Some((record_key, record)) = self.record_with_key(&id)? else {
                continue;
            };
            let t = &record.task;
            batch.remove(record_key);
            batch.remove(status_key(t.status, &id));
            counts.moved(Some(t.status), None);
            if let Some(k) = &t.idempotency_key {
                batch.remove(key("k/", k));
            }
            let changes = self.stage_purge_changes(batch, &id)?;
            out.push(Purged {
                id,
                status: t.status,
                changes,
            });
        }
        Ok(out)
    }

    /// The value of `key` as another store can hold it: a task's record
    /// with the body and result its files hold put back in it (the other
    /// store has no files of this one); any other value as it is.
    pub(super) fn portable(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        if !(key.starts_with(b"l/") || key.starts_with(b"t/")) {
            return Ok(value.to_vec());
        }
        let mut r: Record = decode(key, value)?;
        if !(r.body_in_file || r.result_in_file) {
            return Ok(value.to_vec());
        }
        let id = r.task.id.clone();
        if r.body_in_file {
            if let Some(v) = self.read_value_file(Part::Body, &id)? {
                let body: Body = decode(&self::key("b/", &id), &v)?;
                r.task.description = body.description;
                r.task.metadata = body.metadata;
            }
            r.body_in_file = false;
        }
        if r.result_in_file {
            if let Some(v) = self.read_value_file(Part::Result, &id)? {
                r.task.result = Some(decode::<TaskResult>(&self::key("r/", &id), &v)?);
            }
            r.result_in_file = false;
        }
        Ok(json(&r))
    }

    /// A record as a stored task, with the heavy fields `fields` asks for.
    fn stored(&self, record: Record, fields: Fields) -> Result<StoredTask, StoreError> {
        let history_len = record.history.len() as u32;
        let mut task = record.task;
        if fields.description_and_metadata {
            if record.body_in_file {
                if let Some(v) = self.read_value_file(Part::Body, &task.id)? {
                    let body: Body = decode(&key("b/", &task.id), &v)?;
                    task.description = body.description;
                    task.metadata = body.metadata;
                }
            }
        } else {
            task.description = String::new();
            task.metadata = None;
        }
        if fields.result {
            if record.result_in_file {
                if let Some(v) = self.read_value_file(Part::Result, &task.id)? {
                    task.result = Some(decode::<TaskResult>(&key("r/", &task.id), &v)?);
                }
            }
        } else {
            task.result = None;
        }
        Ok(StoredTask { task, history_len })
    }

    /// One task, whole.
    pub(crate) fn task(&self, id: &str) -> Result<Option<StoredTask>, StoreError> {
        match self.record_with_key(id)? {
            Some((_, r)) => self.stored(r, Fields::ALL).map(Some),
            None => Ok(None),
        }
    }

    /// The live tasks (queued, assigned, working, failed, in review),
    /// whole, to rebuild the queue at start.
    pub(crate) fn load_live(&self) -> Result<Vec<StoredTask>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tasks.scan_prefix(b"l/") {
            let (k, v) = kv?;
            out.push(self.stored(decode(&k, &v)?, Fields::ALL)?);
        }
        Ok(out)
    }

    /// Every stored idempotency key, with when its task finished.
    pub(crate) fn load_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tasks.scan_prefix(b"k/") {
            let (k, v) = kv?;
            let rec: KeyRecord = decode(&k, &v)?;
            let t = key("t/", &rec.id);
            let finished_at = match self.tasks.get(&t)? {
                Some(v) => decode::<FinishedAt>(&t, &v)?.task.finished_at,
                None => None,
            };
            out.push(StoredKey {
                key: String::from_utf8_lossy(&k[2..]).into_owned(),
                id: rec.id,
                digest: rec.digest,
                finished_at,
            });
        }
        Ok(out)
    }

    /// How many tasks are in each status: the finished ones from their
    /// counts, the live ones from their records.
    pub(crate) fn count_by_status(&self) -> Result<BTreeMap<TaskStatus, usize>, StoreError> {
        #[derive(Deserialize)]
        struct StatusOnly {
            task: StatusOnlyTask,
        }
        #[derive(Deserialize)]
        struct StatusOnlyTask {
            status: TaskStatus,
        }
        let counts = self.counts()?;
        let mut out: BTreeMap<TaskStatus, usize> = TaskStatus::ALL
            .into_iter()
            .map(|s| (s, counts.get(s) as usize))
            .collect();
        for kv in self.tasks.scan_prefix(b"l/") {
            let (k, v) = kv?;
            let s: StatusOnly = decode(&k, &v)?;
            *out.entry(s.task.status).or_default() += 1;
        }
        Ok(out)
    }

    /// A page of tasks, newest first, after `cursor` (an id), of one
    /// status or all. `more` says whether another page follows.
    ///
    /// A page of every status merges the live records (`l/`) with the
    /// finished ones (`t/`). The two walks are not a snapshot: a task that
    /// finishes meanwhile leaves `l/` for `t/`, and could leave `l/` before
    /// that walk reached it for a place in `t/` the other walk had passed.
    /// So the live ids the page can hold (`limit` + 1 that `wanted` takes)
    /// are all read before the walk of `t/` begins: a task that finishes
    /// after its id was read is read where it is now, and one that
    /// finished before is in `t/` when that walk comes to it.
    pub(crate) fn page(
        &self,
        status: Option<TaskStatus>,
        cursor: Option<&str>,
        limit: usize,
        fields: Fields,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Result<(Vec<StoredTask>, bool), StoreError> {
        let below = |prefix: &[u8]| {
            let mut k = prefix.to_vec();
            match cursor {
                Some(c) => k.extend_from_slice(c.as_bytes()),
                None => k.push(0xff),
            }
            k
        };
        // Ids newest first, each with the key of its record.
        let ids: Box<dyn Iterator<Item = IdAndKey>> =
            match status {
                Some(s) if s.is_terminal() => {
                    let prefix = status_prefix(s);
                    Box::new(self.tasks.range(prefix.clone()..below(&prefix)).rev().map(
                        move |kv| {
                            let (k, _) = kv?;
                            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                            let rk = key("t/", &id);
                            Ok((id, rk))
                        },
                    ))
                }
                _ => {
                    let scan = |p: &'static str| {
                        self.tasks
                            .range(p.as_bytes().to_vec()..below(p.as_bytes()))
                            .rev()
                            .map(|kv| kv.map(|(k, _)| k.to_vec()))
                    };
                    // Each live id the page can show, read now: with no
                    // status asked, every one `wanted` takes is shown (or
                    // was, from `t/`), so `limit` + 1 of them are enough;
                    // a live status would filter them later, so then all
                    // are read (callers ask the view for those instead).
                    let mut live = Vec::new();
                    for k in scan("l/") {
                        let k = k?;
                        if wanted(&String::from_utf8_lossy(&k[2..])) {
                            live.push(Ok(k));
                            if status.is_none() && live.len() > limit {
                                break;
                            }
                        }
                    }
                    Box::new(NewestFirst::new(live.into_iter(), scan("t/")).map(|k| {
                        let k = k?;
                        Ok((String::from_utf8_lossy(&k[2..]).into_owned(), k))
                    }))
                }
            };
        let mut out = Vec::new();
        // The walk is not a snapshot: a task that finishes (or is retried)
        // while a page is read moves between `l/` and `t/`, so its id can
        // come up in both scans, or its record be gone from the key the
        // scan saw. Each id is listed once, read where it is now.
        let mut listed = HashSet::new();
        for item in ids {
            let (id, rk) = item?;
            if listed.contains(&id) || !wanted(&id) {
                continue;
            }
            let record: Record = match self.tasks.get(&rk)? {
                Some(v) => decode(&rk, &v)?,
                None => match self.record_with_key(&id)? {
                    Some((_, r)) => r,
                    None => continue,
                },
            };
            listed.insert(id);
            if status.is_some_and(|s| record.task.status != s) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(self.stored(record, fields)?);
        }
        Ok((out, false))
    }

    /// History entries `from..to` of a task, oldest first.
    pub(crate) fn history(
        &self,
        id: &str,
        from: u32,
        to: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let Some((_, record)) = self.record_with_key(id)? else {
            return Ok(vec![]);
        };
        let len = record.history.len();
        let (from, to) = ((from as usize).min(len), (to as usize).min(len));
        Ok(record.history[from..to.max(from)].to_vec())
    }
}

/// A task id with the key of its record, as a page walks them.
type IdAndKey = Result<(String, Vec<u8>), StoreError>;

/// Two key iterators, each newest first (descending), merged into one
/// descending by the id after their two-byte prefix.
struct NewestFirst<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> NewestFirst<A, B>
where
    A: Iterator<Item = Result<Vec<u8>, StoreError>>,
    B: Iterator<Item = Result<Vec<u8>, StoreError>>,
{
    fn new(a: A, b: B) -> Self {
        NewestFirst {
            a: a.peekable(),
            b: b.peekable(),
        }
    }
}

impl<A, B> Iterator for NewestFirst<A, B>
where
    A: Iterator<Item = Result<Vec<u8>, StoreError>>,
    B: Iterator<Item = Result<Vec<u8>, StoreError>>,
{
    type Item = Result<Vec<u8>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(Err(_)), _) => true,
            (_, Some(Err(_))) => false,
            (Some(Ok(x)), Some(Ok(y))) => x[2..] >= y[2..],
        };
        if take_a {
            self.a.next()
        } else {
            self.b.next()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue::{Created, QueueCore, QueueSettings};
    use agentcom_protocol::{AttemptRef, NewTask};
    use std::path::PathBuf;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentcom-tasks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn now(ms: i64) -> Timestamp {
        Timestamp(1_800_000_000_000 + ms)
    }

    fn create(q: &mut QueueCore, title: &str, key: Option<&str>, at: i64) -> String {
        match q
            .create(
                NewTask {
                    title: title.into(),
                    description: Some(format!("{title} in detail")),
                    idempotency_key: key.map(str::to_string),
                    ..Default::default()
                },
                now(at),
            )
            .unwrap()
        {
            Created::New(t) => t.id,
            Created::Existing(id) => panic!("existing {id}"),
        }
    }

    #[test]
    fn heads_bodies_results_history_and_indexes_round_trip() {
        crate::store::each_engine("roundtrip", |open| {
            let mut q = QueueCore::new(QueueSettings::default());
            let a = create(&mut q, "a", Some("key-a"), 0);
            let b = create(&mut q, "b", None, 1);
            q.cancel(&b, "test", now(5)).unwrap();
            let s = open();
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            s.sync().unwrap();
            let assigned = q.claim(
                &[crate::domain::matching::IdleAgent::new("x", &[], 0)],
                now(6),
            );
            let r = AttemptRef::new(a.clone(), assigned[0].task.generation);
            q.accept(&r, "x", now(7));
            q.complete(
                &r,
                "x",
                TaskResult {
                    summary: Some("done".into()),
                    ..Default::default()
                },
                now(8),
            );
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            s.sync().unwrap();
            drop(s);

            let s = open();
            let whole = s.task(&a).unwrap().unwrap();
            assert_eq!(whole.task.description, "a in detail");
            assert_eq!(whole.task.result.unwrap().summary.as_deref(), Some("done"));
            assert_eq!(whole.history_len, 4);
            let events: Vec<&str> = s
                .history(&a, 0, 4)
                .unwrap()
                .iter()
                .map(|h| h.event.as_str())
                .collect();
            assert_eq!(events, ["created", "assigned", "accepted", "completed"]);
            assert_eq!(
                s.history(&a, 1, 2).unwrap().len(),
                1,
                "only the range asked"
            );
            let counts = s.count_by_status().unwrap();
            assert_eq!(counts[&TaskStatus::Completed], 1);
            assert_eq!(counts[&TaskStatus::Cancelled], 1);
            assert_eq!(counts[&TaskStatus::Queued], 0);
            assert!(s.load_live().unwrap().is_empty(), "both finished");
            let keys = s.load_keys().unwrap();
            assert_eq!(keys.len(), 1);
            assert_eq!(
                (keys[0].key.as_str(), keys[0].id.as_str()),
                ("key-a", a.as_str())
            );
            assert!(keys[0].finished_at.is_some());

            // Pages: newest first, heads only unless asked.
            let (page, more) = s.page(None, None, 1, Fields::default(), |_| true).unwrap();
            assert!(more);
            assert_eq!(page[0].task.id, b);
            assert_eq!(page[0].task.description, "", "heads only");
            let (page, more) = s.page(None, Some(&b), 5, Fields::ALL, |_| true).unwrap();
            assert!(!more);
            assert_eq!(page[0].task.id, a);
            assert_eq!(page[0].task.description, "a in detail");
            let (done, _) = s
                .page(
                    Some(TaskStatus::Completed),
                    None,
                    5,
                    Fields::default(),
                    |_| true,
                )
                .unwrap();
            assert_eq!(done.len(), 1);
        });
    }

    #[test]
    fn a_task_that_finishes_while_a_page_is_read_is_listed_once() {
        crate::store::each_engine("page-race", |open| {
            let mut q = QueueCore::new(QueueSettings::default());
            let older = create(&mut q, "older", None, 0);
            let newer = create(&mut q, "newer", None, 1);
            let s = open();
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            s.sync().unwrap();
            // The page asks about each id after its key was scanned and
            // before its record is read: `older` finishes right then (its
            // record moves from `l/` to `t/`), as a group written while a
            // list is served does.
            let mut moved = false;
            let (page, more) = s
                .page(None, None, 10, Fields::default(), |id| {
                    if id == older && !moved {
                        moved = true;
                        q.cancel(&older, "test", now(2)).unwrap();
                        s.write_tasks(&q.take_deltas(), &[], None).unwrap();
                    }
                    true
                })
                .unwrap();
            assert!(moved);
            assert!(!more);
            let ids: Vec<&str> = page.iter().map(|t| t.task.id.as_str()).collect();
            assert_eq!(ids, [newer.as_str(), older.as_str()], "each task once");
            assert_eq!(page[1].task.status, TaskStatus::Cancelled);
        });
    }

    #[test]
    fn a_live_task_that_finishes_while_a_page_is_read_is_not_missed() {
        crate::store::each_engine("page-miss", |open| {
            let mut q = QueueCore::new(QueueSettings::default());
            let oldest = create(&mut q, "oldest", None, 0);
            // Enough newer live tasks that a walk of `l/` reads more than
            // one of the engine's pages before it reaches `oldest`.
            let newer: Vec<String> = (1..=300)
                .map(|i| create(&mut q, &format!("newer {i}"), None, i))
                .collect();
            let s = open();
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            s.sync().unwrap();
            // `oldest` finishes as the page asks about the first task it
            // would show: its record leaves `l/` for `t/`, where a walk
            // is already past it (no finished task is newer), as a group
            // written while a list is served does.
            let mut moved = false;
            let (page, more) = s
                .page(None, None, 1000, Fields::default(), |_| {
                    if !moved {
                        moved = true;
                        q.cancel(&oldest, "test", now(400)).unwrap();
                        s.write_tasks(&q.take_deltas(), &[], None).unwrap();
                    }
                    true
                })
                .unwrap();
            assert!(moved);
            assert!(!more);
            assert_eq!(page.len(), 301, "no task missed, none twice");
            assert_eq!(page[0].task.id, newer[299]);
            assert_eq!(page[300].task.id, oldest);
            assert_eq!(page[300].task.status, TaskStatus::Cancelled);
        });
    }

    #[test]
    fn retention_deletes_finished_tasks_everywhere_but_those_held() {
        crate::store::each_engine("purge", |open| {
            let mut q = QueueCore::new(QueueSettings::default());
            let old = create(&mut q, "old", Some("k-old"), 0);
            let held = create(&mut q, "held", None, 1);
            let live = create(&mut q, "live", None, 2);
            q.cancel(&old, "x", now(10)).unwrap();
            q.cancel(&held, "x", now(10)).unwrap();
            let s = open();
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            let purge = Purge {
                before: now(11),
                keep: [held.clone()].into_iter().collect(),
                max: 100,
            };
            let purged = s.write_tasks(&[], &[], Some(&purge)).unwrap();
            assert_eq!(
                purged,
                [Purged {
                    id: old.clone(),
                    status: TaskStatus::Cancelled,
                    changes: vec![],
                }]
            );
            assert!(s.task(&old).unwrap().is_none());
            assert!(s.history(&old, 0, 10).unwrap().is_empty());
            assert!(s.load_keys().unwrap().is_empty());
            assert!(s.task(&held).unwrap().is_some());
            assert!(s.task(&live).unwrap().is_some());
            assert_eq!(s.count_by_status().unwrap()[&TaskStatus::Cancelled], 1);
            let before = s
                .write_tasks(
                    &[],
                    &[],
                    Some(&Purge {
                        before: now(5),
                        keep: BTreeSet::new(),
                        max: 100,
                    }),
                )
                .unwrap();
            assert!(before.is_empty(), "nothing finished before then");
        });
    }

    #[test]
    fn large_values_live_in_files_that_go_with_their_task() {
        let dir = tmp("files");
        let mut q = QueueCore::new(QueueSettings::default());
        let big = match q
            .create(
                NewTask {
                    title: "big".into(),
                    description: Some("x".repeat(INLINE_MAX * 3)),
                    ..Default::default()
                },
                now(0),
            )
            .unwrap()
        {
            Created::New(t) => t.id,
            Created::Existing(id) => panic!("{id}"),
        };
        let small = create(&mut q, "small", None, 1);
        let s = Store::open(&dir, 16).unwrap();
        s.write_tasks(&q.take_deltas(), &[], None).unwrap();
        s.sync().unwrap();
        let files = |s: &Store| -> usize {
            std::fs::read_dir(s.files.as_deref().unwrap())
                .map(|d| {
                    d.flatten()
                        .map(|f| std::fs::read_dir(f.path()).unwrap().count())
                        .sum()
                })
                .unwrap_or(0)
        };
        assert_eq!(files(&s), 1, "only the large body has a file");
        assert_eq!(
            s.task(&big).unwrap().unwrap().task.description.len(),
            INLINE_MAX * 3
        );
        assert_eq!(
            s.task(&small).unwrap().unwrap().task.description,
            "small in detail"
        );
        // A file no record points at (a group that never became durable)
        // is removed at the next open.
        let orphan = s.value_file(Part::Result, "01ORPHAN0000000000000000XX");
        std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        std::fs::write(&orphan, b"{}").unwrap();
        drop(s);
        let s = crate::store::open_for_test(&dir);
        assert_eq!(files(&s), 1);
        // Retention takes the file with the task.
        q.cancel(&big, "x", now(5)).unwrap();
        s.write_tasks(&q.take_deltas(), &[], None).unwrap();
        let purge = Purge {
            before: now(6),
            keep: BTreeSet::new(),
            max: 10,
        };
        assert_eq!(s.write_tasks(&[], &[], Some(&purge)).unwrap().len(), 1);
        assert_eq!(files(&s), 0);
        std::fs::remove_dir_all(dir).ok();
    }

    /// The keys of the tasks tree under `prefix`.
    fn keys(s: &Store, prefix: &str) -> Vec<String> {
        s.tasks
            .scan_prefix(prefix.as_bytes())
            .map(|kv| String::from_utf8_lossy(&kv.unwrap().0).into_owned())
            .collect()
    }

    #[test]
    fn finished_counts_survive_groups_that_finish_nothing() {
        crate::store::each_engine("counts-kept", |open| {
            let mut q = QueueCore::new(QueueSettings::default());
            let s = open();
            let a = create(&mut q, "a", None, 0);
            q.cancel(&a, "test", now(1)).unwrap();
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            // Groups of live changes only (these do not read the counts):
            // a create, then an assignment and its accept.
            create(&mut q, "b", None, 2);
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            let assigned = q.claim(
                &[crate::domain::matching::IdleAgent::new("x", &[], 0)],
                now(3),
            );
            let r = AttemptRef::new(assigned[0].task.id.clone(), assigned[0].task.generation);
            q.accept(&r, "x", now(4));
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            q.complete(&r, "x", TaskResult::default(), now(5));
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            s.sync().unwrap();
            drop(s);
            let counts = open().count_by_status().unwrap();
            assert_eq!(
                (
                    counts[&TaskStatus::Cancelled],
                    counts[&TaskStatus::Completed],
                    counts[&TaskStatus::Queued]
                ),
                (1, 1, 0)
            );
        });
    }

    #[test]
    fn a_task_is_one_record_live_then_finished() {
        crate::store::each_engine("one-record", |open| {
            let mut q = QueueCore::new(QueueSettings::default());
            let s = open();
            let a = create(&mut q, "a", None, 0);
            let before = s.tasks.len();
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            assert_eq!(s.tasks.len() - before, 1, "a create is one key");
            assert_eq!(keys(&s, "l/"), [format!("l/{a}")]);
            let assigned = q.claim(
                &[crate::domain::matching::IdleAgent::new("x", &[], 0)],
                now(1),
            );
            let r = AttemptRef::new(a.clone(), assigned[0].task.generation);
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            q.accept(&r, "x", now(2));
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            assert_eq!(s.tasks.len() - before, 1, "assign and accept rewrite it");
            q.complete(
                &r,
                "x",
                TaskResult {
                    summary: Some("done".into()),
                    ..Default::default()
                },
                now(3),
            );
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            assert!(keys(&s, "l/").is_empty());
            assert_eq!(keys(&s, "t/"), [format!("t/{a}")]);
            assert_eq!(keys(&s, "s/"), [format!("s/completed/{a}")]);
            assert_eq!(keys(&s, "f/").len(), 1);
            let counts = s.count_by_status().unwrap();
            assert_eq!(counts[&TaskStatus::Completed], 1);
            assert_eq!(counts[&TaskStatus::Working], 0);
            let t = s.task(&a).unwrap().unwrap();
            assert_eq!(t.history_len, 4);
            assert_eq!(t.task.description, "a in detail");
            assert_eq!(t.task.result.unwrap().summary.as_deref(), Some("done"));
        });
    }

    #[test]
    fn two_changes_of_a_task_in_one_group_keep_both() {
        crate::store::each_engine("twice", |open| {
            let mut q = QueueCore::new(QueueSettings::default());
            let s = open();
            let a = create(&mut q, "a", None, 0);
            let mut group = q.take_deltas();
            q.claim(
                &[crate::domain::matching::IdleAgent::new("x", &[], 0)],
                now(1),
            );
            group.extend(q.take_deltas());
            assert_eq!(group.len(), 2);
            s.write_tasks(&group, &[], None).unwrap();
            let t = s.task(&a).unwrap().unwrap();
            assert_eq!(t.task.status, TaskStatus::Assigned);
            assert_eq!(t.task.description, "a in detail");
            let events: Vec<&str> = s
                .history(&a, 0, 9)
                .unwrap()
                .iter()
                .map(|h| h.event.as_str())
                .collect();
            assert_eq!(events, ["created", "assigned"]);
        });
    }

    #[test]
    fn a_change_of_a_finished_head_keeps_its_body_and_result_and_a_retry_brings_it_back() {
        crate::store::each_engine("light", |open| {
            let mut q = QueueCore::new(QueueSettings::default());
            let s = open();
            let a = create(&mut q, "a", None, 0);
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            let assigned = q.claim(
                &[crate::domain::matching::IdleAgent::new("x", &[], 0)],
                now(1),
            );
            let r = AttemptRef::new(a.clone(), assigned[0].task.generation);
            q.accept(&r, "x", now(2));
            q.cancel(&a, "enough", now(3)).unwrap();
            let d = q.take_deltas();
            s.write_tasks(&d, &[], None).unwrap();
            q.durable(&d, now(4));
            assert!(q.needs_load(&a), "only its head is held now");
            // A late report changes the head only (a stale note in its history).
            q.complete(
                &r,
                "x",
                TaskResult {
                    summary: Some("late".into()),
                    ..Default::default()
                },
                now(5),
            );
            let d = q.take_deltas();
            assert!(!d.is_empty() && !d[0].write_body);
            s.write_tasks(&d, &[], None).unwrap();
            let t = s.task(&a).unwrap().unwrap();
            assert_eq!(t.task.description, "a in detail", "the body stays");
            assert_eq!(t.task.status, TaskStatus::Cancelled);
            assert_eq!(s.count_by_status().unwrap()[&TaskStatus::Cancelled], 1);
            // Retried: adopted whole from the store, live again.
            q.adopt(t.task, t.history_len);
            q.retry(&a, now(6)).unwrap();
            s.write_tasks(&q.take_deltas(), &[], None).unwrap();
            assert_eq!(keys(&s, "l/"), [format!("l/{a}")]);
            assert!(
                keys(&s, "t/").is_empty() && keys(&s, "s/").is_empty() && keys(&s, "f/").is_empty()
            );
            let counts = s.count_by_status().unwrap();
            assert_eq!(
                (counts[&TaskStatus::Cancelled], counts[&TaskStatus::Queued]),
                (0, 1)
            );
            let t = s.task(&a).unwrap().unwrap();
            assert_eq!(t.task.description, "a in detail");
            assert_eq!(
                s.history(&a, 0, 99).unwrap().last().unwrap().event.as_str(),
                "revived"
            );
        });
    }

    #[test]
    fn a_format_2_store_is_migrated_to_one_record_a_task() {
        let dir = tmp("format2");
        let mut q = QueueCore::new(QueueSettings::default());
        let live = create(&mut q, "live", Some("k-live"), 0);
        let done = create(&mut q, "done", None, 1);
        q.cancel(&done, "x", now(2)).unwrap();
        let history = |events: &[&str]| -> Vec<HistoryEntry> {
            events
                .iter()
                .map(|e| serde_json::from_value(serde_json::json!({"at": now(0), "event": e, "from": null, "to": "queued", "agent_id": null, "generation": 0, "detail": null})).unwrap())
                .collect()
        };
        {
            let s = crate::store::open_for_test(&dir);
            // Format 2, by hand: heads, bodies, history keys, every status.
            for (id, events) in [
                (&live, &["created"][..]),
                (&done, &["created", "cancelled"][..]),
            ] {
                let mut t = q.get(id).unwrap().clone();
                let (description, metadata) =
                    (std::mem::take(&mut t.description), t.metadata.take());
                s.tasks
                    .insert(
                        key("t/", id),
                        json(&serde_json::json!({"task": t, "history_len": events.len()})),
                    )
                    .unwrap();
                s.tasks
                    .insert(
                        key("b/", id),
                        json(
                            &serde_json::json!({"description": description, "metadata": metadata}),
                        ),
                    )
                    .unwrap();
                for (seq, h) in history(events).iter().enumerate() {
                    let mut k = key("h/", id);
                    k.push(b'/');
                    k.extend_from_slice(&(seq as u32).to_be_bytes());
                    s.tasks.insert(k, json(h)).unwrap();
                }
                s.tasks.insert(status_key(t.status, id), vec![]).unwrap();
                if let Some(at) = t.finished_at {
                    s.tasks.insert(finished_key(at, id), vec![]).unwrap();
                }
            }
            s.tasks.remove(COUNTS_KEY).unwrap();
            s.meta_put("store_format", "2").unwrap();
        }
        let s = crate::store::open_for_test(&dir);
        assert_eq!(keys(&s, "l/"), [format!("l/{live}")]);
        assert_eq!(keys(&s, "t/"), [format!("t/{done}")]);
        assert!(keys(&s, "b/").is_empty() && keys(&s, "h/").is_empty());
        assert_eq!(keys(&s, "s/"), [format!("s/cancelled/{done}")]);
        let t = s.task(&live).unwrap().unwrap();
        assert_eq!(
            (t.task.description.as_str(), t.history_len),
            ("live in detail", 1)
        );
        assert_eq!(s.history(&done, 0, 9).unwrap().len(), 2);
        let counts = s.count_by_status().unwrap();
        assert_eq!(
            (counts[&TaskStatus::Queued], counts[&TaskStatus::Cancelled]),
            (1, 1)
        );
        assert_eq!(s.meta_get("store_format").unwrap().as_deref(), Some(FORMAT));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_format_1_store_is_migrated_at_open() {
        let dir = tmp("migrate");
        let mut q = QueueCore::new(QueueSettings::default());
        let id = create(&mut q, "v1", Some("k1"), 0);
        q.cancel(&id, "x", now(3)).unwrap();
        let mut task = q.get(&id).unwrap().clone();
        task.finished_at = None; // format 1 had no such field
        {
            let s = crate::store::open_for_test(&dir);
            // Write the task the way format 1 did, and forget the format.
            s.tasks
                .insert(
                    key("t/", &id),
                    json(&serde_json::json!({ "task": task, "history_len": 2 })),
                )
                .unwrap();
            s.meta.remove("store_format").unwrap();
            s.sync().unwrap();
        }
        let s = crate::store::open_for_test(&dir);
        let t = s.task(&id).unwrap().unwrap();
        assert_eq!(t.task.description, "v1 in detail");
        assert_eq!(t.task.finished_at, Some(t.task.updated_at));
        assert_eq!(s.count_by_status().unwrap()[&TaskStatus::Cancelled], 1);
        assert_eq!(s.load_keys().unwrap()[0].id, id);
        std::fs::remove_dir_all(dir).ok();
    }
}
