//! Regtest consensus rules the devnet applies, as pure functions over a block or a
//! transaction and the coins it spends.

use std::collections::HashSet;

use bitcoin::blockdata::script::Builder;
use bitcoin::pow::CompactTarget;
use bitcoin::{Amount, Block, OutPoint, Target, Transaction, TxOut};

/// Regtest's fixed proof-of-work target (`nBits`), never retargeted.
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// Blocks between subsidy halvings on regtest.
pub const HALVING_INTERVAL: u32 = 150;
/// Confirmations a coinbase output needs before it can be spent.
pub const COINBASE_MATURITY: u32 = 100;
/// Maximum block weight (BIP141).
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// Largest transaction weight the mempool relays (policy).
pub const MAX_STANDARD_TX_WEIGHT: u64 = 400_000;
/// Minimum relay feerate and incremental relay feerate, in sat per virtual byte (policy).
pub const MIN_RELAY_SAT_PER_VB: u64 = 1;
/// Most transactions one replacement may evict (BIP125 rule 5).
pub const MAX_REPLACEMENT_EVICTIONS: usize = 100;
/// How far ahead of the clock a block's time may be, in seconds.
pub const MAX_FUTURE_BLOCK_TIME: u64 = 2 * 60 * 60;
/// `nLockTime` values below this are heights, the rest are times.
const LOCKTIME_THRESHOLD: u32 = 500_000_000;
const SEQUENCE_FINAL: u32 = 0xffff_ffff;
const SEQUENCE_LOCKTIME_DISABLE_FLAG: u32 = 1 << 31;
const SEQUENCE_LOCKTIME_TYPE_FLAG: u32 = 1 << 22;
const SEQUENCE_LOCKTIME_MASK: u32 = 0x0000_ffff;
const SEQUENCE_LOCKTIME_GRANULARITY: u32 = 9;

/// The regtest proof-of-work target.
pub fn regtest_target() -> Target {
    Target::from_compact(CompactTarget::from_consensus(REGTEST_BITS))
}

/// The block subsidy at `height`: 50 BTC, halved every [`HALVING_INTERVAL`] blocks.
pub fn subsidy(height: u32) -> Amount {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat((50 * 100_000_000u64) >> halvings)
}

/// The script prefix BIP34 requires at the start of the coinbase's scriptSig.
pub fn bip34_prefix(height: u32) -> Vec<u8> {
    Builder::new()
        .push_int(i64::from(height))
        .into_script()
        .into_bytes()
}

/// A coin: an unspent output with where it was created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coin {
    /// The output.
    pub output: TxOut,
    /// Height of the block that created it (for a mempool parent: the next block's height).
    pub height: u32,
    /// Whether a coinbase created it (and so [`COINBASE_MATURITY`] applies).
    pub coinbase: bool,
}

/// Context-free transaction checks (Core's `CheckTransaction`). Returns Core's reject reason.
pub fn check_transaction(tx: &Transaction) -> Result<(), &'static str> {
    if tx.input.is_empty() {
        return Err("bad-txns-vin-empty");
    }
    if tx.output.is_empty() {
        return Err("bad-txns-vout-empty");
    }
    // Size without witness, scaled, must fit a block.
    if (tx.base_size() as u64).saturating_mul(4) > MAX_BLOCK_WEIGHT {
        return Err("bad-txns-oversize");
    }
    let mut total = Amount::ZERO;
    for out in &tx.output {
        if out.value > Amount::MAX_MONEY {
            return Err("bad-txns-vout-toolarge");
        }
        total = match total.checked_add(out.value) {
            Some(t) if t <= Amount::MAX_MONEY => t,
            _ => return Err("bad-txns-txouttotal-toolarge"),
        };
    }
    let mut seen = HashSet::with_capacity(tx.input.len());
    for input in &tx.input {
        if !seen.insert(input.previous_output) {
            return Err("bad-txns-inputs-duplicate");
        }
    }
    if tx.is_coinbase() {
        let len = tx.input[0].script_sig.len();
        if !(2..=100).contains(&len) {
            return Err("bad-cb-length");
        }
    } else if tx
        .input
        .iter()
        .any(|i| i.previous_output == OutPoint::null())
    {
        return Err("bad-txns-prevout-null");
    }
    Ok(())
}

