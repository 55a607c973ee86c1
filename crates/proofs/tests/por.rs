//! por/v1: the published test vectors, round trips, and the cheats a proof must expose.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use kura_proofs::por::{
    self, node, reserves_message, verify, Epoch, InclusionProof, LiabilityTree, PorError, Report,
    SumNode, MAX_SAT,
};
use proptest::prelude::*;
use sha2::Sha256;

fn h(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).expect("test hex");
    out
}

const POR_SECRET: [u8; 32] = [0x11; 32];
const PAD_SECRET: [u8; 32] = [0x22; 32];

fn vector_epoch() -> Epoch {
    Epoch {
        ledger_seq: 1000,
        block_height: 800_000,
        block_hash: [0; 32],
    }
}

fn vector_tree() -> LiabilityTree {
    LiabilityTree::build(
        &vector_epoch(),
        &POR_SECRET,
        &PAD_SECRET,
        2,
        &[
            (1, "alice", 150_000_000),
            (2, "bob", 25_000_000),
            (3, "carol", 7),
        ],
    )
    .expect("vector tree builds")
}

#[test]
fn reproduces_the_published_vectors() {
    let epoch = vector_epoch();
    let eid = epoch.epoch_id();
    assert_eq!(
        hex::encode(eid),
        "058049db24a02966a27441e3175422fa0e2e774f19aac9e13a5677c854d99036"
    );
    let tree = vector_tree();
    assert_eq!(tree.epoch_id(), eid);
    assert_eq!(
        tree.root(),
        SumNode {
            hash: h("604d63165f2c47c24fd6f7aacb447fb27136fdf049b260c132b3d5633a5c988a"),
            sum: 175_000_007
        }
    );

    let alice = tree.proof(1).expect("alice is in the tree");
    assert_eq!(
        alice.user_key,
        h("b0e6156c170cb8d76e9ca1c763aa1ff861c8118b6f77d393adc0cc49f9a48e70")
    );
    assert_eq!(alice.index, 2);
    assert_eq!(alice.balance, 150_000_000);
    assert_eq!(alice.login, "alice");
    assert_eq!(
        alice.leaf(&eid).hash,
        h("4ad721fb34253b05de3b09e3b0d11259403c6913e34b06d6031f7b0f58465184")
    );
    assert_eq!(
        alice.siblings,
        vec![
            SumNode {
                hash: h("81a9b9af23dcf25b99e40f3808be56475aa784929f1bf67cd3eacbb8a95b7ba2"),
                sum: 0
            },
            SumNode {
                hash: h("ec970ae2ea52d21a5e853dc8f13e1ba7e54030bd9f7b74a5d292e616cb44ef62"),
                sum: 25_000_007
            },
        ]
    );

    for (id, index, leaf) in [
        (
            2,
            0,
            "73f645448743276fe96109a907f20bd2807d395147442956a152d91e1ec73158",
        ),
        (
            3,
            1,
            "32f020cf38bcb56e202485ad132e6ef94d162bdf88b69f333e209083c20e0933",
        ),
    ] {
        let p = tree.proof(id).expect("in the tree");
        assert_eq!(p.index, index);
        assert_eq!(p.leaf(&eid).hash, h(leaf));
        assert_eq!(tree.leaf_at(index).map(|l| l.hash), Some(h(leaf)));
    }
    // The padding slot is pad id j = 0.
    let pad = por::leaf(&por::pad_id(&eid, 0, &PAD_SECRET), 0);
    assert_eq!(tree.leaf_at(3), Some(pad));

    for id in 1..=3 {
        let p = tree.proof(id).expect("in the tree");
        verify(&p, &eid, 2, &tree.root()).expect("vector proof verifies");
    }
    assert!(tree.proof(4).is_none());
    assert_eq!(
        reserves_message(&eid, &tree.root()),
        "por/v1 058049db24a02966a27441e3175422fa0e2e774f19aac9e13a5677c854d99036 \
         604d63165f2c47c24fd6f7aacb447fb27136fdf049b260c132b3d5633a5c988a 175000007"
    );
}

