//! One delivery: an event's body POSTed to a webhook's URL, signed, with a
//! timeout, and what came of it.

use super::signature::sign;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The relay's HTTP client: HTTP/1.1, over TLS for `https://` with the
/// web's root certificates.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for the relay.
pub(crate) fn client() -> HttpClient {
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The most of a refusal's body kept in its error.
const ERROR_BODY_BYTES: usize = 256;

/// What one attempt met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `2xx`: delivered.
    Delivered,
    /// The endpoint is unwell (no connection, a timeout, `5xx`, `408`,
    /// `429`): counts for its breaker. `retry_after` is the delay it asked
    /// for, if any.
    Unavailable { error: String, retry_after: Option<Duration> },
    /// The endpoint answered and refused this event (another `4xx`, or a
    /// redirect, which deliveries do not follow).
    Refused { error: String },
}

/// A delivery ready to be sent: its id, and the body.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) id: String,
    pub(crate) body: Bytes,
}

/// POSTs `delivery` to `url`, signed with `secret`, within `timeout`.
pub(crate) async fn send(
    client: &HttpClient,
    url: &str,
    secret: &[u8],
    delivery: &Delivery,
    timeout: Duration,
) -> Outcome {
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let request = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, concat!("txmirror/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sign(secret, &delivery.id, timestamp, &delivery.body))
        .body(Full::new(delivery.body.clone()));
    let request = match request {
        Ok(request) => request,
        Err(error) => return Outcome::Refused { error: format!("cannot build the request: {error}") },
    };
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The body is read (and bounded) so that the connection can be
        // used again, and a refusal can say why.
        let body = response.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
        Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            Outcome::Unavailable { error: format!("no answer within {} ms", timeout.as_millis()), retry_after: None }
        }
        Ok(Err(error)) => Outcome::Unavailable { error: crate::error::with_causes(&error), retry_after: None },
        Ok(Ok((status, retry_after, body))) => classify(status, retry_after, &body),
    }
}

fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)]);
    let error = format!("HTTP {status}: {}", text.trim());
    let unwell =
        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT;
    if unwell { Outcome::Unavailable { error, retry_after } } else { Outcome::Refused { error } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart_by_what_they_say_of_the_endpoint() {
        assert_eq!(classify(StatusCode::NO_CONTENT, None, b""), Outcome::Delivered);
        let later = Some(Duration::from_secs(3));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, later, b"slow down"),
            Outcome::Unavailable { retry_after, .. } if retry_after == later
        ));
        assert!(matches!(classify(StatusCode::BAD_GATEWAY, None, b""), Outcome::Unavailable { .. }));
        let Outcome::Refused { error } = classify(StatusCode::UNPROCESSABLE_ENTITY, None, b"bad amount") else {
            panic!("a 422 is the event's, not the endpoint's");
        };
        assert!(error.contains("422") && error.contains("bad amount"), "{error}");
        assert!(matches!(classify(StatusCode::MOVED_PERMANENTLY, None, b""), Outcome::Refused { .. }));
    }
}
