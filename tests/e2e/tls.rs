//! TLS end to end: a hub serving HTTPS and WSS on its one address with a
//! certificate signed by a CA this test makes (rcgen), a real sidecar over
//! `wss://` trusting that CA through `ca_file`, one that does not trust it,
//! the admin CLI over `https://` with and without `--ca-file`, the
//! dashboard's cookie over HTTPS, and a hub refusing bad TLS files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::procs::{bin, free_port, Proc};
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// PEM files: a CA, the hub's certificate (for 127.0.0.1 and localhost)
/// and key, and a key of another certificate.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let dir = dir.join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "AgentCom test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut hub =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    hub.distinguished_name
        .push(DnType::CommonName, "agentcom hub");
    hub.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = hub.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("hub.crt", cert.pem()),
        key: write("hub.key", key.serialize_pem()),
        other_key: write("other.key", KeyPair::generate().unwrap().serialize_pem()),
    }
}

fn tls_hub(root: &Path, pki: &Pki) -> Hub {
    let (cert, key) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    Hub::start_with(
        root,
        &[
            ("AGENTCOM_TLS__CERT_FILE", &cert),
            ("AGENTCOM_TLS__KEY_FILE", &key),
        ],
        Some(&pki.ca),
    )
}

#[test]
fn a_sidecar_trusting_the_ca_completes_a_task_over_wss() {
    let root = tempfile::tempdir().unwrap();
    let pki = pki(root.path());
    let hub = tls_hub(root.path(), &pki);
    assert!(hub.url.starts_with("https://"), "{}", hub.url);
    assert_eq!(hub.raw("GET", "/healthz", None, None).0, 200);
    let log = hub.log();
    assert!(
        log.contains(&format!("listening on https://127.0.0.1:{}", hub.port))
            && log.contains("TLS on"),
        "{log}"
    );

    // Plain HTTP to the TLS port gets no answer.
    let plain: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(T))
        .build()
        .into();
    let answer = plain
        .get(format!("http://127.0.0.1:{}/healthz", hub.port))
        .call();
    assert!(
        answer.is_err(),
        "plain HTTP was answered: {:?}",
        answer.map(|r| r.status())
    );

    let runner = r#"printf '{"summary":"done over wss"}' > "$AGENTCOM_RESULT_FILE""#;
    let s = Sidecar::start(root.path(), &hub, "secure", &["rust"], runner, "");
    let config = std::fs::read_to_string(&s.config).unwrap();
    assert!(config.contains("hub_url = \"wss://127.0.0.1:"), "{config}");
    hub.wait_agent("secure", "idle", T);
    let t = hub.submit(json!({ "title": "over TLS", "needed_capabilities": ["rust"] }));
    let id = t["id"].as_str().unwrap();
    let done = hub.wait_status(id, "completed", T);
    assert_eq!(done["result"]["summary"], "done over wss");
    assert!(
        s.log()
            .contains("TLS: trusting only the CA certificates in ca_file"),
        "{}",
        s.log()
    );
}

#[test]
fn a_sidecar_that_does_not_trust_the_hub_says_why_and_keeps_retrying() {
    let root = tempfile::tempdir().unwrap();
    let pki = pki(root.path());
    let hub = tls_hub(root.path(), &pki);
    let token = hub.add_agent("doubter", &[]);
    // No ca_file: the system's roots, which do not hold the test's CA.
    let dir = root.path().join("sidecar-doubter");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "hub_url = {:?}\nagent_id = \"doubter\"\ntoken = {token:?}\nstate_dir = {:?}\n\n[reconnect]\ninitial_ms = 50\nmax_s = 1\n\n[runner]\nmode = \"exec\"\ncommand = [\"true\"]\n",
            hub.ws_url(),
            dir.join("state").display().to_string(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("agentcom-sidecar"));
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let mut s = Proc::spawn(cmd, &dir.join("sidecar.log"));

    // The reason, in words, on every try; the sidecar backs off and tries
    // again rather than exiting.
    let reason = "the hub's certificate is not trusted";
    wait_until(T, "two refused connections, each with its reason", || {
        let log = s.log_text();
        let refused = log
            .lines()
            .filter(|l| l.contains("cannot connect to the hub") && l.contains(reason))
            .count();
        (refused >= 2).then_some(())
    });
    let log = s.log_text();
    assert!(
        log.contains("set ca_file") && log.contains("reconnecting after a pause"),
        "{log}"
    );
    assert!(!log.contains("SSL is not supported"), "{log}");
    assert!(s.running(), "the sidecar exited:\n{log}");
    assert_eq!(hub.agent("doubter")["connected"], false);
}

