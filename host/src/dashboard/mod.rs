//! The live dashboard: `GET /dashboard` serves one page (`page.html`: inline script and style,
//! nothing downloaded, nothing to build) that polls `GET /dashboard/data` every second. Both are
//! for the admin; a browser may send the admin credential as HTTP Basic (`admin` and the
//! credential), which these two read-only routes alone accept (see `api::routes`).
//!
//! A sampler ([`run`]) reads the host's figures once a second into a ring of the last
//! [`SAMPLES_MAX`] samples: this host's grants and credits, the crediting backlog and every
//! scene's stock used (both fleet-wide on a shared store). The data answer puts the current
//! figures, read when asked, beside the rates and projections the samples give: grants/s and
//! credits/s over the last minutes, the backlog's drain time, each scene's sell-out time at the
//! rate of the last [`RATE_WINDOW_SAMPLES`] samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use parking_lot::Mutex;

use crate::app::App;
use crate::store::StoreError;
use crate::writer::LimitReason;

/// The page.
pub const PAGE: &str = include_str!("page.html");

/// How often the sampler reads the figures.
pub const SAMPLE_INTERVAL_MS: u64 = 1_000;

/// Samples kept: five minutes at one a second, the "last minutes" the chart shows. A sample
/// holds a few counters and two numbers per scene, so the ring stays within kilobytes per scene.
pub const SAMPLES_MAX: usize = 300;

/// Samples the current rates are taken over (ten seconds): long enough to smooth a rain's
/// bursts, short enough to follow a change within seconds.
pub const RATE_WINDOW_SAMPLES: usize = 10;

/// One reading of the figures.
#[derive(Debug, Clone)]
struct Sample {
    /// Monotonic time of the reading.
    at_ms: u64,
    /// Wall time of the reading, for the chart.
    wall_ms: u64,
    granted: u64,
    credits: u64,
    backlog: u64,
    /// Stock used by scene (count, cents), keyed `activity/scene`.
    scenes: BTreeMap<String, (u64, i64)>,
}

/// The samples so far.
#[derive(Debug, Default)]
pub struct Dashboard {
    samples: Mutex<VecDeque<Sample>>,
}

/// One point of the chart: the rates between two samples.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    /// Wall time of the later sample, ms since the epoch.
    pub t_ms: u64,
    /// New grants this host answered per second.
    pub grants_per_s: f64,
    /// Credits this host's writer wrote per second.
    pub credits_per_s: f64,
    /// Tokens waiting to be credited.
    pub backlog: u64,
}

/// This host's counts since start.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Totals {
    /// New grants answered.
    pub granted: u64,
    /// Grants answered again with their original token.
    pub replayed: u64,
    /// Grants refused, whatever the code.
    pub refused: u64,
    /// Ledger entries this host's writer wrote.
    pub credits: u64,
    /// Scene plugin calls that failed.
    pub plugin_failures: u64,
}

/// The crediting backlog and where it is heading.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct BacklogView {
    /// Tokens waiting to be credited.
    pub tokens: u64,
    /// Seconds until it is empty at the rate it shrank over the last samples; 0 when empty,
    /// `null` when it is not shrinking.
    pub drain_s: Option<f64>,
    /// `empty`, `draining`, `growing` or `steady`.
    pub trend: &'static str,
}

/// The ledger writer's limit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct WriterView {
    /// Credits per second it credits under now; `null`: no limit.
    pub limit_credits_per_s: Option<f64>,
    /// `--credits-per-second`; `null`: no cap.
    pub cap_credits_per_s: Option<u64>,
    /// Why the limit is where it is.
    pub reason: LimitReason,
}

/// One scene's stock, budget and pace.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct SceneView {
    /// The activity.
    pub activity_id: String,
    /// The scene.
    pub scene_id: String,
    /// Grants the scene may still make; `null` without a count bound.
    pub stock_left: Option<u64>,
    /// Cents it may still pay; `null` without a budget bound.
    pub budget_left_cents: Option<i64>,
    /// Grants per second over the last samples (fleet-wide on a shared store).
    pub grants_per_s: f64,
    /// Cents per second over the last samples.
    pub cents_per_s: f64,
    /// Seconds until its stock or budget runs out at that pace; 0 when out, `null` when it
    /// has no bound or is not being spent.
    pub sell_out_s: Option<f64>,
}

