//! One module per command family. Each depends only on the layer below (`cli`, `client`,
//! `output`, `server`, `key_args`, `config`, `secret_input`, `hardening`), never on `dispatch`,
//! and on no other family except `serve` on `dev` (`serve --dev`). `audit_cluster` is the
//! audit family's cluster side, used by `audit` and by `backup_cluster` (which finds the
//! nodes the same way); `backup_cluster` and `cluster_restore` are the backup family's
//! cluster side.

pub mod audit;
pub mod audit_cluster;
pub mod backup;
pub mod backup_cluster;
pub mod ceremony;
pub mod cluster;
mod cluster_restore;
pub mod dev;
pub mod import;
pub mod init;
pub mod keys;
pub mod operator;
pub mod serve;
pub mod tokens;
pub mod usage;
pub mod witness;
