//! A PostgreSQL database as txmirror uses it: a pool of connections on a
//! small runtime of its own, a synchronous facade, and versioned
//! migrations applied at start.
//!
//! Both the tenants' stores and the service's catalog sit on it, each in a
//! schema of its own with its own migrations: one way to connect, name the
//! database in errors (never its password) and migrate.

use super::super::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;

/// How many connections one database handle opens at most: attempts hold
/// none while guest code runs, only for the length of one statement or
/// commit.
const MAX_CONNECTIONS: usize = 16;
/// How long to wait for a connection to open, or for a free one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a migration that lost a race with another node is tried again.
const MIGRATION_TRIES: u32 = 5;

/// One schema of a PostgreSQL database, migrated to a known version.
#[derive(Clone)]
pub struct PgDatabase {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The client's own runtime, shut down without blocking when the
    /// handle goes (it may be dropped inside another runtime's task).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    /// The database and schema, without the password, for messages.
    shown: String,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase").field("database", &self.inner.shown).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A failure of PostgreSQL's client or pool, as a store's error.
pub(crate) fn storage(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::storage(error)
}

/// Whether `name` can be a schema: ASCII lower-case letters, digits and
/// `_`, at most 63 bytes, starting with a letter. Such a name needs no
/// quoting, so it can be written into SQL as it is.
pub fn valid_schema(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The database a URL names, shown without its password.
fn shown(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{}:{port}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

impl PgDatabase {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// every connection looking in `schema` (created if missing; see
    /// [`valid_schema`]), and applies `migrations` not applied yet:
    /// migration `n` (from 1) takes the schema from version `n - 1` to `n`.
    ///
    /// A URL that does not parse, a database that cannot be reached and a
    /// schema migrated further than `migrations` go (by a newer build) are
    /// refused with `Open` or `Format` errors that name the database.
    pub fn connect(url: &str, schema: &str, migrations: &'static [&'static str]) -> Result<Self, StoreError> {
        if !valid_schema(schema) {
            return Err(StoreError::Open {
                path: format!("schema `{schema}`"),
                source: Arc::new(std::io::Error::other(
                    "a schema name is ASCII lower-case letters, digits and `_`, at most 63 bytes, from a letter on",
                )),
            });
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(|error| StoreError::Open {
            path: "the PostgreSQL URL (it does not parse)".into(),
            source: Arc::new(error),
        })?;
        // Every connection of the pool looks in the schema alone.
        config.options(format!("-c search_path={schema}"));
        let shown = format!("{} (schema {schema})", shown(&config));
        let open = |source: StoreError| StoreError::Open { path: shown.clone(), source: Arc::new(source) };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("txmirror-postgres")
            .enable_all()
            .build()
            .map_err(|error| open(storage(error)))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(MAX_CONNECTIONS)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| open(storage(error)))?;
        let handle = runtime.handle().clone();
        let database = Self { inner: Arc::new(Inner { pool, runtime: Some(runtime), handle, shown: shown.clone() }) };
        let schema = schema.to_string();
        let migrated = database.block(|pool| async move { migrate(&pool, &schema, migrations).await });
        match migrated {
            Ok(()) => Ok(database),
            Err(StoreError::Format { found, supported, .. }) => {
                Err(StoreError::Format { path: shown, found, supported })
            }
            Err(error) => Err(open(error)),
        }
    }

    /// The pool of connections, and the runtime its connections run on: for
    /// a task of the store's own that outlives any one call.
    pub(crate) fn pool_and_runtime(&self) -> (Pool, &tokio::runtime::Handle) {
        (self.inner.pool.clone(), &self.inner.handle)
    }

    /// The database and schema, without the password.
    pub fn shown(&self) -> &str {
        &self.inner.shown
    }

    /// Runs `work` on the database's runtime with its pool and waits for it
    /// on the caller's thread, as a call into redb waits for the disk; so it
    /// can be called from inside another runtime's tasks without nesting.
    pub fn block<T, E, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let future = work(self.inner.pool.clone());
        self.inner.handle.spawn(async move {
            // The caller may have gone; then nobody wants the answer.
            let _ = sender.send(future.await);
        });
        wait_off_worker(|| receiver.recv().map_err(|_| E::from(StoreError::Committer(None))))?
    }
}

/// Runs `wait`, a wait for the network. On a worker of a multi-threaded
/// tokio runtime (the runtime's tasks, a guest's host calls), the worker's
/// other tasks are handed to another thread first: a round trip to the
/// database must not stall every transaction the worker runs.
pub(super) fn wait_off_worker<T>(wait: impl FnOnce() -> T) -> T {
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker { tokio::task::block_in_place(wait) } else { wait() }
}

impl PgDatabase {
    /// Runs `work` on the database's runtime with its pool, and awaits it
    /// from the caller's runtime without blocking a thread.
    pub async fn run<T, E, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let future = work(self.inner.pool.clone());
        match self.inner.handle.spawn(future).await {
            Ok(answer) => answer,
            Err(_) => Err(E::from(StoreError::Committer(None))),
        }
    }
}

