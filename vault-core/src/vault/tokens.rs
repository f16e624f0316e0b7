//! The handle's API for vault tokens: each call takes the unsealed keyring and hands it, with
//! the handle's commit, to the token component (`TokenBook`).

use super::Vault;
use crate::apikey::KeyId;
use crate::audit::Event;
use crate::context::Context;
use crate::storage::Batch;
use crate::tokens::{IssuedToken, Role, TokenInfo, refused_digest};
use crate::{Error, Result};

impl Vault {
    /// Makes a token of `role`. With a `creator`, the new token may not hold a role the
    /// creator does not hold nor outlive it.
    pub fn create_token(
        &self,
        ctx: &Context,
        creator: Option<&TokenInfo>,
        role: Role,
        name: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<IssuedToken> {
        let keys = self.keys()?;
        self.inner
            .token_book
            .create(ctx, &keys.keyring, self, creator, role, name, ttl_seconds)
    }

    /// Checks a presented token: [`Error::Unauthorized`] if it is malformed, unknown, wrong,
    /// revoked or expired (the failure is audited with the string's keyed digest).
    pub fn authenticate(&self, ctx: &Context, presented: &str) -> Result<TokenInfo> {
        match self.check_token(presented)? {
            Some(info) => Ok(info),
            None => Err(self.refuse_token(ctx, presented)?),
        }
    }

    /// The token's record if `presented` is a valid, live token; `None` if not. Reads only
    /// memory (and the store on a token's first use): no audit entry, no fsync, so an async
    /// server can call it on its workers. A refusal must then go through
    /// [`Vault::refuse_token`], which records it.
    pub fn check_token(&self, presented: &str) -> Result<Option<TokenInfo>> {
        let keys = self.keys()?;
        Ok(self.inner.token_book.check(&keys.keyring, presented))
    }

    /// Whether token `id`, which authenticated earlier, is still valid now: known, not revoked,
    /// not expired. For work that goes on long after its request was authenticated (a followed
    /// audit export), so that a revoke or an expiry ends it. Reads memory (the store only on
    /// the token's first use since unseal); [`Error::Sealed`] while sealed.
    pub fn token_is_live(&self, id: &KeyId) -> Result<bool> {
        let keys = self.keys()?;
        self.inner.token_book.is_live(&keys.keyring, id)
    }

    /// Records a refused token (its keyed digest, never the string) and returns the
    /// [`Error::Unauthorized`] to answer with. One durable entry per call: a server facing
    /// clients sums its refusals instead ([`Vault::refused_token_digest`],
    /// [`Vault::audit_refused_tokens`]), so that junk tokens cannot fill the log.
    pub fn refuse_token(&self, ctx: &Context, presented: &str) -> Result<Error> {
        let digest = self.refused_token_digest(presented)?;
        let event = Event::new("token.authenticate", "unauthorized").presented(digest);
        self.commit(ctx, Batch::default(), event)?;
        Ok(Error::Unauthorized)
    }

    /// The keyed digest the audit log records for a refused token string (what
    /// `POST /v1/audit/digest` computes for it), without recording anything.
    pub fn refused_token_digest(&self, presented: &str) -> Result<[u8; 32]> {
        let keys = self.keys()?;
        Ok(refused_digest(&keys.keyring, presented))
    }

    /// Records the token authentications refused from one client address in one window:
    /// `refused` of them between `from_ms` and `until_ms` (Unix milliseconds), not logged one by
    /// one, as one `token.authenticate` entry (outcome `unauthorized`, details `refused`,
    /// `from_ms`, `until_ms`, and `presented_digest`, the keyed digest of the first string
    /// refused, when known). Works sealed too (it needs no key).
    pub fn audit_refused_tokens(
        &self,
        ctx: &Context,
        refused: u64,
        from_ms: u64,
        until_ms: u64,
        first_presented: Option<[u8; 32]>,
    ) -> Result<()> {
        let mut event = Event::new("token.authenticate", "unauthorized")
            .detail("refused", refused)
            .detail("from_ms", from_ms)
            .detail("until_ms", until_ms);
        if let Some(digest) = first_presented {
            event = event.presented(digest);
        }
        self.commit(ctx, Batch::default(), event).map(|_| ())
    }

    /// Every token, in id order.
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let keys = self.keys()?;
        self.inner.token_book.list(&keys.keyring)
    }

    /// Revokes a token at once.
    pub fn revoke_token(&self, ctx: &Context, id: &KeyId) -> Result<TokenInfo> {
        let keys = self.keys()?;
        let info = self.inner.token_book.revoke(ctx, &keys.keyring, self, id)?;
        self.await_cluster();
        Ok(info)
    }
}
