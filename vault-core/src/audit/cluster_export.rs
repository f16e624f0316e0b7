//! The cluster export (DESIGN section 10): every node's audit log in one JSON Lines file, and
//! its offline verifier, which checks each node's log against that node's own checkpoints and
//! says which registered node has no log in the file.
//!
//! # Layout (`keyvault-cluster-export/1`)
//!
//! ```text
//! {"keyvault_cluster_export":1,"vault_id":"<hex>","nodes":["a","b","c"],"time":T}
//! <node a's export: its header line through its end line, as `audit export` writes it>
//! <node b's export>
//! …
//! ```
//!
//! The first line names the vault, every node the cluster has ever registered (as `GET
//! /v1/sys/cluster` listed them when the export began, in its order) and the time (Unix
//! seconds). Then one node's export after another, each exactly the bytes its node sent
//! (see [`export`](super::export)): a part begins at its header line (the one with a
//! `keyvault_audit_export` key) and ends at its `{"end":…}` line. A part's node is the last segment of its origin
//! (`keyvault/<vault id>/<node id>`), which the node's signed checkpoint carries.
//!
//! The first line is not signed. Each part proves what one export proves, with the vault's
//! audit key; the list of nodes is the exporter's word, which an auditor compares with
//! `keyvault cluster status` (or `GET /v1/sys/cluster`) read from any node. The verifier
//! fails when a listed node has no part, when a part is of a node not listed or of another
//! vault, and when a node has two parts. Streams: memory holds one line at a time, not a part.

use std::io::{self, BufRead, BufReader, Read};

use serde::Deserialize;

use super::export::{VerifyError, VerifyReport, verify_export};
use super::note::{self, Checkpoint, NoteVerifier};

/// Format name and version in the first line.
pub const CLUSTER_EXPORT_VERSION: u64 = 1;

/// What a cluster export's first line begins with.
pub const CLUSTER_EXPORT_OPENING: &[u8] = b"{\"keyvault_cluster_export\"";

/// The key only a node's export's header line (a part's first line) holds.
const PART_KEY: &[u8] = b"\"keyvault_audit_export\":";
/// What a part's last line begins with.
const END_OPENING: &[u8] = b"{\"end\":";

/// The first line of a cluster export: the vault (`vault_id` in hex), every node the cluster
/// has ever registered, and the time the export began (Unix seconds).
pub fn cluster_header_line(vault_id: &str, nodes: &[String], time: u64) -> String {
    serde_json::json!({
        "keyvault_cluster_export": CLUSTER_EXPORT_VERSION,
        "vault_id": vault_id,
        "nodes": nodes,
        "time": time,
    })
    .to_string()
}

/// Whether `first_line` is a cluster export's first line (as opposed to one node's export).
pub fn is_cluster_export(first_line: &[u8]) -> bool {
    first_line
        .trim_ascii_start()
        .starts_with(CLUSTER_EXPORT_OPENING)
}

/// What a cluster export's first line says (unsigned: see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterHeader {
    keyvault_cluster_export: u64,
    /// The vault's id, hex.
    pub vault_id: String,
    /// Every node the cluster had ever registered when the export began.
    pub nodes: Vec<String>,
    /// When the export began (Unix seconds).
    pub time: u64,
}

/// One node's part of the file and what its verify gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOutcome {
    /// The node's id.
    pub node: String,
    /// The line (from 1) its part begins at.
    pub line: u64,
    /// What verifying its part proved, or why it failed (line numbers are the file's).
    pub result: Result<VerifyReport, VerifyError>,
}

/// What verifying a cluster export found: a verdict per node whose log the file holds, and
/// the listed nodes it does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterVerifyReport {
    /// The first line.
    pub header: ClusterHeader,
    /// Each part, in the file's order.
    pub nodes: Vec<NodeOutcome>,
    /// Nodes the first line lists with no log in the file.
    pub missing: Vec<String>,
}

impl ClusterVerifyReport {
    /// Whether every node's log verified and every listed node has one.
    pub fn is_verified(&self) -> bool {
        self.missing.is_empty() && self.nodes.iter().all(|n| n.result.is_ok())
    }
}

fn fail(line: u64, why: impl Into<String>) -> VerifyError {
    VerifyError {
        line,
        why: why.into(),
    }
}

/// Whether `line` is a node export's header line. Its keys' order is serde_json's (sorted, or
/// as written with `preserve_order`), so the line is parsed; entry and leaf-hash lines, which
/// are nearly all of a file, are passed over without it.
fn is_part_header(line: &[u8]) -> bool {
    !line.starts_with(b"{\"seq\":")
        && !line.starts_with(b"{\"leaf_hash\":")
        && line.windows(PART_KEY.len()).any(|w| w == PART_KEY)
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line)
            .is_ok_and(|m| m.contains_key("keyvault_audit_export"))
}

/// The file's lines, one at a time, with one line of look-ahead put back between parts.
struct Lines<R> {
    input: R,
    /// A line read and handed back (the next part's header), with its number.
    pending: Option<(u64, Vec<u8>)>,
    /// Lines read so far.
    read: u64,
}

impl<R: BufRead> Lines<R> {
    /// The next line without its newline, and its number; `None` at the end of the file.
    fn next(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        if let Some(pending) = self.pending.take() {
            return Ok(Some(pending));
        }
        let mut line = Vec::new();
        if self.input.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        self.read += 1;
        Ok(Some((self.read, line)))
    }
}

