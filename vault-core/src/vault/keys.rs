//! The handle's API for API keys: each call takes the unsealed keyring and hands it, with the
//! handle's commit, to the key component (`KeyBook`).

use super::Vault;
use crate::apikey::{ApiKey, KeyId};
use crate::audit::Event;
use crate::audit::log::AuditLog;
use crate::context::Context;
use crate::keys::{
    AsyncVerify, Commit, ImportKey, ImportOutcome, ImportStatus, IndexRebuild, IssuedKey,
    KeyFilter, KeyInfo, KeyPage, KeyUpdate, Mode, NewKey, PendingVerify, Staged, Step, Verdict,
    VerifyRequest,
};
use crate::storage::Batch;
use crate::{Error, Result};

/// Tries a key change gets when other nodes keep changing the key first.
const CONFLICT_TRIES: u32 = 4;

impl Commit for Vault {
    fn commit(&self, ctx: &Context, batch: Batch, event: Event) -> Result<u64> {
        Vault::commit(self, ctx, batch, event)
    }
}

/// For the name index build, which commits without holding the handle.
impl Commit for AuditLog {
    fn commit(&self, ctx: &Context, batch: Batch, event: Event) -> Result<u64> {
        AuditLog::commit(self, ctx, batch, event)
    }
}

#[cfg(not(feature = "etcd"))]
impl Vault {
    /// A vault without cluster support is never behind a cluster.
    pub(crate) fn check_view(&self) -> Result<()> {
        Ok(())
    }

    /// Nor has other nodes to wait for.
    pub(crate) fn await_cluster(&self) {}
}

impl Vault {
    /// Whether the key cache is still being filled in the background after unseal (recently
    /// used keys first, then the rest while there is room); verifies are answered meanwhile.
    pub fn key_cache_warming(&self) -> bool {
        self.inner.key_book.warming()
    }

    /// Whether every key can be found by its name: false while the name index of a vault made
    /// before it is being built in the background after unseal (or after a failed build, until
    /// the next unseal), when a search by name is refused with [`Error::Conflict`].
    pub fn name_index_ready(&self) -> Result<bool> {
        crate::keys::name_index::is_built(&self.inner.store)
    }

    /// Whether a name index build is running (see [`Vault::name_index_ready`]).
    pub fn name_index_building(&self) -> bool {
        self.inner.key_book.name_index_building()
    }

    /// How many key, credits and token rows this node has refused since it started because
    /// their record version was older than one it had already seen for the same id: rows
    /// rolled back in the store (an integrity alarm, also logged at error level). In memory
    /// only.
    pub fn record_rollbacks(&self) -> u64 {
        self.inner.key_book.rollbacks() + self.inner.token_book.rollbacks()
    }

    /// Creates a key; the returned text is the only time the secret is shown.
    pub fn create_key(&self, ctx: &Context, new: NewKey) -> Result<IssuedKey> {
        // Held until the index entry is committed, taken before the keyring is read: see
        // `KeyBook::index_gate`.
        let _gate = self.inner.key_book.index_shared();
        let keys = self.keys()?;
        self.inner
            .key_book
            .create(ctx, &keys.keyring, &self.prefix(), self, new)
    }

