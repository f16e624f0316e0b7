//! The ceremonies, `operator rekey` and `operator generate-root`, with each holder in their
//! own process.

use crate::support::{get, init_vault, json_of, run, run_with_stdin, serve, shares_of};

#[test]
fn rekey_and_generate_root_by_holders_each_in_their_own_process() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, init) = init_vault(tmp.path(), &["--shares", "5", "--threshold", "3"]);
    let root = init["root_token"].as_str().unwrap().to_owned();
    let shares = shares_of(&init);
    let server = serve(&["--data-dir", data.to_str().unwrap()]);
    let addr = server.1.clone();
    for share in &shares[..3] {
        let (code, _, err) = run_with_stdin(&addr, None, &["unseal", "--share", "-"], share);
        assert_eq!(code, 0, "{err}");
    }

    // The initiator starts a rekey to 2 of 3, each new share to its holder's age key.
    let identities: Vec<age::x25519::Identity> =
        (0..3).map(|_| age::x25519::Identity::generate()).collect();
    let recipients: Vec<String> = identities
        .iter()
        .map(|i| i.to_public().to_string())
        .collect();
    let mut start = vec![
        "--json",
        "operator",
        "rekey",
        "--new-shares",
        "3",
        "--new-threshold",
        "2",
    ];
    for r in &recipients {
        start.extend(["--new-share-recipient", r.as_str()]);
    }
    let (code, started, err) = run(&addr, Some(&root), &start);
    assert_eq!(code, 0, "{err}");
    let started = json_of(&started);
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    let digest = started["digest"].as_str().unwrap().to_owned();

    // Three holders, each in their own process, each giving one share on stdin.
    let mut last = serde_json::Value::Null;
    for (i, share) in shares[2..5].iter().enumerate() {
        let args = [
            "--json", "operator", "rekey", "--nonce", &nonce, "--share", "-",
        ];
        let (code, answer, err) = run_with_stdin(&addr, Some(&root), &args, share);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(&digest),
            "the holder is shown the digest: {err}"
        );
        assert!(!answer.contains("kvs1_") && !err.contains("kvs1_"));
        last = json_of(&answer);
        assert_eq!(last["digest"], digest.as_str());
        assert_eq!(last["progress"], i + 1);
    }
    assert_eq!(last["state"], "complete");
    let new_shares: Vec<String> = last["encrypted_shares"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&identities)
        .map(|(armored, id)| {
            let plain = age::decrypt(id, armored.as_str().unwrap().as_bytes()).unwrap();
            String::from_utf8(plain).unwrap()
        })
        .collect();
    assert!(new_shares.iter().all(|s| s.starts_with("kvs1_")));

    // A holder who expects another digest gives nothing.
    let (_, started, _) = run(
        &addr,
        Some(&root),
        &[
            "--json",
            "operator",
            "rekey",
            "--new-shares",
            "2",
            "--new-threshold",
            "2",
        ],
    );
    let other = json_of(&started)["nonce"].as_str().unwrap().to_owned();
    let (code, _, err) = run_with_stdin(
        &addr,
        Some(&root),
        &[
            "operator", "rekey", "--nonce", &other, "--digest", &digest, "--share", "-",
        ],
        &new_shares[0],
    );
    assert_eq!(code, 1);
    assert!(err.contains("digest"), "{err}");
    let (code, _, err) = run(
        &addr,
        Some(&root),
        &["operator", "rekey", "--nonce", &other, "--cancel"],
    );
    assert_eq!(code, 0, "{err}");

    // generate-root with no token anywhere: the initiator keeps its key in a file, the holders
    // give the new shares, the initiator decrypts.
    let key_file = tmp.path().join("gen-root.key");
    let (code, started, err) = run(
        &addr,
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--identity-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let nonce = json_of(&started)["nonce"].as_str().unwrap().to_owned();
    let mut done = serde_json::Value::Null;
    for share in &new_shares[1..] {
        let args = [
            "--json",
            "operator",
            "generate-root",
            "--nonce",
            &nonce,
            "--share",
            "-",
        ];
        let (code, answer, err) = run_with_stdin(&addr, None, &args, share);
        assert_eq!(code, 0, "{err}");
        assert!(!answer.contains("kvt_"));
        done = json_of(&answer);
    }
    let encrypted = tmp.path().join("token.age");
    std::fs::write(&encrypted, done["encrypted_token"].as_str().unwrap()).unwrap();
    let (code, token, err) = run(
        &addr,
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--decrypt",
            encrypted.to_str().unwrap(),
            "--identity-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let token = json_of(&token)["token"].as_str().unwrap().to_owned();
    let (code, _, err) = run(&addr, Some(&token), &["token", "list"]);
    assert_eq!(code, 0, "the generated token works: {err}");

    // Only the new shares unseal.
    let (code, _, err) = run(&addr, Some(&token), &["seal"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_with_stdin(&addr, None, &["unseal", "--share", "-"], &shares[0]);
    assert_eq!(code, 1);
    assert!(err.contains("another set of shares"), "{err}");
    for share in &new_shares[..2] {
        let (code, _, err) = run_with_stdin(&addr, None, &["unseal", "--share", "-"], share);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(get(&addr, "/v1/sys/health").0, 200);
}
