//! Tokens: generating them, hashing them, and deciding who a bearer is.
//!
//! Tokens are 256 random bits, shown once; the hub keeps only their
//! SHA-256 (a slow hash buys nothing for random tokens of this size). This
//! module holds the admin and viewer hashes and answers "which role does
//! this token have"; agent tokens are resolved by the registry's
//! [`crate::actors::registry::AgentDirectory`]. It must never log a token.

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

/// The admin and viewer token hashes.
#[derive(Clone, Debug)]
pub struct Auth {
    admin_sha256: String,
    viewer_sha256: Option<String>,
}

const ADMIN_HASH_KEY: &str = "admin_token_sha256";

impl Auth {
    pub fn new(admin_sha256: String, viewer_sha256: Option<String>) -> Self {
        Auth {
            admin_sha256,
            viewer_sha256,
        }
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

    /// Set up admin access at start: the configured token, or the one
    /// generated on the first start (its hash in the store, the token in
    /// `<data_dir>/admin.token`, mode 0600).
    pub fn initialise(settings: &Settings, store: &Store) -> Result<Auth, AuthSetupError> {
        let viewer = settings.viewer_token.as_deref().map(hash_token);
        if let Some(token) = &settings.admin_token {
            tracing::info!("admin token: taken from the settings");
            return Ok(Auth::new(hash_token(token), viewer));
        }
        let path = token_file(&settings.data_dir);
        if let Some(stored) = store.meta_get(ADMIN_HASH_KEY)? {
            match std::fs::read_to_string(&path) {
                Ok(tok) if same_hash(&hash_token(&tok), &stored) => {
                    tracing::info!(path = %path.display(), "admin token: in the token file");
                    return Ok(Auth::new(stored, viewer));
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "admin token file does not match the store; generating a new admin token")
                }
                Err(_) => {
                    tracing::warn!(path = %path.display(), "admin token file is missing; generating a new admin token")
                }
            }
        }
        let token = generate_token("admin");
        write_secret(&path, &token)?;
        store.meta_put(ADMIN_HASH_KEY, &hash_token(&token))?;
        tracing::info!(path = %path.display(), "admin token: generated on first start and written to the token file");
        Ok(Auth::new(hash_token(&token), viewer))
    }
}

/// Where the generated admin token lives.
pub(crate) fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the admin token file: {0}")]
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
        let again = Auth::initialise(&settings, &store).unwrap();
        assert_eq!(
            again.role_of(&token),
            Some(Role::Admin),
            "same token on the next start"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