/// Refused grants with one code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RefusalCount {
    /// The refusal's stable code.
    pub code: String,
    /// How many.
    pub count: u64,
}

/// Failed calls of one scene plugin with one code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PluginFailureCount {
    /// The activity.
    pub activity_id: String,
    /// The scene.
    pub scene_id: String,
    /// The plugin's capability.
    pub capability: &'static str,
    /// The failure code.
    pub code: &'static str,
    /// How many.
    pub count: u64,
}

/// An activity's budget left.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ActivityBudget {
    /// The activity.
    pub activity_id: String,
    /// Cents it may still grant.
    pub budget_left_cents: i64,
}

/// `GET /dashboard/data`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DashboardData {
    /// When this answer was made, ms since the epoch.
    pub now_ms: u64,
    /// The time between samples.
    pub sample_interval_ms: u64,
    /// The chart, oldest first, at most [`SAMPLES_MAX`] − 1 points.
    pub series: Vec<SeriesPoint>,
    /// This host's counts since start.
    pub totals: Totals,
    /// The crediting backlog.
    pub backlog: BacklogView,
    /// The writer's limit.
    pub writer: WriterView,
    /// Every scene, by activity and scene id.
    pub scenes: Vec<SceneView>,
    /// Refused grants by code.
    pub refusals: Vec<RefusalCount>,
    /// Scene plugin failures, those with a count only.
    pub plugin_failures: Vec<PluginFailureCount>,
    /// Every activity's budget left.
    pub activities: Vec<ActivityBudget>,
}

impl Dashboard {
    /// Reads the figures once and keeps them as the newest sample.
    pub async fn sample(&self, app: &App) -> Result<(), StoreError> {
        let backlog = app.store.queue_len().await?;
        let scenes = scenes_used(app).await?;
        let sample = Sample {
            at_ms: app.clock.monotonic_ms(),
            wall_ms: app.clock.now_ms(),
            granted: app.metrics.outcome_totals().get("granted").copied().unwrap_or(0),
            credits: app.writer.stats.applied.load(Relaxed),
            backlog,
            scenes,
        };
        let mut samples = self.samples.lock();
        if samples.len() == SAMPLES_MAX {
            samples.pop_front();
        }
        samples.push_back(sample);
        Ok(())
    }

    /// The figures for the page: the current ones read now, rates from the samples.
    pub async fn data(&self, app: &App) -> Result<DashboardData, StoreError> {
        let backlog = app.store.queue_len().await?;
        let used = scenes_used(app).await?;
        let samples: Vec<Sample> = self.samples.lock().iter().cloned().collect();
        let outcomes = app.metrics.outcome_totals();
        let plugin_failures = plugin_failures(app);
        let (limit, reason) = app.writer.limit();
        let totals = Totals {
            granted: outcomes.get("granted").copied().unwrap_or(0),
            replayed: outcomes.get("replayed").copied().unwrap_or(0),
            refused: outcomes.iter().filter(|(code, _)| !is_answer(code)).map(|(_, count)| count).sum(),
            credits: app.writer.stats.applied.load(Relaxed),
            plugin_failures: plugin_failures.iter().map(|failure| failure.count).sum(),
        };
        Ok(DashboardData {
            now_ms: app.clock.now_ms(),
            sample_interval_ms: SAMPLE_INTERVAL_MS,
            series: series(&samples),
            totals,
            backlog: backlog_view(backlog, &samples),
            writer: WriterView { limit_credits_per_s: limit, cap_credits_per_s: app.writer.cap_per_second(), reason },
            scenes: scene_views(app, &used, &samples),
            refusals: outcomes
                .into_iter()
                .filter(|(code, _)| !is_answer(code))
                .map(|(code, count)| RefusalCount { code: code.to_owned(), count })
                .collect(),
            plugin_failures,
            activities: activity_budgets(app).await?,
        })
    }
}

/// Whether a grant outcome is an answer rather than a refusal.
fn is_answer(outcome: &str) -> bool {
    outcome == "granted" || outcome == "replayed"
}

/// Samples every [`SAMPLE_INTERVAL_MS`] until `shutdown` turns true; a store that cannot be read
/// leaves a gap in the chart, logged once until it answers again.
pub async fn run(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(SAMPLE_INTERVAL_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        match app.dashboard.sample(&app).await {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "dashboard sample skipped: the store cannot be read");
            }
            Err(_) => {}
        }
    }
}

