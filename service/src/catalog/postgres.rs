//! The catalog on PostgreSQL, in the schema `txm_catalog` of the database
//! the tenants' stores use, so that every node serves every tenant:
//! - `txm_modules`, `txm_policies`: `(tenant, hash)` → bytes, text;
//! - `txm_catalog_meta`: the generation, raised by every change of the two
//!   above in the same SQL transaction;
//! - `txm_nodes`: each node's id, name, address, start, last heartbeat
//!   (the database's clock) and state;
//! - `txm_roles` (migration 2): each role's holder and lease expiry (the
//!   database's clock), taken or renewed in one statement;
//! - `txm_delivery_letters` (migration 2): events webhooks could not
//!   deliver, by tenant, webhook, stream and offset.

use super::{Catalog, CatalogError, DeliveryLetter, NodeInfo, NodeStatus, StoredModule};
use deadpool_postgres::{GenericClient, Pool};
use std::future::Future;
use txmirror_runtime::store::StoreError;
use txmirror_runtime::store::postgres::{PgDatabase, uint};

/// The schema the catalog lives in.
pub const SCHEMA: &str = "txm_catalog";

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE txm_modules (
        tenant TEXT COLLATE "C" NOT NULL,
        hash TEXT COLLATE "C" NOT NULL,
        bytes BYTEA NOT NULL,
        PRIMARY KEY (tenant, hash)
    );
    CREATE TABLE txm_policies (
        tenant TEXT COLLATE "C" NOT NULL,
        hash TEXT COLLATE "C" NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (tenant, hash)
    );
    CREATE TABLE txm_catalog_meta (id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id), generation BIGINT NOT NULL);
    INSERT INTO txm_catalog_meta (id, generation) VALUES (TRUE, 0);
    CREATE TABLE txm_nodes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        address TEXT NOT NULL,
        started_unix_ms BIGINT NOT NULL,
        heartbeat_unix_ms BIGINT NOT NULL,
        state TEXT NOT NULL
    );
"#,
    r#"
    CREATE TABLE txm_roles (
        role TEXT COLLATE "C" PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_unix_ms BIGINT NOT NULL
    );
    CREATE TABLE txm_delivery_letters (
        tenant TEXT COLLATE "C" NOT NULL,
        webhook TEXT COLLATE "C" NOT NULL,
        stream TEXT COLLATE "C" NOT NULL,
        "offset" BIGINT NOT NULL,
        letter BYTEA NOT NULL,
        PRIMARY KEY (tenant, webhook, stream, "offset")
    );
"#,
];

/// Now on the database's clock, in milliseconds since the Unix epoch.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
/// How long a node that stopped without leaving (killed) stays listed.
const FORGET_SILENT_AFTER_MS: i64 = 3_600_000;

/// The catalog of the nodes of one database.
#[derive(Debug, Clone)]
pub struct PostgresCatalog {
    database: PgDatabase,
}

fn database(error: impl std::error::Error + Send + Sync + 'static) -> CatalogError {
    CatalogError::Database(StoreError::storage(error))
}

impl From<StoreError> for CatalogError {
    fn from(error: StoreError) -> Self {
        Self::Database(error)
    }
}

impl PostgresCatalog {
    /// Connects to the database at `url` and brings the catalog's schema to
    /// this build's version.
    pub fn connect(url: &str) -> Result<Self, CatalogError> {
        Ok(Self { database: PgDatabase::connect(url, SCHEMA, MIGRATIONS)? })
    }

    fn block<T, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, CatalogError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, CatalogError>> + Send + 'static,
    {
        self.database.block(work)
    }

