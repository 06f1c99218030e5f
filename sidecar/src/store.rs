//! What the sidecar keeps on disk under `state_dir`, so that a `kill -9`
//! loses nothing:
//!
//! - `current.json`: the attempt it holds (written before `accept` is sent).
//! - `outbox/NNN-<task>-<gen>-<kind>.json`: each `complete`/`fail` until the
//!   hub's `ack` for it; resent after every reconnect, oldest first.
//! - `tasks/<task>-<gen>/`: the task file, the result file, the runner log.
//! - `sidecar.lock`: an exclusive lock, so two daemons never share a state dir.
//! - `instance_id`: this installation's random id, made once, said in
//!   every `hello` (a copy of the config with another state dir is another
//!   installation).
//!
//! Every write is atomic ([`write_atomic`]): a temp file, fsync, rename,
//! fsync of the directory. Everything is private to the sidecar's user:
//! folders 0700, files 0600, set explicitly (not left to the umask). This
//! module knows files, not the protocol's rules; the names it builds come
//! from task ids the attempt machine has validated (`validate.rs`).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agentcom_protocol::{AttemptRef, SidecarMsg, Task, Timestamp};
use atomic_write_file::AtomicWriteFile;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// The runner log's name in a task folder.
pub(crate) const RUNNER_LOG: &str = "runner.log";

/// The attempt the sidecar holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Current {
    /// Stored as `task` (the name it had before `AttemptRef`).
    #[serde(rename = "task")]
    pub(crate) attempt: AttemptRef,
    pub(crate) body: Task,
    pub(crate) accepted_at: Timestamp,
    /// Process group of the running runner, once started.
    #[serde(default)]
    pub(crate) runner_pgid: Option<i32>,
    /// The git branch prepared for it (with `[git]`), once the runner
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) branch: Option<crate::git::Prepared>,
}

/// A report waiting for the hub's `ack`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OutboxEntry {
    pub(crate) seq: u64,
    pub(crate) msg: SidecarMsg,
    path: PathBuf,
}

impl OutboxEntry {
    pub(crate) fn attempt_ref(&self) -> AttemptRef {
        self.msg.attempt_ref().expect("outbox holds reports")
    }
}

/// Why [`StateDir::open`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The dir, a folder in it or its lock cannot be created or opened
    /// (what went wrong, naming the path).
    Unusable(String),
    /// Another sidecar runs with it (its lock is taken).
    InUse(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Unusable(m) | OpenError::InUse(m) => f.write_str(m),
        }
    }
}

pub(crate) struct StateDir {
    root: PathBuf,
    next_seq: u64,
    /// Held (and released on drop) for as long as the daemon runs.
    _lock: Flock<File>,
}

