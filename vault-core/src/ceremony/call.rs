//! What one call to a ceremony asks, from the fields of a request: which fields go together (a
//! start comes alone; a credential, a read or a cancel comes under a nonce), what the new method
//! of a rekey may be, and the age recipients. A front end (the HTTP server) parses its own
//! syntax into these fields and leaves every decision to this module, so that the rules exist
//! once, beside the ceremonies they guard.

use secrecy::{ExposeSecret as _, SecretString};

use super::plan::Recipient;
use crate::kdf::{KdfParams, Passphrase};
use crate::seal::UnsealMethod;
use crate::shamir::Share;
use crate::{Error, Result};

/// Fields of a request that do not make a call, naming the field; nothing was done. The
/// message never quotes what was sent (it may be a secret in the wrong place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(String);

impl FieldError {
    fn new(message: impl Into<String>) -> FieldError {
        FieldError(message.into())
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Error {
        Error::InvalidInput(e.0)
    }
}

/// The fields of a call besides those of a start (which are the ceremony kind's own).
#[derive(Debug, Default)]
pub struct Fields {
    /// The ceremony's nonce.
    pub nonce: Option<String>,
    /// The current passphrase.
    pub passphrase: Option<Passphrase>,
    /// One current share, as text.
    pub share: Option<SecretString>,
    /// The configuration digest the holder expects.
    pub digest: Option<String>,
    /// Whether to abandon the ceremony.
    pub cancel: Option<bool>,
}

/// What one call asks of a ceremony, once its fields are checked.
#[derive(Debug)]
pub enum Call {
    /// Open a ceremony; what it makes is given by the start's own fields.
    Start,
    /// Read, give a credential to, or cancel the ceremony with a nonce.
    Nonce(NonceCall),
}

/// A call under a ceremony's nonce: what [`Vault::call_ceremony`](crate::Vault::call_ceremony)
/// runs.
#[derive(Debug)]
pub enum NonceCall {
    /// Read the ceremony.
    Status {
        /// The ceremony's nonce.
        nonce: String,
    },
    /// Give one holder's credential, only if the ceremony's digest is `digest` when given.
    Submit {
        /// The ceremony's nonce.
        nonce: String,
        /// The credential.
        given: Given,
        /// The digest the holder approved.
        digest: Option<String>,
    },
    /// Abandon the ceremony.
    Cancel {
        /// The ceremony's nonce.
        nonce: String,
    },
}

/// A holder's credential as given: a share is still text, parsed when it is submitted (a
/// malformed one is then [`Error::Share`]).
#[derive(Debug)]
pub enum Given {
    /// The current passphrase.
    Passphrase(Passphrase),
    /// One current share, `kvs1_...`.
    Share(SecretString),
}

impl Given {
    /// The submission, with the share parsed.
    pub(crate) fn into_submission(self) -> Result<Submission> {
        match self {
            Given::Passphrase(p) => Ok(Submission::Passphrase(p)),
            Given::Share(text) => Ok(Submission::Share(Share::parse(text.expose_secret())?)),
        }
    }
}

impl Call {
    /// The call that `fields` make; `starting` says whether the start's own fields were given.
    pub fn parse(starting: bool, fields: Fields) -> Result<Call, FieldError> {
        let Fields {
            nonce,
            passphrase,
            share,
            digest,
            cancel,
        } = fields;
        if starting {
            if nonce.is_some()
                || passphrase.is_some()
                || share.is_some()
                || digest.is_some()
                || cancel.is_some()
            {
                return Err(FieldError::new(
                    "the start of a ceremony comes alone, without `nonce`, a credential, \
                     `digest` or `cancel`: each holder then gives their share under the nonce \
                     it answers",
                ));
            }
            return Ok(Call::Start);
        }
        let Some(nonce) = nonce else {
            return Err(FieldError::new(
                "give `nonce` (the ceremony's), or start a ceremony",
            ));
        };
        let given = match (passphrase, share) {
            (Some(p), None) => Some(Given::Passphrase(p)),
            (None, Some(s)) => Some(Given::Share(s)),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "give one of `passphrase` or `share`, not both",
                ));
            }
        };
        let call = match (given, digest, cancel) {
            (None, None, None) => NonceCall::Status { nonce },
            (None, None, Some(true)) => NonceCall::Cancel { nonce },
            (_, _, Some(false)) => {
                return Err(FieldError::new(
                    "`cancel` must be true (leave it out to give a credential)",
                ));
            }
            (_, _, Some(true)) => {
                return Err(FieldError::new("to cancel, give only `nonce` and `cancel`"));
            }
            (None, Some(_), None) => {
                return Err(FieldError::new(
                    "`digest` goes with a credential (`share` or `passphrase`)",
                ));
            }
            (Some(given), digest, None) => NonceCall::Submit {
                nonce,
                given,
                digest,
            },
        };
        Ok(Call::Nonce(call))
    }
}

/// The new unseal method of a rekey as a request gives it: a passphrase, or shares and a
/// threshold.
#[derive(Debug, Default)]
pub struct NewMethodFields {
    /// A new passphrase.
    pub passphrase: Option<Passphrase>,
    /// Shares to make.
    pub shares: Option<u8>,
    /// Shares needed to unseal.
    pub threshold: Option<u8>,
}

/// The start of a rekey ceremony, checked: what [`Vault::start_rekey`](crate::Vault::start_rekey)
/// takes.
#[derive(Debug)]
pub struct RekeyStart {
    /// The new unseal method.
    pub new: UnsealMethod,
    /// One recipient per new share, in order, or none.
    pub recipients: Vec<Recipient>,
}

