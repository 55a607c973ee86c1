//! Double-entry ledger: accounts per (owner, asset), every movement a transfer.
//!
//! Layout: customer accounts are `Balance { available, held }` of unsigned [`Amount`]s,
//! stored densely (`users × assets`), so a customer balance can never be negative by
//! construction. System accounts (custody, fee income, rounding, adjustments) are signed
//! `i128` per asset: custody goes negative by exactly what customers deposited.
//!
//! Invariants:
//! - every change is a [`Ledger::transfer`] between two accounts of the same asset;
//! - so, per asset, the sum of every account (customers' available + held, and every
//!   system account) is zero at every moment ([`Ledger::check_invariants`]);
//! - a transfer that would take a customer account below zero changes nothing and
//!   returns [`LedgerError::Insufficient`].
//!
//! The ledger knows nothing of orders or withdrawals; the engine decides what to hold.

#![forbid(unsafe_code)]

use kura_units::{Amount, AssetId, UserId};

/// Accounts the exchange itself owns, one of each per asset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SystemAccount {
    /// The outside world: deposits come from it, withdrawals go to it. Its balance is
    /// minus what the exchange owes on the books for that asset's custody.
    Custody = 0,
    /// Trading fees earned.
    FeeIncome = 1,
    /// Remainders of rounding, always in the exchange's disfavour of the customer.
    Rounding = 2,
    /// Admin adjustments (corrections), each journaled with a reason.
    Adjustments = 3,
    /// What customers owe the exchange: a deposit reversed by a chain reorganisation
    /// after its funds were spent. Its balance is minus the sum of those deficits.
    Receivable = 4,
}

/// How many system accounts each asset has.
const SYSTEM_ACCOUNTS: usize = SystemAccount::ALL.len();

impl SystemAccount {
    pub const ALL: [SystemAccount; 5] = [
        SystemAccount::Custody,
        SystemAccount::FeeIncome,
        SystemAccount::Rounding,
        SystemAccount::Adjustments,
        SystemAccount::Receivable,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            SystemAccount::Custody => "custody",
            SystemAccount::FeeIncome => "fee_income",
            SystemAccount::Rounding => "rounding",
            SystemAccount::Adjustments => "adjustments",
            SystemAccount::Receivable => "receivable",
        }
    }
}

/// One side of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Account {
    Available(UserId),
    Held(UserId),
    System(SystemAccount),
}

/// A customer's balance of one asset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub available: Amount,
    pub held: Amount,
}

