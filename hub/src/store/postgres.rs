//! The PostgreSQL engine under the store's trees (`store.backend =
//! "postgres"`): every tree's entries in one table, `agentcom_kv (tree,
//! key, value)`, ordered by `(tree, key)` as sled orders its keys (bytea
//! compares byte by byte), so the store's layouts work unchanged on it
//! (docs/decisions/0014).
//!
//! Writes behave as sled's do: a write or batch is visible to every read
//! at once and durable only after [`Postgres::sync`]. They are kept in an
//! overlay (the last value of each written key, newest first for reads)
//! and a list of pending writes; a sync commits every pending write in one
//! transaction, in the order written, and only then drops the committed
//! values from the overlay. A failed sync keeps them pending (and visible),
//! to be committed by the next. Scans merge the overlay's entries of their
//! range into the rows read from the table, a page at a time from either
//! end.
//!
//! The `postgres` crate's client runs its own runtime and must never be
//! called from a thread that drives async tasks, while the store is called
//! from actix's threads as sled is; so every statement runs on one of a
//! few threads of this module's own, each with its connection (made again
//! when lost), and the caller waits for the answer.
//!
//! Owns the table, its migrations, the connections and the overlay; never
//! the layout of keys nor when to sync. Never logs the database's URL (it
//! may hold a password).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use postgres::types::ToSql;
use postgres::{Client, NoTls};
use sled::IVec;

use super::StoreError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The bounds of a scan, owned.
pub(super) type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Rows buffered at either end of a scan.
type Buffer = std::collections::VecDeque<(IVec, IVec)>;

/// Statements run at once (the connections held).
const CONNECTIONS: usize = 4;
/// Rows read per page of a scan.
const PAGE: i64 = 256;

type Job = Box<dyn FnOnce(&mut Result<Client, String>) + Send>;

pub(super) struct Postgres {
    jobs: Mutex<mpsc::Sender<Job>>,
    overlay: Mutex<Overlay>,
    /// One sync at a time, so commits follow the order of writes.
    syncing: Mutex<()>,
    /// The lease (holder, term) every commit checks, once this hub leads.
    fence: Mutex<Option<(String, i64)>>,
}

/// The hub that leads, as the lease row says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leader {
    pub holder: String,
    pub url: Option<String>,
    pub term: i64,
    /// The lease has not lapsed.
    pub live: bool,
}

/// Written but not yet committed.
#[derive(Default)]
struct Overlay {
    /// The number of the last write.
    seq: u64,
    /// Each written key's last value (None: removed) and the number of the
    /// write that gave it.
    latest: BTreeMap<(i16, Vec<u8>), (u64, Option<IVec>)>,
    /// Writes not yet given to a sync, oldest first.
    pending: Vec<(i16, Vec<u8>, Option<IVec>)>,
}

