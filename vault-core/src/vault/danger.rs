//! The handle's dangerous API, behind [`Vault::danger`] (as rustls keeps its own behind
//! `dangerous()`): raw record access and storage fault injection.
//!
//! Tests, fuzz targets and fault drills need to write records the vault's own operations would
//! never write, read them back without a token, and make the disk fail on purpose. Those are
//! public because integration tests and fuzz targets are separate crates, but a server or a
//! CLI has no reason to call any of them: each one steps around a check that the rest of the
//! API keeps (validation, indexes, caches, roles, or the disk itself). The name at every call
//! site says so.

use zeroize::Zeroizing;

use super::Vault;
use crate::Result;
use crate::audit::Event;
use crate::context::Context;
use crate::record;
use crate::storage::{Batch, Fault, Space};

/// The trees of encrypted records [`Danger`] reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTree {
    /// API-key records.
    Keys,
    /// Vault-token records.
    Tokens,
}

impl RecordTree {
    fn space(self) -> Space {
        match self {
            RecordTree::Keys => Space::Keys,
            RecordTree::Tokens => Space::Tokens,
        }
    }
}

/// The dangerous methods of a [`Vault`]; see [`Vault::danger`].
#[derive(Debug, Clone, Copy)]
pub struct Danger<'a> {
    vault: &'a Vault,
}

impl Vault {
    /// Methods that step around the vault's own checks, for tests, fuzz targets and fault
    /// drills only: never call them on a vault that serves real traffic. Each says why.
    pub fn danger(&self) -> Danger<'_> {
        Danger { vault: self }
    }
}

impl Danger<'_> {
    /// Encrypts and durably stores `plaintext` as record `id` of `tree` (audited as
    /// `record.put`).
    ///
    /// Dangerous: the plaintext is not checked to be a key or token record, and nothing else
    /// a key or token write keeps in step moves with it (owner index, credits, reveal copy,
    /// the verify and token caches). Put at a real key's id, it replaces that key on disk
    /// while the caches may keep serving the old one, and a plaintext that is not a record
    /// makes listing fail as corrupt.
    pub fn put_record(
        &self,
        ctx: &Context,
        tree: RecordTree,
        id: &[u8],
        plaintext: &[u8],
    ) -> Result<()> {
        let keys = self.vault.keys()?;
        let space = tree.space();
        // The row's next write (a row that does not open is written anew).
        let version = match self.vault.inner.store.get(space, id)? {
            Some(bytes) => {
                record::open_versioned(&keys.keyring, space, id, &bytes).map_or(0, |o| o.version)
            }
            None => 0,
        } + 1;
        let mut batch = Batch::default();
        batch.insert(
            space,
            id,
            &record::seal(&keys.keyring, space, id, version, plaintext),
        );
        let event = Event::new("record.put", "ok")
            .detail("space", space as u8)
            .detail("id", hex::encode(id));
        self.vault.commit(ctx, batch, event)?;
        Ok(())
    }

    /// Reads and decrypts record `id` of `tree`; a tampered or moved record is
    /// [`crate::Error::Corrupt`], never a wrong plaintext.
    ///
    /// Dangerous: it returns a record's whole plaintext (a key record holds its secret's
    /// digest and a token record its role) with no token, no role check and no audit entry.
    pub fn get_record(&self, tree: RecordTree, id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let keys = self.vault.keys()?;
        let space = tree.space();
        match self.vault.inner.store.get(space, id)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(record::open(&keys.keyring, space, id, &bytes)?)),
        }
    }

    /// The stored (encrypted) bytes of record `id` of `tree`, as on disk.
    ///
    /// Dangerous: unaudited and unchecked, even while sealed; it exists so that tests can
    /// copy, move and tamper with records and see the vault refuse them.
    pub fn raw_record(&self, tree: RecordTree, id: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.vault.inner.store.get(tree.space(), id)?)
    }

    /// The keyring term record `id` of `tree` was written under.
    ///
    /// Dangerous: it reads a record's header with no token and no audit entry (how far a
    /// rewrap has gone, for tests); an [`crate::Error::Corrupt`] if the header is not a record's.
    pub fn record_term(&self, tree: RecordTree, id: &[u8]) -> Result<Option<u32>> {
        self.vault.keys()?;
        match self.vault.inner.store.get(tree.space(), id)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(record::term_of(&bytes)?)),
        }
    }

    /// Makes every later store write fail as `fault` says (`None` ends it): the seam through
    /// which tests and fault drills check that the vault fails closed.
    ///
    /// Dangerous: while it is set, every operation that writes (key changes, unseal's audit
    /// entry, verify's audit entries) fails, as with a full or failing disk.
    pub fn inject_storage_fault(&self, fault: Option<Fault>) {
        match fault {
            Some(f) => self.vault.inner.store.inject_fault(f),
            None => self.vault.inner.store.clear_fault(),
        }
    }
}