    /// Runs `statements` in order, each with `tenant`, `hash` and its
    /// value, and raises the generation, in one SQL transaction; how many
    /// rows the first statement touched.
    fn change(&self, tenant: &str, hash: &str, statements: Vec<(&'static str, Value)>) -> Result<u64, CatalogError> {
        let (tenant, hash) = (tenant.to_string(), hash.to_string());
        self.block(|pool| async move {
            let mut client = pool.get().await.map_err(database)?;
            let txn = client.transaction().await.map_err(database)?;
            let mut first = None;
            for (statement, value) in &statements {
                let touched = match value {
                    Value::None => txn.execute(*statement, &[&tenant, &hash]).await,
                    Value::Bytes(bytes) => txn.execute(*statement, &[&tenant, &hash, bytes]).await,
                    Value::Text(text) => txn.execute(*statement, &[&tenant, &hash, text]).await,
                }
                .map_err(database)?;
                first.get_or_insert(touched);
            }
            txn.execute("UPDATE txm_catalog_meta SET generation = generation + 1", &[]).await.map_err(database)?;
            txn.commit().await.map_err(database)?;
            Ok(first.unwrap_or(0))
        })
    }
}

/// What a statement of [`PostgresCatalog::change`] binds after the tenant
/// and the hash.
enum Value {
    None,
    Bytes(Vec<u8>),
    Text(String),
}

async fn stored(
    client: &impl GenericClient,
    tenant: Option<(String, String)>,
) -> Result<Vec<StoredModule>, CatalogError> {
    let query = "SELECT m.tenant, m.hash, m.bytes, p.text FROM txm_modules m
                 LEFT JOIN txm_policies p ON p.tenant = m.tenant AND p.hash = m.hash";
    let rows = match &tenant {
        Some((tenant, hash)) => {
            client.query(&format!("{query} WHERE m.tenant = $1 AND m.hash = $2"), &[tenant, hash]).await
        }
        None => client.query(&format!("{query} ORDER BY m.tenant, m.hash"), &[]).await,
    }
    .map_err(database)?;
    Ok(rows
        .iter()
        .map(|row| StoredModule { tenant: row.get(0), hash: row.get(1), bytes: row.get(2), policy: row.get(3) })
        .collect())
}

fn letter(row: &deadpool_postgres::tokio_postgres::Row) -> Result<DeliveryLetter, CatalogError> {
    let bytes: Vec<u8> = row.get(0);
    serde_json::from_slice(&bytes)
        .map_err(|e| CatalogError::Corrupt { what: "a parked delivery".into(), reason: e.to_string() })
}

impl Catalog for PostgresCatalog {
    fn put_module(&self, tenant: &str, hash: &str, bytes: &[u8]) -> Result<(), CatalogError> {
        let statement = "INSERT INTO txm_modules (tenant, hash, bytes) VALUES ($1, $2, $3)
                         ON CONFLICT (tenant, hash) DO UPDATE SET bytes = EXCLUDED.bytes";
        self.change(tenant, hash, vec![(statement, Value::Bytes(bytes.to_vec()))])?;
        Ok(())
    }

    fn delete_module(&self, tenant: &str, hash: &str) -> Result<bool, CatalogError> {
        let removed = self.change(
            tenant,
            hash,
            vec![
                ("DELETE FROM txm_modules WHERE tenant = $1 AND hash = $2", Value::None),
                ("DELETE FROM txm_policies WHERE tenant = $1 AND hash = $2", Value::None),
            ],
        )?;
        Ok(removed > 0)
    }

    fn put_policy(&self, tenant: &str, hash: &str, text: &str) -> Result<(), CatalogError> {
        let statement = "INSERT INTO txm_policies (tenant, hash, text) VALUES ($1, $2, $3)
                         ON CONFLICT (tenant, hash) DO UPDATE SET text = EXCLUDED.text";
        self.change(tenant, hash, vec![(statement, Value::Text(text.to_string()))])?;
        Ok(())
    }

    fn modules(&self) -> Result<Vec<StoredModule>, CatalogError> {
        self.block(|pool| async move {
            let client = pool.get().await.map_err(database)?;
            stored(&client, None).await
        })
    }

    fn module(&self, tenant: &str, hash: &str) -> Result<Option<StoredModule>, CatalogError> {
        let key = (tenant.to_string(), hash.to_string());
        self.block(|pool| async move {
            let client = pool.get().await.map_err(database)?;
            Ok(stored(&client, Some(key)).await?.pop())
        })
    }

    fn generation(&self) -> Result<u64, CatalogError> {
        self.block(|pool| async move {
            let client = pool.get().await.map_err(database)?;
            let row = client.query_one("SELECT generation FROM txm_catalog_meta", &[]).await.map_err(database)?;
            Ok(uint(row.get(0)))
        })
    }