/// Core's `IsFinalTx`: whether `tx` may be included in a block at `height` whose lock-time
/// cutoff (the previous block's median time past, BIP113) is `cutoff_time`.
pub fn is_final(tx: &Transaction, height: u32, cutoff_time: u32) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 {
        return true;
    }
    let limit = if lock < LOCKTIME_THRESHOLD {
        height
    } else {
        cutoff_time
    };
    if lock < limit {
        return true;
    }
    tx.input.iter().all(|i| i.sequence.0 == SEQUENCE_FINAL)
}

/// BIP68 relative lock times. `coins[i]` is the coin input `i` spends; `mtp_at(h)` is the
/// median time past of the active chain's block at height `h` (for `h` up to the previous
/// block). The transaction goes in a block at `height` whose predecessor has median time
/// past `prev_mtp`.
pub fn sequence_locks_ok(
    tx: &Transaction,
    coins: &[Coin],
    height: u32,
    prev_mtp: u32,
    mtp_at: impl Fn(u32) -> u32,
) -> bool {
    if tx.version.0 < 2 {
        return true;
    }
    let mut min_height: i64 = -1;
    let mut min_time: i64 = -1;
    for (input, coin) in tx.input.iter().zip(coins) {
        let seq = input.sequence.0;
        if seq & SEQUENCE_LOCKTIME_DISABLE_FLAG != 0 {
            continue;
        }
        let value = i64::from(seq & SEQUENCE_LOCKTIME_MASK);
        if seq & SEQUENCE_LOCKTIME_TYPE_FLAG != 0 {
            let coin_time = i64::from(mtp_at(coin.height.saturating_sub(1)));
            min_time = min_time.max(coin_time + (value << SEQUENCE_LOCKTIME_GRANULARITY) - 1);
        } else {
            min_height = min_height.max(i64::from(coin.height) + value - 1);
        }
    }
    min_height < i64::from(height) && min_time < i64::from(prev_mtp)
}

/// Whether the devnet can verify a spend of this output script with the consensus library
/// it links (which has no taproot rules): anything but a witness program of version 1 or
/// higher.
pub fn spend_verifiable(script: &bitcoin::Script) -> bool {
    match script.witness_version() {
        Some(v) => v == bitcoin::WitnessVersion::V0,
        None => true,
    }
}

/// Verifies every input script of `tx` with Bitcoin Core's consensus code. `spent[i]` is
/// the output input `i` spends.
pub fn verify_scripts(tx: &Transaction, spent: &[TxOut]) -> Result<(), String> {
    let lookup: std::collections::HashMap<OutPoint, &TxOut> = tx
        .input
        .iter()
        .map(|i| i.previous_output)
        .zip(spent)
        .collect();
    tx.verify(|op| lookup.get(op).map(|o| (*o).clone()))
        .map_err(|e| format!("mandatory-script-verify-flag-failed ({e})"))
}

