//! Secrets from files: the whole file, less at most one trailing newline (`\n` or `\r\n`).

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
