//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and the stored frontier.
//!
//! Hashing is RFC 6962 §2.1 with SHA-256: a leaf hash is `SHA-256(0x00 || entry)`, an inner
//! node is `SHA-256(0x01 || left || right)`, and the empty tree's root is `SHA-256("")`.
//!
//! # Storage model
//!
//! The log never needs all leaves in memory. It stores the hash of every *perfect* subtree,
//! addressed by `(level, index)`: the subtree covering leaves `[index << level, (index + 1) <<
//! level)` (level 0 holds the leaf hashes). [`Frontier::push`] returns the subtrees each append
//! completes, so the caller can store them. [`root_at`], [`inclusion_proof`] and
//! [`consistency_proof`] take a lookup `get(level, index)` into that store; they only ask for
//! perfect subtrees lying fully inside the requested tree size, and make O(log n) lookups.
//!
//! Proofs are in the order of RFC 6962 §2.1.1 / §2.1.2 (the same as RFC 9162 and Go's
//! `transparency-dev/merkle`); [`verify_inclusion`] and [`verify_consistency`] follow RFC 9162
//! §2.1.3.2 and §2.1.4.2 and never panic, whatever the proof.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, an inner node hash or a tree root.
pub type Hash = [u8; 32];

/// Why a proof could not be generated or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree (`index >= size`).
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof from a larger tree to a smaller one (`old > new`).
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    /// The proof has more or fewer hashes than the tree sizes call for.
    #[error("proof has the wrong length")]
    WrongLength,
    /// The inclusion proof leads to a different root.
    #[error("inclusion proof does not match the root")]
    RootMismatch,
    /// The consistency proof leads to a different old root.
    #[error("consistency proof does not match the old root")]
    OldRootMismatch,
    /// The consistency proof leads to a different new root.
    #[error("consistency proof does not match the new root")]
    NewRootMismatch,
    /// Two trees of the same size must have the same root.
    #[error("trees of the same size have different roots")]
    SameSizeRootsDiffer,
}

/// A [`Frontier`] was given a number of hashes other than `size.count_ones()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a frontier of size {size} needs {expected} subtree hashes, got {got}")]
pub struct FrontierError {
    pub size: u64,
    pub expected: u32,
    pub got: usize,
}

