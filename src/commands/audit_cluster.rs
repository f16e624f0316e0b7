//! The cluster side of `keyvault audit export|verify` (DESIGN section 10): `--node ID` streams
//! one node's log from that node's own address, `--cluster` every node's log into one file
//! (`vault_core::audit::cluster_export` has its layout), and `verify` of such a file checks
//! each node's log and names every node the cluster registered.
//!
//! The server the CLI points at lists the nodes (`GET /v1/sys/cluster`, with each live node's
//! address); the logs are fetched from the nodes themselves with the same token, which every
//! node of a cluster accepts.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;
use vault_core::audit::cluster_export::{
    ClusterVerifyReport, cluster_header_line, is_cluster_export, verify_cluster_export,
};
use vault_core::audit::cosignature::CosignatureVerifier;
use vault_core::audit::note::NoteVerifier;

use crate::cli::ClientArgs;
use crate::client::{Addr, Client, client};
use crate::output::Out;

/// The cluster's nodes as the server `c` points at lists them (`GET /v1/sys/cluster`).
pub(super) fn cluster(c: &ClientArgs) -> anyhow::Result<Value> {
    client(c)?
        .call("GET", "/v1/sys/cluster", None)
        .with_context(|| format!("asking {} for the cluster's nodes", c.addr))
}

