//! Who asks, from where: what every operation records about its caller.

use std::fmt;

use crate::apikey::KeyId;

/// The caller of an operation, as the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A vault token, by id (never by secret).
    Token(KeyId),
    /// An operator at the console (CLI commands that work on files: init, restore).
    Operator,
    /// The program embedding vault-core.
    Embedded,
    /// Nobody authenticated (unseal attempts, health).
    Anonymous,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Token(id) => write!(f, "token:{id}"),
            Actor::Operator => f.write_str("operator"),
            Actor::Embedded => f.write_str("embedded"),
            Actor::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// The caller, its address and the request id of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Who asks.
    pub actor: Actor,
    /// The end user's or caller's address, when known.
    pub client: Option<String>,
    /// The request id, when the operation came over HTTP.
    pub request_id: Option<String>,
    /// How the request came when not through the API itself (`ui`: the web console); the
    /// audit entry records it as `details.via`.
    pub via: Option<&'static str>,
}

impl Context {
    /// A caller with no address or request id.
    pub fn new(actor: Actor) -> Context {
        Context {
            actor,
            client: None,
            request_id: None,
            via: None,
        }
    }

    /// The program embedding the library.
    pub fn embedded() -> Context {
        Context::new(Actor::Embedded)
    }

    /// Sets the client address.
    pub fn with_client(mut self, client: impl Into<String>) -> Context {
        self.client = Some(client.into());
        self
    }

    /// Sets how the request came (`ui`).
    pub fn with_via(mut self, via: &'static str) -> Context {
        self.via = Some(via);
        self
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Context {
        self.request_id = Some(id.into());
        self
    }
}
