//! Dashboard sessions: what the sign-in cookie stands for.
//!
//! A session id is 32 random bytes (hex) handed to the browser once, in
//! its cookie. The hub keeps only the id's SHA-256 with the hash of the
//! token that opened the session (its role is that token's, and it ends
//! when that token is no longer valid) and its expiry: in memory for the
//! lookups every request makes, and in the store's `sessions` tree so a
//! restart keeps them. Signing out deletes the session; an expired one is
//! refused and purged.
//!
//! Creating and deleting write the store and sync it: call them off the
//! actor and HTTP threads (`web::block`). Lookups only read memory. This
//! module must never keep or log a session id or a token.

use std::collections::HashMap;
use std::sync::RwLock;

use agentcom_protocol::Timestamp;
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::store::{SessionRecord, Store, StoreError};

/// Most sessions kept at once; past it the oldest go first.
const MAX_SESSIONS: usize = 10_000;

pub(crate) struct Sessions {
    store: Store,
    ttl_ms: i64,
    by_hash: RwLock<HashMap<String, SessionRecord>>,
}

fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Sessions {
    /// The sessions in the store, less the expired ones (deleted).
    pub(crate) fn load(store: Store, ttl_s: u64, now: Timestamp) -> Result<Sessions, StoreError> {
        let (live, expired): (Vec<_>, Vec<_>) = store
            .load_sessions()?
            .into_iter()
            .partition(|(_, s)| s.expires_at > now);
        if !expired.is_empty() {
            let ids: Vec<String> = expired.into_iter().map(|(h, _)| h).collect();
            store.delete_sessions(&ids)?;
        }
        Ok(Sessions {
            store,
            ttl_ms: i64::try_from(ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            by_hash: RwLock::new(live.into_iter().collect()),
        })
    }

    /// Open a session for the token with this hash; its id (for the
    /// cookie) and when it expires. Writes the store (blocking).
    pub(crate) fn create(
        &self,
        token_sha256: String,
        now: Timestamp,
    ) -> Result<(String, Timestamp), StoreError> {
        let bytes: [u8; 32] = rand::rng().random();
        let id = hex::encode(bytes);
        let record = SessionRecord {
            token_sha256,
            created_at: now,
            expires_at: now.plus_millis(self.ttl_ms),
        };
        let hash = id_hash(&id);
        self.store.put_session(&hash, &record)?;
        let expires_at = record.expires_at;
        let gone = {
            let mut map = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
            map.insert(hash, record);
            let mut gone: Vec<String> = map
                .iter()
                .filter(|(_, s)| s.expires_at <= now)
                .map(|(h, _)| h.clone())
                .collect();
            if map.len() - gone.len() > MAX_SESSIONS {
                let mut oldest: Vec<(&String, Timestamp)> = map
                    .iter()
                    .filter(|(_, s)| s.expires_at > now)
                    .map(|(h, s)| (h, s.created_at))
                    .collect();
                oldest.sort_by_key(|(_, at)| *at);
                let excess = oldest.len() - MAX_SESSIONS;
                gone.extend(oldest.into_iter().take(excess).map(|(h, _)| h.clone()));
            }
            for h in &gone {
                map.remove(h);
            }
            gone
        };
        if !gone.is_empty() {
            self.store.delete_sessions(&gone)?;
        }
        Ok((id, expires_at))
    }

    /// The hash of the token behind a live session id.
    pub(crate) fn token_of(&self, id: &str, now: Timestamp) -> Option<String> {
        let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
        map.get(&id_hash(id))
            .filter(|s| s.expires_at > now)
            .map(|s| s.token_sha256.clone())
    }

    /// End a session (sign-out). Writes the store (blocking).
    pub(crate) fn revoke(&self, id: &str) -> Result<(), StoreError> {
        let hash = id_hash(id);
        let known = self
            .by_hash
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hash)
            .is_some();
        if known {
            self.store.delete_sessions(&[hash])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_end_at_sign_out_and_outlive_a_restart() {
        let dir = std::env::temp_dir().join(format!("agentcom-sessions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t0 = Timestamp(1_000_000_000);
        let store = crate::store::open_for_test(&dir);
        let s = Sessions::load(store.clone(), 60, t0).unwrap();
        let (a, expires) = s.create("tok-hash".into(), t0).unwrap();
        let (b, _) = s.create("tok-hash".into(), t0).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(expires, t0.plus_millis(60_000));
        assert_eq!(s.token_of(&a, t0).as_deref(), Some("tok-hash"));
        assert_eq!(s.token_of("not-a-session", t0), None);
        assert_eq!(s.token_of(&a, expires), None, "expired");
        s.revoke(&b).unwrap();
        assert_eq!(s.token_of(&b, t0), None, "signed out");
        let stored = store.load_sessions().unwrap();
        assert_eq!(stored.len(), 1);
        assert!(
            stored.iter().all(|(h, _)| h != &a),
            "the store keeps the id's hash, not the id"
        );
        let again = Sessions::load(store.clone(), 60, t0.plus_millis(1000)).unwrap();
        assert_eq!(
            again.token_of(&a, t0.plus_millis(1000)).as_deref(),
            Some("tok-hash")
        );
        let later = Sessions::load(store.clone(), 60, expires).unwrap();
        assert_eq!(later.token_of(&a, expires), None);
        assert!(
            store.load_sessions().unwrap().is_empty(),
            "expired ones are purged"
        );
        drop((s, again, later, store));
        std::fs::remove_dir_all(dir).ok();
    }
}
