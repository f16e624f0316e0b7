//! Which audit key generations the owner and name indexes are read under: every one from the
//! last the owner index rebuild completed (`Meta/index-generation`) to the newest. Apart from
//! both indexes, so that neither needs the other to know it.

use crate::keyring::{AuditGeneration, Keyring};
use crate::storage::{Space, Store};
use crate::{Error, Result};

/// The generation whose index key every index entry is under (u32 BE; absent: 1).
pub(super) const META_INDEX_GENERATION: &[u8] = b"index-generation";

/// The generation the owner index was last rebuilt under.
pub(crate) fn rebuilt_generation(store: &Store) -> Result<u32> {
    match store.get(Space::Meta, META_INDEX_GENERATION)? {
        None => Ok(1),
        Some(bytes) => bytes
            .as_slice()
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| Error::Corrupt("the index generation is not four bytes".into())),
    }
}

/// The generations the indexes are read under, oldest first: every one of `keyring` from the
/// last rebuilt (one but while a rebuild is owed).
pub(crate) fn read_generations<'k>(
    store: &Store,
    keyring: &'k Keyring,
) -> Result<impl Iterator<Item = &'k AuditGeneration>> {
    let rebuilt = rebuilt_generation(store)?;
    Ok(keyring
        .audit_generations()
        .filter(move |g| g.number >= rebuilt))
}