/// Checks a block's proof of work, merkle root, duplicate transactions, witness commitment,
/// coinbase position and BIP34 height, version and weight: everything that does not need
/// the coins it spends. `height` is the height it would have.
pub fn check_block_shape(block: &Block, height: u32) -> Result<(), &'static str> {
    if block.header.bits.to_consensus() != REGTEST_BITS {
        return Err("bad-diffbits");
    }
    if block.header.validate_pow(regtest_target()).is_err() {
        return Err("high-hash");
    }
    if block.header.version.to_consensus() < 4 {
        return Err("bad-version");
    }
    if block.txdata.is_empty() {
        return Err("bad-blk-length");
    }
    match block.compute_merkle_root() {
        Some(root) if root == block.header.merkle_root => {}
        _ => return Err("bad-txnmrklroot"),
    }
    let mut txids = HashSet::with_capacity(block.txdata.len());
    for tx in &block.txdata {
        if !txids.insert(tx.compute_txid()) {
            return Err("bad-txns-duplicate");
        }
    }
    if !block.txdata[0].is_coinbase() {
        return Err("bad-cb-missing");
    }
    if block.txdata.iter().skip(1).any(|t| t.is_coinbase()) {
        return Err("bad-cb-multiple");
    }
    if block.weight().to_wu() > MAX_BLOCK_WEIGHT {
        return Err("bad-blk-weight");
    }
    for tx in &block.txdata {
        check_transaction(tx).map_err(|_| "bad-txns-in-block")?;
    }
    // BIP34: the coinbase scriptSig starts with the serialized height.
    if !block.txdata[0].input[0]
        .script_sig
        .as_bytes()
        .starts_with(&bip34_prefix(height))
    {
        return Err("bad-cb-height");
    }
    check_witness(block)
}

/// Core's witness rules: with a commitment in the coinbase it must match the witness root
/// and the coinbase witness must be one 32-byte item; without one, no transaction may carry
/// witness data.
fn check_witness(block: &Block) -> Result<(), &'static str> {
    const MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    let coinbase = &block.txdata[0];
    let has_commitment = coinbase
        .output
        .iter()
        .any(|o| o.script_pubkey.len() >= 38 && o.script_pubkey.as_bytes()[..6] == MAGIC);
    if has_commitment {
        let witness = &coinbase.input[0].witness;
        if witness.len() != 1 || witness.iter().any(|w| w.len() != 32) {
            return Err("bad-witness-nonce-size");
        }
        if !block.check_witness_commitment() {
            return Err("bad-witness-merkle-match");
        }
        Ok(())
    } else if block
        .txdata
        .iter()
        .any(|t| t.input.iter().any(|i| !i.witness.is_empty()))
    {
        Err("unexpected-witness")
    } else {
        Ok(())
    }
}

/// Finds a nonce (bumping the time if every nonce fails) that meets the regtest target.
pub fn solve(header: &mut bitcoin::block::Header) {
    let target = regtest_target();
    while header.validate_pow(target).is_err() {
        header.nonce = header.nonce.wrapping_add(1);
        if header.nonce == 0 {
            header.time = header.time.wrapping_add(1);
        }
    }
}

/// Median of the given block times (Core's `GetMedianTimePast` over the last 11).
pub fn median_time(times: &[u32]) -> u32 {
    let mut v: Vec<u32> = times.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsidy_halves_every_150_blocks() {
        assert_eq!(subsidy(0), Amount::from_btc(50.0).expect("amount"));
        assert_eq!(subsidy(149), Amount::from_sat(5_000_000_000));
        assert_eq!(subsidy(150), Amount::from_sat(2_500_000_000));
        assert_eq!(subsidy(300), Amount::from_sat(1_250_000_000));
        assert_eq!(subsidy(150 * 64), Amount::ZERO);
    }

    #[test]
    fn bip34_prefix_matches_core_encoding() {
        // Core serializes small heights as OP_N and larger ones as minimal pushes.
        assert_eq!(bip34_prefix(1), vec![0x51]);
        assert_eq!(bip34_prefix(16), vec![0x60]);
        assert_eq!(bip34_prefix(17), vec![0x01, 0x11]);
        assert_eq!(bip34_prefix(128), vec![0x02, 0x80, 0x00]);
    }

    #[test]
    fn median_of_times() {
        assert_eq!(median_time(&[5, 1, 3]), 3);
        assert_eq!(median_time(&[1, 2]), 2);
        assert_eq!(median_time(&[7]), 7);
    }
}
