//! Every way a person can start the binaries wrong: bad flags, settings,
//! files and addresses. Each must end with one clear `error:` naming the
//! fix (or clap's usage error for a flag it does not know) — never a
//! panic or a backtrace — and a hub that refused to start must have
//! written nothing: no data dir, no admin token.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use agentcom_tests::procs::bin;

/// Run `program args` with `env` in `dir`, with no AGENTCOM_* from the
/// test's own environment.
fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin(program));
    c.current_dir(dir).args(args).env("RUST_BACKTRACE", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("AGENTCOM_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the binary runs")
}

/// It failed with one clear error containing `said`, and did not panic.
fn refused(what: &str, out: &Output, said: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what}: it succeeded\n{stderr}");
    for sign in ["panicked", "stack backtrace", "RUST_BACKTRACE", "thread '"] {
        assert!(!stderr.contains(sign), "{what}: {sign}\n{stderr}");
    }
    assert!(stderr.contains("error"), "{what}: no error line\n{stderr}");
    assert!(
        stderr.contains(said),
        "{what}: the error does not say {said:?}\n{stderr}"
    );
    stderr
}

#[test]
fn a_hub_refuses_bad_flags_settings_and_addresses_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::write(r.join("bad.toml"), "listen = \n").unwrap();
    std::fs::write(r.join("typo.toml"), "listne = \"127.0.0.1:4000\"\n").unwrap();
    std::fs::write(r.join("typo2.toml"), "[timeouts]\nheartbeat_timout_s = 5\n").unwrap();
    std::fs::write(r.join("a-file"), "").unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let free = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not an address",
            vec!["--listen", "nonsense"],
            vec![],
            "HOST:PORT",
        ),
        (
            "port out of range",
            vec!["--listen", "127.0.0.1:99999"],
            vec![],
            "HOST:PORT",
        ),
        (
            "another machine's address",
            vec!["--listen", "192.0.2.1:4000"],
            vec![],
            "not an address of this machine",
        ),
        ("a busy port", vec!["--listen", &busy], vec![], "in use"),
        (
            "a missing config",
            vec!["--config", "missing.toml"],
            vec![],
            "missing.toml",
        ),
        (
            "a config that is not TOML",
            vec!["--config", "bad.toml"],
            vec![],
            "TOML parse error",
        ),
        (
            "a mistyped key",
            vec!["--config", "typo.toml"],
            vec![],
            "unknown field `listne`",
        ),
        (
            "a mistyped nested key",
            vec!["--config", "typo2.toml"],
            vec![],
            "heartbeat_timout_s",
        ),
        (
            "a word for a number",
            vec![],
            vec![("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "abc")],
            "timeouts.heartbeat_timeout_s",
        ),
        (
            "a word in a list",
            vec![],
            vec![("AGENTCOM_RETRY__BACKOFF_S", "x,1")],
            "retry.backoff_s",
        ),
        (
            "a negative size",
            vec![],
            vec![("AGENTCOM_STORE__CACHE_MB", "-1")],
            "store.cache_mb",
        ),
        (
            "a zero timeout",
            vec![],
            vec![("AGENTCOM_TIMEOUTS__ACCEPT_TIMEOUT_S", "0")],
            "accept_timeout_s",
        ),
        (
            "a mistyped env key",
            vec![],
            vec![("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMOUT_S", "5")],
            "heartbeat_timout_s",
        ),
        (
            "a certificate without its key",
            vec![],
            vec![("AGENTCOM_TLS__CERT_FILE", "/no/cert.pem")],
            "tls.key_file",
        ),
        (
            "certificate files that are not there",
            vec![],
            vec![
                ("AGENTCOM_TLS__CERT_FILE", "/no/cert.pem"),
                ("AGENTCOM_TLS__KEY_FILE", "/no/key.pem"),
            ],
            "tls.cert_file",
        ),
        (
            "a short admin token",
            vec![],
            vec![("AGENTCOM_ADMIN_TOKEN", "short")],
            "admin_token",
        ),
        (
            "a repository without a url",
            vec![],
            vec![("AGENTCOM_REPOS", "x")],
            "repos",
        ),
    ];
    for (i, (what, args, env, said)) in cases.iter().enumerate() {
        let data = r.join(format!("data-{i}"));
        let data_s = data.display().to_string();
        let mut all = vec!["serve", "--data-dir", &data_s];
        if !args.contains(&"--listen") {
            all.extend(["--listen", &free]);
        }
        all.extend(args.iter());
        let out = run(r, "agentcom-hub", &all, env);
        refused(what, &out, said);
        assert!(!data.exists(), "{what}: the data dir was made");
    }
    // The data dir itself.
    for (what, dir, said) in [
        (
            "a data dir that is a file",
            "a-file",
            "is a file, not a directory",
        ),
        (
            "a data dir under a file",
            "a-file/hub",
            "is a file, not a directory",
        ),
    ] {
        let out = run(
            r,
            "agentcom-hub",
            &["serve", "--listen", &free, "--data-dir", dir],
            &[],
        );
        refused(what, &out, said);
    }
    assert_eq!(
        std::fs::read(r.join("a-file")).unwrap(),
        b"",
        "the file was changed"
    );
    // Flags clap does not know: its usage error, exit 2.
    for args in [
        vec!["serve", "--lisen", "x"],
        vec!["serv"],
        vec!["task", "submit", "--title", "t", "--priority", "asap"],
    ] {
        let out = run(r, "agentcom-hub", &args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        refused(&format!("{args:?}"), &out, "error:");
    }
}

#[test]
fn the_admin_cli_says_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let nobody = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = run(
        r,
        "agentcom-hub",
        &["task", "list", "--data-dir", "nowhere"],
        &[],
    );
    refused("no admin token", &out, "AGENTCOM_ADMIN_TOKEN");
    let token = [("AGENTCOM_ADMIN_TOKEN", "0123456789abcdef0123")];
    let out = run(
        r,
        "agentcom-hub",
        &["task", "list", "--hub", &nobody],
        &token,
    );
    refused("no hub there", &out, "Is it running");
    let out = run(
        r,
        "agentcom-hub",
        &["task", "list", "--hub", "nonsense"],
        &token,
    );
    refused("not a URL", &out, "write http://HOST:PORT");
    let out = run(
        r,
        "agentcom-hub",
        &["agent", "add", "x", "--out", "."],
        &token,
    );
    refused("--out a folder", &out, "exists");
}

