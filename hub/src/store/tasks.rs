//! Tasks in the store: how they are laid out in the `tasks` tree, written
//! (one atomic batch per group commit), read back, and deleted by
//! retention.
//!
//! Keys (ids are ULIDs, so ids sort by creation time):
//! - `t/<id>` → the head: the task without description, metadata and
//!   result, and its history length. Small; rewritten at every change.
//! - `b/<id>` → the body: description and metadata, written at create.
//! - `r/<id>` → the result, written at completion.
//!   A body or result over [`INLINE_MAX`] bytes lives in a file of its own,
//!   `<data_dir>/values/<xx>/<id>.body|.result`, and its key holds only
//!   [`IN_FILE`]: sled keeps recent values in memory, so large ones are
//!   kept out of it. A group's value files are made durable (`syncfs`)
//!   before its records are written; files left by a group that never
//!   became durable are removed at start.
//! - `h/<id>/<seq: u32 BE>` → one history entry.
//! - `s/<status>/<id>` → (empty): tasks by status.
//! - `f/<finished_at ms: i64 BE>/<id>` → (empty): finished tasks by when
//!   they finished, for retention.
//! - `k/<idempotency key>` → the id and spec digest of the task it created.
//!
//! Everything of one group (heads, bodies, results, history, indexes, and
//! a retention purge) goes in one `sled::Batch`, so a crash never leaves a
//! head without its indexes. This module knows the layout, never the rules.

use std::collections::{BTreeMap, BTreeSet};

