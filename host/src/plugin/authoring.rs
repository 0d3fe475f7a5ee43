//! `hongbao plugin run`: calls of a plugin outside the server, with their time, instructions and
//! peak memory (the first on a fresh instance, the rest warm).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::bindings::bill_copy::exports::hongbao::plugin::bill_copy as bill_copy_wit;
use super::bindings::compensation::exports::hongbao::plugin::compensation as compensation_wit;
use super::bindings::inventory::exports::hongbao::plugin::inventory as inventory_wit;
use super::bindings::reconciliation::exports::hongbao::plugin::reconciliation as reconciliation_wit;
use super::bindings::types::{CallContext, Stock};
use super::{CallReport, Capability, Plugin, PluginFailure, PluginRuntime, hex};

/// The most calls `hongbao plugin run --calls` makes: enough for stable warm-call figures.
pub const RUN_CALLS_MAX: u32 = 100_000;

/// Runs one call of the plugin at `wasm` with the input JSON `input` (see the SDK guide) and
/// returns the report as JSON. The second value is whether the call succeeded.
///
/// # Errors
///
/// The plugin cannot be loaded or the input is malformed; a failing call is not an error.
pub fn run_once(wasm: &Path, input: &Value) -> anyhow::Result<(Value, bool)> {
    run(wasm, input, 1)
}

/// Runs `calls` calls of the plugin at `wasm` with the input JSON `input`, each on the warm
/// instance the previous left (the first on a fresh one), and returns the first call's report
/// as JSON with the compile time and the warm calls' times; the second value is whether the
/// first call succeeded.
///
/// # Errors
///
/// As [`run_once`], and `calls` outside 1 to [`RUN_CALLS_MAX`].
pub fn run(wasm: &Path, input: &Value, calls: u32) -> anyhow::Result<(Value, bool)> {
    let runtime = PluginRuntime::new(None)?;
    run_on(&runtime, wasm, input, calls)
}

/// [`run`] for each input of `inputs` in turn, the component compiled once (each input's
/// `compile` time after the first is the cache's), each on an instance of its own; returns the
/// reports as a JSON array, and whether every first call succeeded.
///
/// # Errors
///
/// As [`run`], naming the input.
pub fn run_each(wasm: &Path, inputs: &[Value], calls: u32) -> anyhow::Result<(Value, bool)> {
    let runtime = PluginRuntime::new(None)?;
    let mut reports = Vec::with_capacity(inputs.len());
    let mut all_ok = true;
    for (index, input) in inputs.iter().enumerate() {
        let (report, ok) = run_on(&runtime, wasm, input, calls).with_context(|| format!("input [{index}]"))?;
        reports.push(report);
        all_ok &= ok;
    }
    Ok((Value::Array(reports), all_ok))
}

fn run_on(
    runtime: &std::sync::Arc<PluginRuntime>,
    wasm: &Path,
    input: &Value,
    calls: u32,
) -> anyhow::Result<(Value, bool)> {
    anyhow::ensure!((1..=RUN_CALLS_MAX).contains(&calls), "--calls `{calls}` must be 1 to {RUN_CALLS_MAX}");
    let object = input.as_object().context("the input must be a JSON object")?;
    let stock = object.get("stock").map(parse_stock).transpose()?;
    let context = object.get("context").cloned().unwrap_or_else(|| json!({}));
    let settings = parse_settings(&context)?;
    let compile_started = std::time::Instant::now();
    let (plugin, sha256) = runtime.load_standalone(wasm, settings.clone(), stock).map_err(anyhow::Error::new)?;
    let compile = compile_started.elapsed();
    let capability = plugin.spec().capability;
    if let Some(asked) = object.get("capability").and_then(Value::as_str) {
        let asked = Capability::parse(asked).with_context(|| format!("unknown capability `{asked}`"))?;
        if asked != capability {
            bail!("the input is for `{}` but `{}` is a `{}` plugin", asked.kind(), wasm.display(), capability.kind());
        }
    }
    let (ctx, _, _) = parse_call(input)?;
    if let Some(counters) = object.get("counters").and_then(Value::as_object) {
        for (name, value) in counters {
            let value = value.as_i64().with_context(|| format!("counter `{name}` must be an integer"))?;
            plugin.seed_counter(name, value, ctx.now_ms);
        }
    }
    let empty = json!({});
    let payload = object.get("input").unwrap_or(&empty);
    let call = || call_capability(&plugin, capability, &ctx, payload, stock);
    let (result, report) = call()?;
    let mut warm = WarmCalls::default();
    for _ in 1..calls {
        let (_, warm_report) = call()?;
        warm.add(&warm_report);
    }
    let ok = result.is_ok();
    let outcome = super::json::outcome(&result);
    let mut out = json!({
        "plugin": wasm.display().to_string(),
        "sha256": hex(&sha256),
        "capability": capability.kind(),
        "time_us": {
            "compile": compile.as_secs_f64() * 1e6,
            "instantiate": report.instantiate.map(|d| d.as_secs_f64() * 1e6),
            "call": report.call.as_secs_f64() * 1e6,
        },
        "instructions": report.instructions,
        "peak_memory_bytes": report.peak_memory_bytes,
        "calls": calls,
        "warm": warm.to_json(),
        "output": String::from_utf8_lossy(&report.output.bytes),
        "output_dropped_bytes": report.output.dropped_bytes,
        "log": report.log.iter().map(|(level, line)| json!({ "level": level, "message": line })).collect::<Vec<_>>(),
        "log_dropped": report.log_dropped,
        "counters": plugin.counters(ctx.now_ms).into_iter().collect::<BTreeMap<_, _>>(),
    });
    if let (Some(out), Some(outcome)) = (out.as_object_mut(), outcome.as_object()) {
        out.extend(outcome.clone());
    }
    Ok((out, ok))
}