impl RekeyStart {
    /// The start from its fields. A new passphrase gets the default Argon2id parameters, or the
    /// test-grade ones if the vault is already marked `insecure_kdf`: a rekey started this way
    /// never weakens the KDF of a vault that has a real one.
    pub fn parse(
        new: Option<NewMethodFields>,
        recipients: Option<Vec<String>>,
        insecure_kdf: bool,
    ) -> Result<RekeyStart, FieldError> {
        let Some(new) = new else {
            return Err(FieldError::new(
                "`new_share_recipients` goes with `new`, at the start",
            ));
        };
        let new = new_method(new, insecure_kdf)?;
        let recipients = recipients
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, r)| Recipient::parse_field(&format!("new_share_recipients[{i}]"), r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RekeyStart { new, recipients })
    }
}

fn new_method(new: NewMethodFields, insecure_kdf: bool) -> Result<UnsealMethod, FieldError> {
    match (new.passphrase, new.shares, new.threshold) {
        (Some(passphrase), None, None) => {
            passphrase
                .check_new()
                .map_err(|e| FieldError(format!("new.passphrase: {e}")))?;
            let params = if insecure_kdf {
                KdfParams::INSECURE_FAST
            } else {
                KdfParams::DEFAULT
            };
            Ok(UnsealMethod::Passphrase { passphrase, params })
        }
        (None, Some(shares), Some(threshold)) => {
            if threshold < 2 || threshold > shares {
                return Err(FieldError(format!(
                    "new: the threshold must be at least 2 and at most the number of shares \
                     (got {threshold} of {shares})"
                )));
            }
            Ok(UnsealMethod::Shares { threshold, shares })
        }
        _ => Err(FieldError::new(
            "new: give either `passphrase`, or `shares` and `threshold`",
        )),
    }
}

impl Recipient {
    /// Parses the recipient in field `name`, naming it on failure.
    pub fn parse_field(name: &str, text: &str) -> Result<Recipient, FieldError> {
        Recipient::parse(text).map_err(|e| FieldError(format!("{name}: {e}")))
    }
}

/// One holder's credential given to a ceremony.
#[derive(Debug)]
pub enum Submission {
    /// The current passphrase (completes a passphrase vault's ceremony).
    Passphrase(Passphrase),
    /// One current share.
    Share(Share),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn share_text() -> SecretString {
        SecretString::from("kvs1_not-checked-here")
    }

    #[test]
    fn a_start_comes_alone_and_every_other_call_under_a_nonce() {
        assert!(matches!(
            Call::parse(true, Fields::default()),
            Ok(Call::Start)
        ));
        let with_nonce = || Fields {
            nonce: Some("n".into()),
            ..Fields::default()
        };
        assert!(Call::parse(true, with_nonce()).is_err());
        assert!(Call::parse(false, Fields::default()).is_err());
        assert!(matches!(
            Call::parse(false, with_nonce()),
            Ok(Call::Nonce(NonceCall::Status { .. }))
        ));
        let cancel = Fields {
            cancel: Some(true),
            ..with_nonce()
        };
        assert!(matches!(
            Call::parse(false, cancel),
            Ok(Call::Nonce(NonceCall::Cancel { .. }))
        ));
        let both = Fields {
            passphrase: Some(Passphrase::new("a long passphrase")),
            share: Some(share_text()),
            ..with_nonce()
        };
        assert!(Call::parse(false, both).is_err());
        let digest_alone = Fields {
            digest: Some("00".into()),
            ..with_nonce()
        };
        assert!(Call::parse(false, digest_alone).is_err());
        let submit = Fields {
            share: Some(share_text()),
            digest: Some("00".into()),
            ..with_nonce()
        };
        assert!(matches!(
            Call::parse(false, submit),
            Ok(Call::Nonce(NonceCall::Submit {
                given: Given::Share(_),
                digest: Some(_),
                ..
            }))
        ));
        let cancel_with_share = Fields {
            share: Some(share_text()),
            cancel: Some(true),
            ..with_nonce()
        };
        assert!(Call::parse(false, cancel_with_share).is_err());
    }

    #[test]
    fn a_rekey_over_an_insecure_kdf_vault_keeps_the_test_grade_parameters_only_there() {
        let passphrase = || NewMethodFields {
            passphrase: Some(Passphrase::new("the new passphrase, long enough")),
            ..NewMethodFields::default()
        };
        for (insecure, expected) in [
            (true, KdfParams::INSECURE_FAST),
            (false, KdfParams::DEFAULT),
        ] {
            let start = RekeyStart::parse(Some(passphrase()), None, insecure).unwrap();
            assert!(
                matches!(start.new, UnsealMethod::Passphrase { params, .. } if params == expected)
            );
        }
        let shares = |shares, threshold| NewMethodFields {
            shares: Some(shares),
            threshold: Some(threshold),
            ..NewMethodFields::default()
        };
        assert!(RekeyStart::parse(Some(shares(3, 2)), None, false).is_ok());
        assert!(RekeyStart::parse(Some(shares(3, 1)), None, false).is_err());
        assert!(RekeyStart::parse(Some(shares(3, 4)), None, false).is_err());
        assert!(RekeyStart::parse(None, Some(Vec::new()), false).is_err());
        let e = RekeyStart::parse(Some(shares(3, 2)), Some(vec!["age1nope".into()]), false)
            .unwrap_err();
        assert!(
            e.to_string().starts_with("new_share_recipients[0]: "),
            "{e}"
        );
    }
}
