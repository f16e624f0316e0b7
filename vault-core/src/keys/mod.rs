//! API keys: create, show, list, update, revoke, rotate, reveal and verify.
//!
//! The keys component is a `KeyBook`: it owns the key cache and reads key records from the
//! store; the vault handle composes it (`vault/keys.rs`), handing it the unsealed keyring and a
//! way to commit for each call. Nothing here names the handle.
//!
//! # Layout
//! - `types`, `code`: what callers give and get (`code` imports nothing of the audit log, which
//!   names a [`VerifyCode`] in its entries).
//! - `record`: the record to make or change, the secret's digest, a key's cached state.
//! - `packed`: the record as the cache holds it and as it is stored.
//! - `shared`: a VALID verdict's scopes and meta, shared with the cached record, not copied.
//! - `cache`: the sharded cache of key slots whose locks order every change and verify.
//! - `book`: the component itself, and the `Commit` seam to the handle.
//! - `manage`: create, show, update, revoke, rotate, reveal.
//! - `list`: a page of keys by owner, name and status, reading no more than the page needs.
//! - `verify`: the verify hot path.
//! - `presented`: a parsed key with the digests of its secret made so far, and the verify
//!   handed over with them to finish where a thread may block.
//! - `owner_index`: the owner index and its online rebuild.
//! - `name_index`: the name index, and its build for vaults made before it.
//! - `generation`: which audit key generations both indexes are read under.
//! - `import`: keys brought in by their text or its SHA-256, and the index that finds them.
//! - `refill`: when credits that come back are due.
//! - `rate_share`: the rate-limit tokens a cluster node takes, listed for its tally to the
//!   other nodes, and the tally's bytes; `rate_exchange`: the tally taken, and the other
//!   nodes' tallies taken out of this node's buckets.
//! - `warm`: filling the cache in the background after unseal, recently used keys first.

mod book;
mod cache;
mod code;
mod generation;
mod import;
mod list;
mod manage;
pub(crate) mod name_index;
pub(crate) mod owner_index;
mod packed;
mod presented;
mod rate_exchange;
mod rate_share;
#[cfg(test)]
mod rate_tests;
mod record;
mod refill;
mod shared;
mod types;
mod verify;
#[cfg(test)]
mod verify_tests;
mod warm;

pub(crate) use book::{Commit, KeyBook};
pub(crate) use cache::lock;
pub use cache::{DEFAULT_KEYS_CACHED, DEFAULT_UNKNOWN_IDS_CACHED};
pub use code::{PreviousSecret, RateLimitState, Verdict, VerifyCode, VerifyRequest};
pub(crate) use import::Staged;
pub use import::{
    IMPORTED_TEXT, ImportKey, ImportOutcome, ImportStatus, ImportedSecret, MAX_IMPORT,
};
pub(crate) use manage::check_owner;
pub use owner_index::IndexRebuild;
pub use presented::{AsyncVerify, PendingVerify};
#[cfg(feature = "etcd")]
pub(crate) use rate_share::Tally;
pub(crate) use record::Digest;
pub use shared::{RawMeta, Scopes};
pub use types::{
    IssuedKey, KeyFilter, KeyInfo, KeyPage, KeyStatus, KeyUpdate, MAX_META, MAX_NAME, MAX_OWNER,
    MAX_PAGE, MAX_SCOPE, MAX_SCOPES, NewKey, RateLimit, Refill, RefillInterval,
};
pub(crate) use verify::{Mode, Step};