/// Stock used by every served scene, keyed `activity/scene`.
async fn scenes_used(app: &App) -> Result<BTreeMap<String, (u64, i64)>, StoreError> {
    let snapshot = app.registry.snapshot();
    let mut used = BTreeMap::new();
    for activity in snapshot.activities() {
        for scene in activity.scenes.values() {
            let stock = app.store.stock_used(&activity.id, Some(&scene.id)).await?;
            used.insert(format!("{}/{}", activity.id, scene.id), (stock.count, stock.cents));
        }
    }
    Ok(used)
}

/// The rate of `value` between two samples, per second (0 when no time passed or it went down,
/// as a counter does when the host restarts).
fn per_second(earlier: &Sample, later: &Sample, value: impl Fn(&Sample) -> f64) -> f64 {
    let seconds = later.at_ms.saturating_sub(earlier.at_ms) as f64 / 1_000.0;
    if seconds <= 0.0 {
        return 0.0;
    }
    ((value(later) - value(earlier)) / seconds).max(0.0)
}

fn series(samples: &[Sample]) -> Vec<SeriesPoint> {
    samples
        .windows(2)
        .map(|pair| SeriesPoint {
            t_ms: pair[1].wall_ms,
            grants_per_s: per_second(&pair[0], &pair[1], |sample| sample.granted as f64),
            credits_per_s: per_second(&pair[0], &pair[1], |sample| sample.credits as f64),
            backlog: pair[1].backlog,
        })
        .collect()
}

/// The first and last of the samples the current rates are taken over.
fn rate_window(samples: &[Sample]) -> Option<(&Sample, &Sample)> {
    let last = samples.last()?;
    let first = &samples[samples.len().saturating_sub(RATE_WINDOW_SAMPLES + 1)];
    (first.at_ms < last.at_ms).then_some((first, last))
}

fn backlog_view(tokens: u64, samples: &[Sample]) -> BacklogView {
    if tokens == 0 {
        return BacklogView { tokens, drain_s: Some(0.0), trend: "empty" };
    }
    let Some((first, last)) = rate_window(samples) else {
        return BacklogView { tokens, drain_s: None, trend: "steady" };
    };
    let seconds = (last.at_ms - first.at_ms) as f64 / 1_000.0;
    let change_per_s = (last.backlog as f64 - first.backlog as f64) / seconds;
    if change_per_s < 0.0 {
        BacklogView { tokens, drain_s: Some(tokens as f64 / -change_per_s), trend: "draining" }
    } else if change_per_s > 0.0 {
        BacklogView { tokens, drain_s: None, trend: "growing" }
    } else {
        BacklogView { tokens, drain_s: None, trend: "steady" }
    }
}

fn scene_views(app: &App, used: &BTreeMap<String, (u64, i64)>, samples: &[Sample]) -> Vec<SceneView> {
    let snapshot = app.registry.snapshot();
    let window = rate_window(samples);
    let mut views = Vec::new();
    for activity in snapshot.activities() {
        for scene in activity.scenes.values() {
            let key = format!("{}/{}", activity.id, scene.id);
            let (count, cents) = used.get(&key).copied().unwrap_or((0, 0));
            let rate = |pick: fn(&(u64, i64)) -> f64| {
                window.map_or(0.0, |(first, last)| {
                    per_second(first, last, |sample| sample.scenes.get(&key).map_or(0.0, pick))
                })
            };
            let grants_per_s = rate(|used| used.0 as f64);
            let cents_per_s = rate(|used| used.1 as f64);
            let inventory = scene.inventory.as_ref();
            let stock_left = inventory.and_then(|bound| bound.count_max).map(|max| max.saturating_sub(count));
            let budget_left_cents = inventory.and_then(|bound| bound.budget_cents).map(|max| max - cents);
            views.push(SceneView {
                activity_id: activity.id.clone(),
                scene_id: scene.id.clone(),
                stock_left,
                budget_left_cents,
                grants_per_s,
                cents_per_s,
                sell_out_s: sell_out_s(stock_left, budget_left_cents, grants_per_s, cents_per_s),
            });
        }
    }
    views
}

