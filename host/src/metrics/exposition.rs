//! The page `GET /metrics` answers: the Prometheus text exposition format (version 0.0.4), one
//! `# HELP` and `# TYPE` per family, counters named `_total`, times in `_seconds`, sizes in
//! `_bytes`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::{Histogram, JOURNAL_SYNCS, JournalKind, LATENCY_BUCKETS_S, STORE_OPERATIONS, StoreOp, process};
use crate::app::App;
use crate::store::StoreError;

/// The content type of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The page, read now.
///
/// # Errors
///
/// The store could not tell the crediting backlog.
pub async fn render(app: &App) -> Result<String, StoreError> {
    let backlog = app.store.queue_len().await?;
    let mut page = Page::default();
    grants(&mut page, app);
    writer(&mut page, app, backlog);
    store(&mut page);
    plugins(&mut page, app);
    decision_log(&mut page, app);
    stock(&mut page, app).await?;
    page.family(
        "hongbao_forgery_watch_events_total",
        "counter",
        "Tokens refused or suspicious, by event (GET /v1/security).",
    );
    for (event, count) in app.forgery.counts() {
        page.sample("hongbao_forgery_watch_events_total", &[("event", event)], count as f64);
    }
    if let Some(figures) = process::read() {
        page.single("process_cpu_seconds_total", "counter", "User and system CPU time.", figures.cpu_seconds);
        page.single("process_resident_memory_bytes", "gauge", "Resident memory.", figures.resident_bytes as f64);
        page.single("process_open_fds", "gauge", "Open file descriptors.", figures.open_fds as f64);
        page.single("process_threads", "gauge", "Threads.", figures.threads as f64);
    }
    if let Some(bytes) = crate::memory::heap_in_use() {
        page.single(
            "hongbao_heap_in_use_bytes",
            "gauge",
            "Bytes the allocator has handed out and not had back (jemalloc stats.allocated); resident memory above it is the allocator's free pages and fragmentation.",
            bytes as f64,
        );
    }
    Ok(page.text)
}

fn grants(page: &mut Page, app: &App) {
    page.family(
        "hongbao_grants_total",
        "counter",
        "Grant answers by activity, scene and outcome (granted, replayed, or the refusal's code); scene \"\" counts grants to scenes that do not exist.",
    );
    for (activity, scene, outcomes) in app.metrics.scene_snapshots() {
        for (outcome, count) in outcomes {
            page.sample(
                "hongbao_grants_total",
                &[("activity", &activity), ("scene", &scene), ("outcome", outcome)],
                count as f64,
            );
        }
    }
    page.family("hongbao_grant_request_duration_seconds", "histogram", "Time to answer a grant request, by kind.");
    page.histogram("hongbao_grant_request_duration_seconds", &[("kind", "single")], &app.metrics.single_seconds);
    page.histogram("hongbao_grant_request_duration_seconds", &[("kind", "batch")], &app.metrics.batch_seconds);
}

fn writer(page: &mut Page, app: &App, backlog: u64) {
    let stats = &app.writer.stats;
    let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Relaxed) as f64;
    for (name, kind, help, value) in [
        ("hongbao_crediting_backlog", "gauge", "Granted tokens not yet credited to the ledger.", backlog as f64),
        ("hongbao_credits_total", "counter", "Ledger entries this host's writer wrote.", count(&stats.applied)),
        ("hongbao_ledger_batches_total", "counter", "Credit batches committed.", count(&stats.batches)),
        (
            "hongbao_ledger_batch_errors_total",
            "counter",
            "Credit batches the ledger failed.",
            count(&stats.ledger_batch_errors),
        ),
        (
            "hongbao_writer_step_failures_total",
            "counter",
            "Writer steps that failed and were retried.",
            count(&stats.failures),
        ),
        ("hongbao_writer_parked_total", "counter", "Tokens the ledger refused, parked.", count(&stats.parked)),
    ] {
        page.single(name, kind, help, value);
    }
    page.family("hongbao_ledger_batch_duration_seconds", "histogram", "Time of one credit batch in the ledger.");
    page.histogram("hongbao_ledger_batch_duration_seconds", &[], &stats.ledger_batch_seconds);
    page.family(
        "hongbao_writer_limit_credits_per_second",
        "gauge",
        "The writer's current limit and why it is there: cap (--credits-per-second), uncapped (+Inf), adaptive (below the cap, climbing back) or backing_off (lowered by the payment steward within the last 5 s).",
    );
    let (limit, reason) = app.writer.limit();
    page.sample(
        "hongbao_writer_limit_credits_per_second",
        &[("reason", reason.name())],
        limit.map_or(f64::INFINITY, f64::round),
    );
    page.single(
        "hongbao_writer_backoffs_total",
        "counter",
        "Times the payment steward lowered the writer's limit because ledger batches slowed down or failed.",
        app.writer.backoffs() as f64,
    );
}

