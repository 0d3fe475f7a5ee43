//! Yardsticks measured in the same run as a rain, so that its figures can be read as ratios on
//! the same machine: a plain hyper hello-world served the way the API is served, the raw
//! cost of encoding and signing one token, and how long the disk takes to make an append
//! durable (the embedded store answers a grant only after its journal's `fdatasync`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;

use crate::issuer::Issuer;
use crate::issuer::pb::RedPacketToken;

/// Serves a fixed JSON answer on 127.0.0.1 with the API's HTTP settings (HTTP/1.1, keep-alive,
/// no-delay), reading each request's body as the API does. Returns its address; it serves until
/// the runtime ends.
pub async fn start_hello_world() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt as _;
                    let _ = request.into_body().collect().await;
                    let answer = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(b"{\"hello\":\"world\",\"replayed\":false}")));
                    Ok::<_, std::convert::Infallible>(answer.expect("a fixed response"))
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The signing yardstick.
#[derive(Debug, Clone, Serialize)]
pub struct SigningFigure {
    /// Microseconds to encode and sign one token on one core.
    pub us_per_token: f64,
    /// Tokens per second on one core.
    pub tokens_per_s_per_core: f64,
    /// Cores the machine has.
    pub cores: usize,
}

/// Encodes and signs tokens for about `duration` on one thread.
pub fn signing(duration: Duration) -> anyhow::Result<SigningFigure> {
    let issuer = Issuer::ephemeral();
    let mut token = RedPacketToken {
        app_id: 1128,
        act_id: 10_001,
        activity_id: "spring-festival-2027".into(),
        scene_id: "eve-rain".into(),
        amount_cents: 888,
        order_no: "10001_eve-rain_1_cash_0".into(),
        open_time_ms: 1_800_000_000_000,
        rain_id: 1,
        status: 1,
        key_id: String::new(),
        award_type: "cash".into(),
        stage: 0,
    };
    let started = Instant::now();
    let mut signed = 0u64;
    while started.elapsed() < duration {
        for _ in 0..100 {
            token.act_id += 1;
            std::hint::black_box(issuer.mint(&mut token));
        }
        signed += 100;
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / signed as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(SigningFigure { us_per_token: us, tokens_per_s_per_core: 1e6 / us, cores })
}

/// The disk yardstick: `fdatasync` after small appends, one after another.
#[derive(Debug, Clone, Serialize)]
pub struct DiskSyncFigure {
    /// Appends made durable.
    pub syncs: u64,
    /// Latency quantiles of one `fdatasync`, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Bytes an append: about one grant's journal record.
const DISK_SYNC_APPEND: usize = 512;

/// Appends [`DISK_SYNC_APPEND`] bytes to a file in `dir` and syncs its data, one append after
/// another, for about `duration`: what the embedded store's journal asks of the disk for each
/// group of grants. The file is removed after.
pub fn disk_syncs(dir: &std::path::Path, duration: Duration) -> anyhow::Result<DiskSyncFigure> {
    use std::io::Write as _;
    let path = dir.join(format!("hongbao-disk-yardstick-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let record = [b'x'; DISK_SYNC_APPEND];
    let mut latencies = Vec::new();
    let started = Instant::now();
    let measured = (|| -> std::io::Result<()> {
        while started.elapsed() < duration {
            file.write_all(&record)?;
            let sync = Instant::now();
            file.sync_data()?;
            latencies.push(sync.elapsed());
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    measured?;
    latencies.sort_unstable();
    let quantile = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).map_or(0.0, |latency| latency.as_secs_f64() * 1e3)
    };
    Ok(DiskSyncFigure {
        syncs: latencies.len() as u64,
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
        max_ms: quantile(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_yardstick_syncs_and_orders_its_quantiles() {
        let dir = tempfile::tempdir().unwrap();
        let figure = disk_syncs(dir.path(), Duration::from_millis(50)).unwrap();
        assert!(figure.syncs >= 1, "{figure:?}");
        assert!(figure.p50_ms <= figure.p99_ms && figure.p99_ms <= figure.p999_ms && figure.p999_ms <= figure.max_ms);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the yardstick's file is removed");
    }
}
