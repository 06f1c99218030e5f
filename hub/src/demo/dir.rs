//! The demo's directory: made fresh at every start, and only ever
//! deleted when it carries the demo's own marker file (`.agentcom-demo`,
//! its first line the demo's). An empty or missing directory is taken; a
//! non-empty one without the marker is refused with a clear error, so a
//! user's data is never deleted. The marker is locked (`flock`) while the
//! demo runs, so a second demo never wipes a running one. This module
//! must never delete anything else, nor follow a symbolic link to do so.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The marker's name in the demo directory.
pub(super) const MARKER: &str = ".agentcom-demo";

/// Its first line, which proves the directory is the demo's.
const MARKER_LINE: &str = "agentcom-hub demo: this directory is the demo's own.";

/// The demo's directory, fresh, with its marker held locked.
pub(super) struct DemoDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl DemoDir {
    /// Make `path` the demo's fresh directory: created when missing, taken
    /// when empty, emptied when it is an earlier demo's, refused otherwise.
    pub(super) fn prepare(path: &Path) -> Result<DemoDir, String> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot look at {shown}: {e}")),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{shown} is a symbolic link; give the demo a real directory with --data-dir"
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "{shown} is not a directory; choose another --data-dir"
                ))
            }
            Ok(_) => {
                let mut entries =
                    std::fs::read_dir(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
                if entries.next().is_some() {
                    if !is_marked(path) {
                        return Err(format!(
                            "{shown} is not empty and was not made by `agentcom-hub demo` (it has no {MARKER}); \
                             the demo never deletes what it did not make: choose another --data-dir, or empty it yourself"
                        ));
                    }
                    // An earlier demo's: locked while it runs.
                    let _earlier = lock(&path.join(MARKER)).map_err(|_| {
                        format!(
                            "another `agentcom-hub demo` is running with its data in {shown}: stop it first (Ctrl-C in its terminal)"
                        )
                    })?;
                    std::fs::remove_dir_all(path)
                        .map_err(|e| format!("cannot remove the earlier demo in {shown}: {e}"))?;
                }
            }
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {shown}: {e}")),
        }
        let marker = path.join(MARKER);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
        writeln!(
            f,
            "{MARKER_LINE}\nEvery `agentcom-hub demo` with this data dir deletes it and starts afresh."
        )
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
        drop(f);
        let lock = lock(&marker).map_err(|e| {
            format!("another `agentcom-hub demo` took {shown} meanwhile ({e}); stop it first")
        })?;
        Ok(DemoDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// Does `dir` carry the demo's marker (a plain file, the demo's line first)?
fn is_marked(dir: &Path) -> bool {
    let marker = dir.join(MARKER);
    let is_file = std::fs::symlink_metadata(&marker).is_ok_and(|m| m.is_file());
    is_file
        && std::fs::read_to_string(&marker)
            .is_ok_and(|text| text.lines().next() == Some(MARKER_LINE))
}

/// Lock `file` for this process, or fail at once if another holds it.
fn lock(file: &Path) -> Result<Flock<File>, String> {
    let f = File::open(file).map_err(|e| e.to_string())?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_directory_is_taken_and_marked() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("data").join("demo");
        let d = DemoDir::prepare(&missing).unwrap();
        assert!(is_marked(d.path()));
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let d = DemoDir::prepare(&empty).unwrap();
        assert!(is_marked(d.path()));
    }

    #[test]
    fn an_earlier_demo_is_removed_but_a_running_one_is_not() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("demo");
        let running = DemoDir::prepare(&dir).unwrap();
        std::fs::write(dir.join("leftover"), "x").unwrap();
        let err = DemoDir::prepare(&dir).err().unwrap();
        assert!(
            err.contains("another `agentcom-hub demo` is running"),
            "{err}"
        );
        assert!(dir.join("leftover").exists());
        drop(running);
        let fresh = DemoDir::prepare(&dir).unwrap();
        assert!(!dir.join("leftover").exists(), "started afresh");
        assert!(is_marked(fresh.path()));
    }

    #[test]
    fn a_directory_the_demo_did_not_make_is_refused_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mine");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("precious.txt"), "keep me").unwrap();
        let err = DemoDir::prepare(&dir).err().unwrap();
        assert!(
            err.contains("is not empty and was not made by `agentcom-hub demo`"),
            "{err}"
        );
        // A marker with other words is not the demo's either.
        std::fs::write(dir.join(MARKER), "something else\n").unwrap();
        assert!(DemoDir::prepare(&dir).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.join("precious.txt")).unwrap(),
            "keep me"
        );
        // Nor is a symbolic link, or a file.
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(DemoDir::prepare(&link)
            .err()
            .unwrap()
            .contains("symbolic link"));
        assert!(DemoDir::prepare(&dir.join("precious.txt"))
            .err()
            .unwrap()
            .contains("not a directory"));
    }
}
