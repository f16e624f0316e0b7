//! What the CLI answers to mistakes, its help, its global flags, and a refused token.

use crate::support::{init_passphrase_vault, json_of, keyvault, run, serve_unsealed, write_secret};

#[test]
fn bad_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let short = write_secret(tmp.path(), "short", "short\n");
    for args in [
        vec![
            "init",
            "--insecure-kdf",
            "--passphrase-file",
            short.to_str().unwrap(),
        ],
        vec!["init", "--shares", "3", "--threshold", "4"],
        vec![
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--prefix",
            "BAD",
        ],
        vec!["serve", "--listen", "0.0.0.0:0"],
        vec!["serve"],
    ] {
        let out = keyvault()
            .args(&args)
            .arg("--data-dir")
            .arg(tmp.path().join("d"))
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Wrong flags: clap's message with its tips and usage (pinned exactly in tests/cmd), exit 1.
    for args in [vec!["init", "--bogus"], vec!["frobnicate"]] {
        let out = keyvault().args(&args).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains("Usage: keyvault"),
            "{args:?}: {err}"
        );
    }
    // A missing required flag is named.
    let out = keyvault().arg("serve").output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--data-dir"), "{err}");
    // Every command's help renders.
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["serve"],
        &["status"],
        &["unseal"],
        &["seal"],
        &["key"],
        &["key", "create"],
        &["key", "list"],
        &["key", "show"],
        &["key", "update"],
        &["key", "rotate"],
        &["key", "revoke"],
        &["key", "reveal"],
        &["key", "verify"],
        &["key", "usage"],
        &["token"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["audit"],
        &["audit", "export"],
        &["audit", "verify"],
        &["audit", "tail"],
        &["audit", "archive"],
        &["operator"],
        &["operator", "rotate"],
        &["operator", "rewrap"],
        &["operator", "rotate-audit-key"],
        &["operator", "rekey"],
        &["operator", "generate-root"],
        &["operator", "backup"],
        &["operator", "restore"],
        &["operator", "usage-rebuild"],
        &["witness"],
        &["witness", "serve"],
        &["witness", "key"],
        &["completions"],
    ];
    for args in commands
        .iter()
        .map(|c| [c.to_vec(), vec!["--help"]].concat())
    {
        let out = keyvault().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8(out.stdout).unwrap().contains("Usage"));
    }
}

/// The CLI's answers to common mistakes, pinned as exact text in `tests/cmd/*.toml` (trycmd):
/// a mistyped command and flag, a bad role, a share or a token typed where it does not belong.
#[test]
fn cli_mistakes_are_answered_with_clap_tips_and_no_secret() {
    trycmd::TestCases::new()
        .register_bin(
            "keyvault",
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_keyvault")),
        )
        .env("KEYVAULT_LOG", "warn")
        .case("tests/cmd/*.toml");
}

/// `--addr`, `--token-file` and `--json` work before the command as after it.
#[test]
fn the_global_flags_work_in_any_position() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let token_file = write_secret(
        tmp.path(),
        "token",
        &format!("{}\n", init["root_token"].as_str().unwrap()),
    );
    let server = serve_unsealed(&data, &pass);
    let addr = format!("http://{}", server.1);
    let token_file = token_file.to_str().unwrap();
    for args in [
        vec![
            "--addr",
            &addr,
            "--token-file",
            token_file,
            "--json",
            "token",
            "list",
        ],
        vec![
            "token",
            "list",
            "--addr",
            &addr,
            "--json",
            "--token-file",
            token_file,
        ],
        vec![
            "--json",
            "token",
            "--addr",
            &addr,
            "list",
            "--token-file",
            token_file,
        ],
    ] {
        let out = keyvault()
            .env_remove("KEYVAULT_ADDR")
            .env_remove("KEYVAULT_TOKEN")
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json_of(&stdout)["tokens"][0]["role"], "admin", "{args:?}");
    }
    let out = keyvault()
        .env_remove("KEYVAULT_ADDR")
        .args(["--addr", &addr, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// An expired token is answered as exactly as any refused token, and says what to do.
#[test]
fn an_expired_token_is_refused_with_a_pinned_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let server = serve_unsealed(&data, &pass);
    let (code, out, err) = run(
        &server.1,
        Some(&root),
        &[
            "--json", "token", "create", "--role", "verifier", "--ttl", "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let token = json_of(&out)["token"].as_str().unwrap().to_owned();
    // No injectable clock in the server yet: the token's one second passes for real.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, out, err) = run(&server.1, Some(&token), &["key", "verify", "pvk_x"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "error: missing or invalid vault token (set KEYVAULT_TOKEN or pass --token-file with a valid vault token)\n"
    );
    let (code, out, _) = run(&server.1, Some(&root), &["token", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.contains("verifier") && l.contains("expired")),
        "{out}"
    );
}