/// The leaf hash of a log entry: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(entry)
        .finalize()
        .into()
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n`; `n` must be at least 2.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of the (not necessarily perfect) subtree over leaves `[start, start + len)`, from
/// the perfect subtrees that make it up: one per set bit of `len`, largest first.
///
/// `start` (if `len > 0`) is a multiple of the smallest power of two `>= len`, which holds for
/// every subtree of the RFC 6962 shape, so each piece is an aligned perfect subtree.
fn range_hash<E>(
    start: u64,
    len: u64,
    get: &mut impl FnMut(u8, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    // Fold from the smallest (rightmost) piece leftwards: MTH = node(largest, MTH(rest)).
    let mut acc: Option<Hash> = None;
    for level in 0..64u8 {
        let bit = 1u64 << level;
        if len & bit == 0 {
            continue;
        }
        let offset = len & !(bit | (bit - 1)); // the larger pieces, left of this one
        let piece = get(level, (start + offset) >> level)?;
        acc = Some(match acc {
            None => piece,
            Some(right) => node_hash(&piece, &right),
        });
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// The root of the tree of the first `size` leaves, from stored perfect subtree hashes
/// (at most 64 lookups).
pub fn root_at<E>(size: u64, mut get: impl FnMut(u8, u64) -> Result<Hash, E>) -> Result<Hash, E> {
    range_hash(0, size, &mut get) // `size == 0` has no pieces: the empty root
}

/// The inclusion proof (audit path, RFC 6962 §2.1.1) of leaf `index` in the tree of the first
/// `size` leaves, ordered from the leaf up.
///
/// Returns [`ProofError::IndexOutOfRange`] (converted into `E`) if `index >= size`.
pub fn inclusion_proof<E: From<ProofError>>(
    index: u64,
    size: u64,
    mut get: impl FnMut(u8, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    // PATH(m, D[start..start + n]), walked from the root down; siblings are pushed top-down.
    let (mut m, mut start, mut n) = (index, 0u64, size);
    let mut proof = Vec::new();
    while n > 1 {
        let k = split(n);
        if m < k {
            proof.push(range_hash(start + k, n - k, &mut get)?);
            n = k;
        } else {
            proof.push(range_hash(start, k, &mut get)?);
            m -= k;
            start += k;
            n -= k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof (RFC 6962 §2.1.2) from the tree of the first `old` leaves to the tree
/// of the first `new` leaves. It is empty if `old == 0` or `old == new`.
///
/// Returns [`ProofError::SizesOutOfOrder`] (converted into `E`) if `old > new`.
pub fn consistency_proof<E: From<ProofError>>(
    old: u64,
    new: u64,
    mut get: impl FnMut(u8, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new }.into());
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start..start + n], whole), walked from the root down. `m >= 1` throughout,
    // so `n > m` implies `n >= 2`.
    let (mut m, mut start, mut n, mut whole) = (old, 0u64, new, true);
    let mut proof = Vec::new();
    while m != n {
        let k = split(n);
        if m <= k {
            proof.push(range_hash(start + k, n - k, &mut get)?);
            n = k;
        } else {
            proof.push(range_hash(start, k, &mut get)?);
            m -= k;
            start += k;
            n -= k;
            whole = false;
        }
    }
    if !whole {
        proof.push(range_hash(start, n, &mut get)?);
    }
    proof.reverse();
    Ok(proof)
}

/// Right-shifts `fn_` and `sn` together until `fn_` is odd or zero.
fn shift_to_odd_or_zero(fn_: &mut u64, sn: &mut u64) {
    while *fn_ & 1 == 0 && *fn_ != 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// Checks that `proof` proves `leaf` is leaf number `index` of the tree of `size` leaves with
/// root `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    // `sn` halves on every step, so a proof longer than 64 fails within 64 steps.
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            shift_to_odd_or_zero(&mut fn_, &mut sn);
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that `proof` proves the tree of `old_size` leaves with root `old_root` is a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots; `old_size == 0` is consistent with every
/// tree, but only with an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::SameSizeRootsDiffer);
        }
        return Ok(());
    }
    // 0 < old_size < new_size from here on. If old_size is a power of two, the old root is the
    // (implicit) first path element; otherwise the proof starts with it.
    let (seed, rest) = if old_size.is_power_of_two() && !proof.is_empty() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return Err(ProofError::WrongLength),
        }
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    // fn_ < u64::MAX, so this stops.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            shift_to_odd_or_zero(&mut fn_, &mut sn);
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

/// The compact range of the whole log: the hashes of the perfect subtrees that make up
/// `[0, size)`, largest (leftmost) first, one per set bit of `size`.
///
/// Serializes as `{ "size": u64, "hashes": [Hash] }`; deserializing checks the hash count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FrontierParts")]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

/// The unchecked serialized form of a [`Frontier`].
#[derive(Deserialize)]
struct FrontierParts {
    size: u64,
    hashes: Vec<Hash>,
}

impl TryFrom<FrontierParts> for Frontier {
    type Error = FrontierError;

    fn try_from(parts: FrontierParts) -> Result<Self, Self::Error> {
        Frontier::from_parts(parts.size, parts.hashes)
    }
}

