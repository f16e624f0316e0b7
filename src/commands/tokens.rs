//! `keyvault token ...`: create, list and revoke vault tokens.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::TokenCommand;
use crate::client::{check_id, client};
use crate::output::{Out, date_time, print_table};

/// `keyvault token ...`.
pub fn run(command: &TokenCommand, out: &Out) -> anyhow::Result<ExitCode> {
    let c = &out.client;
    match command {
        TokenCommand::Create { role, name, ttl } => {
            let mut body = json!({ "role": format!("{role:?}").to_lowercase() });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if let Some(ttl) = ttl {
                body["ttl_seconds"] = json!(ttl);
            }
            let t = client(c)?.call("POST", "/v1/sys/tokens", Some(&body))?;
            out.value(&t, || {
                format!(
                    "created {} token {}\ntoken (shown only now): {}",
                    t["role"].as_str().unwrap_or("?"),
                    t["token_id"].as_str().unwrap_or("?"),
                    t["token"].as_str().unwrap_or("?")
                )
            });
        }
        TokenCommand::List => {
            let list = client(c)?.call("GET", "/v1/sys/tokens", None)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            out.value(&list, || {
                let rows: Vec<Vec<String>> = list["tokens"]
                    .as_array()
                    .map(|ts| {
                        ts.iter()
                            .map(|t| {
                                let expires = t["expires_at"].as_u64();
                                let state = token_state(t, now);
                                vec![
                                    t["token_id"].as_str().unwrap_or("").to_owned(),
                                    t["role"].as_str().unwrap_or("").to_owned(),
                                    state.to_owned(),
                                    expires.map_or_else(|| "never".to_owned(), date_time),
                                    t["name"].as_str().unwrap_or("").to_owned(),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                print_table(&["TOKEN ID", "ROLE", "STATE", "EXPIRES", "NAME"], &rows)
            });
        }
        TokenCommand::Revoke { id } => {
            let t = client(c)?.call(
                "POST",
                &format!("/v1/sys/tokens/{}/revoke", check_id(id)?),
                None,
            )?;
            out.value(&t, || {
                format!("revoked token {}", t["token_id"].as_str().unwrap_or("?"))
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A listed token's state at `now`: `revoked`, `expired` or `active`.
fn token_state(token: &Value, now: u64) -> &'static str {
    if !token["revoked_at"].is_null() {
        "revoked"
    } else if token["expires_at"].as_u64().is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

#[cfg(test)]
mod token_state_tests {
    use super::token_state;

    #[test]
    fn a_token_past_its_expiry_is_expired_and_a_revoked_one_revoked() {
        let now = 100;
        for (expires_at, revoked_at, state) in [
            ("100", "null", "expired"),
            ("101", "null", "active"),
            ("null", "null", "active"),
            ("50", "40", "revoked"),
        ] {
            let token = serde_json::from_str::<serde_json::Value>(&format!(
                r#"{{"expires_at": {expires_at}, "revoked_at": {revoked_at}}}"#
            ))
            .unwrap_or_default();
            assert_eq!(token_state(&token, now), state, "{expires_at} {revoked_at}");
        }
    }
}
