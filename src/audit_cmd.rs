//! `keyvault audit export|verify|tail`.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use vault_core::audit::export::verify_export;
use vault_core::audit::note::NoteVerifier;

use crate::cli::{AuditCommand, AuditFilter, Format};
use crate::output::{Out, counter};
use crate::remote::{client, query};

fn filter_query(filter: &AuditFilter, extra: &[(&str, Option<String>)]) -> String {
    let mut pairs = vec![
        ("since", filter.since.clone()),
        ("until", filter.until.clone()),
        ("owner", filter.owner.clone()),
        ("key", filter.key.clone()),
        ("event", filter.event.clone()),
    ];
    pairs.extend(extra.iter().cloned());
    query(&pairs)
}

/// Runs an audit command.
pub fn run(command: &AuditCommand, out: &Out) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Export {
            client: c,
            filter,
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
            let mut sink: Box<dyn Write> = match output {
                Some(file) => Box::new(std::io::BufWriter::new(
                    File::create(file).with_context(|| format!("creating {}", file.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            // A progress counter only when the export goes to a file and stderr is a terminal.
            let bar = output.as_ref().and_then(|_| counter("lines"));
            let mut lines = 0u64;
            client(c)?.stream(&path, |chunk| {
                sink.write_all(chunk).context("writing the export")?;
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
                let summary = serde_json::json!({ "file": file, "lines": lines });
                out.value(&summary, || {
                    format!("wrote {lines} lines to {}", file.display())
                });
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            file,
            public_key,
            checkpoint,
        } => {
            let key_text = match public_key.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading {path}"))?
                    .trim()
                    .to_owned(),
                None => public_key.trim().to_owned(),
            };
            let verifier = NoteVerifier::parse(&key_text).map_err(|e| {
                anyhow::anyhow!(
                    "--public-key: {e} (give it as `init` printed it, name+hash+base64, or @FILE)"
                )
            })?;
            let earlier = checkpoint
                .as_ref()
                .map(|p| read_checkpoint(p))
                .transpose()?;
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
                    let root = report.to_string();
                    let value = serde_json::json!({
                        "verified": true,
                        "entries": report.entries,
                        "filtered": report.filtered,
                        "tree_size": report.checkpoint.size,
                        "extends": report.extends,
                        "summary": root,
                    });
                    out.value(&value, || report.to_string());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    if out.json {
                        println!(
                            "{}",
                            serde_json::json!({ "verified": false, "line": e.line, "error": e.why })
                        );
                        return Ok(ExitCode::from(1));
                    }
                    bail!(
                        "NOT verified: {} line {}: {}",
                        file.display(),
                        e.line,
                        e.why
                    )
                }
            }
        }
        AuditCommand::Tail { client: c, filter } => {
            let path = format!(
                "/v1/audit/export{}",
                filter_query(filter, &[("follow", Some("true".into()))])
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
    }
}

/// A checkpoint file: the signed note itself, or a line `{"checkpoint": "..."}` as the vault's
/// checkpoint file and `GET /v1/audit/checkpoint` write it.
fn read_checkpoint(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let last = trimmed.lines().last().unwrap_or(trimmed);
        let v: serde_json::Value = serde_json::from_str(last)
            .with_context(|| format!("{} is not a checkpoint", path.display()))?;
        return v["checkpoint"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{} has no \"checkpoint\" field", path.display()));
    }
    Ok(text)
}
