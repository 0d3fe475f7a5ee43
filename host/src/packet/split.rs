//! How a group red packet's total is split into shares, once, at send time, in integer cents.
//!
//! Both rules give every share at least one cent and shares that sum to the total exactly, and
//! both end with a uniformly random permutation of the shares, so that **the share a grabber gets
//! does not depend on when they grab**: each position of the stored order has the same
//! distribution. (The "double mean" rule alone is not fair by position: its last share takes the
//! rest, and public implementations that drew shares at grab time saw means fall with grab order,
//! a negative last share from rounding, and leftovers leaking into the next packet. Here the
//! shares are drawn and stored before anyone grabs, from this packet's total alone.)

/// The rule a packet is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// "Double mean": each share uniform in `[1, 2 × remaining / shares left]` cents (bounded
    /// so that every later share keeps at least one cent); the last takes the rest.
    Random,
    /// As equal as cents allow: shares differ by at most one cent.
    Equal,
}

impl Split {
    /// The rule's name on the wire and in the stored definition.
    pub fn name(self) -> &'static str {
        match self {
            Split::Random => "random",
            Split::Equal => "equal",
        }
    }
}

/// Splits `total_cents` into `shares` shares by `rule`, drawing from `rng`. The caller has
/// checked `1 ≤ shares ≤ total_cents`.
pub fn split(total_cents: i64, shares: usize, rule: Split, rng: &mut fastrand::Rng) -> Vec<i64> {
    assert!(shares >= 1 && total_cents >= shares as i64, "{total_cents} cents cannot make {shares} shares");
    let mut out = match rule {
        Split::Equal => {
            let base = total_cents / shares as i64;
            let extra = (total_cents % shares as i64) as usize;
            (0..shares).map(|i| base + i64::from(i < extra)).collect::<Vec<_>>()
        }
        Split::Random => double_mean(total_cents, shares, rng),
    };
    rng.shuffle(&mut out);
    out
}

fn double_mean(total_cents: i64, shares: usize, rng: &mut fastrand::Rng) -> Vec<i64> {
    let mut out = Vec::with_capacity(shares);
    let mut remaining = total_cents;
    for left in (2..=shares as i64).rev() {
        // Uniform in [1, 2 × mean], and never so much that a later share would get nothing.
        let high = (2 * remaining / left).min(remaining - (left - 1)).max(1);
        let share = rng.i64(1..=high);
        out.push(share);
        remaining -= share;
    }
    out.push(remaining);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // Proves every split sums to the total exactly with every share at least one cent, for
        // any total and share count the API accepts, by both rules.
        #[test]
        fn shares_sum_to_the_total_and_are_at_least_one_cent(
            shares in 1usize..=200,
            extra in 0i64..100_000,
            seed in any::<u64>(),
            equal in any::<bool>(),
        ) {
            let total = shares as i64 + extra;
            let rule = if equal { Split::Equal } else { Split::Random };
            let out = split(total, shares, rule, &mut fastrand::Rng::with_seed(seed));
            prop_assert_eq!(out.len(), shares);
            prop_assert_eq!(out.iter().sum::<i64>(), total);
            prop_assert!(out.iter().all(|&share| share >= 1), "{:?}", out);
            if equal {
                let (low, high) = (out.iter().min().unwrap(), out.iter().max().unwrap());
                prop_assert!(high - low <= 1, "{:?}", out);
            }
        }
    }

    /// The mean and variance of the share at each position over `packets` packets.
    fn moments_by_position(packets: u32, mut draw: impl FnMut() -> Vec<i64>) -> Vec<(f64, f64)> {
        let mut sums: Vec<(f64, f64)> = Vec::new();
        for _ in 0..packets {
            let out = draw();
            sums.resize(out.len(), (0.0, 0.0));
            for (position, &share) in out.iter().enumerate() {
                sums[position].0 += share as f64;
                sums[position].1 += (share as f64).powi(2);
            }
        }
        let n = f64::from(packets);
        sums.iter().map(|(sum, sq)| (sum / n, sq / n - (sum / n).powi(2))).collect()
    }

    // Proves the split is fair by position: over many packets, the mean share at every grab
    // position is within 3% of the total's mean and its variance within 15% of the average
    // variance, so grabbing early or late is the same bet; and one packet's leftovers never reach
    // the next (each packet sums to its own total).
    #[test]
    fn every_grab_position_has_the_same_expected_share() {
        let (total, shares) = (1000i64, 10usize);
        let mut rng = fastrand::Rng::with_seed(2026);
        let moments = moments_by_position(20_000, || {
            let out = split(total, shares, Split::Random, &mut rng);
            assert_eq!(out.iter().sum::<i64>(), total);
            out
        });
        let expected = total as f64 / shares as f64;
        let variance = moments.iter().map(|(_, v)| v).sum::<f64>() / shares as f64;
        for (position, (mean, var)) in moments.iter().enumerate() {
            assert!((mean - expected).abs() / expected < 0.03, "position {position}: mean {mean}, expected {expected}");
            assert!(
                (var - variance).abs() / variance < 0.15,
                "position {position}: variance {var}, average {variance}"
            );
        }
    }

    // Proves the shuffle is what makes it fair: the double mean alone, in draw order, has a last
    // share that varies far more than the first (the check above would fail on it).
    #[test]
    fn double_mean_alone_is_not_fair_by_position() {
        let mut rng = fastrand::Rng::with_seed(7);
        let moments = moments_by_position(20_000, || double_mean(1000, 10, &mut rng));
        assert!(moments[9].1 > moments[0].1 * 1.5, "{moments:?}");
    }

    // Proves the smallest packets work: one share takes everything, and n cents over n shares
    // gives one cent each.
    #[test]
    fn the_smallest_packets_split_exactly() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(split(5, 1, Split::Random, &mut rng), [5]);
        assert_eq!(split(100, 100, Split::Random, &mut rng), vec![1; 100]);
        assert_eq!(split(100, 100, Split::Equal, &mut rng), vec![1; 100]);
    }
}
