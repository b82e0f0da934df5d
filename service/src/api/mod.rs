//! The HTTP routes, one file per resource.

mod breakers;
mod cancel;
mod dead_letters;
mod error_format;
pub(crate) use error_format::code as error_code;
mod model;
mod modules;
mod nodes;
mod ops;
mod paths;
mod quota;
mod request_body;
mod streams;
mod transaction_events;
mod transactions;
mod webhooks;

pub use breakers::BreakerInfo;
pub use cancel::Cancelling;
pub use dead_letters::{BulkBody, BulkDropReport, BulkReplayReport, ReplayedLetter};
pub use modules::ModuleInfo;
pub use nodes::{LeaseView, NodesView};
pub use quota::QuotaView;
pub use streams::{
    Acknowledgement, EventPage, GroupOffset, PredictedNotice, PredictedPage, PredictionReport, StreamEvent,
};
pub use transactions::{Accepted, SubmitBody, TransactionList, TransactionSummary, TransactionView};

use crate::{AppState, MAX_MODULE_BYTES, MAX_REQUEST_BYTES, ServiceError};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub(crate) use breakers::__path_breakers;
pub(crate) use cancel::__path_cancel;
pub(crate) use dead_letters::__path_dead_letters;
pub(crate) use dead_letters::{__path_dead_letter, __path_drop_dead_letter, __path_replay};
pub(crate) use dead_letters::{__path_drop_matching, __path_replay_matching};
pub(crate) use model::{__path_model, __path_reload_model};
pub(crate) use modules::{
    __path_delete_module, __path_get_policy, __path_list_modules, __path_put_policy, __path_show_module,
    __path_upload_module,
};
pub(crate) use nodes::__path_nodes;
pub(crate) use ops::{__path_healthz, __path_metrics, __path_readyz};
pub(crate) use paths::__path_report as __path_paths_report;
pub(crate) use quota::__path_quota;
pub(crate) use streams::{__path_acknowledge, __path_groups, __path_predictions, __path_read_events};
pub(crate) use transaction_events::__path_transaction_events;
pub(crate) use transactions::{__path_list_transactions, __path_show_transaction, __path_submit};
pub(crate) use webhooks::{__path_list_webhooks, __path_replay_webhook_letters, __path_webhook_dead_letters};

/// The service's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(ops::operator_page))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_document))
        .route(
            "/v1/modules",
            post(modules::upload_module).get(modules::list_modules).layer(DefaultBodyLimit::max(MAX_MODULE_BYTES)),
        )
        .route("/v1/modules/{hash}", get(modules::show_module).delete(modules::delete_module))
        .route(
            "/v1/modules/{hash}/policy",
            get(modules::get_policy).put(modules::put_policy).layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES)),
        )
        .route(
            "/v1/modules/{hash}/transactions",
            post(transactions::submit).layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES)),
        )
        .route("/v1/modules/{hash}/paths/report", get(paths::report))
        .route("/v1/transactions", get(transactions::list_transactions))
        .route("/v1/transactions/{id}", get(transactions::show_transaction))
        .route("/v1/transactions/{id}/events", get(transaction_events::transaction_events))
        .route("/v1/transactions/{id}/cancel", post(cancel::cancel))
        .route("/v1/dlq", get(dead_letters::dead_letters))
        // Static segments win over `{id}`: a transaction id is never
        // `replay` or `drop` (see `transactions::check_id`).
        .route("/v1/dlq/replay", post(dead_letters::replay_matching))
        .route("/v1/dlq/drop", post(dead_letters::drop_matching))
        .route("/v1/dlq/{id}", get(dead_letters::dead_letter).delete(dead_letters::drop_dead_letter))
        .route("/v1/dlq/{id}/replay", post(dead_letters::replay))
        .route("/v1/model", get(model::model))
        .route("/v1/model/reload", post(model::reload_model))
        .route("/v1/nodes", get(nodes::nodes))
        .route("/v1/breakers", get(breakers::breakers))
        .route("/v1/quota", get(quota::quota))
        .route("/v1/streams/{stream}/events", get(streams::read_events))
        .route("/v1/streams/{stream}/groups", get(streams::groups))
        .route("/v1/streams/{stream}/predictions", get(streams::predictions))
        .route("/v1/streams/{stream}/groups/{group}/ack", post(streams::acknowledge))
        .route("/v1/webhooks", get(webhooks::list_webhooks))
        .route("/v1/webhooks/{name}/dead-letters", get(webhooks::webhook_dead_letters))
        .route("/v1/webhooks/{name}/dead-letters/replay", post(webhooks::replay_webhook_letters))
        .fallback(|| async { ServiceError::NotFound("no such endpoint; GET /openapi.json lists them".into()) })
        .layer(axum::middleware::map_response(error_format::as_json))
        .with_state(state)
}
