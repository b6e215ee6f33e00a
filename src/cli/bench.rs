//! `kho bench`: a load generator over HTTP, like MinIO's warp. It starts a Kho server on the embedded
//! default in a scratch directory, certifies a generated issuer key, then measures durable deposits and
//! purpose-bound officer reads (each of which writes and fsyncs an access entry first), and prints
//! throughput and latency percentiles. Client and server share the machine, as they do here in CI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;

use crate::config::Config;
use crate::ids::{now_unix_ms, Code, Digest, OwnerId};
use crate::statement::{KeyCertificate, SecretKey, Signed};

const AGENCY: &str = "000.00.00.H26";
const OWNER: &str = "001204012345";
const PURPOSE: &str = "H26.22-240301-0001";

#[derive(Args)]
pub(super) struct BenchArgs {
    /// Documents to deposit.
    #[arg(long, default_value_t = 2000)]
    documents: usize,
    /// Size of each document.
    #[arg(long, default_value_t = 64 * 1024)]
    size_bytes: usize,
    /// Reads of deposited documents.
    #[arg(long, default_value_t = 5000)]
    reads: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Scratch directory for the server's data (removed afterwards); default under the temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Runs `count` requests on `concurrency` threads; returns each one's latency.
fn run(
    count: usize,
    concurrency: usize,
    request: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(count));
    let failure = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let begun = Instant::now();
                match request(index) {
                    Ok(()) => latencies.lock().unwrap_or_else(|p| p.into_inner()).push(begun.elapsed()),
                    Err(error) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                        return;
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    if let Some(error) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(error);
    }
    let mut latencies = latencies.into_inner().unwrap_or_else(|p| p.into_inner());
    latencies.sort_unstable();
    Ok((elapsed, latencies))
}

