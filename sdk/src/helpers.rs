//! Small helpers most plugins need: money formatting, a deterministic random generator, settings
//! and locale lookup.
//!
//! None of them reads a clock or the system's randomness: everything comes from the
//! [`CallContext`], so the host can replay a call and get the same answer.

use std::ops::RangeInclusive;

use crate::types::{CallContext, PluginError};

/// Formats cents as yuan with two decimals: `5` → `"0.05"`, `888` → `"8.88"`, `-120` →
/// `"-1.20"`.
pub fn yuan(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    // `unsigned_abs` so that `i64::MIN` formats instead of overflowing.
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A small deterministic random generator (splitmix64), seeded from the call's
/// `random_seed`.
///
/// The same seed gives the same sequence on every run and every platform, so a replayed call
/// draws the same numbers. Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded with the call's `random_seed`.
    pub fn from_ctx(ctx: &CallContext) -> Self {
        Self::new(ctx.random_seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniformly distributed number in `range` (both ends included).
    ///
    /// Uses Lemire's multiply-and-reject method, so there is no modulo bias.
    ///
    /// # Panics
    ///
    /// If the range is empty (`start > end`): that is a bug in the caller's arithmetic.
    pub fn range_i64(&mut self, range: RangeInclusive<i64>) -> i64 {
        let (low, high) = range.into_inner();
        assert!(low <= high, "Rng::range_i64: empty range `{low}..={high}`");
        // The number of values, minus one, fits in u64 even for the full i64 range.
        let span_minus_one = high.wrapping_sub(low) as u64;
        if span_minus_one == u64::MAX {
            return self.next_u64() as i64;
        }
        let span = span_minus_one + 1;
        // Values of the low half below `threshold` would make some results more likely; redraw.
        let threshold = span.wrapping_neg() % span;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(span);
            if (product as u64) >= threshold {
                return low.wrapping_add((product >> 64) as i64);
            }
        }
    }
}

/// The value of setting `key` from the scene YAML (`plugins.<capability>.settings`), if set.
pub fn setting<'a>(ctx: &'a CallContext, key: &str) -> Option<&'a str> {
    ctx.settings.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
}

/// Setting `key` as a signed integer, or `default` if it is not set.
///
/// A value that is not an integer is [`PluginError::InvalidInput`] naming the key and the value,
/// so a typo in the scene YAML shows up in the host's failure log rather than as a silent default.
pub fn setting_i64(ctx: &CallContext, key: &str, default: i64) -> Result<i64, PluginError> {
    parse_setting(ctx, key, default, "an integer")
}

/// Setting `key` as an unsigned integer, or `default` if it is not set.
///
/// A value that is not a non-negative integer is [`PluginError::InvalidInput`] naming the key
/// and the value.
pub fn setting_u64(ctx: &CallContext, key: &str, default: u64) -> Result<u64, PluginError> {
    parse_setting(ctx, key, default, "a non-negative integer")
}

fn parse_setting<T: std::str::FromStr>(ctx: &CallContext, key: &str, default: T, what: &str) -> Result<T, PluginError> {
    match setting(ctx, key) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| PluginError::InvalidInput(format!("setting `{key}` must be {what}, got `{value}`"))),
    }
}

/// Chooses the locale to write in: `requested` if `supported` has it, else a supported locale
/// with the same language (`en-US` → `en`, then `zh` or `zh-TW` → `zh-CN`), else `default`.
///
/// Comparison ignores ASCII case and treats `_` like `-`; the answer is always spelled as in
/// `supported` (or is `default`).
pub fn pick_locale<'a>(requested: Option<&str>, supported: &[&'a str], default: &'a str) -> &'a str {
    let Some(requested) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
        return default;
    };
    let same =
        |a: &str, b: &str| a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| normalise(x) == normalise(y));
    let language = |tag: &str| -> usize { tag.find(['-', '_']).unwrap_or(tag.len()) };
    let requested_language = &requested[..language(requested)];

    supported
        .iter()
        .find(|s| same(s, requested))
        .or_else(|| supported.iter().find(|s| same(s, requested_language)))
        .or_else(|| supported.iter().find(|s| same(&s[..language(s)], requested_language)))
        .copied()
        .unwrap_or(default)
}

