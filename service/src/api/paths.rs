//! How the arms of a module's A/B split compare (`[split]` in its policy).

use crate::auth::{Caller, Role};
use crate::{AppState, ErrorBody, ServiceError, lifecycle};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use txmirror_runtime::SplitReport;

/// The most transaction records one report looks through.
const MAX_SCAN: usize = 100_000;

/// How many records to look through.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    /// At most this many transaction records of the tenant, of every
    /// module, in id order (default 10,000; from 1 to 100,000).
    #[param(minimum = 1, maximum = 100000)]
    scan: Option<usize>,
}

/// Each arm's success rate, latency and cost, with 95% confidence
/// intervals, over the module's transactions that ran on an arm.
#[utoipa::path(get, path = "/v1/modules/{hash}/paths/report", tag = "policies", operation_id = "paths_report",
    params(("hash" = String, Path), ReportQuery),
    responses((status = 200, body = Object, description = "`{module, scanned, arms: [{arm, transactions, committed, \
        success_rate, latency_ms, latency_p50_ms, latency_p95_ms, cost, attempts_per_transaction}]}`; each \
        estimate is `{value, low, high}`"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Json<SplitReport>, ServiceError> {
    caller.require(&[Role::Operator, Role::Developer])?;
    let Query(query) = query.map_err(|e| ServiceError::BadRequest(e.body_text()))?;
    let scan = query.scan.unwrap_or(10_000);
    if !(1..=MAX_SCAN).contains(&scan) {
        return Err(ServiceError::BadRequest(format!("scan must be 1 to {MAX_SCAN}")));
    }
    let registered = lifecycle::module(&state, &caller.tenant, &hash).await?;
    let policy = registered.policy.clone().ok_or_else(|| ServiceError::NoPolicy(hash.clone()))?;
    // The scan reads the store page by page: off the async workers.
    let runtime = caller.tenant.runtime().clone();
    let report = tokio::task::spawn_blocking(move || runtime.split_report(&hash, &policy, scan))
        .await
        .map_err(|e| ServiceError::Internal(format!("the report's task failed: {e}")))??;
    Ok(Json(report))
}
