//! `keyvault key ...`: create, list, show, update, rotate, revoke, reveal and verify API keys
//! (a key's usage is in `usage`).

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::cli::{KeyCreateArgs, KeyUpdateArgs, RefillArgs, RefillInterval, Status};
use crate::client::{check, check_id, client, query};
use crate::output::{Out, print_table, when};

/// `keyvault key create`.
pub fn create(args: &KeyCreateArgs, out: &Out) -> anyhow::Result<ExitCode> {
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
        body.insert("credits".into(), credits(c, &args.refill));
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
    check(&response)?;
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

/// `keyvault key list`.
pub fn list(
    owner: Option<&str>,
    name: Option<&str>,
    status: Option<Status>,
    limit: u32,
    cursor: Option<&str>,
    out: &Out,
) -> anyhow::Result<ExitCode> {
    let status = status.map(|s| format!("{s:?}").to_lowercase());
    let path = format!(
        "/v1/keys{}",
        query(&[
            ("owner", owner.map(str::to_owned)),
            ("name", name.map(str::to_owned)),
            ("status", status),
            ("limit", Some(limit.to_string())),
            ("cursor", cursor.map(str::to_owned))
        ])
    );
    let page = client(&out.client)?.call("GET", &path, None)?;
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

/// `keyvault key show`.
pub fn show(id: &str, out: &Out) -> anyhow::Result<ExitCode> {
    let k = client(&out.client)?.call("GET", &format!("/v1/keys/{}", check_id(id)?), None)?;
    out.value(&k, || key_summary(&k));
    Ok(ExitCode::SUCCESS)
}

/// `keyvault key rotate`.
pub fn rotate(id: &str, grace: u64, out: &Out) -> anyhow::Result<ExitCode> {
    let k = client(&out.client)?.call(
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
            s += &format!("\nthe old key keeps working until {}", when(until));
        } else {
            s += "\nthe old key no longer works";
        }
        s
    });
    Ok(ExitCode::SUCCESS)
}

/// `keyvault key revoke`: one key, or every key of an owner.
pub fn revoke(id: Option<&str>, owner: Option<&str>, out: &Out) -> anyhow::Result<ExitCode> {
    let client = client(&out.client)?;
    let answer = match (id, owner) {
        (Some(id), _) => {
            client.call("POST", &format!("/v1/keys/{}/revoke", check_id(id)?), None)?
        }
        (None, Some(owner)) => client.call(
            "POST",
            &format!(
                "/v1/keys/revoke{}",
                query(&[("owner", Some(owner.to_owned()))])
            ),
            None,
        )?,
        (None, None) => bail!("give a key id or --owner"),
    };
    out.value(&answer, || match answer["revoked"].as_u64() {
        Some(n) => format!("revoked {n} keys of {}", owner.unwrap_or("?")),
        None => format!("revoked key {}", answer["key_id"].as_str().unwrap_or("?")),
    });
    Ok(ExitCode::SUCCESS)
}

/// `keyvault key reveal`.
pub fn reveal(id: &str, out: &Out) -> anyhow::Result<ExitCode> {
    let k =
        client(&out.client)?.call("POST", &format!("/v1/keys/{}/reveal", check_id(id)?), None)?;
    out.value(&k, || k["key"].as_str().unwrap_or("?").to_owned());
    Ok(ExitCode::SUCCESS)
}

/// `keyvault key verify`: exit 0 when the key is valid, 1 otherwise.
pub fn verify(
    key: &str,
    scope: Option<&str>,
    cost: Option<u64>,
    out: &Out,
) -> anyhow::Result<ExitCode> {
    let key = if key == "-" {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the key from stdin")?;
        SecretString::from(line.trim().to_owned())
    } else {
        SecretString::from(key)
    };
    let mut body = json!({ "key": key.expose_secret() });
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    if let Some(cost) = cost {
        body["cost"] = json!(cost);
    }
    let verdict = client(&out.client)?.call("POST", "/v1/keys/verify", Some(&body))?;
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

/// `keyvault key update`.
pub fn update(args: &KeyUpdateArgs, out: &Out) -> anyhow::Result<ExitCode> {
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
        body.insert("credits".into(), credits(c, &args.refill));
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

/// `credits` as a number, or with a refill as `{"remaining", "refill"}`.
fn credits(remaining: u64, refill: &RefillArgs) -> Value {
    match (refill.refill_amount, refill.refill_interval) {
        (Some(amount), Some(interval)) => {
            let interval = match interval {
                RefillInterval::Daily => "daily",
                RefillInterval::Monthly => "monthly",
            };
            let mut body = json!({ "amount": amount, "interval": interval });
            if let Some(day) = refill.refill_day {
                body["day"] = json!(day);
            }
            json!({ "remaining": remaining, "refill": body })
        }
        _ => json!(remaining),
    }
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
    if let Some(r) = k.get("refill").filter(|r| r.is_object()) {
        s += &format!(
            ", refilled to {} {}",
            r["amount"].as_u64().unwrap_or(0),
            match r["day"].as_u64() {
                Some(day) => format!("monthly on day {day}"),
                None => r["interval"].as_str().unwrap_or("?").to_owned(),
            }
        );
        if let Some(at) = k["refilled_at"].as_u64() {
            s += &format!(" (last {})", when(at));
        }
    }
    if k["imported"] == true {
        s += ", imported";
    }
    if let Some(e) = k["expires_at"].as_u64() {
        s += &format!(", expires at {}", when(e));
    }
    s
}
