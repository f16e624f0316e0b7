//! Commands that talk to a running server: status, unseal, seal, keys, tokens, operator.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::cli::{
    ClientArgs, KeyCommand, KeyCreateArgs, KeyUpdateArgs, OperatorCommand, TokenCommand, UnsealArgs,
};
use crate::client::{Addr, Client};
use crate::output::{Out, print_table};
use crate::secret_input::{prompt_secret, read_secret_file};

/// A client from the common flags, with the token from --token-file, --token or KEYVAULT_TOKEN.
/// A token holds no whitespace, so what surrounds it (the newline `echo` or an editor adds to a
/// file or a variable) is dropped.
pub fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    let token = match (&args.token_file, &args.token) {
        (Some(file), _) => Some(SecretString::from(read_secret_file(file)?.trim())),
        (None, Some(token)) => {
            eprintln!(
                "warning: a token on the command line is visible in `ps` and shell history; prefer --token-file or KEYVAULT_TOKEN"
            );
            Some(SecretString::from(token.trim()))
        }
        (None, None) => std::env::var("KEYVAULT_TOKEN")
            .ok()
            .map(zeroize::Zeroizing::new)
            .filter(|t| !t.trim().is_empty())
            .map(|t| SecretString::from(t.trim())),
    };
    Client::new(Addr::parse(&args.addr)?, token, args.ca_cert.as_deref())
}

/// `?a=b&c=d` from the pairs that are set.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("?{}", q.finish())
    } else {
        String::new()
    }
}

