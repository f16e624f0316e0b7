//! The usage figures file on disk: unreadable, cut, foreign or legacy figures are refolded or
//! moved, and nothing counts twice.

use super::*;

const USAGE_SYNC: std::time::Duration = std::time::Duration::from_secs(20);

/// Opens the vault in `dir` unsealed, with its figures caught up with its log.
fn reopen_counted(dir: &Path) -> Vault {
    let vault = reopen(dir);
    assert!(vault.usage_sync(USAGE_SYNC).unwrap());
    vault
}

/// `n` verifies of `text`, counted.
fn verify_n(vault: &Vault, text: &str, n: usize) {
    for _ in 0..n {
        let v = vault
            .verify(&ctx(), crate::keys::VerifyRequest::new(text))
            .unwrap();
        assert!(v.valid);
    }
    assert!(vault.usage_sync(USAGE_SYNC).unwrap());
}

/// Valid verifies counted in all (in the keys' daily buckets).
fn valid_counted(vault: &Vault) -> u64 {
    use crate::usage::{Granularity, Subject};
    vault
        .usage_snapshot()
        .unwrap()
        .buckets()
        .filter(|((g, s, _), _)| *g == Granularity::Day && matches!(s, Subject::Key(_)))
        .map(|(_, c)| c.codes.get("VALID"))
        .sum()
}

/// The live figures equal a fold of the log and count `valid` valid verifies in all.
fn assert_counted(vault: &Vault, valid: u64) {
    assert_eq!(
        vault.usage_snapshot().unwrap(),
        vault.usage_from_log().unwrap()
    );
    assert_eq!(valid_counted(vault), valid);
}

fn figures_path(vault_dir: &Path) -> PathBuf {
    vault_dir.join(crate::usage::FIGURES_DIR).join("figures")
}

/// A vault whose figures file holds two stores (a full one, then changes), with `5` valid
/// verifies counted; returns its directory.
fn vault_with_two_stores() -> (tempfile::TempDir, PathBuf, String) {
    let (tmp, vault) = new_vault();
    let (_, text) = issue(&vault, "alice");
    verify_n(&vault, &text, 3);
    let dir = vault.dir().to_path_buf();
    drop(vault);
    let one = fs::metadata(figures_path(&dir)).unwrap().len();
    let vault = reopen_counted(&dir);
    verify_n(&vault, &text, 2);
    drop(vault);
    assert!(fs::metadata(figures_path(&dir)).unwrap().len() > one);
    (tmp, dir, text)
}

/// The figures are derived data: a file that is not a figures file must not keep the vault
/// from opening. It is moved aside, the figures are folded again from the whole log, and the
/// next store writes the file afresh.
#[test]
fn unreadable_usage_figures_are_refolded_from_the_log() {
    let (_tmp, dir, _) = vault_with_two_stores();
    let path = figures_path(&dir);
    let mut bytes = fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(b"garbage!");
    fs::write(&path, &bytes).unwrap();

    let vault = reopen_counted(&dir);
    assert_counted(&vault, 5);
    assert_eq!(
        fs::read(path.with_file_name("figures.unreadable")).unwrap(),
        bytes
    );
    drop(vault);
    assert_eq!(&fs::read(&path).unwrap()[..8], b"KVUSAGE1");
    let vault = reopen_counted(&dir);
    assert_counted(&vault, 5);
}

/// A store cut short (a crash mid-write) or damaged on disk: the figures as of the store
/// before it are kept, the entries after it are folded again, and nothing counts twice.
#[test]
fn a_damaged_or_cut_figures_file_keeps_its_whole_stores() {
    for damage in ["flip", "cut", "append"] {
        let (_tmp, dir, text) = vault_with_two_stores();
        let path = figures_path(&dir);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        match damage {
            "flip" => bytes[n - 3] ^= 0x40,
            "cut" => bytes.truncate(n - 3),
            _ => bytes.extend_from_slice(&[0, 0, 0, 9, 1, 2]),
        }
        fs::write(&path, &bytes).unwrap();
        let vault = reopen_counted(&dir);
        assert_counted(&vault, 5);
        verify_n(&vault, &text, 1);
        drop(vault);
        // Written afresh: read back whole, with nothing counted twice.
        let vault = reopen_counted(&dir);
        assert_counted(&vault, 6);
    }
}

/// Figures folded from another log (a file copied from another vault, or left from a history
/// a restore replaced) are refused, though they cover as many entries.
#[test]
fn figures_folded_from_another_log_are_refolded() {
    let (_tmp_a, dir_a, _) = vault_with_two_stores();
    let (_tmp_b, vault) = new_vault();
    let (_, text) = issue(&vault, "bob");
    verify_n(&vault, &text, 1);
    let dir_b = vault.dir().to_path_buf();
    drop(vault);
    let vault = reopen_counted(&dir_b);
    verify_n(&vault, &text, 1);
    drop(vault);
    fs::copy(figures_path(&dir_a), figures_path(&dir_b)).unwrap();
    let vault = reopen_counted(&dir_b);
    assert_counted(&vault, 2);
}

/// Figures an earlier build kept in the store's usage space (or a restored backup put there)
/// are loaded, moved into the figures file, and the space emptied.
#[test]
fn figures_in_the_old_store_space_move_into_the_file() {
    let (_tmp, dir, _) = vault_with_two_stores();
    let vault = reopen_counted(&dir);
    // As if 100 more verifies had been counted from entries since archived: only the stored
    // figures know of them.
    let mut agg = vault.usage_snapshot().unwrap();
    for figures in agg.keys.values_mut() {
        for counts in figures.series.day.values_mut() {
            counts.codes.add("VALID", 100);
        }
    }
    let mut batch = Batch::default();
    crate::usage::legacy::each(&agg, |id, value| {
        batch.insert(Space::Usage, id, value);
        Ok(())
    })
    .unwrap();
    vault.inner.store.apply(batch).unwrap();
    drop(vault);
    fs::remove_file(figures_path(&dir)).unwrap();

    let vault = reopen_counted(&dir);
    assert_eq!(valid_counted(&vault), 105);
    drop(vault);
    assert!(figures_path(&dir).is_file());
    let vault = reopen_counted(&dir);
    assert!(!crate::usage::legacy::present(&vault.inner.store).unwrap());
    assert_eq!(valid_counted(&vault), 105);
}