#[test]
fn json_forms_round_trip_and_are_checked() {
    let tree = vector_tree();
    let epoch = vector_epoch();
    let proof = tree.proof(1).expect("alice");
    let text = serde_json::to_string(&proof).expect("serialises");
    assert!(text.contains("\"version\":\"por/v1\""));
    assert!(text.contains("\"user_key\":\"b0e6156c"));
    let back: InclusionProof = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, proof);
    let wrong_version = text.replace("por/v1", "por/v2");
    assert!(serde_json::from_str::<InclusionProof>(&wrong_version).is_err());

    let report = tree.report(&epoch, Some(200_000_000));
    let text = serde_json::to_string(&report).expect("serialises");
    let back: Report = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, report);
    back.check(&proof).expect("alice checks against the report");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["reserves_message"], report.reserves_message());
    assert_eq!(v["root"]["sum"], 175_000_007u64);
    // A report whose derived fields disagree with its epoch is refused.
    let bad = text.replace("058049db", "158049db");
    assert!(serde_json::from_str::<Report>(&bad).is_err());
    let bad = text.replace("\"ledger_seq\":1000", "\"ledger_seq\":1001");
    assert!(serde_json::from_str::<Report>(&bad).is_err());

    let short = tree.report(&epoch, Some(175_000_006));
    assert_eq!(
        short.check(&proof),
        Err(PorError::ReservesShort {
            liabilities: 175_000_007,
            reserves: 175_000_006
        })
    );
    assert_eq!(tree.report(&epoch, Some(175_000_007)).check(&proof), Ok(()));
}

#[test]
fn builder_rejects_bad_inputs() {
    let e = vector_epoch();
    let b = |depth, accounts: &[(u64, &str, u64)]| {
        LiabilityTree::build(&e, &POR_SECRET, &PAD_SECRET, depth, accounts).map(|t| t.root())
    };
    assert_eq!(
        b(2, &[(1, "a", 1), (1, "b", 2)]),
        Err(PorError::DuplicateAccount(1))
    );
    assert_eq!(
        b(2, &[(1, "a", MAX_SAT + 1)]),
        Err(PorError::BalanceTooLarge {
            account_id: 1,
            balance: MAX_SAT + 1
        })
    );
    assert_eq!(
        b(2, &[(1, "a", MAX_SAT), (2, "b", 1)]),
        Err(PorError::SumExceedsSupply)
    );
    assert!(b(2, &[(1, "a", MAX_SAT - 1), (2, "b", 1)]).is_ok());
    assert_eq!(
        b(1, &[(1, "a", 1), (2, "b", 1), (3, "c", 1)]),
        Err(PorError::TooManyAccounts {
            accounts: 3,
            slots: 2
        })
    );
    assert_eq!(b(33, &[]), Err(PorError::DepthTooLarge(33)));
    // Enough accounts at the cap to overflow 64 bits.
    let logins: Vec<String> = (0..9000).map(|i| format!("u{i}")).collect();
    let many: Vec<(u64, &str, u64)> = logins
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64, l.as_str(), MAX_SAT))
        .collect();
    assert_eq!(b(14, &many), Err(PorError::SumOverflow));
    // Empty and depth-0 trees are fine.
    assert_eq!(b(0, &[(7, "x", 5)]).map(|r| r.sum), Ok(5));
    assert_eq!(b(3, &[]).map(|r| r.sum), Ok(0));
}

#[test]
fn node_sums_are_checked() {
    let a = SumNode {
        hash: [1; 32],
        sum: u64::MAX,
    };
    let one = SumNode {
        hash: [2; 32],
        sum: 1,
    };
    assert_eq!(node(&a, &one), Err(PorError::SumOverflow));
    let cap = SumNode {
        hash: [3; 32],
        sum: MAX_SAT,
    };
    assert_eq!(node(&cap, &one), Err(PorError::SumExceedsSupply));
    assert!(node(&cap, &SumNode { sum: 0, ..one }).is_ok());
}

