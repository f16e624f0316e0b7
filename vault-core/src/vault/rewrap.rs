//! The handle's rewrap: every record brought under the newest keyring term (see
//! [`crate::rewrap`]).

use super::Vault;
use crate::Result;
use crate::context::Context;
use crate::rewrap::{Rewrap, RewrapReport};

impl Vault {
    /// Re-encrypts every record written under an older term; `progress(done, total)` is called
    /// after each batch (total is the number of key and token records).
    pub fn rewrap(&self, ctx: &Context, progress: impl FnMut(u64, u64)) -> Result<RewrapReport> {
        let keys = self.keys()?;
        Rewrap {
            store: &self.inner.store,
            keys: &self.inner.key_book,
            tokens: &self.inner.token_book,
            keyring: &keys.keyring,
            audit: self,
        }
        .run(ctx, progress)
    }
}
