//! Seal state: unseal by passphrase and by shares, seal, rotate, rekey, bad input.

use std::os::unix::fs::PermissionsExt;

use vault_core::apikey::Prefix;
use vault_core::kdf::{KdfParams, Passphrase};
use vault_core::shamir::ShareError;
use vault_core::{Credential, Error, RecordTree, UnsealMethod, Vault};

use crate::common::*;

#[test]
fn passphrase_lifecycle() {
    let (_tmp, vault) = passphrase_vault();
    assert!(!vault.is_sealed());
    put(&vault, RecordTree::Keys, b"a", b"alpha");
    vault.seal(&ctx()).unwrap();
    assert!(vault.is_sealed());
    assert!(matches!(
        vault.danger().get_record(RecordTree::Keys, b"a"),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        vault
            .danger()
            .put_record(&ctx(), RecordTree::Keys, b"b", b"beta"),
        Err(Error::Sealed)
    ));
    assert!(matches!(vault.rotate(&ctx()), Err(Error::Sealed)));

    let wrong = vault.unseal_passphrase(&ctx(), &Passphrase::new("not the passphrase at all"));
    assert!(matches!(wrong, Err(Error::WrongCredential)), "{wrong:?}");
    assert!(vault.is_sealed());
    let share = vault.submit_share(&ctx(), shares_vault(2, 2).2.remove(0));
    assert!(matches!(share, Err(Error::WrongMethod { .. })), "{share:?}");

    unseal_with_passphrase(&vault);
    assert_eq!(record(&vault, RecordTree::Keys, b"a").as_slice(), b"alpha");
    assert_eq!(
        vault
            .danger()
            .get_record(RecordTree::Keys, b"missing")
            .unwrap(),
        None
    );
    // Unseal while unsealed answers at once.
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("anything"))
        .unwrap();
}

#[test]
fn reopen_starts_sealed_and_keeps_records() {
    let (_tmp, vault) = passphrase_vault();
    put(&vault, RecordTree::Tokens, b"t", b"token record");
    let vault = reopen(vault);
    assert!(vault.is_sealed());
    assert!(vault.insecure_kdf());
    unseal_with_passphrase(&vault);
    assert_eq!(
        record(&vault, RecordTree::Tokens, b"t").as_slice(),
        b"token record"
    );
}

#[test]
fn every_threshold_subset_of_shares_unseals() {
    let (_tmp, vault, shares) = shares_vault(3, 5);
    put(&vault, RecordTree::Keys, b"k", b"v");
    let mut subsets = 0;
    for a in 0..5 {
        for b in (a + 1)..5 {
            for c in (b + 1)..5 {
                vault.seal(&ctx()).unwrap();
                let s1 = vault.submit_share(&ctx(), retyped(&shares[a])).unwrap();
                assert_eq!(
                    (s1.sealed, s1.progress, s1.threshold, s1.shares),
                    (true, 1, 3, 5)
                );
                let s2 = vault.submit_share(&ctx(), retyped(&shares[b])).unwrap();
                assert_eq!((s2.sealed, s2.progress), (true, 2));
                let s3 = vault.submit_share(&ctx(), retyped(&shares[c])).unwrap();
                assert_eq!((s3.sealed, s3.progress), (false, 0));
                assert_eq!(record(&vault, RecordTree::Keys, b"k").as_slice(), b"v");
                subsets += 1;
            }
        }
    }
    assert_eq!(subsets, 10);
}

