//! askee's control plane: the consent engine, revocation, the audit log,
//! discovery, the consent portal and the task coordinator, served over HTTP
//! by axum from a SQL store.
//!
//! # Layers
//!
//! Code sits in the layer it belongs to, and imports only downwards:
//!
//! ```text
//! http     handlers, extractors, problem documents, rate limits, OpenAPI
//!   ↓      (the only place that knows axum; a handler extracts, calls one
//!   ↓      service function and maps its answer)
//! service  consent, coordinator, audit, portal, dashboard, discovery
//!   ↓      (no axum, no status codes: errors are `service::error::ServiceError`,
//!   ↓      whose kind `http::problem` maps to a status)
//! store    the `Store` traits and their SQL implementation (the only
//!          place that speaks SQL); the pure verdicts it applies (quorum,
//!          exclusion, reputation) live in `verdict`
//! ```
//!
//! `state`, `config`, `keys` and `metrics` are read by every layer and
//! import none of them. `service` and `store` never import `http`; `store`
//! never imports `service`. Sibling services call each other one way only
//! (coordinator, portal and discovery call consent). Outside the layers,
//! this file and `main.rs` start the server (and so name axum), `cli` holds
//! the library's commands and `release` the TUF repository tooling.

pub mod cli;
pub mod config;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod release;
pub mod service;
pub mod state;
pub mod store;
pub mod verdict;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use state::{AppState, Clock};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load tls certificate {cert} / key {key}: {source}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Builds the shared state: keys from the data directory, the given store.
pub fn state(
    config: Config,
    store: Arc<dyn store::Store>,
    clock: Clock,
) -> Result<AppState, keys::KeyError> {
    let keys = keys::load_or_create(
        &config.data_dir,
        clock.now(),
        config.token_lifetime.as_secs() as i64,
    )?;
    Ok(AppState {
        limiter: Arc::new(state::RateLimiter::new(
            config.rate_per_second,
            config.rate_burst,
        )),
        store,
        keys: Arc::new(keys),
        clock,
        metrics: Arc::new(metrics::Metrics::default()),
        config: Arc::new(config),
        revocations: Arc::new(tokio::sync::watch::Sender::new(0)),
        portal: Arc::new(state::Pairings::default()),
    })
}

/// The full application: routes behind tracing, per-client rate limits,
/// load shedding beyond `max_in_flight` and a request timeout.
///
/// Long-polls (the revocation URL's `?wait=`) sit outside the in-flight limit
/// and the request timeout: they are idle by design, bounded by their own
/// `max_watchers` and wait cap, and must not starve ordinary requests.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let limited = http::routes(state.clone()).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(http::limit::handle_layer_error))
            .load_shed()
            .concurrency_limit(config.max_in_flight)
            .timeout(config.request_timeout),
    );
    let watches = http::watch_routes(state.clone()).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(http::limit::handle_layer_error))
            .load_shed()
            .concurrency_limit(config.max_watchers),
    );
    // The agent update repository (TUF), when one is configured.
    let limited = match &config.tuf_repo {
        Some(dir) => limited.merge(http::updates::routes(dir)),
        None => limited,
    };
    limited
        .merge(watches)
        .layer(axum::middleware::from_fn_with_state(
            state,
            http::limit::rate_limit,
        ))
        .layer(TraceLayer::new_for_http())
}

/// Signs audit checkpoints in the background whenever the log has grown.
pub fn spawn_checkpointer(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = service::audit::checkpoint_now(
                state.store.as_ref(),
                &state.keys,
                &state.config.log_origin(),
                state.clock.now_ms(),
            )
            .await
            {
                tracing::warn!(error = %e, "signing an audit checkpoint failed");
            }
        }
    })
}

pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long requests in flight may take to finish once a stop is asked.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves on ctrl-c or (on Unix) SIGTERM, as systemd and container
/// runtimes stop a service.
async fn stop_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; ctrl-c still stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves plain HTTP on an already bound listener (the demo binds a free
/// loopback port first, to know its URL) until `shutdown` completes.
pub async fn serve_on(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let checkpointer = spawn_checkpointer(state.clone());
    let sweeper = service::coordinator::spawn_sweeper(state.clone());
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve);
    checkpointer.abort();
    sweeper.abort();
    result
}

/// Serves until ctrl-c or SIGTERM, then lets requests in flight finish
/// (at most [`SHUTDOWN_GRACE`]).
pub async fn serve(state: AppState, addr: SocketAddr, tls: Option<Tls>) -> Result<(), ServeError> {
    let checkpointer = spawn_checkpointer(state.clone());
    let sweeper = service::coordinator::spawn_sweeper(state.clone());
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        None => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            tracing::info!(%addr, "askee-server listening (http)");
            let (stopping, mut stopped) = tokio::sync::watch::channel(false);
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                stop_signal().await;
                tracing::info!("stopping: finishing requests in flight");
                let _ = stopping.send(true);
            });
            tokio::select! {
                r = serve => r.map_err(ServeError::Serve),
                // Long-polls may hold a request for most of a minute: cut
                // them off after the grace period (agents fall back to the
                // signed revocation list and retry).
                _ = async {
                    let _ = stopped.wait_for(|s| *s).await;
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } => Ok(()),
            }
        }
        Some(tls) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|source| ServeError::Tls {
                    cert: tls.cert.clone(),
                    key: tls.key.clone(),
                    source,
                })?;
            tracing::info!(%addr, "askee-server listening (https)");
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                stop_signal().await;
                tracing::info!("stopping: finishing requests in flight");
                stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
            });
            axum_server::bind_rustls(addr, config)
                .handle(handle)
                .serve(app)
                .await
                .map_err(ServeError::Serve)
        }
    };
    checkpointer.abort();
    sweeper.abort();
    result
}
