//! One module per command family. Each depends only on the layer below (`cli`, `client`,
//! `output`, `server`, `key_args`, `config`, `secret_input`, `hardening`), never on `dispatch`,
//! and on no other family except `serve` on `dev` (`serve --dev`).

pub mod audit;
pub mod backup;
pub mod ceremony;
pub mod cluster;
pub mod dev;
pub mod import;
pub mod init;
pub mod keys;
pub mod operator;
pub mod serve;
pub mod tokens;
pub mod usage;
pub mod witness;