fn normalise(byte: u8) -> u8 {
    if byte == b'_' { b'-' } else { byte.to_ascii_lowercase() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(seed: u64, settings: &[(&str, &str)]) -> CallContext {
        CallContext {
            activity_id: "act".into(),
            scene_id: "scene".into(),
            award_type: "cash".into(),
            app_id: 1,
            act_id: 10001,
            rain_id: 0,
            stage: 0,
            now_ms: 1_700_000_000_000,
            random_seed: seed,
            locale: None,
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn yuan_formats_cents_with_two_decimals() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(888), "8.88");
        assert_eq!(yuan(100), "1.00");
        assert_eq!(yuan(-120), "-1.20");
        assert_eq!(yuan(-5), "-0.05");
        assert_eq!(yuan(i64::MIN), "-92233720368547758.08");
    }

    // The same seed gives the same sequence: replays depend on it.
    #[test]
    fn rng_is_deterministic_per_seed() {
        let a: Vec<u64> = {
            let mut rng = Rng::from_ctx(&ctx(42, &[]));
            (0..8).map(|_| rng.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut rng = Rng::new(42);
            (0..8).map(|_| rng.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut rng = Rng::new(43);
            (0..8).map(|_| rng.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        // splitmix64's published first output for seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn rng_range_stays_in_bounds_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let n = rng.range_i64(-2..=2);
            assert!((-2..=2).contains(&n));
            seen[(n + 2) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.range_i64(5..=5), 5);
        // The full range must not overflow.
        rng.range_i64(i64::MIN..=i64::MAX);
        let n = rng.range_i64(i64::MAX - 1..=i64::MAX);
        assert!(n >= i64::MAX - 1);
    }

    #[test]
    #[should_panic(expected = "empty range")]
    fn rng_range_panics_on_empty_range() {
        let (low, high) = (3, 2);
        Rng::new(1).range_i64(low..=high);
    }

    #[test]
    fn pick_locale_prefers_exact_then_language_then_default() {
        let supported = ["zh-CN", "en"];
        assert_eq!(pick_locale(Some("zh-CN"), &supported, "zh-CN"), "zh-CN");
        assert_eq!(pick_locale(Some("zh-cn"), &supported, "en"), "zh-CN");
        assert_eq!(pick_locale(Some("zh_CN"), &supported, "en"), "zh-CN");
        assert_eq!(pick_locale(Some("en"), &supported, "zh-CN"), "en");
        assert_eq!(pick_locale(Some("en-US"), &supported, "zh-CN"), "en");
        assert_eq!(pick_locale(Some("EN-gb"), &supported, "zh-CN"), "en");
        assert_eq!(pick_locale(Some("zh"), &supported, "en"), "zh-CN");
        assert_eq!(pick_locale(Some("zh-TW"), &supported, "en"), "zh-CN");
        assert_eq!(pick_locale(Some("fr-FR"), &supported, "zh-CN"), "zh-CN");
        assert_eq!(pick_locale(Some(""), &supported, "en"), "en");
        assert_eq!(pick_locale(None, &supported, "en"), "en");
        // An exact language entry wins over a regional one that comes first.
        assert_eq!(pick_locale(Some("en-US"), &["en-GB", "en"], "x"), "en");
    }

    #[test]
    fn settings_parse_or_default_or_fail_with_key_and_value() {
        let c = ctx(0, &[("window_ms", "5000"), ("delta", "-3"), ("bad", "ten"), ("padded", " 7 ")]);
        assert_eq!(setting(&c, "window_ms"), Some("5000"));
        assert_eq!(setting(&c, "missing"), None);
        assert_eq!(setting_u64(&c, "window_ms", 1), Ok(5000));
        assert_eq!(setting_u64(&c, "missing", 1), Ok(1));
        assert_eq!(setting_i64(&c, "delta", 0), Ok(-3));
        assert_eq!(setting_u64(&c, "padded", 0), Ok(7));
        match setting_i64(&c, "bad", 0) {
            Err(PluginError::InvalidInput(message)) => {
                assert!(message.contains("`bad`") && message.contains("`ten`"), "{message}")
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        match setting_u64(&c, "delta", 0) {
            Err(PluginError::InvalidInput(message)) => {
                assert!(message.contains("`delta`") && message.contains("`-3`"), "{message}")
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
}
