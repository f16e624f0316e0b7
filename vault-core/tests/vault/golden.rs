//! Format golden tests: a vault made by each format version (committed under
//! `testdata/golden-v1/` to `testdata/golden-v5/`) must keep opening and unsealing in every
//! later version, and its audit key must rotate with the key printed at its init still
//! verifying its exports. The format-4 fixture's audit key was rotated once when it was made.
//! From format 5 on, a backup of the fixture (`testdata/golden-vN.kvbackup`) must restore too.
//!
//! The fixtures were made by `make_golden_fixture` (and `make_golden_backup_fixture`) below (run with `--ignored` and
//! `KEYVAULT_WRITE_GOLDEN=1`, which writes the fixture of the current format version if it is
//! missing); never regenerate one for a format change: add a new fixture beside it and keep the
//! old ones passing.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use vault_core::apikey::{KeyId, Prefix};
use vault_core::kdf::Passphrase;
use vault_core::keys::{
    KeyFilter, KeyInfo, KeyStatus, NewKey, RateLimit, RawMeta, VerifyCode, VerifyRequest,
};
use vault_core::tokens::{Role, TokenInfo};
use vault_core::{RecordTree, Vault};

use crate::common::{ctx, passphrase_method};

/// The passphrase of every fixture (the name says where it was first used).
const GOLDEN_PASSPHRASE: &str = "golden fixture passphrase v1";

fn fixture(version: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/golden-v{version}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn version_1_vault_opens_and_unseals() {
    opens_and_unseals(1);
}

#[test]
fn version_2_vault_opens_and_unseals() {
    opens_and_unseals(2);
}

#[test]
fn version_3_vault_opens_and_unseals() {
    opens_and_unseals(3);
}

#[test]
fn version_4_vault_opens_and_unseals() {
    opens_and_unseals(4);
}

#[test]
fn version_5_vault_opens_and_unseals() {
    opens_and_unseals(5);
}

/// A backup written by format 5 (the audit log's bookkeeping in the store's `Meta` space)
/// restores into the current layout with its audit log whole.
#[test]
fn version_5_backup_restores_with_its_audit_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restored");
    let file = std::fs::File::open(backup_fixture(5)).unwrap();
    let report = Vault::restore(std::io::BufReader::new(file), &dir, |_| {}).unwrap();
    assert_eq!(report.backup.vault_format, 5);
    assert!(report.audit_entries >= 5, "{report:?}");
    assert!(report.checkpoint_size.is_some());
    checks_out(&dir, 5);
}

fn opens_and_unseals(version: u16) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("golden");
    copy_dir(&fixture(version), &dir);
    checks_out(&dir, version);
}

/// Opens, unseals and reads the golden vault in `dir`, made by format `version`, and rotates
/// its audit key.
fn checks_out(dir: &Path, version: u16) {
    let vault = Vault::open(dir).unwrap();
    assert!(vault.is_sealed());
    assert_eq!(vault.prefix().as_str(), "gold");
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(GOLDEN_PASSPHRASE))
        .unwrap();
    assert_eq!(
        vault
            .danger()
            .get_record(RecordTree::Keys, b"record-term-1")
            .unwrap()
            .unwrap()
            .as_slice(),
        b"written under term 1"
    );
    assert_eq!(
        vault
            .danger()
            .get_record(RecordTree::Tokens, b"record-term-2")
            .unwrap()
            .unwrap()
            .as_slice(),
        b"written under term 2"
    );
    assert_eq!(
        vault
            .danger()
            .record_term(RecordTree::Tokens, b"record-term-2")
            .unwrap(),
        Some(2)
    );
    // Its audit log (written by that format) still verifies, with the key printed at its init.
    let keys = vault.audit_public_keys().unwrap();
    assert_eq!(keys.len(), if version >= 4 { 2 } else { 1 });
    let verifier = vault_core::audit::note::NoteVerifier::parse(&keys[0]).unwrap();
    let export = |vault: &Vault| {
        let mut export = Vec::new();
        vault
            .export_audit(
                &ctx(),
                &Default::default(),
                vault_core::audit::export::ExportFormat::Jsonl,
                &mut export,
            )
            .unwrap();
        export
    };
    let report = vault_core::audit::export::verify_export(
        export(&vault).as_slice(),
        &verifier,
        None,
        |_| {},
    )
    .unwrap();
    assert!(report.entries >= 5, "{report}");
    assert_eq!(report.rotations.len(), keys.len() - 1);
    // Its audit key rotates (again), and the key printed at its init follows.
    let rotation = vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    assert_eq!(rotation.generation as usize, keys.len() + 1);
    let report = vault_core::audit::export::verify_export(
        export(&vault).as_slice(),
        &verifier,
        None,
        |_| {},
    )
    .unwrap();
    assert_eq!(report.rotations.len(), keys.len());
    // And it keeps working: a new record goes under the newest term.
    vault
        .danger()
        .put_record(&ctx(), RecordTree::Keys, b"later", b"x")
        .unwrap();
    assert_eq!(
        vault
            .danger()
            .record_term(RecordTree::Keys, b"later")
            .unwrap(),
        Some(2)
    );
}

