//! Listing keys a page at a time, by owner, exact name and status, in key-id order.
//!
//! A page must cost the same at a million keys as at ten (DESIGN section 11), so nothing here
//! reads more than the page needs: without a filter the key records are walked from the cursor
//! and the walk stops when the page is full; with an owner or a name the index entries under
//! that prefix are walked the same way; with both, the two indexes are walked in step (each
//! jumps to the other's next id, a store seek, and an id in both is checked with one read), so a
//! common name of a small owner costs about what the owner's keys cost. Only while an owner
//! index rebuild is owed (entries under two audit key generations) are the entries read whole
//! and merged, as `owner_index` describes.
//!
//! A status has no index (expired depends on the clock), so a filter the indexes do not serve
//! (a status alone, or an owner's rare status) could read every record before it fills a page.
//! So a page passes over at most [`MAX_SKIPPED`] keys that do not match: when it has, it ends
//! there, short (even empty), with the cursor of the last key read, and the next page goes on
//! from it. Cursor paging already means "until there is no cursor", so callers see every match.

use super::book::{KeyBook, id_from};
use super::name_index::name_prefixes;
use super::owner_index::{ids_under, owner_prefixes};
use super::types::{KeyFilter, KeyInfo, KeyPage, MAX_PAGE};
use crate::Result;
use crate::apikey::KeyId;
use crate::keyring::Keyring;
use crate::storage::{Space, Store};

/// The most keys that do not match one page passes over (see the module documentation).
#[cfg(not(test))]
pub(crate) const MAX_SKIPPED: usize = 10_000;
/// Small in unit tests, so that a few keys show a page ended by it.
#[cfg(test)]
pub(crate) const MAX_SKIPPED: usize = 8;

/// Whether the walk goes on after an id was looked at.
#[derive(PartialEq)]
enum Walk {
    More,
    Done,
}

impl KeyBook {
    /// A page of keys, by owner, name and status, in key-id order. Never a secret.
    pub(crate) fn list(&self, keyring: &Keyring, filter: &KeyFilter) -> Result<KeyPage> {
        let limit = filter.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let mut out: Vec<KeyInfo> = Vec::new();
        let mut next = None;
        let mut skipped = 0;
        let mut visit = |id: KeyId| -> Result<Walk> {
            let info = self.show(keyring, &id)?;
            // An index collision (owner: 128 bits, never in practice; name: 64 bits, rare) or
            // another status: passed over, a bounded number of times.
            let other = filter.owner.as_ref().is_some_and(|o| &info.owner != o)
                || filter.name.as_ref().is_some_and(|n| &info.name != n)
                || filter.status.is_some_and(|s| s != info.status);
            if other {
                skipped += 1;
                if skipped == MAX_SKIPPED {
                    // Ends short: the next page reads on from this key.
                    next = Some(id);
                    return Ok(Walk::Done);
                }
                return Ok(Walk::More);
            }
            if out.len() == limit {
                next = out.last().map(|i| i.key_id);
                return Ok(Walk::Done);
            }
            out.push(info);
            Ok(Walk::More)
        };
        let store = &self.store;
        let owned = match &filter.owner {
            Some(owner) => Some(owner_prefixes(store, keyring, owner)?),
            None => None,
        };
        let named = match &filter.name {
            Some(name) => Some(name_prefixes(store, keyring, name)?),
            None => None,
        };
        match (owned, named) {
            (None, None) => {
                let after = filter.after.map(|a| a.as_bytes().to_vec());
                for item in store.scan_prefix(Space::Keys, &[], after.as_deref()) {
                    if visit(id_from(&item?.0)?)? == Walk::Done {
                        break;
                    }
                }
            }
            (Some(one), None) | (None, Some(one)) => match one.as_slice() {
                [prefix] => walk_prefix(store, prefix, filter.after, visit)?,
                _ => walk_ids(ids_under(store, &one, filter.after)?, visit)?,
            },
            (Some(owned), Some(named)) => match (owned.as_slice(), named.as_slice()) {
                ([owned], [named]) => walk_both(store, named, owned, filter.after, visit)?,
                _ => {
                    let owned = ids_under(store, &owned, filter.after)?;
                    let named = ids_under(store, &named, filter.after)?;
                    walk_ids(sorted_intersection(named, owned).collect(), visit)?;
                }
            },
        }
        Ok(KeyPage { keys: out, next })
    }
}

/// Walks the ids of the entries under `prefix` after `after`, in order, until `visit` is done.
fn walk_prefix(
    store: &Store,
    prefix: &[u8],
    after: Option<KeyId>,
    mut visit: impl FnMut(KeyId) -> Result<Walk>,
) -> Result<()> {
    let after = after.map(|a| [prefix, a.as_bytes()].concat());
    for item in store.scan_prefix(Space::Index, prefix, after.as_deref()) {
        // A corrupt store must give an error, never a panic: `id_from` refuses an entry too
        // short to hold a key id.
        let (k, _) = item?;
        if visit(id_from(k.get(prefix.len()..).unwrap_or_default())?)? == Walk::Done {
            break;
        }
    }
    Ok(())
}

fn walk_ids(ids: Vec<KeyId>, mut visit: impl FnMut(KeyId) -> Result<Walk>) -> Result<()> {
    for id in ids {
        if visit(id)? == Walk::Done {
            break;
        }
    }
    Ok(())
}

/// Walks the ids with an entry under both `a` and `b` after `after`, in order: `a` is walked
/// from the cursor, and each id of `a` not under `b` makes `b` jump to its next id past it,
/// which `a` is then asked for, so neither list is read further than the other leads.
fn walk_both(
    store: &Store,
    a: &[u8],
    b: &[u8],
    after: Option<KeyId>,
    mut visit: impl FnMut(KeyId) -> Result<Walk>,
) -> Result<()> {
    let mut at = first_after(store, a, after.as_ref())?;
    while let Some(id) = at {
        // `b` holds nothing between `id` and `jump`: the ids of `a` in between are passed over.
        let (found, from) = if has(store, b, &id)? {
            (Some(id), id)
        } else {
            match first_after(store, b, Some(&id))? {
                None => return Ok(()),
                Some(jump) => (has(store, a, &jump)?.then_some(jump), jump),
            }
        };
        if let Some(id) = found
            && visit(id)? == Walk::Done
        {
            return Ok(());
        }
        at = first_after(store, a, Some(&from))?;
    }
    Ok(())
}

/// The first id under `prefix` after `after`.
fn first_after(store: &Store, prefix: &[u8], after: Option<&KeyId>) -> Result<Option<KeyId>> {
    let after = after.map(|a| [prefix, a.as_bytes()].concat());
    match store
        .scan_prefix(Space::Index, prefix, after.as_deref())
        .next()
    {
        None => Ok(None),
        Some(item) => {
            let (k, _) = item?;
            Ok(Some(id_from(k.get(prefix.len()..).unwrap_or_default())?))
        }
    }
}

/// Whether `id` has an entry under `prefix`.
fn has(store: &Store, prefix: &[u8], id: &KeyId) -> Result<bool> {
    let entry = [prefix, id.as_bytes()].concat();
    Ok(store.get(Space::Index, &entry)?.is_some())
}

/// The ids in both sorted, duplicate-free lists, in order.
fn sorted_intersection(a: Vec<KeyId>, b: Vec<KeyId>) -> impl Iterator<Item = KeyId> {
    let mut b = b.into_iter().peekable();
    a.into_iter().filter(move |id| {
        while b.next_if(|x| x.as_bytes() < id.as_bytes()).is_some() {}
        b.next_if(|x| x == id).is_some()
    })
}
