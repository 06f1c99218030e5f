//! The store's trees as ordered maps of bytes to bytes, whichever engine
//! keeps them: sled (embedded, the default) or PostgreSQL (one table).
//!
//! [`Tree`] is the one face the rest of the store uses: get, insert,
//! remove, an atomic [`Batch`], and ordered scans forwards or backwards
//! (a range or a prefix). Both engines give the same guarantees the store
//! relies on: a write is visible to every read at once; a batch is applied
//! whole or not at all; nothing is durable before `Store::sync`, and a
//! sync makes everything written before it durable, in the order written.
//!
//! Owns the dispatch to the engine only; never the layout of keys (that is
//! `store::tasks` and `store::changes`) nor when to sync.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use sled::IVec;

use super::postgres::Postgres;
use super::StoreError;

/// One tree of the store.
#[derive(Clone)]
pub(super) enum Tree {
    Sled(sled::Tree),
    Postgres { db: Arc<Postgres>, tree: i16 },
}

/// Writes applied together, or not at all.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub(super) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.as_ref().to_vec(), Some(value.into())));
    }

    pub(super) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    fn into_sled(self) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in self.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        b
    }
}

/// Ordered entries of a scan; `.rev()` walks it from the end.
pub(super) enum Iter {
    Sled(sled::Iter),
    Postgres(super::postgres::Scan),
}

impl Iterator for Iter {
    type Item = Result<(IVec, IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next().map(|r| r.map_err(StoreError::from)),
            Iter::Postgres(s) => s.next_front(),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next_back().map(|r| r.map_err(StoreError::from)),
            Iter::Postgres(s) => s.next_back(),
        }
    }
}

pub(super) use super::postgres::Range;

/// The keys starting with `prefix`, as a range.
pub(super) fn prefix_range(prefix: &[u8]) -> Range {
    let mut end = prefix.to_vec();
    // The first key after every key with this prefix: the prefix with its
    // last byte below 0xff incremented (bytes after it dropped).
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

impl Tree {
    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>, StoreError> {
        match self {
            Tree::Sled(t) => Ok(t.get(key)?),
            Tree::Postgres { db, tree } => db.get(*tree, key.as_ref()),
        }
    }

    /// The values of `keys`, in their order (one query with PostgreSQL).
    pub(super) fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<IVec>>, StoreError> {
        match self {
            Tree::Sled(t) => keys
                .iter()
                .map(|k| t.get(k).map_err(StoreError::from))
                .collect(),
            Tree::Postgres { db, tree } => db.get_many(*tree, keys),
        }
    }

    pub(super) fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.get(key)?.is_some())
    }

    pub(super) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), StoreError> {
        match self {
            Tree::Sled(t) => {
                t.insert(key.as_ref(), value.into())?;
                Ok(())
            }
            Tree::Postgres { db, tree } => {
                db.write(*tree, vec![(key.as_ref().to_vec(), Some(value.into()))]);
                Ok(())
            }
        }
    }

    pub(super) fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        match self {
            Tree::Sled(t) => {
                t.remove(key.as_ref())?;
                Ok(())
            }
            Tree::Postgres { db, tree } => {
                db.write(*tree, vec![(key.as_ref().to_vec(), None)]);
                Ok(())
            }
        }
    }

    pub(super) fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        match self {
            Tree::Sled(t) => Ok(t.apply_batch(batch.into_sled())?),
            Tree::Postgres { db, tree } => {
                db.write(*tree, batch.ops);
                Ok(())
            }
        }
    }

    /// The entries in `range`, in key order.
    pub(super) fn range(&self, range: impl RangeBounds<Vec<u8>>) -> Iter {
        let range: Range = (range.start_bound().cloned(), range.end_bound().cloned());
        match self {
            Tree::Sled(t) => Iter::Sled(t.range::<Vec<u8>, _>(range)),
            Tree::Postgres { db, tree } => Iter::Postgres(db.scan(*tree, range)),
        }
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub(super) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match self {
            Tree::Sled(t) => Iter::Sled(t.scan_prefix(prefix)),
            Tree::Postgres { .. } => self.range(prefix_range(prefix.as_ref())),
        }
    }

    /// How many entries (a scan: tests only).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.iter().count()
    }

    /// Every entry, in key order.
    pub(super) fn iter(&self) -> Iter {
        let all: Range = (Bound::Unbounded, Bound::Unbounded);
        self.range(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_every_key_with_the_prefix() {
        assert_eq!(
            prefix_range(b"s/"),
            (
                Bound::Included(b"s/".to_vec()),
                Bound::Excluded(b"s0".to_vec())
            )
        );
        assert_eq!(
            prefix_range(&[b'a', 0xff]),
            (
                Bound::Included(vec![b'a', 0xff]),
                Bound::Excluded(b"b".to_vec())
            )
        );
        assert_eq!(
            prefix_range(&[0xff, 0xff]),
            (Bound::Included(vec![0xff, 0xff]), Bound::Unbounded)
        );
    }
}
