//! `txmirror serve`: the service, until a signal stops it.

use super::Target;
use crate::exit::Failed;
use anyhow::Context as _;
use std::path::Path;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use txmirror_service::{Service, ServiceConfig};

/// Serves the runtime over HTTP.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeCommand {
    /// The configuration file (TOML; see docs/service.md).
    #[arg(long, default_value = "txmirror.toml")]
    config: PathBuf,
    /// Listens here instead of the configuration's address (port 0: any free port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

impl ServeCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        // The configuration names the data directory; --data-dir is not used.
        drop(target.local()?);
        Ok(serve(&self.config, self.listen).await?)
    }
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully: stops
/// admitting transactions, waits for those in flight up to the
/// configuration's deadline, and hands the leases of the rest back (their
/// acceptance is durable: another node, or the next start, runs them).
async fn serve(config_path: &Path, listen: Option<std::net::SocketAddr>) -> anyhow::Result<u8> {
    let mut config = ServiceConfig::load(config_path).map_err(|error| {
        anyhow::anyhow!(
            "{error}\n(`txmirror token new --tenant NAME --role operator >> {0}` starts one)",
            config_path.display()
        )
    })?;
    if let Some(listen) = listen {
        config.listen = listen;
        // Checked again before anything binds: plain HTTP on a network
        // address is refused without a socket ever listening there.
        config.check().map_err(|message| anyhow::anyhow!("{}: {message}", config_path.display()))?;
    }
    // Bound first, so that the node joins the others under the address it
    // serves (a port of 0 picks one); requests wait until it serves.
    // Bad TLS files are refused before anything starts.
    if let Some(tls) = &config.server.tls {
        tls.acceptor().context("[server.tls]")?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    config.listen = listener.local_addr()?;
    let service = Service::open(&config).await.context("the service could not start")?;
    if service.recovered > 0 {
        eprintln!("txmirror: {} transactions left in flight are being ended", service.recovered);
    }
    for module in &service.unloadable_modules {
        eprintln!("txmirror: stored module {module} no longer loads (see the log); it is kept");
    }
    let scheme = if config.server.tls.is_some() { "https" } else { "http" };
    eprintln!("txmirror serving on {scheme}://{}", config.listen);
    let state = service.state.clone();
    let stop_server = CancellationToken::new();
    let mut server = tokio::spawn(txmirror_service::server::serve(
        listener,
        state.clone(),
        config.server.clone(),
        stop_server.clone(),
    ));
    let deadline = config.shutdown_deadline();
    tokio::select! {
        () = signal() => {}
        ended = &mut server => {
            ended.context("the server failed")??;
            anyhow::bail!("the server stopped by itself");
        }
    }
    eprintln!("txmirror: shutting down; waiting up to {}s for transactions in flight", deadline.as_secs());
    let parked = state.shut_down(deadline).await;
    if parked > 0 {
        eprintln!(
            "txmirror: {parked} transactions still running were handed back; another node or the next start ends them"
        );
    }
    // The server stops accepting and gives open connections a moment to
    // take their last answers.
    stop_server.cancel();
    server.await.context("the server failed")??;
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
