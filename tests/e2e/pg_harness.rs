//! The harness's PostgreSQL databases (`agentcom_tests::pg`), against the
//! real PostgreSQL of `AGENTCOM_TEST_PG_URL` (`scripts/test.sh` starts a
//! private one): each is fresh, empty and its own, and is dropped after.
//! Skipped, saying so, when no PostgreSQL is given.

use agentcom_tests::pg::{self, Database};

fn no_postgres() -> bool {
    let none = pg::admin_url().is_none();
    if none {
        eprintln!(
            "skipped: {} is not set (scripts/test-postgres.sh start)",
            pg::URL_VAR
        );
    }
    none
}

fn current_database(db: &Database) -> String {
    db.connect()
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0)
}

fn exists(name: &str) -> bool {
    let admin = pg::admin_url().unwrap();
    pg::connect(&admin)
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .unwrap()
        .is_some()
}

#[test]
fn each_hub_database_is_fresh_empty_and_its_own() {
    if no_postgres() {
        return;
    }
    let (a, b) = (Database::create(), Database::create());
    assert_ne!(a.name, b.name);
    assert_ne!(a.url, b.url);
    assert_eq!(current_database(&a), a.name);
    assert_eq!(current_database(&b), b.name);
    assert_eq!(pg::tables(&a.url), Vec::<String>::new(), "a is empty");
    assert_eq!(pg::tables(&b.url), Vec::<String>::new(), "b is empty");

    // The role the hub connects as makes its own tables (its migrations);
    // what one database stores, the other does not see; the dump shows it.
    a.connect()
        .batch_execute("CREATE TABLE kv (k text PRIMARY KEY, v bytea); INSERT INTO kv VALUES ('key', 'secret')")
        .unwrap();
    assert_eq!(pg::tables(&a.url), ["public.kv"]);
    assert!(pg::tables(&b.url).is_empty());
    let dump = pg::dump_text(&a.url);
    assert!(dump.contains("key"), "{dump}");
    assert!(dump.contains("\\\\x736563726574"), "bytea as hex: {dump}");
    assert!(pg::dump_text(&b.url).is_empty());

    let name = a.name.clone();
    let _held = a.connect();
    drop(a);
    assert!(!exists(&name), "dropped, even with a connection open");
    assert!(exists(&b.name));
}

#[test]
fn the_backend_follows_the_environment() {
    // The run's backend as the hubs will see it; never a silent fallback.
    let expected = match std::env::var(pg::STORE_VAR).as_deref() {
        Ok("postgres") => pg::Backend::Postgres,
        _ => pg::Backend::Sled,
    };
    assert_eq!(pg::backend(), expected);
    eprintln!("store backend of this run: {expected:?}");
}
