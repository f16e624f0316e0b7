//! The vault's side of `tlog-witness`: the witnesses it is configured with and the two calls it
//! makes to them, `add-checkpoint` and the monitor's `GET <origin hash>/checkpoint`.
//!
//! Calls are blocking (`ureq`) and bounded by [`TIMEOUT`]; they run on the audit log's witness
//! thread, at unseal and at export, never on the verify path.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::protocol::{self, AddCheckpoint};
use crate::audit::cosignature::CosignatureVerifier;

/// Longest one call to a witness may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A witness of the audit log (`[[audit.witness]]` in the server's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessConfig {
    /// Its submission prefix, e.g. `http://witness.example:8732`: the vault posts to
    /// `<url>/add-checkpoint`.
    pub url: String,
    /// Its verifier key, whose name is the witness's name.
    pub key: CosignatureVerifier,
}

impl WitnessConfig {
    /// A witness at `url` with the verifier key `key` (`name+hash+base64`, type 0x04).
    pub fn new(url: &str, key: &str) -> Result<WitnessConfig, String> {
        let url = url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "the witness url {url:?} must start with http:// or https://"
            ));
        }
        let key = CosignatureVerifier::parse(key)
            .map_err(|e| format!("the witness key for {url}: {e}"))?;
        Ok(WitnessConfig {
            url: url.to_owned(),
            key,
        })
    }

    /// The witness's name, as its key gives it.
    pub fn name(&self) -> &str {
        self.key.name()
    }
}

/// What a witness answered to `add-checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200: the cosignature lines.
    Cosigned(String),
    /// 409: the size of the checkpoint the witness holds.
    Holds(u64),
    /// 422: the checkpoint does not extend what the witness holds.
    Inconsistent(String),
    /// Any other status: the witness refused (a configuration mistake, say); tried again later.
    Refused(u16, String),
    /// No answer (a network error or a timeout); tried again later.
    Unreachable(String),
}

/// The HTTP client for witnesses.
pub(crate) struct Client {
    agent: ureq::Agent,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new() -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Client { agent }
    }

    /// Sends `req` to `witness`.
    pub(crate) fn add_checkpoint(&self, witness: &WitnessConfig, req: &AddCheckpoint) -> Answer {
        let url = format!("{}/add-checkpoint", witness.url);
        let sent = self
            .agent
            .post(&url)
            .header("content-type", "text/plain; charset=utf-8")
            .send(req.to_body());
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return Answer::Unreachable(e.to_string()),
        };
        let status = response.status().as_u16();
        let body = match response
            .body_mut()
            .with_config()
            .limit(protocol::MAX_BODY as u64)
            .read_to_string()
        {
            Ok(body) => body,
            Err(e) => return Answer::Unreachable(e.to_string()),
        };
        match status {
            200 => Answer::Cosigned(body),
            409 => match protocol::parse_size(body.trim_end_matches('\n')) {
                Some(size) => Answer::Holds(size),
                None => Answer::Refused(409, "a 409 without a size".into()),
            },
            422 => Answer::Inconsistent(body.trim().to_owned()),
            other => Answer::Refused(other, body.trim().chars().take(200).collect()),
        }
    }

    /// The witness's latest cosigned checkpoint of the log `origin` (C2SP's monitor retrieval
    /// mechanism): `Ok(None)` for a 404 (it cosigned none, or does not serve them).
    pub(crate) fn latest(
        &self,
        witness: &WitnessConfig,
        origin: &str,
    ) -> Result<Option<String>, String> {
        let hash = hex::encode(Sha256::digest(origin.as_bytes()));
        let url = format!("{}/{hash}/checkpoint", witness.url);
        let mut response = self.agent.get(&url).call().map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200 => response
                .body_mut()
                .with_config()
                .limit(protocol::MAX_BODY as u64)
                .read_to_string()
                .map(Some)
                .map_err(|e| e.to_string()),
            404 => Ok(None),
            other => Err(format!("it answered {other}")),
        }
    }
}