#[test]
#[ignore = "writes the committed fixture; run once per new format version"]
fn make_golden_fixture() {
    if std::env::var_os("KEYVAULT_WRITE_GOLDEN").is_none() {
        return;
    }
    let dir = fixture(vault_core::FORMAT_VERSION);
    assert!(!dir.exists(), "the fixture exists: never overwrite it");
    let prefix = Prefix::new("gold").unwrap();
    let (vault, _) = Vault::init(&dir, &passphrase_method(GOLDEN_PASSPHRASE), &prefix).unwrap();
    vault
        .danger()
        .put_record(
            &ctx(),
            RecordTree::Keys,
            b"record-term-1",
            b"written under term 1",
        )
        .unwrap();
    vault.rotate(&ctx()).unwrap();
    vault
        .danger()
        .put_record(
            &ctx(),
            RecordTree::Tokens,
            b"record-term-2",
            b"written under term 2",
        )
        .unwrap();
    // A replayable entry (from format 3 on, its record is marked so).
    let refused = vault
        .verify(&ctx(), VerifyRequest::new("not a key"))
        .unwrap();
    assert!(!refused.valid);
    // From format 4 on: a rotated audit key (two generations in the keyring).
    vault.rotate_audit_key(&ctx(), |_, _| {}).unwrap();
    drop(vault);
    std::fs::remove_file(dir.join("lock")).unwrap();
    // The disk reserve is megabytes of nothing; a vault makes it again when it opens.
    let _ = std::fs::remove_file(dir.join("reserve"));
}

// ---------------------------------------------------------------------------------------------
// Typed records: `testdata/golden-v4-records/`, with `testdata/golden-v4-records.json`.

/// An expiry that stays in the future for the fixture's whole life: 2100-01-01T00:00:00Z.
const FAR_EXPIRY: u64 = 4_102_444_800;
/// A rotation grace and a token lifetime that outlive the fixture: a hundred years.
const CENTURY: u64 = 100 * 365 * 24 * 3600;

fn records_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-v4-records")
}

/// What the generator knew and the vault does not say back: the key and token texts, and the
/// times it stamped on each record (`KeyInfo` and `TokenInfo` as the API showed them then).
fn records_known() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-v4-records.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn known_str<'a>(known: &'a Value, pointer: &str) -> &'a str {
    known
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer}"))
}

fn known_time(known: &Value, pointer: &str) -> Option<u64> {
    known.pointer(pointer).and_then(Value::as_u64)
}

fn text_of(key: &vault_core::apikey::ApiKey) -> String {
    key.expose_secret_text().expose_secret().to_owned()
}

