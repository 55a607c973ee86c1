//! Reference data (assets, markets, users, fee tiers), money in and out (deposits,
//! withdrawals, adjustments) and halts. Every function checks everything first and
//! mutates only after the last check.

use crate::{
    Asset, Ctx, Engine, Event, EventKind, Market, MarketSpec, Reject, User, Withdrawal,
    WithdrawalState, MARKET_BASE_SCALE_MAX, PPM,
};
use kura_book::Book;
use kura_ledger::{Account, SystemAccount};
use kura_units::{Amount, AmountDelta, AssetId, MarketId, Scale, UserId};
use rustc_hash::FxHashMap;

fn push(out: &mut Vec<Event>, ctx: Ctx, kind: EventKind) {
    out.push(Event { seq: ctx.seq, kind });
}

fn symbol_ok(symbol: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&symbol.len())
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Halt (`Some(reason)`) or resume (`None`); refused when already in that state.
fn switch_halt(halt: &mut Option<String>, reason: Option<&String>) -> Result<(), Reject> {
    if halt.is_some() == reason.is_some() {
        return Err(Reject::HaltStateUnchanged);
    }
    *halt = reason.cloned();
    Ok(())
}

/// Validate a market spec against the assets it names; the reason is a static text.
pub(crate) fn validate_spec(engine: &Engine, spec: &MarketSpec) -> Result<(), Reject> {
    let bad = |why: &'static str| Err(Reject::InvalidSpec(why));
    if !symbol_ok(&spec.symbol, 2, 20) {
        return bad("market symbol must be 2-20 characters of A-Z and 0-9");
    }
    let (Some(base), Some(_quote)) = (
        engine.assets.get(usize::from(spec.base.0)),
        engine.assets.get(usize::from(spec.quote.0)),
    ) else {
        return Err(Reject::UnknownAsset);
    };
    if spec.base == spec.quote {
        return bad("base and quote must differ");
    }
    if base.scale.places() > MARKET_BASE_SCALE_MAX {
        return bad("base asset has more than 12 decimals");
    }
    if spec.tick.is_zero() || spec.lot.is_zero() {
        return bad("tick and lot must be positive");
    }
    if spec.min_qty.is_zero() || spec.min_qty > spec.max_qty {
        return bad("need 0 < min_qty <= max_qty");
    }
    if spec.max_price.is_zero() {
        return bad("max_price must be positive");
    }
    if spec.min_notional > spec.max_notional {
        return bad("need min_notional <= max_notional");
    }
    // Every product the engine forms must fit: max price in minor units, max quantity
    // in minor units, and their product times a fee rate.
    let max_price_minor = u128::from(spec.max_price.get()) * u128::from(spec.tick.get());
    let max_qty_minor = u128::from(spec.max_qty.get()) * u128::from(spec.lot.get());
    if max_price_minor > u128::from(u64::MAX) || max_qty_minor > u128::from(u64::MAX) {
        return bad("max_price or max_qty too large for 64-bit minor units");
    }
    if max_price_minor
        .checked_mul(max_qty_minor)
        .and_then(|n| n.checked_mul(PPM))
        .is_none()
    {
        return bad("max_price x max_qty too large");
    }
    if spec.fees.is_empty() || spec.fees.len() > engine.limits().fee_tiers_max {
        return bad("need 1 to 16 fee tiers");
    }
    for tier in &spec.fees {
        if u128::from(tier.taker_ppm) >= PPM || tier.maker_ppm > tier.taker_ppm {
            return bad("fee rates must satisfy maker <= taker < 100%");
        }
    }
    if spec.collar_bps == 0 || spec.collar_bps >= 10_000 {
        return bad("collar must be between 1 and 9999 basis points");
    }
    Ok(())
}

impl Engine {
    pub(crate) fn add_asset(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        symbol: &str,
        scale: Scale,
    ) -> Result<(), Reject> {
        if !symbol_ok(symbol, 2, 12) {
            return Err(Reject::InvalidSpec(
                "asset symbol must be 2-12 characters of A-Z and 0-9",
            ));
        }
        if self.assets.iter().any(|a| a.symbol == symbol) {
            return Err(Reject::AssetExists);
        }
        if self.assets.len() >= usize::from(self.limits().assets_max) {
            return Err(Reject::TooManyAssets);
        }
        let asset = self.ledger.add_asset();
        self.assets.push(Asset {
            symbol: symbol.to_owned(),
            scale,
            withdrawals_halted: None,
            reconciliation: None,
            withdrawal_policy: None,
        });
        push(
            out,
            ctx,
            EventKind::AssetAdded {
                asset,
                symbol: symbol.to_owned(),
            },
        );
        Ok(())
    }

