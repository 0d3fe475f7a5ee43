//! The host functions a plugin may call (`hongbao:plugin/host`), each confined to the scene the
//! instance serves.
//!
//! Confinement is structural: an instance is created for one scene and holds only that scene's
//! counter table ([`Scope::counters`]); there is no name a plugin could pass to reach another
//! scene's or activity's state.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::bindings::host::{self, HostError};
use super::bindings::types::{self, LogLevel, Stock};
use super::decisions::{HostCall, RecordedStock};
use super::limits::{COUNTER_NAME_BYTES_MAX, COUNTERS_PER_SCENE_MAX, LOG_LINE_BYTES_MAX, LOG_LINES_PER_CALL_MAX};
use super::sandbox::PluginState;
use crate::stock::{StockLimits, StockSource, StockUsed};

/// What the host offers every plugin: counters and stock, shared across reloads.
#[derive(Default)]
pub struct HostServices {
    /// Per scene `(activity, scene)`: its counter table, the same one across reloads.
    counters: Mutex<HashMap<(String, String), SharedCounters>>,
    /// Where stock comes from; `None` (no store) means every scene reports no limits.
    stock: Option<Arc<dyn StockSource>>,
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices").finish_non_exhaustive()
    }
}

impl HostServices {
    /// Services reading stock from `stock` (the token store), or reporting no limits without one.
    pub fn new(stock: Option<Arc<dyn StockSource>>) -> HostServices {
        HostServices { counters: Mutex::default(), stock }
    }

    /// The counter table of one scene.
    pub(super) fn counters_for(&self, activity_id: &str, scene_id: &str) -> Arc<Mutex<SceneCounters>> {
        self.counters.lock().entry((activity_id.to_owned(), scene_id.to_owned())).or_default().clone()
    }

    /// What is left of `scope`'s stock now.
    pub fn stock_remaining(&self, scope: &Scope) -> Result<Stock, String> {
        if let Some(stock) = &scope.fixed_stock {
            return Ok(*stock);
        }
        let Some(source) = &self.stock else {
            return Ok(Stock { count_remaining: None, budget_remaining_cents: None });
        };
        Ok(remaining(
            &scope.limits,
            source.used(&scope.activity_id, Some(&scope.scene_id))?,
            source.used(&scope.activity_id, None)?,
        ))
    }
}

/// Stock left under `limits` given what the scene and its activity used.
pub fn remaining(limits: &StockLimits, scene_used: StockUsed, activity_used: StockUsed) -> Stock {
    let activity_left = limits.activity_budget_cents.saturating_sub(activity_used.cents).max(0);
    let budget_left = match limits.scene_budget_cents {
        Some(budget) => budget.saturating_sub(scene_used.cents).max(0).min(activity_left),
        None => activity_left,
    };
    Stock {
        count_remaining: limits.scene_count_max.map(|max| max.saturating_sub(scene_used.count)),
        budget_remaining_cents: Some(budget_left),
    }
}

/// One scene's counters, shared by its plugins' instances.
type SharedCounters = Arc<Mutex<SceneCounters>>;

/// The scene an instance serves.
pub struct Scope {
    /// The activity.
    pub activity_id: String,
    /// The scene.
    pub scene_id: String,
    /// The plugin's file name, for logs.
    pub plugin: String,
    /// The scene's stock bounds.
    pub limits: StockLimits,
    /// Stock to report instead of asking the store (`hongbao plugin run`).
    pub fixed_stock: Option<Stock>,
    /// The scene's counters.
    pub(super) counters: Arc<Mutex<SceneCounters>>,
}

/// One scene's counters.
#[derive(Default)]
pub struct SceneCounters {
    counters: HashMap<String, Counter>,
}

#[derive(Clone, Copy)]
struct Counter {
    value: i64,
    /// When a windowed counter starts again at 0, in ms since the epoch.
    resets_at_ms: Option<u64>,
}

impl SceneCounters {
    /// The value of `name` at `now_ms`.
    pub fn get(&self, name: &str, now_ms: u64) -> i64 {
        match self.counters.get(name) {
            Some(counter) if counter.resets_at_ms.is_none_or(|at| now_ms < at) => counter.value,
            _ => 0,
        }
    }

    /// Adds `delta` to `name` at `now_ms` and returns the new value.
    pub fn add(&mut self, name: &str, delta: i64, window_ms: Option<u64>, now_ms: u64) -> Result<i64, HostError> {
        if let Some(counter) = self.counters.get_mut(name) {
            if counter.resets_at_ms.is_none_or(|at| now_ms < at) {
                counter.value = counter.value.saturating_add(delta);
                return Ok(counter.value);
            }
            *counter = Counter { value: delta, resets_at_ms: window_ms.map(|w| now_ms.saturating_add(w)) };
            return Ok(delta);
        }
        if self.counters.len() >= COUNTERS_PER_SCENE_MAX {
            self.counters.retain(|_, counter| counter.resets_at_ms.is_none_or(|at| now_ms < at));
            if self.counters.len() >= COUNTERS_PER_SCENE_MAX {
                return Err(HostError::TooManyCounters);
            }
        }
        self.counters.insert(
            name.to_owned(),
            Counter { value: delta, resets_at_ms: window_ms.map(|w| now_ms.saturating_add(w)) },
        );
        Ok(delta)
    }

    /// Every live counter at `now_ms`, sorted by name (for `hongbao plugin run`).
    pub fn live(&self, now_ms: u64) -> Vec<(String, i64)> {
        let mut live: Vec<(String, i64)> = self
            .counters
            .iter()
            .filter(|(_, c)| c.resets_at_ms.is_none_or(|at| now_ms < at))
            .map(|(name, c)| (name.clone(), c.value))
            .collect();
        live.sort();
        live
    }
}