/// A sidecar config with `hub_url`, `state_dir` and more.
fn config(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn a_sidecar_refuses_bad_configs_naming_the_fix() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::write(r.join("a-file"), "").unwrap();
    let good_runner = "[runner]\nmode = \"exec\"\ncommand = [\"/bin/true\"]\n";
    let base = |hub: &str, extra: &str| {
        format!(
            "hub_url = \"{hub}\"\nagent_id = \"a\"\ntoken = \"t\"\nstate_dir = \"{}\"\n{extra}{good_runner}",
            r.join("state").display()
        )
    };
    let cases = [
        ("http scheme", base("http://127.0.0.1:4000/ws", ""), "ws://"),
        (
            "no /ws",
            base("ws://127.0.0.1:4000", ""),
            "ws://127.0.0.1:4000/ws",
        ),
        (
            "a mistyped key",
            base("ws://127.0.0.1:4000/ws", "capabilites = []\n"),
            "capabilites",
        ),
        (
            "no token",
            base("ws://127.0.0.1:4000/ws", "").replace("token = \"t\"\n", ""),
            "token",
        ),
        (
            "a state dir that is a file",
            base("ws://127.0.0.1:4000/ws", "").replace(
                &r.join("state").display().to_string(),
                &r.join("a-file").display().to_string(),
            ),
            "state_dir",
        ),
        ("not TOML", "hub_url = \n".to_string(), "TOML"),
        (
            "an empty runner",
            base("ws://127.0.0.1:4000/ws", "").replace("[\"/bin/true\"]", "[]"),
            "runner.command",
        ),
    ];
    for (i, (what, body, said)) in cases.iter().enumerate() {
        let path = config(r, &format!("c{i}.toml"), body);
        let out = run(r, "agentcom-sidecar", &["run", "--config", &path], &[]);
        refused(what, &out, said);
    }
    let out = run(
        r,
        "agentcom-sidecar",
        &["run", "--config", "missing.toml"],
        &[],
    );
    refused("a missing config", &out, "missing.toml");
    let missing_token = config(
        r,
        "tf.toml",
        &base("ws://127.0.0.1:4000/ws", "").replace("token = \"t\"", "token_file = \"/no/token\""),
    );
    let out = run(
        r,
        "agentcom-sidecar",
        &["run", "--config", &missing_token],
        &[],
    );
    refused("a token file that is not there", &out, "/no/token");
    // selftest against nothing: a table with the failure, exit 1.
    let nobody = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let path = config(r, "st.toml", &base(&format!("ws://{nobody}/ws"), ""));
    let out = run(r, "agentcom-sidecar", &["selftest", "--config", &path], &[]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("hub         FAIL"), "{table}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // join: what clap refuses, and what join refuses before the hub.
    let out = run(
        r,
        "agentcom-sidecar",
        &[
            "join",
            "--hub",
            "http://x",
            "--enroll-token",
            "t",
            "--id",
            "a",
            "--runner",
            "x",
            "--install",
            "launchd",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    refused("an unknown service manager", &out, "systemd, pm2, none");
    for (what, args, said) in [
        (
            "a hub without a scheme",
            vec!["--hub", "127.0.0.1:4000", "--runner", "/bin/true"],
            "http://127.0.0.1:4000",
        ),
        (
            "an empty runner",
            vec!["--hub", "http://127.0.0.1:1", "--runner", " "],
            "is not a command",
        ),
        (
            "a bad id",
            vec![
                "--hub",
                "http://127.0.0.1:1",
                "--runner",
                "/bin/true",
                "--id",
                "no spaces",
            ],
            "--id",
        ),
    ] {
        let mut all = vec![
            "join",
            "--enroll-token",
            "t",
            "--install",
            "none",
            "--config",
            "j.toml",
        ];
        if !args.contains(&"--id") {
            all.extend(["--id", "a"]);
        }
        all.extend(args.iter());
        let out = run(r, "agentcom-sidecar", &all, &[]);
        refused(what, &out, said);
        assert!(!r.join("j.toml").exists());
    }
}