/// Why one try at migrating failed: SQL, which may be a race with another
/// node doing the same, or anything else.
enum Migration {
    Sql(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Migration {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Sql(error)
    }
}

/// Brings the schema to the last of `migrations` (see [`migrate_once`]).
/// Nodes starting together race to create the schema and the first table:
/// PostgreSQL's `IF NOT EXISTS` is no guard against another session
/// creating the same name at the same moment (it fails with a unique
/// violation in its catalog, or "type already exists"), so the loser tries
/// again and finds them there.
async fn migrate(pool: &Pool, schema: &str, migrations: &[&str]) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match migrate_once(pool, schema, migrations).await {
            Ok(()) => return Ok(()),
            Err(Migration::Store(error)) => return Err(error),
            Err(Migration::Sql(error)) => {
                let race = [
                    tokio_postgres::error::SqlState::UNIQUE_VIOLATION,
                    tokio_postgres::error::SqlState::DUPLICATE_SCHEMA,
                    tokio_postgres::error::SqlState::DUPLICATE_TABLE,
                    tokio_postgres::error::SqlState::DUPLICATE_OBJECT,
                ];
                if tries >= MIGRATION_TRIES || !error.code().is_some_and(|code| race.contains(code)) {
                    return Err(storage(error));
                }
                tokio::time::sleep(Duration::from_millis(20 * u64::from(tries))).await;
            }
        }
    }
}

/// One try at bringing the schema to the last of `migrations`, each
/// migration in the same SQL transaction as the schema version it reaches,
/// under the lock of the schema row so that nodes starting together
/// migrate once.
async fn migrate_once(pool: &Pool, schema: &str, migrations: &[&str]) -> Result<(), Migration> {
    let mut client = pool.get().await.map_err(|error| Migration::Store(storage(error)))?;
    // Checked to be a plain identifier by `connect`.
    client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS txm_schema (id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id), version INTEGER NOT NULL);
             INSERT INTO txm_schema (id, version) VALUES (TRUE, 0) ON CONFLICT (id) DO NOTHING;",
        )
        .await?;
    let txn = client.transaction().await?;
    let found: i32 = txn.query_one("SELECT version FROM txm_schema FOR UPDATE", &[]).await?.get(0);
    let supported = migrations.len();
    if usize::try_from(found).unwrap_or(usize::MAX) > supported {
        return Err(Migration::Store(StoreError::Format {
            path: String::new(),
            found: u64::try_from(found).unwrap_or(0),
            supported: supported as u64,
        }));
    }
    for (index, migration) in migrations.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        txn.batch_execute(migration).await?;
        let reached = i32::try_from(index + 1).unwrap_or(i32::MAX);
        txn.execute("UPDATE txm_schema SET version = $1", &[&reached]).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// A `u64` as PostgreSQL's `BIGINT`.
pub fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `BIGINT` as a `u64`; a negative one was never written by txmirror.
pub fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_does_not_parse_is_refused_without_connecting() {
        let error = PgDatabase::connect("postgres://user:secret@[bad", "txm_x", &[]).expect_err("refused");
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
        assert!(!format!("{error:?}").contains("secret"), "{error:?}");
    }

    #[test]
    fn schema_names_that_need_quoting_are_refused() {
        for name in ["", "1a", "A", "a-b", "a;drop", &"a".repeat(64)] {
            assert!(!valid_schema(name), "{name:?}");
        }
        assert!(valid_schema("txm_tenant_0123"));
    }
}
