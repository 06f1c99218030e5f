//! The git operations against real repositories made in temp dirs.

use super::testing::{git, Fixture};
use super::*;

fn clone(f: &Fixture) -> PathBuf {
    let dir = f.clone_dir();
    ensure_clone(&f.url(), &dir).unwrap();
    dir
}

#[test]
fn ensure_clone_is_bare_idempotent_and_follows_the_url() {
    let f = Fixture::new();
    let dir = clone(&f);
    assert_eq!(git(&dir, &["rev-parse", "--is-bare-repository"]), "true");
    assert_eq!(fetched_main(&dir, "main").unwrap(), f.origin_rev("main"));
    // Again: nothing changes, nothing fails.
    ensure_clone(&f.url(), &dir).unwrap();
    // The remote moved: origin follows.
    let moved = f.tmp.path().join("moved.git");
    std::fs::rename(&f.origin, &moved).unwrap();
    assert!(fetch(&dir).is_err(), "the old url is gone");
    ensure_clone(&moved.display().to_string(), &dir).unwrap();
    assert_eq!(
        git(&dir, &["config", "--get-all", "remote.origin.fetch"]),
        "+refs/heads/*:refs/remotes/origin/*"
    );
}

#[test]
fn ls_remote_and_rev_parse() {
    let f = Fixture::new();
    let dir = clone(&f);
    let main = f.origin_rev("main");
    assert_eq!(ls_remote_head(&dir, "main").unwrap(), Some(main.clone()));
    assert_eq!(ls_remote_head(&dir, "nope").unwrap(), None);
    assert_eq!(
        rev_parse(&dir, "refs/remotes/origin/main").unwrap(),
        Some(main.clone())
    );
    assert_eq!(rev_parse(&dir, "refs/remotes/origin/nope").unwrap(), None);
    assert_eq!(rev_parse(&dir, "--all").unwrap(), None);
    assert!(has_commit(&dir, &main).unwrap());
    assert!(!has_commit(&dir, &"0".repeat(40)).unwrap());
    // A push the clone has not fetched: ls-remote sees it, the clone not yet.
    let newer = f.push_to_main(&[("README", "hello again\n")], "newer");
    assert_eq!(ls_remote_head(&dir, "main").unwrap(), Some(newer.clone()));
    assert_eq!(fetched_main(&dir, "main").unwrap(), main);
    fetch(&dir).unwrap();
    assert_eq!(fetched_main(&dir, "main").unwrap(), newer);
}

#[test]
fn inspect_counts_lines_binary_files_and_renames_against_the_merge_base() {
    let f = Fixture::new();
    f.commit(
        &[
            ("src/lib.rs", "one\ntwo\nthree\nfour\n"),
            ("old_name.txt", "a\nb\nc\nd\ne\n"),
        ],
        "more files",
    );
    f.push("main");
    let dir = clone(&f);
    f.git(&["fetch", "--quiet", "origin"]);
    f.checkout("agent1/t1", Some("origin/main"));
    let base = f.git(&["rev-parse", "HEAD"]);
    // src/lib.rs: 2 added, 1 removed; a binary file; a rename with one line changed.
    f.git(&["mv", "old_name.txt", "new_name.txt"]);
    let head = f.commit_bytes(
        &[
            ("src/lib.rs", Some(b"one\nTWO\nthree\nfour\nfive\n")),
            ("logo.bin", Some(&[0u8, 1, 2, 0, 255, 0, 7][..])),
            ("new_name.txt", Some(b"a\nb\nc\nd\ne\nf\n")),
        ],
        "work",
    );
    f.push("agent1/t1");
    // Main gains a commit of its own since base: it does not count.
    f.push_to_main(&[("unrelated.txt", "1\n2\n3\n")], "meanwhile on main");

    let stat = inspect(&dir, "main", "agent1/t1", &base, &head)
        .unwrap()
        .unwrap();
    assert_eq!(
        stat.files,
        vec!["logo.bin", "old_name.txt", "new_name.txt", "src/lib.rs"]
    );
    assert_eq!((stat.lines_added, stat.lines_removed), (2 + 1, 1));
}

#[test]
fn inspect_refuses_a_branch_that_moved_or_is_gone() {
    let f = Fixture::new();
    let dir = clone(&f);
    let (base, head) = f.agent_branch("agent1/t1", &[("a.txt", "a\n")]);
    // Moved: the agent pushed another commit after reporting `head`.
    f.commit(&[("a.txt", "b\n")], "later");
    f.push("agent1/t1");
    let err = inspect(&dir, "main", "agent1/t1", &base, &head)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("moved"), "{err}");
    // Gone.
    f.git(&["push", "--quiet", "origin", "--delete", "agent1/t1"]);
    let err = inspect(&dir, "main", "agent1/t1", &base, &head)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("gone"), "{err}");
    // Not a branch name or commit id at all.
    let err = inspect(&dir, "main", "-x", &base, &head)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("not a branch"), "{err}");
    let err = inspect(&dir, "main", "agent1/t1", "HEAD", &head)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("not a commit id"), "{err}");
}

