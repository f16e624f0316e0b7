//! Rekey and generate-root ceremonies: the current unseal credential given by several people,
//! one share per call, under a nonce.
//!
//! An initiator starts a ceremony with what it is to make (a rekey: the new seal configuration
//! and, optionally, one age recipient per new share; a generate-root: the age recipient the new
//! admin token is encrypted to) and gets a random nonce. Each holder then gives their own current
//! share under that nonce (a passphrase vault: the passphrase, once). The submission that reaches
//! the threshold runs the operation. At most one ceremony of each kind is open at a time: a
//! second start while one is open is a conflict (cancel it with its nonce, or let it expire after
//! [`CEREMONY_TTL`]), so nobody can displace a ceremony in progress.
//!
//! # The configuration digest
//! Every answer carries a [`CeremonyStatus::description`] of what the ceremony will make and its
//! [`CeremonyStatus::digest`], the SHA-256 of that description (for a new passphrase, of the
//! description followed by a commitment to the passphrase). Holders read the digest to the
//! initiator out of band before they give their share: equal digests mean they approve the same
//! change, recipients included. The description (`keyvault/v1/ceremony` text, one `name: value`
//! per line) names the vault, the kind, the nonce, the new method with its threshold and shares or
//! its Argon2id parameters and salt, and the age recipient of each new share or of the token.
//!
//! A new passphrase cannot be in the description. The commitment line appended before hashing is
//! `passphrase commitment: hex::encode(HKDF-SHA256(Argon2id(passphrase, salt, params),
//! "keyvault/v1/ceremony/passphrase-commitment"))`: the new unseal key, derived at the start with
//! the salt and parameters the vault will store, then through a one-way, labelled HKDF. Testing a
//! guess against the digest costs one Argon2id evaluation at the vault's own parameters, which is
//! what the stored seal configuration already allows once the rekey is done: the digest reveals
//! nothing more. The initiator, who knows the passphrase, can recompute it
//! ([`passphrase_digest`]).
//!
//! Nothing here is secret but the shares held so far ([`Share`], zeroizing) and, for a new
//! passphrase, the derived key ([`SecretKey`](crate::crypto::SecretKey), zeroizing). No clear
//! share or token is kept past the call that completes: a ceremony that ends keeps only what was encrypted to a recipient,
//! so the initiator can fetch it by nonce until the ceremony expires.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::apikey::KeyId;
use crate::crypto::fill_random;
use crate::seal::{Credential, SealConfig, SealMethod};
use crate::shamir::Share;
use crate::{Error, Result};

mod call;
mod digest;
mod plan;

pub use call::{
    Call, FieldError, Fields, Given, NewMethodFields, NonceCall, RekeyStart, Submission,
};
use digest::describe;
pub use digest::passphrase_digest;
pub(crate) use plan::Plan;
pub use plan::{CeremonyKind, Recipient};

/// How long a ceremony waits for its shares, from its start; a completed one keeps its encrypted
/// result until then.
pub const CEREMONY_TTL: Duration = Duration::from_secs(10 * 60);

/// Where a ceremony stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyState {
    /// Waiting for shares.
    Open,
    /// Done: the operation ran.
    Complete,
    /// Cancelled by this call.
    Cancelled,
}

/// What a completed ceremony made, as far as it may be shown again: only what is encrypted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CeremonyResult {
    /// A rekey to shares with recipients: each new share encrypted to its recipient, in order.
    pub encrypted_shares: Vec<String>,
    /// A generate-root: the new admin token encrypted to the initiator's recipient.
    pub encrypted_token: Option<String>,
    /// A generate-root: the new token's id.
    pub token_id: Option<KeyId>,
}

/// A ceremony as every answer shows it. Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyStatus {
    /// Which ceremony.
    pub kind: CeremonyKind,
    /// The ceremony's nonce (32 hex digits).
    pub nonce: String,
    /// Where it stands.
    pub state: CeremonyState,
    /// Current shares given so far (a passphrase counts as the one share of a passphrase vault).
    pub progress: u8,
    /// Current shares needed (1 for a passphrase vault).
    pub threshold: u8,
    /// What the ceremony makes, one `name: value` per line (see the module doc).
    pub description: String,
    /// SHA-256 of the new configuration (see the module doc), 64 hex digits.
    pub digest: String,
    /// Unix seconds when the ceremony expires.
    pub expires_at: u64,
    /// Once complete: what it made, encrypted.
    pub result: Option<CeremonyResult>,
}

