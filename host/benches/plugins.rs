//! `just bench`: the cost of one warm plugin call per capability, and of the five-hook chain,
//! next to the native built-ins. Criterion prints the figures; nothing is asserted.
//!
//! Each plugin call goes through the host's whole call path: building the call context, taking a
//! warm instance from the scene's pool, arming the deadline, fuel, clock and randomness, the
//! call itself, collecting output, answer checks, and returning the instance to the pool.
//! Targets (issue 3): at most 2 µs per warm hook and 10 µs for the chain on the bench machine.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hongbao::capability::compensation;
use hongbao::config::{BillCopy, BillVars, Compensation};
use hongbao::plugin::bindings::bill_copy::exports::hongbao::plugin::bill_copy::Award;
use hongbao::plugin::bindings::compensation::exports::hongbao::plugin::compensation::{Failure, Step};
use hongbao::plugin::bindings::inventory::exports::hongbao::plugin::inventory::AmountRequest;
use hongbao::plugin::bindings::reconciliation::exports::hongbao::plugin::reconciliation::SceneSummary;
use hongbao::plugin::bindings::types::Stock;
use hongbao::plugin::{CallInput, Capability, FailurePolicy, Plugin, PluginRuntime, PluginSpec};
use hongbao::store::StockLimits;

fn wasm(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/target/wasm32-wasip2/release/{name}.wasm"))
}

fn load(runtime: &Arc<PluginRuntime>, capability: Capability, name: &str, settings: &[(&str, &str)]) -> Arc<Plugin> {
    let path = wasm(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|_| panic!("{} is missing: run `just plugins`", path.display()));
    let sha256: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into();
    let spec = PluginSpec {
        capability,
        path,
        sha256,
        on_failure: FailurePolicy::FailClosed,
        deadline_ms: 10,
        instructions_max: hongbao::plugin::limits::INSTRUCTIONS_MAX_DEFAULT,
        memory_mb: 16,
        settings: settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        line: 1,
        sha256_line: 1,
        key_path: "bench".into(),
    };
    let limits =
        StockLimits { activity_budget_cents: 1_000_000, scene_count_max: Some(1_000), scene_budget_cents: None };
    let plugin = runtime.load(&spec, "bench", "eve-rain", limits).expect("loading the plugin");
    assert!(plugin.load_error().is_none(), "{:?}", plugin.load_error());
    plugin
}

fn input(n: u64) -> CallInput<'static> {
    CallInput {
        award_type: "cash",
        app_id: 1128,
        act_id: 10_000 + (n % 100_000) as i64,
        rain_id: 3,
        stage: 1,
        now_ms: 1_800_000_000_000,
        random_seed: n,
        locale: Some("zh-CN"),
    }
}

fn award() -> Award {
    Award { amount_cents: 188, scene_name: "除夕红包雨".into(), activity_name: "2027 春节红包".into() }
}

fn amount_request() -> AmountRequest {
    AmountRequest {
        requested_cents: None,
        min_cents: 1,
        max_cents: 888,
        stock: Stock { count_remaining: Some(1_000), budget_remaining_cents: Some(100_000) },
    }
}

fn failure() -> Failure {
    Failure {
        step: Step::LedgerCredit,
        attempt: 2,
        error_code: "unavailable".into(),
        error_message: "the ledger did not answer".into(),
        order_no: Some("10001_eve-rain_3_cash_1".into()),
        amount_cents: Some(188),
        first_failed_ms: 1_799_999_999_000,
    }
}

fn summary() -> SceneSummary {
    SceneSummary {
        issued_count: 10,
        issued_cents: 1_000,
        credited_count: 8,
        credited_cents: 800,
        in_flight_count: 2,
        in_flight_cents: 200,
        oldest_in_flight_ms: Some(1_799_999_000_000),
        parked_count: 0,
        stock_used_count: 10,
        stock_used_cents: 1_000,
    }
}

fn benches(c: &mut Criterion) {
    let runtime = PluginRuntime::new(None).expect("runtime");
    let bill = load(&runtime, Capability::BillCopy, "hb_bill_copy", &[]);
    let rate = load(&runtime, Capability::RateLimit, "hb_rate_limit", &[("user_max", "1000000")]);
    let stock = load(&runtime, Capability::Inventory, "hb_inventory", &[]);
    let comp = load(&runtime, Capability::Compensation, "hb_compensation", &[]);
    let books = load(&runtime, Capability::Reconciliation, "hb_reconciliation", &[]);
    let (award, request, failure, summary) = (award(), amount_request(), failure(), summary());

    let mut group = c.benchmark_group("warm plugin call");
    let mut n = 0u64;
    group.bench_function("bill-copy render", |b| {
        b.iter(|| {
            n += 1;
            black_box(bill.render(&bill.context(&input(n)), &award).0.unwrap())
        })
    });
    group.bench_function("rate-limit check (one host counter-add)", |b| {
        b.iter(|| {
            n += 1;
            black_box(rate.check(&rate.context(&input(n))).0.unwrap())
        })
    });
    group.bench_function("inventory choose", |b| {
        b.iter(|| {
            n += 1;
            black_box(stock.choose(&stock.context(&input(n)), &request).0.unwrap())
        })
    });
    group.bench_function("compensation decide", |b| {
        b.iter(|| {
            n += 1;
            black_box(comp.decide(&comp.context(&input(n)), &failure).0.unwrap())
        })
    });
    group.bench_function("reconciliation judge", |b| {
        b.iter(|| {
            n += 1;
            black_box(books.judge(&books.context(&input(n)), &summary).0.unwrap())
        })
    });
    group.bench_function("five-hook chain", |b| {
        b.iter(|| {
            n += 1;
            let input = input(n);
            black_box(rate.check(&rate.context(&input)).0.unwrap());
            black_box(stock.choose(&stock.context(&input), &request).0.unwrap());
            black_box(bill.render(&bill.context(&input), &award).0.unwrap());
            black_box(comp.decide(&comp.context(&input), &failure).0.unwrap());
            black_box(books.judge(&books.context(&input), &summary).0.unwrap())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("native built-in");
    let template = BillCopy {
        default_locale: "zh-CN".into(),
        templates: [("zh-CN".to_owned(), "{scene_name} 第{rain_id}场 · 恭喜获得{amount_yuan}元".to_owned())].into(),
    };
    group.bench_function("bill-copy template", |b| {
        b.iter(|| {
            let vars = BillVars {
                amount_cents: 188,
                rain_id: 3,
                stage: 1,
                scene_name: "除夕红包雨",
                activity_name: "2027 春节红包",
            };
            black_box(template.render(Some("zh-CN"), &vars))
        })
    });
    let mut random = fastrand::Rng::with_seed(7);
    group.bench_function("inventory random amount", |b| b.iter(|| black_box(random.i64(1..=888))));
    let schedule = Compensation { retry_initial_ms: 100, retry_max_ms: 10_000 };
    group.bench_function("compensation schedule", |b| {
        b.iter(|| black_box(compensation::retry_after_ms(&schedule, black_box(3))))
    });
    group.finish();
}

criterion_group! {
    name = plugin_benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(plugin_benches);