    /// Imports existing keys (at most [`MAX_IMPORT`](crate::keys::MAX_IMPORT)), each by its
    /// text or its SHA-256, with the fields of create: a key already in the vault (by its
    /// hash) is left as it is and reported [`ImportStatus::Exists`], so an import can be run
    /// again after a failure. Every key is checked before any is written (a bad one fails the
    /// call, naming it); each new key's record, credits and index entries are one batch,
    /// committed with its `key.import` entry, and the batches of a call are queued a few hundred
    /// at a time, so that they share group commits and the writer commits some while the rest
    /// are staged. Outcomes come in the order given, once every commit is
    /// durable; if one fails, the error is returned (those committed stay, and a second run
    /// reports them as existing).
    pub async fn import_keys(
        &self,
        ctx: &Context,
        keys: Vec<ImportKey>,
    ) -> Result<Vec<ImportOutcome>> {
        let book = &self.inner.key_book;
        let _import = book.import_gate.lock().await;
        let (term, queued, staging) = {
            // Held until every batch is queued (queued jobs commit in order, before any audit
            // key rotation that waits for it): see `KeyBook::index_gate`.
            let _gate = book.index_shared();
            let keys_now = self.keys()?;
            let mut queued = Vec::new();
            // A store error part-way still waits for the keys queued before it (below).
            let staging = book.stage_import(&keys_now.keyring, &self.prefix(), keys, |part| {
                let mut commits = Vec::new();
                let decided: Vec<_> = part
                    .into_iter()
                    .map(|s| match s {
                        Staged::Exists(id) => (ImportStatus::Exists, id),
                        Staged::New { id, batch, event } => {
                            commits.push((batch, event));
                            (ImportStatus::Imported, id)
                        }
                    })
                    .collect();
                // Queued together, so that they share as few group commits as they can.
                let mut durables = self
                    .inner
                    .audit
                    .commit_deferred_many(ctx, commits)
                    .into_iter();
                queued.extend(decided.into_iter().map(|(status, id)| {
                    let durable = match status {
                        ImportStatus::Imported => durables.next(),
                        ImportStatus::Exists => None,
                    };
                    (status, id, durable)
                }));
            });
            (keys_now.keyring.current().number, queued, staging)
        };
        let mut outcomes = Vec::with_capacity(queued.len());
        let mut failed = staging.err();
        let mut committed = false;
        for (status, key_id, durable) in queued {
            if let Some(durable) = durable {
                match durable.await {
                    Ok(_) => committed = true,
                    Err(e) => {
                        failed.get_or_insert(e);
                        continue;
                    }
                }
            }
            outcomes.push(ImportOutcome { status, key_id });
        }
        if committed {
            book.imported_under(term);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    /// A key's record. [`Error::NotFound`] for an unknown id.
    pub fn show_key(&self, id: &KeyId) -> Result<KeyInfo> {
        let keys = self.keys()?;
        self.inner.key_book.show(&keys.keyring, id)
    }

    /// A page of keys, by owner and status, in key-id order. Never a secret.
    pub fn list_keys(&self, filter: &KeyFilter) -> Result<KeyPage> {
        let keys = self.keys()?;
        self.inner.key_book.list(&keys.keyring, filter)
    }

    /// Changes a key's fields; revoked keys cannot be changed.
    pub fn update_key(&self, ctx: &Context, id: &KeyId, update: KeyUpdate) -> Result<KeyInfo> {
        // A rename writes a name index entry: held as create holds it (`KeyBook::index_gate`).
        let _gate = self.inner.key_book.index_shared();
        let keys = self.keys()?;
        self.redo_on_conflict(id, || {
            self.inner
                .key_book
                .update(ctx, &keys.keyring, self, id, update.clone())
        })
    }

    /// Revokes a key for good; the record stays, revoked. Revoking twice is a no-op.
    pub fn revoke_key(&self, ctx: &Context, id: &KeyId) -> Result<KeyInfo> {
        let keys = self.keys()?;
        let info = self.redo_on_conflict(id, || {
            self.inner.key_book.revoke(ctx, &keys.keyring, self, id)
        })?;
        self.await_cluster();
        Ok(info)
    }

    /// Runs `change` of key `id`, and again (up to [`CONFLICT_TRIES`] times in all) while it is
    /// refused as a conflict: another node of a cluster changed the key since this one read
    /// it, nothing was applied or logged, so the key is read again and the change redone on
    /// what the other node made (a revoke stays a revoke, an update applies to the new record).
    /// One host never conflicts.
    fn redo_on_conflict<T>(&self, id: &KeyId, mut change: impl FnMut() -> Result<T>) -> Result<T> {
        let mut tries = 1;
        loop {
            match change() {
                Err(e) if e.is_conflict() && tries < CONFLICT_TRIES => {
                    self.inner.key_book.forget(id);
                    tries += 1;
                }
                Err(e) if e.is_conflict() => {
                    // The cache must not keep the record the refused change was made from.
                    self.inner.key_book.forget(id);
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// Revokes every key of `owner`; returns how many were revoked now.
    pub fn revoke_owner(&self, ctx: &Context, owner: &str) -> Result<usize> {
        crate::keys::check_owner(owner)?;
        let keys = self.keys()?;
        let revoked = self
            .inner
            .key_book
            .revoke_owner(ctx, &keys.keyring, self, owner)?;
        self.await_cluster();
        Ok(revoked)
    }

    /// Gives the key a new secret. The old one keeps working for `grace_seconds` (never past
    /// the key's expiry); a second rotation ends the older secret at once.
    pub fn rotate_key(&self, ctx: &Context, id: &KeyId, grace_seconds: u64) -> Result<IssuedKey> {
        let keys = self.keys()?;
        self.redo_on_conflict(id, || {
            self.inner
                .key_book
                .rotate(ctx, &keys.keyring, &self.prefix(), self, id, grace_seconds)
        })
    }

    /// The full key of a key created recoverable (audited).
    pub fn reveal_key(&self, ctx: &Context, id: &KeyId) -> Result<ApiKey> {
        let keys = self.keys()?;
        self.inner
            .key_book
            .reveal(ctx, &keys.keyring, &self.prefix(), self, id)
    }

    /// Moves every owner index entry under the newest audit key generation's index key, online
    /// (see `keys/owner_index.rs`). `progress(done, total)` is called after each batch.
    pub fn rebuild_owner_index(
        &self,
        ctx: &Context,
        progress: impl FnMut(u64, u64),
    ) -> Result<IndexRebuild> {
        let keys = self.keys()?;
        self.inner
            .key_book
            .rebuild_owner_index(ctx, &keys.keyring, self, progress)
    }

    /// Verifies a presented key. Callable from many threads at once. The answer is given only
    /// after its audit entry (and a credit spend) is durable; if that fails, the error is
    /// returned instead and nothing is reported valid.
    pub fn verify(&self, ctx: &Context, req: VerifyRequest<'_>) -> Result<Verdict> {
        self.verify_blocking(ctx, req, true)
    }

    /// [`Vault::verify`] for a caller whose guessing is being refused: a verify that fails as
    /// `MALFORMED` or `NOT_FOUND` (which changes nothing) gets no audit entry of its own, and
    /// the caller records the refused attempts as one summary ([`Vault::audit_throttled`]), so
    /// that a flood of junk cannot fill the disk. Any other outcome is audited as always: a key
    /// whose secret matches is never refused or unlogged.
    pub fn verify_throttled(&self, ctx: &Context, req: VerifyRequest<'_>) -> Result<Verdict> {
        self.verify_blocking(ctx, req, false)
    }

    /// [`Vault::verify`] (or, if `throttled`, [`Vault::verify_throttled`]) for an async caller:
    /// the entry is queued for the group commit without blocking the thread, and the future
    /// resolves to the verdict once the entry is durable. A verify that spends credits commits
    /// under its key's lock instead, and a key being changed holds that lock through a commit:
    /// those answer [`AsyncVerify::MustBlock`], having changed nothing, and the caller finishes
    /// them with [`Vault::finish_verify`] on a thread that may block.
    pub async fn verify_async(
        &self,
        ctx: &Context,
        req: VerifyRequest<'_>,
        throttled: bool,
    ) -> Result<AsyncVerify> {
        let mode = Mode {
            audit_failures: !throttled,
            may_block: false,
        };
        // Only a verify that spends nothing commits here (a spend answers `MustBlock`), so a
        // conflict is never its own race: its group failed with another job's, on a cluster
        // node, and it goes again at once (the failed group's commit was the pause), within
        // the bounds a blocking verify has (`vault/verify_retry.rs`). One host never conflicts.
        #[cfg(feature = "etcd")]
        if self.is_cluster_node() {
            let mut retry = super::verify_retry::Retry::new();
            loop {
                match self.verify_async_once(ctx, req, mode).await {
                    Err(e) if retry.again(&e) => continue,
                    other => return other,
                }
            }
        }
        self.verify_async_once(ctx, req, mode).await
    }

    async fn verify_async_once(
        &self,
        ctx: &Context,
        req: VerifyRequest<'_>,
        mode: Mode,
    ) -> Result<AsyncVerify> {
        self.check_view()?;
        let step = {
            let keys = self.keys()?;
            let book = &self.inner.key_book;
            book.verify_step(ctx, &keys.keyring, &self.prefix(), self, req, mode)?
        };
        match step {
            Step::Done(verdict) => Ok(AsyncVerify::Verdict(verdict)),
            Step::Commit(batch, event, verdict) => {
                self.inner.audit.commit_deferred(ctx, batch, event).await?;
                Ok(AsyncVerify::Verdict(verdict))
            }
            Step::MustBlock(pending) => Ok(AsyncVerify::MustBlock(pending)),
        }
    }

    /// Finishes a verify that [`Vault::verify_async`] answered [`AsyncVerify::MustBlock`], on a
    /// thread that may block, as the blocking call would have (the same codes, audit entries
    /// and throttling: a throttled verify stays throttled). The key is not parsed again and its
    /// secret is hashed again only if the record changed to a digest under another term
    /// meanwhile; the record as it stands now decides.
    pub fn finish_verify(&self, ctx: &Context, pending: PendingVerify) -> Result<Verdict> {
        // A cluster node's verify goes again when it lost a race to another node
        // (`vault/verify_retry.rs`); one host never does, and takes no copy of the key.
        #[cfg(feature = "etcd")]
        if self.is_cluster_node() {
            return self.verify_redone(|| self.finish_once(ctx, pending.copy()));
        }
        self.finish_once(ctx, pending)
    }

    fn finish_once(&self, ctx: &Context, pending: PendingVerify) -> Result<Verdict> {
        self.check_view()?;
        let keys = self.keys()?;
        let step = self
            .inner
            .key_book
            .finish_step(ctx, &keys.keyring, self, pending)?;
        self.answer_blocking(ctx, step)
    }

    fn verify_blocking(
        &self,
        ctx: &Context,
        req: VerifyRequest<'_>,
        audit_failures: bool,
    ) -> Result<Verdict> {
        #[cfg(feature = "etcd")]
        if self.is_cluster_node() {
            return self.verify_redone(|| self.verify_once(ctx, req, audit_failures));
        }
        self.verify_once(ctx, req, audit_failures)
    }

    fn verify_once(
        &self,
        ctx: &Context,
        req: VerifyRequest<'_>,
        audit_failures: bool,
    ) -> Result<Verdict> {
        self.check_view()?;
        let mode = Mode {
            audit_failures,
            may_block: true,
        };
        let keys = self.keys()?;
        let book = &self.inner.key_book;
        let step = book.verify_step(ctx, &keys.keyring, &self.prefix(), self, req, mode)?;
        self.answer_blocking(ctx, step)
    }

    /// The verdict of a step decided where blocking is allowed, its entry committed.
    fn answer_blocking(&self, ctx: &Context, step: Step) -> Result<Verdict> {
        match step {
            Step::Done(verdict) => Ok(verdict),
            Step::Commit(batch, event, verdict) => {
                self.commit(ctx, batch, event)?;
                Ok(verdict)
            }
            // Only where blocking is not allowed, and here it is.
            Step::MustBlock(_) => Err(Error::Conflict(
                "the verify could not run here and must be retried".into(),
            )),
        }
    }

    /// Records the verifies refused from one client address in one window: `refused` failed
    /// verifies between `from_ms` and `until_ms` (Unix milliseconds), not logged one by one.
    /// Works sealed too (it needs no key).
    pub fn audit_throttled(
        &self,
        ctx: &Context,
        refused: u64,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<()> {
        let event = Event::new("key.verify.throttled", "THROTTLED")
            .detail("refused", refused)
            .detail("from_ms", from_ms)
            .detail("until_ms", until_ms);
        self.commit(ctx, Batch::default(), event).map(|_| ())
    }
}
