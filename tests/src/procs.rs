//! Processes: the binaries under test (built once per test binary), free
//! ports, child processes that die with the test, `sh` scripts, and the
//! CPU time a process has used (for the benchmark programs).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Once;
use std::time::Duration;

static BUILD: Once = Once::new();

/// The target directory the test binary runs from (target/debug or target/release).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests: target/<profile>/deps/<test>-<hash>; binaries: target/<profile>/<bin>.
    let dir = exe.parent().expect("a directory");
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    dir.to_path_buf()
}

/// Path of a workspace binary, built (once) so it is never stale.
pub fn bin(name: &str) -> PathBuf {
    BUILD.call_once(|| {
        if std::env::var_os("AGENTCOM_SKIP_BUILD").is_some() {
            return;
        }
        let dir = profile_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "agentcom-hub",
            "-p",
            "agentcom-sidecar",
        ]);
        if release {
            cmd.arg("--release");
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "building the binaries failed");
    });
    let p = profile_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing; run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Run `script` with `sh -c` in `dir`; it must succeed. Its stdout,
/// trimmed.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `kill -9`, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; wait for the exit code (None if it had to be killed).
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        // Our own child, not yet reaped: the pid is still its.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// CPU seconds (user and system, all threads) a process has used, from
/// /proc (which counts in USER_HZ, fixed at 100 for user space).
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime are fields 14 and 15, after the ")" that ends the
    // command name.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
