//! The audit log through the CLI: `operator rotate-audit-key` followed by `audit verify`, and
//! `audit tail`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{init_passphrase_vault, json_of, keyvault, run, serve_unsealed};

/// `operator rotate-audit-key`, then `audit verify` with the key printed at init follows the
/// rotation (and says so), and with the new key too; a filtered export as well.
#[test]
fn rotate_audit_key_then_audit_verify_follows_it_from_the_key_printed_at_init() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let pinned = init["public_key"].as_str().unwrap().to_owned();
    let server = serve_unsealed(&data, &pass);
    let addr = server.1.clone();
    let root = Some(root.as_str());
    let (code, _, err) = run(&addr, root, &["key", "create", "--owner", "alice"]);
    assert_eq!(code, 0, "{err}");

    let (code, stdout, err) = run(&addr, root, &["operator", "rotate-audit-key"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.starts_with("audit key rotated: generation 2"),
        "{stdout}"
    );
    let (code, stdout, err) = run(&addr, root, &["operator", "rotate-audit-key", "--json"]);
    assert_eq!(code, 0, "{err}");
    let answer = json_of(&stdout);
    assert_eq!(answer["generation"], 3);
    let newest = answer["public_key"].as_str().unwrap().to_owned();
    let seq = answer["seq"].as_u64().unwrap();

    for filter in [&[][..], &["--owner", "alice"][..]] {
        let export = tmp.path().join("audit.jsonl");
        let _ = std::fs::remove_file(&export);
        let mut args = vec!["audit", "export", "-o", export.to_str().unwrap()];
        args.extend_from_slice(filter);
        let (code, _, err) = run(&addr, root, &args);
        assert_eq!(code, 0, "{err}");
        for (key, followed) in [(&pinned, 2), (&newest, 0)] {
            let out = keyvault()
                .args(["audit", "verify"])
                .arg(&export)
                .args(["--public-key", key])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                stdout.matches("followed from the pinned key").count(),
                followed,
                "{stdout}"
            );
            if followed > 0 {
                assert!(
                    stdout.contains(&format!("the audit key was rotated at entry {seq}")),
                    "{stdout}"
                );
            }
        }
    }
}

/// `audit tail -n N` starts with the last N entries, then follows new ones.
#[test]
fn audit_tail_starts_with_the_last_entries_then_follows() {
    use std::sync::mpsc;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let server = serve_unsealed(&data, &pass);
    for owner in ["a", "b", "c"] {
        let (code, _, err) = run(&server.1, Some(&root), &["key", "create", "--owner", owner]);
        assert_eq!(code, 0, "{err}");
    }
    let mut child = keyvault()
        .env("KEYVAULT_ADDR", format!("http://{}", server.1))
        .env("KEYVAULT_TOKEN", &root)
        .args(["audit", "tail", "-n", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(10)).expect("a line");
    let header = json_of(&next());
    let size = header["tree_size"].as_u64().unwrap();
    assert_eq!(header["first_seq"], size - 2, "{header}");
    assert!(next().starts_with("{\"checkpoint\""));
    let mut seqs = Vec::new();
    loop {
        let line = next();
        let v = json_of(&line);
        if let Some(end) = v.get("end") {
            assert_eq!(end["entries"], 2);
            break;
        }
        if let Some(seq) = v.get("seq") {
            seqs.push(seq.as_u64().unwrap());
        }
    }
    assert_eq!(seqs, vec![size - 2, size - 1]);
    // Then new entries as they come.
    let (code, _, err) = run(&server.1, Some(&root), &["key", "create", "--owner", "d"]);
    assert_eq!(code, 0, "{err}");
    let mut seen_create = false;
    for _ in 0..20 {
        let line = next();
        if line.contains("\"event\":\"key.create\"") && line.contains("\"owner\":\"d\"") {
            seen_create = true;
            break;
        }
    }
    assert!(seen_create);
    let _ = child.kill();
    let _ = child.wait();
}
