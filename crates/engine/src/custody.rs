//! Custody facts on the books: the wallet registry, deposit address assignment, the
//! reversal of deposits a chain reorganisation removed, and reconciliation of what the
//! chain holds against what customers are owed.
//!
//! The engine knows nothing of Bitcoin: a wallet is a descriptor string the custody layer
//! validated before submitting it, an address is (wallet, index), a deposit is its
//! reference (`txid:vout`). What it guarantees is bookkeeping: a wallet once registered
//! is never forgotten, an index is never handed out twice, a deposit is credited at most
//! once at any time, a reversal never drives a balance negative (the shortfall becomes a
//! recorded deficit that freezes the customer's withdrawals until repaid), and a
//! reconciliation that finds fewer coins than customers are owed halts withdrawals of
//! that asset in the same command.

use crate::{Ctx, Engine, Event, EventKind, Reject};
use kura_ledger::{Account, SystemAccount};
use kura_units::{Amount, AssetId, UserId};

/// What a registered wallet is for. Every role is reconciled; none is ever deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalletRole {
    /// Customer deposit addresses are derived from it (watch-only).
    Deposit,
    /// The hot wallet: its key lives only in the signer.
    Hot,
    /// The cold wallet: known here only by public keys.
    Cold,
    /// No longer used for new addresses, still watched and reconciled.
    Retired,
}

impl WalletRole {
    pub const ALL: [WalletRole; 4] = [
        WalletRole::Deposit,
        WalletRole::Hot,
        WalletRole::Cold,
        WalletRole::Retired,
    ];
    pub fn code(self) -> u8 {
        match self {
            WalletRole::Deposit => 0,
            WalletRole::Hot => 1,
            WalletRole::Cold => 2,
            WalletRole::Retired => 3,
        }
    }
    pub fn from_code(code: u8) -> Option<WalletRole> {
        WalletRole::ALL.get(usize::from(code)).copied()
    }
    pub fn name(self) -> &'static str {
        match self {
            WalletRole::Deposit => "deposit",
            WalletRole::Hot => "hot",
            WalletRole::Cold => "cold",
            WalletRole::Retired => "retired",
        }
    }
}

/// One entry of the wallet registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    pub asset: AssetId,
    pub role: WalletRole,
    pub descriptor: String,
    /// Next unused derivation index (deposit wallets hand them out in order).
    pub next_index: u32,
}

/// A credited deposit, by reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepositRecord {
    pub user: UserId,
    pub asset: AssetId,
    pub amount: Amount,
    /// Reversed by a reorganisation (and not credited again since).
    pub reversed: bool,
}

/// The last reconciliation of one asset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconciliation {
    pub seq: u64,
    pub height: u32,
    pub block_hash: [u8; 32],
    pub holdings: Amount,
    pub liabilities: u128,
}

/// Longest descriptor string accepted (with checksum); a 15-key multisig fits.
pub const DESCRIPTOR_MAX: usize = 1024;

fn push(out: &mut Vec<Event>, ctx: Ctx, kind: EventKind) {
    out.push(Event { seq: ctx.seq, kind });
}

