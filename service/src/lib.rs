//! The txmirror service: the runtime behind an HTTP API (`txmirror serve`).
//!
//! [`Service::open`] opens the data directory (one store per tenant, the
//! [`catalog`] of modules, policies and accepted transactions) and ends the
//! transactions a previous process left in flight; [`app`] builds the
//! router, which tests drive with `oneshot`, no socket. Every failure is a
//! [`ServiceError`]: a JSON body with a stable code. The API is described
//! by the OpenAPI document at `/openapi.json` (see [`openapi`]); callers
//! and their roles are in [`auth`].
//!
//! | method and path | role | what it does |
//! |---|---|---|
//! | `GET /healthz`, `GET /readyz` | none | liveness; readiness (every store answers, not shutting down) |
//! | `GET /openapi.json`, `GET /` | none | the API description; the operator page |
//! | `GET /metrics` | operator | the tenant's metrics, Prometheus text |
//! | `POST /v1/modules`, `GET /v1/modules` | developer (list: operator too) | uploads a component, validated and compiled; lists |
//! | `GET`, `DELETE /v1/modules/{hash}` | developer (show: operator too) | paths, imports and policy; removes |
//! | `PUT`, `GET /v1/modules/{hash}/policy` | operator (get: developer too) | the module's policy (TOML), checked as the CLI does |
//! | `POST /v1/modules/{hash}/transactions` | client | runs a transaction; `Prefer: respond-async` for `202` and polling; `Idempotency-Key` |
//! | `GET /v1/transactions`, `GET /v1/transactions/{id}` | client, operator | recent transactions, filtered; one, with its whole story |
//! | `GET /v1/dlq`, `GET`, `DELETE /v1/dlq/{id}`, `POST /v1/dlq/{id}/replay` | operator | the dead-letter queue |
//! | `GET /v1/model`, `POST /v1/model/reload` | operator | the prediction model |
//! | `GET /v1/nodes` | operator | the nodes, their heartbeats, and the leases of the tenant's transactions in flight |
//! | `GET /v1/streams/{stream}/events`, `…/groups`, `…/predictions`, `POST …/groups/{group}/ack` | client, operator | a stream's events (pages, long polls, SSE), consumer groups, the predicted view's record |
//! | `GET /v1/quota` | operator | the tenant's quotas and their use on this node; the node's connections |
//! | `GET /v1/webhooks`, `GET /v1/webhooks/{name}/dead-letters`, `POST …/dead-letters/replay` | operator | the webhook relay: progress and breakers; undeliverable events; their replay |

pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
mod error;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod openapi;
pub mod quota;
pub mod relay;
pub mod server;
pub mod telemetry;
mod tenant;

pub use auth::Role;
pub use config::{
    ConfigError, NodeConfig, RetentionConfig, ServiceConfig, Statuses, StoreConfig, TokenConfig, WebhookConfig,
};
pub use error::{ErrorBody, ServiceError};
pub use tenant::Tenant;

use auth::TokenInfo;
use catalog::{Catalog, CatalogError, PostgresCatalog, RedbCatalog};
use lifecycle::Admission;
use node::Node;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use txmirror_runtime::store::{PostgresStore, RedbStore, StateStore};
use txmirror_runtime::{ModelConfig, Runtime, RuntimeConfig, StartError};

pub use api::app;

/// The largest module upload, in bytes.
pub const MAX_MODULE_BYTES: usize = 16 << 20;
/// The largest transaction request or policy, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// What the handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) tenants: Arc<BTreeMap<String, Arc<Tenant>>>,
    pub(crate) tokens: Arc<HashMap<String, TokenInfo>>,
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) node: Arc<Node>,
    /// The streams' retention rules (`[[retention]]`).
    pub(crate) retention: Arc<Vec<RetentionConfig>>,
    /// The webhooks (`[[webhooks]]`).
    pub(crate) relays: Arc<relay::Relays>,
    /// The server's connections, counted (see [`server`]).
    pub(crate) connections: Arc<server::Connections>,
}

/// The state, held by the service's background tasks without keeping it
/// (and its open files) alive.
#[derive(Debug, Clone)]
pub(crate) struct WeakState {
    tenants: Weak<BTreeMap<String, Arc<Tenant>>>,
    tokens: Weak<HashMap<String, TokenInfo>>,
    catalog: Weak<dyn Catalog>,
    admission: Weak<Admission>,
    node: Weak<Node>,
    retention: Weak<Vec<RetentionConfig>>,
    relays: Weak<relay::Relays>,
    connections: Weak<server::Connections>,
}