fn store(page: &mut Page) {
    page.family(
        "hongbao_store_operation_duration_seconds",
        "histogram",
        "Time of token store operations, by operation.",
    );
    for op in StoreOp::ALL {
        page.histogram(
            "hongbao_store_operation_duration_seconds",
            &[("op", op.name())],
            &STORE_OPERATIONS[op as usize].seconds,
        );
    }
    page.family("hongbao_store_operation_errors_total", "counter", "Token store operations that failed, by operation.");
    for op in StoreOp::ALL {
        let errors = STORE_OPERATIONS[op as usize].errors.load(Relaxed);
        page.sample("hongbao_store_operation_errors_total", &[("op", op.name())], errors as f64);
    }
    page.family(
        "hongbao_journal_sync_duration_seconds",
        "histogram",
        "Time of one fdatasync of an embedded journal (the token store's, the ledger's): each makes a group of writes durable before they are answered.",
    );
    for kind in JournalKind::ALL {
        page.histogram(
            "hongbao_journal_sync_duration_seconds",
            &[("journal", kind.name())],
            &JOURNAL_SYNCS[kind as usize],
        );
    }
}

/// Stock and budget left, from the token store's stock counters (which count every grant, retired
/// or not) and the scenes' bounds: what the grant path itself checks.
async fn stock(page: &mut Page, app: &App) -> Result<(), StoreError> {
    let snapshot = app.registry.snapshot();
    let mut activities = Vec::new();
    let mut scenes = Vec::new();
    for activity in snapshot.activities() {
        let used = app.store.stock_used(&activity.id, None).await?;
        activities.push((activity.id.as_str(), activity.budget_cents - used.cents));
        for scene in activity.scenes.values() {
            let Some(inventory) = &scene.inventory else { continue };
            let used = app.store.stock_used(&activity.id, Some(&scene.id)).await?;
            let count_left = inventory.count_max.map(|max| max.saturating_sub(used.count));
            let cents_left = inventory.budget_cents.map(|max| max - used.cents);
            scenes.push((activity.id.as_str(), scene.id.as_str(), count_left, cents_left));
        }
    }
    page.family("hongbao_activity_budget_left_cents", "gauge", "What an activity's budget may still grant, in cents.");
    for (activity, left) in &activities {
        page.sample("hongbao_activity_budget_left_cents", &[("activity", activity)], *left as f64);
    }
    page.family("hongbao_scene_stock_left", "gauge", "Grants a scene with a count bound may still make.");
    for (activity, scene, count_left, _) in &scenes {
        if let Some(left) = count_left {
            page.sample("hongbao_scene_stock_left", &[("activity", activity), ("scene", scene)], *left as f64);
        }
    }
    page.family(
        "hongbao_scene_budget_left_cents",
        "gauge",
        "What a scene with a budget bound may still grant, in cents.",
    );
    for (activity, scene, _, cents_left) in &scenes {
        if let Some(left) = cents_left {
            page.sample("hongbao_scene_budget_left_cents", &[("activity", activity), ("scene", scene)], *left as f64);
        }
    }
    Ok(())
}

fn decision_log(page: &mut Page, app: &App) {
    let Some(log) = app.plugins.decisions() else { return };
    page.single(
        "hongbao_decision_records_total",
        "counter",
        "Plugin calls written to the decision log (serve --record-decisions).",
        log.written.load(Relaxed) as f64,
    );
    page.single(
        "hongbao_decision_records_dropped_total",
        "counter",
        "Plugin calls not recorded because the decision log's queue was full.",
        log.dropped.load(Relaxed) as f64,
    );
}