/// The key every expectation starts from: the fixture's `label` key, active, with no option
/// set, and the times the generator saw.
fn expected_key(known: &Value, label: &str) -> KeyInfo {
    let at = |field: &str| known_time(known, &format!("/keys/{label}/info/{field}"));
    KeyInfo {
        key_id: KeyId::parse_hex(known_str(known, &format!("/keys/{label}/info/key_id"))).unwrap(),
        owner: "alice".into(),
        name: label.into(),
        scopes: vec!["photos:read".into(), "photos:write".into()],
        meta: serde_json::from_value(json!({"plan": "gold", "seats": 3})).unwrap(),
        created_at: at("created_at").unwrap(),
        updated_at: at("updated_at").unwrap(),
        expires_at: None,
        enabled: true,
        revoked_at: None,
        ratelimit: None,
        credits: None,
        refill: None,
        refilled_at: None,
        imported: false,
        recoverable: false,
        previous_secret_expires_at: None,
        status: KeyStatus::Active,
    }
}

fn expected_keys(known: &Value) -> Vec<KeyInfo> {
    let at = |label: &str, field: &str| known_time(known, &format!("/keys/{label}/info/{field}"));
    let mut keys = vec![
        expected_key(known, "active"),
        KeyInfo {
            expires_at: Some(FAR_EXPIRY),
            ..expected_key(known, "expiring")
        },
        KeyInfo {
            credits: Some(1000),
            ..expected_key(known, "credits")
        },
        KeyInfo {
            ratelimit: Some(RateLimit {
                limit: 10,
                period_seconds: 60,
            }),
            ..expected_key(known, "ratelimited")
        },
        KeyInfo {
            enabled: false,
            status: KeyStatus::Disabled,
            ..expected_key(known, "disabled")
        },
        KeyInfo {
            revoked_at: at("revoked", "revoked_at"),
            status: KeyStatus::Revoked,
            ..expected_key(known, "revoked")
        },
        KeyInfo {
            previous_secret_expires_at: at("rotated", "previous_secret_expires_at"),
            ..expected_key(known, "rotated")
        },
        KeyInfo {
            owner: "bob".into(),
            recoverable: true,
            ..expected_key(known, "recoverable")
        },
    ];
    keys.sort_by_key(|k| k.key_id.to_string());
    keys
}

fn expected_token(known: &Value, label: &str, role: Role) -> TokenInfo {
    let at = |field: &str| known_time(known, &format!("/tokens/{label}/info/{field}"));
    let id = |label: &str| {
        KeyId::parse_hex(known_str(known, &format!("/tokens/{label}/info/token_id"))).unwrap()
    };
    TokenInfo {
        token_id: id(label),
        role,
        name: label.into(),
        created_at: at("created_at").unwrap(),
        expires_at: at("expires_at"),
        revoked_at: at("revoked_at"),
        created_by: (label != "root").then(|| id("root")),
    }
}

/// Every token of the fixture with its role.
const TOKENS: [(&str, Role); 7] = [
    ("root", Role::Admin),
    ("operator", Role::Operator),
    ("manager", Role::Manager),
    ("auditor", Role::Auditor),
    ("verifier", Role::Verifier),
    ("expiring", Role::Auditor),
    ("revoked", Role::Verifier),
];

/// A token record's plaintext read by hand, as ARCHITECTURE.md lays it out (bincode with
/// fixed-width little-endian integers), so that the test pins the bytes and not only what the
/// vault's own decoder makes of them.
struct TokenPlaintext {
    role: u32,
    name: String,
    created_at: u64,
    expires_at: Option<u64>,
    revoked_at: Option<u64>,
    created_by: Option<String>,
    digest_term: u32,
}