/// The answer to one accepted submission.
#[derive(Debug)]
pub struct Submitted {
    /// The ceremony after it.
    pub status: CeremonyStatus,
    /// A rekey to shares without recipients, on completion: the new shares, in clear, for this
    /// caller to hand out once. Empty otherwise.
    pub shares: Vec<Share>,
}

/// A ceremony whose threshold was just reached: the credential to check and what to make.
pub(crate) struct Ready {
    pub(crate) status: CeremonyStatus,
    pub(crate) credential: Credential,
    pub(crate) plan: Plan,
}

/// The outcome of one accepted submission.
pub(crate) enum Step {
    Pending(CeremonyStatus),
    Ready(Ready),
}

/// The ceremonies of one vault: at most one of each kind. A std `Mutex`: every critical section
/// is short and holds no I/O (Argon2id and commits run after the lock is released).
#[derive(Default)]
pub(crate) struct Ceremonies(Mutex<[Option<Slot>; 2]>);

impl fmt::Debug for Ceremonies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ceremonies")
    }
}

struct Slot {
    status: CeremonyStatus,
    started: Instant,
    phase: Phase,
}

enum Phase {
    Open {
        shares: Vec<Share>,
        plan: Plan,
    },
    /// The threshold was reached and the operation runs.
    Completing,
    /// Complete; `status.result` holds what may be fetched again.
    Done,
}

impl Slot {
    fn is_live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < CEREMONY_TTL
    }
}

