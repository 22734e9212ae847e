//! The committed OpenAPI document must be what the code generates.
//! Regenerate with `ASKEE_BLESS=1 cargo test -p askee-server --test openapi`
//! (or `cargo run -p askee-server -- openapi > openapi/openapi.json`).

#[test]
fn committed_openapi_matches_the_code() {
    askee_testkit::check(
        "openapi/openapi.json",
        &askee_server::http::openapi_document(),
    );
}
