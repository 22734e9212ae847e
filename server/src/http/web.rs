//! The browser pages (`web/`), embedded in the binary so the server stays
//! one file: the volunteer's portal at `/portal` and the operator dashboard
//! at `/dashboard`. Plain HTML, CSS and JavaScript; no third-party code, no
//! inline scripts (the content security policy forbids them).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const PORTAL_HTML: &str = include_str!("../../../web/portal.html");
const DASHBOARD_HTML: &str = include_str!("../../../web/dashboard.html");
const PORTAL_JS: &str = include_str!("../../../web/portal.js");
const DASHBOARD_JS: &str = include_str!("../../../web/dashboard.js");
const COMMON_JS: &str = include_str!("../../../web/common.js");
const STYLE_CSS: &str = include_str!("../../../web/style.css");

/// Scripts and styles only from this origin, no framing, no form posts, no
/// referrer (the session secret sits in the URL fragment, but be sure).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(|| async { page(HTML, PORTAL_HTML) }))
        .route("/dashboard", get(|| async { page(HTML, DASHBOARD_HTML) }))
        .route("/web/portal.js", get(|| async { page(JS, PORTAL_JS) }))
        .route(
            "/web/dashboard.js",
            get(|| async { page(JS, DASHBOARD_JS) }),
        )
        .route("/web/common.js", get(|| async { page(JS, COMMON_JS) }))
        .route(
            "/web/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }),
        )
}