#[test]
fn verifier_rejects_malformed_proofs() {
    let tree = vector_tree();
    let eid = tree.epoch_id();
    let root = tree.root();
    let good = tree.proof(1).expect("alice");
    verify(&good, &eid, 2, &root).expect("good");

    let mut p = good.clone();
    p.siblings.pop();
    assert_eq!(
        verify(&p, &eid, 2, &root),
        Err(PorError::WrongSiblingCount {
            expected: 2,
            got: 1
        })
    );
    let mut p = good.clone();
    p.siblings.push(good.siblings[0]);
    assert!(matches!(
        verify(&p, &eid, 2, &root),
        Err(PorError::WrongSiblingCount { .. })
    ));
    // The same proof checked at another depth.
    assert!(verify(&good, &eid, 3, &root).is_err());
    assert_eq!(
        verify(&good, &eid, 40, &root),
        Err(PorError::DepthTooLarge(40))
    );

    let mut p = good.clone();
    p.index = 4;
    assert_eq!(
        verify(&p, &eid, 2, &root),
        Err(PorError::IndexOutOfRange { index: 4, depth: 2 })
    );
    let mut p = good.clone();
    p.index = u64::MAX;
    assert!(matches!(
        verify(&p, &eid, 2, &root),
        Err(PorError::IndexOutOfRange { .. })
    ));

    let mut p = good.clone();
    p.siblings[1].sum = MAX_SAT + 1;
    assert_eq!(
        verify(&p, &eid, 2, &root),
        Err(PorError::SiblingSumTooLarge { level: 1 })
    );
    let mut p = good.clone();
    p.siblings[0].sum = u64::MAX;
    assert_eq!(
        verify(&p, &eid, 2, &root),
        Err(PorError::SiblingSumTooLarge { level: 0 })
    );
    // Each sibling within the cap, but together above it.
    let mut p = good.clone();
    p.siblings[0].sum = MAX_SAT;
    assert_eq!(verify(&p, &eid, 2, &root), Err(PorError::SumExceedsSupply));
    let mut p = good.clone();
    p.balance = MAX_SAT + 1;
    assert!(matches!(
        verify(&p, &eid, 2, &root),
        Err(PorError::BalanceTooLarge { .. })
    ));
    let huge_root = SumNode {
        sum: MAX_SAT + 1,
        ..root
    };
    assert_eq!(
        verify(&good, &eid, 2, &huge_root),
        Err(PorError::SumExceedsSupply)
    );

    // Every single-field change fails.
    let mut variants: Vec<InclusionProof> = Vec::new();
    for i in 0..2 {
        for delta in [1u64, u64::MAX] {
            let mut p = good.clone();
            p.siblings[i].sum = p.siblings[i].sum.wrapping_add(delta) % (MAX_SAT + 1);
            variants.push(p);
        }
        for byte in [0, 31] {
            let mut p = good.clone();
            p.siblings[i].hash[byte] ^= 1;
            variants.push(p);
        }
    }
    for f in 0..6 {
        let mut p = good.clone();
        match f {
            0 => p.balance += 1,
            1 => p.balance -= 1,
            2 => p.account_id += 1,
            3 => p.login.push('x'),
            4 => p.user_key[0] ^= 1,
            _ => p.index ^= 1,
        }
        variants.push(p);
    }
    for p in &variants {
        assert!(verify(p, &eid, 2, &root).is_err(), "{p:?} must fail");
    }
    let other_epoch = Epoch {
        ledger_seq: 1001,
        ..vector_epoch()
    };
    assert_eq!(
        verify(&good, &other_epoch.epoch_id(), 2, &root),
        Err(PorError::RootMismatch)
    );
}

proptest! {
    #[test]
    fn builtin_hmac_matches_the_hmac_crate(
        secret in proptest::collection::vec(any::<u8>(), 0..200),
        eid in any::<[u8; 32]>(),
        account in any::<u64>(),
    ) {
        let mut m = Hmac::<Sha256>::new_from_slice(&secret).expect("hmac takes any key");
        m.update(b"por/v1/user-key");
        m.update(&eid);
        m.update(&account.to_be_bytes());
        let want: [u8; 32] = m.finalize().into_bytes().into();
        prop_assert_eq!(por::user_key(&secret, &eid, account), want);
    }
}

/// A random account set for a tree of `depth`: unique ids, short logins, balances that
/// keep the total under the cap.
fn accounts(max_depth: u32) -> impl Strategy<Value = (u32, Vec<(u64, String, u64)>)> {
    (0..=max_depth).prop_flat_map(|depth| {
        let slots = 1usize << depth;
        (
            Just(depth),
            proptest::collection::btree_map(
                any::<u64>(),
                ("[a-z0-9_.]{0,8}", 0..=MAX_SAT / 64),
                0..=slots,
            ),
        )
            .prop_map(|(d, m): (u32, BTreeMap<u64, (String, u64)>)| {
                (d, m.into_iter().map(|(id, (l, b))| (id, l, b)).collect())
            })
    })
}

fn as_refs(v: &[(u64, String, u64)]) -> Vec<(u64, &str, u64)> {
    v.iter().map(|(i, l, b)| (*i, l.as_str(), *b)).collect()
}

fn epoch_strategy() -> impl Strategy<Value = Epoch> {
    (any::<u64>(), any::<u32>(), any::<[u8; 32]>()).prop_map(|(s, h, b)| Epoch {
        ledger_seq: s,
        block_height: h,
        block_hash: b,
    })
}

