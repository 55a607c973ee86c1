//! What the signer will sign: the limits, and what the journal approved.

use bitcoin::OutPoint;
use kura_custody::psbt::Payment;

/// Limits on every signature of the hot key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The most one transaction may pay in fees.
    pub max_fee_sat: u64,
    /// The highest fee rate, measured on the signed transaction.
    pub max_fee_rate_sat_vb: u64,
    /// The most that may leave our wallets within any hour…
    pub hourly_cap_sat: u64,
    /// …and within any 24 hours.
    pub daily_cap_sat: u64,
}

impl Default for Policy {
    /// 0.001 BTC of fee at most 500 sat/vB; 1 BTC an hour, 5 BTC a day.
    fn default() -> Self {
        Policy {
            max_fee_sat: 100_000,
            max_fee_rate_sat_vb: 500,
            hourly_cap_sat: 100_000_000,
            daily_cap_sat: 500_000_000,
        }
    }
}

/// What the journal says was approved for one withdrawal batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The batch id. A batch's outflow counts once against the caps, however many
    /// times it is signed (fee bumps, cancellation).
    pub batch: u64,
    /// Exactly the coins the transaction must spend.
    pub inputs: Vec<OutPoint>,
    /// Each must appear as an output with exactly this script and amount. An empty
    /// list authorizes only outputs to our own wallets (a cancellation).
    pub payments: Vec<Payment>,
}
