//! The signed checkpoint as the log keeps it, and the floor no later checkpoint may fall
//! below.

use crate::audit::merkle::Hash;
use crate::audit::note::Checkpoint;
use crate::{Error, Result};

/// The latest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its signed-note text.
    pub note: String,
}

impl SignedCheckpoint {
    /// A stored note (the vault's own, so its signatures were checked when it was made) with the
    /// checkpoint its text holds.
    pub(crate) fn from_note(note: String) -> Result<SignedCheckpoint> {
        let text = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
        let checkpoint = Checkpoint::parse_note_text(&text)
            .map_err(|e| Error::Corrupt(format!("a stored audit checkpoint: {e}")))?;
        Ok(SignedCheckpoint { checkpoint, note })
    }
}

/// The largest checkpoint of this log seen outside the writer's own memory (see
/// `witnessing`): no checkpoint is signed that does not extend it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Floor {
    pub(super) size: u64,
    /// Known when the checkpoint was read whole; a witness's 409 tells only the size.
    pub(super) root: Option<Hash>,
}