impl StateDir {
    /// Open (creating) the state dir and take its lock.
    pub(crate) fn open(root: &Path) -> Result<StateDir, OpenError> {
        for d in [root.to_path_buf(), root.join("outbox"), root.join("tasks")] {
            private_dir(&d).map_err(OpenError::Unusable)?;
        }
        let lock_path = root.join("sidecar.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| {
                OpenError::Unusable(format!("cannot open {}: {e}", lock_path.display()))
            })?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|_| {
            OpenError::InUse(format!(
                "another sidecar is running with state_dir {}",
                root.display()
            ))
        })?;
        let mut s = StateDir {
            root: root.to_path_buf(),
            next_seq: 1,
            _lock: lock,
        };
        s.next_seq = s.outbox().iter().map(|e| e.seq + 1).max().unwrap_or(1);
        // Leftovers of an interrupted atomic write.
        for dir in [s.root.clone(), s.root.join("outbox")] {
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if is_temp_file(&e.file_name().to_string_lossy()) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(s)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    // ----- this installation ---------------------------------------------------------

    /// This installation's id: `instance_id` as kept, or, the first time
    /// (or if the file holds anything else), 16 random bytes in hex,
    /// written first.
    pub(crate) fn instance_id(&self) -> Result<String, String> {
        let path = self.root.join("instance_id");
        match fs::read_to_string(&path) {
            Ok(text) if is_instance_id(text.trim()) => return Ok(text.trim().to_string()),
            Ok(_) => {
                tracing::warn!(file = %path.display(), "instance_id holds no id; making a new one")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        let id: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write_atomic(&path, format!("{id}\n").as_bytes())?;
        Ok(id)
    }

    // ----- current attempt -------------------------------------------------------

    pub(crate) fn load_current(&self) -> Result<Option<Current>, String> {
        let path = self.root.join("current.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is corrupt: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub(crate) fn save_current(&self, c: &Current) -> Result<(), String> {
        write_atomic(
            &self.root.join("current.json"),
            &serde_json::to_vec_pretty(c).expect("serialises"),
        )
    }

    pub(crate) fn clear_current(&self) -> Result<(), String> {
        let path = self.root.join("current.json");
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    // ----- outbox ------------------------------------------------------------------

    /// Unacknowledged reports, oldest first.
    pub(crate) fn outbox(&self) -> Vec<OutboxEntry> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.root.join("outbox")) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.ends_with(".json") {
                continue;
            }
            let Some(seq) = name.split('-').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            match fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<SidecarMsg>(&b).ok())
            {
                Some(msg) if msg.attempt_ref().is_some() => out.push(OutboxEntry {
                    seq,
                    msg,
                    path: e.path(),
                }),
                _ => {
                    tracing::warn!(file = %e.path().display(), "ignoring an unreadable outbox entry")
                }
            }
        }
        out.sort_by_key(|e| e.seq);
        out
    }

    /// Persist a report before it is sent.
    pub(crate) fn push_outbox(&mut self, msg: SidecarMsg) -> Result<OutboxEntry, String> {
        let r = msg.attempt_ref().ok_or("only reports go to the outbox")?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.root.join("outbox").join(format!(
            "{seq:012}-{}-{}-{}.json",
            r.task_id,
            r.generation,
            msg.kind()
        ));
        write_atomic(&path, &serde_json::to_vec(&msg).expect("serialises"))?;
        Ok(OutboxEntry { seq, msg, path })
    }

    /// Put `new` in the outbox in place of `old` (the new one is written
    /// first, so a crash in between leaves both, never neither).
    pub(crate) fn replace_in_outbox(
        &mut self,
        old: &SidecarMsg,
        new: SidecarMsg,
    ) -> Result<(), String> {
        let olds: Vec<OutboxEntry> = self
            .outbox()
            .into_iter()
            .filter(|e| &e.msg == old)
            .collect();
        self.push_outbox(new)?;
        for e in &olds {
            fs::remove_file(&e.path)
                .map_err(|err| format!("cannot remove {}: {err}", e.path.display()))?;
        }
        sync_dir(&self.root.join("outbox"))
    }

    /// The hub acknowledged this report: forget it.
    pub(crate) fn ack(&self, task: &AttemptRef, kind: &str) -> Result<bool, String> {
        let mut removed = false;
        for e in self.outbox() {
            if &e.attempt_ref() == task && e.msg.kind() == kind {
                fs::remove_file(&e.path)
                    .map_err(|err| format!("cannot remove {}: {err}", e.path.display()))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.root.join("outbox"))?;
        }
        Ok(removed)
    }

    // ----- per-task files ---------------------------------------------------------------

    /// The working folder of one attempt (task file, result file, log).
    pub(crate) fn task_dir(&self, task: &AttemptRef) -> Result<PathBuf, String> {
        let d = self.task_dir_path(task);
        private_dir(&d)?;
        Ok(d)
    }

    /// The runner log of `task` (in its task folder; not created here).
    pub(crate) fn runner_log(&self, task: &AttemptRef) -> PathBuf {
        self.task_dir_path(task).join(RUNNER_LOG)
    }

    fn task_dir_path(&self, task: &AttemptRef) -> PathBuf {
        self.root
            .join("tasks")
            .join(format!("{}-{}", task.task_id, task.generation))
    }
}

/// Whether `s` is an id [`StateDir::instance_id`] makes: 32 lowercase hex
/// digits.
fn is_instance_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Create `dir` (and its parents) if need be, and make it 0700.
fn private_dir(dir: &Path) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, Permissions::from_mode(0o700)))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// An empty file at `path` that only the sidecar's user can read (0600),
/// in place of whatever was there.
pub(crate) fn fresh_private_file(path: &Path) -> Result<(), String> {
    let res = match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|f| f.set_permissions(Permissions::from_mode(0o600))),
    };
    res.map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Write a file so that after a crash it holds either the old or the new