fn check_name(name: &str) -> Result<(), HostError> {
    if name.is_empty() || name.len() > COUNTER_NAME_BYTES_MAX || !name.bytes().all(|b| b.is_ascii_graphic()) {
        let shown: String = name.chars().take(40).collect();
        return Err(HostError::InvalidName(format!(
            "counter names are 1..={COUNTER_NAME_BYTES_MAX} printable ASCII bytes without spaces; got `{shown}`"
        )));
    }
    Ok(())
}

/// `host.log` lines of the current call.
#[derive(Default)]
pub(super) struct CallLog {
    pub(super) lines: Vec<(LogLevel, String)>,
    pub(super) dropped: u64,
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn counter_get(&mut self, name: String) -> wasmtime::Result<Result<i64, HostError>> {
        let replayed = self.tape.replay(&format!("counter-get `{name}`"), |call| match call {
            HostCall::CounterGet { name: recorded, answer } if *recorded == name => Some(answer.clone()),
            _ => None,
        });
        if let Some(answer) = replayed {
            // A call the recording does not have reads as 0, and the replay reports it.
            return Ok(answer.map_or(Ok(0), |answer| answer.map_err(HostError::from)));
        }
        let answer = match check_name(&name) {
            Err(error) => Err(error),
            Ok(()) => {
                let now_ms = self.clock_now_ms();
                Ok(self.scope.counters.lock().get(&name, now_ms))
            }
        };
        self.tape.record(HostCall::CounterGet { name, answer: answer.as_ref().map(|v| *v).map_err(Into::into) });
        Ok(answer)
    }

    fn counter_add(
        &mut self,
        name: String,
        delta: i64,
        window_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, HostError>> {
        let replayed = self.tape.replay(&format!("counter-add `{name}`"), |call| match call {
            HostCall::CounterAdd { name: recorded, delta: d, window_ms: w, answer }
                if *recorded == name && *d == delta && *w == window_ms =>
            {
                Some(answer.clone())
            }
            _ => None,
        });
        if let Some(answer) = replayed {
            return Ok(answer.map_or(Ok(delta), |answer| answer.map_err(HostError::from)));
        }
        let answer = match check_name(&name) {
            Err(error) => Err(error),
            Ok(()) => {
                let now_ms = self.clock_now_ms();
                self.scope.counters.lock().add(&name, delta, window_ms, now_ms)
            }
        };
        let recorded = answer.as_ref().map(|v| *v).map_err(Into::into);
        self.tape.record(HostCall::CounterAdd { name, delta, window_ms, answer: recorded });
        Ok(answer)
    }

    fn stock_remaining(&mut self) -> wasmtime::Result<Stock> {
        let replayed = self.tape.replay("stock-remaining", |call| match call {
            HostCall::Stock { answer } => Some(answer.clone()),
            _ => None,
        });
        let answer = match replayed {
            Some(answer) => answer
                .unwrap_or(Ok(RecordedStock { count_remaining: None, budget_remaining_cents: None }))
                .map(Stock::from),
            None => self.services.stock_remaining(&self.scope),
        };
        self.tape.record(HostCall::Stock { answer: answer.clone().map(RecordedStock::from) });
        // A stock read that fails must not look like "no limit": the call traps and the
        // scene's failure policy decides.
        answer.map_err(|error| wasmtime::Error::msg(format!("stock unavailable: {error}")))
    }

    fn log(&mut self, level: LogLevel, mut message: String) -> wasmtime::Result<()> {
        if self.log.lines.len() >= LOG_LINES_PER_CALL_MAX {
            self.log.dropped += 1;
            return Ok(());
        }
        if message.len() > LOG_LINE_BYTES_MAX {
            let mut end = LOG_LINE_BYTES_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.log.lines.push((level, message));
        Ok(())
    }
}

impl PluginState {
    fn clock_now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves windowed counters start again after their window and plain ones never do.
    #[test]
    fn counters_reset_after_their_window() {
        let mut counters = SceneCounters::default();
        assert_eq!(counters.add("user/1", 1, Some(1_000), 10_000), Ok(1));
        assert_eq!(counters.add("user/1", 1, Some(1_000), 10_999), Ok(2));
        assert_eq!(counters.get("user/1", 11_000), 0);
        assert_eq!(counters.add("user/1", 1, Some(1_000), 11_000), Ok(1));
        assert_eq!(counters.add("total", 5, None, 0), Ok(5));
        assert_eq!(counters.get("total", u64::MAX - 1), 5);
    }

    // Proves counter names are bounded and printable.
    #[test]
    fn counter_names_are_checked() {
        assert!(check_name("user/10001").is_ok());
        assert!(matches!(check_name(""), Err(HostError::InvalidName(_))));
        assert!(matches!(check_name("a b"), Err(HostError::InvalidName(_))));
        assert!(matches!(check_name(&"x".repeat(COUNTER_NAME_BYTES_MAX + 1)), Err(HostError::InvalidName(_))));
    }

    // Proves remaining stock is the scene's, capped by the activity's budget.
    #[test]
    fn remaining_stock_is_capped_by_the_activity() {
        let limits =
            StockLimits { activity_budget_cents: 1_000, scene_count_max: Some(10), scene_budget_cents: Some(800) };
        let stock = remaining(&limits, StockUsed { count: 3, cents: 300 }, StockUsed { count: 5, cents: 900 });
        assert_eq!(stock.count_remaining, Some(7));
        assert_eq!(stock.budget_remaining_cents, Some(100));
    }
}