pub fn check_id(id: &str) -> anyhow::Result<&str> {
    if crate::secret_input::looks_secret(id) {
        bail!(
            "that is a key, token or share, not an id (24 hex digits); it is not shown here. Give \
             the id (`keyvault key list`, `keyvault token list`)"
        );
    }
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{id}` is not a key or token id (24 hex digits)");
    }
    Ok(id)
}

/// `keyvault status`: exit 0 unsealed, 2 sealed.
pub fn status(args: &ClientArgs, out: &Out) -> anyhow::Result<ExitCode> {
    let status = client(args)?.call("GET", "/v1/sys/seal-status", None)?;
    let sealed = status["sealed"].as_bool().unwrap_or(true);
    out.value(&status, || {
        let method = status["method"].as_str().unwrap_or("?");
        if sealed {
            let progress = if method == "shares" {
                format!(
                    " ({} of {} shares submitted)",
                    status["progress"], status["threshold"]
                )
            } else {
                String::new()
            };
            format!("sealed{progress}: run `keyvault unseal`")
        } else {
            format!("unsealed (unseals with {method})")
        }
    });
    Ok(if sealed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// `keyvault unseal`.
pub fn unseal(args: &UnsealArgs, out: &Out) -> anyhow::Result<ExitCode> {
    let client = client(&out.client)?;
    let body = if args.reset {
        // The server resets only for a holder of one of the shares submitted so far.
        let share = match &args.share {
            Some(share) => literal_or_prompt(share, "Unseal share")?,
            None => prompt_secret("Unseal share")?,
        };
        json!({ "reset": true, "share": share.expose_secret() })
    } else if let Some(file) = &args.passphrase_file {
        json!({ "passphrase": read_secret_file(file)?.as_str() })
    } else if let Some(share) = &args.share {
        json!({ "share": literal_or_prompt(share, "Unseal share")?.expose_secret() })
    } else {
        let status = client.call("GET", "/v1/sys/seal-status", None)?;
        if status["sealed"] == false {
            out.value(&status, || "the vault is already unsealed".into());
            return Ok(ExitCode::SUCCESS);
        }
        match status["method"].as_str() {
            Some("shares") => json!({ "share": prompt_secret("Unseal share")?.expose_secret() }),
            _ => json!({ "passphrase": prompt_secret("Passphrase")?.expose_secret() }),
        }
    };
    let status = client.call("POST", "/v1/sys/unseal", Some(&body))?;
    out.value(&status, || {
        if status["sealed"] == false {
            "unsealed".into()
        } else if args.reset {
            format!(
                "progress reset: {} of {} shares submitted",
                status["progress"], status["threshold"]
            )
        } else {
            format!(
                "share accepted: {} of {} submitted; the vault is still sealed",
                status["progress"], status["threshold"]
            )
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// A secret given literally (warned: visible in `ps`) or `-` (prompted, or read from stdin).
fn literal_or_prompt(value: &str, what: &str) -> anyhow::Result<SecretString> {
    if value == "-" {
        return prompt_secret(what);
    }
    eprintln!(
        "warning: a {} on the command line is visible in `ps` and shell history; pass `-` to be prompted",
        what.to_lowercase()
    );
    Ok(SecretString::from(value))
}

/// `keyvault seal`.
pub fn seal(args: &ClientArgs, out: &Out) -> anyhow::Result<ExitCode> {
    let status = client(args)?.call("POST", "/v1/sys/seal", None)?;
    out.value(&status, || {
        "sealed: every key has left memory; run `keyvault unseal` to resume".into()
    });
    Ok(ExitCode::SUCCESS)
}

fn parse_meta(meta: &Option<String>) -> anyhow::Result<Option<Value>> {
    meta.as_ref()
        .map(|m| {
            let v: Value = serde_json::from_str(m).context("--meta must be a JSON object")?;
            if !v.is_object() {
                bail!("--meta must be a JSON object, like '{{\"plan\":\"pro\"}}'");
            }
            Ok(v)
        })
        .transpose()
}

fn key_summary(k: &Value) -> String {
    let mut s = format!(
        "key {} of {}: {}",
        k["key_id"].as_str().unwrap_or("?"),
        k["owner"].as_str().unwrap_or("?"),
        k["status"].as_str().unwrap_or("?")
    );
    if let Some(name) = k["name"].as_str().filter(|n| !n.is_empty()) {
        s += &format!(", name {name:?}");
    }
    if let Some(scopes) = k["scopes"].as_array().filter(|a| !a.is_empty()) {
        let scopes: Vec<&str> = scopes.iter().filter_map(Value::as_str).collect();
        s += &format!(", scopes {}", scopes.join(" "));
    }
    if let Some(c) = k["credits"].as_u64() {
        s += &format!(", {c} credits left");
    }
    if let Some(e) = k["expires_at"].as_u64() {
        s += &format!(", expires at {}", crate::output::when(e));
    }
    s
}

/// `keyvault key ...`.
pub fn key(command: &KeyCommand, out: &Out) -> anyhow::Result<ExitCode> {
    let c = &out.client;
    match command {
        KeyCommand::Create(args) => key_create(args, out),
        KeyCommand::List {
            owner,
            status,
            limit,
            cursor,
        } => {
            let status = status.map(|s| format!("{s:?}").to_lowercase());
            let path = format!(
                "/v1/keys{}",
                query(&[
                    ("owner", owner.clone()),
                    ("status", status),
                    ("limit", Some(limit.to_string())),
                    ("cursor", cursor.clone())
                ])
            );
            let page = client(c)?.call("GET", &path, None)?;
            out.value(&page, || {
                let rows: Vec<Vec<String>> = page["keys"]
                    .as_array()
                    .map(|keys| {
                        keys.iter()
                            .map(|k| {
                                vec![
                                    k["key_id"].as_str().unwrap_or("").to_owned(),
                                    k["owner"].as_str().unwrap_or("").to_owned(),
                                    k["status"].as_str().unwrap_or("").to_owned(),
                                    k["name"].as_str().unwrap_or("").to_owned(),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut text = print_table(&["KEY ID", "OWNER", "STATUS", "NAME"], &rows);
                if let Some(next) = page["next_cursor"].as_str() {
                    text += &format!("\nmore: --cursor {next}");
                }
                text
            });
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Show { id } => {
            let k = client(c)?.call("GET", &format!("/v1/keys/{}", check_id(id)?), None)?;
            out.value(&k, || key_summary(&k));
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Update(args) => key_update(args, out),
        KeyCommand::Rotate { id, grace } => {
            let k = client(c)?.call(
                "POST",
                &format!("/v1/keys/{}/rotate", check_id(id)?),
                Some(&json!({ "grace_seconds": grace })),
            )?;
            out.value(&k, || {
                let mut s = format!(
                    "rotated key {}\nnew key (shown only now): {}",
                    k["key_id"].as_str().unwrap_or("?"),
                    k["key"].as_str().unwrap_or("?")
                );
                if let Some(until) = k["previous_secret_expires_at"].as_u64() {
                    s += &format!(
                        "\nthe old key keeps working until {}",
                        crate::output::when(until)
                    );
                } else {
                    s += "\nthe old key no longer works";
                }
                s
            });
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Revoke { id, owner } => {
            let client = client(c)?;
            let answer = match (id, owner) {
                (Some(id), _) => {
                    client.call("POST", &format!("/v1/keys/{}/revoke", check_id(id)?), None)?
                }
                (None, Some(owner)) => client.call(
                    "POST",
                    &format!(
                        "/v1/keys/revoke{}",
                        query(&[("owner", Some(owner.clone()))])
                    ),
                    None,
                )?,
                (None, None) => bail!("give a key id or --owner"),
            };
            out.value(&answer, || match answer["revoked"].as_u64() {
                Some(n) => format!("revoked {n} keys of {}", owner.as_deref().unwrap_or("?")),
                None => format!("revoked key {}", answer["key_id"].as_str().unwrap_or("?")),
            });
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Reveal { id } => {
            let k = client(c)?.call("POST", &format!("/v1/keys/{}/reveal", check_id(id)?), None)?;
            out.value(&k, || k["key"].as_str().unwrap_or("?").to_owned());
            Ok(ExitCode::SUCCESS)
        }
        KeyCommand::Usage { id, days } => crate::usage::key_usage(c, id, *days, out),
        KeyCommand::Verify { key, scope, cost } => {
            let key = if key == "-" {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the key from stdin")?;
                SecretString::from(line.trim().to_owned())
            } else {
                SecretString::from(key.as_str())
            };
            let mut body = json!({ "key": key.expose_secret() });
            if let Some(scope) = scope {
                body["scope"] = json!(scope);
            }
            if let Some(cost) = cost {
                body["cost"] = json!(cost);
            }
            let verdict = client(c)?.call("POST", "/v1/keys/verify", Some(&body))?;
            let valid = verdict["valid"] == true;
            out.value(&verdict, || {
                let code = verdict["code"].as_str().unwrap_or("?");
                match verdict["key_id"].as_str() {
                    Some(id) => format!(
                        "{code}: key {id} of {}",
                        verdict["owner"].as_str().unwrap_or("?")
                    ),
                    None => code.to_owned(),
                }
            });
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn key_create(args: &KeyCreateArgs, out: &Out) -> anyhow::Result<ExitCode> {
    let mut body = Map::new();
    body.insert("owner".into(), json!(args.owner));
    if let Some(name) = &args.name {
        body.insert("name".into(), json!(name));
    }
    if !args.scopes.is_empty() {
        body.insert("scopes".into(), json!(args.scopes));
    }
    if let Some(meta) = parse_meta(&args.meta)? {
        body.insert("meta".into(), meta);
    }
    if let Some(e) = &args.expires_at {
        body.insert("expires_at".into(), json!(e));
    }
    if let Some(t) = args.ttl {
        body.insert("ttl_seconds".into(), json!(t));
    }
    if args.disabled {
        body.insert("enabled".into(), json!(false));
    }
    if let (Some(limit), Some(period)) = (args.rate_limit, args.rate_period) {
        body.insert(
            "ratelimit".into(),
            json!({ "limit": limit, "period_seconds": period }),
        );
    }
    if let Some(c) = args.credits {
        body.insert("credits".into(), json!(c));
    }
    if args.recoverable {
        body.insert("recoverable".into(), json!(true));
    }
    let client = client(&out.client)?;
    let headers: Vec<(&str, &str)> = args
        .idempotency_key
        .iter()
        .map(|k| ("idempotency-key", k.as_str()))
        .collect();
    let response = client.send("POST", "/v1/keys", Some(&Value::Object(body)), &headers)?;
    crate::client::check(&response)?;
    let k = response.json()?;
    out.value(&k, || {
        format!(
            "created {}\nkey (shown only now): {}",
            key_summary(&k),
            k["key"].as_str().unwrap_or("?")
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn key_update(args: &KeyUpdateArgs, out: &Out) -> anyhow::Result<ExitCode> {
    let mut body = Map::new();
    if let Some(name) = &args.name {
        body.insert("name".into(), json!(name));
    }
    if !args.scopes.is_empty() || args.no_scopes {
        body.insert("scopes".into(), json!(args.scopes));
    }
    if let Some(meta) = parse_meta(&args.meta)? {
        body.insert("meta".into(), meta);
    }
    if let Some(e) = &args.expires_at {
        body.insert("expires_at".into(), json!(e));
    }
    if args.no_expiry {
        body.insert("expires_at".into(), Value::Null);
    }
    if args.enable || args.disable {
        body.insert("enabled".into(), json!(args.enable));
    }
    if let (Some(limit), Some(period)) = (args.rate_limit, args.rate_period) {
        body.insert(
            "ratelimit".into(),
            json!({ "limit": limit, "period_seconds": period }),
        );
    }
    if args.no_rate_limit {
        body.insert("ratelimit".into(), Value::Null);
    }
    if let Some(c) = args.credits {
        body.insert("credits".into(), json!(c));
    }
    if args.unlimited {
        body.insert("credits".into(), Value::Null);
    }
    if body.is_empty() {
        bail!(
            "nothing to change: give at least one of --name, --scope, --meta, --expires-at, --enable, ... (see --help)"
        );
    }
    let k = client(&out.client)?.call(
        "PATCH",
        &format!("/v1/keys/{}", check_id(&args.id)?),
        Some(&Value::Object(body)),
    )?;
    out.value(&k, || format!("updated {}", key_summary(&k)));
    Ok(ExitCode::SUCCESS)
}

/// `keyvault token ...`.
pub fn token(command: &TokenCommand, out: &Out) -> anyhow::Result<ExitCode> {
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
                                    expires.map_or_else(
                                        || "never".to_owned(),
                                        crate::usage::date_time,
                                    ),
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

/// `keyvault operator ...`.
pub fn operator(command: &OperatorCommand, out: &Out) -> anyhow::Result<ExitCode> {
    let c = &out.client;
    match command {
        OperatorCommand::Rotate => {
            let r = client(c)?.call("POST", "/v1/sys/rotate", None)?;
            out.value(&r, || format!("keyring rotated: new writes use term {}; run `keyvault operator rewrap` to move old records", r["term"]));
        }
        OperatorCommand::Rewrap => {
            let spinner = crate::output::spinner("re-encrypting records under the newest term");
            let r = client(c)?.call("POST", "/v1/sys/rewrap", None)?;
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            out.value(&r, || {
                format!(
                    "re-encrypted {} records (key records, credits, recoverable secrets, tokens) \
                     of {} keys and tokens; every record is now under term {}",
                    r["rewritten"], r["seen"], r["term"]
                )
            });
        }
        OperatorCommand::RotateAuditKey => {
            let spinner = crate::output::spinner("rotating the audit key");
            let r = client(c)?.call("POST", "/v1/sys/rotate-audit-key", None)?;
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            out.value(&r, || {
                format!(
                    "audit key rotated: generation {}, announced at entry {}, checkpoint {} signed \
                     by both keys; the owner index is under generation {} ({} keys)\n\
                     new audit public key: {}\n\
                     auditors keep their pinned key (audit verify follows the rotation); give the \
                     new key to your witnesses (keyvault witness serve --log OLD --log NEW)",
                    r["generation"],
                    r["seq"],
                    r["transition_size"],
                    r["index_generation"],
                    r["index_seen"],
                    r["public_key"].as_str().unwrap_or("?"),
                )
            });
        }
        OperatorCommand::Rekey(args) => crate::ceremony_cmd::rekey(args, out)?,
        OperatorCommand::Backup(args) => return crate::backup_cmd::backup(args, out),
        OperatorCommand::Restore(args) => return crate::backup_cmd::restore(args, out),
        OperatorCommand::UsageRebuild { data_dir, config } => {
            crate::commands::usage_rebuild(data_dir, config.as_deref(), out)?;
        }
        OperatorCommand::GenerateRoot(args) => crate::ceremony_cmd::generate_root(args, out)?,
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