    pub(crate) fn add_market(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        spec: &MarketSpec,
    ) -> Result<(), Reject> {
        validate_spec(self, spec)?;
        if self.market_ids.contains_key(&spec.symbol) {
            return Err(Reject::MarketExists);
        }
        if self.markets.len() >= self.limits().markets_max as usize {
            return Err(Reject::TooManyMarkets);
        }
        let base_factor = u128::from(self.assets[usize::from(spec.base.0)].scale.factor());
        let market = MarketId(self.markets.len() as u32);
        self.market_ids.insert(spec.symbol.clone(), market);
        self.markets.push(Market {
            spec: spec.clone(),
            base_factor,
            book: Book::new(self.limits().book),
            halted: None,
            last_price: None,
            update_id: 0,
            client_ids: FxHashMap::default(),
            order_client_ids: FxHashMap::default(),
        });
        push(
            out,
            ctx,
            EventKind::MarketAdded {
                market,
                symbol: spec.symbol.clone(),
            },
        );
        Ok(())
    }

    pub(crate) fn create_user(&mut self, ctx: Ctx, out: &mut Vec<Event>) -> Result<(), Reject> {
        if self.users.len() >= self.limits().users_max as usize {
            return Err(Reject::TooManyUsers);
        }
        let user = self.ledger.add_user();
        self.users.push(User::default());
        push(out, ctx, EventKind::UserCreated { user });
        Ok(())
    }

    pub(crate) fn set_fee_tier(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        tier: u8,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        if usize::from(tier) >= self.limits().fee_tiers_max {
            return Err(Reject::UnknownFeeTier);
        }
        self.users[user.0 as usize].fee_tier = tier;
        push(out, ctx, EventKind::FeeTierSet { user, tier });
        Ok(())
    }

    pub(crate) fn deposit(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
        amount: Amount,
        reference: &str,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        self.check_asset(asset)?;
        self.check_reference(reference)?;
        if amount.is_zero() {
            return Err(Reject::ZeroAmount);
        }
        let record = crate::DepositRecord {
            user,
            asset,
            amount,
            reversed: false,
        };
        // Credited at most once at any time: a reference may be credited again only
        // after a reorganisation reversed it, and then only with the same facts.
        if let Some(d) = self.deposits.get(reference) {
            if !d.reversed
                || *d
                    != (crate::DepositRecord {
                        reversed: true,
                        ..record
                    })
            {
                return Err(Reject::DuplicateDeposit);
            }
        }
        self.ledger
            .transfer(
                Account::System(SystemAccount::Custody),
                Account::Available(user),
                asset,
                amount,
            )
            .map_err(|_| Reject::AmountOverflow)?;
        self.deposits.insert(reference.to_owned(), record);
        self.touch(user, asset);
        push(
            out,
            ctx,
            EventKind::Deposited {
                user,
                asset,
                amount,
                reference: reference.to_owned(),
            },
        );
        self.repay_deficit(ctx, out, user, asset);
        Ok(())
    }

    pub(crate) fn request_withdrawal(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
        amount: Amount,
        id: &str,
    ) -> Result<(), Reject> {
        self.check_withdrawal_request(user, asset, id)?;
        if amount.is_zero() {
            return Err(Reject::ZeroAmount);
        }
        self.ledger
            .transfer(Account::Available(user), Account::Held(user), asset, amount)
            .map_err(|_| Reject::InsufficientFunds)?;
        self.withdrawals.insert(
            id.to_owned(),
            Withdrawal {
                user,
                asset,
                amount,
                state: WithdrawalState::Pending,
                address: String::new(),
                fee: Amount::ZERO,
                requested_ms: ctx.timestamp_ms,
                release_ms: ctx.timestamp_ms,
                batch: None,
            },
        );
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
        Ok(())
    }

