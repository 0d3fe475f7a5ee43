//! A host's latency histogram over one run, read off its `/metrics` page before and after: what
//! the host itself measured, beside what the load generator saw (which adds the client's side:
//! its own scheduling on the same cores, the loopback, the request's reading and writing).

/// The observations of one histogram series between two pages, cumulative by upper bound
/// (seconds, ascending; the last `+Inf`).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramDelta {
    cumulative: Vec<(f64, f64)>,
}

impl HistogramDelta {
    /// The series whose bucket lines start with `bucket_prefix` (the family's `_bucket{` and
    /// every label before `le`, e.g. `hongbao_grant_request_duration_seconds_bucket{kind="single",`),
    /// as `after` counts it less `before`.
    pub fn between(before: &str, after: &str, bucket_prefix: &str) -> HistogramDelta {
        let (before, after) = (buckets(before, bucket_prefix), buckets(after, bucket_prefix));
        let cumulative = after
            .iter()
            .map(|&(bound, count)| {
                let earlier = before.iter().find(|(b, _)| *b == bound).map_or(0.0, |(_, c)| *c);
                (bound, count - earlier)
            })
            .collect();
        HistogramDelta { cumulative }
    }

    /// Observations in the run.
    pub fn count(&self) -> f64 {
        self.cumulative.last().map_or(0.0, |(_, count)| *count)
    }

    /// The share of the run's observations at or below `bound_s`, one of the buckets' bounds.
    pub fn share_within(&self, bound_s: f64) -> Option<f64> {
        let total = self.count();
        let (_, within) = self.cumulative.iter().find(|(bound, _)| *bound == bound_s)?;
        (total > 0.0).then(|| within / total)
    }

    /// The `q` quantile in seconds, linear within its bucket as Prometheus computes it (the
    /// last finite bound when it falls in +Inf; 0 without observations).
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total <= 0.0 {
            return 0.0;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &self.cumulative {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return lower.0;
                }
                let within = (rank - lower.1) / (cumulative - lower.1).max(f64::MIN_POSITIVE);
                return lower.0 + (bound - lower.0) * within;
            }
            lower = (bound, cumulative);
        }
        lower.0
    }

    /// The bucket the `q` quantile falls in: its lower and upper bounds, seconds.
    pub fn quantile_bucket(&self, q: f64) -> Option<(f64, f64)> {
        let rank = self.count() * q;
        let mut lower = 0.0;
        for &(bound, count) in &self.cumulative {
            if count >= rank && count > 0.0 {
                return Some((lower, bound));
            }
            lower = bound;
        }
        None
    }
}

/// `(bound, cumulative count)` of the bucket lines starting with `prefix` then `le="…"} N`.
fn buckets(page: &str, prefix: &str) -> Vec<(f64, f64)> {
    page.lines()
        .filter_map(|line| line.strip_prefix(prefix)?.strip_prefix("le=\""))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "h_seconds_bucket{kind=\"single\",";

    fn page(counts: [u64; 4]) -> String {
        let mut page = String::from("# TYPE h_seconds histogram\nh_seconds_bucket{kind=\"batch\",le=\"0.001\"} 99\n");
        for (bound, count) in ["0.001", "0.002", "0.005", "+Inf"].iter().zip(counts) {
            page.push_str(&format!("h_seconds_bucket{{kind=\"single\",le=\"{bound}\"}} {count}\n"));
        }
        page
    }

    #[test]
    fn a_runs_buckets_are_the_difference_of_two_pages() {
        // Before: 10 observations; the run adds 900 within 1 ms, 80 within 2, 15 within 5, 5 above.
        let delta = HistogramDelta::between(&page([5, 8, 10, 10]), &page([905, 988, 1_005, 1_010]), PREFIX);
        assert_eq!(delta.count(), 1_000.0);
        assert_eq!(delta.share_within(0.002), Some(0.98));
        assert_eq!(delta.share_within(0.005), Some(0.995));
        assert_eq!(delta.share_within(0.003), None, "not a bound");
        assert_eq!(delta.quantile_bucket(0.5), Some((0.0, 0.001)));
        assert_eq!(delta.quantile_bucket(0.99), Some((0.002, 0.005)));
        assert_eq!(delta.quantile_bucket(0.999), Some((0.005, f64::INFINITY)));
    }

    #[test]
    fn a_run_without_observations_has_no_quantile() {
        let delta = HistogramDelta::between(&page([5, 8, 10, 10]), &page([5, 8, 10, 10]), PREFIX);
        assert_eq!(delta.count(), 0.0);
        assert_eq!(delta.share_within(0.005), None);
        assert_eq!(delta.quantile_bucket(0.99), None);
    }
}
