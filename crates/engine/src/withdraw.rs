//! Chain withdrawals on the books: the per-asset policy, customers' destination
//! addresses, requests, manual approval, and batches identified by the coins they
//! spend — never by a txid.
//!
//! The life of a chain withdrawal (research §1.6):
//!
//! ```text
//! requested ─(above the approval threshold)→ review ─(operator)→ approved
//! requested ───────────────────────────────────────────────────→ approved
//! approved ─(released: its address's delay is over)→ batched{batch}
//! batched ─(a confirmed tx spends the batch's coins and pays every output)→ settled
//! batched ─(a confirmed tx spends the batch's coins back to our own wallets)→ cancelled
//! ```
//!
//! The amount is held at request time, once, under the caller's idempotency id, and
//! stays held while the withdrawal is in flight, so reconciliation counts it as owed
//! until the block that pays it. A batch records its inputs when it is built — before
//! anything is signed or broadcast — so a crash at any later point cannot lose track of
//! it: every version (fee bumps included) spends the same coins, at most one of them
//! can confirm, and whichever does settles the batch exactly once. The coins of an open
//! batch are locked: no other batch may spend them.
//!
//! The engine never parses an address or a transaction: the custody layer checks them
//! before it submits a command, and the signer checks them again before it signs.

use crate::{Ctx, Engine, Event, EventKind, Reject, WalletRole, Withdrawal, WithdrawalState};
use kura_ledger::{Account, SystemAccount};
use kura_units::{Amount, AssetId, UserId};

/// Longest destination address, in bytes (a bech32 address has at most 90 characters).
pub const ADDRESS_MAX: usize = 100;
/// Most withdrawals, and most inputs, in one batch.
pub const BATCH_MAX: usize = 1000;
/// The window of the per-customer daily limit.
pub const DAY_MS: u64 = 86_400_000;

/// The operator's rules for withdrawals of one asset (journaled, so every decision can
/// be replayed and audited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WithdrawalPolicy {
    /// Charged to the customer on each withdrawal, out of the requested amount.
    pub fee: Amount,
    /// Smallest amount a customer may request (it must also exceed the fee).
    pub min_amount: Amount,
    /// Most a customer may request in any 24 hours (cancelled requests do not count).
    pub daily_limit: Amount,
    /// Requests above this wait for an operator's approval.
    pub approval_above: Amount,
    /// A destination first seen (or added) at time t may be paid from t + this.
    pub address_delay_ms: u64,
    /// Only addresses on the customer's list may be paid (new ones are refused rather
    /// than added with a delay).
    pub listed_only: bool,
}

/// One of our coins: a transaction id (internal byte order) and output index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outpoint {
    pub txid: [u8; 32],
    pub vout: u32,
}

/// One signed version of a batch (the first, then each fee bump).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchVersion {
    pub txid: [u8; 32],
    pub network_fee: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchState {
    /// Built; some version may be in the mempool.
    Open,
    /// A transaction paying every withdrawal confirmed at `height`.
    Confirmed { txid: [u8; 32], height: u32 },
    /// A transaction spending the batch's coins back to our own wallets confirmed.
    Cancelled { txid: [u8; 32], height: u32 },
    /// A transfer an operator abandoned before it reached the network.
    Abandoned,
}

/// A set of withdrawals paid by one transaction (and its fee bumps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalBatch {
    pub asset: AssetId,
    pub withdrawals: Vec<String>,
    pub inputs: Vec<Outpoint>,
    /// The change output's (wallet, index), if the batch has one.
    pub change: Option<(u32, u32)>,
    pub versions: Vec<BatchVersion>,
    pub state: BatchState,
    pub built_ms: u64,
    /// Set for a transfer between our own wallets (then `withdrawals` is empty).
    pub transfer: Option<Transfer>,
}

/// What a transfer between our own wallets pays: `amount` to (wallet, index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub to: (u32, u32),
    pub amount: Amount,
}