fn report(name: &str, bytes_each: usize, elapsed: Duration, latencies: &[Duration]) {
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let seconds = elapsed.as_secs_f64();
    println!(
        "| {name:<8} | {:>7} | {:>7.2} s | {:>9.0}/s | {:>8.1} MB/s | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} |",
        latencies.len(),
        seconds,
        latencies.len() as f64 / seconds,
        (latencies.len() * bytes_each) as f64 / seconds / 1e6,
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
}

pub(super) fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kho-bench-{}-{}", std::process::id(), now_unix_ms())));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = bench_in(&dir, args.documents, args.size_bytes, args.reads, args.concurrency.max(1));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench_in(
    dir: &std::path::Path,
    documents: usize,
    size: usize,
    reads: usize,
    concurrency: usize,
) -> anyhow::Result<ExitCode> {
    let anchor = SecretKey::generate();
    let issuer = SecretKey::generate();
    crate::keys::write_public_key(&dir.join("anchor.pub.pem"), &anchor.public_key())?;
    let mut config = Config {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse()?,
        trust_anchors: vec![dir.join("anchor.pub.pem")],
        concurrency_limit: concurrency.max(crate::config::CONCURRENCY_LIMIT_DEFAULT),
        // One officer token reads as fast as the server serves: the load is the point.
        rate_limits: crate::config::RateLimitConfig::unlimited(),
        ..Config::default()
    };
    config.auth.dev_mode = true;
    let server = crate::http::start_background(&config)?;
    let base = format!("http://{}", server.address);
    let token = |role: &str, agency: Option<&str>| {
        super::dev_token(
            &config,
            &super::DevTokenArgs {
                role: role.into(),
                subject: format!("bench-{role}"),
                agency: agency.map(Into::into),
                owner: None,
                hours: 1,
                config: None,
            },
        )
    };
    let (admin, issuer_token, officer) =
        (token("admin", None)?, token("issuer", Some(AGENCY))?, token("officer", Some(AGENCY))?);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let now = now_unix_ms();
    let certificate = Signed::sign(
        KeyCertificate {
            agency: Code::parse("agency", AGENCY)?,
            subject: issuer.public_key(),
            valid_from_ms: now - 60_000,
            valid_until_ms: now + 86_400_000,
            signed_at_ms: now,
        },
        &anchor,
    );
    let status = agent
        .post(format!("{base}/v1/certificates"))
        .header("Authorization", format!("Bearer {admin}"))
        .send(&certificate.to_envelope()[..])?
        .status();
    anyhow::ensure!(status.as_u16() == 201, "certificate refused: {status}");

    println!("kho bench: {documents} deposits and {reads} reads of {size}-byte documents, {concurrency} clients, server {base}");
    println!(
        "| phase    |   count |    time   |   throughput |   data rate  | p50 ms  | p90 ms  | p99 ms  | max ms  |"
    );
    println!(
        "|----------|---------|-----------|--------------|--------------|---------|---------|---------|---------|"
    );
    let (owner, agency) = (OwnerId::parse(OWNER)?, Code::parse("agency", AGENCY)?);
    let ids = Mutex::new(vec![Digest([0; 32]); documents]);
    let last_index = std::sync::atomic::AtomicU64::new(0);
    let (elapsed, latencies) = run(documents, concurrency, |index| {
        // Half the documents compress like text, half do not, like scans.
        let content = crate::sample::document(size, index as u64, index % 2 == 0);
        let signed = Signed::sign(crate::sample::record(&content, &owner, &agency, now + index as i64), &issuer);
        let response = agent
            .post(format!("{base}/v1/records"))
            .header("Authorization", format!("Bearer {issuer_token}"))
            .header(crate::http::RECORD_HEADER, base64::engine::general_purpose::STANDARD.encode(signed.to_envelope()))
            .send(&content[..])?;
        anyhow::ensure!(response.status().as_u16() == 201, "deposit refused: {}", response.status());
        let mut response = response;
        let view: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        let log_index = view["receipt"]["log_index"].as_u64().unwrap_or(0);
        last_index.fetch_max(log_index, std::sync::atomic::Ordering::Relaxed);
        ids.lock().unwrap_or_else(|p| p.into_inner())[index] = signed.id();
        Ok(())
    })?;
    report("deposit", size, elapsed, &latencies);
    let checkpoint_delay = checkpoint_delay(&agent, &base, last_index.into_inner())?;
    let ids = ids.into_inner().unwrap_or_else(|p| p.into_inner());
    let (elapsed, latencies) = run(reads, concurrency, |index| {
        let id = ids[(index * 7919) % ids.len()];
        let mut response = agent
            .get(format!("{base}/v1/records/{id}/content"))
            .header("Authorization", format!("Bearer {officer}"))
            .header(crate::http::PURPOSE_HEADER, PURPOSE)
            .call()?;
        anyhow::ensure!(response.status().as_u16() == 200, "read refused: {}", response.status());
        let body = response.body_mut().with_config().limit(size as u64 + 1).read_to_vec()?;
        anyhow::ensure!(body.len() == size, "short read");
        Ok(())
    })?;
    report("read", size, elapsed, &latencies);
    drop(server);
    println!(
        "the first signed checkpoint covering the last deposit came {} ms after its acknowledgement",
        checkpoint_delay.as_millis()
    );
    let on_disk: u64 = walk_size(&config.data_dir);
    println!(
        "bytes on disk after the run: {on_disk} for {} bytes deposited ({:.2}), access log entries included",
        documents * size,
        on_disk as f64 / (documents * size) as f64
    );
    Ok(ExitCode::SUCCESS)
}

/// How long after now the server's signed checkpoint covers log entry `index`, polling every 5 ms.
fn checkpoint_delay(agent: &ureq::Agent, base: &str, index: u64) -> anyhow::Result<Duration> {
    const POLL: Duration = Duration::from_millis(5);
    const GIVE_UP: Duration = Duration::from_secs(60);
    let started = std::time::Instant::now();
    loop {
        let mut response = agent.get(format!("{base}/v1/log/checkpoint")).call()?;
        if response.status().is_success() {
            let note = response.body_mut().read_to_string()?;
            if note.lines().nth(1).and_then(|size| size.parse::<u64>().ok()).is_some_and(|size| size > index) {
                return Ok(started.elapsed());
            }
        }
        anyhow::ensure!(started.elapsed() < GIVE_UP, "no checkpoint covered entry {index} within {GIVE_UP:?}");
        std::thread::sleep(POLL);
    }
}

fn walk_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk_size(&path)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