impl Frontier {
    /// The frontier of the empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from its size and its subtree hashes (largest first); the number of
    /// hashes must be `size.count_ones()`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.count_ones();
        if hashes.len() != expected as usize {
            return Err(FrontierError {
                size,
                expected,
                got: hashes.len(),
            });
        }
        Ok(Self { size, hashes })
    }

    /// The number of leaves in the log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree hashes covering `[0, size)`, largest (leftmost) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash and returns every perfect subtree this completes, as
    /// `(level, index, hash)`, starting with the leaf itself at `(0, old size)`.
    ///
    /// # Panics
    ///
    /// If the log already holds `u64::MAX` leaves (the next leaf index would not fit).
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let index = self.size;
        let new_size = index
            .checked_add(1)
            .expect("a log holds fewer than 2^64 - 1 leaves");
        let mut completed = Vec::with_capacity(1 + index.trailing_ones() as usize);
        completed.push((0, index, leaf));
        let (mut hash, mut level, mut i) = (leaf, 0u8, index);
        // Each trailing one bit of the old size is a subtree of the same level to merge with.
        while i & 1 == 1 {
            // hashes.len() == size.count_ones() >= index.trailing_ones(): from_parts and push
            // keep that invariant.
            let left = self
                .hashes
                .pop()
                .expect("the frontier holds one hash per set bit of size");
            hash = node_hash(&left, &hash);
            level += 1;
            i >>= 1;
            completed.push((level, i, hash));
        }
        self.hashes.push(hash);
        self.size = new_size;
        completed
    }

    /// The root of the whole log.
    pub fn root(&self) -> Hash {
        let mut rest = self.hashes.iter().rev();
        match rest.next() {
            None => empty_root(),
            Some(&last) => rest.fold(last, |acc, left| node_hash(left, &acc)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::collections::HashMap;

    type Store = HashMap<(u8, u64), Hash>;
    type Get<'a> = Box<dyn FnMut(u8, u64) -> Result<Hash, ProofError> + 'a>;

    fn hex(v: &Value) -> Vec<u8> {
        let s = v.as_str().unwrap();
        let byte = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).unwrap();
        (0..s.len()).step_by(2).map(byte).collect()
    }
    fn hashes(v: &Value) -> Vec<Hash> {
        let list = v.as_array().unwrap();
        list.iter().map(|h| hex(h).try_into().unwrap()).collect()
    }

    /// Pushes every entry into a fresh frontier and stores what `push` returns; also returns
    /// the frontier's root after each push (`roots[i]` = root of size `i + 1`).
    fn build(entries: &[Vec<u8>]) -> (Store, Vec<Hash>) {
        let (mut store, mut frontier, mut roots) = (Store::new(), Frontier::new(), vec![]);
        for e in entries {
            for (level, index, h) in frontier.push(leaf_hash(e)) {
                assert_eq!(
                    store.insert((level, index), h),
                    None,
                    "({level},{index}) twice"
                );
            }
            roots.push(frontier.root());
            let json = serde_json::to_string(&frontier).unwrap();
            assert_eq!(serde_json::from_str::<Frontier>(&json).unwrap(), frontier);
        }
        (store, roots)
    }

    /// A lookup into `store` that fails the test when asked for a subtree outside `size`, or
    /// more than O(log size) times.
    fn get(store: &Store, size: u64) -> Get<'_> {
        let (mut count, max) = (0, 2 * (64 - size.leading_zeros()) + 1);
        Box::new(move |level, index| {
            count += 1;
            assert!(count <= max, "more than {max} lookups for size {size}");
            assert!(
                (index + 1) << level <= size,
                "({level},{index}) outside size {size}"
            );
            Ok(store[&(level, index)])
        })
    }

    // The reference: RFC 6962 §2.1 MTH, PATH and PROOF/SUBPROOF over the entries, as written.
    fn ref_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }
    fn ref_mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => Sha256::digest(b"").into(),
            1 => leaf_hash(&d[0]),
            n => node_hash(&ref_mth(&d[..ref_k(n)]), &ref_mth(&d[ref_k(n)..])),
        }
    }
    fn ref_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let (n, k) = (d.len(), ref_k(d.len()));
        match n {
            1 => vec![],
            _ if m < k => [ref_path(m, &d[..k]), vec![ref_mth(&d[k..])]].concat(),
            _ => [ref_path(m - k, &d[k..]), vec![ref_mth(&d[..k])]].concat(),
        }
    }
    fn ref_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let (n, k) = (d.len(), ref_k(d.len()));
        match n {
            _ if m == n && b => vec![],
            _ if m == n => vec![ref_mth(d)],
            _ if m <= k => [ref_subproof(m, &d[..k], b), vec![ref_mth(&d[k..])]].concat(),
            _ => [ref_subproof(m - k, &d[k..], false), vec![ref_mth(&d[..k])]].concat(),
        }
    }

    #[test]
    fn hashing_primitives() {
        let e3b0 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(empty_root().to_vec(), hex(&e3b0.into()));
        assert_eq!(leaf_hash(b"ab"), <Hash>::from(Sha256::digest(b"\x00ab")));
        let mut node = [1u8; 65];
        node[33..].fill(2);
        assert_eq!(
            node_hash(&[1; 32], &[2; 32]),
            <Hash>::from(Sha256::digest(node))
        );
    }

    #[test]
    fn rfc6962_vectors() {
        let v: Value = serde_json::from_str(include_str!("../../testdata/rfc6962.json")).unwrap();
        let entries: Vec<Vec<u8>> = v["leaves_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(hex)
            .collect();
        let (store, frontier_roots) = build(&entries);
        let roots = v["root_by_size_hex"].as_object().unwrap();
        assert_eq!(roots.len(), 9);
        let root = |size: u64| -> Hash { hex(&roots[&size.to_string()]).try_into().unwrap() };
        for size in 0..=8 {
            assert_eq!(root_at(size, get(&store, size)).unwrap(), root(size));
            assert!(size == 0 || frontier_roots[size as usize - 1] == root(size));
        }
        for p in v["inclusion_proofs"].as_array().unwrap() {
            let (index, size) = (
                p["leaf_index"].as_u64().unwrap(),
                p["tree_size"].as_u64().unwrap(),
            );
            let (proof, leaf) = (hashes(&p["proof_hex"]), leaf_hash(&entries[index as usize]));
            assert_eq!(
                inclusion_proof(index, size, get(&store, size)).unwrap(),
                proof
            );
            verify_inclusion(&leaf, index, size, &proof, &root(size)).unwrap();
        }
        for p in v["consistency_proofs"].as_array().unwrap() {
            let (old, new) = (p["size1"].as_u64().unwrap(), p["size2"].as_u64().unwrap());
            let proof = hashes(&p["proof_hex"]);
            assert_eq!(
                consistency_proof(old, new, get(&store, new)).unwrap(),
                proof
            );
            verify_consistency(old, new, &root(old), &root(new), &proof).unwrap();
        }
    }

    /// `proof` with one flipped bit in each hash in turn, truncated at either end, extended.
    fn damaged(proof: &[Hash]) -> Vec<Vec<Hash>> {
        let mut out: Vec<Vec<Hash>> = vec![proof.to_vec(); proof.len()];
        (0..proof.len()).for_each(|i| out[i][i][i * 7 % 32] ^= 1 << (i % 8));
        if let (Some((_, tail)), Some((_, head))) = (proof.split_first(), proof.split_last()) {
            out.extend([tail.to_vec(), head.to_vec()]);
        }
        out.extend([[proof, &[[7; 32]]].concat(), [&[[7; 32]], proof].concat()]);
        out
    }

    #[test]
    fn every_size_up_to_64_against_the_reference() {
        const N: usize = 64;
        let entries: Vec<Vec<u8>> = (0..N).map(|i| format!("entry {i}").into_bytes()).collect();
        let (store, frontier_roots) = build(&entries);
        let roots: Vec<Hash> = (0..=N).map(|n| ref_mth(&entries[..n])).collect();
        let leaf = |m: usize| leaf_hash(&entries[m]);
        let (mut paths, mut cproofs) = (HashMap::new(), HashMap::new());
        for n in 1..=N {
            let (size, root) = (n as u64, &roots[n]);
            assert_eq!(root_at(size, get(&store, size)).unwrap(), *root);
            assert_eq!(frontier_roots[n - 1], *root);
            for m in 0..n {
                let (index, leaf) = (m as u64, leaf(m));
                let proof = inclusion_proof(index, size, get(&store, size)).unwrap();
                assert_eq!(proof, ref_path(m, &entries[..n]), "PATH({m}, D[{n}])");
                verify_inclusion(&leaf, index, size, &proof, root).unwrap();
                for bad in damaged(&proof) {
                    assert!(verify_inclusion(&leaf, index, size, &bad, root).is_err());
                }
                let mut bad_leaf = leaf;
                bad_leaf[31] ^= 0x80;
                assert!(verify_inclusion(&bad_leaf, index, size, &proof, root).is_err());
                assert!(verify_inclusion(&leaf, index, size, &proof, &roots[n - 1]).is_err());
                for other in (0..=n as u64).filter(|&o| o != index) {
                    let r = verify_inclusion(&leaf, other, size, &proof, root);
                    assert!(r.is_err(), "index {other} accepted for {m} in {n}");
                }
                paths.insert((m, n), proof);
            }
            for (m, old_root) in roots[..=n].iter().enumerate() {
                let old = m as u64;
                let proof = consistency_proof(old, size, get(&store, size)).unwrap();
                let want = if m == 0 {
                    vec![]
                } else {
                    ref_subproof(m, &entries[..n], true)
                };
                assert_eq!(proof, want, "PROOF({m}, D[{n}])");
                verify_consistency(old, size, old_root, root, &proof).unwrap();
                for bad in damaged(&proof) {
                    assert!(verify_consistency(old, size, old_root, root, &bad).is_err());
                }
                let mut bad = *old_root;
                bad[0] ^= 1;
                assert!(m == 0 || verify_consistency(old, size, &bad, root, &proof).is_err());
                assert!(m == 0 || verify_consistency(old, size, old_root, &bad, &proof).is_err());
                cproofs.insert((m, n), proof);
            }
        }
        // A proof presented for other sizes (with those sizes' true roots) must verify only if
        // it is the proof for those sizes: given sizes and roots, at most one proof verifies.
        let (mut rejected, mut checked) = (0, 0);
        for (&(m, n), proof) in &paths {
            for n2 in m + 1..=N {
                let r = verify_inclusion(&leaf(m), m as u64, n2 as u64, proof, &roots[n2]);
                assert_eq!(
                    r.is_ok(),
                    paths[&(m, n2)] == *proof,
                    "PATH({m}, D[{n}]) as {n2}"
                );
                (rejected, checked) = (rejected + usize::from(r.is_err()), checked + 1);
            }
        }
        for (&(m, n), proof) in &cproofs {
            let others = (0..=n)
                .map(|m2| (m2, n))
                .chain((m.max(1)..=N).map(|n2| (m, n2)));
            for (m2, n2) in others {
                let r = verify_consistency(m2 as u64, n2 as u64, &roots[m2], &roots[n2], proof);
                assert_eq!(
                    r.is_ok(),
                    cproofs[&(m2, n2)] == *proof,
                    "({m},{n}) as ({m2},{n2})"
                );
                (rejected, checked) = (rejected + usize::from(r.is_err()), checked + 1);
            }
        }
        assert!(rejected > checked / 2, "{rejected} of {checked} rejected");
    }

    #[test]
    fn caller_mistakes_are_errors() {
        use ProofError::*;
        let mut get = |_: u8, _: u64| -> Result<Hash, ProofError> { panic!("no lookup expected") };
        let out_of_range = |index, size| Some(IndexOutOfRange { index, size });
        assert_eq!(inclusion_proof(5, 5, &mut get).err(), out_of_range(5, 5));
        assert_eq!(inclusion_proof(0, 0, &mut get).err(), out_of_range(0, 0));
        let out_of_order = Some(SizesOutOfOrder { old: 6, new: 5 });
        assert_eq!(consistency_proof(6, 5, &mut get).err(), out_of_order);
        let (a, b) = (&[1; 32], &[2; 32]);
        assert_eq!(verify_inclusion(a, 3, 3, &[], a).err(), out_of_range(3, 3));
        assert_eq!(verify_inclusion(a, 0, 1, &[], a), Ok(()));
        assert_eq!(verify_inclusion(a, 0, 1, &[], b), Err(RootMismatch));
        assert_eq!(verify_inclusion(a, 0, 2, &[], b), Err(WrongLength));
        assert_eq!(verify_consistency(6, 5, a, b, &[]).err(), out_of_order);
        assert_eq!(verify_consistency(4, 4, a, a, &[]), Ok(()));
        assert_eq!(
            verify_consistency(4, 4, a, b, &[]),
            Err(SameSizeRootsDiffer)
        );
        assert_eq!(verify_consistency(4, 4, a, a, &[*a]), Err(WrongLength));
        assert_eq!(verify_consistency(0, 7, a, b, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 7, a, b, &[*a]), Err(WrongLength));
        assert_eq!(verify_consistency(4, 5, a, b, &[]), Err(WrongLength));
        assert_eq!(verify_consistency(3, 4, a, b, &[*a]), Err(WrongLength));
        assert_eq!(
            RootMismatch.to_string(),
            "inclusion proof does not match the root"
        );
    }

    #[test]
    fn frontier_parts_are_checked() {
        assert_eq!(Frontier::new().root(), empty_root());
        let err = Frontier::from_parts(5, vec![[0; 32]]).unwrap_err();
        assert_eq!((err.size, err.expected, err.got), (5, 2, 1));
        let f = Frontier::from_parts(5, vec![[1; 32], [2; 32]]).unwrap();
        assert_eq!((f.size(), f.hashes()), (5, &[[1; 32], [2; 32]][..]));
        assert_eq!(f.root(), node_hash(&[1; 32], &[2; 32]));
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.starts_with(r#"{"size":5,"hashes":[[1,1,"#), "{json}");
        assert!(serde_json::from_str::<Frontier>(&json.replace(":5,", ":7,")).is_err());
    }

    #[test]
    fn huge_trees_need_few_lookups() {
        // With every leaf equal, a subtree's hash depends on its level only: a consistent store
        // of any size costs nothing to fake.
        let mut level_hash = vec![leaf_hash(b"same")];
        (0..64).for_each(|l| level_hash.push(node_hash(&level_hash[l], &level_hash[l])));
        let level_hash = &level_hash;
        for size in [10_000_000_000u64, (1 << 40) + 12345, u64::MAX] {
            let get = || {
                let mut count = 0;
                move |level: u8, index: u64| -> Result<Hash, ProofError> {
                    count += 1;
                    assert!(count <= 129 && (u128::from(index) + 1) << level <= size.into());
                    Ok(level_hash[usize::from(level)])
                }
            };
            let root = root_at(size, get()).unwrap();
            let parts = (0..64).rev().filter(|l| size >> l & 1 == 1);
            let frontier = Frontier::from_parts(size, parts.map(|l| level_hash[l]).collect());
            assert_eq!(frontier.unwrap().root(), root);
            for index in [0, 1, size / 3, size - 2, size - 1] {
                let proof = inclusion_proof(index, size, get()).unwrap();
                verify_inclusion(&level_hash[0], index, size, &proof, &root).unwrap();
            }
            for old in [1, 2, 3, 1 << 20, size / 2 + 1, size - 1] {
                let (proof, old_root) = (consistency_proof(old, size, get()), root_at(old, get()));
                verify_consistency(old, size, &old_root.unwrap(), &root, &proof.unwrap()).unwrap();
            }
        }
    }

    fn size() -> impl Strategy<Value = u64> {
        prop_oneof![any::<u64>(), 0..70u64, Just(u64::MAX), Just(u64::MAX - 1)]
    }

    proptest! {
        #[test]
        fn garbage_proofs_never_panic(
            leaf in any::<Hash>(), root in any::<Hash>(), a in size(), b in size(),
            proof in prop::collection::vec(any::<Hash>(), 0..80),
        ) {
            // Any outcome but a panic is fine; no tree needs more than 64 proof hashes.
            let long = proof.len() > 64;
            prop_assert!(!(long && verify_inclusion(&leaf, a, b, &proof, &root).is_ok()));
            prop_assert!(!(long && verify_consistency(a, b, &leaf, &root, &proof).is_ok()));
            let (a, b) = (a.min(b), a.max(b));
            prop_assert!(!(long && verify_consistency(a, b, &leaf, &root, &proof).is_ok()));
        }
    }
}
