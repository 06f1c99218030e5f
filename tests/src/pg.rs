//! The store backend the hubs of a test run use, and, for PostgreSQL, a
//! fresh empty database for each hub.
//!
//! Two variables choose it (`scripts/test.sh` sets both for its PostgreSQL
//! pass; `scripts/test-postgres.sh start` prints the URL):
//!
//! - `AGENTCOM_TEST_STORE`: `sled` (the default) or `postgres`;
//! - `AGENTCOM_TEST_PG_URL`: the admin URL of a running PostgreSQL, as a
//!   role that may create databases, e.g.
//!   `postgres://agentcom@127.0.0.1:PORT/postgres`.
//!
//! With `postgres`, every [`crate::hub::Hub`] gets a database of its own
//! (created empty, kept across its restarts, dropped when the `Hub` is
//! dropped) and its hub process runs with `AGENTCOM_STORE__BACKEND=postgres`
//! and `AGENTCOM_STORE__URL` naming that database — unless the test sets
//! `AGENTCOM_STORE__BACKEND` itself, which wins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

/// The variable naming the backend of the test run.
pub const STORE_VAR: &str = "AGENTCOM_TEST_STORE";
/// The variable holding the admin URL of the test PostgreSQL.
pub const URL_VAR: &str = "AGENTCOM_TEST_PG_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

/// The backend the hubs of this run use: PostgreSQL when
/// `AGENTCOM_TEST_STORE=postgres` (then `AGENTCOM_TEST_PG_URL` must be
/// set), sled otherwise.
pub fn backend() -> Backend {
    let store = std::env::var(STORE_VAR).unwrap_or_default();
    match store.as_str() {
        "" | "sled" => Backend::Sled,
        "postgres" => {
            assert!(
                admin_url().is_some(),
                "{STORE_VAR}=postgres needs {URL_VAR} (the admin URL printed by \
                 `scripts/test-postgres.sh start`)"
            );
            Backend::Postgres
        }
        other => panic!("{STORE_VAR}={other}: expected sled or postgres"),
    }
}

/// For a test whose subject is sled's own files on disk: on PostgreSQL it
/// says it is skipped and why, and answers true (the test returns).
///
/// ```ignore
/// if pg::sled_only("it reads sled's data files") { return; }
/// ```
pub fn sled_only(why: &str) -> bool {
    let skip = backend() == Backend::Postgres;
    if skip {
        eprintln!("skipped on PostgreSQL: {why}");
    }
    skip
}

/// The admin URL of the test PostgreSQL, if one is given.
pub fn admin_url() -> Option<String> {
    std::env::var(URL_VAR).ok().filter(|u| !u.is_empty())
}

/// A database of its own in the test PostgreSQL, dropped (with whatever
/// is still connected to it) when this is dropped.
pub struct Database {
    pub name: String,
    /// Its URL: the admin URL with the database name in its path.
    pub url: String,
    admin: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Database {
    /// Create a fresh, empty database in the PostgreSQL of
    /// `AGENTCOM_TEST_PG_URL`; its name is unique to this process and call
    /// (`agentcom_<pid>_<n>_<seconds>`: also unique across runs against a
    /// cluster started by hand and kept).
    pub fn create() -> Database {
        let admin = admin_url().unwrap_or_else(|| panic!("{URL_VAR} is not set"));
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = format!(
            "agentcom_{}_{}_{secs}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut client = connect(&admin);
        client
            .batch_execute(&format!("CREATE DATABASE {}", ident(&name)))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        Database {
            url: with_database(&admin, &name),
            name,
            admin,
        }
    }

    /// A connection to this database.
    pub fn connect(&self) -> Client {
        connect(&self.url)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Best effort: the cluster is thrown away at the end anyway.
        if let Ok(mut client) = Client::connect(&self.admin, NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                ident(&self.name)
            ));
        }
    }
}

/// A connection to `url`, or a panic that names it.
pub fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// The tables of the database at `url` outside PostgreSQL's own schemas,
/// as `schema.table`, sorted.
pub fn tables(url: &str) -> Vec<String> {
    connect(url)
        .query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY 1",
            &[],
        )
        .unwrap_or_else(|e| panic!("listing the tables of {url}: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Every row of every table of the database at `url` (outside
/// PostgreSQL's own schemas), as text (`bytea` shows as `\x` and hex):
/// what a test searches for something that must not be stored.
pub fn dump_text(url: &str) -> String {
    let mut client = connect(url);
    let tables = client
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
             AND table_type = 'BASE TABLE'",
            &[],
        )
        .unwrap_or_else(|e| panic!("listing the tables of {url}: {e}"));
    let mut out = String::new();
    for t in tables {
        let (schema, table): (String, String) = (t.get(0), t.get(1));
        let sql = format!("SELECT t::text FROM {}.{} t", ident(&schema), ident(&table));
        for row in client
            .query(&sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
        {
            out.push_str(row.get(0));
            out.push('\n');
        }
    }
    out
}

/// `admin` (`postgres://user@host:port/db?params`) with `db` as its database.
pub fn with_database(admin: &str, db: &str) -> String {
    let authority = admin.find("://").map(|i| i + 3).unwrap_or(0);
    let path = admin[authority..]
        .find(['/', '?'])
        .map(|i| authority + i)
        .unwrap_or(admin.len());
    let query = admin[path..].find('?').map(|i| &admin[path + i..]);
    format!("{}/{db}{}", &admin[..path], query.unwrap_or(""))
}

/// The settings a hub process gets for its store, given those the test set
/// (`test_env`) and the URL of its database (PostgreSQL only).
pub fn store_env(test_env: &[(String, String)], db_url: Option<&str>) -> Vec<(String, String)> {
    let set = |k: &str| test_env.iter().any(|(key, _)| key == k);
    match db_url {
        Some(url) if !set("AGENTCOM_STORE__BACKEND") => {
            let mut out = vec![("AGENTCOM_STORE__BACKEND".into(), "postgres".into())];
            if !set("AGENTCOM_STORE__URL") {
                out.push(("AGENTCOM_STORE__URL".into(), url.into()));
            }
            out
        }
        _ => Vec::new(),
    }
}

/// A double-quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://agentcom@127.0.0.1:5432/postgres", "x"),
            "postgres://agentcom@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://a@h:1", "x"), "postgres://a@h:1/x");
        assert_eq!(
            with_database("postgres://a@h:1/db?sslmode=disable", "x"),
            "postgres://a@h:1/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://a@h:1?sslmode=disable", "x"),
            "postgres://a@h:1/x?sslmode=disable"
        );
    }

    #[test]
    fn the_test_env_wins_over_the_store_settings() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            store_env(&env(&[("AGENTCOM_X", "1")]), Some("postgres://d")),
            env(&[
                ("AGENTCOM_STORE__BACKEND", "postgres"),
                ("AGENTCOM_STORE__URL", "postgres://d")
            ])
        );
        assert!(store_env(&env(&[("AGENTCOM_STORE__BACKEND", "sled")]), Some("u")).is_empty());
        assert_eq!(
            store_env(&env(&[("AGENTCOM_STORE__URL", "mine")]), Some("u")),
            env(&[("AGENTCOM_STORE__BACKEND", "postgres")])
        );
        assert!(store_env(&[], None).is_empty());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
