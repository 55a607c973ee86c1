//! RFC 6962 / 9162 Merkle log: known answers, and every proof on small trees checked
//! against a reference written straight from the RFC's recursive definitions.

use kura_proofs::tlog::{
    self, leaf_hash, node_hash, verify_consistency, verify_inclusion, ConsistencyProofFile,
    InclusionProofFile, MerkleLog, TlogError, EMPTY_ROOT,
};
use kura_proofs::Hash;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn h(s: &str) -> Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).expect("test hex");
    out
}

// ---- reference: the RFC's definitions, recursive and slow ----

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn ref_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => Sha256::digest(b"").into(),
        1 => d[0],
        n => {
            let k = k_of(n);
            let mut hasher = Sha256::new();
            hasher.update([1u8]);
            hasher.update(ref_mth(&d[..k]));
            hasher.update(ref_mth(&d[k..]));
            hasher.finalize().into()
        }
    }
}

fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return vec![];
    }
    let k = k_of(d.len());
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![ref_mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn ref_consistency(m: usize, d: &[Hash]) -> Vec<Hash> {
    if m == 0 || m == d.len() {
        vec![]
    } else {
        ref_subproof(m, d, true)
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u32).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

/// The eight leaves of the Certificate Transparency reference tests.
fn ct_leaves() -> Vec<Hash> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| leaf_hash(&hex::decode(s).expect("hex")))
    .collect()
}

#[test]
fn hashing_is_domain_separated() {
    let mut want = Sha256::new();
    want.update([0u8]);
    want.update(b"abc");
    assert_eq!(leaf_hash(b"abc"), <[u8; 32]>::from(want.finalize()));
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let mut want = Sha256::new();
    want.update([1u8]);
    want.update(a);
    want.update(b);
    assert_eq!(node_hash(&a, &b), <[u8; 32]>::from(want.finalize()));
}