impl TokenPlaintext {
    fn read(bytes: &[u8]) -> TokenPlaintext {
        let mut rest = bytes;
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head.to_vec()
        };
        let u32_le = |b: Vec<u8>| u32::from_le_bytes(b.try_into().unwrap());
        let u64_le = |b: Vec<u8>| u64::from_le_bytes(b.try_into().unwrap());
        let role = u32_le(take(4));
        let len = u64_le(take(8)) as usize;
        let name = String::from_utf8(take(len)).unwrap();
        let created_at = u64_le(take(8));
        let expires_at = (take(1) == [1]).then(|| u64_le(take(8)));
        let revoked_at = (take(1) == [1]).then(|| u64_le(take(8)));
        let created_by = (take(1) == [1]).then(|| {
            let len = u64_le(take(8)) as usize;
            String::from_utf8(take(len)).unwrap()
        });
        let digest_term = u32_le(take(4));
        let mac = take(32);
        assert_eq!(mac.len(), 32);
        assert!(rest.is_empty(), "{} bytes after the digest", rest.len());
        TokenPlaintext {
            role,
            name,
            created_at,
            expires_at,
            revoked_at,
            created_by,
            digest_term,
        }
    }
}

#[test]
fn version_4_key_and_token_records_decode_field_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("golden");
    copy_dir(&records_fixture(), &dir);
    let known = records_known();
    let vault = Vault::open(&dir).unwrap();
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new(GOLDEN_PASSPHRASE))
        .unwrap();

    // Keys: every field of every record, by id and listed (before any verify spends a credit).
    let expected = expected_keys(&known);
    for key in &expected {
        assert_eq!(vault.show_key(&key.key_id).unwrap(), *key, "{}", key.name);
    }
    let listed = vault.list_keys(&KeyFilter::default()).unwrap();
    assert_eq!(listed.keys, expected);
    assert_eq!(listed.next, None);
    let bobs = KeyFilter {
        owner: Some("bob".into()),
        ..KeyFilter::default()
    };
    let bobs = vault.list_keys(&bobs).unwrap().keys;
    assert_eq!(
        bobs.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["recoverable"]
    );

    // The secrets: each key's text verifies as its record says.
    let verify = |label: &str| {
        let text = known_str(&known, &format!("/keys/{label}/text"));
        vault.verify(&ctx(), VerifyRequest::new(text)).unwrap()
    };
    let by_name = |name: &str| expected.iter().find(|k| k.name == name).unwrap().clone();
    let active = verify("active");
    assert_eq!(
        (active.code, active.key_id, active.owner.as_deref()),
        (
            VerifyCode::Valid,
            Some(by_name("active").key_id),
            Some("alice")
        )
    );
    assert_eq!(
        active.scopes.as_ref().map(|s| s.to_vec()),
        Some(by_name("active").scopes)
    );
    // The same bytes as serialising the key's meta map, from a record older builds wrote.
    assert_eq!(active.meta, Some(RawMeta::from(&by_name("active").meta)));
    assert_eq!(active.expires_at, None);
    assert_eq!(active.credits_remaining, None);
    assert_eq!(active.ratelimit, None);
    assert_eq!(active.previous_secret, None);
    let expiring = verify("expiring");
    assert_eq!(
        (expiring.code, expiring.expires_at),
        (VerifyCode::Valid, Some(FAR_EXPIRY))
    );
    let credits = verify("credits");
    assert_eq!(
        (credits.code, credits.credits_remaining),
        (VerifyCode::Valid, Some(999))
    );
    let limited = verify("ratelimited");
    assert_eq!(limited.code, VerifyCode::Valid);
    let state = limited.ratelimit.unwrap();
    assert_eq!((state.limit, state.remaining), (10, 9));
    assert_eq!(verify("disabled").code, VerifyCode::Disabled);
    assert_eq!(verify("revoked").code, VerifyCode::Revoked);
    let rotated = verify("rotated");
    assert_eq!(
        (rotated.code, rotated.previous_secret),
        (VerifyCode::Valid, None)
    );
    let previous = vault
        .verify(
            &ctx(),
            VerifyRequest::new(known_str(&known, "/keys/rotated/previous_text")),
        )
        .unwrap();
    assert_eq!(previous.code, VerifyCode::Valid);
    assert_eq!(
        previous.previous_secret.map(|p| p.expires_at),
        by_name("rotated").previous_secret_expires_at
    );
    let recoverable = by_name("recoverable");
    assert_eq!(verify("recoverable").owner.as_deref(), Some("bob"));
    let revealed = vault.reveal_key(&ctx(), &recoverable.key_id).unwrap();
    assert_eq!(
        text_of(&revealed),
        known_str(&known, "/keys/recoverable/text")
    );

    // Tokens: every field of every record, every role, listed and authenticated.
    let mut expected: Vec<TokenInfo> = TOKENS
        .iter()
        .map(|&(label, role)| expected_token(&known, label, role))
        .collect();
    assert!(expected.iter().any(|t| t.expires_at.is_some()));
    assert!(expected.iter().any(|t| t.revoked_at.is_some()));
    expected.sort_by_key(|t| t.token_id.to_string());
    let mut listed = vault.list_tokens().unwrap();
    listed.sort_by_key(|t| t.token_id.to_string());
    assert_eq!(listed, expected);
    for &(label, role) in &TOKENS {
        let text = known_str(&known, &format!("/tokens/{label}/text"));
        let info = expected_token(&known, label, role);
        match vault.authenticate(&ctx(), text) {
            Ok(got) => assert_eq!(got, info, "{label}"),
            Err(e) => {
                assert_eq!(label, "revoked", "{e}");
                assert!(matches!(e, vault_core::Error::Unauthorized));
            }
        }
        // The plaintext, field by field as ARCHITECTURE.md lays it out: the role is its
        // bincode variant index.
        let plain = vault
            .danger()
            .get_record(RecordTree::Tokens, info.token_id.as_bytes())
            .unwrap()
            .unwrap();
        let index = Role::ALL.iter().position(|r| *r == role).unwrap() as u32;
        let decoded = TokenPlaintext::read(&plain);
        assert_eq!(decoded.role, index, "{label}");
        assert_eq!(decoded.name, info.name);
        assert_eq!(decoded.created_at, info.created_at);
        assert_eq!(decoded.expires_at, info.expires_at);
        assert_eq!(decoded.revoked_at, info.revoked_at);
        assert_eq!(decoded.created_by, info.created_by.map(|id| id.to_string()));
        // The root token was made before the keyring's rotation, the others after.
        assert_eq!(
            decoded.digest_term,
            if label == "root" { 1 } else { 2 },
            "{label}"
        );
    }
    assert_eq!(
        Role::ALL.map(|r| r.as_str()),
        ["verifier", "manager", "auditor", "operator", "admin"],
        "the role bytes 0 to 4, as ARCHITECTURE.md lists them"
    );
}

