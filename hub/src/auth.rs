//! Tokens: generating them, hashing them, and deciding who a bearer is.
//!
//! Tokens are 256 random bits, shown once; the hub keeps only their
//! SHA-256 (a slow hash buys nothing for random tokens of this size). This
//! module holds the admin, viewer and enrollment hashes and answers "which
//! role does this token have" and "is this the enrollment token" (which
//! has no role: it only enrolls agents); agent tokens are resolved by the
//! registry's [`crate::actors::registry::AgentDirectory`]. The admin and
//! enrollment tokens are the settings' or, unset, generated on the first
//! start (hash in the store, token in a 0600 file). It must never log a
//! token.

use std::path::{Path, PathBuf};

use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::store::{Store, StoreError};

/// What a bearer may do on the HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads only.
    Viewer,
}

/// A fresh random token with a readable prefix (`acm_admin_…`, `acm_agent_…`).
pub(crate) fn generate_token(kind: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("acm_{kind}_{}", hex::encode(bytes))
}

pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Whether two token hashes are equal, in time that does not depend on
/// where they differ. (Agent tokens are found by their hash in a map:
/// that lookup compares hashes, never the secret, and a hash reveals
/// nothing usable about the token.)
pub(crate) fn same_hash(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The admin, viewer and enrollment token hashes, and where the admin
/// and enrollment tokens are (in words, for the start-up log).
#[derive(Clone, Debug)]
pub struct Auth {
    admin_sha256: String,
    viewer_sha256: Option<String>,
    enroll_sha256: Option<String>,
    /// Where the admin token is: its file, or the setting.
    pub admin_at: String,
    /// Where the enrollment token is.
    pub enroll_at: String,
}

const ADMIN_HASH_KEY: &str = "admin_token_sha256";
const ENROLL_HASH_KEY: &str = "enroll_token_sha256";

/// One token the hub sets up at start: its setting, its hash's key in the
/// store, its file.
struct TokenSpec<'a> {
    setting: &'static str,
    configured: Option<&'a str>,
    meta_key: &'static str,
    file: PathBuf,
    kind: &'static str,
}

impl Auth {
    pub fn new(admin_sha256: String, viewer_sha256: Option<String>) -> Self {
        Auth {
            admin_sha256,
            viewer_sha256,
            enroll_sha256: None,
            admin_at: "set by admin_token".into(),
            enroll_at: "none".into(),
        }
    }

    /// With this enrollment token hash.
    pub fn with_enroll(mut self, enroll_sha256: String) -> Self {
        self.enroll_sha256 = Some(enroll_sha256);
        self
    }

    /// Whether `token` is the enrollment token (compared in constant time).
    pub fn is_enroll(&self, token: &str) -> bool {
        self.enroll_sha256
            .as_deref()
            .is_some_and(|e| same_hash(&hash_token(token), e))
    }

    /// The role of a presented token, if any.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.role_of_hash(&hash_token(token))
    }

    /// The role of the token with this SHA-256 (hex), if any. Both hashes
    /// are always compared, each in constant time.
    pub fn role_of_hash(&self, h: &str) -> Option<Role> {
        let admin = same_hash(h, &self.admin_sha256);
        let viewer = self
            .viewer_sha256
            .as_deref()
            .is_some_and(|v| same_hash(h, v));
        if admin {
            Some(Role::Admin)
        } else if viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Set up access at start: the admin and enrollment tokens are the
    /// configured ones, or the ones generated on the first start (each
    /// hash in the store, the tokens in `<data_dir>/admin.token` and
    /// `<data_dir>/enroll.token`, mode 0600).
    pub fn initialise(settings: &Settings, store: &Store) -> Result<Auth, AuthSetupError> {
        let viewer = settings.viewer_token.as_deref().map(hash_token);
        let (admin, admin_at) = set_up(
            TokenSpec {
                setting: "admin_token",
                configured: settings.admin_token.as_deref(),
                meta_key: ADMIN_HASH_KEY,
                file: token_file(&settings.data_dir),
                kind: "admin",
            },
            store,
        )?;
        let (enroll, enroll_at) = set_up(
            TokenSpec {
                setting: "enroll_token",
                configured: settings.enroll_token.as_deref(),
                meta_key: ENROLL_HASH_KEY,
                file: enroll_token_file(&settings.data_dir),
                kind: "enroll",
            },
            store,
        )?;
        Ok(Auth {
            admin_at,
            enroll_at,
            ..Auth::new(admin, viewer).with_enroll(enroll)
        })
    }
}

/// The hashes of the tokens that may read from a standby hub: the admin
/// token's (from the shared store) and the viewer token's (from its
/// settings). Read only: a standby writes nothing.
pub(crate) fn reader_hashes(settings: &Settings, store: &Store) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = store.meta_get(ADMIN_HASH_KEY)?.into_iter().collect();
    out.extend(settings.viewer_token.as_deref().map(hash_token));
    Ok(out)
}

/// Whether `token` is one of `hashes`' (each compared in constant time).
pub(crate) fn token_in(token: &str, hashes: &[String]) -> bool {
    let h = hash_token(token);
    hashes
        .iter()
        .fold(false, |found, k| same_hash(&h, k) | found)
}

