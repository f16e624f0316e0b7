//! `audit export --node|--cluster` and `audit verify` of a cluster export through the binary,
//! against a one-host vault (the cluster itself is driven by `scripts/check-cluster.sh`): the
//! clear refusals, and a cluster file's verdicts read from the real verifier.

use crate::support::{init_passphrase_vault, json_of, keyvault, run, serve_unsealed};

#[test]
fn node_and_cluster_exports_of_a_one_host_vault_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let server = serve_unsealed(&data, &pass);
    let addr = server.1.clone();
    let root = Some(root.as_str());
    for args in [
        &["audit", "export", "--node", "web-2"][..],
        &["audit", "export", "--cluster"][..],
    ] {
        let (code, stdout, err) = run(&addr, root, args);
        assert_ne!(code, 0, "{args:?}: {stdout}");
        assert!(
            err.contains("one host") && err.contains("not_clustered"),
            "{args:?}: {err}"
        );
    }
    let out = tmp.path().join("cluster.csv");
    let (code, _, err) = run(
        &addr,
        root,
        &[
            "audit",
            "export",
            "--cluster",
            "--format",
            "csv",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("JSON Lines only"), "{err}");
    assert!(!out.exists());
    let (code, _, err) = run(
        &addr,
        root,
        &["audit", "export", "--node", "a", "--cluster"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn verify_of_a_cluster_file_names_a_registered_node_with_no_log_and_a_log_not_a_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let key = init["public_key"].as_str().unwrap().to_owned();
    let vault_id = key
        .split('+')
        .next()
        .unwrap()
        .strip_prefix("keyvault/")
        .unwrap()
        .to_owned();
    let server = serve_unsealed(&data, &pass);
    let export = tmp.path().join("one-host.jsonl");
    let (code, _, err) = run(
        &server.1,
        Some(root.as_str()),
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let first = format!(
        "{{\"keyvault_cluster_export\":1,\"nodes\":[\"web-1\",\"web-2\"],\"time\":1,\"vault_id\":\"{vault_id}\"}}\n"
    );

    // The list alone: both registered nodes are missing.
    let file = tmp.path().join("cluster.jsonl");
    std::fs::write(&file, &first).unwrap();
    let out = keyvault()
        .args(["audit", "verify"])
        .arg(&file)
        .args(["--public-key", &key])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    assert!(stdout.contains("node web-2: NOT in the file"), "{stdout}");
    assert!(stdout.contains("registered 2 node(s)"), "{stdout}");
    assert!(stderr.contains("web-1, web-2"), "{stderr}");
    let out = keyvault()
        .args(["--json", "audit", "verify"])
        .arg(&file)
        .args(["--public-key", &key])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = json_of(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["verified"], false);
    assert_eq!(report["missing"], serde_json::json!(["web-1", "web-2"]));

    // A one-host log in a cluster file is not a node's log.
    let mut text = first.clone();
    text.push_str(&std::fs::read_to_string(&export).unwrap());
    std::fs::write(&file, text).unwrap();
    let out = keyvault()
        .args(["audit", "verify"])
        .arg(&file)
        .args(["--public-key", &key])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a node's log"), "{stderr}");
}
