//! The console's static files, built into the binary (no CDN, no files to deploy beside it)
//! and served under `/ui/assets/` with a year of caching: their names carry the package
//! version (the stylesheet) or the vendored script's own (htmx), so a build that changes one
//! changes its path.

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

/// The version of the vendored htmx (`assets/vendor/README.md`), as a macro so that its path
/// is built from it at compile time.
macro_rules! htmx_version {
    () => {
        "2.0.11"
    };
}

/// The vendored htmx's path.
pub(crate) const HTMX_PATH: &str = concat!("/ui/assets/htmx-", htmx_version!(), ".min.js");

/// htmx, from the npm package `htmx.org` (BSD Zero Clause), unchanged: the live parts of the
/// overview poll their fragments with it, and every page reads the same without it.
const HTMX: &[u8] = include_bytes!("../../assets/vendor/htmx.min.js");

/// `GET` of htmx.
pub(crate) async fn htmx() -> Response {
    (
        [
            (CONTENT_TYPE, "application/javascript"),
            (CACHE_CONTROL, IMMUTABLE),
        ],
        HTMX,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_htmx_is_the_version_its_readme_names() {
        let readme = include_str!("../../assets/vendor/README.md");
        assert!(readme.contains(concat!("htmx.org@", htmx_version!())));
        let head = std::str::from_utf8(&HTMX[..HTMX.len().min(4096)]).unwrap_or("");
        assert!(
            head.contains(concat!("version:\"", htmx_version!(), "\"")),
            "{head:.200}"
        );
    }
}
