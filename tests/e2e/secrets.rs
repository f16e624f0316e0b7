//! No secret in the server's logs, the audit export, error output or the data directory.

use crate::support::{init_vault, json_of, run, serve_logged, shares_of};

/// Every workflow at trace level; then the logs, the audit export, every error body and every
/// byte of the data directory are searched for every secret used: none may appear.
#[test]
fn nothing_secret_reaches_logs_exports_errors_or_disk() {
    use secrecy::ExposeSecret;
    use vault_core::apikey::{ApiKey, Prefix};

    let tmp = tempfile::tempdir().unwrap();
    let (data, init) = init_vault(
        tmp.path(),
        &["--shares", "3", "--threshold", "2", "--insecure-kdf"],
    );
    let root = init["root_token"].as_str().unwrap().to_owned();
    let shares = shares_of(&init);
    let mut secrets: Vec<String> = shares.clone();
    secrets.push(root.clone());

    let (server, log) = serve_logged(&["--data-dir", data.to_str().unwrap()]);
    let addr = server.1.clone();
    let mut errors = String::new();
    let mut call = |token: Option<&str>, args: &[&str]| {
        let (code, stdout, stderr) = run(&addr, token, args);
        errors.push_str(&stderr);
        (code, stdout)
    };
    // A wrong share, then the right ones.
    let wrong = shares[0]
        .replacen("kvs1_", "kvs1_f", 1)
        .chars()
        .take(shares[0].len())
        .collect::<String>();
    call(None, &["unseal", "--share", &wrong]);
    secrets.push(wrong.clone());
    for share in &shares[..2] {
        call(None, &["unseal", "--share", share]);
    }
    let root = Some(root.as_str());
    let (_, created) = call(
        root,
        &[
            "--json",
            "key",
            "create",
            "--owner",
            "leak-test",
            "--recoverable",
            "--scope",
            "a",
        ],
    );
    let created = json_of(&created);
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["key_id"].as_str().unwrap().to_owned();
    secrets.push(key.clone());
    call(root, &["key", "verify", &key]);
    call(root, &["key", "verify", &format!("{key}x")]);
    call(root, &["key", "verify", &key.replacen('A', "B", 1)]);
    let (_, rotated) = call(root, &["--json", "key", "rotate", &id, "--grace", "60"]);
    let rotated = json_of(&rotated)["key"].as_str().unwrap().to_owned();
    secrets.push(rotated.clone());
    call(root, &["key", "verify", &key]);
    call(root, &["key", "reveal", &id]);
    // Imported keys, by text and by hash: neither text, nor hash, nor raw hash may appear.
    let imported = "sk_live_leak_test_imported_9a8b7c6d";
    let hashed = "legacy_leak_test_hash_only_1f2e3d4c";
    let hash = {
        use sha2::Digest;
        sha2::Sha256::digest(hashed.as_bytes())
    };
    let import_file = tmp.path().join("import.jsonl");
    std::fs::write(
        &import_file,
        format!(
            "{{\"key\": \"{imported}\", \"owner\": \"leak-test\"}}\n\
             {{\"sha256\": \"{}\", \"owner\": \"leak-test\"}}\n",
            hex::encode(hash)
        ),
    )
    .unwrap();
    call(root, &["key", "import", import_file.to_str().unwrap()]);
    call(root, &["key", "import", import_file.to_str().unwrap()]);
    call(root, &["key", "verify", imported]);
    call(root, &["key", "verify", hashed]);
    call(root, &["key", "verify", &format!("{imported}x")]);
    std::fs::remove_file(&import_file).unwrap();
    secrets.extend([imported.to_owned(), hashed.to_owned(), hex::encode(hash)]);
    let raw_hash = hash.to_vec();
    let (_, token) = call(root, &["--json", "token", "create", "--role", "manager"]);
    let token = json_of(&token)["token"].as_str().unwrap().to_owned();
    secrets.push(token.clone());
    call(Some(&token), &["key", "list"]);
    call(Some(&token), &["token", "list"]);
    call(Some(&format!("{token}0")), &["key", "list"]);
    call(Some(&key), &["key", "list"]);
    let key_file = tmp.path().join("gen-root.key");
    let (_, started) = call(
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--identity-file",
            key_file.to_str().unwrap(),
        ],
    );
    let nonce = json_of(&started)["nonce"].as_str().unwrap().to_owned();
    call(
        None,
        &[
            "operator",
            "generate-root",
            "--nonce",
            &nonce,
            "--share",
            &shares[1],
        ],
    );
    let (_, done) = call(
        None,
        &[
            "--json",
            "operator",
            "generate-root",
            "--nonce",
            &nonce,
            "--share",
            &shares[2],
        ],
    );
    let encrypted = tmp.path().join("token.age");
    std::fs::write(
        &encrypted,
        json_of(&done)["encrypted_token"].as_str().unwrap(),
    )
    .unwrap();
    let (_, generated) = call(
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
    let generated = json_of(&generated)["token"]
        .as_str()
        .expect("generate-root gave a token")
        .to_owned();
    secrets.push(generated);
    let identity = std::fs::read_to_string(&key_file).unwrap();
    secrets.push(identity.trim().to_owned());
    let export = tmp.path().join("audit.jsonl");
    call(root, &["audit", "export", "-o", export.to_str().unwrap()]);
    call(root, &["seal"]);
    drop(server);

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        (
            "server log".into(),
            log.lock().unwrap().clone().into_bytes(),
        ),
        ("error output".into(), errors.into_bytes()),
        ("audit export".into(), std::fs::read(&export).unwrap()),
    ];
    assert!(
        haystacks[0].1.len() > 1000,
        "the trace log is suspiciously short"
    );
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    // Every secret as text (its distinctive middle), and API-key and token secrets as raw bytes.
    let mut needles: Vec<(String, Vec<u8>)> = secrets
        .iter()
        .map(|s| {
            (
                s.chars().take(12).collect::<String>() + "…",
                s.as_bytes()[5..s.len() - 8].to_vec(),
            )
        })
        .collect();
    for s in &secrets {
        for prefix in [Prefix::default(), Prefix::TOKEN] {
            if let Ok(k) = ApiKey::parse(s, &prefix) {
                needles.push((
                    format!("raw secret of {}…", &s[..12]),
                    k.secret().expose_bytes().to_vec(),
                ));
                assert_eq!(k.expose_secret_text().expose_secret(), s);
            }
        }
    }
    needles.push(("raw SHA-256 of an imported key".into(), raw_hash));
    // One pass per haystack, looking up each byte before comparing (the data directory holds
    // megabytes of reserve zeros).
    let mut starts = [false; 256];
    for (_, needle) in &needles {
        starts[usize::from(needle[0])] = true;
    }
    for (where_, hay) in &haystacks {
        for i in (0..hay.len()).filter(|&i| starts[usize::from(hay[i])]) {
            for (what, needle) in &needles {
                assert!(!hay[i..].starts_with(needle), "{what} found in {where_}");
            }
        }
    }
}
