//! The whole workflow through the binary: init with shares, unseal (and a reset), keys,
//! tokens, audit export, verify, tamper and archive, seal.

use std::path::Path;

use crate::support::{init_vault, json_of, keyvault, run, run_with_stdin, serve, shares_of};

#[test]
fn the_whole_workflow_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, init) = init_vault(
        tmp.path(),
        &["--shares", "3", "--threshold", "2", "--insecure-kdf"],
    );
    let root = init["root_token"].as_str().unwrap().to_owned();
    let public_key = init["public_key"].as_str().unwrap().to_owned();
    let shares = shares_of(&init);

    let server = serve(&["--data-dir", data.to_str().unwrap()]);
    let addr = server.1.clone();
    let root_text = root.clone();
    let root = Some(root.as_str());

    // Sealed: status exits 2, other commands say what to do.
    let (code, stdout, _) = run(&addr, root, &["status"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("sealed"));
    let (code, _, err) = run(&addr, root, &["key", "list"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: the vault is sealed: run `keyvault unseal`"
    );

    // A share submitted, then a reset: refused to someone who did not submit it (the progress
    // stays), done for its submitter, who gives it again.
    let unseal_stdin =
        |args: &[&str], share: &str| run_with_stdin(&addr, None, args, &format!("{share}\n"));
    let (code, _, _) = unseal_stdin(&["unseal", "--share", "-"], &shares[2]);
    assert_eq!(code, 0);
    let (code, _, err) = unseal_stdin(&["unseal", "--reset", "--share", "-"], &shares[0]);
    assert_eq!(code, 1);
    assert!(
        err.contains("only the holder of a share submitted so far"),
        "{err}"
    );
    assert!(!err.contains(&shares[0][5..]), "{err}");
    let (_, stdout, _) = run(&addr, None, &["--json", "status"]);
    assert_eq!(json_of(&stdout)["progress"], 1);
    let (code, stdout, _) = unseal_stdin(&["unseal", "--reset"], &shares[2]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.trim(), "progress reset: 0 of 2 shares submitted");

    // Unseal with two shares, from stdin (no echo, nothing on the command line).
    for (i, share) in shares.iter().take(2).enumerate() {
        let (code, stdout, err) = unseal_stdin(&["--json", "unseal", "--share", "-"], share);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json_of(&stdout)["sealed"], i == 0);
    }
    assert_eq!(run(&addr, root, &["status"]).0, 0);

    // Keys.
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "--json",
            "key",
            "create",
            "--owner",
            "cust-9",
            "--scope",
            "photos:write",
            "--credits",
            "5",
            "--name",
            "photo uploads",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let created = json_of(&stdout);
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["key_id"].as_str().unwrap().to_owned();
    let (code, stdout, _) = run(
        &addr,
        root,
        &["key", "verify", &key, "--scope", "photos:write"],
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("VALID: key"), "{stdout}");
    let (code, stdout, _) = run(&addr, root, &["key", "verify", &key, "--scope", "admin"]);
    assert_eq!(
        (code, stdout.trim()),
        (
            1,
            format!("INSUFFICIENT_SCOPE: key {id} of cust-9").as_str()
        )
    );
    let (code, stdout, _) = run(&addr, root, &["key", "list", "--owner", "cust-9"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&id) && stdout.starts_with("KEY ID"),
        "{stdout}"
    );
    assert!(!stdout.contains(&key[4..30]));
    // By exact name, alone and with the owner; another name or owner finds nothing.
    for args in [
        &["key", "list", "--name", "photo uploads"][..],
        &[
            "key",
            "list",
            "--name",
            "photo uploads",
            "--owner",
            "cust-9",
        ],
    ] {
        let (code, stdout, err) = run(&addr, root, args);
        assert_eq!(code, 0, "{err}");
        assert!(
            stdout.contains(&id) && stdout.contains("photo uploads"),
            "{stdout}"
        );
    }
    for args in [
        &["--json", "key", "list", "--name", "photo"][..],
        &[
            "--json",
            "key",
            "list",
            "--name",
            "photo uploads",
            "--owner",
            "cust-8",
        ],
    ] {
        let (code, stdout, err) = run(&addr, root, args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json_of(&stdout)["keys"], serde_json::json!([]), "{stdout}");
    }
    let (code, stdout, _) = run(&addr, None, &["key", "list", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("--name <NAME>"), "{stdout}");

    let (code, stdout, _) = run(
        &addr,
        root,
        &["--json", "key", "rotate", &id, "--grace", "60"],
    );
    assert_eq!(code, 0);
    let new_key = json_of(&stdout)["key"].as_str().unwrap().to_owned();
    let (_, stdout, _) = run(&addr, root, &["--json", "key", "verify", &key]);
    assert!(
        json_of(&stdout)["previous_secret"]["expires_at"].is_u64(),
        "{stdout}"
    );
    assert_eq!(run(&addr, root, &["key", "verify", &new_key]).0, 0);

    let (code, _, err) = run(&addr, root, &["key", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, _) = run(&addr, root, &["key", "verify", &new_key]);
    assert_eq!((code, stdout.starts_with("REVOKED")), (1, true), "{stdout}");

    // Tokens: a verifier token can verify but not create.
    let (code, stdout, _) = run(
        &addr,
        root,
        &[
            "--json", "token", "create", "--role", "verifier", "--name", "photo",
        ],
    );
    assert_eq!(code, 0);
    let verifier = json_of(&stdout)["token"].as_str().unwrap().to_owned();
    let (code, _, err) = run(&addr, Some(&verifier), &["key", "create", "--owner", "x"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: not allowed:") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        run(&addr, Some(&verifier), &["key", "verify", &new_key]).0,
        1
    );
    let (code, _, err) = run(&addr, Some("kvt_bogus"), &["key", "list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("KEYVAULT_TOKEN") && err.trim().lines().count() == 1,
        "{err}"
    );
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{root_text}\n")).unwrap();
    let (code, stdout, _) = run(
        &addr,
        None,
        &[
            "token",
            "list",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("verifier") && stdout.contains("admin"),
        "{stdout}"
    );

    // Audit: export, verify offline, tamper, verify again.
    let export = tmp.path().join("audit.jsonl");
    let (code, wrote, err) = run(
        &addr,
        root,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let verify_args = |file: &Path| {
        let mut cmd = keyvault();
        cmd.args(["audit", "verify"])
            .arg(file)
            .args(["--public-key", &public_key]);
        cmd.output().unwrap()
    };
    let out = verify_args(&export);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("verified: "),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The export and the verify name the same count, as entries.
    let entries = stdout["verified: ".len()..].split(' ').next().unwrap();
    assert!(
        wrote.starts_with(&format!("wrote {entries} entries to ")),
        "{wrote} / {stdout}"
    );
    let text = std::fs::read_to_string(&export).unwrap();
    let tampered = tmp.path().join("tampered.jsonl");
    std::fs::write(
        &tampered,
        text.replacen("\"outcome\":\"REVOKED\"", "\"outcome\":\"VALID\"", 1),
    )
    .unwrap();
    let out = verify_args(&tampered);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT verified") && err.contains("was changed"),
        "{err}"
    );
    let pk_file = tmp.path().join("pk");
    std::fs::write(&pk_file, &public_key).unwrap();
    let out = keyvault()
        .args(["audit", "verify"])
        .arg(&export)
        .arg(format!("--public-key=@{}", pk_file.display()))
        .output()
        .unwrap();
    assert!(out.status.success());

    // Archive the whole log: the file verifies on its own, the live log goes on from its end
    // and still verifies, and an existing file is never overwritten.
    let archive = tmp.path().join("archive.jsonl");
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "--json",
            "audit",
            "archive",
            "--upto",
            "latest",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let archived = json_of(&stdout);
    let upto = archived["upto"].as_u64().unwrap();
    assert!(upto > 0);
    assert_eq!(archived["first_seq"], 0);
    assert_eq!(archived["dropped"].as_u64(), Some(upto));
    // The vault dropped against the SHA-256 of the file as it is on the disk.
    let on_disk = vault_core::audit::archive::ArchiveDigest::of_reader(
        std::fs::File::open(&archive).unwrap(),
    )
    .unwrap();
    assert_eq!(
        archived["sha256"].as_str(),
        Some(on_disk.to_string().as_str())
    );
    let out = verify_args(&archive);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let complete = |file: &Path, extra: &[&str]| {
        let mut cmd = keyvault();
        cmd.args(["audit", "verify", "--complete"])
            .arg(file)
            .args(["--public-key", &public_key])
            .args(extra);
        cmd.output().unwrap()
    };
    let out = complete(&archive, &[]);
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .contains(&format!("complete: every entry from 0 to {}", upto - 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = run(
        &addr,
        root,
        &[
            "audit",
            "archive",
            "--upto",
            "latest",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("never overwritten"), "{err}");
    let (code, _, err) = run(
        &addr,
        root,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let out = verify_args(&export);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("({upto} to ")),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The live log after an archive is complete only from the archive's end, and only when
    // the auditor says so; a filtered export is never complete.
    let out = complete(&export, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("NOT complete") && err.contains(&format!("--from {upto}")),
        "{err}"
    );
    let out = complete(&export, &["--from", &upto.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let filtered = tmp.path().join("filtered.jsonl");
    let (code, _, err) = run(
        &addr,
        root,
        &[
            "audit",
            "export",
            "--event",
            "key.create",
            "-o",
            filtered.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(verify_args(&filtered).status.success());
    let out = complete(&filtered, &["--from", &upto.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("NOT complete") && err.contains("filtered"),
        "{err}"
    );
    // By outcome: only the entries with it, still verifiable as a filtered export.
    let created = tmp.path().join("outcome.jsonl");
    let (code, _, err) = run(
        &addr,
        root,
        &[
            "audit",
            "export",
            "--outcome",
            "ok",
            "-o",
            created.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(verify_args(&created).status.success());
    let text = std::fs::read_to_string(&created).unwrap();
    let entries: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .collect();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|l| l.contains("\"outcome\":\"ok\"")),
        "{text}"
    );
    let (code, _, err) = run(
        &addr,
        root,
        &[
            "audit",
            "export",
            "--outcome",
            "NO_SUCH_OUTCOME",
            "-o",
            created.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&created).unwrap();
    assert!(!text.lines().any(|l| l.starts_with("{\"seq\":")), "{text}");
    // A second archive starts where the first ended and verifies alone.
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "--json",
            "audit",
            "archive",
            "--upto",
            "latest",
            "--public-key",
            &public_key,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let second = json_of(&stdout);
    assert_eq!(second["first_seq"].as_u64(), Some(upto));
    let second_file = std::path::PathBuf::from(second["file"].as_str().unwrap());
    let out = verify_args(&second_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&second_file).unwrap();

    // A one-host vault has no cluster: `cluster status` and `seal --cluster` say so (exit 1)
    // and seal nothing.
    let (code, _, err) = run(&addr, root, &["cluster", "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("one host"), "{err}");
    let (code, _, err) = run(&addr, root, &["seal", "--cluster"]);
    assert_eq!(code, 1);
    assert!(err.contains("cluster"), "{err}");
    assert_eq!(run(&addr, root, &["status"]).0, 0);

    // Seal from the CLI; status exits 2 again.
    assert_eq!(run(&addr, root, &["seal"]).0, 0);
    assert_eq!(run(&addr, root, &["status"]).0, 2);
    drop(server);

    // A missing server: a one-line error, exit 1.
    let (code, _, err) = run("127.0.0.1:1", root, &["status"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot reach the vault") && err.trim().lines().count() == 1,
        "{err}"
    );
}