impl Ceremonies {
    fn lock(&self) -> MutexGuard<'_, [Option<Slot>; 2]> {
        // Every critical section moves whole values in and out; a panic leaves them whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a ceremony of `kind` over the vault as `config` says; a conflict while another of
    /// the same kind is open or completing.
    pub(crate) fn start(
        &self,
        kind: CeremonyKind,
        config: &SealConfig,
        plan: Plan,
        now: Instant,
        unix_now: u64,
    ) -> Result<CeremonyStatus> {
        let mut slots = self.lock();
        let slot = &mut slots[kind.index()];
        if let Some(open) = slot.as_ref().filter(|s| s.is_live(now))
            && !matches!(open.phase, Phase::Done)
        {
            return Err(Error::Conflict(format!(
                "a {} ceremony is in progress ({} of {} shares given, expires at Unix time {}): \
                 cancel it with its nonce, or wait until it expires",
                kind.as_str(),
                open.status.progress,
                open.status.threshold,
                open.status.expires_at
            )));
        }
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes);
        let nonce = hex::encode(bytes);
        let (description, digest) = describe(kind, &config.vault_id, &nonce, &plan);
        let threshold = match config.method {
            SealMethod::Passphrase { .. } => 1,
            SealMethod::Shares { threshold, .. } => threshold,
        };
        let status = CeremonyStatus {
            kind,
            nonce,
            state: CeremonyState::Open,
            progress: 0,
            threshold,
            description,
            digest,
            expires_at: unix_now + CEREMONY_TTL.as_secs(),
            result: None,
        };
        *slot = Some(Slot {
            status: status.clone(),
            started: now,
            phase: Phase::Open {
                shares: Vec::new(),
                plan,
            },
        });
        Ok(status)
    }

    /// The ceremony of `kind` with `nonce`, as it stands.
    pub(crate) fn status(
        &self,
        kind: CeremonyKind,
        nonce: &str,
        now: Instant,
    ) -> Result<CeremonyStatus> {
        let mut slots = self.lock();
        Ok(live(&mut slots[kind.index()], kind, nonce, now)?
            .status
            .clone())
    }

    /// Drops the open ceremony of `kind` with `nonce`, and the shares it holds.
    pub(crate) fn cancel(
        &self,
        kind: CeremonyKind,
        nonce: &str,
        now: Instant,
    ) -> Result<CeremonyStatus> {
        let mut slots = self.lock();
        let slot = &mut slots[kind.index()];
        let found = live(slot, kind, nonce, now)?;
        if !matches!(found.phase, Phase::Open { .. }) {
            return Err(Error::Conflict(format!(
                "this {} ceremony is complete or completing: it can no longer be cancelled",
                kind.as_str()
            )));
        }
        let mut status = found.status.clone();
        status.state = CeremonyState::Cancelled;
        *slot = None;
        Ok(status)
    }

    /// Takes one submission. A share is checked against the vault and the shares given so far
    /// ([`SealConfig::admit_share`]) and refused with the progress kept; `expect_digest`, when
    /// given, must be the ceremony's digest. When the threshold is reached the ceremony turns
    /// completing and its credential and plan are handed out: the caller runs the operation
    /// and then calls [`Ceremonies::finish`].
    pub(crate) fn submit(
        &self,
        kind: CeremonyKind,
        config: &SealConfig,
        nonce: &str,
        submission: Submission,
        expect_digest: Option<&str>,
        now: Instant,
    ) -> Result<Step> {
        let mut slots = self.lock();
        let slot = &mut slots[kind.index()];
        let found = live(slot, kind, nonce, now)?;
        if let Some(expected) = expect_digest
            && !expected.trim().eq_ignore_ascii_case(&found.status.digest)
        {
            return Err(Error::Conflict(format!(
                "this ceremony's configuration digest is {}, not the one you expected: it is not \
                 the change you were asked to approve; nothing was submitted",
                found.status.digest
            )));
        }
        let Phase::Open { shares, .. } = &mut found.phase else {
            return Err(Error::Conflict(format!(
                "this {} ceremony is complete or completing: no more shares are needed",
                kind.as_str()
            )));
        };
        let credential = match submission {
            Submission::Passphrase(passphrase) => {
                if let SealMethod::Shares { .. } = config.method {
                    return Err(Error::WrongMethod {
                        expected: "shares",
                        given: "a passphrase",
                    });
                }
                Credential::Passphrase(passphrase)
            }
            Submission::Share(share) => {
                config.admit_share(shares, &share)?;
                shares.push(share);
                found.status.progress = shares.len().min(usize::from(u8::MAX)) as u8;
                if shares.len() < usize::from(found.status.threshold) {
                    return Ok(Step::Pending(found.status.clone()));
                }
                Credential::Shares(std::mem::take(shares))
            }
        };
        let Phase::Open { plan, .. } = std::mem::replace(&mut found.phase, Phase::Completing)
        else {
            // Invariant: matched as open above, under the same lock.
            return Err(Error::Conflict("the ceremony changed state".into()));
        };
        found.status.progress = found.status.threshold;
        Ok(Step::Ready(Ready {
            status: found.status.clone(),
            credential,
            plan,
        }))
    }

    /// Ends the completing ceremony of `kind` with `nonce`: complete with what it made (kept for
    /// fetching by nonce until it expires), or, with `None`, dropped (the credential failed).
    pub(crate) fn finish(
        &self,
        kind: CeremonyKind,
        nonce: &str,
        result: Option<CeremonyResult>,
    ) -> Option<CeremonyStatus> {
        let mut slots = self.lock();
        let slot = &mut slots[kind.index()];
        let found = slot
            .as_mut()
            .filter(|s| s.status.nonce == nonce && matches!(s.phase, Phase::Completing))?;
        match result {
            Some(result) => {
                found.status.state = CeremonyState::Complete;
                found.status.result = Some(result);
                found.phase = Phase::Done;
                Some(found.status.clone())
            }
            None => {
                *slot = None;
                None
            }
        }
    }

    /// Drops every ceremony but a completing one of `keep` (seal, rekey: the shares held are no
    /// longer current).
    pub(crate) fn clear(&self, keep: Option<CeremonyKind>) {
        let mut slots = self.lock();
        for (i, slot) in slots.iter_mut().enumerate() {
            if keep.is_none_or(|k| k.index() != i) {
                *slot = None;
            }
        }
    }
}

