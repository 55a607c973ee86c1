//! The hot wallet's float band: how much of what customers are owed may sit in keys
//! that a running process holds.
//!
//! The hot float is every confirmed coin the signer can spend (the hot wallet and the
//! deposit addresses) that no open batch has locked. With liabilities `L`, the band is
//! `[low · L, high · L]` (basis points of `L`; by default 2 % and 5 %):
//!
//! - above the high mark, the surplus is **swept** to cold storage, down to the
//!   middle of the band, automatically (the signer signs a payment to our own cold
//!   descriptor only);
//! - below the low mark, a **refill** up to the middle of the band is prepared from cold
//!   coins, as a PSBT for the offline ceremony (`kura cold sign`); nothing is signed
//!   online;
//! - moves smaller than `min_move_sat` are not worth a transaction and are skipped.
//!
//! Pure: the caller supplies the figures and builds the transaction.

/// The band's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Band {
    /// Below this share of liabilities (basis points), refill the hot wallet.
    pub low_bps: u32,
    /// Above this share of liabilities (basis points), sweep to cold storage.
    pub high_bps: u32,
    /// Smallest move worth a transaction, in satoshis.
    pub min_move_sat: u64,
}

impl Default for Band {
    /// Low water 2 %, high water 5 %, moves of at least 0.0001 BTC.
    fn default() -> Self {
        Band {
            low_bps: 200,
            high_bps: 500,
            min_move_sat: 10_000,
        }
    }
}

/// What the band asks for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// Send this much from the hot float to cold storage.
    Sweep { amount_sat: u64 },
    /// Prepare a refill of this much from cold storage.
    Refill { amount_sat: u64 },
}

/// Why a band is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadBand;

impl std::fmt::Display for BadBand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the hot band needs low water ≤ high water ≤ 10000 basis points")
    }
}

impl std::error::Error for BadBand {}

impl Band {
    /// Check the marks: `low ≤ high ≤ 100 %`.
    pub fn check(&self) -> Result<(), BadBand> {
        if self.low_bps <= self.high_bps && self.high_bps <= 10_000 {
            Ok(())
        } else {
            Err(BadBand)
        }
    }

    fn share(liabilities_sat: u128, bps: u32) -> u128 {
        liabilities_sat.saturating_mul(u128::from(bps)) / 10_000
    }

    /// The low mark, the target (the middle of the band) and the high mark, in sat.
    pub fn marks(&self, liabilities_sat: u128) -> (u128, u128, u128) {
        let low = Self::share(liabilities_sat, self.low_bps);
        let high = Self::share(liabilities_sat, self.high_bps);
        (low, low + (high - low.min(high)) / 2, high)
    }

    /// The move that brings a hot float of `hot_sat` back into the band, given the
    /// liabilities and the unlocked cold coins (`cold_sat`). A refill never asks for more
    /// than cold storage holds.
    pub fn decide(&self, hot_sat: u64, cold_sat: u64, liabilities_sat: u128) -> Option<Move> {
        let (low, target, high) = self.marks(liabilities_sat);
        let hot = u128::from(hot_sat);
        let amount = if hot > high {
            Move::Sweep {
                amount_sat: u64::try_from(hot - target).unwrap_or(u64::MAX),
            }
        } else if hot < low {
            let want = u64::try_from(target - hot).unwrap_or(u64::MAX);
            Move::Refill {
                amount_sat: want.min(cold_sat),
            }
        } else {
            return None;
        };
        let (Move::Sweep { amount_sat } | Move::Refill { amount_sat }) = amount;
        (amount_sat >= self.min_move_sat.max(1)).then_some(amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BAND: Band = Band {
        low_bps: 200,
        high_bps: 500,
        min_move_sat: 10_000,
    };

    #[test]
    fn inside_the_band_nothing_moves() {
        // Liabilities 10 BTC: band 0.2–0.5 BTC, target 0.35 BTC.
        let l = 1_000_000_000;
        assert_eq!(BAND.marks(l), (20_000_000, 35_000_000, 50_000_000));
        for hot in [20_000_000, 35_000_000, 50_000_000] {
            assert_eq!(BAND.decide(hot, 900_000_000, l), None);
        }
    }

    #[test]
    fn above_high_water_sweeps_down_to_the_middle() {
        let l = 1_000_000_000;
        assert_eq!(
            BAND.decide(80_000_000, 0, l),
            Some(Move::Sweep {
                amount_sat: 45_000_000
            })
        );
        // With nothing owed, everything hot goes cold.
        assert_eq!(
            BAND.decide(80_000_000, 0, 0),
            Some(Move::Sweep {
                amount_sat: 80_000_000
            })
        );
    }

    #[test]
    fn below_low_water_refills_at_most_what_cold_storage_holds() {
        let l = 1_000_000_000;
        assert_eq!(
            BAND.decide(5_000_000, 900_000_000, l),
            Some(Move::Refill {
                amount_sat: 30_000_000
            })
        );
        assert_eq!(
            BAND.decide(5_000_000, 12_000_000, l),
            Some(Move::Refill {
                amount_sat: 12_000_000
            })
        );
        // Nothing cold: nothing to refill from.
        assert_eq!(BAND.decide(5_000_000, 0, l), None);
    }

    #[test]
    fn small_moves_are_skipped_and_bad_bands_refused() {
        // Owed 0.001 BTC: the band is 2,000–5,000 sat; 13,000 hot would move 9,500.
        assert_eq!(BAND.decide(13_000, 0, 100_000), None);
        assert!(BAND.decide(13_500, 0, 100_000).is_some());
        assert!(Band {
            low_bps: 600,
            high_bps: 500,
            min_move_sat: 1
        }
        .check()
        .is_err());
        assert!(Band {
            low_bps: 0,
            high_bps: 10_001,
            min_move_sat: 1
        }
        .check()
        .is_err());
        assert!(BAND.check().is_ok());
    }

    proptest! {
        /// After the move the float is inside the band (or cold storage ran out, or the
        /// move was too small to bother), and a sweep never leaves less than the low
        /// mark.
        #[test]
        fn a_move_lands_inside_the_band(
            hot in 0u64..2_100_000_000_000_000,
            cold in 0u64..2_100_000_000_000_000,
            l in 0u128..2_100_000_000_000_000,
            low in 0u32..=10_000,
            width in 0u32..=10_000,
        ) {
            let band = Band { low_bps: low, high_bps: (low + width).min(10_000), min_move_sat: 10_000 };
            prop_assume!(band.check().is_ok());
            let (lo, _, hi) = band.marks(l);
            match band.decide(hot, cold, l) {
                None => prop_assert!(
                    (lo..=hi).contains(&u128::from(hot))
                        || u128::from(hot) > hi && u128::from(hot) - hi < 10_000
                        || u128::from(hot) < lo && (cold < 10_000 || lo - u128::from(hot) < 10_000)
                ),
                Some(Move::Sweep { amount_sat }) => {
                    prop_assert!(amount_sat <= hot);
                    let after = u128::from(hot - amount_sat);
                    prop_assert!(lo <= after && after <= hi);
                }
                Some(Move::Refill { amount_sat }) => {
                    prop_assert!(amount_sat <= cold);
                    let after = u128::from(hot) + u128::from(amount_sat);
                    prop_assert!(after <= hi);
                    prop_assert!(after >= lo || amount_sat == cold);
                }
            }
        }
    }
}