/// `agentcom-hub <args>` as an admin CLI: (success, stdout, stderr).
fn cli(hub: &Hub, args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let mut cmd = Command::new(bin("agentcom-hub"));
    cmd.args(args)
        .arg("--hub")
        .arg(&hub.url)
        .arg("--data-dir")
        .arg(hub.dir.join("data"))
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .env_remove("AGENTCOM_HUB_URL")
        .env_remove("AGENTCOM_CA_FILE")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_admin_cli_speaks_https_with_the_ca_file() {
    let root = tempfile::tempdir().unwrap();
    let pki = pki(root.path());
    let hub = tls_hub(root.path(), &pki);
    let ca = pki.ca.display().to_string();

    let (ok, out, err) = cli(
        &hub,
        &["task", "submit", "--title", "via https", "--ca-file", &ca],
        &[],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("queued") && out.contains("via https"), "{out}");
    // The same trust from the environment.
    let (ok, out, err) = cli(&hub, &["task", "list"], &[("AGENTCOM_CA_FILE", &pki.ca)]);
    assert!(ok && out.contains("via https"), "{out}{err}");
    // The sidecar config it prints carries the CA.
    let (ok, out, err) = cli(&hub, &["agent", "add", "printed", "--ca-file", &ca], &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("hub_url = \"wss://127.0.0.1:") && out.contains(&format!("ca_file = {ca:?}")),
        "{out}"
    );

    // Without the CA: the system's roots do not trust the hub.
    let (ok, out, err) = cli(&hub, &["task", "list"], &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("the hub's certificate is not trusted") && err.contains("--ca-file"),
        "{err}"
    );
    assert!(!err.contains("SSL is not supported"), "{err}");
    // A CA file that is not there is named.
    let missing = root.path().join("no-such-ca.pem").display().to_string();
    let (ok, _, err) = cli(&hub, &["task", "list", "--ca-file", &missing], &[]);
    assert!(
        !ok && err.contains(&format!("--ca-file {missing}: cannot read it")),
        "{err}"
    );
}

#[test]
fn the_sign_in_cookie_is_secure_over_https() {
    let root = tempfile::tempdir().unwrap();
    let pki = pki(root.path());
    let hub = tls_hub(root.path(), &pki);
    let body = json!({ "token": hub.token }).to_string();
    // Even with a header claiming the request came over plain HTTP.
    for (name, value) in [("X-Test", "none"), ("X-Forwarded-Proto", "http")] {
        let resp = hub
            .http()
            .post(format!("{}/api/session", hub.url))
            .header("Origin", &hub.url)
            .header("Content-Type", "application/json")
            .header(name, value)
            .send(body.as_str())
            .unwrap();
        assert_eq!(resp.status(), 200);
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("agentcom_session="))
            .expect("a session cookie");
        let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
        assert!(attrs.contains(&"Secure"), "{name}: {cookie}");
        assert!(attrs.contains(&"HttpOnly"), "{cookie}");
    }
}

/// Start a hub that must refuse to start; its log.
fn refused_start(root: &Path, env: &[(&str, &Path)]) -> String {
    let dir = root.join(format!("refused-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(bin("agentcom-hub"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("AGENTCOM_TLS__CERT_FILE")
        .env_remove("AGENTCOM_TLS__KEY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::spawn(cmd, &dir.join("hub.log"));
    let code = wait_until(T, "the hub to refuse to start", || {
        p.child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .map(|s| s.code())
    });
    assert_eq!(code, Some(1), "{}", p.log_text());
    p.log_text()
}

#[test]
fn a_hub_with_bad_tls_files_refuses_to_start_and_names_them() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let pki = pki(r);
    let (cert, key) = ("AGENTCOM_TLS__CERT_FILE", "AGENTCOM_TLS__KEY_FILE");

    let log = refused_start(r, &[(cert, &pki.cert)]);
    assert!(
        log.contains("tls.key_file: must be set with tls.cert_file"),
        "{log}"
    );

    let missing = r.join("missing.crt");
    let log = refused_start(r, &[(cert, &missing), (key, &pki.key)]);
    assert!(
        log.contains(&format!(
            "tls.cert_file {}: cannot read it",
            missing.display()
        )),
        "{log}"
    );

    let log = refused_start(r, &[(cert, &pki.key), (key, &pki.key)]);
    assert!(
        log.contains(&format!(
            "tls.cert_file {}: holds no certificate",
            pki.key.display()
        )),
        "{log}"
    );

    let log = refused_start(r, &[(cert, &pki.cert), (key, &pki.other_key)]);
    assert!(
        log.contains(&format!(
            "tls.key_file {}: this private key does not match the certificate in tls.cert_file {}",
            pki.other_key.display(),
            pki.cert.display()
        )),
        "{log}"
    );
}
