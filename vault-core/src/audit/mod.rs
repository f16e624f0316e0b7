//! The audit log: one entry per operation, leaves of an RFC 6962 Merkle tree, signed checkpoints.
//!
//! # Layout
//! - [`archive`]: the SHA-256 of an archive file, which a caller sends back before a drop.
//! - [`cluster_export`]: every node's log of a cluster vault in one file, and its verifier.
//! - [`cosignature`]: C2SP tlog cosignatures, a witness's signature on a checkpoint.
//! - [`entry`]: what an entry holds and its canonical JSON bytes (the Merkle leaf).
//! - [`log`]: the group-committing writer that makes a state change and its entry durable
//!   together, the stored tree, checkpoint signing, and witnessing (the largest checkpoint
//!   seen, the floor, and the witness thread).
//! - [`export`]: streamed JSON Lines and CSV exports, and the offline verifier.
//! - [`lines`]: the export's lines besides the entries, written and read without a parser
//!   where they come once per entry.
//! - [`merkle`]: RFC 6962 hashing and proofs.
//! - [`note`]: C2SP signed notes and checkpoints.
//! - [`observation`]: what the log hands its observer (the usage figures) of each durable
//!   entry, made from the typed event before it is serialised.
//! - [`rotation`]: audit key rotations, and how a verifier follows one from an older key.
//! - [`segment`]: the append-only files that hold the entries.
//! - [`tree`]: the append-only file that holds the tree's subtree hashes.

pub mod api;
pub mod archive;
pub mod cluster_export;
pub mod cosignature;
pub mod entry;
pub mod export;
pub mod lines;
pub mod log;
pub mod merkle;
pub mod note;
pub mod observation;
pub mod rotation;
pub mod segment;
pub mod tree;

pub use entry::{Entry, Event};
pub use observation::Observation;