use agentcom_protocol::{HistoryEntry, Task, TaskResult, TaskStatus, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::changes::ChangeDelta;
use crate::domain::queue::{spec_digest, StoredKey, TaskDelta};
use crate::store::{decode, Store, StoreError};

/// The store format this code writes; older ones are migrated at open.
const FORMAT: &str = "2";

/// Bodies and results larger than this go to a file of their own.
pub(crate) const INLINE_MAX: usize = 4 * 1024;
/// The value of a `b/` or `r/` key whose value is in a file.
const IN_FILE: &[u8] = b"@file";

/// A head as stored.
#[derive(Serialize, Deserialize)]
struct Head {
    task: Task,
    history_len: u32,
}

/// A body as stored.
#[derive(Serialize, Deserialize)]
struct Body {
    description: String,
    metadata: Option<Map<String, Value>>,
}

/// An idempotency key as stored.
#[derive(Serialize, Deserialize)]
struct KeyRecord {
    id: String,
    digest: String,
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

fn history_key(id: &str, seq: u32) -> Vec<u8> {
    let mut k = key("h/", id);
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
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

/// The head of a task: the task without its heavy fields.
fn head_of(task: &Task, history_len: u32) -> Head {
    let mut t = task.clone();
    t.description = String::new();
    t.metadata = None;
    t.result = None;
    t.history = None;
    Head {
        task: t,
        history_len,
    }
}

/// What a value file holds.
#[derive(Clone, Copy)]
enum Part {
    Body,
    Result,
}

impl Part {
    fn prefix(self) -> &'static str {
        match self {
            Part::Body => "b/",
            Part::Result => "r/",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Part::Body => "body",
            Part::Result => "result",
        }
    }
}

impl Store {
    fn value_file(&self, part: Part, id: &str) -> std::path::PathBuf {
        // Fan out by the end of the id (a ULID's random part).
        let fan = &id[id.len().saturating_sub(2)..];
        self.files
            .join(fan)
            .join(format!("{id}.{}", part.extension()))
    }

    /// Stage one body or result: inline when small, else in its own file
    /// (written now, made durable by the caller before the batch).
    fn stage_value(
        &self,
        batch: &mut sled::Batch,
        part: Part,
        id: &str,
        bytes: Vec<u8>,
        files: &mut usize,
    ) -> Result<(), StoreError> {
        if bytes.len() <= INLINE_MAX {
            batch.insert(key(part.prefix(), id), bytes);
            return Ok(());
        }
        let path = self.value_file(part, id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, &bytes)?;
        *files += 1;
        batch.insert(key(part.prefix(), id), IN_FILE);
        Ok(())
    }

    /// A body or result as stored, inline or from its file.
    fn read_value(&self, part: Part, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(part.prefix(), id);
        let Some(v) = self.tasks.get(&k)? else {
            return Ok(None);
        };
        if &v[..] != IN_FILE {
            return Ok(Some(v.to_vec()));
        }
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
        for id in ids {
            for part in [Part::Body, Part::Result] {
                let _ = std::fs::remove_file(self.value_file(part, id));
            }
        }
    }

    /// Value files whose key is not in the store (a group that never became
    /// durable wrote them) are removed; run at open.
    pub(crate) fn remove_orphan_files(&self) -> Result<(), StoreError> {
        let Ok(fans) = std::fs::read_dir(&*self.files) else {
            return Ok(());
        };
        let mut removed = 0usize;
        for fan in fans.flatten() {
            for f in std::fs::read_dir(fan.path())?.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some((id, ext)) = name.rsplit_once('.') else {
                    continue;
                };
                let part = match ext {
                    "body" => Part::Body,
                    "result" => Part::Result,
                    _ => continue,
                };
                let referenced = self
                    .tasks
                    .get(key(part.prefix(), id))?
                    .is_some_and(|v| &v[..] == IN_FILE);
                if !referenced {
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
        let mut batch = sled::Batch::default();
        let mut files = 0;
        self.stage_changes(&mut batch, change_deltas);
        for c in deltas {
            let t = &c.task;
            batch.insert(key("t/", &t.id), json(&head_of(t, c.history_len)));
            if c.write_body {
                let body = json(&Body {
                    description: t.description.clone(),
                    metadata: t.metadata.clone(),
                });
                self.stage_value(&mut batch, Part::Body, &t.id, body, &mut files)?;
            }
            if c.write_result {
                if let Some(r) = &t.result {
                    self.stage_value(&mut batch, Part::Result, &t.id, json(r), &mut files)?;
                }
            }
            for (seq, entry) in &c.new_history {
                batch.insert(history_key(&t.id, *seq), json(entry));
            }
            if c.previous_status != Some(t.status) {
                if let Some(prev) = c.previous_status {
                    batch.remove(status_key(prev, &t.id));
                }
                batch.insert(status_key(t.status, &t.id), vec![]);
            }
            if c.previous_finished_at != t.finished_at {
                if let Some(prev) = c.previous_finished_at {
                    batch.remove(finished_key(prev, &t.id));
                }
                if let Some(at) = t.finished_at {
                    batch.insert(finished_key(at, &t.id), vec![]);
                }
            }
            if let Some(k) = &c.write_key {
                batch.insert(
                    key("k/", k),
                    json(&KeyRecord {
                        id: t.id.clone(),
                        digest: spec_digest(t),
                    }),
                );
            }
        }
        let purged = match purge {
            Some(p) => self.stage_purge(p, &mut batch)?,
            None => vec![],
        };
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

    fn stage_purge(&self, p: &Purge, batch: &mut sled::Batch) -> Result<Vec<Purged>, StoreError> {
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
            let Some(head) = self.head(&id)? else {
                continue;
            };
            let t = &head.task;
            for seq in 0..head.history_len {
                batch.remove(history_key(&id, seq));
            }
            for prefix in ["t/", "b/", "r/"] {
                batch.remove(key(prefix, &id));
            }
            batch.remove(status_key(t.status, &id));
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

    fn head(&self, id: &str) -> Result<Option<Head>, StoreError> {
        let k = key("t/", id);
        match self.tasks.get(&k)? {
            Some(v) => decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Fill in the heavy fields `fields` asks for.
    fn complete(&self, head: Head, fields: Fields) -> Result<StoredTask, StoreError> {
        let mut task = head.task;
        if fields.description_and_metadata {
            if let Some(v) = self.read_value(Part::Body, &task.id)? {
                let body: Body = decode(&key("b/", &task.id), &v)?;
                task.description = body.description;
                task.metadata = body.metadata;
            }
        }
        if fields.result {
            if let Some(v) = self.read_value(Part::Result, &task.id)? {
                task.result = Some(decode::<TaskResult>(&key("r/", &task.id), &v)?);
            }
        }
        Ok(StoredTask {
            task,
            history_len: head.history_len,
        })
    }

    /// One task, whole.
    pub(crate) fn task(&self, id: &str) -> Result<Option<StoredTask>, StoreError> {
        match self.head(id)? {
            Some(h) => self.complete(h, Fields::ALL).map(Some),
            None => Ok(None),
        }
    }

    /// The live tasks (queued, assigned, working, failed), whole, to
    /// rebuild the queue at start.
    pub(crate) fn load_live(&self) -> Result<Vec<StoredTask>, StoreError> {
        let mut out = Vec::new();
        for status in TaskStatus::ALL.into_iter().filter(|s| !s.is_terminal()) {
            for kv in self.tasks.scan_prefix(status_prefix(status)) {
                let (k, _) = kv?;
                let id = String::from_utf8_lossy(&k[status_prefix(status).len()..]).into_owned();
                if let Some(h) = self.head(&id)? {
                    out.push(self.complete(h, Fields::ALL)?);
                }
            }
        }
        Ok(out)
    }

    /// Every stored idempotency key, with when its task finished.
    pub(crate) fn load_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tasks.scan_prefix(b"k/") {
            let (k, v) = kv?;
            let rec: KeyRecord = decode(&k, &v)?;
            let finished_at = self.head(&rec.id)?.and_then(|h| h.task.finished_at);
            out.push(StoredKey {
                key: String::from_utf8_lossy(&k[2..]).into_owned(),
                id: rec.id,
                digest: rec.digest,
                finished_at,
            });
        }
        Ok(out)
    }

    /// How many tasks are in each status.
    pub(crate) fn count_by_status(&self) -> Result<BTreeMap<TaskStatus, usize>, StoreError> {
        let mut out = BTreeMap::new();
        for status in TaskStatus::ALL {
            let mut n = 0;
            for kv in self.tasks.scan_prefix(status_prefix(status)) {
                kv?;
                n += 1;
            }
            out.insert(status, n);
        }
        Ok(out)
    }

    /// A page of tasks, newest first, after `cursor` (an id), of one
    /// status or all. `more` says whether another page follows.
    pub(crate) fn page(
        &self,
        status: Option<TaskStatus>,
        cursor: Option<&str>,
        limit: usize,
        fields: Fields,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Result<(Vec<StoredTask>, bool), StoreError> {
        let prefix = match status {
            Some(s) => status_prefix(s),
            None => b"t/".to_vec(),
        };
        let end = match cursor {
            Some(c) => {
                let mut k = prefix.clone();
                k.extend_from_slice(c.as_bytes());
                k
            }
            None => {
                let mut k = prefix.clone();
                k.push(0xff);
                k
            }
        };
        let mut out = Vec::new();
        for kv in self.tasks.range(prefix.clone()..end).rev() {
            let (k, _) = kv?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if !wanted(&id) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            if let Some(h) = self.head(&id)? {
                out.push(self.complete(h, fields)?);
            }
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
        let mut out = Vec::new();
        for kv in self.tasks.range(history_key(id, from)..history_key(id, to)) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Bring a store written by an older version to this format, in place
    /// and durably, before anything else reads it. Format 1 kept each task
    /// whole in `t/<id>`, with no body, result or index keys.
    pub(crate) fn migrate(&self) -> Result<(), StoreError> {
        if self.meta_get("store_format")?.as_deref() == Some(FORMAT) {
            return Ok(());
        }
        let mut migrated = 0usize;
        let mut files = 0;
        let mut batch = sled::Batch::default();
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
            batch.insert(key("t/", &t.id), json(&head_of(&t, old.history_len)));
            let body = json(&Body {
                description: t.description.clone(),
                metadata: t.metadata.clone(),
            });
            self.stage_value(&mut batch, Part::Body, &t.id, body, &mut files)?;
            if let Some(r) = &t.result {
                self.stage_value(&mut batch, Part::Result, &t.id, json(r), &mut files)?;
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
            migrated += 1;
        }
        if files > 0 {
            self.sync_files()?;
        }
        self.tasks.apply_batch(batch)?;
        // meta_put syncs: the migrated records are durable with the format.
        self.meta_put("store_format", FORMAT)?;
        if migrated > 0 {
            tracing::info!(tasks = migrated, format = FORMAT, "store migrated");
        }
        Ok(())
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
        let dir = tmp("roundtrip");
        let mut q = QueueCore::new(QueueSettings::default());
        let a = create(&mut q, "a", Some("key-a"), 0);
        let b = create(&mut q, "b", None, 1);
        q.cancel(&b, "test", now(5)).unwrap();
        let s = crate::store::open_for_test(&dir);
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

        let s = crate::store::open_for_test(&dir);
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
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn retention_deletes_finished_tasks_everywhere_but_those_held() {
        let dir = tmp("purge");
        let mut q = QueueCore::new(QueueSettings::default());
        let old = create(&mut q, "old", Some("k-old"), 0);
        let held = create(&mut q, "held", None, 1);
        let live = create(&mut q, "live", None, 2);
        q.cancel(&old, "x", now(10)).unwrap();
        q.cancel(&held, "x", now(10)).unwrap();
        let s = crate::store::open_for_test(&dir);
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
        std::fs::remove_dir_all(dir).ok();
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
            std::fs::read_dir(&*s.files)
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
                    json(&Head {
                        task,
                        history_len: 2,
                    }),
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
