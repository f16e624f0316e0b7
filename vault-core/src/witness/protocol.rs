//! The C2SP `tlog-witness` wire format (<https://c2sp.org/tlog-witness>): the `add-checkpoint`
//! request body and the refusals a witness answers with.
//!
//! ```text
//! old <size the client believes the witness holds>\n
//! <base64 consistency proof hash>\n        (0 to 63 lines, RFC 6962 old -> new)
//! \n
//! <the signed checkpoint note>
//! ```
//!
//! The answer is 200 with one or more cosignature lines, or a refusal: 400 malformed, 403 no
//! valid signature of the log, 404 unknown log, 409 the old size is not the witness's (the body
//! is the witness's size and a newline, `text/x.tlog.size`), 422 the proof does not verify.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::audit::merkle::Hash;

/// Most consistency proof lines a request may carry.
pub const MAX_PROOF: usize = 63;

/// Largest request body a witness reads: a checkpoint with a few signatures, 63 proof lines.
pub const MAX_BODY: usize = 64 * 1024;

/// The content type of a 409 answer's body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the client believes the witness holds (0 for none).
    pub old: u64,
    /// The RFC 6962 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old);
        for hash in &self.proof {
            body.push_str(&STANDARD.encode(hash));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.checkpoint);
        body
    }

    /// Parses a request body; a malformed one is [`Refusal::BadRequest`].
    pub fn parse(body: &str) -> Result<Self, Refusal> {
        let bad = |why: &str| Refusal::BadRequest(why.to_owned());
        let (head, checkpoint) = body
            .split_once("\n\n")
            .ok_or_else(|| bad("no empty line between the proof and the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or_else(|| bad("the first line must be `old <size>`"))?;
        let old = parse_size(old).ok_or_else(|| bad("the old size must be decimal digits"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let hash = STANDARD
                .decode(line)
                .ok()
                .and_then(|h| Hash::try_from(h.as_slice()).ok())
                .ok_or_else(|| bad("a proof line is not a base64 SHA-256 hash"))?;
            proof.push(hash);
        }
        Ok(AddCheckpoint {
            old,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }
}

/// A decimal size as the protocol writes it: digits, no leading zero but for `0` itself.
pub fn parse_size(text: &str) -> Option<u64> {
    let ok = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    ok.then(|| text.parse().ok()).flatten()
}

/// Why a witness did not cosign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed (400).
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// The witness has no key for the checkpoint's origin (404).
    #[error("this witness does not witness the log {0:?}")]
    UnknownLog(String),
    /// The checkpoint has no valid signature by the log's key (403).
    #[error("the checkpoint is not validly signed by the log: {0}")]
    Forbidden(String),
    /// The old size is not the size the witness holds, which the answer says (409).
    #[error("the witness holds a checkpoint of size {0}")]
    Conflict(u64),
    /// The checkpoint is not consistent with what the witness holds (422).
    #[error("the checkpoint is not consistent with the witness's: {0}")]
    Unprocessable(String),
    /// The witness could not record the checkpoint (503): nothing was cosigned.
    #[error("the witness could not store its state: {0}")]
    Unavailable(String),
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::UnknownLog(_) => 404,
            Refusal::Forbidden(_) => 403,
            Refusal::Conflict(_) => 409,
            Refusal::Unprocessable(_) => 422,
            Refusal::Unavailable(_) => 503,
        }
    }

    /// The answer's body: the witness's size for a conflict, else the message.
    pub fn body(&self) -> String {
        match self {
            Refusal::Conflict(size) => format!("{size}\n"),
            other => format!("{other}\n"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_spec_example_parses() {
        let body = "old 20852014\n\
                    PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
                    jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
                    \n\
                    example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
                    \n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
        let req = AddCheckpoint::parse(body).unwrap();
        assert_eq!(req.old, 20852014);
        assert_eq!(req.proof.len(), 2);
        assert!(
            req.checkpoint
                .starts_with("example.com/behind-the-sofa\n20852163\n")
        );
        assert_eq!(req.to_body(), body);
    }

    #[test]
    fn malformed_requests_are_bad_requests() {
        for body in [
            "",
            "old 1\n",
            "old 01\n\nx\n",
            "old -1\n\nx\n",
            "new 1\n\nx\n",
            "old 1\nnot base64!\n\nx\n",
            "old 1\nAAAA\n\nx\n",
        ] {
            assert!(
                matches!(AddCheckpoint::parse(body), Err(Refusal::BadRequest(_))),
                "{body:?}"
            );
        }
        let many = format!(
            "old 1\n{}\nx\n",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n".repeat(64)
        );
        assert!(AddCheckpoint::parse(&many).is_err());
    }

    proptest! {
        #[test]
        fn bodies_round_trip(old in any::<u64>(), proof in proptest::collection::vec(any::<[u8; 32]>(), 0..=63), note in "[a-z0-9/.]{1,20}\n[0-9]{1,5}\n[A-Za-z0-9+/=]{44}\n\n\u{2014} [a-z]{1,8} [A-Za-z0-9+/=]{8,90}\n") {
            let req = AddCheckpoint { old, proof, checkpoint: note };
            prop_assert_eq!(AddCheckpoint::parse(&req.to_body()), Ok(req));
        }

        #[test]
        fn parsing_never_panics(body in "(?s).{0,300}") {
            let _ = AddCheckpoint::parse(&body);
        }
    }
}
