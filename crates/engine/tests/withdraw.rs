//! Chain withdrawals on the books: policy checks at request time, review, address
//! delays, batches that lock their coins, fee bumps, and settlement or cancellation
//! exactly once — with the invariants and the state encoding checked after each step.

use kura_engine::genesis::{self, BTC};
use kura_engine::{
    BatchState, Command, Ctx, Engine, Limits, Outpoint, Reject, WalletRole, WithdrawalPolicy,
    WithdrawalState,
};
use kura_ledger::SystemAccount;
use kura_units::{Amount, UserId};

const ALICE: UserId = UserId(0);
const BOB: UserId = UserId(1);
const HOUR: u64 = 3_600_000;
const DESTINATION: &str = "bcrt1qdestination";

struct World {
    engine: Engine,
    seq: u64,
    now: u64,
}

impl World {
    fn new() -> World {
        let mut w = World {
            engine: Engine::new(Limits::default()),
            seq: 0,
            now: 1_000_000,
        };
        for cmd in genesis::genesis() {
            w.ok(cmd);
        }
        w.ok(Command::CreateUser);
        w.ok(Command::CreateUser);
        for user in [ALICE, BOB] {
            w.ok(Command::Deposit {
                user,
                asset: BTC,
                amount: Amount::new(10_000_000),
                reference: format!("seed-{}", user.0),
            });
        }
        w.ok(Command::RegisterWallet {
            asset: BTC,
            role: WalletRole::Hot,
            descriptor: "wpkh(hot)".into(),
        });
        w.ok(Command::SetWithdrawalPolicy {
            asset: BTC,
            policy: WithdrawalPolicy {
                fee: Amount::new(1_000),
                min_amount: Amount::new(10_000),
                daily_limit: Amount::new(5_000_000),
                approval_above: Amount::new(2_000_000),
                address_delay_ms: HOUR,
                listed_only: false,
            },
        });
        w
    }

    fn apply(&mut self, cmd: Command) -> Result<Vec<kura_engine::Event>, Reject> {
        self.seq += 1;
        let before = self.engine.state_hash();
        let out = self.engine.apply_owned(
            &cmd,
            Ctx {
                seq: self.seq,
                timestamp_ms: self.now,
            },
        );
        if out.is_err() {
            assert_eq!(
                before,
                self.engine.state_hash(),
                "a rejection changed the state"
            );
        }
        self.engine
            .check_invariants()
            .unwrap_or_else(|e| panic!("after {}: {e}", cmd.name()));
        // The state survives its own encoding.
        let mut bytes = Vec::new();
        self.engine.encode_state(&mut bytes);
        let back = Engine::decode_state(&bytes, Limits::default()).expect("decodes");
        assert_eq!(back.state_hash(), self.engine.state_hash());
        out
    }

    /// Why `cmd` was refused, or `None` if it was applied.
    fn refusal(&mut self, cmd: Command) -> Option<Reject> {
        self.apply(cmd).err()
    }

    fn ok(&mut self, cmd: Command) -> Vec<kura_engine::Event> {
        let name = cmd.name();
        self.apply(cmd)
            .unwrap_or_else(|r| panic!("{name} refused: {r}"))
    }

    fn request(&mut self, user: UserId, amount: u64, id: &str) -> Result<(), Reject> {
        self.apply(Command::RequestChainWithdrawal {
            user,
            asset: BTC,
            amount: Amount::new(amount),
            id: id.into(),
            address: DESTINATION.into(),
        })
        .map(|_| ())
    }

    fn state(&self, id: &str) -> WithdrawalState {
        self.engine.withdrawal(id).expect("known").state
    }

    fn available(&self, user: UserId) -> u64 {
        self.engine
            .ledger()
            .balance(user, BTC)
            .expect("user")
            .available
            .get()
    }

    fn held(&self, user: UserId) -> u64 {
        self.engine
            .ledger()
            .balance(user, BTC)
            .expect("user")
            .held
            .get()
    }

    fn system(&self, account: SystemAccount) -> i128 {
        self.engine.ledger().system(account, BTC).expect("asset")
    }

