//! `operator backup` of a running vault, `operator restore` offline, and the restored vault
//! served, unsealed and its audit log verified.

use crate::support::{
    init_passphrase_vault, json_of, keyvault, run, serve, serve_unsealed, succeed,
};

#[test]
fn backup_a_running_vault_then_restore_serve_unseal_and_verify_through_the_binary() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let public_key = init["public_key"].as_str().unwrap().to_owned();
    let server = serve_unsealed(&data, &pass);
    let addr = server.1.clone();
    let root = Some(root.as_str());
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "--json",
            "key",
            "create",
            "--owner",
            "alice",
            "--credits",
            "100",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let key = json_of(&stdout)["key"].as_str().unwrap().to_owned();
    let (code, _, _) = run(&addr, root, &["key", "verify", &key]);
    assert_eq!(code, 0);
    // An auditor keeps the checkpoint of an export from before the backup.
    let first = tmp.path().join("first.jsonl");
    let (code, _, err) = run(
        &addr,
        root,
        &["audit", "export", "-o", first.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let early = tmp.path().join("early-checkpoint.json");
    let checkpoint_line = std::fs::read_to_string(&first)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    std::fs::write(&early, checkpoint_line).unwrap();

    // Back up the running vault; a second run without --force refuses to overwrite it.
    let file = tmp.path().join("vault.backup");
    let (code, stdout, err) = run(
        &addr,
        root,
        &["--json", "operator", "backup", "-o", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let summary = json_of(&stdout);
    let bytes = std::fs::metadata(&file).unwrap();
    assert_eq!(summary["bytes"], bytes.len());
    assert_eq!(bytes.permissions().mode() & 0o777, 0o600);
    assert!(!tmp.path().join("vault.backup.tmp").exists());
    let (code, _, err) = run(
        &addr,
        root,
        &["operator", "backup", "-o", file.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--force") && err.lines().count() == 1, "{err}");
    let (code, stdout, err) = run(
        &addr,
        root,
        &[
            "operator",
            "backup",
            "--force",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("wrote a backup of vault"), "{stdout}");
    let (code, _, err) = run(&addr, None, &["operator", "backup", "-o", "x.backup"]);
    assert_eq!(code, 1);
    assert!(err.contains("KEYVAULT_TOKEN"), "{err}");
    // A one-host vault has no nodes to back up: refused, and the directory is not left.
    let bundle = tmp.path().join("bundle");
    let (code, _, err) = run(
        &addr,
        root,
        &[
            "operator",
            "backup",
            "--cluster",
            "-o",
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("cluster"), "{err}");
    assert!(!bundle.exists());
    drop(server);

    // A truncated copy is refused and leaves no directory behind.
    let whole = std::fs::read(&file).unwrap();
    let cut = tmp.path().join("cut.backup");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let broken = tmp.path().join("broken");
    let out = keyvault()
        .args(["operator", "restore"])
        .arg(&cut)
        .arg("--data-dir")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("truncated") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!broken.exists());

    // Restore into a fresh directory, serve it, unseal it with the old passphrase.
    let restored = tmp.path().join("restored");
    let stdout = succeed(
        keyvault()
            .args(["--json", "operator", "restore"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&restored),
    );
    let report = json_of(&stdout);
    assert_eq!(report["public_key"], public_key.as_str());
    assert_eq!(
        std::fs::metadata(&restored).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let again = keyvault()
        .args(["operator", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8(again.stderr)
            .unwrap()
            .contains("not empty")
    );

    // The data directory may come from a config file; a cluster node's config needs a build
    // with cluster support.
    let config = tmp.path().join("restore.toml");
    let from_config = tmp.path().join("from-config");
    std::fs::write(&config, format!("data_dir = {:?}\n", from_config)).unwrap();
    succeed(
        keyvault()
            .args(["operator", "restore"])
            .arg(&file)
            .arg("--config")
            .arg(&config),
    );
    assert!(from_config.join("store").is_dir());
    #[cfg(not(feature = "etcd"))]
    {
        let node = tmp.path().join("node.toml");
        std::fs::write(
            &node,
            format!(
                "data_dir = {:?}\n[storage]\nbackend = \"etcd\"\nendpoints = \
                 [\"http://127.0.0.1:1\"]\nprefix = \"/kv\"\nnode_id = \"a\"\n",
                tmp.path().join("node")
            ),
        )
        .unwrap();
        let out = keyvault()
            .args(["operator", "restore"])
            .arg(&file)
            .arg("--config")
            .arg(&node)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("built with cluster support"), "{err}");
        assert!(!tmp.path().join("node").exists());
    }

    let server = serve(&["--data-dir", restored.to_str().unwrap()]);
    let addr = server.1.clone();
    let (code, _, err) = run(
        &addr,
        None,
        &["unseal", "--passphrase-file", pass.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = run(&addr, root, &["--json", "key", "verify", &key]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&stdout)["credits_remaining"], 98);

    // The restored log verifies with the key pinned at init and extends the earlier export.
    let export = tmp.path().join("after.jsonl");
    let (code, _, err) = run(
        &addr,
        root,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let out = keyvault()
        .args(["--json", "audit", "verify"])
        .arg(&export)
        .args(["--public-key", &public_key, "--checkpoint"])
        .arg(&early)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let verified = json_of(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(verified["verified"], true);
    let extends = verified["extends"].as_u64().unwrap();
    // The earlier checkpoint in every form an auditor may hold it: the export it came with, the
    // signed note with or without its final newline, a line of checkpoints.jsonl.
    let note = json_of(&std::fs::read_to_string(&early).unwrap())["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let forms = [
        ("export.jsonl", std::fs::read_to_string(&first).unwrap()),
        ("note", note.clone()),
        ("note-no-newline", note.trim_end().to_owned()),
        (
            "line.jsonl",
            format!("{}\n", serde_json::json!({ "checkpoint": note })),
        ),
    ];
    for (name, text) in forms {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = keyvault()
            .args(["--json", "audit", "verify"])
            .arg(&export)
            .args(["--public-key", &public_key, "--checkpoint"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json_of(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(v["extends"], extends, "{name}");
    }
}
