//! Finding keys by their exact name: `GET /v1/keys?name=` (alone, with an owner and a status,
//! paged, after a rename through `PATCH`), the OpenAPI document naming the parameter, and the
//! console's keys page searching by name over a real server on port 0.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vault_core::keys::NewKey;
use vault_core::tokens::Role;

use crate::keys::{create, open_vault, send};
use crate::support::{app, call, get, passphrase_vault};
use crate::ui::{Browser, text};

fn ids(page: &Value) -> Vec<String> {
    page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn the_key_list_finds_keys_by_exact_name_over_http() {
    let v = open_vault();
    let app = app(&v);
    let m = v.token(Role::Manager);
    let key = |owner: &str, name: &str| json!({"owner": owner, "name": name});
    let id = |k: &Value| k["key_id"].as_str().unwrap().to_owned();
    let a1 = id(&create(&app, &m, key("cust-a", "web")).await);
    let a2 = id(&create(&app, &m, key("cust-a", "web")).await);
    let b1 = id(&create(&app, &m, key("cust-b", "web")).await);
    let renamed = id(&create(&app, &m, key("cust-b", "mobile")).await);
    let list = |uri: &'static str| {
        let app = app.clone();
        let m = m.clone();
        async move {
            let r = send(&app, Method::GET, uri, &m, None).await;
            r.assert_status(StatusCode::OK);
            r.json()
        }
    };
    let page = list("/v1/keys?name=web").await;
    assert_eq!(ids(&page), sorted(vec![a1.clone(), a2.clone(), b1.clone()]));
    let page = list("/v1/keys?name=web&owner=cust-a").await;
    assert_eq!(ids(&page), sorted(vec![a1.clone(), a2.clone()]));
    assert_eq!(list("/v1/keys?name=Web").await, json!({"keys": []}));
    assert_eq!(list("/v1/keys?name=we").await, json!({"keys": []}));

    let r = send(
        &app,
        Method::PATCH,
        &format!("/v1/keys/{renamed}"),
        &m,
        Some(json!({"name": "web"})),
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(list("/v1/keys?name=mobile").await, json!({"keys": []}));
    let page = list("/v1/keys?name=web&owner=cust-b&status=active").await;
    assert_eq!(ids(&page), sorted(vec![b1.clone(), renamed.clone()]));

    // Paged, one at a time.
    let first = list("/v1/keys?name=web&limit=1").await;
    let all = sorted(vec![a1, a2, b1, renamed]);
    assert_eq!(ids(&first), all[..1]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let r = send(
        &app,
        Method::GET,
        &format!("/v1/keys?name=web&limit=3&cursor={cursor}"),
        &m,
        None,
    )
    .await;
    let rest = r.json();
    assert_eq!(ids(&rest), all[1..]);
    assert!(rest.get("next_cursor").is_none(), "{rest}");
}

#[tokio::test]
async fn the_openapi_document_names_the_name_filter() {
    let v = passphrase_vault();
    let doc = call(&app(&v), get("/openapi.json")).await.json();
    let params = doc["paths"]["/v1/keys"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"name"), "{names:?}");
    assert!(
        doc["paths"]["/v1/keys"]["get"]["responses"]
            .get("409")
            .is_some()
    );
}

#[tokio::test]
async fn the_console_searches_keys_by_name_alone_and_with_an_owner() {
    let v = passphrase_vault();
    v.unseal();
    let ctx = vault_core::Context::embedded();
    let make = |owner: &str, name: &str| {
        let new = NewKey {
            name: name.into(),
            ..NewKey::new(owner)
        };
        v.vault
            .create_key(&ctx, new)
            .unwrap()
            .info
            .key_id
            .to_string()
    };
    let mut named = Vec::new();
    for _ in 0..52 {
        named.push(make("cust_one", "billing-prod"));
    }
    let other_owner = make("cust_two", "billing-prod");
    let other_name = make("cust_one", "billing-staging");
    let mut b = Browser::open(&v).await;
    b.sign_in(&v.token(Role::Manager)).await;

    let form = text(&b.get("/ui/keys").await);
    assert!(
        form.contains(r#"name="name""#) && form.contains("exact"),
        "{form}"
    );

    let page = text(&b.get("/ui/keys?name=billing-prod").await);
    assert!(page.contains("50 keys"), "{page}");
    assert!(!page.contains(&other_name));
    let at = page.find("/ui/keys?owner=&amp;status=&amp;after=").unwrap();
    let next = page[at..at + page[at..].find('"').unwrap()].replace("&amp;", "&");
    assert!(next.ends_with("&name=billing-prod"), "{next}");
    let second = text(&b.get(&next).await);
    assert!(second.contains("3 keys"), "{second}");

    let mine = text(&b.get("/ui/keys?owner=cust_two&name=billing-prod").await);
    assert!(
        mine.contains("1 keys") && mine.contains(&other_owner),
        "{mine}"
    );
    let none = text(&b.get("/ui/keys?owner=cust_two&name=billing-staging").await);
    assert!(none.contains("No keys match."), "{none}");
    let first_named = named.iter().min().unwrap();
    assert!(page.contains(first_named.as_str()));
}
