//! The OpenAPI document, generated from the handlers' annotations.

use crate::api::{
    Accepted, Acknowledgement, BreakerInfo, BulkBody, BulkDropReport, BulkReplayReport, Cancelling, EventPage,
    GroupOffset, LeaseView, ModuleInfo, NodesView, PredictedNotice, PredictedPage, PredictionReport, QuotaView,
    ReplayedLetter, StreamEvent, SubmitBody, TransactionList, TransactionSummary, TransactionView,
};
use crate::catalog::{DeliveryLetter, NodeStatus};
use crate::error::{ErrorBody, ErrorDetail};
use crate::quota::QuotaUsage;
use crate::relay::{ReplayReport, StreamProgress, WebhookView};
use crate::server::ConnectionCounts;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

#[derive(OpenApi)]
#[openapi(
    info(title = "txmirror", description = "The txmirror service: mirrored, predicted, durable transactions."),
    paths(
        crate::api::healthz, crate::api::readyz, crate::api::metrics,
        crate::api::upload_module, crate::api::list_modules, crate::api::show_module, crate::api::delete_module,
        crate::api::put_policy, crate::api::get_policy,
        crate::api::submit, crate::api::list_transactions, crate::api::show_transaction, crate::api::transaction_events,
        crate::api::cancel,
        crate::api::dead_letters, crate::api::dead_letter, crate::api::drop_dead_letter, crate::api::replay,
        crate::api::replay_matching, crate::api::drop_matching,
        crate::api::model, crate::api::reload_model, crate::api::nodes,
        crate::api::read_events, crate::api::groups, crate::api::acknowledge, crate::api::predictions,
        crate::api::list_webhooks, crate::api::webhook_dead_letters, crate::api::replay_webhook_letters,
        crate::api::breakers, crate::api::quota, crate::api::paths_report,
    ),
    components(schemas(ErrorBody, ErrorDetail, ModuleInfo, SubmitBody, Accepted, Cancelling, TransactionView,
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
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
                ("head", &mut item.head),
                ("options", &mut item.options),
                ("trace", &mut item.trace),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                constrain_parameters(path, operation);
                link(path, method, operation);
                let has_body = operation.request_body.is_some();
                let parameters = operation.parameters.iter().flatten();
                let in_path = parameters.clone().any(|parameter| parameter.parameter_in == ParameterIn::Path);
                let in_query = parameters.clone().any(|parameter| parameter.parameter_in == ParameterIn::Query);
                let responses = &mut operation.responses.responses;
                if operation.security.as_ref().is_some_and(|security| !security.is_empty()) {
                    responses.entry("401".into()).or_insert_with(|| refused("No valid bearer token").into());
                    responses.entry("403".into()).or_insert_with(|| refused("The token's role may not do this").into());
                    responses.entry("429".into()).or_insert_with(|| {
                        refused("The tenant's quota is spent (`quota_exceeded`); `Retry-After` says when to come back")
                            .into()
                    });
                    // Every operation behind a token reads the tenant's store
                    // or the catalog, which may be out of reach (a database
                    // that is down), or the node may be shutting down.
                    responses.entry("503".into()).or_insert_with(|| {
                        refused("The store cannot be reached or the node is shutting down; retry").into()
                    });
                }
                if in_path {
                    responses.entry("404".into()).or_insert_with(|| refused("No such resource").into());
                }
                // A path or query that does not decode at all (a segment
                // that is not UTF-8) is refused before any handler runs.
                if in_path {
                    responses
                        .entry("400".into())
                        .or_insert_with(|| refused("The path does not decode (`bad_request`)").into());
                }
                if in_path || in_query || has_body {
                    responses
                        .entry("422".into())
                        .or_insert_with(|| refused("A parameter or the body is not valid (`bad_request`)").into());
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

/// The links from what an operation answers to the operations it names,
/// so that a client (or a fuzzer's stateful phase) can follow them: an
/// uploaded module's hash to its module, policy and transactions; a
/// submitted transaction's id to its record and its events.
fn link(path: &str, method: &str, operation: &mut utoipa::openapi::path::Operation) {
    let (statuses, parameter, source, targets): (&[&str], &str, &str, &[&str]) = match (path, method) {
        ("/v1/modules", "post") => (
            &["201"],
            "hash",
            "$response.body#/hash",
            &["show_module", "get_policy", "put_policy", "submit", "delete_module"],
        ),
        ("/v1/modules/{hash}/transactions", "post") => (
            &["200", "202"],
            "id",
            "$response.body#/transaction_id",
            &["show_transaction", "transaction_events", "cancel"],
        ),
        _ => return,
    };
    for status in statuses {
        let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else { continue };
        for target in targets {
            let link = LinkBuilder::new().operation_id(*target).parameter(parameter, source).build();
            response.links.insert((*target).to_string(), RefOr::T(link));
        }
    }
}

/// The constraints the service checks on ids, hashes and names, in the
/// document, so that a client (or a fuzzer) knows them before it asks.
fn constrain_parameters(path: &str, operation: &mut utoipa::openapi::path::Operation) {
    let string = |pattern: &str, max: usize| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(max))
            .pattern(Some(pattern))
            .build()
    };
    for parameter in operation.parameters.iter_mut().flatten() {
        let schema = match (parameter.parameter_in.clone(), parameter.name.as_str()) {
            (ParameterIn::Path, "hash") => string("^[0-9a-f]{64}$", 64),
            (ParameterIn::Path, "id") if path.starts_with("/v1/transactions") || path.starts_with("/v1/dlq") => {
                string("^[A-Za-z0-9._-]{1,128}$", 128)
            }
            (ParameterIn::Path, "stream" | "group" | "name") | (ParameterIn::Header, "Idempotency-Key") => {
                string("^[^\\x00]+$", txmirror_runtime::vocab::MAX_NAME_LEN)
            }
            _ => continue,
        };
        parameter.schema = Some(schema.into());
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON, as served. utoipa 5.5 writes a link's
/// `operationId` as `operation_id` (its `Link` lacks the camel-case rename
/// its other objects have), which OpenAPI tools reject: the keys are
/// renamed here.
pub fn document_json() -> serde_json::Value {
    let mut json = serde_json::to_value(document()).unwrap_or_default();
    let operations = json["paths"].as_object_mut().into_iter().flat_map(|paths| paths.values_mut());
    let operations = operations.filter_map(|item| item.as_object_mut()).flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(responses) = operation["responses"].as_object_mut() else { continue };
        for response in responses.values_mut() {
            let Some(links) = response.get_mut("links").and_then(|links| links.as_object_mut()) else { continue };
            for link in links.values_mut().filter_map(|link| link.as_object_mut()) {
                for (snake, camel) in [("operation_id", "operationId"), ("operation_ref", "operationRef")] {
                    if let Some(value) = link.remove(snake) {
                        link.insert(camel.to_string(), value);
                    }
                }
            }
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_their_operations_as_openapi_spells_it() {
        let json = document_json();
        let link = &json["paths"]["/v1/modules"]["post"]["responses"]["201"]["links"]["show_module"];
        assert_eq!(link["operationId"], "show_module", "{link}");
        assert_eq!(link["parameters"]["hash"], "$response.body#/hash", "{link}");
        assert!(link.get("operation_id").is_none(), "{link}");
    }
}