impl Engine {
    pub(crate) fn register_wallet(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        asset: AssetId,
        role: WalletRole,
        descriptor: &str,
    ) -> Result<(), Reject> {
        self.check_asset(asset)?;
        if descriptor.is_empty()
            || descriptor.len() > DESCRIPTOR_MAX
            || !descriptor.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Reject::InvalidDescriptor);
        }
        if self.wallets.iter().any(|w| w.descriptor == descriptor) {
            return Err(Reject::WalletExists);
        }
        let wallet = self.wallets.len() as u32;
        self.wallets.push(Wallet {
            asset,
            role,
            descriptor: descriptor.to_owned(),
            next_index: 0,
        });
        push(
            out,
            ctx,
            EventKind::WalletRegistered {
                wallet,
                asset,
                role,
                descriptor: descriptor.to_owned(),
            },
        );
        Ok(())
    }

    /// Give `user` the next address of the newest deposit wallet of `asset`.
    pub(crate) fn assign_deposit_address(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        self.check_asset(asset)?;
        if self.deposit_addresses.contains_key(&(user.0, asset.0)) {
            return Err(Reject::DepositAddressAssigned);
        }
        let wallet = self
            .wallets
            .iter()
            .rposition(|w| w.asset == asset && w.role == WalletRole::Deposit)
            .ok_or(Reject::NoDepositWallet)?;
        let w = &mut self.wallets[wallet];
        // BIP-32 non-hardened indexes stop at 2^31.
        if w.next_index >= 1 << 31 {
            return Err(Reject::NoDepositWallet);
        }
        let index = w.next_index;
        w.next_index += 1;
        let wallet = wallet as u32;
        self.deposit_addresses
            .insert((user.0, asset.0), (wallet, index));
        push(
            out,
            ctx,
            EventKind::DepositAddressAssigned {
                user,
                asset,
                wallet,
                index,
            },
        );
        Ok(())
    }

    /// Take back a deposit a reorganisation removed. What the customer no longer has
    /// becomes a deficit (owed to the exchange) that freezes their withdrawals.
    pub(crate) fn reverse_deposit(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        reference: &str,
        reason: &str,
    ) -> Result<(), Reject> {
        self.check_reason(reason)?;
        let d = *self.deposits.get(reference).ok_or(Reject::UnknownDeposit)?;
        if d.reversed {
            return Err(Reject::DepositReversed);
        }
        let available = self
            .ledger
            .balance(d.user, d.asset)
            .map_err(|_| Reject::UnknownUser)?
            .available;
        let taken = available.min(d.amount);
        let deficit = Amount::new(d.amount.get() - taken.get());
        let owed = self
            .deficits
            .get(&(d.user.0, d.asset.0))
            .copied()
            .unwrap_or(Amount::ZERO);
        let owed_after = owed.checked_add(deficit).ok_or(Reject::AmountOverflow)?;
        if !taken.is_zero() {
            self.ledger
                .transfer(
                    Account::Available(d.user),
                    Account::System(SystemAccount::Custody),
                    d.asset,
                    taken,
                )
                .map_err(|_| Reject::InsufficientFunds)?;
        }
        if !deficit.is_zero() {
            self.ledger
                .transfer(
                    Account::System(SystemAccount::Receivable),
                    Account::System(SystemAccount::Custody),
                    d.asset,
                    deficit,
                )
                .map_err(|_| Reject::AmountOverflow)?;
            self.deficits.insert((d.user.0, d.asset.0), owed_after);
        }
        if let Some(entry) = self.deposits.get_mut(reference) {
            entry.reversed = true;
        }
        self.touch(d.user, d.asset);
        push(
            out,
            ctx,
            EventKind::DepositReversed {
                user: d.user,
                asset: d.asset,
                amount: d.amount,
                deficit,
                reference: reference.to_owned(),
                reason: reason.to_owned(),
            },
        );
        Ok(())
    }

    /// After a credit: repay the customer's deficit in this asset from what is available.
    pub(crate) fn repay_deficit(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
    ) {
        let Some(&owed) = self.deficits.get(&(user.0, asset.0)) else {
            return;
        };
        let Ok(balance) = self.ledger.balance(user, asset) else {
            return;
        };
        let pay = balance.available.min(owed);
        if pay.is_zero()
            || self
                .ledger
                .transfer(
                    Account::Available(user),
                    Account::System(SystemAccount::Receivable),
                    asset,
                    pay,
                )
                .is_err()
        {
            return;
        }
        let left = Amount::new(owed.get() - pay.get());
        if left.is_zero() {
            self.deficits.remove(&(user.0, asset.0));
        } else {
            self.deficits.insert((user.0, asset.0), left);
        }
        push(
            out,
            ctx,
            EventKind::DeficitRepaid {
                user,
                asset,
                amount: pay,
                remaining: left,
            },
        );
    }

    /// Compare what the chain holds at `height` with what customers are owed now; a
    /// shortfall halts withdrawals of the asset (unless already halted).
    pub(crate) fn reconcile(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        asset: AssetId,
        height: u32,
        block_hash: [u8; 32],
        holdings: Amount,
    ) -> Result<(), Reject> {
        self.check_asset(asset)?;
        let liabilities = self
            .ledger
            .customer_total(asset)
            .map_err(|_| Reject::UnknownAsset)?;
        let a = &mut self.assets[usize::from(asset.0)];
        if let Some(last) = a.reconciliation {
            if height < last.height {
                return Err(Reject::StaleReconciliation);
            }
        }
        a.reconciliation = Some(Reconciliation {
            seq: ctx.seq,
            height,
            block_hash,
            holdings,
            liabilities,
        });
        let short = u128::from(holdings.get()) < liabilities;
        push(
            out,
            ctx,
            EventKind::Reconciled {
                asset,
                height,
                block_hash,
                holdings,
                liabilities,
            },
        );
        if short && a.withdrawals_halted.is_none() {
            let reason = format!(
                "reconciliation at height {height}: chain holds {} but customers are owed {liabilities}",
                holdings.get()
            );
            a.withdrawals_halted = Some(reason.clone());
            push(out, ctx, EventKind::WithdrawalsHalted { asset, reason });
        }
        Ok(())
    }

    // ---- read access -------------------------------------------------------------

    /// Every wallet ever registered, in registration order (the index is its id).
    pub fn wallets(&self) -> &[Wallet] {
        &self.wallets
    }

    /// The (wallet, index) of `user`'s deposit address for `asset`, if assigned.
    pub fn deposit_address(&self, user: UserId, asset: AssetId) -> Option<(u32, u32)> {
        self.deposit_addresses.get(&(user.0, asset.0)).copied()
    }

    /// Every assigned deposit address: ((user, asset), (wallet, index)).
    pub fn deposit_addresses(&self) -> impl Iterator<Item = ((UserId, AssetId), (u32, u32))> + '_ {
        self.deposit_addresses
            .iter()
            .map(|(&(u, a), &w)| ((UserId(u), AssetId(a)), w))
    }

    /// Every deposit ever credited (reversed ones too), by reference.
    pub fn deposit_records(&self) -> impl Iterator<Item = (&str, &DepositRecord)> {
        self.deposits.iter().map(|(r, d)| (r.as_str(), d))
    }

    pub fn deposit_record(&self, reference: &str) -> Option<&DepositRecord> {
        self.deposits.get(reference)
    }

    /// What `user` owes of `asset` after a reversed deposit (zero when nothing).
    pub fn deficit(&self, user: UserId, asset: AssetId) -> Amount {
        self.deficits
            .get(&(user.0, asset.0))
            .copied()
            .unwrap_or(Amount::ZERO)
    }

    /// Whether `user` may not withdraw: they owe the exchange some asset.
    pub fn withdrawals_frozen(&self, user: UserId) -> bool {
        self.deficits
            .range((user.0, 0)..=(user.0, u16::MAX))
            .next()
            .is_some()
    }

    pub fn last_reconciliation(&self, asset: AssetId) -> Option<Reconciliation> {
        self.assets
            .get(usize::from(asset.0))
            .and_then(|a| a.reconciliation)
    }
}
