//! `txmirror serve` and `txmirror token new`.

use anyhow::Context as _;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use txmirror_service::{Role, Service, ServiceConfig};

/// How long the server is given to close its connections once the
/// transactions have finished or been parked.
const DRAIN: Duration = Duration::from_secs(2);

/// Serves until SIGINT or SIGTERM, then shuts down gracefully: stops
/// admitting transactions, waits for those in flight up to the
/// configuration's deadline, and parks the rest (their acceptance is
/// durable: the next start runs them).
pub(crate) async fn serve(config_path: &Path, listen: Option<std::net::SocketAddr>) -> anyhow::Result<u8> {
    let mut config = ServiceConfig::load(config_path).map_err(|error| {
        anyhow::anyhow!(
            "{error}\n(`txmirror token new --tenant NAME --role operator >> {0}` starts one)",
            config_path.display()
        )
    })?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let service = Service::open(&config).await.context("the service could not start")?;
    if service.recovered > 0 {
        eprintln!("txmirror: {} transactions left in flight are being ended", service.recovered);
    }
    for module in &service.unloadable_modules {
        eprintln!("txmirror: stored module {module} no longer loads (see the log); it is kept");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    eprintln!("txmirror serving on http://{}", listener.local_addr()?);
    let state = service.state.clone();
    let stop_server = CancellationToken::new();
    let server = axum::serve(listener, txmirror_service::app(state.clone()))
        .with_graceful_shutdown(stop_server.clone().cancelled_owned());
    let deadline = config.shutdown_deadline();
    let shutdown = async {
        signal().await;
        eprintln!("txmirror: shutting down; waiting up to {}s for transactions in flight", deadline.as_secs());
        let parked = state.shut_down(deadline).await;
        if parked > 0 {
            eprintln!("txmirror: {parked} transactions parked; the next start runs them");
        }
        stop_server.cancel();
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        result = server => result.context("the server failed")?,
        () = shutdown => {}
    }
    Ok(0)
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints a new token on standard error (shown once) and its configuration
/// entry, which holds only the token's hash, on standard output.
pub(crate) fn new_token(tenant: &str, role: Role, name: Option<&str>) -> String {
    let token = txmirror_service::auth::new_token();
    let name = name.map_or_else(|| format!("{tenant}-{role}"), str::to_string);
    eprintln!("token for {name} (shown once, keep it secret): {token}");
    format!(
        "\n[[tokens]]\nname = \"{name}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
        txmirror_service::auth::hash_token(&token)
    )
}