    fn batch(&mut self, ids: &[&str], coins: &[Outpoint], fee: u64) -> Result<(), Reject> {
        let next = self.engine.wallets()[0].next_index;
        self.apply(Command::BuildWithdrawalBatch {
            asset: BTC,
            withdrawals: ids.iter().map(|s| s.to_string()).collect(),
            inputs: coins.to_vec(),
            change: Some((0, next)),
            network_fee: Amount::new(fee),
            txid: [self.seq as u8; 32],
        })
        .map(|_| ())
    }
}

fn coin(n: u8) -> Outpoint {
    Outpoint {
        txid: [n; 32],
        vout: u32::from(n),
    }
}

#[test]
fn a_request_holds_its_amount_and_waits_for_a_new_address_delay() {
    let mut w = World::new();
    w.request(ALICE, 500_000, "w1").expect("accepted");
    assert_eq!(w.held(ALICE), 500_000);
    assert_eq!(w.available(ALICE), 9_500_000);
    assert_eq!(w.state("w1"), WithdrawalState::Approved);
    // The address was new: it is listed now and payable in one hour.
    assert_eq!(
        w.engine.withdrawal_address(ALICE, BTC, DESTINATION),
        Some(w.now + HOUR)
    );
    assert!(w.engine.ready_withdrawals(BTC, w.now).is_empty());
    assert_eq!(w.batch(&["w1"], &[coin(1)], 200), Err(Reject::InvalidBatch));
    w.now += HOUR;
    assert_eq!(w.engine.ready_withdrawals(BTC, w.now).len(), 1);
    w.batch(&["w1"], &[coin(1)], 200).expect("released");
    assert_eq!(w.state("w1"), WithdrawalState::Batched);
    // The same id again is refused, whatever its state.
    assert_eq!(
        w.request(ALICE, 500_000, "w1"),
        Err(Reject::DuplicateWithdrawal)
    );
}

#[test]
fn policy_checks_refuse_without_changing_anything() {
    let mut w = World::new();
    assert_eq!(
        w.request(ALICE, 1_000, "small"),
        Err(Reject::AmountBelowMinimum)
    );
    assert_eq!(
        w.request(ALICE, 20_000_000, "big"),
        Err(Reject::DailyLimitExceeded)
    );
    w.request(ALICE, 2_000_000, "a").expect("at the threshold");
    w.request(ALICE, 2_000_000, "b")
        .expect("still within the day");
    assert_eq!(
        w.request(ALICE, 1_500_000, "c"),
        Err(Reject::DailyLimitExceeded)
    );
    // Cancelled requests do not count, and a day later the window has moved on.
    w.ok(Command::CancelWithdrawal { id: "b".into() });
    assert_eq!(w.held(ALICE), 2_000_000);
    w.request(ALICE, 1_500_000, "c")
        .expect("b no longer counts");
    w.now += 24 * HOUR;
    w.request(ALICE, 3_000_000, "d").expect("a new day");
    assert_eq!(
        w.state("d"),
        WithdrawalState::Review,
        "above the approval threshold"
    );
    assert_eq!(
        w.apply(Command::RequestChainWithdrawal {
            user: ALICE,
            asset: BTC,
            amount: Amount::new(20_000),
            id: "bad".into(),
            address: "no spaces allowed".into(),
        })
        .map(|_| ()),
        Err(Reject::InvalidAddress)
    );
    w.ok(Command::HaltWithdrawals {
        asset: BTC,
        reason: "drill".into(),
    });
    assert_eq!(
        w.request(BOB, 20_000, "halted"),
        Err(Reject::WithdrawalsHalted)
    );
}

#[test]
fn listed_only_policy_refuses_new_addresses_and_honours_the_delay_of_listed_ones() {
    let mut w = World::new();
    let mut policy = w.engine.withdrawal_policy(BTC).expect("set");
    policy.listed_only = true;
    w.ok(Command::SetWithdrawalPolicy { asset: BTC, policy });
    assert_eq!(w.request(BOB, 50_000, "x"), Err(Reject::AddressNotAllowed));
    w.ok(Command::AddWithdrawalAddress {
        user: BOB,
        asset: BTC,
        address: DESTINATION.into(),
    });
    assert_eq!(
        w.apply(Command::AddWithdrawalAddress {
            user: BOB,
            asset: BTC,
            address: DESTINATION.into(),
        })
        .map(|_| ()),
        Err(Reject::AddressListed)
    );
    w.request(BOB, 50_000, "x").expect("listed");
    assert_eq!(
        w.engine.withdrawal("x").expect("known").release_ms,
        w.now + HOUR
    );
}