    /// What every withdrawal request needs: a known customer and asset, a fresh valid
    /// id, no deficit owed by the customer, and withdrawals of the asset not halted.
    pub(crate) fn check_withdrawal_request(
        &self,
        user: UserId,
        asset: AssetId,
        id: &str,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        self.check_asset(asset)?;
        self.check_reference(id)?;
        if self.withdrawals.contains_key(id) {
            return Err(Reject::DuplicateWithdrawal);
        }
        if self.withdrawals_frozen(user) {
            return Err(Reject::WithdrawalsFrozen);
        }
        if self.assets[usize::from(asset.0)]
            .withdrawals_halted
            .is_some()
        {
            return Err(Reject::WithdrawalsHalted);
        }
        Ok(())
    }

    /// Settle (`paid`) or cancel a pending withdrawal.
    pub(crate) fn finish_withdrawal(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        id: &str,
        paid: bool,
    ) -> Result<(), Reject> {
        let w = self
            .withdrawals
            .get(id)
            .cloned()
            .ok_or(Reject::UnknownWithdrawal)?;
        match w.state {
            WithdrawalState::Pending => {}
            // A chain withdrawal not yet in a batch may be cancelled; only the chain
            // settles one.
            WithdrawalState::Review | WithdrawalState::Approved if !paid => {}
            WithdrawalState::Batched => return Err(Reject::WithdrawalBatched),
            _ => return Err(Reject::WithdrawalNotPending),
        }
        let to = if paid {
            Account::System(SystemAccount::Custody)
        } else {
            Account::Available(w.user)
        };
        self.ledger
            .transfer(Account::Held(w.user), to, w.asset, w.amount)
            .map_err(|_| Reject::AmountOverflow)?;
        let (state, kind) = if paid {
            (
                WithdrawalState::Settled,
                EventKind::WithdrawalSettled {
                    user: w.user,
                    asset: w.asset,
                    amount: w.amount,
                    id: id.to_owned(),
                },
            )
        } else {
            (
                WithdrawalState::Cancelled,
                EventKind::WithdrawalCancelled {
                    user: w.user,
                    asset: w.asset,
                    amount: w.amount,
                    id: id.to_owned(),
                },
            )
        };
        if let Some(entry) = self.withdrawals.get_mut(id) {
            entry.state = state;
        }
        self.approved_withdrawals.remove(id);
        self.touch(w.user, w.asset);
        push(out, ctx, kind);
        Ok(())
    }

    pub(crate) fn adjust(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
        delta: AmountDelta,
        reason: &str,
    ) -> Result<(), Reject> {
        self.check_user(user)?;
        self.check_asset(asset)?;
        self.check_reason(reason)?;
        let amount = delta.magnitude().ok_or(Reject::AmountOverflow)?;
        if amount.is_zero() {
            return Err(Reject::ZeroAmount);
        }
        let system = Account::System(SystemAccount::Adjustments);
        let result = if delta.is_credit() {
            self.ledger
                .transfer(system, Account::Available(user), asset, amount)
                .map_err(|_| Reject::AmountOverflow)
        } else {
            self.ledger
                .transfer(Account::Available(user), system, asset, amount)
                .map_err(|_| Reject::InsufficientFunds)
        };
        result?;
        self.touch(user, asset);
        push(
            out,
            ctx,
            EventKind::Adjusted {
                user,
                asset,
                delta,
                reason: reason.to_owned(),
            },
        );
        Ok(())
    }

    pub(crate) fn set_market_halt(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        market: MarketId,
        reason: Option<&String>,
    ) -> Result<(), Reject> {
        if let Some(r) = reason {
            self.check_reason(r)?;
        }
        let m = self
            .markets
            .get_mut(market.0 as usize)
            .ok_or(Reject::UnknownMarket)?;
        switch_halt(&mut m.halted, reason)?;
        let kind = match reason {
            Some(r) => EventKind::MarketHalted {
                market,
                reason: r.clone(),
            },
            None => EventKind::MarketResumed { market },
        };
        push(out, ctx, kind);
        Ok(())
    }

    pub(crate) fn set_withdrawal_halt(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Event>,
        asset: AssetId,
        reason: Option<&String>,
    ) -> Result<(), Reject> {
        if let Some(r) = reason {
            self.check_reason(r)?;
        }
        let a = self
            .assets
            .get_mut(usize::from(asset.0))
            .ok_or(Reject::UnknownAsset)?;
        switch_halt(&mut a.withdrawals_halted, reason)?;
        let kind = match reason {
            Some(r) => EventKind::WithdrawalsHalted {
                asset,
                reason: r.clone(),
            },
            None => EventKind::WithdrawalsResumed { asset },
        };
        push(out, ctx, kind);
        Ok(())
    }
}