/// What an honest customer does: the proof must name them and their balance, and lead to
/// the published root.
fn customer_accepts(proof: &InclusionProof, report: &Report, who: &(u64, String, u64)) -> bool {
    proof.is_for(who.0, &who.1, who.2) && report.check(proof).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_customer_proof_verifies(
        (depth, accts) in accounts(6),
        epoch in epoch_strategy(),
        por_secret in any::<[u8; 32]>(),
        pad_secret in any::<[u8; 32]>(),
    ) {
        let tree = LiabilityTree::build(&epoch, &por_secret, &pad_secret, depth, &as_refs(&accts))
            .expect("valid input builds");
        let total: u64 = accts.iter().map(|a| a.2).sum();
        prop_assert_eq!(tree.root().sum, total);
        prop_assert_eq!(tree.accounts(), accts.len());
        let report = tree.report(&epoch, Some(total));
        let mut seen = std::collections::BTreeSet::new();
        for a in &accts {
            let p = tree.proof(a.0).expect("every customer has a proof");
            prop_assert!(seen.insert(p.index), "two customers share a slot");
            prop_assert_eq!(p.siblings.len(), depth as usize);
            prop_assert!(customer_accepts(&p, &report, a));
            let json = serde_json::to_string(&p).expect("serialises");
            let back: InclusionProof = serde_json::from_str(&json).expect("parses");
            prop_assert!(report.check(&back).is_ok());
        }
        // Slots are sorted by user id, so real and padding leaves interleave by chance; the
        // leaves' sums add up to the root's.
        let leaf_total: u64 = (0..1u64 << depth)
            .map(|i| tree.leaf_at(i).map_or(0, |l| l.sum))
            .sum();
        prop_assert_eq!(leaf_total, total);
    }

    /// The exchange publishes the root of a tree in which one customer ("the victim") is
    /// dropped, under-stated, or replaced by another customer's leaf of the same balance.
    /// Whatever proof it then hands the victim — the cheating tree's own proof, the honest
    /// tree's proof, the victim's true leaf spliced onto any path of the cheating tree, or
    /// another customer's proof relabelled — the victim's check fails.
    #[test]
    fn cheating_trees_are_caught_by_the_victim(
        (depth, accts) in accounts(4).prop_filter("two customers", |(_, a)| a.len() >= 2),
        victim_pick in any::<prop::sample::Index>(),
        cheat in 0..3u8,
        epoch in epoch_strategy(),
    ) {
        let mut accts = accts;
        let victim_pos = victim_pick.index(accts.len());
        if accts[victim_pos].2 == 0 {
            accts[victim_pos].2 = 1;
        }
        let victim = accts[victim_pos].clone();
        let other_pos = (victim_pos + 1) % accts.len();
        let mut cheating = accts.clone();
        match cheat {
            // Drop the victim.
            0 => { cheating.remove(victim_pos); }
            // Lower the victim's balance.
            1 => { cheating[victim_pos].2 -= 1; }
            // Count the victim's balance only once: another customer with the same balance
            // stands in for them.
            _ => {
                accts[other_pos].2 = victim.2;
                cheating = accts.clone();
                cheating.remove(victim_pos);
            }
        }
        let honest = LiabilityTree::build(&epoch, &POR_SECRET, &PAD_SECRET, depth, &as_refs(&accts))
            .expect("honest tree");
        let bad = LiabilityTree::build(&epoch, &POR_SECRET, &PAD_SECRET, depth, &as_refs(&cheating))
            .expect("cheating tree");
        prop_assert!(bad.root().sum < honest.root().sum);
        let published = bad.report(&epoch, None);

        let mut offers: Vec<InclusionProof> = Vec::new();
        offers.extend(bad.proof(victim.0));
        offers.extend(honest.proof(victim.0));
        let true_proof = honest.proof(victim.0).expect("victim in honest tree");
        for index in 0..1u64 << depth {
            // The victim's true leaf under the cheating tree's path at any slot.
            let siblings = bad.path(index).expect("slot exists");
            offers.push(InclusionProof { index, siblings, ..true_proof.clone() });
        }
        for a in &cheating {
            let p = bad.proof(a.0).expect("in the cheating tree");
            // Another customer's proof, relabelled as the victim's, and as it is.
            offers.push(InclusionProof {
                account_id: victim.0,
                login: victim.1.clone(),
                balance: victim.2,
                ..p.clone()
            });
            offers.push(p);
        }
        prop_assert!(!offers.is_empty());
        for offer in &offers {
            prop_assert!(!customer_accepts(offer, &published, &victim), "accepted {:?}", offer);
        }
        // While the honest tree's root passes the same check.
        prop_assert!(customer_accepts(&true_proof, &honest.report(&epoch, None), &victim));
    }

    #[test]
    fn malformed_json_never_panics(s in "\\PC{0,200}") {
        let _ = serde_json::from_str::<InclusionProof>(&s);
        let _ = serde_json::from_str::<Report>(&s);
    }
}