/// Alice's withdrawal "big", to an address listed an hour ago, held for review.
fn big_in_review() -> World {
    let mut w = World::new();
    w.ok(Command::AddWithdrawalAddress {
        user: ALICE,
        asset: BTC,
        address: DESTINATION.into(),
    });
    w.now += HOUR;
    w.request(ALICE, 3_000_000, "big").expect("accepted");
    assert_eq!(w.state("big"), WithdrawalState::Review);
    w
}

#[test]
fn review_needs_an_operator_before_batching() {
    let mut w = big_in_review();
    assert_eq!(
        w.batch(&["big"], &[coin(1)], 200),
        Err(Reject::InvalidBatch)
    );
    w.ok(Command::ApproveWithdrawal { id: "big".into() });
    assert_eq!(
        w.apply(Command::ApproveWithdrawal { id: "big".into() })
            .map(|_| ()),
        Err(Reject::WithdrawalNotInReview)
    );
    // An operator's rejection arriving after the approval does not cancel it.
    let reject = |id: &str| Command::RejectWithdrawal { id: id.into() };
    assert_eq!(
        w.refusal(reject("big")),
        Some(Reject::WithdrawalNotInReview)
    );
    assert_eq!(w.refusal(reject("nope")), Some(Reject::UnknownWithdrawal));
    w.batch(&["big"], &[coin(1)], 200).expect("approved");
}

#[test]
fn a_withdrawal_in_review_can_be_rejected_and_its_hold_returns() {
    let mut w = big_in_review();
    let alice = |w: &World| {
        let b = w.engine.ledger().balance(ALICE, BTC).expect("balance");
        (b.available.get(), b.held.get())
    };
    let (available, held) = alice(&w);
    w.ok(Command::RejectWithdrawal { id: "big".into() });
    assert_eq!(w.state("big"), WithdrawalState::Cancelled);
    assert_eq!(alice(&w), (available + 3_000_000, held - 3_000_000));
    let approve = Command::ApproveWithdrawal { id: "big".into() };
    assert_eq!(w.refusal(approve), Some(Reject::WithdrawalNotInReview));
}

#[test]
fn a_batch_locks_its_coins_and_settles_exactly_once() {
    let mut w = World::new();
    w.ok(Command::AddWithdrawalAddress {
        user: ALICE,
        asset: BTC,
        address: DESTINATION.into(),
    });
    w.ok(Command::AddWithdrawalAddress {
        user: BOB,
        asset: BTC,
        address: DESTINATION.into(),
    });
    w.now += HOUR;
    w.request(ALICE, 400_000, "a").expect("ok");
    w.request(BOB, 600_000, "b").expect("ok");
    w.request(BOB, 100_000, "c").expect("ok");
    let owed_before = w.engine.ledger().customer_total(BTC).expect("asset");
    let income_before = w.system(SystemAccount::FeeIncome);
    w.batch(&["a", "b"], &[coin(1), coin(2)], 300)
        .expect("built");
    assert_eq!(
        w.engine.wallets()[0].next_index,
        1,
        "the change index is used up"
    );
    assert_eq!(w.engine.batch_spending(&coin(2)), Some(0));
    // A coin of an open batch cannot be spent by another; a member cannot join twice.
    assert_eq!(w.batch(&["c"], &[coin(2)], 300), Err(Reject::InvalidBatch));
    assert_eq!(w.batch(&["a"], &[coin(3)], 300), Err(Reject::InvalidBatch));
    // A batched withdrawal is the chain's now: no manual settle or cancel.
    assert_eq!(
        w.apply(Command::CancelWithdrawal { id: "a".into() })
            .map(|_| ()),
        Err(Reject::WithdrawalBatched)
    );
    assert_eq!(
        w.apply(Command::SettleWithdrawal { id: "a".into() })
            .map(|_| ()),
        Err(Reject::WithdrawalBatched)
    );
    // A fee bump must raise the fee.
    let bump = |fee: u64, txid: u8| Command::BumpWithdrawalBatch {
        batch: 0,
        txid: [txid; 32],
        network_fee: Amount::new(fee),
    };
    assert_eq!(
        w.apply(bump(300, 0xb1)).map(|_| ()),
        Err(Reject::InvalidBatch)
    );
    w.ok(bump(900, 0xb1));
    assert_eq!(
        w.engine.withdrawal_batch(0).expect("batch").versions.len(),
        2
    );
    // The bump confirms (not the original): settled once, fee income pays the network.
    let finish = Command::FinishWithdrawalBatch {
        batch: 0,
        txid: [0xb1; 32],
        height: 150,
        network_fee: Amount::new(900),
        paid: true,
    };
    let events = w.ok(finish.clone());
    let settled = events
        .iter()
        .filter(|e| matches!(e.kind, kura_engine::EventKind::WithdrawalSettled { .. }))
        .count();
    assert_eq!(settled, 2);
    assert_eq!(w.apply(finish).map(|_| ()), Err(Reject::BatchNotOpen));
    assert_eq!(w.state("a"), WithdrawalState::Settled);
    assert_eq!(w.held(ALICE), 0);
    assert_eq!(w.held(BOB), 100_000, "c is still waiting");
    let owed_after = w.engine.ledger().customer_total(BTC).expect("asset");
    assert_eq!(
        owed_before - owed_after,
        1_000_000,
        "both amounts left the books"
    );
    assert_eq!(
        w.system(SystemAccount::FeeIncome) - income_before,
        2 * 1_000 - 900,
        "two withdrawal fees in, one network fee out"
    );
    assert_eq!(w.engine.batch_spending(&coin(2)), None, "coins unlocked");
    assert!(matches!(
        w.engine.withdrawal_batch(0).expect("batch").state,
        BatchState::Confirmed { height: 150, .. }
    ));
    // c can now use the coin.
    w.batch(&["c"], &[coin(2)], 300).expect("coin free again");
}