impl Postgres {
    /// Start the connection threads for `url`, and apply the schema's
    /// migrations (on one of them).
    pub(super) fn open(url: &str) -> Result<Arc<Postgres>, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..CONNECTIONS {
            let rx = rx.clone();
            let url = url.to_string();
            std::thread::Builder::new()
                .name(format!("store-pg-{i}"))
                .spawn(move || {
                    let mut conn: Result<Client, String> = Err("not connected yet".into());
                    loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        if conn.as_ref().is_ok_and(|c| c.is_closed()) || conn.is_err() {
                            conn = Client::connect(&url, NoTls).map_err(|e| e.to_string());
                        }
                        job(&mut conn);
                    }
                })
                .map_err(StoreError::Io)?;
        }
        let db = Arc::new(Postgres {
            jobs: Mutex::new(tx),
            overlay: Mutex::new(Overlay::default()),
            syncing: Mutex::new(()),
            fence: Mutex::new(None),
        });
        let applied = db.call(|c| {
            let report = embedded::migrations::runner()
                .run(c)
                .map_err(|e| StoreError::Migration(e.to_string()))?;
            Ok(report
                .applied_migrations()
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>())
        })?;
        for m in applied {
            tracing::info!(migration = %m, "applied a database migration");
        }
        Ok(db)
    }

    /// Run `f` on a connection thread and wait for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let answer = match conn {
                Ok(c) => f(c),
                Err(e) => Err(StoreError::Unavailable(format!(
                    "cannot connect to the database at store.url: {e}"
                ))),
            };
            let _ = tx.send(answer);
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store's connections stopped".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Unavailable("a store connection stopped".into()))?
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply writes (visible at once; durable at the next sync).
    pub(super) fn write(&self, tree: i16, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let mut o = self.overlay();
        for (k, v) in ops {
            o.seq += 1;
            let seq = o.seq;
            let v = v.map(IVec::from);
            o.latest.insert((tree, k.clone()), (seq, v.clone()));
            o.pending.push((tree, k, v));
        }
    }

    pub(super) fn get(&self, tree: i16, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        if let Some((_, v)) = self.overlay().latest.get(&(tree, key.to_vec())) {
            return Ok(v.clone());
        }
        let key = key.to_vec();
        self.call(move |c| {
            let row = c.query_opt(
                "SELECT value FROM agentcom_kv WHERE tree = $1 AND key = $2",
                &[&tree, &key],
            )?;
            Ok(row.map(|r| IVec::from(r.get::<_, Vec<u8>>(0))))
        })
    }

    /// The values of `keys` in `tree`, in their order: the overlay's, and
    /// the rest in one query.
    pub(super) fn get_many(
        &self,
        tree: i16,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<IVec>>, StoreError> {
        let mut out: Vec<Option<Option<IVec>>> = {
            let o = self.overlay();
            keys.iter()
                .map(|k| o.latest.get(&(tree, k.clone())).map(|(_, v)| v.clone()))
                .collect()
        };
        let missing: Vec<Vec<u8>> = keys
            .iter()
            .zip(&out)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if !missing.is_empty() {
            let rows = self.call(move |c| {
                let rows = c.query(
                    "SELECT key, value FROM agentcom_kv WHERE tree = $1 AND key = ANY($2)",
                    &[&tree, &missing],
                )?;
                Ok(rows
                    .into_iter()
                    .map(|r| (r.get::<_, Vec<u8>>(0), IVec::from(r.get::<_, Vec<u8>>(1))))
                    .collect::<BTreeMap<_, _>>())
            })?;
            for (k, v) in keys.iter().zip(out.iter_mut()) {
                if v.is_none() {
                    *v = Some(rows.get(k).cloned());
                }
            }
        }
        Ok(out.into_iter().map(|v| v.flatten()).collect())
    }

    /// Commit every write made so far, in one transaction.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let _one = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let (ops, upto) = {
            let mut o = self.overlay();
            (std::mem::take(&mut o.pending), o.seq)
        };
        if ops.is_empty() {
            return Ok(());
        }
        // The last value of each key is what the table must hold.
        let mut last: BTreeMap<(i16, Vec<u8>), Option<IVec>> = BTreeMap::new();
        for (t, k, v) in ops {
            last.insert((t, k), v);
        }
        let (mut up_t, mut up_k, mut up_v) = (vec![], vec![], vec![]);
        let (mut del_t, mut del_k) = (vec![], vec![]);
        for ((t, k), v) in &last {
            match v {
                Some(v) => {
                    up_t.push(*t);
                    up_k.push(k.clone());
                    up_v.push(v.to_vec());
                }
                None => {
                    del_t.push(*t);
                    del_k.push(k.clone());
                }
            }
        }
        let fence = self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let committed = self.call(move |c| {
            let mut tx = c.transaction()?;
            if let Some((holder, term)) = &fence {
                // Held until the commit: a takeover waits for it, and a
                // commit after a takeover finds another term.
                let ours = tx.query_opt(
                    "SELECT 1 FROM agentcom_leader WHERE id = 1 AND holder = $1 AND term = $2 FOR SHARE",
                    &[holder, term],
                )?;
                if ours.is_none() {
                    return Err(StoreError::Deposed(*term));
                }
            }
            if !del_k.is_empty() {
                tx.execute(
                    "DELETE FROM agentcom_kv k USING unnest($1::smallint[], $2::bytea[]) AS d(tree, key) \
                     WHERE k.tree = d.tree AND k.key = d.key",
                    &[&del_t, &del_k],
                )?;
            }
            if !up_k.is_empty() {
                tx.execute(
                    "INSERT INTO agentcom_kv (tree, key, value) \
                     SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[]) \
                     ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                    &[&up_t, &up_k, &up_v],
                )?;
            }
            Ok(tx.commit()?)
        });
        let mut o = self.overlay();
        match committed {
            Ok(()) => {
                o.latest.retain(|_, (seq, _)| *seq > upto);
                Ok(())
            }
            Err(e) => {
                // Not committed (or not known to be): pending again, before
                // anything written since.
                let mut again: Vec<(i16, Vec<u8>, Option<IVec>)> =
                    last.into_iter().map(|((t, k), v)| (t, k, v)).collect();
                again.append(&mut o.pending);
                o.pending = again;
                Err(e)
            }
        }
    }

    /// Take the lease if it lapsed or is this holder's already (a hub
    /// restarted after a crash takes its own lease back at once, in a new
    /// term that fences anything its old process still tried): the new
    /// term.
    pub(super) fn try_lead(
        &self,
        holder: &str,
        url: Option<&str>,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (holder, url) = (holder.to_string(), url.map(str::to_string));
        self.call(move |c| {
            let row = c.query_opt(
                "UPDATE agentcom_leader SET term = term + 1, holder = $1, url = $2, \
                 expires_at = now() + make_interval(secs => $3::float8 / 1000) \
                 WHERE id = 1 AND (expires_at < now() OR holder = $1) RETURNING term",
                &[&holder, &url, &(lease_ms as f64)],
            )?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })
    }

    /// Extend this holder's lease of `term`: false if it is not theirs.
    pub(super) fn renew(&self, holder: &str, term: i64, lease_ms: i64) -> Result<bool, StoreError> {
        let holder = holder.to_string();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE agentcom_leader SET expires_at = now() + make_interval(secs => $3::float8 / 1000) \
                 WHERE id = 1 AND holder = $1 AND term = $2",
                &[&holder, &term, &(lease_ms as f64)],
            )?;
            Ok(n == 1)
        })
    }

    /// Give the lease up at once (a clean stop), if it is still ours.
    pub(super) fn step_down(&self, holder: &str, term: i64) -> Result<(), StoreError> {
        let holder = holder.to_string();
        self.call(move |c| {
            c.execute(
                "UPDATE agentcom_leader SET expires_at = '-infinity' WHERE id = 1 AND holder = $1 AND term = $2",
                &[&holder, &term],
            )?;
            Ok(())
        })
    }

    /// Who leads.
    pub(super) fn leader(&self) -> Result<Leader, StoreError> {
        self.call(|c| {
            let r = c.query_one(
                "SELECT holder, url, term, expires_at > now() FROM agentcom_leader WHERE id = 1",
                &[],
            )?;
            Ok(Leader {
                holder: r.get(0),
                url: r.get(1),
                term: r.get(2),
                live: r.get(3),
            })
        })
    }

    /// From now on every commit checks that `holder` still holds `term`.
    pub(super) fn fence(&self, holder: &str, term: i64) {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = Some((holder.to_string(), term));
    }

    /// The database answers.
    pub(super) fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| Ok(c.simple_query("SELECT 1").map(|_| ())?))
    }

    /// An ordered scan of `range` in `tree`.
    pub(super) fn scan(self: &Arc<Self>, tree: i16, range: Range) -> Scan {
        let overlay: BTreeMap<Vec<u8>, Option<IVec>> = {
            let o = self.overlay();
            let lo = match &range.0 {
                Bound::Included(k) => Bound::Included((tree, k.clone())),
                Bound::Excluded(k) => Bound::Excluded((tree, k.clone())),
                Bound::Unbounded => Bound::Included((tree, vec![])),
            };
            let hi = match &range.1 {
                Bound::Included(k) => Bound::Included((tree, k.clone())),
                Bound::Excluded(k) => Bound::Excluded((tree, k.clone())),
                Bound::Unbounded => Bound::Excluded((tree + 1, vec![])),
            };
            if bounds_empty(&lo, &hi) {
                BTreeMap::new()
            } else {
                o.latest
                    .range((lo, hi))
                    .map(|((_, k), (_, v))| (k.clone(), v.clone()))
                    .collect()
            }
        };
        Scan {
            db: self.clone(),
            tree,
            lo: range.0,
            hi: range.1,
            front: Buffer::new(),
            back: Buffer::new(),
            table_done: false,
            overlay,
            failed: false,
        }
    }

    /// Up to a page of rows strictly inside (`lo`, `hi`), from the start
    /// (`forward`) or the end; in that order.
    fn page(
        &self,
        tree: i16,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
        forward: bool,
    ) -> Result<Vec<(IVec, IVec)>, StoreError> {
        let mut sql = String::from("SELECT key, value FROM agentcom_kv WHERE tree = $1");
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(tree)];
        for (bound, incl, excl) in [(lo, ">=", ">"), (hi, "<=", "<")] {
            let (op, k) = match bound {
                Bound::Included(k) => (incl, k),
                Bound::Excluded(k) => (excl, k),
                Bound::Unbounded => continue,
            };
            params.push(Box::new(k.clone()));
            sql.push_str(&format!(" AND key {op} ${}", params.len()));
        }
        sql.push_str(if forward {
            " ORDER BY key ASC"
        } else {
            " ORDER BY key DESC"
        });
        sql.push_str(&format!(" LIMIT {PAGE}"));
        self.call(move |c| {
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = c.query(&sql, &refs)?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    (
                        IVec::from(r.get::<_, Vec<u8>>(0)),
                        IVec::from(r.get::<_, Vec<u8>>(1)),
                    )
                })
                .collect())
        })
    }
}

