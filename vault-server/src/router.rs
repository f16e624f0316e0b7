//! The router: every route group behind its role check, merged into one [`app`], and the
//! OpenAPI document made from the same list ([`openapi`]).

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::middleware::{from_fn, from_fn_with_state};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::{self};
use crate::state::AppState;
use crate::{limits, request, routes};

/// Every route, documented: the one list both [`app`] and [`openapi`] are made from.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::sys::health))
        .routes(routes!(routes::sys::seal_status))
        .routes(routes!(routes::sys::unseal))
        .merge(routes::ceremony::open_routes())
        .merge(openapi::routes())
        .merge(routes::tokens::routes())
        .merge(routes::operator::routes())
        .merge(routes::ceremony::operator_routes())
        .merge(routes::audit::routes())
        .merge(routes::archive::routes())
        .merge(routes::metrics::routes())
        .merge(routes::keys::routes())
        .merge(routes::import::routes())
        .merge(routes::verify::routes())
        .merge(routes::usage::routes())
        .merge(routes::cluster::routes())
}

/// The OpenAPI 3.1 document of every route, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    finish(api_routes().split_for_parts().1)
}

/// The router with every route and every guard (see [`Limits`](crate::Limits)); unknown paths answer 404 and
/// unknown methods 405, both in JSON.
pub fn app(state: AppState) -> Router {
    let (router, doc) = api_routes().split_for_parts();
    openapi::keep_document(&finish(doc));
    let limits = state.config().limits;
    // Outermost first. Every layer is applied to each route separately (axum's `Router::layer`),
    // so the concurrency cap is the *global* one: a per-route semaphore would multiply it. One
    // `layer` call for all of them: axum boxes a route once per call, and the layers that
    // clone their inner service per request (`from_fn`, `HandleError`) clone every box below.
    let guards = ServiceBuilder::new()
        .layer(from_fn(request::track))
        .layer(HandleErrorLayer::new(limits::overloaded))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(limits.concurrency.max(1)))
        .layer(from_fn_with_state(limits.request_timeout, limits::timeout))
        .layer(from_fn_with_state(limits, limits::limit_body))
        .layer(limits::extractor_body_limit(&limits))
        .layer(axum::Extension(state.clone()));
    router
        .merge(crate::ui::routes(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(guards)
        .with_state(state)
}

/// What utoipa's document needs before generators and linters take it as it is:
///
/// - axum's wildcard `/v1/auth/{*path}` becomes `/v1/auth/{path}` (OpenAPI has no wildcard),
///   its parameter named `path` and said to hold the rest of the path, slashes included;
/// - one handler serving several methods (forward-auth) gets one operation id from utoipa, but
///   OpenAPI wants each operation's id unique: such ids get the method (and `_path` for the
///   wildcard route) appended;
/// - a HEAD operation answers no body, so its responses promise none;
/// - an operation that needs no token says so (`security: []`), as linters ask.
fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::Parameter;
    if let Some(item) = doc.paths.paths.remove(routes::verify::AUTH_WILDCARD) {
        let mut item = item;
        each(&mut item, |_, op| {
            for param in op.parameters.iter_mut().flatten() {
                if let utoipa::openapi::RefOr::T(param) = param {
                    rename_wildcard(param);
                }
            }
        });
        doc.paths
            .paths
            .insert(routes::verify::AUTH_WILDCARD_DOC.to_owned(), item);
    }
    fn rename_wildcard(param: &mut Parameter) {
        if param.name == "*path" {
            param.name = "path".to_owned();
            param.description = Some(
                "The rest of the original request's path, slashes included (Envoy appends it); \
                 ignored"
                    .to_owned(),
            );
        }
    }
    let mut doc = unique_operation_ids(doc);
    for item in doc.paths.paths.values_mut() {
        if let Some(head) = item.head.as_mut() {
            for response in head.responses.responses.values_mut() {
                if let utoipa::openapi::RefOr::T(response) = response {
                    response.content.clear();
                }
            }
        }
        each(item, |_, op| {
            if op.security.is_none() {
                op.security = Some(Vec::new());
            }
        });
    }
    doc
}

/// Calls `f` with each operation of `item` and its method.
fn each(
    item: &mut utoipa::openapi::PathItem,
    mut f: impl FnMut(&'static str, &mut utoipa::openapi::path::Operation),
) {
    let methods = [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ];
    for (method, op) in methods {
        if let Some(op) = op {
            f(method, op);
        }
    }
}

/// One handler serving several methods (forward-auth) gets one operation id from utoipa, but
/// OpenAPI wants each operation's id unique: such ids get the method (and `_path` for the
/// wildcard route) appended.
fn unique_operation_ids(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in doc.paths.paths.values_mut() {
        each(item, |_, op| {
            if let Some(id) = &op.operation_id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        });
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let suffix = if path.contains('{') { "_path" } else { "" };
        each(item, |method, op| {
            if let Some(id) = op.operation_id.as_ref().filter(|id| seen[*id] > 1) {
                op.operation_id = Some(format!("{id}{suffix}_{method}"));
            }
        });
    }
    doc
}

async fn not_found() -> ApiError {
    ApiError::no_route()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
