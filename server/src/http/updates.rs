//! The agent update repository (TUF), served read-only when configured.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::http::{HeaderValue, header};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::release::{metadata_dir, targets_dir};

/// The repository, read-only: `/tuf/metadata/…` and `/tuf/targets/…`
/// (JSON as `application/json`, binaries as `application/octet-stream`,
/// no directory listing, no index pages, `no-cache` so the timestamp is
/// always fetched anew).
pub fn routes(repo: &Path) -> Router {
    let dir = |d: PathBuf| ServeDir::new(d).append_index_html_on_directories(false);
    Router::new()
        .nest_service("/tuf/metadata", dir(metadata_dir(repo)))
        .nest_service("/tuf/targets", dir(targets_dir(repo)))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}