/// One call's result as JSON (or how it failed), and its report.
pub(super) type Called = (Result<Value, PluginFailure>, CallReport);

/// A call as `plugin run` (and a decision record) gives it: its context, the capability's
/// input, and the stock (top-level `stock`, or the input's own).
pub(super) fn parse_call(input: &Value) -> anyhow::Result<(CallContext, Value, Option<Stock>)> {
    let context = input.get("context").cloned().unwrap_or_else(|| json!({}));
    let settings = parse_settings(&context)?;
    let ctx = parse_context(&context, settings)?;
    let payload = input.get("input").cloned().unwrap_or_else(|| json!({}));
    let stock = input.get("stock").or_else(|| payload.get("stock")).filter(|stock| !stock.is_null());
    Ok((ctx, payload.clone(), stock.map(parse_stock).transpose()?))
}

/// Calls `plugin`'s `capability` with `payload` as its input.
pub(super) fn call_capability(
    plugin: &Plugin,
    capability: Capability,
    ctx: &CallContext,
    payload: &Value,
    stock: Option<Stock>,
) -> anyhow::Result<Called> {
    Ok(match capability {
        Capability::BillCopy => call_bill_copy(plugin, ctx, payload)?,
        Capability::RateLimit => call_rate_limit(plugin, ctx),
        Capability::Inventory => call_inventory(plugin, ctx, payload, stock)?,
        Capability::Compensation => call_compensation(plugin, ctx, payload)?,
        Capability::Reconciliation => call_reconciliation(plugin, ctx, payload)?,
    })
}

/// The calls after the first, on warm instances.
#[derive(Default)]
struct WarmCalls {
    times_us: Vec<f64>,
    instructions_max: Option<u64>,
    peak_memory_bytes: u64,
    instantiations: u32,
}

impl WarmCalls {
    fn add(&mut self, report: &CallReport) {
        self.times_us.push(report.call.as_secs_f64() * 1e6);
        self.instructions_max = self.instructions_max.max(report.instructions);
        self.peak_memory_bytes = self.peak_memory_bytes.max(report.peak_memory_bytes);
        self.instantiations += u32::from(report.instantiate.is_some());
    }

    /// `null` for a single call; else the warm calls' time p50/p99/mean, their most
    /// instructions, peak memory, and the fresh instances they needed.
    fn to_json(&self) -> Value {
        if self.times_us.is_empty() {
            return Value::Null;
        }
        let mut sorted = self.times_us.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        json!({
            "calls": sorted.len(),
            "time_us": { "p50": at(0.5), "p99": at(0.99), "mean": sorted.iter().sum::<f64>() / sorted.len() as f64 },
            "instructions_max": self.instructions_max,
            "peak_memory_bytes": self.peak_memory_bytes,
            "instantiations": self.instantiations,
        })
    }
}

/// `context.settings`: an object of strings (other values are written as JSON), in key order.
fn parse_settings(context: &Value) -> anyhow::Result<Vec<(String, String)>> {
    Ok(match context.get("settings") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect(),
        Some(_) => bail!("context.settings must be an object of strings"),
    })
}

fn call_bill_copy(plugin: &Plugin, ctx: &CallContext, payload: &Value) -> anyhow::Result<Called> {
    let award = bill_copy_wit::Award {
        amount_cents: int(payload, "amount_cents", 188)?,
        scene_name: text(payload, "scene_name", "scene")?,
        activity_name: text(payload, "activity_name", "activity")?,
    };
    let (result, report) = plugin.render(ctx, &award);
    Ok((result.map(|text| super::json::bill_text(&text)), report))
}

fn call_rate_limit(plugin: &Plugin, ctx: &CallContext) -> Called {
    let (result, report) = plugin.check(ctx);
    (result.map(|decision| super::json::decision(&decision)), report)
}

