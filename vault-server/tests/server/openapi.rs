//! `GET /openapi.json`: OpenAPI 3.1, every route, every error response with the error schema.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};

use crate::support::{app, call, get, shares_vault};

/// Every route the server answers, as (method, path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/sys/health"),
    ("head", "/v1/sys/health"),
    ("get", "/v1/sys/seal-status"),
    ("post", "/v1/sys/unseal"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
    ("post", "/v1/sys/tokens"),
    ("get", "/v1/sys/tokens"),
    ("post", "/v1/sys/tokens/{id}/revoke"),
    ("post", "/v1/sys/seal"),
    ("post", "/v1/sys/rotate"),
    ("post", "/v1/sys/rewrap"),
    ("post", "/v1/sys/rotate-audit-key"),
    ("get", "/v1/sys/backup"),
    ("post", "/v1/sys/rekey"),
    ("post", "/v1/sys/generate-root"),
    ("get", "/v1/audit/export"),
    ("get", "/v1/audit/checkpoint"),
    ("get", "/v1/audit/proof"),
    ("get", "/v1/audit/public-key"),
    ("post", "/v1/audit/digest"),
    ("get", "/v1/audit/archive"),
    ("post", "/v1/audit/archive"),
    ("post", "/v1/keys"),
    ("get", "/v1/keys"),
    ("get", "/v1/keys/{id}"),
    ("patch", "/v1/keys/{id}"),
    ("post", "/v1/keys/{id}/rotate"),
    ("post", "/v1/keys/{id}/revoke"),
    ("post", "/v1/keys/revoke"),
    ("post", "/v1/keys/import"),
    ("post", "/v1/keys/{id}/reveal"),
    ("post", "/v1/keys/verify"),
    ("get", "/v1/auth"),
    ("post", "/v1/auth"),
    ("put", "/v1/auth"),
    ("patch", "/v1/auth"),
    ("delete", "/v1/auth"),
    ("head", "/v1/auth"),
    ("options", "/v1/auth"),
    ("get", "/v1/auth/{path}"),
    ("post", "/v1/auth/{path}"),
    ("put", "/v1/auth/{path}"),
    ("patch", "/v1/auth/{path}"),
    ("delete", "/v1/auth/{path}"),
    ("head", "/v1/auth/{path}"),
    ("options", "/v1/auth/{path}"),
    ("get", "/v1/keys/{id}/usage"),
    ("get", "/v1/usage"),
    ("get", "/v1/keys/{id}/signals"),
    ("get", "/v1/signals"),
    ("get", "/v1/sys/cluster"),
];

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_route() {
    let v = shares_vault();
    let app = app(&v);
    let r = call(&app, get("/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc, serde_json::to_value(vault_server::openapi()).unwrap());

    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            if ["get", "head", "post", "put", "patch", "delete", "options"]
                .contains(&method.as_str())
            {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);

    // Each documented route is served (not 404 or 405), and each documents its errors with the
    // shared error schema.
    for (method, path) in &documented {
        let req = Request::builder()
            .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let r = call(&app, req).await;
        assert!(
            r.status != StatusCode::NOT_FOUND && r.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            r.status
        );
        let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
        // 201 for the routes that create (`POST /v1/keys`).
        assert!(
            responses.contains_key("200") || responses.contains_key("201"),
            "{method} {path}"
        );
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('4') || s.starts_with('5')),
            "{method} {path}"
        );
    }
    let unseal = &doc["paths"]["/v1/sys/unseal"]["post"];
    for status in ["400", "413", "415", "503"] {
        assert_eq!(
            unseal["responses"][status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{status}"
        );
    }
    assert!(unseal["requestBody"].is_object());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "ErrorDetail",
        "UnsealRequest",
        "SealStatusBody",
        "Health",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
}

/// What generators and linters trip on (the full check with `@redocly/cli lint` and
/// `openapi-python-client` is `scripts/check-openapi.sh`, which `.ci/run` runs).
#[tokio::test]
async fn the_document_is_one_that_generators_and_linters_take_as_it_is() {
    let doc = serde_json::to_value(vault_server::openapi()).unwrap();
    assert!(
        doc["servers"][0]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{}",
        doc["servers"]
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(!path.contains('*'), "a wildcard in {path}");
        // Every `{name}` in a path is declared as a path parameter by each operation.
        let names: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            for name in &names {
                assert!(
                    op["parameters"].as_array().is_some_and(|ps| ps
                        .iter()
                        .any(|p| p["in"] == "path" && p["name"] == *name)),
                    "{method} {path}: {name} is not declared"
                );
            }
            // Every operation says which security it needs, `[]` for none.
            assert!(op["security"].is_array(), "{method} {path}: no security");
            if method == "head" {
                for (status, response) in op["responses"].as_object().unwrap() {
                    assert!(
                        response
                            .get("content")
                            .is_none_or(|c| c.as_object().unwrap().is_empty()),
                        "HEAD {path} {status} promises a body"
                    );
                }
            }
        }
    }
    for public in ["/v1/sys/health", "/v1/sys/seal-status", "/v1/sys/unseal"] {
        for op in doc["paths"][public].as_object().unwrap().values() {
            assert_eq!(op["security"], serde_json::json!([]), "{public}");
        }
    }
    // The export's filters, the outcome among them.
    let export = &doc["paths"]["/v1/audit/export"]["get"]["parameters"];
    for name in ["since", "until", "owner", "key", "event", "outcome", "last"] {
        assert!(
            export
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query" && p["name"] == name)),
            "/v1/audit/export: no {name} parameter"
        );
    }
    let schemas = &doc["components"]["schemas"];
    for schema in ["CreateKeyRequest", "CreateTokenRequest"] {
        let ttl = &schemas[schema]["properties"]["ttl_seconds"];
        assert_eq!(ttl["minimum"], 1, "{schema}: {ttl}");
    }
}