impl Balance {
    pub fn total(self) -> u128 {
        u128::from(self.available.get()) + u128::from(self.held.get())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerError {
    UnknownUser,
    UnknownAsset,
    /// The source customer account holds less than the amount.
    Insufficient,
    /// The destination would exceed the largest representable amount.
    Overflow,
}

#[derive(Clone, Debug, Default)]
pub struct Ledger {
    assets: usize,
    users: usize,
    /// `users × assets` balances, row-major by user.
    balances: Vec<Balance>,
    /// `assets × SYSTEM_ACCOUNTS` system balances, row-major by asset.
    system: Vec<i128>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    pub fn asset_count(&self) -> usize {
        self.assets
    }

    pub fn user_count(&self) -> usize {
        self.users
    }

    /// Add an asset: every customer gets a zero balance of it.
    pub fn add_asset(&mut self) -> AssetId {
        let old = self.assets;
        let mut balances = Vec::with_capacity(self.users * (old + 1));
        for u in 0..self.users {
            balances.extend_from_slice(&self.balances[u * old..(u + 1) * old]);
            balances.push(Balance::default());
        }
        self.balances = balances;
        self.assets += 1;
        self.system.extend([0; SYSTEM_ACCOUNTS]);
        AssetId(old as u16)
    }

    /// Add a customer with zero balances.
    pub fn add_user(&mut self) -> UserId {
        let id = UserId(self.users as u32);
        self.users += 1;
        self.balances
            .resize(self.users * self.assets, Balance::default());
        id
    }

    #[inline]
    fn index(&self, user: UserId, asset: AssetId) -> Result<usize, LedgerError> {
        let (u, a) = (user.0 as usize, usize::from(asset.0));
        if a >= self.assets {
            return Err(LedgerError::UnknownAsset);
        }
        if u >= self.users {
            return Err(LedgerError::UnknownUser);
        }
        Ok(u * self.assets + a)
    }

    pub fn balance(&self, user: UserId, asset: AssetId) -> Result<Balance, LedgerError> {
        self.index(user, asset).map(|i| self.balances[i])
    }

    pub fn system(&self, account: SystemAccount, asset: AssetId) -> Result<i128, LedgerError> {
        let a = usize::from(asset.0);
        if a >= self.assets {
            return Err(LedgerError::UnknownAsset);
        }
        Ok(self.system[a * SYSTEM_ACCOUNTS + account as usize])
    }

    /// Move `amount` of `asset` from one account to another. Either both sides change or
    /// neither does.
    #[inline]
    pub fn transfer(
        &mut self,
        from: Account,
        to: Account,
        asset: AssetId,
        amount: Amount,
    ) -> Result<(), LedgerError> {
        if usize::from(asset.0) >= self.assets {
            return Err(LedgerError::UnknownAsset);
        }
        // Check both sides first, then apply: nothing changes on error.
        let from_slot = self.slot(from, asset)?;
        let to_slot = self.slot(to, asset)?;
        if let Slot::User(i, held) = from_slot {
            let b = self.balances[i];
            let have = if held { b.held } else { b.available };
            if have < amount {
                return Err(LedgerError::Insufficient);
            }
        }
        if let Slot::User(i, held) = to_slot {
            let b = self.balances[i];
            let have = if held { b.held } else { b.available };
            // When from and to are the same account the amount cancels out.
            let same = from_slot == to_slot;
            if !same && have.checked_add(amount).is_none() {
                return Err(LedgerError::Overflow);
            }
        }
        let v = amount.get();
        match from_slot {
            Slot::User(i, true) => {
                self.balances[i].held = Amount::new(self.balances[i].held.get() - v)
            }
            Slot::User(i, false) => {
                self.balances[i].available = Amount::new(self.balances[i].available.get() - v)
            }
            Slot::System(i) => self.system[i] -= i128::from(v),
        }
        match to_slot {
            Slot::User(i, true) => {
                self.balances[i].held = Amount::new(self.balances[i].held.get() + v)
            }
            Slot::User(i, false) => {
                self.balances[i].available = Amount::new(self.balances[i].available.get() + v)
            }
            Slot::System(i) => self.system[i] += i128::from(v),
        }
        Ok(())
    }

    #[inline]
    fn slot(&self, account: Account, asset: AssetId) -> Result<Slot, LedgerError> {
        Ok(match account {
            Account::Available(u) => Slot::User(self.index(u, asset)?, false),
            Account::Held(u) => Slot::User(self.index(u, asset)?, true),
            Account::System(s) => Slot::System(usize::from(asset.0) * SYSTEM_ACCOUNTS + s as usize),
        })
    }

    /// Sum of every account of `asset`; zero when the books balance. Saturates on
    /// damaged input (see [`Ledger::checked_sum`]).
    pub fn sum(&self, asset: AssetId) -> i128 {
        self.checked_sum(asset).unwrap_or(i128::MAX)
    }

    /// Sum of every account of `asset`, or `None` if it does not fit an `i128` (only
    /// possible in damaged state read from outside).
    pub fn checked_sum(&self, asset: AssetId) -> Option<i128> {
        let a = usize::from(asset.0);
        let users = (0..self.users).try_fold(0i128, |acc, u| {
            acc.checked_add(i128::try_from(self.balances[u * self.assets + a].total()).ok()?)
        })?;
        self.system[a * SYSTEM_ACCOUNTS..(a + 1) * SYSTEM_ACCOUNTS]
            .iter()
            .try_fold(users, |acc, &s| acc.checked_add(s))
    }

    /// What customers are owed of `asset` (available + held, all customers) in O(1):
    /// the accounts sum to zero, so customers hold minus what the system accounts hold.
    pub fn customer_total(&self, asset: AssetId) -> Result<u128, LedgerError> {
        let a = usize::from(asset.0);
        if a >= self.assets {
            return Err(LedgerError::UnknownAsset);
        }
        let system = self.system[a * SYSTEM_ACCOUNTS..(a + 1) * SYSTEM_ACCOUNTS]
            .iter()
            .try_fold(0i128, |acc, &s| acc.checked_add(s))
            .ok_or(LedgerError::Overflow)?;
        Ok(system
            .checked_neg()
            .and_then(|n| u128::try_from(n).ok())
            .unwrap_or(0))
    }

    /// What customers are owed of `asset` (available + held, all customers).
    pub fn liabilities(&self, asset: AssetId) -> u128 {
        let a = usize::from(asset.0);
        (0..self.users)
            .map(|u| self.balances[u * self.assets + a].total())
            .sum()
    }

    /// Invariant 1 of DESIGN.md §5: per asset the sum of all accounts is zero.
    pub fn check_invariants(&self) -> Result<(), String> {
        for a in 0..self.assets {
            let Some(sum) = self.checked_sum(AssetId(a as u16)) else {
                return Err(format!("ledger out of balance: asset {a} overflows"));
            };
            if sum != 0 {
                return Err(format!(
                    "ledger out of balance: asset {a} sums to {sum}, not zero"
                ));
            }
        }
        Ok(())
    }

    /// Canonical bytes of the whole ledger, for the state hash and snapshots.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.assets as u64).to_le_bytes());
        out.extend_from_slice(&(self.users as u64).to_le_bytes());
        for b in &self.balances {
            out.extend_from_slice(&b.available.get().to_le_bytes());
            out.extend_from_slice(&b.held.get().to_le_bytes());
        }
        for s in &self.system {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }

    /// Rebuild a ledger from [`Ledger::encode`]'s bytes; `None` if they are malformed.
    pub fn decode(input: &mut &[u8]) -> Option<Ledger> {
        let assets = usize::try_from(take_u64(input)?).ok()?;
        let users = usize::try_from(take_u64(input)?).ok()?;
        let cells = users.checked_mul(assets)?;
        if cells.checked_mul(16)? > input.len() {
            return None;
        }
        let mut balances = Vec::with_capacity(cells);
        for _ in 0..cells {
            balances.push(Balance {
                available: Amount::new(take_u64(input)?),
                held: Amount::new(take_u64(input)?),
            });
        }
        let mut system = Vec::with_capacity(assets.saturating_mul(SYSTEM_ACCOUNTS));
        for _ in 0..assets.checked_mul(SYSTEM_ACCOUNTS)? {
            let (head, rest) = input.split_at_checked(16)?;
            system.push(i128::from_le_bytes(head.try_into().ok()?));
            *input = rest;
        }
        Some(Ledger {
            assets,
            users,
            balances,
            system,
        })
    }
}

fn take_u64(input: &mut &[u8]) -> Option<u64> {
    let (head, rest) = input.split_at_checked(8)?;
    *input = rest;
    Some(u64::from_le_bytes(head.try_into().ok()?))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    User(usize, bool),
    System(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setup() -> (Ledger, UserId, UserId, AssetId) {
        let mut l = Ledger::new();
        let btc = l.add_asset();
        let a = l.add_user();
        let b = l.add_user();
        (l, a, b, btc)
    }

    #[test]
    fn deposit_hold_settle() {
        let (mut l, a, b, btc) = setup();
        let custody = Account::System(SystemAccount::Custody);
        l.transfer(custody, Account::Available(a), btc, Amount::new(100))
            .unwrap();
        l.transfer(
            Account::Available(a),
            Account::Held(a),
            btc,
            Amount::new(40),
        )
        .unwrap();
        l.transfer(
            Account::Held(a),
            Account::Available(b),
            btc,
            Amount::new(40),
        )
        .unwrap();
        assert_eq!(
            l.balance(a, btc).unwrap(),
            Balance {
                available: Amount::new(60),
                held: Amount::ZERO
            }
        );
        assert_eq!(l.balance(b, btc).unwrap().available, Amount::new(40));
        assert_eq!(l.system(SystemAccount::Custody, btc).unwrap(), -100);
        assert_eq!(l.liabilities(btc), 100);
        l.check_invariants().unwrap();
    }

    #[test]
    fn errors_change_nothing() {
        let (mut l, a, b, btc) = setup();
        let before = {
            let mut v = Vec::new();
            l.encode(&mut v);
            v
        };
        assert_eq!(
            l.transfer(
                Account::Available(a),
                Account::Available(b),
                btc,
                Amount::new(1)
            ),
            Err(LedgerError::Insufficient)
        );
        assert_eq!(
            l.transfer(
                Account::Available(UserId(9)),
                Account::Available(b),
                btc,
                Amount::ZERO
            ),
            Err(LedgerError::UnknownUser)
        );
        assert_eq!(
            l.transfer(
                Account::System(SystemAccount::Custody),
                Account::Available(b),
                AssetId(3),
                Amount::new(1)
            ),
            Err(LedgerError::UnknownAsset)
        );
        l.transfer(
            Account::System(SystemAccount::Custody),
            Account::Available(b),
            btc,
            Amount::MAX,
        )
        .unwrap();
        assert_eq!(
            l.transfer(
                Account::System(SystemAccount::Custody),
                Account::Available(b),
                btc,
                Amount::new(1)
            ),
            Err(LedgerError::Overflow)
        );
        let mut after = Vec::new();
        l.transfer(
            Account::Available(b),
            Account::System(SystemAccount::Custody),
            btc,
            Amount::MAX,
        )
        .unwrap();
        l.encode(&mut after);
        assert_eq!(before, after);
    }

    #[test]
    fn adding_an_asset_keeps_balances() {
        let (mut l, a, _, btc) = setup();
        l.transfer(
            Account::System(SystemAccount::Custody),
            Account::Available(a),
            btc,
            Amount::new(5),
        )
        .unwrap();
        let jpy = l.add_asset();
        assert_eq!(l.balance(a, btc).unwrap().available, Amount::new(5));
        assert_eq!(l.balance(a, jpy).unwrap(), Balance::default());
        let mut bytes = Vec::new();
        l.encode(&mut bytes);
        let decoded = Ledger::decode(&mut bytes.as_slice()).unwrap();
        let mut again = Vec::new();
        decoded.encode(&mut again);
        assert_eq!(bytes, again);
    }

    proptest! {
        #[test]
        fn random_transfers_keep_the_sum_zero(
            moves in prop::collection::vec((0u8..7, 0u8..7, 0u8..2, 0u64..1_000), 0..200)
        ) {
            let mut l = Ledger::new();
            let assets = [l.add_asset(), l.add_asset()];
            let users = [l.add_user(), l.add_user()];
            let account = |k: u8| match k {
                0 => Account::Available(users[0]),
                1 => Account::Held(users[0]),
                2 => Account::Available(users[1]),
                3 => Account::Held(users[1]),
                4 => Account::System(SystemAccount::Custody),
                5 => Account::System(SystemAccount::Receivable),
                _ => Account::System(SystemAccount::Rounding),
            };
            for (from, to, asset, amount) in moves {
                let _ = l.transfer(account(from), account(to), assets[asset as usize], Amount::new(amount));
                prop_assert!(l.check_invariants().is_ok());
            }
            for a in assets {
                prop_assert_eq!(l.customer_total(a), Ok(l.liabilities(a)));
            }
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Ledger::decode(&mut bytes.as_slice());
        }
    }
}