#[test]
fn bad_shares_are_refused_and_the_vault_stays_sealed() {
    let (_tmp, vault, shares) = shares_vault(3, 5);
    let (_tmp2, _other, other_shares) = shares_vault(3, 5);
    vault.seal(&ctx()).unwrap();

    // Another vault's share: refused by name, progress kept.
    vault.submit_share(&ctx(), retyped(&shares[0])).unwrap();
    let e = vault
        .submit_share(&ctx(), retyped(&other_shares[1]))
        .unwrap_err();
    assert!(matches!(e, Error::Share(ShareError::OtherVault)), "{e}");
    // The same share twice.
    let e = vault.submit_share(&ctx(), retyped(&shares[0])).unwrap_err();
    assert!(matches!(e, Error::Share(ShareError::Repeated)), "{e}");
    assert_eq!(vault.seal_status().progress, 1);
    // Too few shares: still sealed.
    vault.submit_share(&ctx(), retyped(&shares[1])).unwrap();
    assert!(vault.is_sealed());
    assert!(matches!(
        vault.danger().get_record(RecordTree::Keys, b"x"),
        Err(Error::Sealed)
    ));
    // Reset needs one of the submitted shares: a share not submitted, another vault's, or one
    // with a submitted index and vault but another value is refused and the progress stays.
    for stranger in [&shares[2], &other_shares[0]] {
        let e = vault.reset_unseal(&retyped(stranger)).unwrap_err();
        assert!(matches!(e, Error::Forbidden(_)), "{e}");
    }
    let e = vault.reset_unseal(&forged_share(&shares[1])).unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e}");
    assert_eq!(vault.seal_status().progress, 2);
    // A submitter's reset forgets them.
    vault.reset_unseal(&retyped(&shares[1])).unwrap();
    assert_eq!(vault.seal_status().progress, 0);
    // With no progress, a reset is a no-op, whoever sends it.
    vault.reset_unseal(&retyped(&shares[2])).unwrap();
    assert_eq!(vault.seal_status().progress, 0);

    // A wrong share (right vault and threshold, wrong value) is found when the threshold is
    // reached: the vault stays sealed and the progress starts over.
    let (_tmp3, path) = dir();
    drop(path);
    let forged = forged_share(&shares[2]);
    vault.submit_share(&ctx(), retyped(&shares[0])).unwrap();
    vault.submit_share(&ctx(), retyped(&shares[1])).unwrap();
    let e = vault.submit_share(&ctx(), forged).unwrap_err();
    assert!(matches!(e, Error::WrongCredential), "{e}");
    assert!(vault.is_sealed());
    assert_eq!(vault.seal_status().progress, 0);

    // A typo is caught at once.
    let text = secrecy::ExposeSecret::expose_secret(&shares[0].expose_text()).to_owned();
    let typo = text.replacen('a', "b", 1).replacen('0', "1", 1);
    assert!(vault_core::shamir::Share::parse(&typo).is_err());
}

/// A share with this vault's id, threshold and index but another value, as a corrupted or
/// malicious share would be.
fn forged_share(share: &vault_core::shamir::Share) -> vault_core::shamir::Share {
    let text = secrecy::ExposeSecret::expose_secret(&share.expose_text()).to_owned();
    let mut bytes: Vec<u8> = (0..(text.len() - 5) / 2)
        .map(|i| u8::from_str_radix(&text[5 + 2 * i..7 + 2 * i], 16).unwrap())
        .collect();
    bytes[20] ^= 0x5a;
    let crc = crc32fast_hash(&bytes[..bytes.len() - 4]);
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&crc.to_be_bytes());
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vault_core::shamir::Share::parse(&format!("kvs1_{hex}")).unwrap()
}

/// CRC-32 (ISO-HDLC), bitwise: a reference independent of the crate's.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn rotate_keeps_old_terms_readable_and_writes_with_the_new_one() {
    let (_tmp, vault) = passphrase_vault();
    put(&vault, RecordTree::Keys, b"old", b"written in term 1");
    assert_eq!(term(&vault, RecordTree::Keys, b"old"), Some(1));
    assert_eq!(vault.rotate(&ctx()).unwrap(), 2);
    put(&vault, RecordTree::Keys, b"new", b"written in term 2");
    assert_eq!(term(&vault, RecordTree::Keys, b"new"), Some(2));
    vault.seal(&ctx()).unwrap();
    unseal_with_passphrase(&vault);
    assert_eq!(
        record(&vault, RecordTree::Keys, b"old").as_slice(),
        b"written in term 1"
    );
    assert_eq!(
        record(&vault, RecordTree::Keys, b"new").as_slice(),
        b"written in term 2"
    );
    assert_eq!(vault.rotate(&ctx()).unwrap(), 3);
    let vault = reopen(vault);
    unseal_with_passphrase(&vault);
    put(&vault, RecordTree::Keys, b"newer", b"3");
    assert_eq!(term(&vault, RecordTree::Keys, b"newer"), Some(3));
    assert_eq!(
        record(&vault, RecordTree::Keys, b"old").as_slice(),
        b"written in term 1"
    );
}