#[test]
fn known_answers() {
    assert_eq!(
        hex::encode(EMPTY_ROOT),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(tlog::root(&[]), EMPTY_ROOT);
    assert_eq!(MerkleLog::new().root(), EMPTY_ROOT);
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let d = ct_leaves();
    let log = MerkleLog::from_leaf_hashes(&d);
    for (i, want) in roots.iter().enumerate() {
        let n = i + 1;
        assert_eq!(hex::encode(ref_mth(&d[..n])), *want, "reference, size {n}");
        assert_eq!(hex::encode(tlog::root(&d[..n])), *want, "root(), size {n}");
        assert_eq!(log.root_at(n as u64), Some(h(want)), "root_at, size {n}");
    }
    // Consistency proofs published with the same reference tests.
    let cases: [(u64, u64, &[&str]); 3] = [
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (old, new, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(log.consistency_proof(old, new), Some(want.clone()));
        let (r1, r2) = (h(roots[old as usize - 1]), h(roots[new as usize - 1]));
        assert_eq!(verify_consistency(old, new, &want, &r1, &r2), Ok(()));
    }
    // An inclusion proof from the same tests: leaf 0 of 8.
    let p0 = log.inclusion_proof(0, 8).expect("in range");
    assert_eq!(
        p0,
        vec![
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ]
    );
}

#[test]
fn every_inclusion_proof_matches_the_reference_and_verifies() {
    let d = leaves(40);
    let log = MerkleLog::from_leaf_hashes(&d);
    for size in 1..=d.len() {
        let root = ref_mth(&d[..size]);
        assert_eq!(log.root_at(size as u64), Some(root));
        for index in 0..size {
            let proof = log
                .inclusion_proof(index as u64, size as u64)
                .expect("in range");
            assert_eq!(proof, ref_path(index, &d[..size]), "({index}, {size})");
            let (i, n) = (index as u64, size as u64);
            assert_eq!(verify_inclusion(&d[index], i, n, &proof, &root), Ok(()));
            // Any other leaf, index or size (with that size's root) fails.
            assert!(verify_inclusion(&d[(index + 1) % 40], i, n, &proof, &root).is_err());
            for j in 0..size as u64 {
                if j != i {
                    assert!(verify_inclusion(&d[index], j, n, &proof, &root).is_err());
                }
            }
            for other in (index + 1)..=d.len() {
                if other != size {
                    let r = ref_mth(&d[..other]);
                    assert!(
                        verify_inclusion(&d[index], i, other as u64, &proof, &r).is_err(),
                        "({index}, {size}) passed as size {other}"
                    );
                }
            }
            // Too long, too short.
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify_inclusion(&d[index], i, n, &longer, &root).is_err());
            if !proof.is_empty() {
                assert_eq!(
                    verify_inclusion(&d[index], i, n, &proof[1..], &root),
                    Err(TlogError::WrongProofLength)
                );
            }
        }
    }
    assert_eq!(
        verify_inclusion(&d[0], 5, 5, &[], &d[0]),
        Err(TlogError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert!(log.inclusion_proof(40, 40).is_none());
    assert!(log.inclusion_proof(3, 41).is_none());
}

#[test]
fn every_inclusion_proof_fails_when_any_byte_changes() {
    let d = leaves(17);
    let log = MerkleLog::from_leaf_hashes(&d);
    for size in 1..=17u64 {
        let root = log.root_at(size).expect("size");
        for index in 0..size {
            let proof = log.inclusion_proof(index, size).expect("in range");
            let leaf = d[index as usize];
            for e in 0..proof.len() {
                for byte in 0..32 {
                    let mut bad = proof.clone();
                    bad[e][byte] ^= 0x80;
                    assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                }
            }
            for byte in 0..32 {
                let mut bad_root = root;
                bad_root[byte] ^= 1;
                assert!(verify_inclusion(&leaf, index, size, &proof, &bad_root).is_err());
                let mut bad_leaf = leaf;
                bad_leaf[byte] ^= 1;
                assert!(verify_inclusion(&bad_leaf, index, size, &proof, &root).is_err());
            }
        }
    }
}

#[test]
fn every_consistency_proof_matches_the_reference_and_verifies() {
    let d = leaves(64);
    let log = MerkleLog::from_leaf_hashes(&d);
    let roots: Vec<Hash> = (0..=64).map(|n| ref_mth(&d[..n])).collect();
    let mut proofs = std::collections::HashMap::new();
    for new in 0..=64usize {
        for old in 0..=new {
            let proof = log
                .consistency_proof(old as u64, new as u64)
                .expect("in range");
            assert_eq!(proof, ref_consistency(old, &d[..new]), "({old}, {new})");
            assert_eq!(
                verify_consistency(old as u64, new as u64, &proof, &roots[old], &roots[new]),
                Ok(()),
                "({old}, {new})"
            );
            proofs.insert((old, new), proof);
        }
    }
    // Tampering: each byte of each hash, each root, an extra or a missing hash.
    for ((old, new), proof) in &proofs {
        let (o, n) = (*old as u64, *new as u64);
        let (ro, rn) = (&roots[*old], &roots[*new]);
        for e in 0..proof.len() {
            for byte in [0, 7, 31] {
                let mut bad = proof.clone();
                bad[e][byte] ^= 0x01;
                assert!(verify_consistency(o, n, &bad, ro, rn).is_err());
            }
        }
        let mut bad_old = *ro;
        bad_old[5] ^= 1;
        assert!(verify_consistency(o, n, proof, &bad_old, rn).is_err());
        let mut bad_new = *rn;
        bad_new[5] ^= 1;
        // Every tree extends the empty tree, so for an old size of 0 the new root is free.
        assert_eq!(
            verify_consistency(o, n, proof, ro, &bad_new).is_err(),
            o > 0
        );
        let mut longer = proof.clone();
        longer.push(*rn);
        assert!(verify_consistency(o, n, &longer, ro, rn).is_err());
        if !proof.is_empty() {
            assert!(verify_consistency(o, n, &proof[..proof.len() - 1], ro, rn).is_err());
            assert!(verify_consistency(o, n, &proof[1..], ro, rn).is_err());
        }
    }
    // The proof for one pair of sizes does not pass for another pair (with that pair's
    // roots), unless it is that pair's own proof too (e.g. the empty proof of equal sizes).
    for new in [1usize, 2, 3, 5, 7, 8, 9, 13, 16, 31, 33] {
        for old in 0..=new {
            let proof = &proofs[&(old, new)];
            for new2 in 0..=64usize {
                for old2 in 0..=new2 {
                    if (old2, new2) == (old, new) || proofs[&(old2, new2)] == *proof {
                        continue;
                    }
                    assert!(
                        verify_consistency(
                            old2 as u64,
                            new2 as u64,
                            proof,
                            &roots[old2],
                            &roots[new2]
                        )
                        .is_err(),
                        "proof ({old}, {new}) passed as ({old2}, {new2})"
                    );
                }
            }
        }
    }
    assert_eq!(
        verify_consistency(5, 4, &[], &roots[5], &roots[4]),
        Err(TlogError::OldLargerThanNew {
            old_size: 5,
            new_size: 4
        })
    );
    assert!(log.consistency_proof(3, 65).is_none());
    assert!(log.consistency_proof(5, 4).is_none());
}

#[test]
fn file_forms_round_trip() {
    let d = leaves(21);
    let log = MerkleLog::from_leaf_hashes(&d);
    let f = InclusionProofFile {
        leaf_index: 9,
        tree_size: 21,
        leaf_hash: d[9],
        root_hash: log.root(),
        path: log.inclusion_proof(9, 21).expect("in range"),
    };
    f.verify().expect("verifies");
    let text = serde_json::to_string(&f).expect("json");
    let back: InclusionProofFile = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, f);
    let c = ConsistencyProofFile {
        old_size: 7,
        new_size: 21,
        old_root: log.root_at(7).expect("size"),
        new_root: log.root(),
        proof: log.consistency_proof(7, 21).expect("in range"),
    };
    c.verify().expect("verifies");
    let back: ConsistencyProofFile =
        serde_json::from_str(&serde_json::to_string(&c).expect("json")).expect("parses");
    assert_eq!(back, c);
    assert!(serde_json::from_str::<InclusionProofFile>(
        &text.replace("\"path\":[\"", "\"path\":[\"zz")
    )
    .is_err());
}

#[test]
fn a_large_log_answers_for_any_prefix() {
    // 300 000 leaves: appends, then roots and proofs at scattered sizes checked against
    // roots computed independently from the leaves.
    let n = 300_000u64;
    let mut log = MerkleLog::new();
    let mut d = Vec::with_capacity(n as usize);
    for i in 0..n {
        let l = leaf_hash(&i.to_le_bytes());
        d.push(l);
        assert_eq!(log.append(l), i);
    }
    assert_eq!(log.size(), n);
    assert_eq!(log.leaf(12345), Some(d[12345]));
    for &(old, new) in &[
        (1u64, n),
        (65_536, 65_537),
        (99_999, 250_001),
        (n, n),
        (0, 7),
    ] {
        let ro = tlog::root(&d[..old as usize]);
        let rn = tlog::root(&d[..new as usize]);
        assert_eq!(log.root_at(old), Some(ro));
        assert_eq!(log.root_at(new), Some(rn));
        let p = log.consistency_proof(old, new).expect("in range");
        assert!(p.len() <= 2 * 19 + 2);
        assert_eq!(verify_consistency(old, new, &p, &ro, &rn), Ok(()));
        if new > 0 {
            let idx = new / 3;
            let ip = log.inclusion_proof(idx, new).expect("in range");
            assert!(ip.len() <= 19);
            assert_eq!(
                verify_inclusion(&d[idx as usize], idx, new, &ip, &rn),
                Ok(())
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_sizes_agree_with_the_reference(n in 1usize..300, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let d = leaves(n);
        let log = MerkleLog::from_leaf_hashes(&d);
        let size = b.index(n) + 1;
        let index = a.index(size);
        let old = a.index(size + 1);
        prop_assert_eq!(log.root_at(size as u64), Some(ref_mth(&d[..size])));
        prop_assert_eq!(log.inclusion_proof(index as u64, size as u64), Some(ref_path(index, &d[..size])));
        prop_assert_eq!(log.consistency_proof(old as u64, size as u64), Some(ref_consistency(old, &d[..size])));
    }

    #[test]
    fn verifiers_never_panic(
        leaf in any::<[u8; 32]>(),
        index in any::<u64>(),
        size in any::<u64>(),
        proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
        r1 in any::<[u8; 32]>(),
        r2 in any::<[u8; 32]>(),
    ) {
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &r1).is_err());
        prop_assert!(verify_consistency(index.min(size), size, &proof, &r1, &r2).is_err() || proof.is_empty());
    }
}