fn push(out: &mut Vec<Event>, ctx: Ctx, kind: EventKind) {
    out.push(Event { seq: ctx.seq, kind });
}

fn check_address(address: &str) -> Result<(), Reject> {
    if address.is_empty()
        || address.len() > ADDRESS_MAX
        || !address.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(Reject::InvalidAddress);
    }
    Ok(())
}

impl Engine {
    pub(crate) fn set_withdrawal_policy(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        asset: AssetId,
        policy: WithdrawalPolicy,
    ) -> Result<(), Reject> {
        self.check_asset(asset)?;
        if policy.min_amount <= policy.fee || policy.daily_limit < policy.min_amount {
            return Err(Reject::InvalidPolicy);
        }
        self.assets[usize::from(asset.0)].withdrawal_policy = Some(policy);
        push(out, ctx, EventKind::WithdrawalPolicySet { asset, policy });
        Ok(())
    }

    /// Put `address` on the customer's list; it may be paid after the policy's delay.
    pub(crate) fn add_withdrawal_address(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
        address: &str,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        self.check_asset(asset)?;
        check_address(address)?;
        let policy = self.policy(asset)?;
        let key = (user.0, asset.0, address.to_owned());
        if self.withdrawal_addresses.contains_key(&key) {
            return Err(Reject::AddressListed);
        }
        let usable_from_ms = ctx.timestamp_ms.saturating_add(policy.address_delay_ms);
        self.withdrawal_addresses.insert(key, usable_from_ms);
        push(
            out,
            ctx,
            EventKind::WithdrawalAddressAdded {
                user,
                asset,
                address: address.to_owned(),
                usable_from_ms,
            },
        );
        Ok(())
    }

    fn policy(&self, asset: AssetId) -> Result<WithdrawalPolicy, Reject> {
        self.assets[usize::from(asset.0)]
            .withdrawal_policy
            .ok_or(Reject::NoWithdrawalPolicy)
    }