/// Seconds until the first bound runs out at these rates: 0 when one is out already, `None`
/// without a bound being spent.
fn sell_out_s(
    stock_left: Option<u64>,
    budget_left_cents: Option<i64>,
    grants_per_s: f64,
    cents_per_s: f64,
) -> Option<f64> {
    if stock_left == Some(0) || budget_left_cents.is_some_and(|left| left <= 0) {
        return Some(0.0);
    }
    let by_count = stock_left.filter(|_| grants_per_s > 0.0).map(|left| left as f64 / grants_per_s);
    let by_budget = budget_left_cents.filter(|_| cents_per_s > 0.0).map(|left| left as f64 / cents_per_s);
    match (by_count, by_budget) {
        (Some(count), Some(budget)) => Some(count.min(budget)),
        (one, other) => one.or(other),
    }
}

fn plugin_failures(app: &App) -> Vec<PluginFailureCount> {
    let snapshot = app.registry.snapshot();
    let mut rows = Vec::new();
    for activity in snapshot.activities() {
        for scene in activity.scenes.values() {
            for spec in &scene.plugins.specs {
                let Some(plugin) = scene.plugins.get(spec.capability) else { continue };
                for (code, count) in plugin.stats().failures().filter(|(_, count)| *count > 0) {
                    rows.push(PluginFailureCount {
                        activity_id: activity.id.clone(),
                        scene_id: scene.id.clone(),
                        capability: spec.capability.yaml_key(),
                        code,
                        count,
                    });
                }
            }
        }
    }
    rows
}

async fn activity_budgets(app: &App) -> Result<Vec<ActivityBudget>, StoreError> {
    let snapshot = app.registry.snapshot();
    let mut budgets = Vec::new();
    for activity in snapshot.activities() {
        let used = app.store.stock_used(&activity.id, None).await?;
        budgets.push(ActivityBudget {
            activity_id: activity.id.clone(),
            budget_left_cents: activity.budget_cents - used.cents,
        });
    }
    Ok(budgets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, granted: u64, backlog: u64, scene_used: (u64, i64)) -> Sample {
        Sample {
            at_ms,
            wall_ms: at_ms,
            granted,
            credits: granted.saturating_sub(backlog),
            backlog,
            scenes: BTreeMap::from([("a/s".to_owned(), scene_used)]),
        }
    }

    // Proves the chart's rates are the counters' change per second between samples, and that
    // a counter that went down (a restarted host) reads as 0, not as a negative rate.
    #[test]
    fn series_are_rates_between_samples() {
        let samples = [
            sample(0, 0, 0, (0, 0)),
            sample(1_000, 500, 100, (0, 0)),
            sample(3_000, 1_500, 0, (0, 0)),
            sample(4_000, 10, 0, (0, 0)),
        ];
        let points = series(&samples);
        assert_eq!(points.len(), 3);
        assert_eq!((points[0].grants_per_s, points[0].credits_per_s, points[0].backlog), (500.0, 400.0, 100));
        assert_eq!((points[1].grants_per_s, points[1].credits_per_s), (500.0, 550.0));
        assert_eq!(points[2].grants_per_s, 0.0);
    }

    // Proves the backlog's drain time is what is left over the rate it shrank at, and that a
    // growing backlog has none.
    #[test]
    fn the_backlog_drains_at_the_rate_it_shrank() {
        let draining = [sample(0, 0, 1_000, (0, 0)), sample(2_000, 0, 600, (0, 0))];
        let view = backlog_view(600, &draining);
        assert_eq!((view.trend, view.drain_s), ("draining", Some(3.0)));
        let growing = [sample(0, 0, 10, (0, 0)), sample(1_000, 0, 20, (0, 0))];
        assert_eq!(backlog_view(20, &growing).drain_s, None);
        assert_eq!(backlog_view(0, &growing).trend, "empty");
    }

    // Proves a scene sells out at the first of its bounds to run out, now if one is out, and
    // never when nothing is spent.
    #[test]
    fn sell_out_is_the_first_bound_to_run_out() {
        assert_eq!(sell_out_s(Some(100), Some(1_000), 10.0, 200.0), Some(5.0));
        assert_eq!(sell_out_s(Some(100), None, 4.0, 0.0), Some(25.0));
        assert_eq!(sell_out_s(Some(0), Some(1_000), 0.0, 0.0), Some(0.0));
        assert_eq!(sell_out_s(Some(100), Some(1_000), 0.0, 0.0), None);
        assert_eq!(sell_out_s(None, None, 10.0, 10.0), None);
    }
}
