//! A Rust service embedding vault-core: init a temporary vault, create a key, verify it,
//! rotate it with a grace period, verify both secrets, revoke it.
//!
//! Run with `cargo run -p vault-core --example embedded`.

use secrecy::ExposeSecret;
use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::keys::{NewKey, VerifyRequest};
use vault_core::{Context, UnsealMethod, Vault};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Test-grade Argon2 parameters keep the example fast; a real service uses
    // `KdfParams::DEFAULT` and runs unseal off its async runtime (`spawn_blocking`).
    let method = UnsealMethod::Passphrase {
        passphrase: Passphrase::new("an example passphrase"),
        params: KdfParams::INSECURE_FAST,
    };
    let (vault, _issued) = Vault::init(&dir.path().join("vault"), &method, &Prefix::default())?;
    let ctx = Context::embedded();

    let mut new = NewKey::new("customer-42");
    new.scopes = vec!["photos:write".into()];
    let created = vault.create_key(&ctx, new)?;
    let first = created.key.expose_secret_text();
    println!("created key {} (shown once)", created.key.id());

    let request = |key| VerifyRequest {
        key,
        scope: Some("photos:write"),
        cost: 1,
    };
    let verdict = vault.verify(&ctx, request(first.expose_secret()))?;
    println!("verify: {}", verdict.code.as_str());

    let rotated = vault.rotate_key(&ctx, &created.key.id(), 3600)?;
    let second = rotated.key.expose_secret_text();
    let old = vault.verify(&ctx, request(first.expose_secret()))?;
    let new = vault.verify(&ctx, request(second.expose_secret()))?;
    println!(
        "after rotate: old secret {} (until {:?}), new secret {}",
        old.code.as_str(),
        old.previous_secret.map(|p| p.expires_at),
        new.code.as_str()
    );

    vault.revoke_key(&ctx, &created.key.id())?;
    let revoked = vault.verify(&ctx, request(second.expose_secret()))?;
    println!("after revoke: {}", revoked.code.as_str());
    assert_eq!(revoked.code.as_str(), "REVOKED");
    Ok(())
}
