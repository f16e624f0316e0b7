//! `key usage`, `signals` and `operator usage-rebuild`.

use crate::support::{init_passphrase_vault, json_of, keyvault, run, serve_unsealed, succeed};

#[test]
fn key_usage_charts_a_keys_days_and_signals_and_the_rebuild_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pass, init) = init_passphrase_vault(tmp.path());
    let root = init["root_token"].as_str().unwrap().to_owned();
    let root = Some(root.as_str());
    let server = serve_unsealed(&data, &pass);
    let addr = server.1.clone();
    let (_, stdout, _) = run(
        &addr,
        root,
        &["--json", "key", "create", "--owner", "cust-7"],
    );
    let created = json_of(&stdout);
    let (id, old) = (
        created["key_id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let (_, stdout, _) = run(&addr, root, &["--json", "key", "rotate", &id]);
    let new = json_of(&stdout)["key"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(run(&addr, root, &["key", "verify", &new]).0, 0);
    }
    assert_eq!(run(&addr, root, &["key", "verify", &old]).0, 1);

    // The figures are folded a moment after the answers: wait for them.
    let usage = |addr: &str| {
        for _ in 0..100 {
            let (code, stdout, err) = run(addr, root, &["--json", "key", "usage", &id]);
            assert_eq!(code, 0, "{err}");
            let v = json_of(&stdout);
            if v["usage"]["totals"]["total"] == 4 {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the usage figures never reached 4 verifies");
    };
    let v = usage(&addr);
    assert_eq!(v["usage"]["totals"]["counts"]["VALID"], 3);
    assert_eq!(v["usage"]["totals"]["counts"]["NOT_FOUND"], 1);
    assert_eq!(v["usage"]["buckets"].as_array().unwrap().len(), 14);
    assert_eq!(v["signals"][0]["kind"], "wrong_secret");

    let (code, stdout, _) = run(&addr, root, &["key", "usage", &id, "--days", "3"]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!(
            "key {id} of cust-7: 4 verifies in 3 days (3 valid)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains('█') && stdout.contains("(not_found 1)"),
        "{stdout}"
    );
    assert!(stdout.contains("wrong_secret x1"), "{stdout}");
    assert!(!stdout.contains(&old[4..30]) && !stdout.contains(&new[4..30]));
    // The open signals of every key, and of one owner's.
    let (code, stdout, err) = run(&addr, root, &["signals"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains(" open signal")
            && stdout.contains(&format!("key {id} of cust-7: wrong_secret x1")),
        "{stdout}"
    );
    let (code, stdout, _) = run(&addr, root, &["--json", "signals", "--owner", "cust-7"]);
    assert_eq!(code, 0);
    assert_eq!(json_of(&stdout)["signals"][0]["kind"], "wrong_secret");
    let (code, stdout, _) = run(&addr, root, &["signals", "--owner", "nobody"]);
    assert_eq!((code, stdout.trim()), (0, "no open signals"));
    let (code, _, err) = run(&addr, root, &["key", "usage", &id, "--days", "0"]);
    assert_ne!(code, 0, "{err}");
    let (code, _, err) = run(&addr, root, &["key", "usage", "not-an-id"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Stopped (SIGKILL: nothing stored at close), rebuilt from the log, served again: the same.
    drop(server);
    let stdout = succeed(
        keyvault()
            .args(["--json", "operator", "usage-rebuild", "--data-dir"])
            .arg(&data),
    );
    let rebuilt = json_of(&stdout);
    assert!(rebuilt["entries"].as_u64().unwrap() >= 6, "{rebuilt}");
    let server = serve_unsealed(&data, &pass);
    let again = usage(&server.1);
    assert_eq!(again["usage"]["totals"], v["usage"]["totals"]);
    assert_eq!(again["signals"], v["signals"]);
}
