//! `agentcom-engines`: the raw group-commit limit of sled (the hub's
//! engine) beside fjall and redb on this machine, so that "would another
//! engine make the hub faster?" has a figure from here rather than an
//! opinion. Built only with the `engines` feature (fjall and redb are not
//! the hub's dependencies, and the test suite never builds them):
//!
//! ```sh
//! cargo run --release -p agentcom-tests --features engines --bin agentcom-engines -- --seconds 6 --rounds 3
//! ```
//!
//! Each figure is [`group_commit::measure`], as `agentcom-loadgen`'s `raw`
//! phase: `--producers` threads (64), one committer, 800-byte values;
//! durable writes/s, then tasks/s when a task is 4 durable writes in a
//! row; writes a sync; the process's CPU and its µs a durable write. The
//! engines alternate within each of `--rounds` rounds (the machine's speed
//! moves from minute to minute). Each engine is made durable the way its
//! documentation says:
//!
//! - sled: `apply_batch`, `flush`, then `fdatasync` of its data file (sled
//!   0.34's flush does not fsync on Linux; the hub's `Store::sync`);
//! - fjall: `WriteBatch::commit`, then `Database::persist(SyncData)`, an
//!   `fdatasync` of its journal;
//! - redb: one write transaction a group, committed with its default
//!   `Durability::Immediate`.
//!
//! Prints a Markdown table for docs/benchmarks.md. Never starts a hub.

use std::path::Path;

use agentcom_tests::group_commit::{self, Limit, Write};
use clap::Parser;

/// The raw group-commit limit of sled, fjall and redb on this machine.
#[derive(Parser, Debug)]
#[command(name = "agentcom-engines")]
struct Args {
    /// Each figure's window, in seconds.
    #[arg(long, default_value_t = 6.0, value_parser = positive)]
    seconds: f64,
    /// Producer threads, each waiting for its write to be durable.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    producers: u64,
    /// Rounds; the engines alternate within each.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
}

fn positive(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{v:?} is not a number of seconds above 0")),
    }
}

/// An engine's group commit: every write durable on return.
type Commit = Box<dyn FnMut(&[Write]) + Send>;

/// An engine opened in a directory, ready to commit groups.
type Open = fn(&Path) -> Commit;

fn sled_commit(dir: &Path) -> Commit {
    Box::new(group_commit::sled(dir))
}

fn fjall_commit(dir: &Path) -> Commit {
    let db = fjall::Database::builder(dir.join("fjall"))
        .open()
        .expect("open fjall");
    let tasks = db
        .keyspace("tasks", fjall::KeyspaceCreateOptions::default)
        .expect("open the keyspace");
    Box::new(move |group| {
        let mut batch = db.batch();
        for (k, v) in group {
            batch.insert(&tasks, k.as_slice(), v.as_slice());
        }
        batch.commit().expect("fjall batch");
        db.persist(fjall::PersistMode::SyncData)
            .expect("fjall persist");
    })
}

const TASKS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("tasks");

fn redb_commit(dir: &Path) -> Commit {
    let db = redb::Database::create(dir.join("redb")).expect("open redb");
    Box::new(move |group| {
        let tx = db.begin_write().expect("redb transaction");
        {
            let mut table = tx.open_table(TASKS).expect("redb table");
            for (k, v) in group {
                table
                    .insert(k.as_slice(), v.as_slice())
                    .expect("redb insert");
            }
        }
        tx.commit().expect("redb commit");
    })
}

fn main() {
    let Args {
        seconds,
        producers,
        rounds,
    } = Args::parse();
    let producers = producers as usize;
    let engines: [(&str, Open); 3] = [
        ("sled", sled_commit),
        ("fjall", fjall_commit),
        ("redb", redb_commit),
    ];
    println!(
        "## Group commit on this machine: {producers} producers, {seconds} s a figure, 800-byte values\n"
    );
    println!("| round | engine | durable writes/s | writes a sync | CPU; µs a write | tasks/s at 4 writes | writes a sync | CPU; µs a write |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let cell = |l: &Limit| {
        format!(
            "{:.0} | {:.0} | {:.0} %; {:.1}",
            l.items_per_s,
            l.writes_per_sync,
            100.0 * l.cpu,
            l.cpu_us_per_write
        )
    };
    for round in 1..=rounds {
        for (name, open) in engines {
            let [one, four] = [1, 4].map(|writes| {
                eprintln!("round {round}: {name}, {writes} write(s) a task…");
                let dir = tempfile::tempdir().expect("a temporary directory");
                group_commit::measure(producers, seconds, writes, 800, open(dir.path()))
            });
            println!("| {round} | {name} | {} | {} |", cell(&one), cell(&four));
        }
    }
}
