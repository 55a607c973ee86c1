//! Canonical encoding of the whole state, its SHA-256 (the state hash), and the global
//! invariant check.
//!
//! The encoding visits everything in a fixed order: scalars little-endian, strings as
//! length + bytes, maps in key order, each book side best price first and then in time
//! order. Hash maps are never iterated without sorting first. Scratch buffers are not
//! state and are not encoded.

use crate::{Engine, Side, Stp, WithdrawalState};
use kura_units::AssetId;
use sha2::{Digest, Sha256};

/// Version of the canonical encoding; bump it when the layout changes.
pub const STATE_ENCODING_VERSION: u8 = 5;

/// The previous version, still read: the same layout without batches' transfers.
const STATE_ENCODING_V4: u8 = 4;

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

fn stp_code(stp: Stp) -> u8 {
    match stp {
        Stp::None => 0,
        Stp::ExpireTaker => 1,
        Stp::ExpireMaker => 2,
        Stp::ExpireBoth => 3,
    }
}

/// Reads what [`W`] wrote; every failure names the byte offset.
struct R<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("state ends early at byte {} (needed {n} more)", self.pos))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_le_bytes(self.arr()?))
    }
    /// A count of items each at least `min_item_bytes` long, checked against the input
    /// so a corrupt count cannot make us allocate without bound.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, String> {
        let at = self.pos;
        let n =
            usize::try_from(self.u64()?).map_err(|_| format!("count too large at byte {at}"))?;
        if n.saturating_mul(min_item_bytes.max(1)) > self.bytes.len() - self.pos {
            return Err(format!(
                "count {n} at byte {at} exceeds the remaining bytes"
            ));
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<String, String> {
        let at = self.pos;
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| format!("invalid UTF-8 at byte {at}"))
    }
    fn opt_str(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            t => Err(format!("bad option tag {t} at byte {}", self.pos - 1)),
        }
    }
    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(format!("bad boolean {t} at byte {}", self.pos - 1)),
        }
    }
    fn stp(&mut self) -> Result<Stp, String> {
        match self.u8()? {
            0 => Ok(Stp::None),
            1 => Ok(Stp::ExpireTaker),
            2 => Ok(Stp::ExpireMaker),
            3 => Ok(Stp::ExpireBoth),
            t => Err(format!("bad self-trade mode {t} at byte {}", self.pos - 1)),
        }
    }
}