impl WeakState {
    /// The state, if the service is still there.
    pub(crate) fn upgrade(&self) -> Option<AppState> {
        Some(AppState {
            tenants: self.tenants.upgrade()?,
            tokens: self.tokens.upgrade()?,
            catalog: self.catalog.upgrade()?,
            admission: self.admission.upgrade()?,
            node: self.node.upgrade()?,
            retention: self.retention.upgrade()?,
            relays: self.relays.upgrade()?,
            connections: self.connections.upgrade()?,
        })
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A tenant's runtime (its store, the engine or the model) could not start.
    #[error("tenant {tenant}: {source}")]
    Runtime {
        /// The tenant.
        tenant: String,
        /// Why.
        source: StartError,
    },
    /// The catalog could not be opened or read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The configuration is not valid.
    #[error("the configuration: {0}")]
    Config(String),
}

/// A running service: its state, and what it did at the start.
#[derive(Debug)]
pub struct Service {
    /// What the handlers share.
    pub state: AppState,
    /// Transactions whose leases had lapsed at the start (left in flight
    /// by a previous process, or by a node that died), now running again
    /// or dead-lettered as their policies say.
    pub recovered: usize,
    /// Stored modules that could not be loaded again (kept in the catalog).
    pub unloadable_modules: Vec<String>,
}

impl Service {
    /// Opens the tenants' stores and the catalog, joins the nodes, and
    /// takes over what a previous process or a dead node left in flight.
    pub async fn open(config: &ServiceConfig) -> Result<Self, OpenError> {
        config.check().map_err(OpenError::Config)?;
        let mut runtime_config = RuntimeConfig::new(&config.data_dir);
        runtime_config.model = config.model.as_ref().map(ModelConfig::new);
        runtime_config.cache_dir.clone_from(&config.cache_dir);
        let names: BTreeSet<&str> = config.tokens.iter().map(|t| t.tenant.as_str()).collect();
        let mut tenants = BTreeMap::new();
        let mut first: Option<Runtime> = None;
        let max_instances = runtime_config.engine.max_instances;
        for name in names {
            let runtime_error = |source: StartError| OpenError::Runtime { tenant: name.to_string(), source };
            let store: Arc<dyn StateStore> = match &config.store.url {
                Some(url) => Arc::new(
                    PostgresStore::connect_in_schema(url, &tenant::schema(name))
                        .map_err(|e| runtime_error(e.into()))?,
                ),
                None => {
                    let path = config.data_dir.join("tenants").join(name).join("state.redb");
                    Arc::new(RedbStore::open(&path).map_err(|e| runtime_error(e.into()))?)
                }
            };
            let runtime = match &first {
                Some(first) => first.with_other_store(store.clone()).map_err(|e| runtime_error(e.into()))?,
                None => Runtime::with_store(runtime_config.clone(), store.clone()).map_err(runtime_error)?,
            };
            first.get_or_insert_with(|| runtime.clone());
            let quota = quota::TenantQuota::new(config.quota_of(name), max_instances);
            runtime.limit_instances(quota.instances());
            // Transactions' ends are written to the status stream only for
            // a tenant whose webhooks receive them.
            runtime.publish_statuses(config.webhooks.iter().any(|w| w.tenant == name && w.statuses.is_some()));
            tenants.insert(name.to_string(), Arc::new(Tenant::new(name.to_string(), runtime, store, quota)));
        }
        let tokens = config
            .tokens
            .iter()
            .map(|t| {
                let info = TokenInfo {
                    name: t.name.clone(),
                    tenant: t.tenant.clone(),
                    role: t.role,
                    profile: t.profile.clone(),
                };
                (t.sha256.clone(), info)
            })
            .collect();
        let catalog: Arc<dyn Catalog> = match &config.store.url {
            Some(url) => Arc::new(PostgresCatalog::connect(url)?),
            None => Arc::new(RedbCatalog::open(&config.data_dir.join("catalog.redb"))?),
        };
        let relays = Arc::new(relay::Relays::new(&config.webhooks).map_err(OpenError::Config)?);
        let node = Arc::new(Node::new(&config.node));
        catalog.join(&node.info(config.listen.to_string()))?;
        let state = AppState {
            tenants: Arc::new(tenants),
            tokens: Arc::new(tokens),
            catalog,
            admission: Arc::new(Admission::default()),
            node,
            retention: Arc::new(config.retention.clone()),
            relays,
            connections: Arc::default(),
        };
        let unloadable_modules = lifecycle::sync_modules(&state).await?;
        let moved = lifecycle::move_legacy_pending(&state, state.catalog.as_ref())?;
        if moved > 0 {
            tracing::info!(moved, "transactions an older build accepted were moved into their tenants' stores");
        }
        let recovered = node::take_over_lapsed(&state).await;
        if recovered > 0 {
            tracing::info!(recovered, "transactions left in flight are being ended");
        }
        node::keep_alive(&state);
        if config.store.url.is_some() {
            lifecycle::follow_catalog(&state);
        }
        lifecycle::purge_lapsed_keys_now_and_then(&state);
        relay::start(&state);
        Ok(Self { state, recovered, unloadable_modules })
    }
}

impl AppState {
    /// A tenant, by name.
    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(name)
    }

    /// The server's connections now: open, and closed for a limit.
    pub fn connections(&self) -> server::ConnectionCounts {
        self.connections.counts()
    }

    /// This node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The state without keeping it alive, for background tasks.
    pub(crate) fn downgrade(&self) -> WeakState {
        WeakState {
            tenants: Arc::downgrade(&self.tenants),
            tokens: Arc::downgrade(&self.tokens),
            catalog: Arc::downgrade(&self.catalog),
            admission: Arc::downgrade(&self.admission),
            node: Arc::downgrade(&self.node),
            retention: Arc::downgrade(&self.retention),
            relays: Arc::downgrade(&self.relays),
            connections: Arc::downgrade(&self.connections),
        }
    }

    /// Runs `work` every `interval`, from one interval after now, while the
    /// service admits transactions. The task holds the state weakly between
    /// rounds, so that a service dropped without a shutdown (in a test)
    /// closes its files, and the task ends with it.
    pub(crate) fn every<F, Fut>(&self, interval: std::time::Duration, mut work: F)
    where
        F: FnMut(AppState) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let weak = self.downgrade();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(state) = weak.upgrade() else { break };
                if !state.admission.is_open() {
                    break;
                }
                work(state).await;
            }
        });
    }

    /// Drains this node: stops admitting transactions and taking over
    /// others', waits up to `deadline` for those in flight, then hands the
    /// leases of any still running back (another node, or this one's next
    /// start, takes them over at once) and leaves the catalog. Returns how
    /// many were still running.
    pub async fn shut_down(&self, deadline: std::time::Duration) -> usize {
        node::draining(self);
        let left = self.admission.shut_down(deadline).await;
        node::hand_back(self);
        left
    }
}
