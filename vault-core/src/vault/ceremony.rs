//! The vault's side of the rekey and generate-root ceremonies (see [`crate::ceremony`]): start,
//! read, cancel and submit, each audited as the ceremony's rules say, and the operations they
//! run once the threshold is reached (a rekey, a new admin token), which also run directly given
//! the whole current credential ([`Vault::rekey`], [`Vault::generate_root`]).

use std::sync::Arc;
use std::time::Instant;

use secrecy::ExposeSecret as _;

use super::{Issued, Keys, META_KEYRING, META_SEAL, State, Vault};
use crate::apikey::ApiKey;
use crate::audit::Event;
use crate::ceremony::{
    CeremonyKind, CeremonyResult, CeremonyState, CeremonyStatus, NonceCall, Plan, Ready, Recipient,
    Step, Submission, Submitted,
};
use crate::codec;
use crate::context::Context;
use crate::crypto::SecretKey;
use crate::keyring::Keyring;
use crate::seal::{Credential, NewSeal, UnsealMethod, check_credential};
use crate::shamir::Share;
use crate::storage::{Batch, Space};
use crate::tokens::Role;
use crate::{Error, Result};

impl Vault {
    /// Makes a new root key and a new unseal method (passphrase or shares, either way round),
    /// given the current credential. Re-encrypts only the keyring; no record is rewritten.
    /// Drops every ceremony in progress: their shares are no longer current.
    pub fn rekey(&self, ctx: &Context, current: Credential, new: &UnsealMethod) -> Result<Issued> {
        let result = new
            .prepare_new()
            .and_then(|new| self.rekey_inner(ctx, current, new, None));
        if let Err(e) = &result {
            self.commit(ctx, Batch::default(), Event::new("sys.rekey", e.code()))?;
        }
        result.map(|(issued, _)| issued)
    }

    /// The rekey itself; under a ceremony, also encrypts each new share to its recipient
    /// before anything is committed (the shares are never lost to a failed encryption) and
    /// names the ceremony in the audit entry.
    fn rekey_inner(
        &self,
        ctx: &Context,
        current: Credential,
        new: NewSeal,
        ceremony: Option<(&CeremonyStatus, &[Recipient])>,
    ) -> Result<(Issued, Vec<String>)> {
        let _admin = self.admin();
        let keys = self.keys()?;
        let config = self.config().clone();
        check_credential(&config, current)?;

        let (method, unseal_key, shares) = new.realise(config.vault_id);
        let recipients = ceremony.map_or(&[][..], |(_, r)| r);
        let encrypted = recipients
            .iter()
            .zip(&shares)
            .map(|(r, share)| r.encrypt(share.expose_text().expose_secret().as_bytes()))
            .collect::<Result<Vec<String>>>()?;
        let root = SecretKey::random();
        let new_config = config.rewrapped(method, &root, &unseal_key);
        let mut batch = Batch::default();
        batch.insert(Space::Meta, META_SEAL, &codec::encode(&new_config));
        let sealed_keyring = keys.keyring.seal(&root, &config.vault_id);
        // The keyring is not `Clone` (it holds secrets): the in-memory copy for the new state is
        // opened from the very bytes about to be stored, which also proves they open under the
        // new root before anything is committed.
        let keyring = Keyring::open(&root, &config.vault_id, &sealed_keyring)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        batch.insert(Space::Meta, META_KEYRING, &sealed_keyring);
        let mut event = Event::new("sys.rekey", "ok").detail("method", method.name());
        if let Some((status, recipients)) = ceremony {
            event = event
                .detail("nonce", status.nonce.as_str())
                .detail("digest", status.digest.as_str())
                .detail("encrypted_shares", recipients.len());
        }
        self.commit(ctx, batch, event)?;

        *self.inner.config.write().unwrap_or_else(|e| e.into_inner()) = new_config;
        *self.state_mut() = State::Unsealed(Arc::new(Keys { root, keyring }));
        // Ceremonies hold shares of the old split: drop them (a completing rekey ceremony is
        // ended by its caller, with its result).
        self.inner
            .ceremonies
            .clear(ceremony.map(|_| CeremonyKind::Rekey));
        let shares = if encrypted.is_empty() {
            shares
        } else {
            Vec::new()
        };
        let issued = Issued {
            shares,
            root_token: None,
            audit_public_key: self.audit_public_key()?,
        };
        Ok((issued, encrypted))
    }

