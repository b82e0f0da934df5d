//! The OpenAPI document, generated from the handlers' annotations.

use crate::api::{
    Accepted, Acknowledgement, BreakerInfo, BulkBody, BulkDropReport, BulkReplayReport, EventPage, GroupOffset,
    LeaseView, ModuleInfo, NodesView, PredictedNotice, PredictedPage, PredictionReport, QuotaView, ReplayedLetter,
    StreamEvent, SubmitBody, TransactionList, TransactionSummary, TransactionView,
};
use crate::catalog::{DeliveryLetter, NodeStatus};
use crate::error::{ErrorBody, ErrorDetail};
use crate::quota::QuotaUsage;
use crate::relay::{ReplayReport, StreamProgress, WebhookView};
use crate::server::ConnectionCounts;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};

#[derive(OpenApi)]
#[openapi(
    info(title = "txmirror", description = "The txmirror service: mirrored, predicted, durable transactions."),
    paths(
        crate::api::healthz, crate::api::readyz, crate::api::metrics,
        crate::api::upload_module, crate::api::list_modules, crate::api::show_module, crate::api::delete_module,
        crate::api::put_policy, crate::api::get_policy,
        crate::api::submit, crate::api::list_transactions, crate::api::show_transaction, crate::api::transaction_events,
        crate::api::dead_letters, crate::api::dead_letter, crate::api::drop_dead_letter, crate::api::replay,
        crate::api::replay_matching, crate::api::drop_matching,
        crate::api::model, crate::api::reload_model, crate::api::nodes,
        crate::api::read_events, crate::api::groups, crate::api::acknowledge, crate::api::predictions,
        crate::api::list_webhooks, crate::api::webhook_dead_letters, crate::api::replay_webhook_letters,
        crate::api::breakers, crate::api::quota,
    ),
    components(schemas(ErrorBody, ErrorDetail, ModuleInfo, SubmitBody, Accepted, TransactionView,
        TransactionSummary, TransactionList, NodesView, NodeStatus, LeaseView, BulkBody, BulkReplayReport,
        BulkDropReport, ReplayedLetter, StreamEvent, EventPage, Acknowledgement, GroupOffset, PredictedNotice, PredictedPage, PredictionReport,
        WebhookView, StreamProgress, DeliveryLetter, ReplayReport, BreakerInfo, QuotaView, QuotaUsage,
        ConnectionCounts)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Every operation behind a token answers 401 without a valid one,
        // 403 when the token's role may not, and 429 over the tenant's
        // quota: said once here, for all.
        let refused = |description: &str| {
            let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
            ResponseBuilder::new().description(description).content("application/json", body).build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                if operation.security.as_ref().is_some_and(|security| !security.is_empty()) {
                    responses.entry("401".into()).or_insert_with(|| refused("No valid bearer token").into());
                    responses.entry("403".into()).or_insert_with(|| refused("The token's role may not do this").into());
                    responses.entry("429".into()).or_insert_with(|| {
                        refused("The tenant's quota is spent (`quota_exceeded`); `Retry-After` says when to come back")
                            .into()
                    });
                }
                // Every body is read under the same rules (see `api/request_body.rs`).
                if has_body {
                    responses.entry("408".into()).or_insert_with(|| refused("The body came too late").into());
                    responses.entry("413".into()).or_insert_with(|| refused("The body is too large").into());
                    responses
                        .entry("415".into())
                        .or_insert_with(|| refused("The body is not of the media type the operation takes").into());
                }
            }
        }
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