/// content, never a mix. `AtomicWriteFile::commit` fsyncs the temp file,
/// renames it over `path` and fsyncs the directory. The file is 0600:
/// set on the temp file itself (the crate would otherwise copy the old
/// file's mode, or take 0666 less the umask).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use atomic_write_file::unix::OpenOptionsExt as _;
    let res = (|| -> std::io::Result<()> {
        let mut f = AtomicWriteFile::options()
            .preserve_mode(false)
            .mode(0o600)
            .open(path)?;
        f.as_file().set_permissions(Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.commit()
    })();
    res.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A temp file an interrupted [`write_atomic`] left: `.<name>.<random>`
/// (`AtomicWriteFile`), or `<name>.tmp` (sidecars before it).
fn is_temp_file(name: &str) -> bool {
    name.ends_with(".tmp") || (name.starts_with('.') && name.contains(".json."))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentcom_protocol::TaskResult;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "agentcom-sidecar-state-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn complete(task: &str, generation: u64) -> SidecarMsg {
        SidecarMsg::Complete {
            task_id: task.into(),
            generation,
            result: TaskResult::default(),
        }
    }

    #[test]
    fn outbox_survives_reopen_in_order_and_ack_removes() {
        let dir = tmp("outbox");
        {
            let mut s = StateDir::open(&dir).unwrap();
            s.push_outbox(complete("t1", 1)).unwrap();
            s.push_outbox(SidecarMsg::Fail {
                task_id: "t2".into(),
                generation: 3,
                error: "x".into(),
                retryable: true,
                class: Default::default(),
                retry_after_s: None,
                log_tail: None,
            })
            .unwrap();
        }
        let mut s = StateDir::open(&dir).unwrap();
        let out = s.outbox();
        assert_eq!(
            out.iter()
                .map(|e| e.attempt_ref().task_id)
                .collect::<Vec<_>>(),
            ["t1", "t2"]
        );
        let e3 = s.push_outbox(complete("t3", 1)).unwrap();
        assert!(e3.seq > out[1].seq, "sequence continues after reopen");
        assert!(
            !s.ack(&AttemptRef::new("t1", 1), "fail").unwrap(),
            "kind must match"
        );
        assert!(s.ack(&AttemptRef::new("t1", 1), "complete").unwrap());
        assert_eq!(s.outbox().len(), 2);
        drop(s);
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn writes_replace_whole_files_and_leftover_temp_files_are_removed() {
        let dir = tmp("atomic");
        let s = StateDir::open(&dir).unwrap();
        let path = dir.join("tasks").join("task.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        drop(s);
        let leftovers = [
            dir.join(".current.json.a1B2c3"),
            dir.join("current.tmp"),
            dir.join("outbox")
                .join(".000000000001-t-1-complete.json.x9Y8z7"),
        ];
        for p in &leftovers {
            fs::write(p, "half").unwrap();
        }
        let s = StateDir::open(&dir).unwrap();
        for p in &leftovers {
            assert!(!p.exists(), "{} was left", p.display());
        }
        assert!(s.outbox().is_empty());
        drop(s);
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn current_json_keeps_its_format() {
        let dir = tmp("current");
        let s = StateDir::open(&dir).unwrap();
        let body = crate::testing::task("t1", 2);
        let c = Current {
            attempt: AttemptRef::new("t1", 2),
            body,
            accepted_at: Timestamp(5),
            runner_pgid: Some(42),
            branch: None,
        };
        s.save_current(&c).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("current.json")).unwrap()).unwrap();
        assert_eq!(
            json["task"],
            serde_json::json!({"task_id": "t1", "generation": 2})
        );
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["accepted_at", "body", "runner_pgid", "task"]);
        assert_eq!(
            json["accepted_at"],
            serde_json::to_value(Timestamp(5)).unwrap()
        );
        assert_eq!(json["runner_pgid"], 42);
        assert_eq!(json["body"]["id"], "t1");
        assert_eq!(s.load_current().unwrap(), Some(c.clone()));
        // With a prepared branch, it is kept beside them.
        let c = Current {
            branch: Some(crate::git::Prepared {
                branch: "a1/t1".into(),
                base: "abc".into(),
            }),
            ..c
        };
        s.save_current(&c).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("current.json")).unwrap()).unwrap();
        assert_eq!(
            json["branch"],
            serde_json::json!({"branch": "a1/t1", "base": "abc"})
        );
        assert_eq!(s.load_current().unwrap(), Some(c));
        drop(s);
        fs::remove_dir_all(dir).ok();
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn everything_is_private_whatever_was_there() {
        let dir = tmp("modes");
        fs::create_dir_all(dir.join("outbox")).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("current.json"), "{}").unwrap();
        fs::set_permissions(dir.join("current.json"), Permissions::from_mode(0o644)).unwrap();
        let mut s = StateDir::open(&dir).unwrap();
        for d in [dir.clone(), dir.join("outbox"), dir.join("tasks")] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&dir.join("sidecar.lock")), 0o600);
        let c = Current {
            attempt: AttemptRef::new("t1", 2),
            body: crate::testing::task("t1", 2),
            accepted_at: Timestamp(5),
            runner_pgid: None,
            branch: None,
        };
        s.save_current(&c).unwrap();
        assert_eq!(
            mode(&dir.join("current.json")),
            0o600,
            "an old 0644 file is not copied"
        );
        let e = s.push_outbox(complete("t1", 2)).unwrap();
        assert_eq!(mode(&e.path), 0o600);
        let task_dir = s.task_dir(&c.attempt).unwrap();
        assert_eq!(mode(&task_dir), 0o700);
        let result = task_dir.join("result.json");
        fs::write(&result, "old").unwrap();
        fresh_private_file(&result).unwrap();
        assert_eq!(mode(&result), 0o600);
        assert_eq!(fs::read(&result).unwrap(), b"");
        drop(s);
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_report_is_replaced_new_first() {
        let dir = tmp("replace");
        let mut s = StateDir::open(&dir).unwrap();
        let old = complete("t1", 1);
        s.push_outbox(old.clone()).unwrap();
        s.push_outbox(complete("t2", 1)).unwrap();
        let new = SidecarMsg::Fail {
            task_id: "t1".into(),
            generation: 1,
            error: "too large".into(),
            retryable: false,
            class: Default::default(),
            retry_after_s: None,
            log_tail: None,
        };
        s.replace_in_outbox(&old, new.clone()).unwrap();
        let msgs: Vec<SidecarMsg> = s.outbox().into_iter().map(|e| e.msg).collect();
        assert_eq!(msgs, [complete("t2", 1), new]);
        drop(s);
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_instance_id_is_made_once_and_kept_per_state_dir() {
        let dir = tmp("instance");
        let other = tmp("instance-other");
        let s = StateDir::open(&dir).unwrap();
        let id = s.instance_id().unwrap();
        assert!(is_instance_id(&id), "{id}");
        assert_eq!(s.instance_id().unwrap(), id);
        assert_eq!(mode(&dir.join("instance_id")), 0o600);
        drop(s);
        let s = StateDir::open(&dir).unwrap();
        assert_eq!(s.instance_id().unwrap(), id, "kept across a restart");
        let o = StateDir::open(&other).unwrap();
        assert_ne!(
            o.instance_id().unwrap(),
            id,
            "another state dir, another id"
        );
        // A file that holds no id is replaced.
        fs::write(dir.join("instance_id"), "garbage").unwrap();
        let new = s.instance_id().unwrap();
        assert!(is_instance_id(&new) && new != id, "{new}");
        drop((s, o));
        fs::remove_dir_all(dir).ok();
        fs::remove_dir_all(other).ok();
    }

    #[test]
    fn one_daemon_per_state_dir() {
        let dir = tmp("lock");
        let _a = StateDir::open(&dir).unwrap();
        match StateDir::open(&dir) {
            Err(OpenError::InUse(e)) => assert!(e.contains("another sidecar"), "{e}"),
            other => panic!("{:?}", other.err()),
        }
        drop(_a);
        fs::remove_dir_all(dir).ok();
    }
}