    /// Starts a rekey ceremony (see [`crate::ceremony`]) to `new`, each new share to be
    /// encrypted to its recipient (none: the shares come back in clear to the holder who
    /// completes; else exactly one per new share). A new passphrase runs Argon2id now, once
    /// (slow: run it off an async runtime's workers). A conflict while another rekey ceremony is
    /// open. Audited as `sys.rekey.start` with the nonce and the digest.
    pub fn start_rekey(
        &self,
        ctx: &Context,
        new: &UnsealMethod,
        recipients: Vec<Recipient>,
    ) -> Result<CeremonyStatus> {
        self.keys()?;
        match (new, recipients.len()) {
            (_, 0) => {}
            (UnsealMethod::Shares { shares, .. }, n) if n == usize::from(*shares) => {}
            (UnsealMethod::Shares { shares, .. }, n) => {
                return Err(Error::InvalidInput(format!(
                    "give one recipient per new share, in order, or none: {shares} new shares, \
                     {n} recipients"
                )));
            }
            (UnsealMethod::Passphrase { .. }, _) => {
                return Err(Error::InvalidInput(
                    "recipients are for new shares: a new passphrase makes none".into(),
                ));
            }
        }
        let new = new.prepare_new()?;
        let config = self.config().clone();
        let plan = Plan::Rekey { new, recipients };
        let kind = CeremonyKind::Rekey;
        let status = self.inner.ceremonies.start(
            kind,
            &config,
            plan,
            Instant::now(),
            self.inner.clock.now(),
        )?;
        let event = Event::new("sys.rekey.start", "ok")
            .detail("nonce", status.nonce.as_str())
            .detail("digest", status.digest.as_str());
        if let Err(e) = self.commit(ctx, Batch::default(), event) {
            let _ = self
                .inner
                .ceremonies
                .cancel(kind, &status.nonce, Instant::now());
            return Err(e);
        }
        Ok(status)
    }

    /// Starts a generate-root ceremony (see [`crate::ceremony`]): the new admin token will be
    /// encrypted to `recipient`, the initiator's one-time key. Needs no token, only an unsealed
    /// vault; not audited (it holds no credential and changes nothing durable: the submissions
    /// are audited with the nonce and the digest). A conflict while another one is open.
    pub fn start_generate_root(&self, recipient: Recipient) -> Result<CeremonyStatus> {
        self.keys()?;
        let config = self.config().clone();
        let plan = Plan::GenerateRoot { recipient };
        self.inner.ceremonies.start(
            CeremonyKind::GenerateRoot,
            &config,
            plan,
            Instant::now(),
            self.inner.clock.now(),
        )
    }

    /// The ceremony of `kind` with `nonce` as it stands (a completed one with its encrypted
    /// result, until it expires).
    pub fn ceremony_status(&self, kind: CeremonyKind, nonce: &str) -> Result<CeremonyStatus> {
        self.keys()?;
        self.inner.ceremonies.status(kind, nonce, Instant::now())
    }

    /// Cancels the open ceremony of `kind` with `nonce`, dropping the shares it holds. A rekey's
    /// cancel is audited (`sys.rekey.cancel`); it is cancelled even if the entry cannot be
    /// written, which the error then says.
    pub fn cancel_ceremony(
        &self,
        ctx: &Context,
        kind: CeremonyKind,
        nonce: &str,
    ) -> Result<CeremonyStatus> {
        self.keys()?;
        let status = self.inner.ceremonies.cancel(kind, nonce, Instant::now())?;
        if kind == CeremonyKind::Rekey {
            let event = Event::new("sys.rekey.cancel", "ok").detail("nonce", status.nonce.as_str());
            self.commit(ctx, Batch::default(), event)?;
        }
        Ok(status)
    }