#[test]
#[ignore = "writes the committed typed-records fixture; run once per new format version"]
fn make_golden_records_fixture() {
    if std::env::var_os("KEYVAULT_WRITE_GOLDEN").is_none() {
        return;
    }
    let dir = records_fixture();
    assert!(!dir.exists(), "the fixture exists: never overwrite it");
    let prefix = Prefix::new("gold").unwrap();
    let (vault, issued) =
        Vault::init(&dir, &passphrase_method(GOLDEN_PASSPHRASE), &prefix).unwrap();
    let root_text = text_of(&issued.root_token.unwrap());
    let root = vault.authenticate(&ctx(), &root_text).unwrap();

    let new_key = |name: &str| NewKey {
        name: name.into(),
        scopes: vec!["photos:read".into(), "photos:write".into()],
        meta: serde_json::from_value(json!({"plan": "gold", "seats": 3})).unwrap(),
        ..NewKey::new("alice")
    };
    let mut made = Vec::new();
    made.push((
        "active",
        vault.create_key(&ctx(), new_key("active")).unwrap(),
    ));
    let expiring = NewKey {
        expires_at: Some(FAR_EXPIRY),
        ..new_key("expiring")
    };
    made.push(("expiring", vault.create_key(&ctx(), expiring).unwrap()));
    let credits = NewKey {
        credits: Some(1000),
        ..new_key("credits")
    };
    made.push(("credits", vault.create_key(&ctx(), credits).unwrap()));
    let limited = NewKey {
        ratelimit: Some(RateLimit {
            limit: 10,
            period_seconds: 60,
        }),
        ..new_key("ratelimited")
    };
    made.push(("ratelimited", vault.create_key(&ctx(), limited).unwrap()));
    let disabled = NewKey {
        disabled: true,
        ..new_key("disabled")
    };
    made.push(("disabled", vault.create_key(&ctx(), disabled).unwrap()));
    let revoked = vault.create_key(&ctx(), new_key("revoked")).unwrap();
    vault.revoke_key(&ctx(), &revoked.key.id()).unwrap();
    made.push(("revoked", revoked));
    let recoverable = NewKey {
        owner: "bob".into(),
        recoverable: true,
        ..new_key("recoverable")
    };
    made.push((
        "recoverable",
        vault.create_key(&ctx(), recoverable).unwrap(),
    ));
    // Records under two keyring terms: the rest are written after a rotation.
    vault.rotate(&ctx()).unwrap();
    let first = vault.create_key(&ctx(), new_key("rotated")).unwrap();
    let rotated = vault.rotate_key(&ctx(), &first.key.id(), CENTURY).unwrap();
    let mut keys = serde_json::Map::new();
    keys.insert(
        "rotated".into(),
        json!({
            "text": text_of(&rotated.key),
            "previous_text": text_of(&first.key),
            "info": vault.show_key(&rotated.key.id()).unwrap(),
        }),
    );
    for (label, issued) in made {
        let info = vault.show_key(&issued.key.id()).unwrap();
        keys.insert(
            label.into(),
            json!({"text": text_of(&issued.key), "info": info}),
        );
    }

    let mut tokens = serde_json::Map::new();
    tokens.insert("root".into(), json!({"text": root_text, "info": root}));
    for (label, role, ttl) in [
        ("operator", Role::Operator, None),
        ("manager", Role::Manager, None),
        ("auditor", Role::Auditor, None),
        ("verifier", Role::Verifier, None),
        ("expiring", Role::Auditor, Some(CENTURY)),
        ("revoked", Role::Verifier, None),
    ] {
        let issued = vault
            .create_token(&ctx(), Some(&root), role, label, ttl)
            .unwrap();
        let info = if label == "revoked" {
            vault.revoke_token(&ctx(), &issued.info.token_id).unwrap()
        } else {
            issued.info
        };
        tokens.insert(
            label.into(),
            json!({"text": text_of(&issued.token), "info": info}),
        );
    }
    let known = json!({
        "about": "The key and token texts of testdata/golden-v4-records and the times its \
                  records were stamped with (make_golden_records_fixture in tests/vault/golden.rs)",
        "keys": keys,
        "tokens": tokens,
    });
    drop(vault);
    std::fs::remove_file(dir.join("lock")).unwrap();
    let _ = std::fs::remove_file(dir.join("reserve"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-v4-records.json");
    std::fs::write(path, serde_json::to_string_pretty(&known).unwrap() + "\n").unwrap();
}

fn backup_fixture(version: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/golden-v{version}.kvbackup"))
}

#[test]
#[ignore = "writes the committed backup fixture; run once per new format version"]
fn make_golden_backup_fixture() {
    if std::env::var_os("KEYVAULT_WRITE_GOLDEN").is_none() {
        return;
    }
    let version = vault_core::FORMAT_VERSION;
    let path = backup_fixture(version);
    assert!(!path.exists(), "the fixture exists: never overwrite it");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("golden");
    copy_dir(&fixture(version), &dir);
    let vault = Vault::open(&dir).unwrap();
    let mut out = Vec::new();
    vault.backup(&ctx(), &mut out, |_| {}).unwrap();
    std::fs::write(&path, out).unwrap();
}