fn bounds_empty<K: Ord>(lo: &Bound<K>, hi: &Bound<K>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// An ordered scan: rows read from the table a page at a time from either
/// end (never the same row twice: each end's reads start where the other
/// end's stopped), merged with the overlay's entries of the range (the
/// overlay wins; its removals hide rows).
pub(super) struct Scan {
    db: Arc<Postgres>,
    tree: i16,
    /// What is left of the range not yet read from the table.
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    /// Rows read from the start, ascending; from the end, ascending.
    front: Buffer,
    back: Buffer,
    /// Every row of the range has been read.
    table_done: bool,
    overlay: BTreeMap<Vec<u8>, Option<IVec>>,
    failed: bool,
}

/// Where the next entry came from.
enum From {
    Front,
    Back,
}

/// The buffer a scan in this direction fills.
fn near(forward: bool) -> From {
    if forward {
        From::Front
    } else {
        From::Back
    }
}

impl Scan {
    /// Read a page from the start (`forward`) or the end of what is left.
    fn fill(&mut self, forward: bool) -> Result<(), StoreError> {
        if self.table_done {
            return Ok(());
        }
        let rows = self.db.page(self.tree, &self.lo, &self.hi, forward)?;
        if (rows.len() as i64) < PAGE {
            self.table_done = true;
        }
        if let Some((k, _)) = rows.last() {
            if forward {
                self.lo = Bound::Excluded(k.to_vec());
            } else {
                self.hi = Bound::Excluded(k.to_vec());
            }
        }
        if forward {
            self.front.extend(rows);
        } else {
            for r in rows {
                self.back.push_front(r);
            }
        }
        Ok(())
    }

    /// The smallest (`forward`) or largest row not yet taken, and where:
    /// the near end's buffer, else a page read from the table, else (the
    /// table read through) the far end's buffer.
    fn peek_table(&mut self, forward: bool) -> Result<Option<(IVec, From)>, StoreError> {
        if let Some(k) = self.end_of(forward, forward) {
            return Ok(Some((k, near(forward))));
        }
        self.fill(forward)?;
        if let Some(k) = self.end_of(forward, forward) {
            return Ok(Some((k, near(forward))));
        }
        Ok(self.end_of(!forward, forward).map(|k| (k, near(!forward))))
    }

    /// The key at the `forward` end of the front buffer (`front`) or the
    /// back buffer.
    fn end_of(&self, front: bool, forward: bool) -> Option<IVec> {
        let b = if front { &self.front } else { &self.back };
        if forward {
            b.front().map(|r| r.0.clone())
        } else {
            b.back().map(|r| r.0.clone())
        }
    }

    fn take_table(&mut self, from: From, forward: bool) -> Option<(IVec, IVec)> {
        let b = match from {
            From::Front => &mut self.front,
            From::Back => &mut self.back,
        };
        if forward {
            b.pop_front()
        } else {
            b.pop_back()
        }
    }

    fn step(&mut self, forward: bool) -> Option<Result<(IVec, IVec), StoreError>> {
        if self.failed {
            return None;
        }
        loop {
            let table = match self.peek_table(forward) {
                Ok(t) => t,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            let over = if forward {
                self.overlay.keys().next().cloned()
            } else {
                self.overlay.keys().next_back().cloned()
            };
            let take_overlay = match (&table, &over) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((tk, _)), Some(ok)) => {
                    if forward {
                        ok.as_slice() <= tk.as_ref()
                    } else {
                        ok.as_slice() >= tk.as_ref()
                    }
                }
            };
            if !take_overlay {
                let (_, from) = table.expect("a row");
                return self.take_table(from, forward).map(Ok);
            }
            let k = over.expect("an overlay entry");
            let v = self.overlay.remove(&k).expect("present");
            if let Some((tk, from)) = table {
                if tk.as_ref() == k.as_slice() {
                    // The overlay's value replaces the table's.
                    self.take_table(from, forward);
                }
            }
            if let Some(v) = v {
                return Some(Ok((IVec::from(k), v)));
            }
        }
    }

    pub(super) fn next_front(&mut self) -> Option<Result<(IVec, IVec), StoreError>> {
        self.step(true)
    }

    pub(super) fn next_back(&mut self) -> Option<Result<(IVec, IVec), StoreError>> {
        self.step(false)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fresh database on the test PostgreSQL (`AGENTCOM_TEST_PG_URL`,
    //! started by `scripts/test-postgres.sh`), or none when it is not set.

    /// The URL of a new empty database named after `name`, made afresh.
    pub(crate) fn fresh_database(name: &str) -> Option<String> {
        let admin = std::env::var("AGENTCOM_TEST_PG_URL").ok()?;
        let db = format!("unit_{}_{}", name.replace('-', "_"), std::process::id());
        let mut c =
            postgres::Client::connect(&admin, postgres::NoTls).expect("the test PostgreSQL");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .expect("no database left");
        c.batch_execute(&format!("CREATE DATABASE {db}"))
            .expect("a database");
        let (base, _) = admin.rsplit_once('/').expect("a database in the URL");
        Some(format!("{base}/{db}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency for this).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn key(i: u64) -> Vec<u8> {
        format!("k/{i:05}").into_bytes()
    }

    /// Scans agree with a map of what was written, whatever part of it is
    /// committed and whatever is still in the overlay: forwards,
    /// backwards, both ends at once, ranges and prefixes, across pages.
    #[test]
    fn scans_merge_the_overlay_into_the_table_across_pages() {
        let Some(url) = testing::fresh_database("scans") else {
            eprintln!("skipped: AGENTCOM_TEST_PG_URL is not set (scripts/test.sh sets it)");
            return;
        };
        let db = Postgres::open(&url).expect("open");
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut rng = Lcg(7);
        // Committed: 700 keys (nearly three pages), in another tree too.
        let ops: Vec<_> = (0..700)
            .map(|i| (key(i * 2), Some(format!("v{i}").into_bytes())))
            .collect();
        for (k, v) in &ops {
            model.insert(k.clone(), v.clone().unwrap());
        }
        db.write(1, ops);
        db.write(2, vec![(key(1), Some(b"other tree".to_vec()))]);
        db.sync().expect("sync");
        // Not committed: inserts between, replacements and removals.
        for _ in 0..300 {
            let i = rng.next(1500);
            let k = key(i);
            if rng.next(3) == 0 {
                db.write(1, vec![(k.clone(), None)]);
                model.remove(&k);
            } else {
                let v = format!("w{i}").into_bytes();
                db.write(1, vec![(k.clone(), Some(v.clone()))]);
                model.insert(k, v);
            }
        }
        let check = |label: &str, model: &BTreeMap<Vec<u8>, Vec<u8>>| {
            let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let scan = |r: Range| db.scan(1, r);
            let got: Vec<_> = std::iter::from_fn({
                let mut s = scan((Bound::Unbounded, Bound::Unbounded));
                move || s.next_front()
            })
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
            assert_eq!(got, all, "{label}: forwards");
            let mut back: Vec<_> = std::iter::from_fn({
                let mut s = scan((Bound::Unbounded, Bound::Unbounded));
                move || s.next_back()
            })
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
            back.reverse();
            assert_eq!(back, all, "{label}: backwards");
            // Both ends at once, alternating.
            let mut s = scan((Bound::Unbounded, Bound::Unbounded));
            let (mut head, mut tail) = (vec![], vec![]);
            loop {
                match s.next_front() {
                    Some(r) => head.push(r.unwrap().0.to_vec()),
                    None => break,
                }
                match s.next_back() {
                    Some(r) => tail.push(r.unwrap().0.to_vec()),
                    None => break,
                }
            }
            tail.reverse();
            head.extend(tail);
            let keys: Vec<_> = model.keys().cloned().collect();
            assert_eq!(head, keys, "{label}: both ends");
            // A range, both ways.
            let (lo, hi) = (key(333), key(1111));
            let want: Vec<_> = model
                .range(lo.clone()..hi.clone())
                .map(|(k, _)| k.clone())
                .collect();
            let got: Vec<_> = std::iter::from_fn({
                let mut s = scan((Bound::Included(lo.clone()), Bound::Excluded(hi.clone())));
                move || s.next_front()
            })
            .map(|r| r.unwrap().0.to_vec())
            .collect();
            assert_eq!(got, want, "{label}: a range");
            let mut got: Vec<_> = std::iter::from_fn({
                let mut s = scan((Bound::Excluded(lo.clone()), Bound::Included(hi.clone())));
                move || s.next_back()
            })
            .map(|r| r.unwrap().0.to_vec())
            .collect();
            got.reverse();
            let want: Vec<_> = model
                .range((Bound::Excluded(lo.clone()), Bound::Included(hi.clone())))
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(got, want, "{label}: a range backwards");
            // A prefix.
            let want: Vec<_> = model
                .keys()
                .filter(|k| k.starts_with(b"k/010"))
                .cloned()
                .collect();
            let got: Vec<_> = std::iter::from_fn({
                let mut s = scan((
                    Bound::Included(b"k/010".to_vec()),
                    Bound::Excluded(b"k/011".to_vec()),
                ));
                move || s.next_front()
            })
            .map(|r| r.unwrap().0.to_vec())
            .collect();
            assert_eq!(got, want, "{label}: a prefix");
            let probes: Vec<Vec<u8>> = (0..1500).step_by(7).map(key).collect();
            let many = db.get_many(1, &probes).unwrap();
            for (k, v) in probes.iter().zip(many) {
                assert_eq!(
                    v.map(|v| v.to_vec()),
                    model.get(k).cloned(),
                    "{label}: get_many"
                );
            }
            for probe in [0, 1, 2, 700, 1499] {
                assert_eq!(
                    db.get(1, &key(probe)).unwrap().map(|v| v.to_vec()),
                    model.get(&key(probe)).cloned(),
                    "{label}: get {probe}"
                );
            }
        };
        check("overlay over the table", &model);
        db.sync().expect("sync");
        assert!(
            db.overlay().latest.is_empty(),
            "committed writes leave the overlay"
        );
        check("all committed", &model);
        // Reopened (a new hub on the same database): the same.
        drop(db);
        let db2 = Postgres::open(&url).expect("reopen");
        let got: Vec<_> = std::iter::from_fn({
            let mut s = db2.scan(1, (Bound::Unbounded, Bound::Unbounded));
            move || s.next_front()
        })
        .map(|r| r.unwrap().0.to_vec())
        .collect();
        assert_eq!(
            got,
            model.keys().cloned().collect::<Vec<_>>(),
            "after reopening"
        );
        assert_eq!(
            db2.get(2, &key(1)).unwrap().as_deref(),
            Some(&b"other tree"[..])
        );
    }
}
