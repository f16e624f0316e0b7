//! Public keys given on the command line, as the tool that made them printed them or as
//! `@FILE`: a vault's audit key (`--public-key`, `--log`) and a witness's key (`--witness`).

use anyhow::Context;
use vault_core::audit::cosignature::CosignatureVerifier;
use vault_core::audit::note::NoteVerifier;

/// A vault's audit public key given to `flag`, as `init` printed it, or `@FILE`.
pub fn log_key_arg(flag: &str, text: &str) -> anyhow::Result<NoteVerifier> {
    NoteVerifier::parse(&key_arg_text(text)?).map_err(|e| {
        anyhow::anyhow!("{flag}: {e} (give it as `init` printed it, name+hash+base64, or @FILE)")
    })
}

/// A witness's verifier key given to `--witness`, as `keyvault witness key` printed it, or
/// @FILE.
pub fn witness_key_arg(text: &str) -> anyhow::Result<CosignatureVerifier> {
    CosignatureVerifier::parse(&key_arg_text(text)?).map_err(|e| {
        anyhow::anyhow!(
            "--witness: {e} (give it as `keyvault witness key` printed it, name+hash+base64, or @FILE)"
        )
    })
}

/// A key given on the command line: the text itself, or `@FILE` for the file's contents,
/// trimmed either way.
fn key_arg_text(text: &str) -> anyhow::Result<String> {
    Ok(match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_owned(),
        None => text.trim().to_owned(),
    })
}