#[test]
fn inspect_refuses_a_base_not_on_main() {
    let f = Fixture::new();
    let dir = clone(&f);
    // The agent branched from a commit that never reached main.
    f.checkout("side", Some("main"));
    let off_main = f.commit(&[("side.txt", "side\n")], "side");
    f.push("side");
    f.checkout("agent1/t1", Some("side"));
    let head = f.commit(&[("a.txt", "a\n")], "work");
    f.push("agent1/t1");
    let err = inspect(&dir, "main", "agent1/t1", &off_main, &head)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("not on main"), "{err}");
    // A base the repository has never seen.
    let err = inspect(&dir, "main", "agent1/t1", &"1".repeat(40), &head)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("not on main"), "{err}");
}

#[test]
fn merge_clean_makes_a_merge_commit_and_a_conflict_names_the_paths() {
    let f = Fixture::new();
    f.commit(&[("shared.txt", "1\n2\n3\n")], "shared");
    f.push("main");
    let dir = clone(&f);
    let (_, a) = f.agent_branch("agent1/a", &[("shared.txt", "1\nA\n3\n"), ("a.txt", "a\n")]);
    let (_, b) = f.agent_branch("agent2/b", &[("shared.txt", "1\nB\n3\n")]);
    fetch(&dir).unwrap();
    let main = fetched_main(&dir, "main").unwrap();

    let MergeResult::Clean { sha, onto } = merge(&dir, &main, &a, "Merge a").unwrap() else {
        panic!("a merges cleanly");
    };
    assert_eq!(onto, main);
    let parents = git(&dir, &["rev-list", "--parents", "-n1", &sha]);
    assert_eq!(parents, format!("{sha} {main} {a}"));
    assert_eq!(
        git(&dir, &["log", "-1", "--format=%an <%ae>|%s", &sha]),
        "AgentCom <agentcom@localhost>|Merge a"
    );
    assert_eq!(
        git(&dir, &["show", &format!("{sha}:shared.txt")]),
        "1\nA\n3"
    );
    // Nothing moved on the remote.
    assert_eq!(f.origin_rev("main"), main);

    // a lands on main; b edits the same line.
    assert_eq!(
        push_main(&dir, "main", &sha, &main).unwrap(),
        PushResult::Pushed
    );
    assert_eq!(
        merge(&dir, &sha, &b, "Merge b").unwrap(),
        MergeResult::Conflict {
            paths: vec!["shared.txt".to_string()]
        }
    );
}

#[test]
fn is_merged_finds_the_merge_commit_a_fast_forward_or_a_later_merge() {
    let f = Fixture::new();
    let dir = clone(&f);
    let (_, head) = f.agent_branch("agent1/t1", &[("a.txt", "a\n")]);
    fetch(&dir).unwrap();
    assert_eq!(is_merged(&dir, "main", &head).unwrap(), None);
    let main = fetched_main(&dir, "main").unwrap();
    let MergeResult::Clean { sha, .. } = merge(&dir, &main, &head, "Merge t1").unwrap() else {
        panic!("clean")
    };
    push_main(&dir, "main", &sha, &main).unwrap();
    // Main moves on after the merge.
    f.push_to_main(&[("later.txt", "x\n")], "later");
    fetch(&dir).unwrap();
    assert_eq!(is_merged(&dir, "main", &head).unwrap(), Some(sha));

    // Fast-forwarded by a person: head itself is on main.
    let (_, ff) = f.agent_branch("agent1/t2", &[("b.txt", "b\n")]);
    f.git(&[
        "push",
        "--quiet",
        "origin",
        &format!("{ff}:refs/heads/main"),
    ]);
    f.push_to_main(&[("after-ff.txt", "x\n")], "after ff");
    fetch(&dir).unwrap();
    assert_eq!(is_merged(&dir, "main", &ff).unwrap(), Some(ff.clone()));

    // Merged by way of another branch: the first main commit holding it.
    let (_, inner) = f.agent_branch("agent1/t3", &[("c.txt", "c\n")]);
    f.checkout("carrier", Some("origin/main"));
    f.git(&["merge", "--quiet", "--no-ff", "-m", "carry t3", &inner]);
    let carrier = f.commit(&[("d.txt", "d\n")], "carrier work");
    f.git(&["fetch", "--quiet", "origin"]);
    f.checkout("main", Some("origin/main"));
    f.commit(&[("e.txt", "e\n")], "main before carrier");
    f.git(&[
        "merge",
        "--quiet",
        "--no-ff",
        "-m",
        "land carrier",
        &carrier,
    ]);
    let landed = f.git(&["rev-parse", "HEAD"]);
    f.push("main");
    f.push_to_main(&[("f.txt", "f\n")], "after carrier");
    fetch(&dir).unwrap();
    assert_eq!(is_merged(&dir, "main", &inner).unwrap(), Some(landed));
}

