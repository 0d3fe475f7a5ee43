//! The grab rain: many users grabbing one hot group red packet at once, packet after packet.
//!
//! A sender is funded by campaign grants, sends `packets` packets of `shares` shares each, and
//! `connections` clients grab each packet in turn with fresh users until it is empty: every
//! grab of a packet's life contends on that one packet (one hash slot on a Cluster). The run
//! checks that each packet gave exactly its shares to distinct users, summing to its total.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::rain::{Connection, Histogram};
use crate::access::client::ClientCredentials;

/// What to grab, and how hard.
#[derive(Debug, Clone)]
pub struct GrabConfig {
    /// `HOST:PORT` of the host.
    pub target: String,
    /// Requests are signed as this app.
    pub credentials: ClientCredentials,
    /// The app.
    pub app_id: i64,
    /// A campaign scene that funds the sender (`activity`, `scene`, `award type`).
    pub funding: (String, String, String),
    /// Packets grabbed one after the other.
    pub packets: u32,
    /// Shares per packet.
    pub shares: u32,
    /// Clients grabbing at once.
    pub connections: usize,
    /// The sender's act id; grabbers are numbered after it.
    pub sender: i64,
}

/// Figures of one grab rain.
#[derive(Debug, Clone, Serialize, Default)]
pub struct GrabReport {
    /// Grabs answered with a share.
    pub grabs: u64,
    /// Grabs answered `packet_empty` (the losers of each race).
    pub empty: u64,
    /// Shares handed out per second over the grabbing time.
    pub grabs_per_s: f64,
    /// Median grab latency.
    pub p50_ms: f64,
    /// 99th percentile grab latency.
    pub p99_ms: f64,
    /// Packets grabbed.
    pub packets: u32,
    /// Clients at once.
    pub connections: usize,
    /// Every packet gave exactly its shares to distinct users, summing to its total.
    pub exact: bool,
}

async fn post(connection: &mut Connection, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let (status, bytes) = connection.send("POST", path, Bytes::from(body.to_string())).await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Grants the sender campaign money until it holds `cents`.
async fn fund(connection: &mut Connection, config: &GrabConfig, cents: i64) -> anyhow::Result<()> {
    let (activity_id, scene_id, award_type) = &config.funding;
    let mut funded = 0;
    for stage in 0u32.. {
        if funded >= cents {
            return Ok(());
        }
        let body = json!({
            "app_id": config.app_id, "act_id": config.sender, "activity_id": activity_id, "scene_id": scene_id,
            "rain_id": 9, "award_type": award_type, "stage": stage,
        });
        let (status, answer) = post(connection, "/v1/grants", &body).await?;
        anyhow::ensure!(status == 200, "funding grant answered {status}: {answer}");
        funded += answer["amount_cents"].as_i64().unwrap_or(0);
    }
    Ok(())
}

/// Runs the grab rain.
pub async fn run(config: &GrabConfig) -> anyhow::Result<GrabReport> {
    let total_cents = i64::from(config.shares) * 3;
    let mut connection = Connection::open(&config.target, &config.credentials).await?;
    fund(&mut connection, config, total_cents * i64::from(config.packets)).await?;
    let next_user = Arc::new(AtomicI64::new(config.sender + 1));
    let mut report =
        GrabReport { packets: config.packets, connections: config.connections, exact: true, ..GrabReport::default() };
    let mut histogram = Histogram::default();
    let mut grabbing = Duration::ZERO;
    for packet in 0..config.packets {
        let body = json!({
            "request_id": format!("bench-{}-{packet}", config.sender), "sender_act_id": config.sender,
            "total_cents": total_cents, "shares": config.shares, "split": "random",
        });
        let (status, sent) = post(&mut connection, "/v1/packets", &body).await?;
        anyhow::ensure!(status == 200, "sending a packet answered {status}: {sent}");
        let path = format!("/v1/packets/{}/grabs", sent["packet_id"].as_str().context("no packet id")?);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(config.connections);
        for _ in 0..config.connections {
            let (target, credentials, path, next_user) =
                (config.target.clone(), config.credentials.clone(), path.clone(), next_user.clone());
            tasks.push(tokio::spawn(async move {
                let mut connection = Connection::open(&target, &credentials).await?;
                let (mut won, mut empty, mut histogram) = (Vec::new(), 0u64, Histogram::default());
                loop {
                    let act_id = next_user.fetch_add(1, Ordering::Relaxed);
                    let sent_at = Instant::now();
                    let (status, answer) = post(&mut connection, &path, &json!({ "act_id": act_id })).await?;
                    histogram.record(sent_at.elapsed());
                    match status {
                        200 => won.push((act_id, answer["amount_cents"].as_i64().unwrap_or(0))),
                        409 if answer["code"] == "packet_empty" => {
                            empty += 1;
                            return anyhow::Ok((won, empty, histogram));
                        }
                        _ => anyhow::bail!("a grab answered {status}: {answer}"),
                    }
                }
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (won, empty, task_histogram) = task.await??;
            winners.extend(won);
            report.empty += empty;
            histogram.merge(&task_histogram);
        }
        grabbing += started.elapsed();
        let mut users: Vec<i64> = winners.iter().map(|(act_id, _)| *act_id).collect();
        users.sort_unstable();
        users.dedup();
        let sum: i64 = winners.iter().map(|(_, cents)| cents).sum();
        report.exact &= winners.len() == config.shares as usize && users.len() == winners.len() && sum == total_cents;
        report.grabs += winners.len() as u64;
    }
    report.grabs_per_s = report.grabs as f64 / grabbing.as_secs_f64().max(1e-9);
    report.p50_ms = histogram.quantile_ms(0.5);
    report.p99_ms = histogram.quantile_ms(0.99);
    Ok(report)
}
