//! The vault's state and keys, as an operator runs them: `status`, `unseal`, `seal`, and
//! `operator rotate|rewrap|rotate-audit-key` (the ceremonies, backups and usage rebuild are in
//! their own modules).

use std::process::ExitCode;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::cli::{ClientArgs, UnsealArgs};
use crate::client::client;
use crate::output::{Out, spinner};
use crate::secret_input::{prompt_secret, read_secret_file};

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
pub fn seal(args: &ClientArgs, cluster: bool, out: &Out) -> anyhow::Result<ExitCode> {
    let path = if cluster {
        "/v1/sys/seal?cluster=true"
    } else {
        "/v1/sys/seal"
    };
    let status = client(args)?.call("POST", path, None)?;
    out.value(&status, || {
        if cluster {
            "sealed every node of the cluster: every key has left memory; run `keyvault unseal` \
             on each node to resume"
                .into()
        } else {
            "sealed: every key has left memory; run `keyvault unseal` to resume".into()
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// `keyvault operator rotate`: a new keyring term.
pub fn rotate(out: &Out) -> anyhow::Result<ExitCode> {
    let r = client(&out.client)?.call("POST", "/v1/sys/rotate", None)?;
    out.value(&r, || format!("keyring rotated: new writes use term {}; run `keyvault operator rewrap` to move old records", r["term"]));
    Ok(ExitCode::SUCCESS)
}

/// `keyvault operator rewrap`: every record under the newest term.
pub fn rewrap(out: &Out) -> anyhow::Result<ExitCode> {
    let spinner = spinner("re-encrypting records under the newest term");
    let r = client(&out.client)?.call("POST", "/v1/sys/rewrap", None)?;
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
    Ok(ExitCode::SUCCESS)
}

/// `keyvault operator rotate-audit-key`: a new audit key generation.
pub fn rotate_audit_key(out: &Out) -> anyhow::Result<ExitCode> {
    let spinner = spinner("rotating the audit key");
    let r = client(&out.client)?.call("POST", "/v1/sys/rotate-audit-key", None)?;
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
    Ok(ExitCode::SUCCESS)
}
