//! The console's static files, built into the binary (no CDN, no files to deploy beside it)
//! and served under `/ui/assets/` with a year of caching: their names carry the package
//! version, so a build that changes one changes its path.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

/// The stylesheet's path.
pub(crate) const CSS_PATH: &str = concat!("/ui/assets/console-", env!("CARGO_PKG_VERSION"), ".css");

/// The hand-written stylesheet.
const CSS: &[u8] = include_bytes!("../../assets/console.css");

/// Long caching: the path changes whenever the bytes may.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `GET` of the stylesheet.
pub(crate) async fn css() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, IMMUTABLE),
        ],
        CSS,
    )
        .into_response()
}
