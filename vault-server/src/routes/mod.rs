//! The route handlers, one file per area of the API. Each file's `routes()` (or its groups by
//! role) registers its handlers, documented, behind their role check; the crate root's
//! `api_routes` merges them. They depend on the cross-cutting modules at the crate's top (auth, error, json, body,
//! request, limits, stream, ...) and, for shared answer types, on each other only downward
//! (`operator` uses `sys`'s seal status).

pub(crate) mod archive;
pub(crate) mod audit;
pub(crate) mod ceremony;
pub(crate) mod cluster;
pub(crate) mod import;
pub(crate) mod keys;
pub(crate) mod metrics;
pub(crate) mod operator;
pub(crate) mod sys;
pub(crate) mod tokens;
pub(crate) mod usage;
pub(crate) mod verdict;
pub(crate) mod verify;
pub(crate) mod witness;
