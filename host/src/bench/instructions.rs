//! `hongbao bench instructions` (in `just bench`): the host's CPU instructions per grant, counted
//! by valgrind's callgrind. Unlike a time, the count repeats whatever else the machine is doing,
//! so a change's cost to the grant path can be judged on a shared, noisy machine.
//!
//! A host of the suite's own (embedded deployment, the reference bill-copy, inventory and
//! compensation plugins on) runs under `valgrind --tool=callgrind --instr-atstart=no`. Once its
//! plugins are compiled, instrumentation is switched on, a warm-up rain runs, the counters are
//! zeroed, a rain of new users runs, waits for the writer to credit every grant and checks the
//! books, and the counts are dumped: every instruction any thread of the host executed for
//! those grants — HTTP, access checks, plugins, signing, the store's journal, the writer, the
//! ledger — divided by the grants. The functions with the most instructions of their own come
//! with it (`callgrind_annotate`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::rain::{self, RainConfig};
use super::suite::{self, Host};

/// What to count.
#[derive(Debug, Clone)]
pub struct InstructionsConfig {
    /// Grants in the counted rain (new users, one grant a request).
    pub grants: u64,
    /// Connections the rain uses.
    pub connections: usize,
    /// Where the reference plugins are built (`plugins/target/wasm32-wasip2/release`).
    pub plugins_dir: PathBuf,
    /// Where to copy the counted dump, if anywhere.
    pub keep: Option<PathBuf>,
}

/// Grants in the uncounted warm-up rain: the host's pools, caches and valgrind's translations.
const WARM_UP_GRANTS: u64 = 200;

/// Functions listed with the figure.
const TOP_FUNCTIONS: usize = 15;

/// How long a host under valgrind may take to start and compile its plugins.
const START_LIMIT: Duration = Duration::from_secs(600);

/// The figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstructionsReport {
    /// Grants counted.
    pub grants: u64,
    /// Instructions the host executed for them, all threads.
    pub instructions: u64,
    /// Instructions per grant.
    pub per_grant: f64,
    /// Whether the books agreed after the rain.
    pub books_ok: bool,
    /// The functions with the most instructions of their own: (instructions, function).
    pub top: Vec<(u64, String)>,
}

