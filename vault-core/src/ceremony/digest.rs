//! The description of what a ceremony makes and its configuration digest (see the parent
//! module's doc): what holders compare out of band before they give a share.

use sha2::{Digest, Sha256};

use super::plan::{CeremonyKind, Plan};
use crate::crypto::{SecretKey, label};
use crate::kdf::{KdfParams, Passphrase};
use crate::seal::{NewSeal, SealMethod};
use crate::shamir::VaultId;

/// The first line of every description.
const DESCRIPTION_HEADER: &str = "keyvault/v1/ceremony";

/// The description of what a ceremony makes, and its digest (see the module doc).
pub(super) fn describe(
    kind: CeremonyKind,
    vault_id: &VaultId,
    nonce: &str,
    plan: &Plan,
) -> (String, String) {
    let mut text = format!(
        "{DESCRIPTION_HEADER}\nvault: {}\nceremony: {}\nnonce: {nonce}\n",
        hex::encode(vault_id),
        kind.as_str()
    );
    let mut commitment = None;
    match plan {
        Plan::Rekey { new, recipients } => match new {
            NewSeal::Passphrase { method, key } => {
                if let SealMethod::Passphrase { salt, params } = method {
                    text += &describe_passphrase(salt, params);
                }
                commitment = Some(key.derive(label::CEREMONY_PASSPHRASE));
            }
            NewSeal::Shares { threshold, shares } => {
                text += &format!(
                    "new method: shares\nnew threshold: {threshold}\nnew shares: {shares}\n"
                );
                if recipients.is_empty() {
                    text += "new shares to: the holder who completes, in clear\n";
                }
                for (i, r) in recipients.iter().enumerate() {
                    text += &format!("share {} to: {r}\n", i + 1);
                }
            }
        },
        Plan::GenerateRoot { recipient } => {
            text += &format!("new admin token to: {recipient}\n");
        }
    }
    let digest = digest_of(&text, commitment.as_ref());
    (text, digest)
}

fn describe_passphrase(salt: &[u8], params: &KdfParams) -> String {
    format!(
        "new method: passphrase\nargon2id: m={} KiB, t={}, p={}\ninsecure kdf: {}\nsalt: {}\n",
        params.m_kib,
        params.t,
        params.p,
        if params.insecure { "yes" } else { "no" },
        hex::encode(salt)
    )
}

fn digest_of(description: &str, commitment: Option<&SecretKey>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(description.as_bytes());
    if let Some(c) = commitment {
        hasher.update(format!("passphrase commitment: {}\n", hex::encode(c.expose())).as_bytes());
    }
    hex::encode(hasher.finalize().as_slice())
}

/// Recomputes the digest of a rekey to a new passphrase from its description and the
/// passphrase (Argon2id with the salt and parameters the description names; slow): what the
/// initiator, who knows the passphrase, compares with the digest the vault answered. `None` if
/// the description is not one of a new passphrase or its parameters are unusable.
pub fn passphrase_digest(description: &str, passphrase: &Passphrase) -> Option<String> {
    let field = |name: &str| {
        description
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    };
    if field("new method")? != "passphrase" {
        return None;
    }
    let argon = field("argon2id")?;
    let number = |prefix: &str| -> Option<u32> {
        argon
            .split(", ")
            .find_map(|p| p.strip_prefix(prefix))?
            .trim_end_matches(" KiB")
            .parse()
            .ok()
    };
    let params = KdfParams {
        m_kib: number("m=")?,
        t: number("t=")?,
        p: number("p=")?,
        insecure: field("insecure kdf")? == "yes",
    };
    params.check_for_read().ok()?;
    let salt_hex = field("salt")?;
    let mut salt = [0u8; crate::kdf::SALT_LEN];
    if salt_hex.len() != 2 * salt.len() {
        return None;
    }
    hex::decode_to_slice(salt_hex, &mut salt).ok()?;
    let key = crate::kdf::derive(passphrase, &salt, &params).ok()?;
    Some(digest_of(
        description,
        Some(&key.derive(label::CEREMONY_PASSPHRASE)),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ceremony::Recipient;

    #[test]
    fn the_digest_covers_the_recipients_and_a_passphrase_only_through_argon2() {
        let vault = [1; 8];
        let recipient = || {
            let text = age::x25519::Identity::generate().to_public().to_string();
            Recipient::parse(&text).unwrap()
        };
        let (r1, r2) = (recipient(), recipient());
        let shares = |rs: Vec<Recipient>| Plan::Rekey {
            new: NewSeal::Shares {
                threshold: 2,
                shares: 2,
            },
            recipients: rs,
        };
        let a = describe(
            CeremonyKind::Rekey,
            &vault,
            "n",
            &shares(vec![r1.clone(), r2.clone()]),
        );
        let b = describe(
            CeremonyKind::Rekey,
            &vault,
            "n",
            &shares(vec![r2.clone(), r1.clone()]),
        );
        assert_ne!(a.1, b.1, "the order of recipients is part of the change");
        assert!(a.0.contains(&format!("share 1 to: {r1}\nshare 2 to: {r2}\n")));
        assert_eq!(a.1.len(), 64);

        let passphrase = Passphrase::new("the new passphrase, long enough");
        let params = KdfParams::INSECURE_FAST;
        let salt = [9u8; crate::kdf::SALT_LEN];
        let key = crate::kdf::derive(&passphrase, &salt, &params).unwrap();
        let plan = Plan::Rekey {
            new: NewSeal::Passphrase {
                method: SealMethod::Passphrase { salt, params },
                key,
            },
            recipients: Vec::new(),
        };
        let (text, digest) = describe(CeremonyKind::Rekey, &vault, "n", &plan);
        assert!(!text.contains("long enough"));
        assert!(text.contains("new method: passphrase\nargon2id: m=64 KiB, t=1, p=1\n"));
        assert_ne!(
            digest,
            digest_of(&text, None),
            "the passphrase is committed"
        );
        assert_eq!(passphrase_digest(&text, &passphrase), Some(digest.clone()));
        assert_ne!(
            passphrase_digest(&text, &Passphrase::new("another passphrase, long enough")),
            Some(digest)
        );
        assert_eq!(passphrase_digest(&a.0, &passphrase), None);
    }
}
