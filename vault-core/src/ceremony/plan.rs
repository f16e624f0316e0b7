//! What a ceremony is and what it makes: its kind, the age recipients of what it hands out, and
//! its plan. Below both the ceremony's state machine (`mod.rs`) and its description and digest
//! (`digest.rs`), which share these.

use std::fmt;

use crate::seal::NewSeal;
use crate::{Error, Result};

/// Which ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum CeremonyKind {
    /// A new root key and a new unseal method.
    Rekey,
    /// A new admin token.
    GenerateRoot,
}

impl CeremonyKind {
    /// `rekey` or `generate-root`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The audit event of the ceremony's submissions and completion.
    pub(crate) fn event(self) -> &'static str {
        match self {
            CeremonyKind::Rekey => "sys.rekey",
            CeremonyKind::GenerateRoot => "sys.generate_root",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            CeremonyKind::Rekey => 0,
            CeremonyKind::GenerateRoot => 1,
        }
    }
}

/// An age X25519 recipient (`age1...`): a public key a new share or a generated token is
/// encrypted to (age v1, ASCII-armored).
#[derive(Clone)]
pub struct Recipient(age::x25519::Recipient);

impl Recipient {
    /// Parses `age1...` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Recipient> {
        text.trim().parse().map(Recipient).map_err(|_| {
            Error::InvalidInput(
                "not an age X25519 recipient (expected `age1` followed by 58 characters)".into(),
            )
        })
    }

    /// `plaintext` encrypted to this recipient, as an ASCII-armored age file.
    pub(crate) fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        age::encrypt_and_armor(&self.0, plaintext)
            .map_err(|e| Error::Corrupt(format!("age encryption failed: {e}")))
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({self})")
    }
}

/// What a ceremony makes.
pub(crate) enum Plan {
    /// A rekey to `new`, the new shares encrypted to `recipients` if any (one per share).
    Rekey {
        new: NewSeal,
        recipients: Vec<Recipient>,
    },
    /// A generate-root, the token encrypted to `recipient`.
    GenerateRoot { recipient: Recipient },
}

#[cfg(test)]
mod tests {
    use super::CeremonyKind;

    #[test]
    fn ceremony_kinds_are_named_as_the_api_names_them() {
        assert_eq!(CeremonyKind::Rekey.as_str(), "rekey");
        assert_eq!(CeremonyKind::GenerateRoot.as_str(), "generate-root");
    }
}