#[test]
fn push_main_is_refused_when_main_moved() {
    let f = Fixture::new();
    let dir = clone(&f);
    let (_, head) = f.agent_branch("agent1/t1", &[("a.txt", "a\n")]);
    fetch(&dir).unwrap();
    let main = fetched_main(&dir, "main").unwrap();
    let MergeResult::Clean { sha, .. } = merge(&dir, &main, &head, "Merge t1").unwrap() else {
        panic!("clean")
    };
    // Someone pushes to main after the hub fetched, before it pushes.
    let theirs = f.push_to_main(&[("theirs.txt", "x\n")], "theirs");
    assert_eq!(
        push_main(&dir, "main", &sha, &main).unwrap(),
        PushResult::MainMoved
    );
    assert_eq!(f.origin_rev("main"), theirs);
    // Fetched, so the clone knows the commit: still refused, never forced.
    fetch(&dir).unwrap();
    assert_eq!(
        push_main(&dir, "main", &sha, &main).unwrap(),
        PushResult::MainMoved
    );
    assert_eq!(f.origin_rev("main"), theirs);
    // Redone on the new main, it goes through.
    let MergeResult::Clean { sha, onto } = merge(&dir, &theirs, &head, "Merge t1").unwrap() else {
        panic!("clean")
    };
    assert_eq!(onto, theirs);
    assert_eq!(
        push_main(&dir, "main", &sha, &onto).unwrap(),
        PushResult::Pushed
    );
    assert_eq!(f.origin_rev("main"), sha);
    // Pushing what main already is, is done.
    assert_eq!(
        push_main(&dir, "main", &sha, &onto).unwrap(),
        PushResult::Pushed
    );
}

#[test]
fn a_refused_push_that_is_not_main_moving_is_an_error() {
    let f = Fixture::new();
    let dir = clone(&f);
    let (_, head) = f.agent_branch("agent1/t1", &[("a.txt", "a\n")]);
    fetch(&dir).unwrap();
    let main = fetched_main(&dir, "main").unwrap();
    let MergeResult::Clean { sha, .. } = merge(&dir, &main, &head, "Merge").unwrap() else {
        panic!("clean")
    };
    let hook = f.origin.join("hooks").join("pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho no pushes today >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = push_main(&dir, "main", &sha, &main).unwrap_err();
    assert!(err.to_string().contains("no pushes today"), "{err}");
}

#[test]
fn a_scratch_checkout_holds_the_commit_and_goes_away() {
    let f = Fixture::new();
    let dir = clone(&f);
    let main = fetched_main(&dir, "main").unwrap();
    let scratch = checkout_scratch(&dir, &main).unwrap();
    let path = scratch.path().to_path_buf();
    assert_eq!(
        std::fs::read_to_string(path.join("status.txt")).unwrap(),
        "ok\n"
    );
    assert_eq!(git(&path, &["rev-parse", "HEAD"]), main);
    assert!(path.starts_with(dir.parent().unwrap()));
    std::fs::write(path.join("junk"), "left by a check").unwrap();
    drop(scratch);
    assert!(!path.exists());
    assert_eq!(git(&dir, &["worktree", "list"]).lines().count(), 1);
}

#[test]
fn scratch_left_by_a_killed_hub_is_cleaned() {
    let f = Fixture::new();
    let dir = clone(&f);
    let main = fetched_main(&dir, "main").unwrap();
    let scratch = checkout_scratch(&dir, &main).unwrap();
    let path = scratch.path().to_path_buf();
    std::mem::forget(scratch);
    clean_scratch(&dir).unwrap();
    assert!(!path.exists());
    assert_eq!(git(&dir, &["worktree", "list"]).lines().count(), 1);
}

#[test]
fn numstat_parsing() {
    let stat = parse_numstat("3\t1\ta b.txt\0-\t-\tlogo.png\x000\t0\t\0old\0new\0");
    assert_eq!(stat.files, vec!["a b.txt", "logo.png", "old", "new"]);
    assert_eq!((stat.lines_added, stat.lines_removed), (3, 1));
    assert_eq!(parse_numstat("").files, Vec::<String>::new());
}

#[test]
fn urls() {
    assert_eq!(absolute_url("/srv/git/app.git"), "/srv/git/app.git");
    assert_eq!(absolute_url("https://x/app.git"), "https://x/app.git");
    assert_eq!(absolute_url("git@host:app.git"), "git@host:app.git");
    assert!(Path::new(&absolute_url("repos/app.git")).is_absolute());
    assert!(is_sha(&"a".repeat(40)));
    assert!(!is_sha(&"A".repeat(40)));
    assert!(!is_sha("HEAD"));
}