#[test]
fn a_confirmed_cancel_refunds_every_member() {
    let mut w = World::new();
    w.ok(Command::AddWithdrawalAddress {
        user: BOB,
        asset: BTC,
        address: DESTINATION.into(),
    });
    w.now += HOUR;
    w.request(BOB, 700_000, "b").expect("ok");
    w.batch(&["b"], &[coin(7)], 300).expect("built");
    let income = w.system(SystemAccount::FeeIncome);
    w.ok(Command::FinishWithdrawalBatch {
        batch: 0,
        txid: [0xcc; 32],
        height: 151,
        network_fee: Amount::new(500),
        paid: false,
    });
    assert_eq!(w.state("b"), WithdrawalState::Cancelled);
    assert_eq!(w.available(BOB), 10_000_000, "the whole amount is back");
    assert_eq!(w.held(BOB), 0);
    assert_eq!(w.system(SystemAccount::FeeIncome), income - 500);
}

#[test]
fn a_transfer_between_our_wallets_locks_its_coins_and_moves_only_the_fee() {
    let mut w = World::new();
    w.ok(Command::RegisterWallet {
        asset: BTC,
        role: WalletRole::Cold,
        descriptor: "wsh(cold)".into(),
    });
    w.ok(Command::RegisterWallet {
        asset: BTC,
        role: WalletRole::Deposit,
        descriptor: "wpkh(deposit)".into(),
    });
    let (hot, cold, deposit) = (0u32, 1u32, 2u32);
    let sweep =
        |to: (u32, u32), change: Option<(u32, u32)>, coins: &[Outpoint]| Command::BuildTransfer {
            asset: BTC,
            inputs: coins.to_vec(),
            to,
            amount: Amount::new(5_000_000),
            change,
            network_fee: Amount::new(300),
            txid: [9; 32],
        };
    // Only to the next index of a hot or cold wallet, change to another wallet.
    for bad in [
        sweep((cold, 1), Some((hot, 0)), &[coin(1)]),
        sweep((deposit, 0), Some((hot, 0)), &[coin(1)]),
        sweep((cold, 0), Some((cold, 0)), &[coin(1)]),
        sweep((cold, 0), Some((hot, 0)), &[]),
        sweep((cold, 0), Some((hot, 0)), &[coin(1), coin(1)]),
        sweep((7, 0), None, &[coin(1)]),
    ] {
        assert_eq!(w.apply(bad), Err(Reject::InvalidBatch));
    }
    let liabilities = w.engine.ledger().customer_total(BTC).expect("asset");
    let events = w.ok(sweep((cold, 0), Some((hot, 0)), &[coin(1), coin(2)]));
    assert!(events.iter().any(|e| matches!(
        e.kind,
        kura_engine::EventKind::TransferBuilt { batch: 0, .. }
    )));
    assert_eq!(w.engine.wallets()[cold as usize].next_index, 1);
    assert_eq!(w.engine.wallets()[hot as usize].next_index, 1);
    let b = w.engine.withdrawal_batch(0).expect("batch").clone();
    assert!(b.withdrawals.is_empty());
    assert_eq!(b.transfer.map(|t| t.to), Some((cold, 0)));
    // Its coins are locked: neither a withdrawal batch nor another transfer takes them.
    assert_eq!(w.engine.batch_spending(&coin(2)), Some(0));
    assert_eq!(
        w.apply(sweep((cold, 1), Some((hot, 1)), &[coin(2)])),
        Err(Reject::InvalidBatch)
    );
    // Halted withdrawals stop transfers too.
    w.ok(Command::HaltWithdrawals {
        asset: BTC,
        reason: "drill".into(),
    });
    assert_eq!(
        w.apply(sweep((cold, 1), Some((hot, 1)), &[coin(3)])),
        Err(Reject::WithdrawalsHalted)
    );
    w.ok(Command::ResumeWithdrawals { asset: BTC });
    let income = w.system(SystemAccount::FeeIncome);
    w.ok(Command::FinishWithdrawalBatch {
        batch: 0,
        txid: [9; 32],
        height: 10,
        network_fee: Amount::new(300),
        paid: true,
    });
    // No customer balance moved; the network fee came out of fee income.
    assert_eq!(
        w.engine.ledger().customer_total(BTC).expect("asset"),
        liabilities
    );
    assert_eq!(w.system(SystemAccount::FeeIncome), income - 300);
    assert_eq!(w.available(ALICE), 10_000_000);
    assert_eq!(w.engine.batch_spending(&coin(2)), None);
    assert!(matches!(
        w.engine.withdrawal_batch(0).expect("batch").state,
        BatchState::Confirmed { height: 10, .. }
    ));
}

