//! Certificates made here (rcgen), written to PEM files, and handshakes
//! between the resulting configurations in memory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};

use super::*;

/// A CA and a server certificate it signed for `names`, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki(names: &[&str]) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("AgentCom test CA");
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
        dir,
    }
}

fn file<'a>(setting: &'a str, path: &'a Path) -> PemFile<'a> {
    PemFile::new(setting, path)
}

fn server(p: &Pki) -> ServerConfig {
    server_config(file("tls.cert_file", &p.cert), file("tls.key_file", &p.key)).unwrap()
}

/// Move whatever `from` has to send into `to`.
fn transfer(from: &mut Connection, to: &mut Connection) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
    }
}

/// Run a handshake between the two in memory; the client's error if any.
fn handshake(client: ClientConfig, server: ServerConfig, name: &str) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut c = Connection::Client(ClientConnection::new(Arc::new(client), name).unwrap());
    let mut s = Connection::Server(ServerConnection::new(Arc::new(server)).unwrap());
    for _ in 0..10 {
        transfer(&mut c, &mut s);
        // The server's own error ends in an alert the client reports.
        let _ = s.process_new_packets();
        transfer(&mut s, &mut c);
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("the handshake did not finish");
}

fn classify(e: rustls::Error) -> HandshakeFailure {
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    handshake_failure(&io).expect("a rustls error")
}

#[test]
fn a_client_trusting_the_ca_file_completes_a_handshake() {
    let p = pki(&["localhost", "127.0.0.1"]);
    for name in ["localhost", "127.0.0.1"] {
        let client = client_config(Some(file("ca_file", &p.ca))).unwrap();
        handshake(client, server(&p), name).unwrap();
    }
}

#[test]
fn a_certificate_from_another_ca_is_untrusted() {
    let p = pki(&["localhost"]);
    let other = pki(&["localhost"]);
    let client = client_config(Some(file("ca_file", &other.ca))).unwrap();
    let e = handshake(client, server(&p), "localhost").unwrap_err();
    let f = classify(e);
    assert!(matches!(f, HandshakeFailure::Untrusted(_)), "{f:?}");
    assert!(
        f.to_string()
            .starts_with("the hub's certificate is not trusted"),
        "{f}"
    );
}

#[test]
fn an_untrusted_certificate_is_told_with_the_fix_and_others_without() {
    let p = pki(&["localhost"]);
    let other = pki(&["localhost"]);
    let client = client_config(Some(file("ca_file", &other.ca))).unwrap();
    let e = handshake(client, server(&p), "localhost").unwrap_err();
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let words = connect_failure(&io, "pass --ca-file").unwrap();
    assert!(
        words.starts_with("the hub's certificate is not trusted")
            && words.ends_with("; pass --ca-file"),
        "{words}"
    );
    let named = pki(&["hub.example"]);
    let client = client_config(Some(file("ca_file", &named.ca))).unwrap();
    let e = handshake(client, server(&named), "localhost").unwrap_err();
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    assert!(!connect_failure(&io, "pass --ca-file")
        .unwrap()
        .contains("--ca-file"));
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    assert_eq!(connect_failure(&refused, "pass --ca-file"), None);
}

#[test]
fn a_certificate_for_another_name_is_named_as_such() {
    let p = pki(&["hub.example"]);
    let client = client_config(Some(file("ca_file", &p.ca))).unwrap();
    let f = classify(handshake(client, server(&p), "localhost").unwrap_err());
    assert!(matches!(f, HandshakeFailure::WrongName(_)), "{f:?}");
}

#[test]
fn an_io_error_that_is_not_tls_is_not_explained() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    assert_eq!(handshake_failure(&io), None);
}

#[test]
fn the_system_roots_are_used_without_a_ca_file() {
    // rustls-native-certs reads SSL_CERT_FILE when set: make the test CA
    // the "system" roots. (No other test here reads these variables.)
    let p = pki(&["localhost"]);
    std::env::set_var("SSL_CERT_DIR", p.dir.path().join("no-such-dir"));
    std::env::set_var("SSL_CERT_FILE", &p.ca);
    let client = client_config(None).unwrap();
    handshake(client, server(&p), "localhost").unwrap();

    let empty = p.dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    std::env::set_var("SSL_CERT_FILE", &empty);
    let e = client_config(None).unwrap_err();
    std::env::remove_var("SSL_CERT_FILE");
    std::env::remove_var("SSL_CERT_DIR");
    assert!(matches!(e, TlsError::NoSystemRoots { .. }), "{e}");
    assert!(e.to_string().contains("CA file"), "{e}");
}

#[test]
fn a_missing_file_is_named_with_its_setting() {
    let p = pki(&["localhost"]);
    let missing = p.dir.path().join("nope.pem");
    let e = server_config(
        file("tls.cert_file", &missing),
        file("tls.key_file", &p.key),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, TlsError::Unreadable { .. }), "{text}");
    assert!(
        text.starts_with(&format!(
            "tls.cert_file {}: cannot read it",
            missing.display()
        )),
        "{text}"
    );
    let e = client_config(Some(file("--ca-file", &missing))).unwrap_err();
    assert!(e.to_string().starts_with("--ca-file "), "{e}");
}

#[test]
fn files_that_are_not_pem_say_what_was_expected() {
    let p = pki(&["localhost"]);
    let junk = p.dir.path().join("junk.pem");
    std::fs::write(&junk, b"\x30\x82\x01\x0a binary, as DER would be").unwrap();
    let e = server_config(file("tls.cert_file", &junk), file("tls.key_file", &p.key))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tls.cert_file") && e.contains("BEGIN CERTIFICATE"),
        "{e}"
    );
    // A certificate where the key should be.
    let e = server_config(
        file("tls.cert_file", &p.cert),
        file("tls.key_file", &p.cert),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("tls.key_file") && e.contains("holds no private key"),
        "{e}"
    );
    // A broken PEM block.
    let broken = p.dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = client_config(Some(file("ca_file", &broken))).unwrap_err();
    assert!(matches!(e, TlsError::NotPem { .. }), "{e}");
    assert!(e.to_string().starts_with("ca_file "), "{e}");
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
    let p = pki(&["localhost"]);
    let other = pki(&["localhost"]);
    let e = server_config(
        file("tls.cert_file", &p.cert),
        file("tls.key_file", &other.key),
    )
    .unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&other.key.display().to_string())
            && text.contains(&p.cert.display().to_string())
            && text.contains("does not match"),
        "{text}"
    );
}