/// One part read as a stream of its own: its lines from its header to its end line, or up to
/// the next part's header (a part cut short then fails its own verify, not the next one's).
struct Part<'a, R> {
    lines: &'a mut Lines<R>,
    started: bool,
    done: bool,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: BufRead> Read for Part<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            let Some((n, line)) = self.lines.next()? else {
                self.done = true;
                return Ok(0);
            };
            if self.started && is_part_header(&line) {
                self.lines.pending = Some((n, line));
                self.done = true;
                return Ok(0);
            }
            self.started = true;
            self.done = line.starts_with(END_OPENING);
            self.buf = line;
            self.buf.push(b'\n');
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[derive(Deserialize)]
struct PartHeader {
    origin: String,
}

/// Verifies a cluster export read from `input` with the vault's audit public key `verifier`
/// (as init printed it: named `keyvault/<vault id>`). Each node's log is verified as
/// [`verify_export`] verifies one export; `earlier` (a checkpoint the auditor kept) applies to
/// the node whose log it is, and `check` runs on each part that verified (what `--complete`
/// and `--witness` ask), its error counting as the node's failure.
///
/// `Err` when the file cannot be read as a cluster export of this vault at all; otherwise the
/// report, with a verdict per node and the listed nodes that have no log
/// ([`ClusterVerifyReport::is_verified`]).
pub fn verify_cluster_export(
    input: impl BufRead,
    verifier: &NoteVerifier,
    earlier: Option<&str>,
    mut check: impl FnMut(&VerifyReport) -> Result<(), VerifyError>,
) -> Result<ClusterVerifyReport, VerifyError> {
    let mut lines = Lines {
        input,
        pending: None,
        read: 0,
    };
    let io_fail = |e: io::Error| fail(0, format!("reading the file: {e}"));
    let (_, first) = lines
        .next()
        .map_err(io_fail)?
        .ok_or_else(|| fail(0, "the file is empty"))?;
    let header: ClusterHeader = serde_json::from_slice(&first).map_err(|e| {
        fail(
            1,
            format!("not a keyvault cluster export's first line: {e}"),
        )
    })?;
    if header.keyvault_cluster_export != CLUSTER_EXPORT_VERSION {
        return Err(fail(
            1,
            format!(
                "cluster export format version {} is not supported",
                header.keyvault_cluster_export
            ),
        ));
    }
    let vault_name = format!("keyvault/{}", header.vault_id);
    if verifier.name() != vault_name {
        return Err(fail(
            1,
            format!(
                "the file is of vault {} but the public key is {}'s",
                header.vault_id,
                verifier.name()
            ),
        ));
    }
    let earlier_origin = earlier
        .map(|text| {
            let unsigned = note::split(text)
                .map_err(|e| fail(0, format!("the earlier checkpoint: {e}")))?
                .0;
            Checkpoint::parse_note_text(unsigned)
                .map(|c| c.origin)
                .map_err(|e| fail(0, format!("the earlier checkpoint: {e}")))
        })
        .transpose()?;
    let node_prefix = format!("{vault_name}/");
    let mut outcomes: Vec<NodeOutcome> = Vec::new();
    while let Some((n, line)) = lines.next().map_err(io_fail)? {
        if line.trim_ascii().is_empty() {
            continue;
        }
        if !is_part_header(&line) {
            return Err(fail(
                n,
                "expected a node's export header (a line {\"keyvault_audit_export\":…})",
            ));
        }
        let part: PartHeader = serde_json::from_slice(&line)
            .map_err(|e| fail(n, format!("not a keyvault audit export header: {e}")))?;
        let node = part
            .origin
            .strip_prefix(&node_prefix)
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| {
                fail(
                    n,
                    format!(
                        "the log of origin {} is not a node's log of vault {}",
                        part.origin, header.vault_id
                    ),
                )
            })?
            .to_owned();
        if !header.nodes.contains(&node) {
            return Err(fail(
                n,
                format!("the file holds a log of node {node}, which its first line does not list"),
            ));
        }
        if outcomes.iter().any(|o| o.node == node) {
            return Err(fail(n, format!("the file holds node {node}'s log twice")));
        }
        lines.pending = Some((n, line));
        let mut reader = BufReader::new(Part {
            lines: &mut lines,
            started: false,
            done: false,
            buf: Vec::new(),
            pos: 0,
        });
        let its_earlier = earlier.filter(|_| earlier_origin.as_deref() == Some(&part.origin));
        let result = verify_export(&mut reader, verifier, its_earlier, |_| {})
            .and_then(|report| check(&report).map(|()| report))
            .map_err(|e| VerifyError {
                line: if e.line == 0 { 0 } else { n + e.line - 1 },
                why: e.why,
            });
        // What the verify left of a part that failed, so that the next part starts clean.
        io::copy(&mut reader, &mut io::sink()).map_err(io_fail)?;
        outcomes.push(NodeOutcome {
            node,
            line: n,
            result,
        });
    }
    if let Some(origin) = earlier_origin
        && !outcomes
            .iter()
            .any(|o| origin == format!("{node_prefix}{}", o.node))
    {
        return Err(fail(
            0,
            format!("the earlier checkpoint is of log {origin}, which the file does not hold"),
        ));
    }
    let missing = header
        .nodes
        .iter()
        .filter(|id| !outcomes.iter().any(|o| &o.node == *id))
        .cloned()
        .collect();
    Ok(ClusterVerifyReport {
        header,
        nodes: outcomes,
        missing,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "cluster_export_tests.rs"]
mod tests;
