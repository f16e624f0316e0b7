//! `keyvault audit export|verify|tail|archive`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use vault_core::audit::archive::ArchiveDigest;
use vault_core::audit::export::verify_export;
use vault_core::audit::note::NoteVerifier;

use super::audit_cluster::{self, exported_entries};
use crate::cli::{AuditCommand, AuditFilter, ClientArgs, Format};
use crate::client::{client, query};
use crate::key_args::{log_key_arg, witness_key_arg};
use crate::output::{Out, bar, counter};

fn filter_query(filter: &AuditFilter, extra: &[(&str, Option<String>)]) -> String {
    let mut pairs = vec![
        ("since", filter.since.clone()),
        ("until", filter.until.clone()),
        ("owner", filter.owner.clone()),
        ("key", filter.key.clone()),
        ("event", filter.event.clone()),
        ("outcome", filter.outcome.clone()),
    ];
    pairs.extend(extra.iter().cloned());
    query(&pairs)
}

/// Runs an audit command.
pub fn run(command: &AuditCommand, out: &Out) -> anyhow::Result<ExitCode> {
    let c = &out.client;
    match command {
        AuditCommand::Export {
            filter,
            node,
            cluster,
            format,
            output,
        } => {
            let format_name = if *format == Format::Csv {
                "csv"
            } else {
                "jsonl"
            };
            let path = format!(
                "/v1/audit/export{}",
                filter_query(filter, &[("format", Some(format_name.to_owned()))])
            );
            if *cluster {
                if *format == Format::Csv {
                    bail!(
                        "--cluster writes JSON Lines only (the verifiable format); export one node's log as CSV with --node ID --format csv"
                    );
                }
                return audit_cluster::export_cluster(c, &path, output.as_deref(), out);
            }
            let source = match node {
                Some(node) => audit_cluster::node_source(c, node)?,
                None => client(c)?,
            };
            let mut sink: Box<dyn Write> = match output {
                Some(file) => Box::new(std::io::BufWriter::new(
                    File::create(file).with_context(|| format!("creating {}", file.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            // A progress counter only when the export goes to a file and stderr is a terminal.
            let bar = output.as_ref().and_then(|_| counter("lines"));
            let mut lines = 0u64;
            // The end of the stream, for the JSON Lines export's `{"end":{"entries":K}}`.
            let mut tail: Vec<u8> = Vec::new();
            source.stream(&path, |chunk| {
                sink.write_all(chunk).context("writing the export")?;
                tail.extend_from_slice(chunk);
                let cut = tail.len().saturating_sub(256);
                tail.drain(..cut);
                let n = chunk.iter().filter(|b| **b == b'\n').count() as u64;
                lines += n;
                if let Some(bar) = &bar {
                    bar.inc(n);
                }
                Ok(())
            })?;
            sink.flush().context("writing the export")?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if let Some(file) = output {
                let entries = if *format == Format::Csv {
                    Some(lines.saturating_sub(1))
                } else {
                    exported_entries(&tail)
                };
                let summary =
                    serde_json::json!({ "file": file, "lines": lines, "entries": entries });
                out.value(&summary, || match entries {
                    Some(n) if *format == Format::Csv => format!(
                        "wrote {n} entries to {} ({lines} lines: a header and one line per entry)",
                        file.display()
                    ),
                    Some(n) => format!(
                        "wrote {n} entries to {} ({lines} lines: each entry with its leaf hash or \
                         proof, and the header, checkpoint and end lines)",
                        file.display()
                    ),
                    None => format!("wrote {lines} lines to {}", file.display()),
                });
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            file,
            public_key,
            checkpoint,
            complete,
            from,
            witness,
            min_cosignatures,
        } => {
            let verifier = public_key_arg(public_key)?;
            let witnesses = witness
                .iter()
                .map(|w| witness_key_arg(w))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let min_cosignatures = min_cosignatures.unwrap_or(witnesses.len());
            if min_cosignatures > witnesses.len() {
                bail!(
                    "--min-cosignatures {min_cosignatures} needs at least as many --witness keys (got {})",
                    witnesses.len()
                );
            }
            let earlier = checkpoint
                .as_ref()
                .map(|p| read_checkpoint(p))
                .transpose()?;
            if audit_cluster::is_cluster_file(file)? {
                let asked = audit_cluster::Asked {
                    earlier: earlier.as_deref(),
                    complete: complete.then(|| from.unwrap_or(0)),
                    witnesses: &witnesses,
                    min_cosignatures,
                };
                return audit_cluster::verify_cluster(file, &verifier, &asked, out);
            }
            let input = BufReader::new(
                File::open(file).with_context(|| format!("opening {}", file.display()))?,
            );
            let bar = counter("entries");
            let result = verify_export(input, &verifier, earlier.as_deref(), |n| {
                if let Some(bar) = &bar {
                    bar.set_position(n);
                }
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            match result {
                Ok(report) => {
                    let start = from.unwrap_or(0);
                    if *complete && let Err(e) = report.require_complete(start) {
                        return verified_but_not(out, file, "complete", &e.why);
                    }
                    let cosigned = match report.require_cosignatures(&witnesses, min_cosignatures) {
                        Ok(cosigned) => cosigned,
                        Err(e) => return verified_but_not(out, file, "witnessed", &e.why),
                    };
                    let mut summary = report.to_string();
                    if !cosigned.is_empty() {
                        let names: Vec<&str> = cosigned.iter().map(|(n, _)| n.as_str()).collect();
                        summary.push_str(&format!(
                            "; cosigned by {} of {} witnesses ({})",
                            cosigned.len(),
                            witnesses.len(),
                            names.join(", ")
                        ));
                    }
                    if *complete {
                        summary.push_str(&format!(
                            "; complete: every entry from {start} to {}",
                            report.checkpoint.size.saturating_sub(1)
                        ));
                    }
                    let mut value = serde_json::json!({
                        "verified": true,
                        "entries": report.entries,
                        "filtered": report.filtered,
                        "first_seq": report.first_seq,
                        "tree_size": report.checkpoint.size,
                        "extends": report.extends,
                        "summary": summary,
                        "audit_key_rotations": report
                            .rotations
                            .iter()
                            .map(|r| serde_json::json!({
                                "seq": r.seq,
                                "checkpoint_size": r.checkpoint_size,
                                "public_key": r.public_key,
                            }))
                            .collect::<Vec<_>>(),
                    });
                    if *complete {
                        value["complete"] = true.into();
                    }
                    if !witnesses.is_empty() {
                        value["cosignatures"] = cosigned
                            .iter()
                            .map(
                                |(name, time)| serde_json::json!({ "witness": name, "time": time }),
                            )
                            .collect::<Vec<_>>()
                            .into();
                    }
                    out.value(&value, || summary.clone());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => out.not_verified(file, &e),
            }
        }
        AuditCommand::Tail { filter, lines } => {
            let path = format!(
                "/v1/audit/export{}",
                filter_query(
                    filter,
                    &[
                        ("follow", Some("true".into())),
                        ("last", Some(lines.to_string())),
                    ]
                )
            );
            let mut stdout = std::io::stdout().lock();
            let interactive = std::io::stdout().is_terminal();
            client(c)?.stream(&path, |chunk| {
                stdout
                    .write_all(chunk)
                    .context("writing to standard output")?;
                if interactive {
                    stdout.flush().ok();
                }
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Archive {
            upto,
            output,
            public_key,
        } => archive(c, upto, output.as_deref(), public_key.as_deref(), out),
    }
}

/// An export that verified but is not `what` (`complete`, `witnessed`) as asked: exit 1, with
/// `{"verified": true, "<what>": false, "error"}` under `--json`.
fn verified_but_not(out: &Out, file: &Path, what: &str, why: &str) -> anyhow::Result<ExitCode> {
    if out.json {
        let mut value = serde_json::json!({ "verified": true, "error": why });
        value[if what == "witnessed" {
            "cosigned"
        } else {
            what
        }] = false.into();
        println!("{value}");
        return Ok(ExitCode::from(1));
    }
    bail!("NOT {what}: {}: {why}", file.display())
}

/// `--public-key` as `init` printed it, or `@FILE`.
fn public_key_arg(text: &str) -> anyhow::Result<NoteVerifier> {
    log_key_arg("--public-key", text)
}

/// `keyvault audit archive`: fetch the archive into a temporary file next to the destination,
/// sync it, then read it back to verify it and take its SHA-256, move it into place (never over
/// an existing file), and only then ask the vault to drop the archived entries, sending that
/// SHA-256: the vault drops nothing unless it is the digest of the archive it sent.
fn archive(
    c: &ClientArgs,
    upto: &str,
    output: Option<&Path>,
    public_key: Option<&str>,
    out: &Out,
) -> anyhow::Result<ExitCode> {
    if upto != "latest" && upto.parse::<u64>().is_err() {
        bail!("--upto: give a checkpoint's tree size (digits) or `latest`");
    }
    let pinned = public_key.map(public_key_arg).transpose()?;
    if let Some(dest) = output
        && dest.exists()
    {
        bail!("{} exists; archives are never overwritten", dest.display());
    }
    let dir = match output.and_then(Path::parent) {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = dir.join(format!(
        ".keyvault-audit-archive-{}.partial",
        std::process::id()
    ));
    let result = fetch_and_check(c, upto, &partial, pinned);
    let (report, sent_key, sha256) = match result {
        Ok(ok) => ok,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let first = report.first_seq;
    let size = report.checkpoint.size;
    let dest = output.map_or_else(
        || dir.join(format!("keyvault-audit-{first}-{size}.jsonl")),
        Path::to_path_buf,
    );
    // A hard link fails if the destination exists, where a rename would replace it.
    let placed = std::fs::hard_link(&partial, &dest)
        .with_context(|| format!("moving the archive to {}", dest.display()));
    let _ = std::fs::remove_file(&partial);
    placed?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;

    let answer = client(c)?.call(
        "POST",
        "/v1/audit/archive",
        Some(&serde_json::json!({ "upto": size, "sha256": sha256.to_string() })),
    )?;
    let dropped = answer["dropped"].as_u64().unwrap_or(0);
    let freed = answer["bytes_freed"].as_u64().unwrap_or(0);
    let summary = serde_json::json!({
        "file": dest,
        "first_seq": first,
        "upto": size,
        "entries": report.entries,
        "sha256": sha256.to_string(),
        "dropped": dropped,
        "bytes_freed": freed,
        "checkpoint": report.checkpoint.to_note_text(),
        "public_key": sent_key,
    });
    out.value(&summary, || {
        format!(
            "archived entries {first}..{size} ({} entries) to {}; verified, and dropped {dropped} from the live log, freeing {freed} bytes\nmove the file off this host and keep it: it is the only copy of those entries",
            report.entries,
            dest.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Streams the archive into `partial` (mode 0600, synced), then reads it back from the disk to
/// verify it, against `pinned` or else the key the vault sent with it, and to take the SHA-256
/// of every byte the file holds. Returns the report, the key used and the digest.
fn fetch_and_check(
    c: &ClientArgs,
    upto: &str,
    partial: &Path,
    pinned: Option<NoteVerifier>,
) -> anyhow::Result<(
    vault_core::audit::export::VerifyReport,
    String,
    ArchiveDigest,
)> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut sent_key = None;
    let mut progress: Option<indicatif::ProgressBar> = None;
    let mut header = Vec::new();
    let mut header_done = false;
    let path = format!(
        "/v1/audit/archive{}",
        query(&[("upto", Some(upto.to_owned()))])
    );
    client(c)?.stream_with_headers(
        &path,
        |headers| {
            sent_key = headers
                .get("x-keyvault-audit-public-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        },
        |chunk| {
            file.write_all(chunk)
                .with_context(|| format!("writing {}", partial.display()))?;
            if !header_done {
                header.extend_from_slice(chunk);
                if let Some(end) = header.iter().position(|b| *b == b'\n') {
                    header_done = true;
                    let h: serde_json::Value =
                        serde_json::from_slice(&header[..end]).unwrap_or_default();
                    let size = h["tree_size"].as_u64().unwrap_or(0);
                    let first = h["first_seq"].as_u64().unwrap_or(0);
                    progress = bar("entries", size.saturating_sub(first));
                }
            }
            if let Some(bar) = &progress {
                // Two lines per entry: the entry and its leaf hash.
                let lines = chunk.iter().filter(|b| **b == b'\n').count() as u64;
                bar.inc(lines / 2);
            }
            Ok(())
        },
    )?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", partial.display()))?;
    drop(file);
    let (verifier, key_text) = match (pinned, sent_key) {
        (Some(v), _) => {
            let text = v.to_string();
            (v, text)
        }
        (None, Some(text)) => (
            NoteVerifier::parse(&text)
                .map_err(|e| anyhow::anyhow!("the vault sent an unusable public key: {e}"))?,
            text,
        ),
        (None, None) => bail!("the vault sent no audit public key: pass --public-key"),
    };
    let report = verify_export(
        BufReader::new(
            File::open(partial).with_context(|| format!("opening {}", partial.display()))?,
        ),
        &verifier,
        None,
        |_| {},
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "the archive received does NOT verify (line {}: {}); nothing was dropped",
            e.line,
            e.why
        )
    })?;
    if report.filtered {
        bail!("the vault sent a filtered export as an archive; nothing was dropped");
    }
    // A second read, of the whole file whatever the verifier stopped at: what the vault drops
    // against is exactly what is on the disk.
    let sha256 = File::open(partial)
        .and_then(ArchiveDigest::of_reader)
        .with_context(|| format!("reading {}", partial.display()))?;
    Ok((report, key_text, sha256))
}

/// A checkpoint file: the signed note itself, or a line `{"checkpoint": "..."}` as the vault's
/// checkpoint file and `GET /v1/audit/checkpoint` write it.
fn read_checkpoint(path: &Path) -> anyhow::Result<String> {
    use std::io::BufRead;
    let not_one = || format!("{} holds no checkpoint", path.display());
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = BufReader::new(file).lines();
    let first = lines
        .next()
        .transpose()
        .with_context(|| format!("reading {}", path.display()))?
        .with_context(not_one)?;
    let json_note = |line: &str| -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        v["checkpoint"].as_str().map(str::to_owned)
    };
    // serde_json writes the header's keys in its own order, so the line is parsed.
    let is_export_header =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(first.trim())
            .is_ok_and(|m| m.contains_key("keyvault_audit_export"));
    if is_export_header {
        // An export or an archive file: its checkpoint is its second line.
        let second = lines
            .next()
            .transpose()
            .with_context(|| format!("reading {}", path.display()))?
            .with_context(not_one)?;
        return json_note(&second).with_context(not_one);
    }
    if first.trim_start().starts_with('{') {
        // Lines of `{"checkpoint": note}` (checkpoints.jsonl, or one of its lines): the last.
        let mut last = json_note(&first);
        for line in lines {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if let Some(note) = json_note(&line) {
                last = Some(note);
            }
        }
        return last.with_context(not_one);
    }
    // A signed note as GET /v1/audit/checkpoint gives it, with or without its final newline.
    let mut text = first;
    for line in lines {
        text.push('\n');
        text.push_str(&line.with_context(|| format!("reading {}", path.display()))?);
    }
    let mut note = text.trim_end().to_owned();
    note.push('\n');
    Ok(note)
}
