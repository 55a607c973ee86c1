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
pub const STATE_ENCODING_VERSION: u8 = 1;

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
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

impl Engine {
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
            for side in [Side::Buy, Side::Sell] {
                w.u64(m.book.len() as u64);
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
        for d in &self.deposits {
            w.str(d);
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
            });
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
        for wd in self.withdrawals.values() {
            if wd.state == WithdrawalState::Pending {
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