    /// What `user` requested of `asset` in the 24 hours before `now_ms` and did not cancel.
    fn requested_today(&self, user: UserId, asset: AssetId, now_ms: u64) -> u128 {
        let from = now_ms.saturating_sub(DAY_MS - 1);
        self.withdrawals_by_user
            .range(
                (user.0, asset.0, from, String::new())..=(user.0, asset.0, u64::MAX, String::new()),
            )
            .filter_map(|(_, _, _, id)| self.withdrawals.get(id))
            .filter(|w| w.state != WithdrawalState::Cancelled)
            .map(|w| u128::from(w.amount.get()))
            .sum()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn request_chain_withdrawal(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
        amount: Amount,
        id: &str,
        address: &str,
    ) -> Result<(), Reject> {
        self.check_withdrawal_request(user, asset, id)?;
        check_address(address)?;
        let policy = self.policy(asset)?;
        if amount < policy.min_amount || amount <= policy.fee {
            return Err(Reject::AmountBelowMinimum);
        }
        let today = self.requested_today(user, asset, ctx.timestamp_ms);
        if today + u128::from(amount.get()) > u128::from(policy.daily_limit.get()) {
            return Err(Reject::DailyLimitExceeded);
        }
        let key = (user.0, asset.0, address.to_owned());
        let listed = self.withdrawal_addresses.get(&key).copied();
        if listed.is_none() && policy.listed_only {
            return Err(Reject::AddressNotAllowed);
        }
        let available = self
            .ledger
            .balance(user, asset)
            .map_err(|_| Reject::UnknownUser)?
            .available;
        if available < amount {
            return Err(Reject::InsufficientFunds);
        }
        // Checks done; from here on nothing fails.
        let usable_from_ms = match listed {
            Some(t) => t,
            None => {
                let t = ctx.timestamp_ms.saturating_add(policy.address_delay_ms);
                self.withdrawal_addresses.insert(key, t);
                push(
                    out,
                    ctx,
                    EventKind::WithdrawalAddressAdded {
                        user,
                        asset,
                        address: address.to_owned(),
                        usable_from_ms: t,
                    },
                );
                t
            }
        };
        self.ledger
            .transfer(Account::Available(user), Account::Held(user), asset, amount)
            .map_err(|_| Reject::InsufficientFunds)?;
        let review = amount > policy.approval_above;
        let release_ms = usable_from_ms.max(ctx.timestamp_ms);
        self.withdrawals.insert(
            id.to_owned(),
            Withdrawal {
                user,
                asset,
                amount,
                state: if review {
                    WithdrawalState::Review
                } else {
                    WithdrawalState::Approved
                },
                address: address.to_owned(),
                fee: policy.fee,
                requested_ms: ctx.timestamp_ms,
                release_ms,
                batch: None,
            },
        );
        self.withdrawals_by_user
            .insert((user.0, asset.0, ctx.timestamp_ms, id.to_owned()));
        if !review {
            self.approved_withdrawals.insert(id.to_owned());
        }
        self.touch(user, asset);
        push(
            out,
            ctx,
            EventKind::WithdrawalRequested {
                user,
                asset,
                amount,
                id: id.to_owned(),
            },
        );
        push(
            out,
            ctx,
            EventKind::WithdrawalRouted {
                id: id.to_owned(),
                address: address.to_owned(),
                fee: policy.fee,
                release_ms,
                review,
            },
        );
        Ok(())
    }

    pub(crate) fn approve_withdrawal(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        id: &str,
    ) -> Result<(), Reject> {
        let w = self
            .withdrawals
            .get_mut(id)
            .ok_or(Reject::UnknownWithdrawal)?;
        if w.state != WithdrawalState::Review {
            return Err(Reject::WithdrawalNotInReview);
        }
        w.state = WithdrawalState::Approved;
        self.approved_withdrawals.insert(id.to_owned());
        push(
            out,
            ctx,
            EventKind::WithdrawalApproved { id: id.to_owned() },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build_withdrawal_batch(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        asset: AssetId,
        withdrawals: &[String],
        inputs: &[Outpoint],
        change: Option<(u32, u32)>,
        network_fee: Amount,
        txid: [u8; 32],
    ) -> Result<(), Reject> {
        self.check_asset(asset)?;
        if self.assets[usize::from(asset.0)]
            .withdrawals_halted
            .is_some()
        {
            return Err(Reject::WithdrawalsHalted);
        }
        if withdrawals.is_empty()
            || inputs.is_empty()
            || withdrawals.len() > BATCH_MAX
            || inputs.len() > BATCH_MAX
        {
            return Err(Reject::InvalidBatch);
        }
        let mut seen = std::collections::BTreeSet::new();
        for id in withdrawals {
            let w = self.withdrawals.get(id).ok_or(Reject::UnknownWithdrawal)?;
            if w.asset != asset
                || w.state != WithdrawalState::Approved
                || w.release_ms > ctx.timestamp_ms
                || !seen.insert(id.as_str())
            {
                return Err(Reject::InvalidBatch);
            }
        }
        self.check_coins(inputs)?;
        if let Some(change) = change {
            self.check_next_index(asset, change)?;
        }
        // Checks done.
        let batch = self.withdrawal_batches.len() as u64;
        if let Some(change) = change {
            self.take_index(change);
        }
        for id in withdrawals {
            if let Some(w) = self.withdrawals.get_mut(id) {
                w.state = WithdrawalState::Batched;
                w.batch = Some(batch);
            }
            self.approved_withdrawals.remove(id);
        }
        for input in inputs {
            self.locked_inputs.insert(*input, batch);
        }
        self.open_batches.insert(batch);
        self.withdrawal_batches.push(WithdrawalBatch {
            asset,
            withdrawals: withdrawals.to_vec(),
            inputs: inputs.to_vec(),
            change,
            versions: vec![BatchVersion { txid, network_fee }],
            state: BatchState::Open,
            built_ms: ctx.timestamp_ms,
            transfer: None,
        });
        push(
            out,
            ctx,
            EventKind::WithdrawalBatchBuilt {
                batch,
                asset,
                withdrawals: withdrawals.to_vec(),
                inputs: inputs.to_vec(),
                change,
                txid,
                network_fee,
            },
        );
        Ok(())
    }

    /// The coins of a new batch: some, at most `BATCH_MAX`, distinct, none locked.
    fn check_coins(&self, inputs: &[Outpoint]) -> Result<(), Reject> {
        if inputs.is_empty() || inputs.len() > BATCH_MAX {
            return Err(Reject::InvalidBatch);
        }
        let mut coins = std::collections::BTreeSet::new();
        for input in inputs {
            if self.locked_inputs.contains_key(input) || !coins.insert(*input) {
                return Err(Reject::InvalidBatch);
            }
        }
        Ok(())
    }

    /// `(wallet, index)` is the next unused index of one of `asset`'s wallets.
    fn check_next_index(&self, asset: AssetId, (wallet, index): (u32, u32)) -> Result<(), Reject> {
        let ok = self
            .wallets
            .get(wallet as usize)
            .is_some_and(|w| w.asset == asset && w.next_index == index);
        if !ok || index == u32::MAX {
            return Err(Reject::InvalidBatch);
        }
        Ok(())
    }

    fn take_index(&mut self, (wallet, _): (u32, u32)) {
        if let Some(w) = self.wallets.get_mut(wallet as usize) {
            w.next_index += 1;
        }
    }

    /// A transfer between our own wallets: from the hot wallet (or deposit addresses)
    /// to cold storage, or from cold storage to the hot wallet. Tracked as a batch
    /// without withdrawals; finishing it moves only the network fee, out of fee
    /// income, like a withdrawal batch's.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build_transfer(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        asset: AssetId,
        inputs: &[Outpoint],
        to: (u32, u32),
        amount: Amount,
        change: Option<(u32, u32)>,
        network_fee: Amount,
        txid: [u8; 32],
    ) -> Result<(), Reject> {
        self.check_asset(asset)?;
        if self.assets[usize::from(asset.0)]
            .withdrawals_halted
            .is_some()
        {
            return Err(Reject::WithdrawalsHalted);
        }
        if amount.is_zero() {
            return Err(Reject::InvalidBatch);
        }
        self.check_coins(inputs)?;
        self.check_next_index(asset, to)?;
        let to_role = self.wallets.get(to.0 as usize).map(|w| w.role);
        if !matches!(to_role, Some(WalletRole::Hot | WalletRole::Cold)) {
            return Err(Reject::InvalidBatch);
        }
        if let Some(change) = change {
            if change.0 == to.0 {
                return Err(Reject::InvalidBatch);
            }
            self.check_next_index(asset, change)?;
        }
        // Checks done.
        let batch = self.withdrawal_batches.len() as u64;
        self.take_index(to);
        if let Some(change) = change {
            self.take_index(change);
        }
        for input in inputs {
            self.locked_inputs.insert(*input, batch);
        }
        self.open_batches.insert(batch);
        self.withdrawal_batches.push(WithdrawalBatch {
            asset,
            withdrawals: Vec::new(),
            inputs: inputs.to_vec(),
            change,
            versions: vec![BatchVersion { txid, network_fee }],
            state: BatchState::Open,
            built_ms: ctx.timestamp_ms,
            transfer: Some(Transfer { to, amount }),
        });
        push(
            out,
            ctx,
            EventKind::TransferBuilt {
                batch,
                asset,
                inputs: inputs.to_vec(),
                to,
                amount,
                change,
                txid,
                network_fee,
            },
        );
        Ok(())
    }

    fn open_batch(&self, batch: u64) -> Result<&WithdrawalBatch, Reject> {
        let b = usize::try_from(batch)
            .ok()
            .and_then(|i| self.withdrawal_batches.get(i))
            .ok_or(Reject::UnknownBatch)?;
        if b.state != BatchState::Open {
            return Err(Reject::BatchNotOpen);
        }
        Ok(b)
    }

    /// Close an open transfer that never reached the network and unlock its coins.
    pub(crate) fn abandon_transfer(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        batch: u64,
    ) -> Result<(), Reject> {
        let b = self.open_batch(batch)?;
        // Only a refill (to the hot wallet, signed offline): customers' withdrawals, and
        // sweeps the hot key signs at once, are cancelled by a confirmed double-spend.
        let refill = b.transfer.is_some_and(|t| {
            self.wallets
                .get(t.to.0 as usize)
                .is_some_and(|w| w.role == WalletRole::Hot)
        });
        if !refill {
            return Err(Reject::InvalidBatch);
        }
        let inputs = b.inputs.clone();
        for input in &inputs {
            self.locked_inputs.remove(input);
        }
        self.open_batches.remove(&batch);
        if let Some(entry) = self.withdrawal_batches.get_mut(batch as usize) {
            entry.state = BatchState::Abandoned;
        }
        push(out, ctx, EventKind::TransferAbandoned { batch });
        Ok(())
    }

    /// A fee bump: a new version spending the same coins, paying the same outputs.
    pub(crate) fn bump_withdrawal_batch(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        batch: u64,
        txid: [u8; 32],
        network_fee: Amount,
    ) -> Result<(), Reject> {
        let b = self.open_batch(batch)?;
        let last = b.versions.last().map(|v| v.network_fee).unwrap_or_default();
        if network_fee <= last
            || b.versions.iter().any(|v| v.txid == txid)
            || b.versions.len() >= 64
        {
            return Err(Reject::InvalidBatch);
        }
        if let Some(b) = self.withdrawal_batches.get_mut(batch as usize) {
            b.versions.push(BatchVersion { txid, network_fee });
        }
        push(
            out,
            ctx,
            EventKind::WithdrawalBatchBumped {
                batch,
                txid,
                network_fee,
            },
        );
        Ok(())
    }

    /// A transaction spending the batch's coins confirmed at `height`: either it pays
    /// every withdrawal (`paid`), or it returns the coins to our own wallets (a cancel,
    /// and the customers' holds are released). `network_fee` is the confirmed
    /// transaction's fee, paid out of fee income.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_withdrawal_batch(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        batch: u64,
        txid: [u8; 32],
        height: u32,
        network_fee: Amount,
        paid: bool,
    ) -> Result<(), Reject> {
        let b = self.open_batch(batch)?.clone();
        // Check every transfer first (by construction they cannot fail: the holds are
        // there and system accounts are unbounded), then apply.
        for id in &b.withdrawals {
            let w = self.withdrawals.get(id).ok_or(Reject::UnknownWithdrawal)?;
            let held = self
                .ledger
                .balance(w.user, w.asset)
                .map_err(|_| Reject::UnknownUser)?
                .held;
            if held < w.amount || w.fee > w.amount {
                return Err(Reject::InsufficientFunds);
            }
        }
        let asset = b.asset;
        let custody = Account::System(SystemAccount::Custody);
        let income = Account::System(SystemAccount::FeeIncome);
        if !network_fee.is_zero() {
            self.ledger
                .transfer(income, custody, asset, network_fee)
                .map_err(|_| Reject::AmountOverflow)?;
        }
        for id in &b.withdrawals {
            let Some(w) = self.withdrawals.get(id).cloned() else {
                continue;
            };
            let held = Account::Held(w.user);
            let kind = if paid {
                let payout = Amount::new(w.amount.get() - w.fee.get());
                self.ledger
                    .transfer(held, custody, asset, payout)
                    .and_then(|()| self.ledger.transfer(held, income, asset, w.fee))
                    .map_err(|_| Reject::AmountOverflow)?;
                EventKind::WithdrawalSettled {
                    user: w.user,
                    asset,
                    amount: w.amount,
                    id: id.clone(),
                }
            } else {
                self.ledger
                    .transfer(held, Account::Available(w.user), asset, w.amount)
                    .map_err(|_| Reject::AmountOverflow)?;
                EventKind::WithdrawalCancelled {
                    user: w.user,
                    asset,
                    amount: w.amount,
                    id: id.clone(),
                }
            };
            if let Some(entry) = self.withdrawals.get_mut(id) {
                entry.state = if paid {
                    WithdrawalState::Settled
                } else {
                    WithdrawalState::Cancelled
                };
            }
            self.touch(w.user, asset);
            push(out, ctx, kind);
        }
        for input in &b.inputs {
            self.locked_inputs.remove(input);
        }
        self.open_batches.remove(&batch);
        if let Some(entry) = self.withdrawal_batches.get_mut(batch as usize) {
            entry.state = if paid {
                BatchState::Confirmed { txid, height }
            } else {
                BatchState::Cancelled { txid, height }
            };
        }
        push(
            out,
            ctx,
            EventKind::WithdrawalBatchFinished {
                batch,
                txid,
                height,
                network_fee,
                paid,
            },
        );
        Ok(())
    }

    // ---- read access -------------------------------------------------------------

    pub fn withdrawal_policy(&self, asset: AssetId) -> Option<WithdrawalPolicy> {
        self.assets
            .get(usize::from(asset.0))
            .and_then(|a| a.withdrawal_policy)
    }

    /// Every batch ever built; the index is its id.
    pub fn withdrawal_batches(&self) -> &[WithdrawalBatch] {
        &self.withdrawal_batches
    }

    pub fn withdrawal_batch(&self, batch: u64) -> Option<&WithdrawalBatch> {
        usize::try_from(batch)
            .ok()
            .and_then(|i| self.withdrawal_batches.get(i))
    }

    /// The open batch spending `coin`, if any.
    pub fn batch_spending(&self, coin: &Outpoint) -> Option<u64> {
        self.locked_inputs.get(coin).copied()
    }

    /// Every withdrawal ever requested, by id.
    pub fn withdrawals(&self) -> impl Iterator<Item = (&str, &Withdrawal)> {
        self.withdrawals.iter().map(|(id, w)| (id.as_str(), w))
    }

    /// Approved chain withdrawals of `asset` whose release time has come by `now_ms`.
    /// Cost: O(approved withdrawals not yet batched), not O(history).
    pub fn ready_withdrawals(&self, asset: AssetId, now_ms: u64) -> Vec<(&str, &Withdrawal)> {
        self.approved_withdrawals
            .iter()
            .filter_map(|id| Some((id.as_str(), self.withdrawals.get(id)?)))
            .filter(|(_, w)| w.asset == asset && w.release_ms <= now_ms)
            .collect()
    }

    /// The ids of open batches, oldest first. Cost: O(open batches).
    pub fn open_withdrawal_batches(&self) -> impl Iterator<Item = u64> + '_ {
        self.open_batches.iter().copied()
    }

    /// When `address` becomes payable for `user` (None: not on the list).
    pub fn withdrawal_address(&self, user: UserId, asset: AssetId, address: &str) -> Option<u64> {
        self.withdrawal_addresses
            .get(&(user.0, asset.0, address.to_owned()))
            .copied()
    }

    /// Every listed destination: ((user, asset, address), usable from).
    pub fn withdrawal_addresses(&self) -> impl Iterator<Item = (UserId, AssetId, &str, u64)> {
        self.withdrawal_addresses
            .iter()
            .map(|((u, a, addr), &t)| (UserId(*u), AssetId(*a), addr.as_str(), t))
    }
}