    /// Gives one holder's credential to the ceremony of `kind` with `nonce` (see
    /// [`crate::ceremony`]); with `expect_digest`, only if the ceremony's digest is that one.
    /// The submission that reaches the threshold runs the operation (Argon2id for a passphrase:
    /// slow). Every submission to an open ceremony is audited under the ceremony's event
    /// (`sys.rekey`, `sys.generate_root`), accepted or refused, with the nonce; an unknown nonce
    /// is not (nothing was given to a ceremony). A share refused on its own (malformed, of
    /// another vault or split, repeated) keeps the progress; a credential that fails to unwrap
    /// the root key ends the ceremony.
    pub fn submit_to_ceremony(
        &self,
        ctx: &Context,
        kind: CeremonyKind,
        nonce: &str,
        submission: Submission,
        expect_digest: Option<&str>,
    ) -> Result<Submitted> {
        self.keys()?;
        let config = self.config().clone();
        let ceremonies = &self.inner.ceremonies;
        let step = ceremonies.submit(
            kind,
            &config,
            nonce,
            submission,
            expect_digest,
            Instant::now(),
        );
        let ready = match step {
            Err(e) => {
                if matches!(e, Error::Share(_) | Error::WrongMethod { .. }) {
                    let event = Event::new(kind.event(), e.code())
                        .detail("step", "submit")
                        .detail("nonce", nonce.trim());
                    self.commit(ctx, Batch::default(), event)?;
                }
                return Err(e);
            }
            Ok(Step::Pending(status)) => {
                let event = Event::new(kind.event(), "ok")
                    .detail("step", "submit")
                    .detail("nonce", status.nonce.as_str())
                    .detail("digest", status.digest.as_str())
                    .detail("progress", status.progress);
                if let Err(e) = self.commit(ctx, Batch::default(), event) {
                    // Nothing is held that its entry does not show.
                    let _ = ceremonies.cancel(kind, &status.nonce, Instant::now());
                    return Err(e);
                }
                return Ok(Submitted {
                    status,
                    shares: Vec::new(),
                });
            }
            Ok(Step::Ready(ready)) => ready,
        };
        let nonce = ready.status.nonce.clone();
        let mut done = ready.status.clone();
        let outcome = self.complete_ceremony(ctx, ready);
        match outcome {
            Ok((result, shares)) => {
                // A seal may have dropped the slot meanwhile: the result stands all the same.
                let status = ceremonies
                    .finish(kind, &nonce, Some(result.clone()))
                    .unwrap_or_else(|| {
                        done.state = CeremonyState::Complete;
                        done.result = Some(result);
                        done
                    });
                Ok(Submitted { status, shares })
            }
            Err(e) => {
                ceremonies.finish(kind, &nonce, None);
                let event = Event::new(kind.event(), e.code())
                    .detail("step", "complete")
                    .detail("nonce", nonce.as_str());
                self.commit(ctx, Batch::default(), event)?;
                Err(e)
            }
        }
    }

    /// Runs a ceremony's operation once its threshold is reached.
    fn complete_ceremony(
        &self,
        ctx: &Context,
        ready: Ready,
    ) -> Result<(CeremonyResult, Vec<Share>)> {
        let Ready {
            status,
            credential,
            plan,
        } = ready;
        match plan {
            Plan::Rekey { new, recipients } => {
                let (issued, encrypted_shares) =
                    self.rekey_inner(ctx, credential, new, Some((&status, &recipients)))?;
                let result = CeremonyResult {
                    encrypted_shares,
                    ..CeremonyResult::default()
                };
                Ok((result, issued.shares))
            }
            Plan::GenerateRoot { recipient } => {
                let config = self.config().clone();
                check_credential(&config, credential)?;
                let issued = self.create_token(ctx, None, Role::Admin, "root (generated)", None)?;
                let text = issued.token.expose_secret_text();
                let encrypted = recipient.encrypt(text.expose_secret().as_bytes())?;
                let token_id = issued.token.id();
                let event = Event::new("sys.generate_root", "ok")
                    .detail("step", "complete")
                    .detail("nonce", status.nonce.as_str())
                    .detail("digest", status.digest.as_str())
                    .detail("token_id", token_id.to_string());
                self.commit(ctx, Batch::default(), event)?;
                let result = CeremonyResult {
                    encrypted_token: Some(encrypted),
                    token_id: Some(token_id),
                    ..CeremonyResult::default()
                };
                Ok((result, Vec::new()))
            }
        }
    }

    /// Mints a new `admin` token, given the unseal credential (the passphrase or the threshold
    /// of current shares): the way back in when every admin token is lost or revoked.
    pub fn generate_root(&self, ctx: &Context, current: Credential) -> Result<ApiKey> {
        self.keys()?;
        let config = self.config().clone();
        if let Err(e) = check_credential(&config, current) {
            self.commit(
                ctx,
                Batch::default(),
                Event::new("sys.generate_root", e.code()),
            )?;
            return Err(e);
        }
        Ok(self
            .create_token(ctx, None, Role::Admin, "root (generated)", None)?
            .token)
    }

    /// Runs one call under a ceremony's nonce (see [`crate::ceremony::Call`]): reads it,
    /// cancels it, or gives it a credential, as [`Vault::ceremony_status`],
    /// [`Vault::cancel_ceremony`] and [`Vault::submit_to_ceremony`] do. A share given as text
    /// is parsed first: a malformed one is refused before any ceremony sees it, unaudited.
    pub fn call_ceremony(
        &self,
        ctx: &Context,
        kind: CeremonyKind,
        call: NonceCall,
    ) -> Result<Submitted> {
        let status_only = |status| Submitted {
            status,
            shares: Vec::new(),
        };
        match call {
            NonceCall::Status { nonce } => self.ceremony_status(kind, &nonce).map(status_only),
            NonceCall::Cancel { nonce } => self.cancel_ceremony(ctx, kind, &nonce).map(status_only),
            NonceCall::Submit {
                nonce,
                given,
                digest,
            } => {
                let submission = given.into_submission()?;
                self.submit_to_ceremony(ctx, kind, &nonce, submission, digest.as_deref())
            }
        }
    }
}
