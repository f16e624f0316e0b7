//! The audit log.

pub mod merkle;
pub mod note;
