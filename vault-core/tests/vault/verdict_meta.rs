//! A VALID verdict's meta: the key's JSON text handed on unparsed, serialised to the same bytes
//! as the key's meta map, for every kind of JSON value a meta may hold.

use serde_json::{Map, Value, json};
use vault_core::Vault;
use vault_core::keys::{KeyUpdate, NewKey, RawMeta, Verdict, VerifyRequest};

use crate::common::*;

fn verdict(vault: &Vault, key: &str) -> Verdict {
    let verdict = vault.verify(&ctx(), VerifyRequest::new(key)).unwrap();
    assert!(verdict.valid, "{verdict:?}");
    verdict
}

/// Checks that `verdict` serialises with its meta written as serialising `meta` writes it, in
/// the meta's place (after the scopes), as builds that parsed the meta into a map sent it.
fn assert_serialised_as_map(verdict: &Verdict, meta: &Map<String, Value>) {
    let text = serde_json::to_string(verdict).unwrap();
    let map = serde_json::to_string(meta).unwrap();
    assert!(
        text.contains(&format!(r#""scopes":[],"meta":{map}}}"#)),
        "{text}"
    );
    let mut parsed = serde_json::to_value(verdict).unwrap();
    parsed["meta"] = Value::Object(meta.clone());
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), parsed);
}

fn tricky() -> Map<String, Value> {
    json!({
        "zeta": "last in order, first written",
        "plan": "pro \"gold\" \\ \u{e9} \u{1f600} \u{1} \n",
        "": 0,
        "floats": [0.1, 1e300, -0.0, 2.5e-8, 1.0],
        "ints": [u64::MAX, i64::MIN, 0],
        "nested": {"b": [true, false, null], "a": {}},
    })
    .as_object()
    .unwrap()
    .clone()
}

#[test]
fn the_verdict_meta_is_the_key_meta_byte_for_byte() {
    let (_tmp, vault) = passphrase_vault();
    let mut new = NewKey::new("cust_1");
    new.meta = tricky();
    let issued = vault.create_key(&ctx(), new).unwrap();
    let key = issued.key.expose_secret_text();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();

    let first = verdict(&vault, &key);
    let meta = first.meta.clone().unwrap();
    assert_eq!(meta.to_map(), tricky());
    assert_eq!(meta, RawMeta::from(&tricky()));
    assert_eq!(meta.json(), serde_json::to_string(&tricky()).unwrap());
    assert_serialised_as_map(&first, &tricky());

    // A changed meta is what the next verify hands on.
    let mut changed = Map::new();
    changed.insert("plan".into(), Value::from("free"));
    vault
        .update_key(
            &ctx(),
            &issued.key.id(),
            KeyUpdate {
                meta: Some(changed.clone()),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    let second = verdict(&vault, &key);
    assert_eq!(second.meta.as_ref().unwrap().json(), r#"{"plan":"free"}"#);
    assert_serialised_as_map(&second, &changed);
}

#[test]
fn a_key_without_meta_answers_an_empty_object() {
    let (_tmp, vault) = passphrase_vault();
    let issued = vault.create_key(&ctx(), NewKey::new("cust_1")).unwrap();
    let key = issued.key.expose_secret_text();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let verdict = verdict(&vault, &key);
    assert_eq!(verdict.meta.as_ref().unwrap().json(), "{}");
    assert!(
        serde_json::to_string(&verdict)
            .unwrap()
            .contains(r#""meta":{}"#)
    );
    // Refused verdicts carry none. The last character changed to another (a key may end in
    // `x`, one time in 62).
    let other = if key.ends_with('x') { 'y' } else { 'x' };
    let refused = vault
        .verify(
            &ctx(),
            VerifyRequest::new(&format!("{}{other}", &key[..key.len() - 1])),
        )
        .unwrap();
    assert!(!refused.valid);
    assert_eq!(refused.meta, None);
}
