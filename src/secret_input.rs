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
