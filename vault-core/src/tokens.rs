//! Vault tokens: who may call the vault's HTTP API, with which role.
//!
//! Tokens use the API-key text layout with the fixed prefix `kvt`, their own record space and
//! their own lookup keys (`keyvault/v1/lookup/token`), so an API key is never accepted as a token
//! and a token is `MALFORMED` as an API key. A root `admin` token is made at init.
//!
//! The tokens component is a `TokenBook`: it owns the token cache, reads token records from
//! the store and the time from the vault's clock; the vault handle composes it
//! (`vault/tokens.rs`), handing it the unsealed keyring and a way to commit for each call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use crate::apikey::{ApiKey, KeyId, Prefix};
use crate::audit::Event;
use crate::clock::Clock;
use crate::context::Context;
use crate::crypto;
use crate::keyring::Keyring;
use crate::keys::{Commit, Digest};
use crate::record::{self, Rollbacks};
use crate::storage::{Batch, Space, Store};
use crate::{Error, Result, codec};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
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

    /// The role's name (the same text as its serde form).
    pub fn as_str(self) -> &'static str {
        self.into()
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
    /// The envelope's record version (`record`): not part of the plaintext.
    #[serde(skip)]
    version: u64,
}

impl TokenRecord {
    /// A batch that stores this record, encrypted, as token `id`: the row's next write.
    fn staged(&mut self, keyring: &Keyring, id: &KeyId) -> Batch {
        let mut batch = Batch::default();
        self.version += 1;
        let sealed = record::seal(
            keyring,
            Space::Tokens,
            id.as_bytes(),
            self.version,
            &codec::encode(self),
        );
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

/// Vault tokens: their cached records and every operation on them.
#[derive(Debug)]
pub(crate) struct TokenBook {
    store: Store,
    /// Decrypted token records by id; cleared on seal. Changes and loads take the write lock,
    /// so that a revoke cannot be overtaken by a stale load.
    cache: RwLock<HashMap<KeyId, Arc<TokenRecord>>>,
    clock: Clock,
    /// The highest record version read or written of each token, kept when the cache is
    /// cleared (as another node's token change clears it), so that a token row put back older
    /// in the store (a revoke undone) is refused. Tokens are few: one entry each.
    seen: Mutex<HashMap<KeyId, u64>>,
    /// Token rows refused as older than one seen: an integrity alarm.
    rollbacks: Rollbacks,
}

impl TokenBook {
    /// A token book over `store`, on `clock`.
    pub(crate) fn new(store: Store, clock: Clock) -> TokenBook {
        TokenBook {
            store,
            cache: RwLock::default(),
            clock,
            seen: Mutex::default(),
            rollbacks: Rollbacks::default(),
        }
    }

    /// How many token rows this node has refused as older than one it had seen.
    pub(crate) fn rollbacks(&self) -> u64 {
        self.rollbacks.count()
    }

    /// Notes version `version` of token `id` as seen, refusing (and counting) one older than
    /// the highest seen.
    fn see(&self, id: &KeyId, version: u64) -> Result<()> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let highest = seen.entry(*id).or_default();
        self.rollbacks.check(Space::Tokens, id, *highest, version)?;
        *highest = version;
        Ok(())
    }

    /// Holds off token changes and loads (rewrap).
    pub(crate) fn write_lock(&self) -> RwLockWriteGuard<'_, HashMap<KeyId, Arc<TokenRecord>>> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every cached token (on seal).
    pub(crate) fn clear(&self) {
        self.write_lock().clear();
    }

    /// Makes a token of `role`. With a `creator`, the new token may not hold a role the
    /// creator does not hold nor outlive it.
    #[expect(
        clippy::too_many_arguments,
        reason = "the arguments of `Vault::create_token`, and what the handle lends a call"
    )]
    pub(crate) fn create(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        audit: &impl Commit,
        creator: Option<&TokenInfo>,
        role: Role,
        name: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<IssuedToken> {
        if name.len() > crate::keys::MAX_NAME || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "name must be at most 256 bytes with no control characters".into(),
            ));
        }
        if ttl_seconds == Some(0) {
            return Err(Error::InvalidInput("ttl_seconds must be at least 1".into()));
        }
        let now = self.clock.now();
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
        let term = keyring.current();
        let mut record = TokenRecord {
            role,
            name: name.to_owned(),
            created_at: now,
            expires_at,
            revoked_at: None,
            created_by: creator.map(|c| c.token_id),
            digest: Digest::of_token(&term.token_lookup, term.number, &id, token.secret()),
            version: 0,
        };
        let mut tokens = self.write_lock();
        let batch = record.staged(keyring, &id);
        audit.commit(
            ctx,
            batch,
            Event::key("token.create", "ok", id, "").detail("role", role.as_str()),
        )?;
        let info = record.info(id);
        self.see(&id, record.version)?;
        tokens.insert(id, Arc::new(record));
        Ok(IssuedToken { token, info })
    }

    /// The token's record if `presented` is a valid, live token; `None` if not. Reads only
    /// memory (and the store on a token's first use).
    pub(crate) fn check(&self, keyring: &Keyring, presented: &str) -> Option<TokenInfo> {
        let token = ApiKey::parse(presented, &Prefix::TOKEN).ok()?;
        let record = self.record(keyring, &token.id()).ok().flatten()?;
        let ok = record
            .digest
            .matches_token(keyring, &token.id(), token.secret())
            && record.is_live(self.clock.now());
        ok.then(|| record.info(token.id()))
    }

    /// Whether token `id` is known, not revoked and not expired now.
    pub(crate) fn is_live(&self, keyring: &Keyring, id: &KeyId) -> Result<bool> {
        Ok(self
            .record(keyring, id)?
            .is_some_and(|r| r.is_live(self.clock.now())))
    }

    /// Every token, in id order.
    pub(crate) fn list(&self, keyring: &Keyring) -> Result<Vec<TokenInfo>> {
        let mut out = Vec::new();
        let ids: Vec<Vec<u8>> = self
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
            if let Some(record) = self.record(keyring, &id)? {
                out.push(record.info(id));
            }
        }
        Ok(out)
    }

    /// Revokes a token at once.
    pub(crate) fn revoke(
        &self,
        ctx: &Context,
        keyring: &Keyring,
        audit: &impl Commit,
        id: &KeyId,
    ) -> Result<TokenInfo> {
        let record = self
            .record(keyring, id)?
            .ok_or_else(|| Error::NotFound(format!("token {id}")))?;
        if record.revoked_at.is_some() {
            return Ok(record.info(*id));
        }
        let mut tokens = self.write_lock();
        let mut record = (*record).clone();
        record.revoked_at = Some(self.clock.now());
        let batch = record.staged(keyring, id);
        audit.commit(ctx, batch, Event::key("token.revoke", "ok", *id, ""))?;
        let info = record.info(*id);
        self.see(id, record.version)?;
        tokens.insert(*id, Arc::new(record));
        Ok(info)
    }

    /// The cached record of token `id`, loaded on first use.
    fn record(&self, keyring: &Keyring, id: &KeyId) -> Result<Option<Arc<TokenRecord>>> {
        if let Some(r) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(Some(Arc::clone(r)));
        }
        // Loaded under the write lock so that a revoke cannot be overtaken by a stale load.
        let mut tokens = self.write_lock();
        if let Some(r) = tokens.get(id) {
            return Ok(Some(Arc::clone(r)));
        }
        let Some(bytes) = self.store.get(Space::Tokens, id.as_bytes())? else {
            return Ok(None);
        };
        let opened = record::open_versioned(keyring, Space::Tokens, id.as_bytes(), &bytes)?;
        let mut record: TokenRecord = codec::decode(&opened.plain)
            .map_err(|_| Error::Corrupt(format!("token record {id} does not decode")))?;
        record.version = opened.version;
        self.see(id, opened.version)?;
        let record = Arc::new(record);
        tokens.insert(*id, Arc::clone(&record));
        Ok(Some(record))
    }
}

/// The keyed digest the audit log records for a refused token string.
pub(crate) fn refused_digest(keyring: &Keyring, presented: &str) -> [u8; 32] {
    crypto::hmac(&keyring.audit_digest, &[presented.as_bytes()])
}