#[test]
fn rekey_passphrase_to_passphrase_to_shares_and_back() {
    let (_tmp, vault) = passphrase_vault();
    put(&vault, RecordTree::Keys, b"r", b"payload");
    let raw_before = vault
        .danger()
        .raw_record(RecordTree::Keys, b"r")
        .unwrap()
        .unwrap();

    // A wrong current passphrase rekeys nothing.
    let e = vault
        .rekey(
            &ctx(),
            Credential::Passphrase(Passphrase::new("wrong wrong wrong")),
            &passphrase_method("second passphrase"),
        )
        .unwrap_err();
    assert!(matches!(e, Error::WrongCredential), "{e}");
    // New passphrase too short.
    let e = vault
        .rekey(
            &ctx(),
            Credential::Passphrase(Passphrase::new(PASSPHRASE)),
            &passphrase_method("short"),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");

    vault
        .rekey(
            &ctx(),
            Credential::Passphrase(Passphrase::new(PASSPHRASE)),
            &passphrase_method("second passphrase"),
        )
        .unwrap();
    vault.seal(&ctx()).unwrap();
    assert!(matches!(
        vault.unseal_passphrase(&ctx(), &Passphrase::new(PASSPHRASE)),
        Err(Error::WrongCredential)
    ));
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("second passphrase"))
        .unwrap();
    assert_eq!(
        record(&vault, RecordTree::Keys, b"r").as_slice(),
        b"payload"
    );

    // Switch to shares, 2 of 3.
    let issued = vault
        .rekey(
            &ctx(),
            Credential::Passphrase(Passphrase::new("second passphrase")),
            &UnsealMethod::Shares {
                threshold: 2,
                shares: 3,
            },
        )
        .unwrap();
    assert_eq!(issued.shares.len(), 3);
    vault.seal(&ctx()).unwrap();
    assert!(matches!(
        vault.unseal_passphrase(&ctx(), &Passphrase::new("second passphrase")),
        Err(Error::WrongMethod { .. })
    ));
    vault
        .submit_share(&ctx(), retyped(&issued.shares[2]))
        .unwrap();
    vault
        .submit_share(&ctx(), retyped(&issued.shares[0]))
        .unwrap();
    assert!(!vault.is_sealed());

    // New shares 3 of 4; the old 2-of-3 shares are refused afterwards.
    let old = issued.shares;
    let issued = vault
        .rekey(
            &ctx(),
            Credential::Shares(vec![retyped(&old[0]), retyped(&old[1])]),
            &UnsealMethod::Shares {
                threshold: 3,
                shares: 4,
            },
        )
        .unwrap();
    vault.seal(&ctx()).unwrap();
    let e = vault.submit_share(&ctx(), retyped(&old[0])).unwrap_err();
    assert!(matches!(e, Error::Share(ShareError::OtherSplit(2))), "{e}");
    for s in &issued.shares[1..] {
        vault.submit_share(&ctx(), retyped(s)).unwrap();
    }
    assert!(!vault.is_sealed());

    // Back to a passphrase; too few shares are refused.
    let e = vault
        .rekey(
            &ctx(),
            Credential::Shares(vec![retyped(&issued.shares[0])]),
            &passphrase_method("third passphrase!"),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    vault
        .rekey(
            &ctx(),
            Credential::Shares(issued.shares[..3].iter().map(retyped).collect()),
            &passphrase_method("third passphrase!"),
        )
        .unwrap();
    let vault = reopen(vault);
    vault
        .unseal_passphrase(&ctx(), &Passphrase::new("third passphrase!"))
        .unwrap();
    assert_eq!(
        record(&vault, RecordTree::Keys, b"r").as_slice(),
        b"payload"
    );
    // No record was rewritten.
    assert_eq!(
        vault
            .danger()
            .raw_record(RecordTree::Keys, b"r")
            .unwrap()
            .unwrap(),
        raw_before
    );
}

#[test]
fn init_refuses_bad_input_and_leaves_nothing_behind() {
    let (_tmp, path) = dir();
    for (method, what) in [
        (passphrase_method("too short"), "passphrase"),
        (
            UnsealMethod::Shares {
                threshold: 1,
                shares: 3,
            },
            "threshold",
        ),
        (
            UnsealMethod::Shares {
                threshold: 4,
                shares: 3,
            },
            "threshold",
        ),
        (
            UnsealMethod::Passphrase {
                passphrase: Passphrase::new(PASSPHRASE),
                params: KdfParams {
                    insecure: false,
                    ..KdfParams::INSECURE_FAST
                },
            },
            "Argon2id",
        ),
    ] {
        let e = Vault::init(&path, &method, &Prefix::default()).unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
        assert!(
            !path.join("store").exists(),
            "a failed init left a store behind"
        );
        assert!(matches!(Vault::open(&path), Err(Error::NotInitialized(_))));
    }
    // 255 of 255 is allowed.
    let (_t, v, shares) = shares_vault(255, 255);
    assert_eq!(shares.len(), 255);
    drop(v);
}

#[test]
fn directories_that_are_not_vaults_are_named() {
    let (_tmp, path) = dir();
    assert!(matches!(Vault::open(&path), Err(Error::NotInitialized(_))));
    std::fs::create_dir_all(&path).unwrap();
    assert!(matches!(Vault::open(&path), Err(Error::NotInitialized(_))));
    std::fs::write(path.join("notes.txt"), "hello").unwrap();
    let e = Vault::open(&path).unwrap_err();
    assert!(
        matches!(e, Error::NotAVault(_)) && e.to_string().contains("not a keyvault"),
        "{e}"
    );
    let e = Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap_err();
    assert!(matches!(e, Error::NotAVault(_)), "{e}");
    assert_eq!(
        std::fs::read_to_string(path.join("notes.txt")).unwrap(),
        "hello"
    );
}

#[test]
fn a_vault_is_opened_by_one_holder_at_a_time_and_init_twice_is_refused() {
    let (_tmp, vault) = passphrase_vault();
    let dir = vault.dir().to_path_buf();
    let e = Vault::open(&dir).unwrap_err();
    assert!(
        matches!(e, Error::InUse(_)) && e.to_string().contains("in use"),
        "{e}"
    );
    let e = Vault::init(&dir, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap_err();
    assert!(matches!(e, Error::AlreadyInitialized(_)), "{e}");
    drop(vault);
    Vault::open(&dir).unwrap();
}

#[test]
fn an_interrupted_init_is_not_a_vault_and_init_can_run_again() {
    let (_tmp, path) = dir();
    // What a crash in the middle of init leaves: a staging store and no `store`.
    std::fs::create_dir_all(path.join("store.init")).unwrap();
    std::fs::write(path.join("store.init").join("junk"), "partial").unwrap();
    assert!(matches!(Vault::open(&path), Err(Error::NotInitialized(_))));
    let (vault, _) =
        Vault::init(&path, &passphrase_method(PASSPHRASE), &Prefix::default()).unwrap();
    assert!(!path.join("store.init").exists());
    drop(vault);
    Vault::open(&path).unwrap();
}

#[test]
fn data_directory_is_0700_and_files_0600() {
    let (_tmp, vault) = passphrase_vault();
    put(&vault, RecordTree::Keys, b"x", b"y");
    let dir = vault.dir().to_path_buf();
    drop(reopen(vault));
    check_modes(&dir);
}

fn check_modes(path: &std::path::Path) {
    let meta = std::fs::metadata(path).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_dir() {
        assert_eq!(mode, 0o700, "{}", path.display());
        for entry in std::fs::read_dir(path).unwrap() {
            check_modes(&entry.unwrap().path());
        }
    } else {
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

#[test]
fn custom_prefix_is_kept() {
    let (_tmp, path) = dir();
    let prefix = Prefix::new("photo").unwrap();
    let (vault, _) = Vault::init(&path, &passphrase_method(PASSPHRASE), &prefix).unwrap();
    assert_eq!(vault.prefix().as_str(), "photo");
    drop(vault);
    assert_eq!(Vault::open(&path).unwrap().prefix().as_str(), "photo");
}

#[test]
fn errors_and_debug_never_show_secrets() {
    let (_tmp, vault, shares) = shares_vault(2, 3);
    let text = secrecy::ExposeSecret::expose_secret(&shares[0].expose_text()).to_owned();
    let rendered = format!(
        "{vault:?} {:?} {:?}",
        shares[0],
        Credential::Passphrase(Passphrase::new(PASSPHRASE))
    );
    assert!(
        !rendered.contains(&text[5..25]),
        "a share leaked into Debug"
    );
    assert!(
        !rendered.contains(PASSPHRASE),
        "the passphrase leaked into Debug"
    );
    vault.seal(&ctx()).unwrap();
    vault.submit_share(&ctx(), retyped(&shares[0])).unwrap();
    let e = vault.submit_share(&ctx(), retyped(&shares[0])).unwrap_err();
    assert!(!format!("{e} {e:?}").contains(&text[5..25]));
}
