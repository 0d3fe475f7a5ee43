//! `just bench`: criterion micro-benchmarks of the grant path's fixed costs and of one ledger
//! writer batch. Nothing is asserted; figures go into BENCHMARKS.md.
//!
//! - token encode + sign (ed25519), and decode + verify: the floor of every grant and restore;
//! - the order number `${actID}_${scene_id}_${rain_id}_${award_type}_${stage}`;
//! - a signed request: parsing its `Authorization` header and checking the HMAC-SHA256 over a
//!   grant body (what the access layer adds to every app request, besides the nonce's write);
//! - one writer batch: 512 credits into the embedded ledger in one transaction (fsync included);
//! - what `GET /metrics` adds to a grant: finding the scene's counters and counting the outcome,
//!   and timing the request into its histogram.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hongbao::grant::order_no;
use hongbao::issuer::Issuer;
use hongbao::issuer::pb::RedPacketToken;
use hongbao::ledger::{Credit, EmbeddedLedger};

fn token(n: i64) -> RedPacketToken {
    RedPacketToken {
        app_id: 1128,
        act_id: 10_000 + n,
        activity_id: "spring-festival-2027".into(),
        scene_id: "eve-rain".into(),
        amount_cents: 888,
        order_no: order_no(10_000 + n, "eve-rain", 1, "cash", 0),
        open_time_ms: 1_795_000_000_000,
        rain_id: 1,
        status: 1,
        key_id: String::new(),
        award_type: "cash".into(),
        stage: 0,
    }
}

fn tokens(c: &mut Criterion) {
    let issuer = Issuer::ephemeral();
    let mut n = 0;
    c.bench_function("token encode + sign", |b| {
        b.iter_batched(
            || {
                n += 1;
                token(n)
            },
            |mut token| black_box(issuer.mint(&mut token)),
            BatchSize::SmallInput,
        )
    });
    let text = issuer.mint(&mut token(1));
    c.bench_function("token decode + verify", |b| b.iter(|| black_box(issuer.verify(black_box(&text)).unwrap())));
    let mut n = 0_i64;
    c.bench_function("order number", |b| {
        b.iter(|| {
            n += 1;
            black_box(order_no(black_box(n), "eve-rain", 1, "cash", 0))
        })
    });
}

fn request_signatures(c: &mut Criterion) {
    use hongbao::access::signature::{Authorization, authorization_header};
    let body = br#"{"app_id":1128,"act_id":10001,"activity_id":"spring-festival-2027","scene_id":"eve-rain","award_type":"cash","rain_id":1,"stage":0}"#;
    let secret = b"hbsk_bench_secret_0123456789abcdefghijklmnop";
    let header =
        authorization_header(1128, "k1", secret, "POST", "/v1/grants", 1_767_225_600, "n0nce-0123456789abcdef", body);
    c.bench_function("request signature: sign (client)", |b| {
        b.iter(|| {
            black_box(authorization_header(
                1128,
                "k1",
                secret,
                "POST",
                "/v1/grants",
                1_767_225_600,
                "n0nce-0123456789abcdef",
                black_box(body),
            ))
        })
    });
    c.bench_function("request signature: parse + verify (host)", |b| {
        b.iter(|| {
            let Ok(Authorization::Signed(signed)) = Authorization::parse(black_box(&header)) else {
                panic!("not signed")
            };
            signed.verify(secret, "POST", "/v1/grants", black_box(body)).unwrap();
        })
    });
}

fn writer_batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(dir.path()).unwrap();
    runtime.block_on(ledger.fund_activity("bench".into(), hongbao::ledger::ENTRY_CENTS_MAX, 0)).unwrap();
    let mut next = 0_i64;
    let mut group = c.benchmark_group("writer");
    group.sample_size(20);
    group.bench_function("ledger batch of 512 credits (embedded, fsync)", |b| {
        b.iter_batched(
            || {
                (0..512)
                    .map(|_| {
                        next += 1;
                        Credit {
                            activity_id: "bench".into(),
                            order_no: order_no(next, "eve-rain", 1, "cash", 0),
                            scene_id: "eve-rain".into(),
                            act_id: next,
                            amount_cents: 88,
                            open_time_ms: 1,
                            memo: "除夕红包雨第1场 获得0.88元".into(),
                            token: "t".repeat(180),
                        }
                    })
                    .collect::<Vec<_>>()
            },
            |credits| runtime.block_on(ledger.credit_batch(credits)).unwrap(),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn metrics(c: &mut Criterion) {
    let metrics = hongbao::metrics::Metrics::default();
    metrics.scene("spring-festival-2027", "eve-rain", || true);
    c.bench_function("metrics: a grant's outcome counted (scene lookup + count)", |b| {
        b.iter(|| metrics.scene(black_box("spring-festival-2027"), black_box("eve-rain"), || true).count("granted"));
    });
    c.bench_function("metrics: a grant request timed into its histogram", |b| {
        b.iter(|| metrics.grant_request(hongbao::metrics::GrantKind::Single, black_box(Duration::from_micros(700))));
    });
}

criterion_group!(benches, tokens, request_signatures, writer_batch, metrics);
criterion_main!(benches);