/// One token's hash and where it is, in words: the setting's, the one in
/// its file, or a new one generated into its file (hash in the store).
fn set_up(t: TokenSpec, store: &Store) -> Result<(String, String), AuthSetupError> {
    if let Some(token) = t.configured {
        return Ok((hash_token(token), format!("set by {}", t.setting)));
    }
    let path = &t.file;
    if let Some(stored) = store.meta_get(t.meta_key)? {
        match std::fs::read_to_string(path) {
            Ok(tok) if same_hash(&hash_token(&tok), &stored) => {
                return Ok((stored, path.display().to_string()));
            }
            // Several hubs share this store: the token another hub made
            // stays the token (a new one here would lock the others' users
            // out); this hub's data dir just lacks its copy.
            _ if store.shared() => {
                tracing::warn!(
                    "the {} token was made by another hub of this store; copy its {} token file here ({}) to use it from this machine",
                    t.kind,
                    t.kind,
                    path.display()
                );
                return Ok((
                    stored,
                    format!("{} (from another hub: not here yet)", path.display()),
                ));
            }
            Ok(_) => {
                tracing::warn!(
                    "{} token file {} does not match the store; generating a new {} token",
                    t.kind,
                    path.display(),
                    t.kind
                )
            }
            Err(_) => {
                tracing::warn!(
                    "{} token file {} is missing; generating a new {} token",
                    t.kind,
                    path.display(),
                    t.kind
                )
            }
        }
    }
    let token = generate_token(t.kind);
    write_secret(path, &token)?;
    store.meta_put(t.meta_key, &hash_token(&token))?;
    Ok((
        hash_token(&token),
        format!("{} (generated now)", path.display()),
    ))
}

/// Where the generated admin token lives.
pub(crate) fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// Where the generated enrollment token lives.
pub(crate) fn enroll_token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("enroll.token")
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write a token file: {0}")]
    Io(#[from] std::io::Error),
}

/// Write a secret to a file only its owner can read (0600), durably and
/// atomically (a temporary file, synced, renamed over, the directory
/// synced). The mode is set afresh, never taken from an older file.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use atomic_write_file::unix::OpenOptionsExt;
    use atomic_write_file::AtomicWriteFile;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = AtomicWriteFile::options()
        .mode(0o600)
        .preserve_mode(false)
        .open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_consistently() {
        let a = generate_token("agent");
        let b = generate_token("agent");
        assert_ne!(a, b);
        assert!(a.starts_with("acm_agent_") && a.len() == "acm_agent_".len() + 64);
        assert_eq!(
            hash_token(&a),
            hash_token(&format!("{a}\n")),
            "trailing newline from a file is ignored"
        );
    }

    #[test]
    fn roles() {
        let auth = Auth::new(
            hash_token("admin-secret"),
            Some(hash_token("viewer-secret")),
        );
        assert_eq!(auth.role_of("admin-secret"), Some(Role::Admin));
        assert_eq!(auth.role_of("viewer-secret"), Some(Role::Viewer));
        assert_eq!(auth.role_of("nope"), None);
        assert_eq!(
            auth.role_of_hash(&hash_token("viewer-secret")),
            Some(Role::Viewer)
        );
        assert!(same_hash("ab", "ab") && !same_hash("ab", "ac") && !same_hash("ab", "abc"));
    }

    #[test]
    fn first_start_generates_a_0600_token_file_and_reuses_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("agentcom-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = Settings::load_with_env(
            None,
            &crate::config::Overrides {
                listen: None,
                data_dir: Some(dir.clone()),
            },
            Some(vec![]),
        )
        .unwrap();
        let store = Store::open(&dir, 16).unwrap();
        let auth = Auth::initialise(&settings, &store).unwrap();
        let path = token_file(&dir);
        let token = std::fs::read_to_string(&path).unwrap();
        assert_eq!(auth.role_of(&token), Some(Role::Admin));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let enroll_path = enroll_token_file(&dir);
        let enroll = std::fs::read_to_string(&enroll_path).unwrap();
        assert!(enroll.starts_with("acm_enroll_"));
        assert!(auth.is_enroll(&enroll) && !auth.is_enroll(&token));
        assert_eq!(
            auth.role_of(&enroll),
            None,
            "the enrollment token has no role"
        );
        assert_eq!(
            std::fs::metadata(&enroll_path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(
            auth.admin_at.ends_with("admin.token (generated now)"),
            "{}",
            auth.admin_at
        );
        let again = Auth::initialise(&settings, &store).unwrap();
        assert_eq!(
            again.role_of(&token),
            Some(Role::Admin),
            "same token on the next start"
        );
        assert!(
            again.is_enroll(&enroll),
            "same enrollment token on the next start"
        );
        assert_eq!(again.enroll_at, enroll_path.display().to_string());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn configured_tokens_are_used_and_said_so() {
        let dir = std::env::temp_dir().join(format!("agentcom-auth-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = Settings::load_with_env(
            None,
            &crate::config::Overrides {
                listen: None,
                data_dir: Some(dir.clone()),
            },
            Some(vec![
                (
                    "AGENTCOM_ADMIN_TOKEN".into(),
                    "admin-0123456789abcdef".into(),
                ),
                (
                    "AGENTCOM_ENROLL_TOKEN".into(),
                    "enroll-0123456789abcdef".into(),
                ),
            ]),
        )
        .unwrap();
        let store = Store::open(&dir, 16).unwrap();
        let auth = Auth::initialise(&settings, &store).unwrap();
        assert!(auth.is_enroll("enroll-0123456789abcdef"));
        assert_eq!(auth.role_of("admin-0123456789abcdef"), Some(Role::Admin));
        assert_eq!(
            (auth.admin_at.as_str(), auth.enroll_at.as_str()),
            ("set by admin_token", "set by enroll_token")
        );
        assert!(!enroll_token_file(&dir).exists() && !token_file(&dir).exists());
        std::fs::remove_dir_all(dir).ok();
    }
}
