//! The README as a path a person walks: every `sh` block between its
//! `<!-- walk: begin … -->` and `<!-- walk: end -->` markers, run in
//! order by one bash, as written, from the root of the repository, with
//! a scratch HOME and TMPDIR. So the README cannot drift from what the
//! binaries do.
//!
//! Two changes only, both about the build: the line that runs `cargo
//! build --release` is left out (the suite built the binaries already),
//! and `target/release` is the profile the suite built. The walk uses
//! the hub's default address, 127.0.0.1:4000, as a person would: the test
//! says so plainly when that port is taken. At the end it prints how long
//! each block took (the fresh-clone timeline).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentcom_tests::procs::bin;

/// The `sh` blocks of the README's walk, in order.
fn walk_blocks(readme: &str) -> Vec<String> {
    let begin = readme
        .find("<!-- walk: begin")
        .expect("the README marks its walk with <!-- walk: begin -->");
    let end = readme[begin..]
        .find("<!-- walk: end -->")
        .map(|e| begin + e)
        .expect("the README ends its walk with <!-- walk: end -->");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[begin..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an sh block of the walk is not closed");
    blocks
}

#[test]
fn the_readme_walk_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = walk_blocks(&readme);
    assert!(blocks.len() >= 6, "the walk has {} blocks", blocks.len());
    assert!(
        std::net::TcpListener::bind("127.0.0.1:4000").is_ok(),
        "the README's walk runs a hub on its default address 127.0.0.1:4000, which is taken: stop what listens there"
    );
    let profile = bin("agentcom-hub").parent().unwrap().to_path_buf();
    let profile = profile
        .strip_prefix(root)
        .unwrap_or(&profile)
        .display()
        .to_string();

    let mut script = String::from("set -euo pipefail\n");
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&format!("echo \"::block {i} $(date +%s%N)\"\n"));
        for line in block.lines() {
            if line.trim_start().starts_with("cargo build") {
                continue;
            }
            script.push_str(&line.replace("target/release", &profile));
            script.push('\n');
        }
    }
    script.push_str("echo \"::end $(date +%s%N)\"\n");

    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path();
    let log = home.join("walk.log");
    let out = std::fs::File::create(&log).unwrap();
    let started = Instant::now();
    let mut child = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script])
        .current_dir(root)
        .env("HOME", home)
        .env("TMPDIR", home)
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .env_remove("AGENTCOM_HUB_URL")
        .env_remove("AGENTCOM_DATA_DIR")
        .env_remove("AGENTCOM_SIDECAR_CONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("bash");
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(240) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the walk left running (it stops its own on success).
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::SIGKILL);
    let _ = child.wait();
    let mut said = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    eprintln!("{said}");
    let status = status.unwrap_or_else(|| panic!("the walk did not end within 240 s:\n{said}"));
    assert!(status.success(), "the walk failed ({status}):\n{said}");

    // What a person would have seen.
    assert!(
        said.contains("dashboard: http://127.0.0.1:4000/dashboard"),
        "{said}"
    );
    assert!(
        said.contains("ready: agent loash is connected and verified"),
        "{said}"
    );
    let ended = said
        .lines()
        .find(|l| l.contains(" completed by loash"))
        .unwrap_or_else(|| panic!("no task completed:\n{said}"));
    let task = ended.split_whitespace().next().unwrap();
    assert!(
        said.contains(&format!("Task {task}")),
        "task show printed nothing:\n{said}"
    );
    assert!(
        said.contains("Add a line to the log"),
        "main has not the runner's commit:\n{said}"
    );

    // The timeline.
    let marks: Vec<(String, u128)> = said
        .lines()
        .filter_map(|l| l.strip_prefix("::"))
        .filter_map(|l| {
            let (what, ns) = l.rsplit_once(' ')?;
            Some((what.to_string(), ns.parse().ok()?))
        })
        .collect();
    eprintln!("the README walk, block by block (after the build):");
    for w in marks.windows(2) {
        let first = blocks[w[0]
            .0
            .trim_start_matches("block ")
            .parse::<usize>()
            .unwrap()]
        .lines()
        .find(|l| !l.starts_with("cargo build"))
        .unwrap_or("")
        .to_string();
        eprintln!(
            "  {:>7.2} s  {}",
            (w[1].1 - w[0].1) as f64 / 1e9,
            first.chars().take(70).collect::<String>()
        );
    }
    eprintln!(
        "  {:>7.2} s  in all",
        (marks.last().unwrap().1 - marks[0].1) as f64 / 1e9
    );
}

#[test]
fn the_walk_is_found_in_its_markers() {
    let blocks = walk_blocks(
        "intro\n```sh\nnot this\n```\n<!-- walk: begin -->\n```sh\na\nb\n```\ntext\n```toml\nno\n```\n```sh\nc\n```\n<!-- walk: end -->\n```sh\nnor this\n```\n",
    );
    assert_eq!(blocks, ["a\nb\n", "c\n"]);
}
