//! `just bench`: what counting one grant costs on the grant path, with the host's hand-rolled
//! counters and with the Prometheus crates it could have used, the way each is used on a request:
//! the labels (activity, scene, outcome) come from the request, so each run looks the series up
//! and increments it. Also each crate's increment on a handle resolved beforehand. Nothing is
//! asserted; figures go into BENCHMARKS.md ("The metrics' cost on the grant path").

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_util::registry::{AtomicStorage, Registry};

const ACTIVITY: &str = "spring-festival-2027";
const SCENE: &str = "eve-rain";

/// The host's own: a scene's counters found by activity and scene, the outcome counted.
fn hand_rolled(c: &mut Criterion) {
    let metrics = hongbao::metrics::Metrics::default();
    metrics.scene(ACTIVITY, SCENE, || true);
    c.bench_function("metrics cost: hongbao (scene lookup + count)", |b| {
        b.iter(|| metrics.scene(black_box(ACTIVITY), black_box(SCENE), || true).count("granted"));
    });
    let counters = metrics.scene(ACTIVITY, SCENE, || true);
    c.bench_function("metrics cost: hongbao (count on a resolved scene)", |b| {
        b.iter(|| black_box(&counters).count("granted"));
    });
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct GrantLabels {
    activity: String,
    scene: String,
    outcome: &'static str,
}

/// prometheus-client: a `Family` keyed by a label struct built from the request.
fn prometheus_client(c: &mut Criterion) {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    let mut registry = prometheus_client::registry::Registry::default();
    let family = Family::<GrantLabels, Counter>::default();
    registry.register("hongbao_grants", "Grant answers", family.clone());
    let labels = |activity: &str, scene: &str| GrantLabels {
        activity: activity.to_owned(),
        scene: scene.to_owned(),
        outcome: "granted",
    };
    c.bench_function("metrics cost: prometheus-client (labels built + get_or_create + inc)", |b| {
        b.iter(|| family.get_or_create(&labels(black_box(ACTIVITY), black_box(SCENE))).inc());
    });
    let counter = family.get_or_create(&labels(ACTIVITY, SCENE)).clone();
    c.bench_function("metrics cost: prometheus-client (inc on a resolved counter)", |b| {
        b.iter(|| black_box(&counter).inc());
    });
}

/// prometheus (TiKV's): an `IntCounterVec` by label values.
fn prometheus(c: &mut Criterion) {
    let opts = prometheus::Opts::new("hongbao_grants_total", "Grant answers");
    let vec = prometheus::IntCounterVec::new(opts, &["activity", "scene", "outcome"]).unwrap();
    c.bench_function("metrics cost: prometheus (with_label_values + inc)", |b| {
        b.iter(|| vec.with_label_values(&[black_box(ACTIVITY), black_box(SCENE), "granted"]).inc());
    });
    let counter = vec.with_label_values(&[ACTIVITY, SCENE, "granted"]);
    c.bench_function("metrics cost: prometheus (inc on a resolved counter)", |b| {
        b.iter(|| black_box(&counter).inc());
    });
}

/// metrics: the `counter!` macro with owned label values, into the registry the Prometheus
/// exporter keeps (`metrics_util::registry::Registry` with atomic storage).
struct RegistryRecorder(Arc<Registry<metrics::Key, AtomicStorage>>);

impl metrics::Recorder for RegistryRecorder {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        self.0.get_or_create_counter(key, |counter| metrics::Counter::from_arc(counter.clone()))
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.0.get_or_create_gauge(key, |gauge| metrics::Gauge::from_arc(gauge.clone()))
    }

    fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        self.0.get_or_create_histogram(key, |histogram| metrics::Histogram::from_arc(histogram.clone()))
    }
}

fn metrics_crate(c: &mut Criterion) {
    let recorder = RegistryRecorder(Arc::new(Registry::atomic()));
    metrics::with_local_recorder(&recorder, || {
        c.bench_function("metrics cost: metrics (counter! with labels + increment)", |b| {
            b.iter(|| {
                metrics::counter!("hongbao_grants_total", "activity" => black_box(ACTIVITY).to_owned(),
                    "scene" => black_box(SCENE).to_owned(), "outcome" => "granted")
                .increment(1);
            });
        });
        let counter =
            metrics::counter!("hongbao_grants_total", "activity" => ACTIVITY, "scene" => SCENE, "outcome" => "granted");
        c.bench_function("metrics cost: metrics (increment on a resolved counter)", |b| {
            b.iter(|| black_box(&counter).increment(1));
        });
    });
}

criterion_group!(benches, hand_rolled, prometheus_client, prometheus, metrics_crate);
criterion_main!(benches);