fn call_inventory(plugin: &Plugin, ctx: &CallContext, payload: &Value, stock: Option<Stock>) -> anyhow::Result<Called> {
    let request = inventory_wit::AmountRequest {
        requested_cents: payload.get("requested_cents").and_then(Value::as_i64),
        min_cents: int(payload, "min_cents", 1)?,
        max_cents: int(payload, "max_cents", 100)?,
        stock: stock.unwrap_or(Stock { count_remaining: None, budget_remaining_cents: None }),
    };
    let (result, report) = plugin.choose(ctx, &request);
    Ok((result.map(|allocation| super::json::allocation(&allocation)), report))
}

fn call_compensation(plugin: &Plugin, ctx: &CallContext, payload: &Value) -> anyhow::Result<Called> {
    let step = match text(payload, "step", "ledger-credit")?.as_str() {
        "store-grant" => compensation_wit::Step::StoreGrant,
        "ledger-credit" => compensation_wit::Step::LedgerCredit,
        "ledger-refused" => compensation_wit::Step::LedgerRefused,
        "withdrawal-credit" => compensation_wit::Step::WithdrawalCredit,
        other => bail!("input.step `{other}` must be store-grant, ledger-credit, ledger-refused or withdrawal-credit"),
    };
    let failure = compensation_wit::Failure {
        step,
        attempt: u32::try_from(int(payload, "attempt", 1)?).context("input.attempt must fit in u32")?,
        error_code: text(payload, "error_code", "unavailable")?,
        error_message: text(payload, "error_message", "")?,
        order_no: payload.get("order_no").and_then(Value::as_str).map(str::to_owned),
        amount_cents: payload.get("amount_cents").and_then(Value::as_i64),
        first_failed_ms: payload.get("first_failed_ms").and_then(Value::as_u64).unwrap_or(ctx.now_ms),
    };
    let (result, report) = plugin.decide(ctx, &failure);
    Ok((result.map(|remedy| super::json::remedy(&remedy)), report))
}

fn call_reconciliation(plugin: &Plugin, ctx: &CallContext, payload: &Value) -> anyhow::Result<Called> {
    let summary = reconciliation_wit::SceneSummary {
        issued_count: uint(payload, "issued_count")?,
        issued_cents: int(payload, "issued_cents", 0)?,
        credited_count: uint(payload, "credited_count")?,
        credited_cents: int(payload, "credited_cents", 0)?,
        in_flight_count: uint(payload, "in_flight_count")?,
        in_flight_cents: int(payload, "in_flight_cents", 0)?,
        oldest_in_flight_ms: payload.get("oldest_in_flight_ms").and_then(Value::as_u64),
        parked_count: uint(payload, "parked_count")?,
        stock_used_count: uint(payload, "stock_used_count")?,
        stock_used_cents: int(payload, "stock_used_cents", 0)?,
    };
    let (result, report) = plugin.judge(ctx, &summary);
    Ok((result.map(|findings| super::json::findings(&findings)), report))
}

fn int(value: &Value, key: &str, default: i64) -> anyhow::Result<i64> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_i64().with_context(|| format!("input.{key} must be an integer")),
    }
}

fn uint(value: &Value, key: &str) -> anyhow::Result<u64> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().with_context(|| format!("input.{key} must be a non-negative integer")),
    }
}

fn text(value: &Value, key: &str, default: &str) -> anyhow::Result<String> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(v) => v.as_str().map(str::to_owned).with_context(|| format!("`{key}` must be a string")),
    }
}

fn parse_stock(value: &Value) -> anyhow::Result<Stock> {
    Ok(Stock {
        count_remaining: match value.get("count_remaining") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().context("stock.count_remaining must be a non-negative integer")?),
        },
        budget_remaining_cents: match value.get("budget_remaining_cents") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().context("stock.budget_remaining_cents must be an integer")?),
        },
    })
}

fn parse_context(ctx: &Value, settings: Vec<(String, String)>) -> anyhow::Result<CallContext> {
    let context = |key: &str| format!("context.{key}");
    Ok(CallContext {
        activity_id: text(ctx, "activity_id", "local").with_context(|| context("activity_id"))?,
        scene_id: text(ctx, "scene_id", "local").with_context(|| context("scene_id"))?,
        award_type: text(ctx, "award_type", "cash").with_context(|| context("award_type"))?,
        app_id: int(ctx, "app_id", 1).with_context(|| context("app_id"))?,
        act_id: int(ctx, "act_id", 1).with_context(|| context("act_id"))?,
        rain_id: i32::try_from(int(ctx, "rain_id", 0)?).context("context.rain_id must fit in i32")?,
        stage: u32::try_from(int(ctx, "stage", 0)?).context("context.stage must fit in u32")?,
        now_ms: ctx.get("now_ms").and_then(Value::as_u64).unwrap_or(1_800_000_000_000),
        random_seed: ctx.get("random_seed").and_then(Value::as_u64).unwrap_or(0),
        locale: ctx.get("locale").and_then(Value::as_str).map(str::to_owned),
        settings,
    })
}