/// The vault id and every node id (each node the cluster ever registered) in `answer`, the
/// cluster's list.
pub(super) fn vault_and_nodes(answer: &Value) -> anyhow::Result<(String, Vec<String>)> {
    let vault_id = answer["vault_id"]
        .as_str()
        .context("the server's cluster answer has no vault_id: it runs an older build")?
        .to_owned();
    let ids = answer["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    Ok((vault_id, ids))
}

/// A client of node `node` of `answer` (the cluster's list) at its own address, sending the
/// token of `c`: an error naming the node when it is not listed, down, or has no address.
pub(super) fn node_client(c: &ClientArgs, answer: &Value, node: &str) -> anyhow::Result<Client> {
    let nodes = answer["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(entry) = nodes.iter().find(|n| n["id"] == node) else {
        let ids: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
        bail!(
            "node {node} is not a node of this cluster (its nodes: {})",
            ids.join(", ")
        );
    };
    if entry["live"] != true {
        bail!(
            "node {node} is down (no live registration): its log cannot be fetched until it \
             runs again"
        );
    }
    let Some(address) = entry["address"].as_str() else {
        bail!(
            "node {node} has published no address yet (it is starting, or runs an older \
             build): try again in a few seconds"
        );
    };
    let addr = Addr::parse(address).with_context(|| format!("node {node}'s address"))?;
    client(c)?
        .at(addr, c.ca_cert.as_deref())
        .with_context(|| format!("node {node} at {address}"))
}

/// A client of node `node`, found through the server `c` points at (`audit export --node`).
pub(super) fn node_source(c: &ClientArgs, node: &str) -> anyhow::Result<Client> {
    node_client(c, &cluster(c)?, node)
}

/// Streams `path` (an export) from node `node` into `sink`; an error names the node.
fn stream_node(
    source: &Client,
    node: &str,
    path: &str,
    sink: &mut dyn Write,
) -> anyhow::Result<Vec<u8>> {
    let mut tail: Vec<u8> = Vec::new();
    source
        .stream(path, |chunk| {
            sink.write_all(chunk).context("writing the export")?;
            tail.extend_from_slice(chunk);
            let cut = tail.len().saturating_sub(256);
            tail.drain(..cut);
            Ok(())
        })
        .with_context(|| format!("exporting node {node}'s log"))?;
    if tail.last().is_some_and(|b| *b != b'\n') {
        sink.write_all(b"\n").context("writing the export")?;
    }
    Ok(tail)
}

/// The entry count of a JSON Lines export's last line (`{"end":{"entries":K}}`), from the
/// stream's last bytes.
pub(super) fn exported_entries(tail: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(tail);
    let last = text.trim_end().lines().last()?;
    let value: Value = serde_json::from_str(last).ok()?;
    value["end"]["entries"].as_u64()
}

/// `keyvault audit export --cluster`: the first line naming the cluster, then each node's
/// export (`path`, JSON Lines) fetched from the node, one after another. Every node must be
/// reachable before anything is written, and a node that fails midway fails the command (a
/// file given with `-o` is then removed): never a file silently missing a node.
pub(super) fn export_cluster(
    c: &ClientArgs,
    path: &str,
    output: Option<&Path>,
    out: &Out,
) -> anyhow::Result<ExitCode> {
    let answer = cluster(c)?;
    let (vault_id, ids) = vault_and_nodes(&answer)?;
    let sources = ids
        .iter()
        .map(|id| node_client(c, &answer, id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let written = (|| -> anyhow::Result<Vec<Option<u64>>> {
        let mut sink: Box<dyn Write> = match output {
            Some(file) => Box::new(std::io::BufWriter::new(
                File::create(file).with_context(|| format!("creating {}", file.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        writeln!(sink, "{}", cluster_header_line(&vault_id, &ids, time))
            .context("writing the export")?;
        let mut counts = Vec::new();
        for (id, source) in ids.iter().zip(&sources) {
            let tail = stream_node(source, id, path, &mut sink)?;
            counts.push(exported_entries(&tail));
        }
        sink.flush().context("writing the export")?;
        Ok(counts)
    })();
    let counts = match written {
        Ok(counts) => counts,
        Err(e) => {
            if let Some(file) = output {
                let _ = std::fs::remove_file(file);
            }
            return Err(e);
        }
    };
    if let Some(file) = output {
        let per_node: Vec<Value> = ids
            .iter()
            .zip(&counts)
            .map(|(id, n)| serde_json::json!({ "node": id, "entries": n }))
            .collect();
        let summary = serde_json::json!({ "file": file, "vault_id": vault_id, "nodes": per_node });
        out.value(&summary, || {
            let parts: Vec<String> = ids
                .iter()
                .zip(&counts)
                .map(|(id, n)| match n {
                    Some(n) => format!("{id} ({n} entries)"),
                    None => id.clone(),
                })
                .collect();
            format!(
                "wrote the logs of the cluster's {} nodes to {}: {}",
                ids.len(),
                file.display(),
                parts.join(", ")
            )
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `file` is a cluster export (its first line says so).
pub(super) fn is_cluster_file(file: &Path) -> anyhow::Result<bool> {
    let mut first = Vec::new();
    BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?)
        .take(4096)
        .read_until(b'\n', &mut first)
        .with_context(|| format!("reading {}", file.display()))?;
    Ok(is_cluster_export(&first))
}

/// What `audit verify` asks of each node's log besides verifying.
pub(super) struct Asked<'a> {
    /// `--checkpoint`: an earlier checkpoint of one node's log.
    pub earlier: Option<&'a str>,
    /// `--complete` with its `--from`.
    pub complete: Option<u64>,
    /// `--witness` keys and `--min-cosignatures`.
    pub witnesses: &'a [CosignatureVerifier],
    pub min_cosignatures: usize,
}

/// `keyvault audit verify FILE` of a cluster export: a line per node, then the nodes the
/// cluster registered; exit 1 unless every node's log verifies (and is complete or
/// cosigned, as asked) and every registered node has one.
pub(super) fn verify_cluster(
    file: &Path,
    verifier: &NoteVerifier,
    asked: &Asked<'_>,
    out: &Out,
) -> anyhow::Result<ExitCode> {
    let input =
        BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let result = verify_cluster_export(input, verifier, asked.earlier, |report| {
        if let Some(from) = asked.complete {
            report.require_complete(from)?;
        }
        report.require_cosignatures(asked.witnesses, asked.min_cosignatures)?;
        Ok(())
    });
    let report = match result {
        Ok(report) => report,
        Err(e) => return out.not_verified(file, &e),
    };
    let verified = report.is_verified();
    out.value(&cluster_json(&report), || cluster_text(&report, asked));
    if verified {
        return Ok(ExitCode::SUCCESS);
    }
    if out.json {
        return Ok(ExitCode::from(1));
    }
    bail!("NOT verified: {}: {}", file.display(), why_not(&report))
}

fn why_not(report: &ClusterVerifyReport) -> String {
    let mut why: Vec<String> = report
        .nodes
        .iter()
        .filter(|n| n.result.is_err())
        .map(|n| format!("node {}'s log fails", n.node))
        .collect();
    if !report.missing.is_empty() {
        why.push(format!(
            "the file holds no log of registered node(s) {}",
            report.missing.join(", ")
        ));
    }
    why.join("; ")
}

fn cluster_json(report: &ClusterVerifyReport) -> Value {
    let nodes: Vec<Value> = report
        .nodes
        .iter()
        .map(|n| match &n.result {
            Ok(r) => serde_json::json!({
                "node": n.node,
                "verified": true,
                "entries": r.entries,
                "filtered": r.filtered,
                "first_seq": r.first_seq,
                "tree_size": r.checkpoint.size,
                "extends": r.extends,
                "summary": r.to_string(),
            }),
            Err(e) => serde_json::json!({
                "node": n.node,
                "verified": false,
                "line": e.line,
                "error": e.why,
            }),
        })
        .collect();
    serde_json::json!({
        "verified": report.is_verified(),
        "cluster": true,
        "vault_id": report.header.vault_id,
        "time": report.header.time,
        "registered_nodes": report.header.nodes,
        "missing": report.missing,
        "nodes": nodes,
    })
}

fn cluster_text(report: &ClusterVerifyReport, asked: &Asked<'_>) -> String {
    let mut lines: Vec<String> = report
        .nodes
        .iter()
        .map(|n| match &n.result {
            Ok(r) => {
                let mut line = format!("node {}: {r}", n.node);
                if asked.complete.is_some() {
                    line.push_str("; complete");
                }
                if !asked.witnesses.is_empty() {
                    line.push_str("; cosigned");
                }
                line
            }
            Err(e) => format!("node {}: NOT verified: line {}: {}", n.node, e.line, e.why),
        })
        .collect();
    for id in &report.missing {
        lines.push(format!(
            "node {id}: NOT in the file: the cluster registered it"
        ));
    }
    lines.push(format!(
        "the cluster registered {} node(s), as the exporter listed them (unsigned: compare with `keyvault cluster status`): {}",
        report.header.nodes.len(),
        report.header.nodes.join(", ")
    ));
    lines.join("\n")
}