/// Counts the host's instructions per grant.
///
/// # Errors
///
/// valgrind is missing, the host does not start, the rain fails, or the dump cannot be read.
pub async fn run(config: &InstructionsConfig) -> anyhow::Result<InstructionsReport> {
    for tool in ["valgrind", "callgrind_control", "callgrind_annotate"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("`{tool}` is missing: install valgrind (apt-get install valgrind)");
        }
    }
    let out_dir = std::env::temp_dir().join(format!("hongbao-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out_file = out_dir.join("callgrind.out");
    let wrapper = [
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        format!("--callgrind-out-file={}", out_file.display()),
        format!("--log-file={}", out_dir.join("valgrind.log").display()),
    ];
    let result = count(config, &wrapper, &out_file).await;
    let _ = std::fs::remove_dir_all(&out_dir);
    result
}

async fn count(config: &InstructionsConfig, wrapper: &[String], out_file: &Path) -> anyhow::Result<InstructionsReport> {
    let activity = "bench-instructions";
    let host = suite::start_host_under(activity, &config.plugins_dir, &[], wrapper)?;
    host.ready(START_LIMIT).await.context("the host under valgrind")?;
    let pid = host.pid().to_string();
    callgrind_control(&["--instr=on", &pid])?;
    let mut rain = rain_config(&host, activity, config, WARM_UP_GRANTS, 1);
    rain::run(&rain).await.context("the warm-up rain")?;
    callgrind_control(&["--zero", &pid])?;
    rain.count = Some(config.grants);
    rain.first_user = 1_000_000;
    let report = rain::run(&rain).await.context("the counted rain")?;
    let dumps_before = dumps(out_file)?.len();
    callgrind_control(&["--dump", &pid])?;
    let dump = dumps(out_file)?.into_iter().nth(dumps_before).context("callgrind wrote no dump")?;
    drop(host);
    if let Some(keep) = &config.keep {
        std::fs::create_dir_all(keep).with_context(|| format!("creating {}", keep.display()))?;
        let kept = keep.join("callgrind.out");
        std::fs::copy(&dump, &kept).with_context(|| format!("copying the dump to {}", kept.display()))?;
        eprintln!("callgrind's dump: {}", kept.display());
    }
    let text = std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
    let instructions = totals(&text).with_context(|| format!("no totals in {}", dump.display()))?;
    let annotated = Command::new("callgrind_annotate")
        .arg("--inclusive=no")
        .arg(&dump)
        .output()
        .context("running callgrind_annotate")?;
    if !annotated.status.success() {
        bail!("callgrind_annotate {}: {}", dump.display(), String::from_utf8_lossy(&annotated.stderr));
    }
    let top = top_functions(&String::from_utf8_lossy(&annotated.stdout), TOP_FUNCTIONS);
    if top.is_empty() {
        eprintln!("warning: no functions read from callgrind_annotate's listing (a format this version does not read)");
    }
    if report.granted == 0 {
        bail!("the counted rain granted nothing: {}", rain::summary(&report));
    }
    Ok(InstructionsReport {
        grants: report.granted,
        instructions,
        per_grant: instructions as f64 / report.granted as f64,
        books_ok: report.books.as_ref().is_some_and(|books| books.ok),
        top,
    })
}

fn rain_config(host: &Host, activity: &str, config: &InstructionsConfig, count: u64, first_user: i64) -> RainConfig {
    RainConfig {
        target: host.addr.clone(),
        credentials: host.credentials.clone(),
        activity_id: activity.into(),
        scene_id: "rain".into(),
        award_type: "cash".into(),
        app_id: suite::BENCH_APP,
        users: 10_000_000,
        rains: 1,
        connections: config.connections,
        duration: Duration::from_secs(3600),
        count: Some(count),
        rate: None,
        progress: false,
        check_books: true,
        first_user,
        batch: 1,
    }
}

fn callgrind_control(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("callgrind_control").args(args).output().context("running callgrind_control")?;
    if !output.status.success() {
        bail!("callgrind_control {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// The dumps callgrind has written for `out_file` (`out_file.1`, `.2`, …), in order.
fn dumps(out_file: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = out_file.parent().context("no folder")?;
    let prefix = format!("{}.", out_file.file_name().context("no file name")?.to_string_lossy());
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let part = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((part, entry.path()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// The `totals:` line of a callgrind dump.
fn totals(dump: &str) -> Option<u64> {
    dump.lines().find_map(|line| line.strip_prefix("totals:")).and_then(|n| n.trim().parse().ok())
}

/// A thread's outermost frames (glibc's and std's), left out of the listing.
const THREAD_ROOTS: [&str; 4] = [
    "clone",
    "start_thread",
    "<std::sys::thread::unix::Thread>::new::thread_start",
    "core::ops::function::FnOnce::call_once{{vtable.shim}}",
];

/// The first `n` functions of `callgrind_annotate`'s listing: `  39,635,863 ( 6.64%)  file:function [object]`.
fn top_functions(annotated: &str, n: usize) -> Vec<(u64, String)> {
    annotated
        .lines()
        .filter(|line| !line.contains("PROGRAM TOTALS"))
        .filter_map(|line| {
            let (count, rest) = line.trim_start().split_once(" (")?;
            let count: u64 = count.replace(',', "").parse().ok()?;
            let (_, function) = rest.split_once(")  ")?;
            let function = function.split(" [").next().unwrap_or(function);
            // `file:function`: the file (`???` without debug information) has no colon.
            let function = function.split_once(':').map_or(function, |(_, name)| name).trim();
            // A thread started while counting sometimes has its whole cost charged to its root
            // frames as their own (seen in one run of three): never work of their own.
            (!THREAD_ROOTS.contains(&function)).then(|| (count, function.to_owned()))
        })
        .take(n)
        .collect()
}

/// The figures as text.
pub fn summary(report: &InstructionsReport) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "instructions per grant (callgrind; embedded deployment, reference plugins on; every host thread, crediting included): {:.0}\n{} grants, {} instructions; books {}\n\nthe functions with the most instructions of their own, per grant:\n",
        report.per_grant,
        report.grants,
        report.instructions,
        if report.books_ok { "ok" } else { "NOT ok" },
    );
    for (count, function) in &report.top {
        let _ = writeln!(text, "{:>10.0}  {function}", *count as f64 / report.grants as f64);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the dump's total and the annotated listing are read as callgrind 3.19 writes them,
    // the totals line not taken for a function, and a Rust path with `::` kept whole.
    #[test]
    fn callgrind_output_is_read() {
        assert_eq!(totals("events: Ir\nsummary: 597235192\ntotals: 597235192\n"), Some(597_235_192));
        assert_eq!(totals("events: Ir\n"), None);
        let annotated = "\
--------------------------------------------------------------------------------
597,235,192 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
39,635,863 ( 6.64%)  ./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S:__memcpy_avx_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]
 8,563,608 ( 1.43%)  ???:regalloc2::ion::<impl regalloc2::Env<F>>::init [/work/main/target/release/hongbao]
 8,000,000 ( 1.40%)  ./misc/../sysdeps/unix/sysv/linux/x86_64/clone.S:clone [/usr/lib/x86_64-linux-gnu/libc.so.6]
 7,391,911 ( 1.24%)  ./malloc/./malloc/malloc.c:_int_free [/usr/lib/x86_64-linux-gnu/libc.so.6]
";
        let top = top_functions(annotated, 3);
        assert_eq!(
            top,
            vec![
                (39_635_863, "__memcpy_avx_unaligned_erms".to_owned()),
                (8_563_608, "regalloc2::ion::<impl regalloc2::Env<F>>::init".to_owned()),
                (7_391_911, "_int_free".to_owned()),
            ]
        );
    }
}
