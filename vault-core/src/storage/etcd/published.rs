//! Each node's latest audit checkpoint in etcd (DESIGN section 10, "What lives where"): an
//! off-host record of how far the node's own log had come, which the node checks its log
//! against at unseal. A data directory rolled back (a disk snapshot put back, an old copy of
//! the directory) then stays sealed with [`crate::Error::RolledBack`] rather than fork the
//! node's log, the way a witness's checkpoint keeps a one-host vault sealed.
//!
//! ```text
//! P/0xFF "checkpoint/" node id   no lease, never removed; value: u8 version (1), then the
//!                                checkpoint's signed note (UTF-8), as the node's log holds it
//! ```
//!
//! The registration thread (`registry.rs`) writes it after the node's report whenever the log
//! has signed a larger checkpoint than the last one written, so it trails the log by about a
//! second at most. The vault gives the thread its log (`Checkpoints::set_source`) only once
//! an unseal has found the log extends what is published: a rolled-back log never overwrites
//! the evidence against it. The note is signed with the vault's audit key, so one that anyone
//! else wrote does not verify and is passed over; putting an older note back needs write access
//! to etcd, which client certificates keep from anyone but the nodes.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::members::Failure;
use super::{EtcdState, Reader};
use crate::storage::StorageError;

/// The version byte of the value.
const VERSION: u8 = 1;

/// Where the registration thread reads the log's latest checkpoint: its size and note.
pub type Source = Box<dyn Fn() -> Option<(u64, String)> + Send + Sync>;

/// The node's checkpoints to publish, and the size of the last one written.
#[derive(Default)]
pub(super) struct Checkpoints {
    source: Mutex<Option<Source>>,
    written: AtomicU64,
}

impl fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoints")
            .field("written", &self.written.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl Checkpoints {
    pub(super) fn set_source(&self, source: Source) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// The checkpoint to write now: the log's latest, if it is larger than the last written.
    fn due(&self) -> Option<(u64, String)> {
        let source = self.source.lock().unwrap_or_else(|e| e.into_inner());
        let (size, note) = source.as_ref()?()?;
        (size > self.written.load(Ordering::Acquire)).then_some((size, note))
    }
}

fn encode(note: &str) -> Vec<u8> {
    let mut value = vec![VERSION];
    value.extend_from_slice(note.as_bytes());
    value
}

/// The note in `value`, if it is one this build reads.
fn decode(value: &[u8]) -> Option<String> {
    let (&version, note) = value.split_first()?;
    (version == VERSION)
        .then(|| String::from_utf8(note.to_vec()).ok())
        .flatten()
}

impl Reader {
    fn checkpoint_key(&self, node: &str) -> Vec<u8> {
        self.named(b"checkpoint/", node)
    }

    /// Writes `node`'s latest checkpoint if the log signed a larger one since the last write.
    pub(super) fn publish_checkpoint(
        &self,
        node: &str,
        checkpoints: &Checkpoints,
    ) -> Result<(), Failure> {
        let Some((size, note)) = checkpoints.due() else {
            return Ok(());
        };
        let k = self.checkpoint_key(node);
        let value = encode(&note);
        self.members.call(move |mut client| {
            let (k, value) = (k.clone(), value.clone());
            async move { client.put(k, value, None).await }
        })?;
        checkpoints.written.store(size, Ordering::Release);
        Ok(())
    }
}

impl EtcdState {
    /// The latest checkpoint this node published (its signed note), if it published one that
    /// this build reads.
    pub fn published_checkpoint(&self) -> Result<Option<String>, StorageError> {
        let k = self.reader.checkpoint_key(self.node_id());
        let response = self
            .reader
            .members
            .call(move |mut client| {
                let k = k.clone();
                async move { client.get(k, None).await }
            })
            .map_err(Failure::into_storage)?;
        Ok(response.kvs().first().and_then(|kv| decode(kv.value())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_note_reads_back_and_another_version_is_not_read() {
        let value = encode("keyvault/abc/web-1\n3\nroot\n\n— sig\n");
        assert_eq!(value[0], 1);
        assert_eq!(
            decode(&value).as_deref(),
            Some("keyvault/abc/web-1\n3\nroot\n\n— sig\n")
        );
        let mut newer = value.clone();
        newer[0] = 2;
        assert_eq!(decode(&newer), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[1, 0xFF]), None);
    }

    #[test]
    fn only_a_larger_checkpoint_is_due() {
        let checkpoints = Checkpoints::default();
        assert_eq!(
            checkpoints.due(),
            None,
            "nothing before the vault gives its log"
        );
        let size = std::sync::Arc::new(AtomicU64::new(5));
        let seen = std::sync::Arc::clone(&size);
        checkpoints.set_source(Box::new(move || {
            Some((seen.load(Ordering::Acquire), "note".into()))
        }));
        assert_eq!(checkpoints.due(), Some((5, "note".into())));
        checkpoints.written.store(5, Ordering::Release);
        assert_eq!(checkpoints.due(), None);
        size.store(6, Ordering::Release);
        assert_eq!(checkpoints.due(), Some((6, "note".into())));
    }
}