#[test]
fn only_a_refill_can_be_abandoned_and_it_unlocks_its_coins() {
    let mut w = World::new();
    w.ok(Command::RegisterWallet {
        asset: BTC,
        role: WalletRole::Cold,
        descriptor: "wsh(cold)".into(),
    });
    let (hot, cold) = (0u32, 1u32);
    let transfer =
        |to: (u32, u32), change: (u32, u32), coins: &[Outpoint], txid: u8| Command::BuildTransfer {
            asset: BTC,
            inputs: coins.to_vec(),
            to,
            amount: Amount::new(5_000_000),
            change: Some(change),
            network_fee: Amount::new(300),
            txid: [txid; 32],
        };
    // Batch 0: a sweep to cold storage; batch 1: a refill from it.
    w.ok(transfer((cold, 0), (hot, 0), &[coin(1)], 1));
    w.ok(transfer((hot, 1), (cold, 1), &[coin(2), coin(3)], 2));
    assert_eq!(w.engine.batch_spending(&coin(2)), Some(1));
    // A sweep (signed by the hot key at once) and an unknown batch are refused.
    assert_eq!(
        w.apply(Command::AbandonTransfer { batch: 0 }),
        Err(Reject::InvalidBatch)
    );
    assert_eq!(
        w.apply(Command::AbandonTransfer { batch: 9 }),
        Err(Reject::UnknownBatch)
    );
    let events = w.ok(Command::AbandonTransfer { batch: 1 });
    assert!(events.iter().any(|e| matches!(
        e.kind,
        kura_engine::EventKind::TransferAbandoned { batch: 1 }
    )));
    assert_eq!(
        w.engine.withdrawal_batch(1).expect("batch").state,
        BatchState::Abandoned
    );
    // Its coins are free: the next refill may spend them. Nothing else moved.
    assert_eq!(w.engine.batch_spending(&coin(2)), None);
    assert_eq!(w.engine.batch_spending(&coin(3)), None);
    assert_eq!(w.engine.batch_spending(&coin(1)), Some(0));
    assert_eq!(
        w.apply(Command::AbandonTransfer { batch: 1 }),
        Err(Reject::BatchNotOpen)
    );
    w.ok(transfer((hot, 2), (cold, 2), &[coin(2), coin(3)], 3));
    assert_eq!(w.engine.batch_spending(&coin(2)), Some(2));
}
