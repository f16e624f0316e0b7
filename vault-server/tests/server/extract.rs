//! `ApiPath` and `ApiQuery`: axum's path and query rejections become JSON 400s.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use vault_server::{ApiPath, ApiQuery};

use crate::support::{call, get as get_req};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: u32,
    owner: Option<String>,
}

fn router() -> Router {
    Router::new()
        .route(
            "/items/{n}",
            get(|ApiPath(n): ApiPath<u32>| async move { format!("item {n}") }),
        )
        .route(
            "/items",
            get(|ApiQuery(page): ApiQuery<Page>| async move {
                format!("limit {} owner {:?}", page.limit, page.owner)
            }),
        )
}

#[tokio::test]
async fn path_and_query_rejections_are_json_400s() {
    let app = router();

    let r = call(&app, get_req("/items/7")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"item 7");
    let r = call(&app, get_req("/items/seven")).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_path");

    let r = call(&app, get_req("/items?limit=5&owner=ann")).await;
    assert_eq!(&r.body[..], b"limit 5 owner Some(\"ann\")");
    let r = call(&app, get_req("/items")).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(m.contains("missing field `limit`"), "{m}");
    let r = call(&app, get_req("/items?limit=5&color=red")).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(m.contains("unknown field `color`"), "{m}");
    let r = call(&app, get_req("/items?limit=sk_secretvalue")).await;
    let m = r.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(m.starts_with("limit: "), "{m}");
    assert!(!m.contains("sk_secretvalue"), "{m}");
}