    fn join(&self, node: &NodeInfo) -> Result<(), CatalogError> {
        let node = node.clone();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(database)?;
            client
                .execute(
                    &format!(
                        "INSERT INTO txm_nodes (id, name, address, started_unix_ms, heartbeat_unix_ms, state)
                         VALUES ($1, $2, $3, {NOW_MS}, {NOW_MS}, 'serving')
                         ON CONFLICT (id) DO UPDATE SET heartbeat_unix_ms = {NOW_MS}, state = 'serving'"
                    ),
                    &[&node.id, &node.name, &node.address],
                )
                .await
                .map_err(database)?;
            client
                .execute(
                    &format!("DELETE FROM txm_nodes WHERE heartbeat_unix_ms < {NOW_MS} - $1"),
                    &[&FORGET_SILENT_AFTER_MS],
                )
                .await
                .map_err(database)?;
            Ok(())
        })
    }

    fn heartbeat(&self, node_id: &str, state: &str) -> Result<(), CatalogError> {
        let (id, state) = (node_id.to_string(), state.to_string());
        self.block(|pool| async move {
            let client = pool.get().await.map_err(database)?;
            client
                .execute(
                    &format!("UPDATE txm_nodes SET heartbeat_unix_ms = {NOW_MS}, state = $2 WHERE id = $1"),
                    &[&id, &state],
                )
                .await
                .map_err(database)?;
            Ok(())
        })
    }

    fn leave(&self, node_id: &str) -> Result<(), CatalogError> {
        let id = node_id.to_string();
        self.block(|pool| async move {
            let client = pool.get().await.map_err(database)?;
            client.execute("DELETE FROM txm_nodes WHERE id = $1", &[&id]).await.map_err(database)?;
            Ok(())
        })
    }

    fn lead(&self, role: &str, holder: &str, lease_ms: u64) -> Result<bool, CatalogError> {
        let (role, holder) = (role.to_string(), holder.to_string());
        let lease_ms = i64::try_from(lease_ms).unwrap_or(i64::MAX);
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(database)?;
            // One statement takes a free or lapsed role or renews one's
            // own; a role another holds unlapsed is left as it is, and
            // nothing returns.
            let row = client
                .query_opt(
                    &format!(
                        "INSERT INTO txm_roles (role, holder, expires_unix_ms) VALUES ($1, $2, {NOW_MS} + $3)
                         ON CONFLICT (role) DO UPDATE
                         SET holder = EXCLUDED.holder, expires_unix_ms = EXCLUDED.expires_unix_ms
                         WHERE txm_roles.holder = EXCLUDED.holder OR txm_roles.expires_unix_ms <= {NOW_MS}
                         RETURNING holder"
                    ),
                    &[&role, &holder, &lease_ms],
                )
                .await
                .map_err(database)?;
            Ok(row.is_some())
        })
    }

    fn resign(&self, role: &str, holder: &str) -> Result<(), CatalogError> {
        let (role, holder) = (role.to_string(), holder.to_string());
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(database)?;
            client
                .execute("DELETE FROM txm_roles WHERE role = $1 AND holder = $2", &[&role, &holder])
                .await
                .map_err(database)?;
            Ok(())
        })
    }

    fn role_holder(&self, role: &str) -> Result<Option<String>, CatalogError> {
        let role = role.to_string();
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(database)?;
            let row = client
                .query_opt(
                    &format!("SELECT holder FROM txm_roles WHERE role = $1 AND expires_unix_ms > {NOW_MS}"),
                    &[&role],
                )
                .await
                .map_err(database)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn park_delivery(&self, letter: &DeliveryLetter) -> Result<(), CatalogError> {
        let bytes = serde_json::to_vec(letter).map_err(CatalogError::Encode)?;
        let key = (letter.tenant.clone(), letter.webhook.clone(), letter.stream.clone());
        let offset = i64::try_from(letter.offset).unwrap_or(i64::MAX);
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(database)?;
            client
                .execute(
                    r#"INSERT INTO txm_delivery_letters (tenant, webhook, stream, "offset", letter)
                       VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (tenant, webhook, stream, "offset") DO UPDATE SET letter = EXCLUDED.letter"#,
                    &[&key.0, &key.1, &key.2, &offset, &bytes],
                )
                .await
                .map_err(database)?;
            Ok(())
        })
    }

    fn delivery_letters(&self, tenant: &str, webhook: &str, limit: usize) -> Result<Vec<DeliveryLetter>, CatalogError> {
        let (tenant, webhook) = (tenant.to_string(), webhook.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(database)?;
            let rows = client
                .query(
                    r#"SELECT letter FROM txm_delivery_letters WHERE tenant = $1 AND webhook = $2
                       ORDER BY stream, "offset" LIMIT $3"#,
                    &[&tenant, &webhook, &limit],
                )
                .await
                .map_err(database)?;
            rows.iter().map(letter).collect()
        })
    }

    fn delivery_letter_count(&self, tenant: &str, webhook: &str) -> Result<u64, CatalogError> {
        let (tenant, webhook) = (tenant.to_string(), webhook.to_string());
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(database)?;
            let row = client
                .query_one(
                    "SELECT count(*) FROM txm_delivery_letters WHERE tenant = $1 AND webhook = $2",
                    &[&tenant, &webhook],
                )
                .await
                .map_err(database)?;
            Ok(uint(row.get(0)))
        })
    }

    fn remove_delivery_letter(
        &self,
        tenant: &str,
        webhook: &str,
        stream: &str,
        offset: u64,
    ) -> Result<bool, CatalogError> {
        let key = (tenant.to_string(), webhook.to_string(), stream.to_string());
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.block(move |pool| async move {
            let client = pool.get().await.map_err(database)?;
            let removed = client
                .execute(
                    r#"DELETE FROM txm_delivery_letters
                       WHERE tenant = $1 AND webhook = $2 AND stream = $3 AND "offset" = $4"#,
                    &[&key.0, &key.1, &key.2, &offset],
                )
                .await
                .map_err(database)?;
            Ok(removed > 0)
        })
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>, CatalogError> {
        self.block(|pool| async move {
            let client = pool.get().await.map_err(database)?;
            let rows = client
                .query(
                    &format!(
                        "SELECT id, name, address, started_unix_ms, GREATEST({NOW_MS} - heartbeat_unix_ms, 0), state
                         FROM txm_nodes ORDER BY name, started_unix_ms"
                    ),
                    &[],
                )
                .await
                .map_err(database)?;
            Ok(rows
                .iter()
                .map(|row| NodeStatus {
                    id: row.get(0),
                    name: row.get(1),
                    address: row.get(2),
                    started_unix_ms: uint(row.get(3)),
                    heartbeat_age_ms: uint(row.get(4)),
                    state: row.get(5),
                })
                .collect())
        })
    }
}
