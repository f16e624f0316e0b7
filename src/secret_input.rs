//! Secrets from files: the whole file, less at most one trailing newline (`\n` or `\r\n`);
//! prompts without echo; and what looks like a secret typed where it does not belong, so that
//! an error never echoes it back.

use std::path::Path;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

/// Reads a secret file.
pub fn read_secret_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let bytes =
        Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let Ok(text) = std::str::from_utf8(&bytes) else {
        bail!("{} is not UTF-8 text", path.display());
    };
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Asks for a secret on the terminal without echo; reads one line from stdin when it is not a
/// terminal (scripts pipe it in).
pub fn prompt_secret(what: &str) -> anyhow::Result<secrecy::SecretString> {
    use std::io::{BufRead, IsTerminal};
    let text = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(format!("{what}: ")).context("reading from the terminal")?,
        )
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading standard input")?;
        Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    if text.is_empty() {
        bail!("no {} was given", what.to_lowercase());
    }
    Ok(secrecy::SecretString::from(text.as_str()))
}

/// Shown in place of a secret that was typed where it does not belong.
pub const REDACTED: &str = "<secret not shown>";

/// Whether `text` looks like a secret: an unseal share (`kvs1_` + hex), a vault token or an API
/// key (`<2 to 8 lowercase letters>_` + base62), or an age identity. Used only to keep such a
/// text out of error messages, so it errs towards yes.
pub fn looks_secret(text: &str) -> bool {
    let t = text.trim();
    let t = t.split_once('=').map_or(t, |(_, value)| value);
    if let Some(hex) = t.strip_prefix("kvs1_") {
        return hex.len() >= 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    if t.starts_with("AGE-SECRET-KEY-") {
        return true;
    }
    match t.split_once('_') {
        Some((prefix, body)) => {
            (2..=8).contains(&prefix.len())
                && prefix.bytes().all(|b| b.is_ascii_lowercase())
                && body.len() >= 40
                && body.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// `message` with every argument of `args` that looks like a secret replaced by [`REDACTED`].
pub fn redact(message: &str, args: impl IntoIterator<Item = String>) -> String {
    let mut out = message.to_owned();
    for arg in args {
        let secret = arg.split_once('=').map_or(arg.as_str(), |(_, v)| v).trim();
        if looks_secret(secret) {
            out = out.replace(secret, REDACTED);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_tokens_shares_and_age_identities_look_secret_and_ids_do_not() {
        let key = format!("pvk_{}", "a1B2".repeat(14));
        let token = format!("kvt_{}", "Z9y8".repeat(14));
        for secret in [
            key.as_str(),
            token.as_str(),
            "kvs1_0123456789abcdef0123456789abcdef",
            "AGE-SECRET-KEY-1QQQQ",
            "--share=kvs1_0123456789abcdef0123456789abcdef",
        ] {
            assert!(looks_secret(secret), "{secret}");
        }
        for plain in [
            "0123456789abcdef01234567",
            "customer-42",
            "photos:read",
            "--role",
            "admn",
        ] {
            assert!(!looks_secret(plain), "{plain}");
        }
        let message = format!("error: unexpected argument '{token}' found");
        let shown = redact(&message, ["keyvault".into(), "token".into(), token.clone()]);
        assert!(!shown.contains(&token[4..]), "{shown}");
        assert!(shown.contains(REDACTED));
    }
}
