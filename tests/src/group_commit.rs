//! A store engine's own limit on this machine, measured the one way the
//! benchmarks measure it: `producers` threads, each waiting for its write
//! to be durable before the next; one committer thread that takes every
//! write queued, hands them to the engine's `commit` as one group (which
//! must return once they are durable), and answers them all — the group
//! commit the hub's queue does, without the hub.
//!
//! Used by `agentcom-loadgen`'s `raw` phase and by `agentcom-engines`
//! (sled beside other engines). The one engine it knows is the hub's:
//! [`sled`], opened and synced as the hub's store is.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::procs::cpu_s;

/// One write: its key and value.
pub type Write = (Vec<u8>, Vec<u8>);

/// What a measurement found.
pub struct Limit {
    /// Items (of `writes_per_item` durable writes each) a second.
    pub items_per_s: f64,
    /// Durable writes a group.
    pub writes_per_sync: f64,
    /// This process's CPU over the window, in cores (1.0 = one core).
    pub cpu: f64,
    /// This process's CPU a durable write, in µs (producers included).
    pub cpu_us_per_write: f64,
}

/// A producer's write, waiting for its group to be durable.
type Pending = (Write, mpsc::Sender<()>);

struct Queue {
    pending: Mutex<Vec<Pending>>,
    ready: Condvar,
    stop: AtomicBool,
    syncs: AtomicU64,
}

/// Run `producers` for `seconds`, each item `writes_per_item` durable
/// writes in a row of a `value_bytes` value under a new key, through
/// `commit`. Nothing else should run in this process meanwhile: its CPU
/// is the figure's.
pub fn measure<C>(
    producers: usize,
    seconds: f64,
    writes_per_item: usize,
    value_bytes: usize,
    mut commit: C,
) -> Limit
where
    C: FnMut(&[Write]) + Send + 'static,
{
    let queue = Arc::new(Queue {
        pending: Mutex::new(Vec::new()),
        ready: Condvar::new(),
        stop: AtomicBool::new(false),
        syncs: AtomicU64::new(0),
    });
    let committer = {
        let queue = queue.clone();
        std::thread::spawn(move || loop {
            let group: Vec<Pending> = {
                let mut q = queue.pending.lock().unwrap();
                while q.is_empty() && !queue.stop.load(Ordering::Relaxed) {
                    q = queue
                        .ready
                        .wait_timeout(q, Duration::from_millis(50))
                        .unwrap()
                        .0;
                }
                if q.is_empty() {
                    return;
                }
                std::mem::take(&mut *q)
            };
            let (writes, done): (Vec<Write>, Vec<mpsc::Sender<()>>) = group.into_iter().unzip();
            commit(&writes);
            queue.syncs.fetch_add(1, Ordering::Relaxed);
            for d in done {
                let _ = d.send(());
            }
        })
    };
    let value = vec![b'x'; value_bytes];
    let items = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_s(std::process::id());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..producers)
        .map(|c| {
            let (queue, items, value) = (queue.clone(), items.clone(), value.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    for w in 0..writes_per_item {
                        let (tx, rx) = mpsc::channel();
                        let key = format!("t/{c:04}-{n:012}-{w}").into_bytes();
                        queue
                            .pending
                            .lock()
                            .unwrap()
                            .push(((key, value.clone()), tx));
                        queue.ready.notify_one();
                        rx.recv().unwrap();
                    }
                    n += 1;
                    items.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_s(std::process::id()) - cpu0;
    queue.stop.store(true, Ordering::Relaxed);
    queue.ready.notify_all();
    committer.join().unwrap();
    let done = items.load(Ordering::Relaxed) as f64;
    let writes = done * writes_per_item as f64;
    Limit {
        items_per_s: done / elapsed,
        writes_per_sync: writes / queue.syncs.load(Ordering::Relaxed).max(1) as f64,
        cpu: cpu / elapsed,
        cpu_us_per_write: 1e6 * cpu / writes.max(1.0),
    }
}

/// The hub's engine as the hub opens it (`Store::open`'s sled settings)
/// in `dir`, and its group commit as the hub's `Store::sync`: a batch,
/// sled's flush, then an `fdatasync` of its data file (sled 0.34's flush
/// does not fsync on Linux).
pub fn sled(dir: &Path) -> impl FnMut(&[Write]) + Send + 'static {
    let path = dir.join("sled");
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(64 * 1024 * 1024)
        .segment_size(2 * 1024 * 1024)
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let tree = db.open_tree("tasks").expect("open the tree");
    let data = std::fs::File::open(path.join("db")).expect("open sled's data file");
    move |group| {
        let mut batch = sled::Batch::default();
        for (k, v) in group {
            batch.insert(k.as_slice(), v.as_slice());
        }
        tree.apply_batch(batch).expect("sled batch");
        db.flush().expect("sled flush");
        data.sync_data().expect("fdatasync");
    }
}
