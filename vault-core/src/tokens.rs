//! Vault tokens: who may call the vault's HTTP API, with which role.
//!
//! Tokens use the API-key text layout with the fixed prefix `kvt`, their own record space and
//! their own lookup keys (`keyvault/v1/lookup/token`), so an API key is never accepted as a token
//! and a token is `MALFORMED` as an API key. A root `admin` token is made at init.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::apikey::{ApiKey, KeyId, Prefix};
use crate::audit::Event;
use crate::clock::now;
use crate::context::Context;
use crate::keys::Digest;
use crate::storage::{Batch, Space};
use crate::{Error, Result, Vault, codec, record};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Verify keys (and forward-auth).
    Verifier,
    /// Manage keys and read usage; verify too.
    Manager,
    /// Export and prove the audit log.
    Auditor,
    /// Seal, rotate, rewrap, rekey.
    Operator,
    /// Everything, including tokens.
    Admin,
}

impl Role {
    /// Every role, for docs and tests.
    pub const ALL: [Role; 5] = [
        Role::Verifier,
        Role::Manager,
        Role::Auditor,
        Role::Operator,
        Role::Admin,
    ];

    /// Whether a holder of `self` may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self == needed || self == Role::Admin || (self == Role::Manager && needed == Role::Verifier)
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Verifier => "verifier",
            Role::Manager => "manager",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A token as listed. Never holds its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The token's public id.
    pub token_id: KeyId,
    /// Its role.
    pub role: Role,
    /// A label.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, if it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Unix seconds, if revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// The token that made it (none for the root token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<KeyId>,
}

/// A new token: its text is shown once.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token; text only through [`ApiKey::expose_secret_text`].
    pub token: ApiKey,
    /// The record.
    pub info: TokenInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    role: Role,
    name: String,
    created_at: u64,
    expires_at: Option<u64>,
    revoked_at: Option<u64>,
    created_by: Option<KeyId>,
    digest: Digest,
}

impl TokenRecord {
    /// A batch that stores this record, encrypted, as token `id`.
    fn staged(&self, keyring: &crate::keyring::Keyring, id: &KeyId) -> Batch {
        let mut batch = Batch::default();
        let sealed = record::seal(keyring, Space::Tokens, id.as_bytes(), &codec::encode(self));
        batch.insert(Space::Tokens, id.as_bytes(), &sealed);
        batch
    }