fn plugins(page: &mut Page, app: &App) {
    let snapshot = app.registry.snapshot();
    let mut rows = Vec::new();
    for activity in snapshot.activities() {
        for scene in activity.scenes.values() {
            for spec in &scene.plugins.specs {
                if let Some(plugin) = scene.plugins.get(spec.capability) {
                    rows.push((activity.id.clone(), scene.id.clone(), spec.capability.yaml_key(), plugin));
                }
            }
        }
    }
    page.family("hongbao_plugin_calls_total", "counter", "Scene plugin calls.");
    for (activity, scene, capability, plugin) in &rows {
        let labels = [("activity", activity.as_str()), ("scene", scene.as_str()), ("capability", *capability)];
        page.sample("hongbao_plugin_calls_total", &labels, plugin.stats().calls.load(Relaxed) as f64);
    }
    page.family("hongbao_plugin_failures_total", "counter", "Scene plugin calls that failed, by failure code.");
    for (activity, scene, capability, plugin) in &rows {
        for (code, count) in plugin.stats().failures() {
            let labels = [
                ("activity", activity.as_str()),
                ("scene", scene.as_str()),
                ("capability", *capability),
                ("code", code),
            ];
            page.sample("hongbao_plugin_failures_total", &labels, count as f64);
        }
    }
    page.family("hongbao_plugin_call_seconds_total", "counter", "Time spent inside scene plugin calls.");
    for (activity, scene, capability, plugin) in &rows {
        let labels = [("activity", activity.as_str()), ("scene", scene.as_str()), ("capability", *capability)];
        page.sample("hongbao_plugin_call_seconds_total", &labels, plugin.stats().call_ns.load(Relaxed) as f64 / 1e9);
    }
}

/// The page being written.
#[derive(Default)]
struct Page {
    text: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A family of one sample without labels (a gauge or a counter).
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, text)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape(text));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let (cumulative, count, sum) = histogram.snapshot();
        let bucket = format!("{name}_bucket");
        for (bound, below) in LATENCY_BUCKETS_S.iter().zip(cumulative) {
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, below as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, count as f64);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }
}

/// A label value as the format writes it: backslash, double quote and line feed escaped.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A sample value: integers without a fraction, infinities as `+Inf`/`-Inf`.
fn number(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() };
    }
    if value.fract() == 0.0 && value.abs() < 9e15 { format!("{}", value as i64) } else { format!("{value}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves label values are escaped and numbers written as the format reads them.
    #[test]
    fn labels_are_escaped_and_numbers_plain() {
        let mut page = Page::default();
        page.sample("x_total", &[("scene", "a\"b\\c\nd")], 3.0);
        page.sample("y", &[], f64::INFINITY);
        page.sample("z_seconds", &[], 0.25);
        assert_eq!(page.text, "x_total{scene=\"a\\\"b\\\\c\\nd\"} 3\ny +Inf\nz_seconds 0.25\n");
    }

    // Proves a histogram is written cumulatively with its +Inf bucket, sum and count.
    #[test]
    fn a_histogram_is_written_cumulatively() {
        let histogram = Histogram::default();
        histogram.observe(std::time::Duration::from_millis(1));
        histogram.observe(std::time::Duration::from_secs(30));
        let mut page = Page::default();
        page.histogram("h_seconds", &[("kind", "single")], &histogram);
        assert!(page.text.contains("h_seconds_bucket{kind=\"single\",le=\"0.001\"} 1\n"), "{}", page.text);
        assert!(page.text.contains("h_seconds_bucket{kind=\"single\",le=\"10\"} 1\n"), "{}", page.text);
        assert!(page.text.contains("h_seconds_bucket{kind=\"single\",le=\"+Inf\"} 2\n"), "{}", page.text);
        assert!(page.text.contains("h_seconds_count{kind=\"single\"} 2\n"), "{}", page.text);
    }
}