/// The live ceremony in `slot` if its nonce is `nonce`; an expired one is dropped.
fn live<'a>(
    slot: &'a mut Option<Slot>,
    kind: CeremonyKind,
    nonce: &str,
    now: Instant,
) -> Result<&'a mut Slot> {
    if slot.as_ref().is_some_and(|s| !s.is_live(now)) {
        *slot = None;
    }
    match slot {
        Some(found) if found.status.nonce == nonce.trim() => Ok(found),
        _ => Err(Error::NoCeremony(kind.as_str())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::seal::NewSeal;
    use crate::shamir;

    fn config(threshold: u8) -> (SealConfig, Vec<Share>) {
        let mut vault_id = [0u8; 8];
        fill_random(&mut vault_id);
        let key = SecretKey::random();
        let shares = shamir::split(&key, vault_id, threshold, 5);
        let config = SealConfig::new(
            vault_id,
            "kv".into(),
            0,
            SealMethod::Shares {
                threshold,
                shares: 5,
            },
            &SecretKey::random(),
            &key,
        );
        (config, shares)
    }

    fn plan() -> Plan {
        Plan::Rekey {
            new: NewSeal::Shares {
                threshold: 2,
                shares: 3,
            },
            recipients: Vec::new(),
        }
    }

    #[test]
    fn a_ceremony_expires_after_its_ttl_and_is_dropped() {
        let (config, _) = config(2);
        let c = Ceremonies::default();
        let start = Instant::now();
        let s = c
            .start(CeremonyKind::Rekey, &config, plan(), start, 0)
            .unwrap();
        let later = start + CEREMONY_TTL - Duration::from_secs(1);
        assert!(c.status(CeremonyKind::Rekey, &s.nonce, later).is_ok());
        assert!(matches!(
            c.status(CeremonyKind::GenerateRoot, &s.nonce, later),
            Err(Error::NoCeremony("generate-root"))
        ));
        assert!(matches!(
            c.start(CeremonyKind::Rekey, &config, plan(), later, 0),
            Err(Error::Conflict(_))
        ));
        let expired = start + CEREMONY_TTL;
        assert!(matches!(
            c.status(CeremonyKind::Rekey, &s.nonce, expired),
            Err(Error::NoCeremony("rekey"))
        ));
        assert!(
            c.start(CeremonyKind::Rekey, &config, plan(), expired, 0)
                .is_ok()
        );
    }

    #[test]
    fn shares_are_checked_once_each_and_the_threshold_hands_out_the_credential() {
        let (config, shares) = config(3);
        let (_, foreign) = self::config(3);
        let c = Ceremonies::default();
        let now = Instant::now();
        let s = c
            .start(CeremonyKind::Rekey, &config, plan(), now, 0)
            .unwrap();
        let submit = |share: &Share, digest: Option<&str>| {
            c.submit(
                CeremonyKind::Rekey,
                &config,
                &s.nonce,
                Submission::Share(share.clone()),
                digest,
                now,
            )
        };
        assert!(matches!(
            submit(&shares[0], Some(&"0".repeat(64))),
            Err(Error::Conflict(_))
        ));
        let Ok(Step::Pending(p)) = submit(&shares[0], Some(&s.digest.to_uppercase())) else {
            panic!("the first share was refused");
        };
        assert_eq!((p.progress, p.threshold), (1, 3));
        assert!(matches!(
            submit(&shares[0], None),
            Err(Error::Share(shamir::ShareError::Repeated))
        ));
        assert!(matches!(
            submit(&foreign[1], None),
            Err(Error::Share(shamir::ShareError::OtherVault))
        ));
        assert!(matches!(submit(&shares[1], None), Ok(Step::Pending(_))));
        let Ok(Step::Ready(ready)) = submit(&shares[4], None) else {
            panic!("the threshold did not complete");
        };
        assert_eq!(ready.status.progress, 3);
        assert!(matches!(ready.credential, Credential::Shares(ref s) if s.len() == 3));
        // Completing: no more shares, no cancel, no new start.
        assert!(matches!(submit(&shares[2], None), Err(Error::Conflict(_))));
        assert!(c.cancel(CeremonyKind::Rekey, &s.nonce, now).is_err());
        let done = c
            .finish(
                CeremonyKind::Rekey,
                &s.nonce,
                Some(CeremonyResult::default()),
            )
            .unwrap();
        assert_eq!(done.state, CeremonyState::Complete);
        assert_eq!(done.digest, s.digest);
        assert!(
            c.start(CeremonyKind::Rekey, &config, plan(), now, 0)
                .is_ok(),
            "a completed ceremony does not block the next"
        );
    }
}