    /// Whether the token is valid at `now` (Unix seconds): not revoked, not expired. The one
    /// place these rules live, for a presented token and for one checked again by id.
    fn is_live(&self, now: u64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    fn info(&self, id: KeyId) -> TokenInfo {
        TokenInfo {
            token_id: id,
            role: self.role,
            name: self.name.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            created_by: self.created_by,
        }
    }
}

/// Decrypted token records by id; cleared on seal.
#[derive(Debug, Default)]
pub(crate) struct TokenCache(RwLock<HashMap<KeyId, Arc<TokenRecord>>>);

impl TokenCache {
    /// Holds off token changes and loads (rewrap).
    pub(crate) fn write_lock(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<KeyId, Arc<TokenRecord>>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn clear(&self) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

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
        if name.len() > crate::keys::MAX_NAME || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "name must be at most 256 bytes with no control characters".into(),
            ));
        }
        if ttl_seconds == Some(0) {
            return Err(Error::InvalidInput("ttl_seconds must be at least 1".into()));
        }
        let now = now();
        let expires_at = ttl_seconds.map(|t| now.saturating_add(t));
        if let Some(creator) = creator {
            if !creator.role.allows(role) {
                return Err(Error::Forbidden(format!(
                    "a {} token cannot create a {} token",
                    creator.role.as_str(),
                    role.as_str()
                )));
            }
            if let Some(limit) = creator.expires_at
                && expires_at.is_none_or(|e| e > limit)
            {
                return Err(Error::Forbidden(
                    "a token cannot create a token that outlives it: give a shorter ttl_seconds"
                        .into(),
                ));
            }
        }
        let token = ApiKey::generate(&Prefix::TOKEN);
        let id = token.id();
        let term = keys.keyring.current();
        let record = TokenRecord {
            role,
            name: name.to_owned(),
            created_at: now,
            expires_at,
            revoked_at: None,
            created_by: creator.map(|c| c.token_id),
            digest: Digest::of_token(&term.token_lookup, term.number, &id, token.secret()),
        };
        let mut tokens = self
            .inner
            .token_cache
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let batch = record.staged(&keys.keyring, &id);
        self.commit(
            ctx,
            batch,
            Event::key("token.create", "ok", id, "").detail("role", role.as_str()),
        )?;
        let info = record.info(id);
        tokens.insert(id, Arc::new(record));
        Ok(IssuedToken { token, info })
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
        Ok(ApiKey::parse(presented, &Prefix::TOKEN)
            .ok()
            .and_then(|token| {
                let record = self.token_record(&token.id()).ok().flatten()?;
                let ok = record
                    .digest
                    .matches_token(&keys.keyring, &token.id(), token.secret())
                    && record.is_live(now());
                ok.then(|| record.info(token.id()))
            }))
    }

    /// Whether token `id`, which authenticated earlier, is still valid now: known, not revoked,
    /// not expired. For work that goes on long after its request was authenticated (a followed
    /// audit export), so that a revoke or an expiry ends it. Reads memory (the store only on
    /// the token's first use since unseal); [`Error::Sealed`] while sealed.
    pub fn token_is_live(&self, id: &KeyId) -> Result<bool> {
        self.keys()?;
        Ok(self.token_record(id)?.is_some_and(|r| r.is_live(now())))
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
        Ok(crate::crypto::hmac(
            &keys.keyring.audit_digest,
            &[presented.as_bytes()],
        ))
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
        self.keys()?;
        let mut out = Vec::new();
        let ids: Vec<Vec<u8>> = self
            .inner
            .store
            .scan(Space::Tokens)
            .map(|item| item.map(|(k, _)| k))
            .collect::<std::result::Result<_, _>>()?;
        for id in ids {
            let id: [u8; 12] = id
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("a token id is malformed".into()))?;
            let id = KeyId::from_bytes(id);
            if let Some(record) = self.token_record(&id)? {
                out.push(record.info(id));
            }
        }
        Ok(out)
    }

    /// Revokes a token at once.
    pub fn revoke_token(&self, ctx: &Context, id: &KeyId) -> Result<TokenInfo> {
        let keys = self.keys()?;
        let record = self
            .token_record(id)?
            .ok_or_else(|| Error::NotFound(format!("token {id}")))?;
        if record.revoked_at.is_some() {
            return Ok(record.info(*id));
        }
        let mut tokens = self
            .inner
            .token_cache
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut record = (*record).clone();
        record.revoked_at = Some(now());
        let batch = record.staged(&keys.keyring, id);
        self.commit(ctx, batch, Event::key("token.revoke", "ok", *id, ""))?;
        let info = record.info(*id);
        tokens.insert(*id, Arc::new(record));
        Ok(info)
    }

    /// The cached record of token `id`, loaded on first use.
    fn token_record(&self, id: &KeyId) -> Result<Option<Arc<TokenRecord>>> {
        if let Some(r) = self
            .inner
            .token_cache
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(Some(Arc::clone(r)));
        }
        let keys = self.keys()?;
        // Loaded under the write lock so that a revoke cannot be overtaken by a stale load.
        let mut tokens = self
            .inner
            .token_cache
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(r) = tokens.get(id) {
            return Ok(Some(Arc::clone(r)));
        }
        let Some(bytes) = self.inner.store.get(Space::Tokens, id.as_bytes())? else {
            return Ok(None);
        };
        let plain = record::open(&keys.keyring, Space::Tokens, id.as_bytes(), &bytes)?;
        let record: TokenRecord = codec::decode(&plain)
            .map_err(|_| Error::Corrupt(format!("token record {id} does not decode")))?;
        let record = Arc::new(record);
        tokens.insert(*id, Arc::clone(&record));
        Ok(Some(record))
    }
}