impl Engine {
    /// Rebuild an engine from [`Engine::encode_state`]'s bytes (a snapshot). Never panics
    /// on bad input: every inconsistency is an error naming the byte offset; the rebuilt
    /// state's invariants are checked before it is returned.
    pub fn decode_state(bytes: &[u8], limits: crate::Limits) -> Result<Engine, String> {
        use crate::{Asset, Market, MarketSpec, OrderData, User, Withdrawal};
        use kura_units::{Amount, OrderId, PriceTicks, QtyLots, Scale, UserId};
        let mut r = R { bytes, pos: 0 };
        let version = r.u8()?;
        if version != STATE_ENCODING_VERSION && version != STATE_ENCODING_V4 {
            return Err(format!(
                "state encoding version {version}, this build reads {STATE_ENCODING_VERSION}"
            ));
        }
        let mut e = Engine::new(limits);
        e.next_order_id = r.u64()?;
        e.next_trade_id = r.u64()?;
        for _ in 0..r.count(10)? {
            let symbol = r.str()?;
            let at = r.pos;
            let scale = Scale::new(r.u8()?).ok_or_else(|| format!("bad scale at byte {at}"))?;
            let withdrawals_halted = r.opt_str()?;
            let reconciliation = match r.u8()? {
                0 => None,
                1 => Some(crate::Reconciliation {
                    seq: r.u64()?,
                    height: r.u32()?,
                    block_hash: r.arr::<32>()?,
                    holdings: Amount::new(r.u64()?),
                    liabilities: r.u128()?,
                }),
                t => return Err(format!("bad option tag {t} at byte {}", r.pos - 1)),
            };
            let withdrawal_policy = match r.u8()? {
                0 => None,
                1 => Some(crate::WithdrawalPolicy {
                    fee: Amount::new(r.u64()?),
                    min_amount: Amount::new(r.u64()?),
                    daily_limit: Amount::new(r.u64()?),
                    approval_above: Amount::new(r.u64()?),
                    address_delay_ms: r.u64()?,
                    listed_only: r.bool()?,
                }),
                t => return Err(format!("bad option tag {t} at byte {}", r.pos - 1)),
            };
            e.ledger.add_asset();
            e.assets.push(Asset {
                symbol,
                scale,
                withdrawals_halted,
                reconciliation,
                withdrawal_policy,
            });
        }
        for _ in 0..r.count(5)? {
            let fee_tier = r.u8()?;
            let open_orders = r.u32()?;
            e.ledger.add_user();
            e.users.push(User {
                fee_tier,
                open_orders,
            });
        }
        for mi in 0..r.count(8)? {
            let symbol = r.str()?;
            let base = kura_units::AssetId(
                u16::try_from(r.u32()?).map_err(|_| "asset id too large".to_string())?,
            );
            let quote = kura_units::AssetId(
                u16::try_from(r.u32()?).map_err(|_| "asset id too large".to_string())?,
            );
            let mut v = [0u64; 7];
            for x in &mut v {
                *x = r.u64()?;
            }
            let mut fees = Vec::new();
            for _ in 0..r.count(8)? {
                fees.push(crate::FeeTier {
                    maker_ppm: r.u32()?,
                    taker_ppm: r.u32()?,
                });
            }
            let spec = MarketSpec {
                symbol,
                base,
                quote,
                tick: Amount::new(v[0]),
                lot: Amount::new(v[1]),
                min_qty: QtyLots::new(v[2]),
                max_qty: QtyLots::new(v[3]),
                min_notional: Amount::new(v[4]),
                max_notional: Amount::new(v[5]),
                max_price: PriceTicks::new(v[6]),
                fees,
                collar_bps: r.u32()?,
                default_stp: r.stp()?,
            };
            crate::funds::validate_spec(&e, &spec)
                .map_err(|why| format!("market {mi}: invalid spec in state: {why}"))?;
            let base_factor = u128::from(e.assets[usize::from(base.0)].scale.factor());
            let halted = r.opt_str()?;
            let last = r.u64()?;
            let update_id = r.u64()?;
            let mut market = Market {
                spec,
                base_factor,
                book: kura_book::Book::new(limits.book),
                halted,
                last_price: (last != 0).then_some(PriceTicks::new(last)),
                update_id,
                client_ids: rustc_hash::FxHashMap::default(),
                order_client_ids: rustc_hash::FxHashMap::default(),
            };
            for side in [Side::Buy, Side::Sell] {
                for _ in 0..r.count(78)? {
                    let at = r.pos;
                    let resting = kura_book::Resting {
                        id: OrderId(r.u64()?),
                        owner: UserId(r.u32()?),
                        price: PriceTicks::new(r.u64()?),
                        remaining: QtyLots::new(r.u64()?),
                        post_only: r.bool()?,
                        stp: r.stp()?,
                        side,
                        payload: OrderData {
                            hold: r.u64()?,
                            cum_notional: r.u128()?,
                            cum_fee: r.u128()?,
                            maker_ppm: r.u32()?,
                            taker_ppm: r.u32()?,
                        },
                    };
                    if resting.owner.0 as usize >= e.users.len() {
                        return Err(format!("order at byte {at} belongs to an unknown user"));
                    }
                    market
                        .book
                        .restore(&resting)
                        .map_err(|why| format!("order at byte {at} cannot rest: {why:?}"))?;
                }
            }
            for _ in 0..r.count(9)? {
                let id = r.u64()?;
                let at = r.pos;
                let text = r.str()?;
                let cid = kura_units::ClientOrderId::parse(&text)
                    .map_err(|why| format!("client order id at byte {at}: {why}"))?;
                let owner = market
                    .book
                    .order(OrderId(id))
                    .ok_or_else(|| format!("client order id at byte {at} names no open order"))?
                    .owner;
                market.client_ids.insert((owner.0, cid), id);
                market.order_client_ids.insert(id, cid);
            }
            if e.market_ids
                .insert(market.spec.symbol.clone(), kura_units::MarketId(mi as u32))
                .is_some()
            {
                return Err(format!(
                    "market {mi}: duplicate symbol {}",
                    market.spec.symbol
                ));
            }
            e.markets.push(market);
        }
        for _ in 0..r.count(25)? {
            let at = r.pos;
            let reference = r.str()?;
            let user = UserId(r.u32()?);
            let asset = kura_units::AssetId(r.u16()?);
            let amount = Amount::new(r.u64()?);
            let reversed = r.bool()?;
            if user.0 as usize >= e.users.len() || usize::from(asset.0) >= e.assets.len() {
                return Err(format!(
                    "deposit at byte {at} names an unknown user or asset"
                ));
            }
            e.deposits.insert(
                reference,
                crate::DepositRecord {
                    user,
                    asset,
                    amount,
                    reversed,
                },
            );
        }
        for _ in 0..r.count(25)? {
            let id = r.str()?;
            let user = UserId(r.u32()?);
            let asset = kura_units::AssetId(
                u16::try_from(r.u32()?).map_err(|_| "asset id too large".to_string())?,
            );
            let amount = Amount::new(r.u64()?);
            if user.0 as usize >= e.users.len() || usize::from(asset.0) >= e.assets.len() {
                return Err(format!(
                    "withdrawal {id:?} names an unknown user or asset (before byte {})",
                    r.pos
                ));
            }
            let at = r.pos;
            let state = match r.u8()? {
                0 => WithdrawalState::Pending,
                1 => WithdrawalState::Settled,
                2 => WithdrawalState::Cancelled,
                3 => WithdrawalState::Review,
                4 => WithdrawalState::Approved,
                5 => WithdrawalState::Batched,
                t => return Err(format!("bad withdrawal state {t} at byte {at}")),
            };
            let address = r.str()?;
            let fee = Amount::new(r.u64()?);
            let requested_ms = r.u64()?;
            let release_ms = r.u64()?;
            let batch = match r.u8()? {
                0 => None,
                1 => Some(r.u64()?),
                t => return Err(format!("bad option tag {t} at byte {}", r.pos - 1)),
            };
            if !address.is_empty() {
                e.withdrawals_by_user
                    .insert((user.0, asset.0, requested_ms, id.clone()));
            }
            if state == WithdrawalState::Approved {
                e.approved_withdrawals.insert(id.clone());
            }
            e.withdrawals.insert(
                id,
                Withdrawal {
                    user,
                    asset,
                    amount,
                    state,
                    address,
                    fee,
                    requested_ms,
                    release_ms,
                    batch,
                },
            );
        }
        e.next_key_number = r.u64()?;
        for _ in 0..r.count(12)? {
            let user = r.u32()?;
            let at = r.pos;
            let name = r.str()?;
            if user as usize >= e.users.len() {
                return Err(format!("name at byte {at} belongs to an unknown user"));
            }
            if e.users_by_name.insert(name.clone(), UserId(user)).is_some() {
                return Err(format!("duplicate customer name at byte {at}"));
            }
            e.user_names.insert(user, name);
        }
        for _ in 0..r.count(40)? {
            let at = r.pos;
            let key = r.str()?;
            let number = r.u64()?;
            let user = UserId(r.u32()?);
            let scheme = match r.u8()? {
                0 => crate::KeyScheme::Hmac,
                1 => crate::KeyScheme::Ed25519(r.arr::<32>()?),
                t => return Err(format!("bad key scheme {t} in the key at byte {at}")),
            };
            let permissions = crate::KeyPermissions::from_bits(r.u8()?)
                .ok_or_else(|| format!("bad permissions in the key at byte {at}"))?;
            let mut ip_allow = Vec::new();
            for _ in 0..r.count(17)? {
                ip_allow.push(crate::IpRange {
                    addr: r.arr::<16>()?,
                    prefix: r.u8()?,
                });
            }
            let label = r.str()?;
            let revoked = r.bool()?;
            if !crate::identity::key_id_ok(&key)
                || user.0 as usize >= e.users.len()
                || number == 0
                || number >= e.next_key_number
            {
                return Err(format!(
                    "the key at byte {at} is inconsistent with the state"
                ));
            }
            e.api_keys.insert(
                key,
                crate::ApiKey {
                    number,
                    user,
                    scheme,
                    permissions,
                    ip_allow,
                    label,
                    revoked,
                },
            );
        }
        for _ in 0..r.count(14)? {
            let at = r.pos;
            let user = r.u32()?;
            let asset = r.u16()?;
            let owed = Amount::new(r.u64()?);
            if user as usize >= e.users.len()
                || usize::from(asset) >= e.assets.len()
                || owed.is_zero()
            {
                return Err(format!(
                    "deficit at byte {at} is inconsistent with the state"
                ));
            }
            e.deficits.insert((user, asset), owed);
        }
        for _ in 0..r.count(15)? {
            let at = r.pos;
            let asset = kura_units::AssetId(r.u16()?);
            let role = crate::WalletRole::from_code(r.u8()?)
                .ok_or_else(|| format!("bad wallet role in the wallet at byte {at}"))?;
            let descriptor = r.str()?;
            let next_index = r.u32()?;
            if usize::from(asset.0) >= e.assets.len() {
                return Err(format!("wallet at byte {at} names an unknown asset"));
            }
            e.wallets.push(crate::Wallet {
                asset,
                role,
                descriptor,
                next_index,
            });
        }
        for _ in 0..r.count(14)? {
            let at = r.pos;
            let user = r.u32()?;
            let asset = r.u16()?;
            let wallet = r.u32()?;
            let index = r.u32()?;
            let known = e
                .wallets
                .get(wallet as usize)
                .is_some_and(|w| index < w.next_index && w.asset.0 == asset);
            if user as usize >= e.users.len() || !known {
                return Err(format!(
                    "deposit address at byte {at} is inconsistent with the state"
                ));
            }
            e.deposit_addresses.insert((user, asset), (wallet, index));
        }
        for _ in 0..r.count(15)? {
            let at = r.pos;
            let user = r.u32()?;
            let asset = r.u16()?;
            let address = r.str()?;
            let usable_from = r.u64()?;
            if user as usize >= e.users.len() || usize::from(asset) >= e.assets.len() {
                return Err(format!(
                    "withdrawal address at byte {at} is inconsistent with the state"
                ));
            }
            e.withdrawal_addresses
                .insert((user, asset, address), usable_from);
        }
        for _ in 0..r.count(40)? {
            let at = r.pos;
            let asset = kura_units::AssetId(r.u16()?);
            let mut withdrawals = Vec::new();
            for _ in 0..r.count(2)? {
                withdrawals.push(r.str()?);
            }
            let mut inputs = Vec::new();
            for _ in 0..r.count(36)? {
                inputs.push(crate::Outpoint {
                    txid: r.arr::<32>()?,
                    vout: r.u32()?,
                });
            }
            let change = match r.u8()? {
                0 => None,
                1 => Some((r.u32()?, r.u32()?)),
                t => return Err(format!("bad option tag {t} at byte {}", r.pos - 1)),
            };
            let mut versions = Vec::new();
            for _ in 0..r.count(40)? {
                versions.push(crate::BatchVersion {
                    txid: r.arr::<32>()?,
                    network_fee: Amount::new(r.u64()?),
                });
            }
            let state = match r.u8()? {
                0 => crate::BatchState::Open,
                1 => crate::BatchState::Confirmed {
                    txid: r.arr::<32>()?,
                    height: r.u32()?,
                },
                2 => crate::BatchState::Cancelled {
                    txid: r.arr::<32>()?,
                    height: r.u32()?,
                },
                3 => crate::BatchState::Abandoned,
                t => return Err(format!("bad batch state {t} at byte {}", r.pos - 1)),
            };
            let built_ms = r.u64()?;
            let transfer = if version == STATE_ENCODING_V4 {
                None
            } else {
                match r.u8()? {
                    0 => None,
                    1 => Some(crate::Transfer {
                        to: (r.u32()?, r.u32()?),
                        amount: Amount::new(r.u64()?),
                    }),
                    t => return Err(format!("bad option tag {t} at byte {}", r.pos - 1)),
                }
            };
            if transfer.is_some() && !withdrawals.is_empty() {
                return Err(format!(
                    "withdrawal batch at byte {at} is a transfer with withdrawals"
                ));
            }
            let id = e.withdrawal_batches.len() as u64;
            let consistent = usize::from(asset.0) < e.assets.len()
                && withdrawals.iter().all(|w| {
                    e.withdrawals
                        .get(w)
                        .is_some_and(|w| w.batch == Some(id) && w.asset == asset)
                });
            if !consistent {
                return Err(format!(
                    "withdrawal batch at byte {at} is inconsistent with the state"
                ));
            }
            if state == crate::BatchState::Open {
                e.open_batches.insert(id);
                for input in &inputs {
                    if e.locked_inputs.insert(*input, id).is_some() {
                        return Err(format!(
                            "withdrawal batch at byte {at} spends a coin another open batch spends"
                        ));
                    }
                }
            }
            e.withdrawal_batches.push(crate::WithdrawalBatch {
                asset,
                withdrawals,
                inputs,
                change,
                versions,
                state,
                built_ms,
                transfer,
            });
        }
        let ledger_at = r.pos;
        let mut rest = &bytes[r.pos..];
        let ledger = kura_ledger::Ledger::decode(&mut rest)
            .ok_or_else(|| format!("ledger at byte {ledger_at} is malformed"))?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes after the state", rest.len()));
        }
        if ledger.asset_count() != e.assets.len() || ledger.user_count() != e.users.len() {
            return Err("ledger dimensions disagree with assets and users".into());
        }
        e.ledger = ledger;
        e.check_invariants()
            .map_err(|why| format!("decoded state breaks an invariant: {why}"))?;
        Ok(e)
    }

    /// The canonical bytes of the whole state.
    pub fn encode_state(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        w.u8(STATE_ENCODING_VERSION);
        w.u64(self.next_order_id);
        w.u64(self.next_trade_id);
        w.u64(self.assets.len() as u64);
        for a in &self.assets {
            w.str(&a.symbol);
            w.u8(a.scale.places());
            w.opt_str(a.withdrawals_halted.as_deref());
            match a.reconciliation {
                None => w.u8(0),
                Some(rc) => {
                    w.u8(1);
                    w.u64(rc.seq);
                    w.u32(rc.height);
                    w.0.extend_from_slice(&rc.block_hash);
                    w.u64(rc.holdings.get());
                    w.u128(rc.liabilities);
                }
            }
            match a.withdrawal_policy {
                None => w.u8(0),
                Some(p) => {
                    w.u8(1);
                    w.u64(p.fee.get());
                    w.u64(p.min_amount.get());
                    w.u64(p.daily_limit.get());
                    w.u64(p.approval_above.get());
                    w.u64(p.address_delay_ms);
                    w.u8(u8::from(p.listed_only));
                }
            }
        }
        w.u64(self.users.len() as u64);
        for u in &self.users {
            w.u8(u.fee_tier);
            w.u32(u.open_orders);
        }
        w.u64(self.markets.len() as u64);
        for m in &self.markets {
            let s = &m.spec;
            w.str(&s.symbol);
            w.u32(u32::from(s.base.0));
            w.u32(u32::from(s.quote.0));
            for v in [
                s.tick.get(),
                s.lot.get(),
                s.min_qty.get(),
                s.max_qty.get(),
                s.min_notional.get(),
                s.max_notional.get(),
                s.max_price.get(),
            ] {
                w.u64(v);
            }
            w.u64(s.fees.len() as u64);
            for f in &s.fees {
                w.u32(f.maker_ppm);
                w.u32(f.taker_ppm);
            }
            w.u32(s.collar_bps);
            w.u8(stp_code(s.default_stp));
            w.opt_str(m.halted.as_deref());
            w.u64(m.last_price.map_or(0, |p| p.get()));
            w.u64(m.update_id);
            for side in [Side::Buy, Side::Sell] {
                let mut count = 0u64;
                m.book.for_each(side, |_| count += 1);
                w.u64(count);
                m.book.for_each(side, |r| {
                    w.u64(r.id.0);
                    w.u32(r.owner.0);
                    w.u64(r.price.get());
                    w.u64(r.remaining.get());
                    w.u8(u8::from(r.post_only));
                    w.u8(stp_code(r.stp));
                    w.u64(r.payload.hold);
                    w.u128(r.payload.cum_notional);
                    w.u128(r.payload.cum_fee);
                    w.u32(r.payload.maker_ppm);
                    w.u32(r.payload.taker_ppm);
                });
            }
            let mut cids: Vec<(u64, &str)> = m
                .order_client_ids
                .iter()
                .map(|(&id, cid)| (id, cid.as_str()))
                .collect();
            cids.sort_unstable();
            w.u64(cids.len() as u64);
            for (id, cid) in cids {
                w.u64(id);
                w.str(cid);
            }
        }
        w.u64(self.deposits.len() as u64);
        for (reference, d) in &self.deposits {
            w.str(reference);
            w.u32(d.user.0);
            w.u16(d.asset.0);
            w.u64(d.amount.get());
            w.u8(u8::from(d.reversed));
        }
        w.u64(self.withdrawals.len() as u64);
        for (id, wd) in &self.withdrawals {
            w.str(id);
            w.u32(wd.user.0);
            w.u32(u32::from(wd.asset.0));
            w.u64(wd.amount.get());
            w.u8(match wd.state {
                WithdrawalState::Pending => 0,
                WithdrawalState::Settled => 1,
                WithdrawalState::Cancelled => 2,
                WithdrawalState::Review => 3,
                WithdrawalState::Approved => 4,
                WithdrawalState::Batched => 5,
            });
            w.str(&wd.address);
            w.u64(wd.fee.get());
            w.u64(wd.requested_ms);
            w.u64(wd.release_ms);
            match wd.batch {
                None => w.u8(0),
                Some(b) => {
                    w.u8(1);
                    w.u64(b);
                }
            }
        }
        w.u64(self.next_key_number);
        w.u64(self.user_names.len() as u64);
        for (user, name) in &self.user_names {
            w.u32(*user);
            w.str(name);
        }
        w.u64(self.api_keys.len() as u64);
        for (key, k) in &self.api_keys {
            w.str(key);
            w.u64(k.number);
            w.u32(k.user.0);
            match k.scheme {
                crate::KeyScheme::Hmac => w.u8(0),
                crate::KeyScheme::Ed25519(public) => {
                    w.u8(1);
                    w.0.extend_from_slice(&public);
                }
            }
            w.u8(k.permissions.bits());
            w.u64(k.ip_allow.len() as u64);
            for r in &k.ip_allow {
                w.0.extend_from_slice(&r.addr);
                w.u8(r.prefix);
            }
            w.str(&k.label);
            w.u8(u8::from(k.revoked));
        }
        w.u64(self.deficits.len() as u64);
        for (&(user, asset), owed) in &self.deficits {
            w.u32(user);
            w.u16(asset);
            w.u64(owed.get());
        }
        w.u64(self.wallets.len() as u64);
        for wallet in &self.wallets {
            w.u16(wallet.asset.0);
            w.u8(wallet.role.code());
            w.str(&wallet.descriptor);
            w.u32(wallet.next_index);
        }
        w.u64(self.deposit_addresses.len() as u64);
        for (&(user, asset), &(wallet, index)) in &self.deposit_addresses {
            w.u32(user);
            w.u16(asset);
            w.u32(wallet);
            w.u32(index);
        }
        w.u64(self.withdrawal_addresses.len() as u64);
        for ((user, asset, address), &usable_from) in &self.withdrawal_addresses {
            w.u32(*user);
            w.u16(*asset);
            w.str(address);
            w.u64(usable_from);
        }
        w.u64(self.withdrawal_batches.len() as u64);
        for b in &self.withdrawal_batches {
            w.u16(b.asset.0);
            w.u64(b.withdrawals.len() as u64);
            for id in &b.withdrawals {
                w.str(id);
            }
            w.u64(b.inputs.len() as u64);
            for input in &b.inputs {
                w.0.extend_from_slice(&input.txid);
                w.u32(input.vout);
            }
            match b.change {
                None => w.u8(0),
                Some((wallet, index)) => {
                    w.u8(1);
                    w.u32(wallet);
                    w.u32(index);
                }
            }
            w.u64(b.versions.len() as u64);
            for v in &b.versions {
                w.0.extend_from_slice(&v.txid);
                w.u64(v.network_fee.get());
            }
            match b.state {
                crate::BatchState::Open => w.u8(0),
                crate::BatchState::Confirmed { txid, height } => {
                    w.u8(1);
                    w.0.extend_from_slice(&txid);
                    w.u32(height);
                }
                crate::BatchState::Cancelled { txid, height } => {
                    w.u8(2);
                    w.0.extend_from_slice(&txid);
                    w.u32(height);
                }
                crate::BatchState::Abandoned => w.u8(3),
            }
            w.u64(b.built_ms);
            match b.transfer {
                None => w.u8(0),
                Some(t) => {
                    w.u8(1);
                    w.u32(t.to.0);
                    w.u32(t.to.1);
                    w.u64(t.amount.get());
                }
            }
        }
        self.ledger.encode(out);
    }

    /// SHA-256 of [`Engine::encode_state`]: identical on every machine for the same
    /// sequence of commands.
    pub fn state_hash(&self) -> [u8; 32] {
        let mut bytes = Vec::with_capacity(1 << 16);
        self.encode_state(&mut bytes);
        Sha256::digest(&bytes).into()
    }

    /// Check DESIGN.md §5 invariants 1–4 over the whole state; the first broken one is
    /// returned with the rule in its message. Cost: O(state); for tests, simulation and
    /// after benchmarks, not for the hot path.
    pub fn check_invariants(&self) -> Result<(), String> {
        // 1. Every asset sums to zero (2. non-negative customer balances is by type).
        self.ledger.check_invariants()?;
        // 3. Held = open-order holds + pending withdrawals, per customer and asset.
        let assets = self.assets.len();
        let mut held = vec![0u128; self.users.len() * assets];
        let mut open = vec![0u32; self.users.len()];
        for m in &self.markets {
            // 4. Books are not crossed and keep price-time priority.
            m.book
                .check_invariants()
                .map_err(|e| format!("market {}: {e}", m.spec.symbol))?;
            for side in [Side::Buy, Side::Sell] {
                let asset = match side {
                    Side::Buy => m.spec.quote,
                    Side::Sell => m.spec.base,
                };
                m.book.for_each(side, |r| {
                    held[r.owner.0 as usize * assets + usize::from(asset.0)] +=
                        u128::from(r.payload.hold);
                    open[r.owner.0 as usize] += 1;
                });
            }
            if m.client_ids.len() != m.order_client_ids.len() {
                return Err(format!(
                    "market {}: client order id maps disagree",
                    m.spec.symbol
                ));
            }
            for (&id, cid) in &m.order_client_ids {
                match m.book.order(kura_units::OrderId(id)) {
                    Some(r) if m.client_ids.get(&(r.owner.0, *cid)) == Some(&id) => {}
                    _ => {
                        return Err(format!(
                            "market {}: client order id {cid} maps to no open order {id}",
                            m.spec.symbol
                        ))
                    }
                }
            }
        }
        // Deficits left by reversed deposits are exactly what the receivable account holds.
        for a in 0..assets {
            let asset = AssetId(a as u16);
            let owed: u128 = self
                .deficits
                .iter()
                .filter(|(&(_, x), _)| x == asset.0)
                .map(|(_, v)| u128::from(v.get()))
                .sum();
            let receivable = self
                .ledger
                .system(kura_ledger::SystemAccount::Receivable, asset)
                .map_err(|e| format!("{e:?}"))?;
            if i128::try_from(owed).map(|o| -o) != Ok(receivable) {
                return Err(format!(
                    "asset {a}: deficits sum to {owed} but the receivable account holds {receivable}"
                ));
            }
        }
        // The derived withdrawal indexes agree with the records they index.
        let approved: std::collections::BTreeSet<&String> = self
            .withdrawals
            .iter()
            .filter(|(_, w)| w.state == WithdrawalState::Approved)
            .map(|(id, _)| id)
            .collect();
        if approved != self.approved_withdrawals.iter().collect() {
            return Err("the approved-withdrawal index disagrees with the withdrawals".into());
        }
        let mut locked = std::collections::BTreeMap::new();
        let mut open_batches = std::collections::BTreeSet::new();
        for (i, b) in self.withdrawal_batches.iter().enumerate() {
            if b.state == crate::BatchState::Open {
                open_batches.insert(i as u64);
                for input in &b.inputs {
                    locked.insert(*input, i as u64);
                }
            }
        }
        if open_batches != self.open_batches || locked != self.locked_inputs {
            return Err("the open-batch indexes disagree with the batches".into());
        }
        for wd in self.withdrawals.values() {
            if wd.state.is_open() {
                held[wd.user.0 as usize * assets + usize::from(wd.asset.0)] +=
                    u128::from(wd.amount.get());
            }
        }
        for (u, user) in self.users.iter().enumerate() {
            if user.open_orders != open[u] {
                return Err(format!(
                    "user {u}: open order count {} but {} orders rest",
                    user.open_orders, open[u]
                ));
            }
            for a in 0..assets {
                let b = self
                    .ledger
                    .balance(kura_units::UserId(u as u32), AssetId(a as u16))
                    .map_err(|e| format!("{e:?}"))?;
                let want = held[u * assets + a];
                if u128::from(b.held.get()) != want {
                    return Err(format!(
                        "user {u} asset {a}: held {} but open orders and pending withdrawals reserve {want}",
                        b.held
                    ));
                }
            }
        }
        Ok(())
    }
}
