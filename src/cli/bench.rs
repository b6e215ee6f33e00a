//! `kho bench`: a load generator over HTTP, like MinIO's warp. It starts `kho serve` as a child
//! process on the embedded default in a scratch directory (so the server's own peak memory can be read
//! apart from the client's), certifies a generated issuer key, signs every record first (untimed), then
//! measures durable deposits and purpose-bound officer reads (each of which writes and fsyncs an access
//! entry first), and prints throughput, latency percentiles and the server's peak RSS per phase, as a
//! table and optionally as JSON. Documents are generated (`--size-bytes`) or the files of a folder
//! (`--corpus`, such as one `scripts/make-corpus` builds). Client and server share the machine, as they
//! do here in CI.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;

use crate::config::Config;
use crate::ids::{now_unix_ms, Code, MediaType, OwnerId};
use crate::statement::{KeyCertificate, SecretKey, Signed};

const AGENCY: &str = "000.00.00.H26";
const OWNER: &str = "001204012345";
const PURPOSE: &str = "H26.22-240301-0001";
/// How long the child server may take to say where it listens.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub(super) struct BenchArgs {
    /// Documents to deposit (generated ones; with --corpus, every file of the folder is deposited once).
    #[arg(long, default_value_t = 2000)]
    documents: usize,
    /// Size of each generated document.
    #[arg(long, default_value_t = 64 * 1024)]
    size_bytes: usize,
    /// Deposit the files of this folder (and its subfolders, but hidden ones) instead of generated
    /// documents: PDFs as application/pdf, XML as application/xml, others as octet-stream.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Reads of deposited documents.
    #[arg(long, default_value_t = 5000)]
    reads: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Spread the generated documents over this many owners (the first is the one listed).
    #[arg(long, default_value_t = 1)]
    owners: usize,
    /// Listings of the first owner's records by an officer (with a purpose), after the reads: phase
    /// `list`.
    #[arg(long, default_value_t = 0)]
    listings: usize,
    /// Officers listing at once (one, by default: the latency an officer at the counter sees).
    #[arg(long, default_value_t = 1)]
    list_clients: usize,
    /// Records per listing page.
    #[arg(long, default_value_t = crate::vault::PAGE_SIZE_DEFAULT)]
    list_limit: usize,
    /// At the end, kill the server (SIGKILL, as a power cut ends it) and time its next start until it
    /// listens: the open time after a crash at this size.
    #[arg(long)]
    crash_reopen: bool,
    /// Then also read for this many seconds with wrk (which must be installed), the load tool web
    /// servers are measured with, over --wrk-connections connections: phase `wrk-read`.
    #[arg(long, default_value_t = 0)]
    wrk_seconds: u64,
    /// Connections wrk keeps open (with --wrk-seconds).
    #[arg(long, default_value_t = 32)]
    wrk_connections: usize,
    /// Scratch directory for the server's data (removed afterwards); default under the temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What is deposited.
enum Documents {
    Generated { count: usize, size: usize },
    Corpus(Vec<CorpusFile>),
}

struct CorpusFile {
    path: PathBuf,
    size: usize,
    media_type: MediaType,
}

impl Documents {
    fn count(&self) -> usize {
        match self {
            Documents::Generated { count, .. } => *count,
            Documents::Corpus(files) => files.len(),
        }
    }

    fn size(&self, index: usize) -> usize {
        match self {
            Documents::Generated { size, .. } => *size,
            Documents::Corpus(files) => files[index].size,
        }
    }

    fn bytes(&self) -> usize {
        (0..self.count()).map(|index| self.size(index)).sum()
    }

    /// The document's bytes: generated (half compress like text, half do not, like scans) or read.
    fn content(&self, index: usize) -> anyhow::Result<Vec<u8>> {
        match self {
            Documents::Generated { size, .. } => {
                Ok(crate::sample::document(*size, index as u64, index.is_multiple_of(2)))
            }
            Documents::Corpus(files) => {
                let path = &files[index].path;
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            }
        }
    }

    /// Sends the document as `request`'s body. A corpus file goes from the file into the client's
    /// output buffer (not read whole first and copied there): the client shares this machine's cores
    /// with the server it measures, so it spends as little on each byte as it can.
    fn send(
        &self,
        index: usize,
        request: ureq::RequestBuilder<ureq::typestate::WithBody>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        Ok(match self {
            Documents::Generated { .. } => request.send(&self.content(index)?[..])?,
            Documents::Corpus(files) => {
                let path = &files[index].path;
                request.send(std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?)?
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Documents::Generated { count, size } => format!("{count} generated {size}-byte documents"),
            Documents::Corpus(files) => {
                format!("{} corpus files ({:.1} MB)", files.len(), self.bytes() as f64 / 1e6)
            }
        }
    }
}

/// Every file under `dir` but hidden ones, in name order.
fn corpus_files(dir: &Path) -> anyhow::Result<Vec<CorpusFile>> {
    fn walk(dir: &Path, found: &mut Vec<CorpusFile>) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the corpus folder {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                walk(&path, found)?;
            } else if metadata.is_file() && metadata.len() > 0 {
                let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
                let media_type = match extension.as_str() {
                    "pdf" => "application/pdf",
                    "xml" | "xsl" | "xsd" => "application/xml",
                    "jpg" | "jpeg" => "image/jpeg",
                    "png" => "image/png",
                    _ => "application/octet-stream",
                };
                let size = usize::try_from(metadata.len()).context("a file too large for this machine")?;
                found.push(CorpusFile { path, size, media_type: MediaType::parse(media_type)? });
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(dir, &mut found)?;
    anyhow::ensure!(!found.is_empty(), "{} holds no files to deposit", dir.display());
    Ok(found)
}

/// `kho serve` as a child process on a scratch configuration.
struct ServerProcess {
    child: std::process::Child,
    base: String,
}

impl ServerProcess {
    fn start(dir: &Path, config: &Config) -> anyhow::Result<ServerProcess> {
        let quote = |path: &Path| serde_json::to_string(&path.to_string_lossy()).unwrap_or_default();
        let anchors: Vec<String> = config.trust_anchors.iter().map(|path| quote(path)).collect();
        let text = format!(
            "data_dir = {}\nlisten = \"127.0.0.1:0\"\ntrust_anchors = [{}]\nconcurrency_limit = {}\nscrub_interval_hours = 0\n\
             document_size_bytes_max = {}\n\
             [auth]\ndev_mode = true\n\
             [rate_limits]\ncitizen = 0\nofficer = 0\nauditor = 0\nadmin = 0\nissuer = 0\n",
            quote(&config.data_dir),
            anchors.join(", "),
            config.concurrency_limit,
            config.document_size_bytes_max,
        );
        let config_path = dir.join("kho.toml");
        std::fs::write(&config_path, text)?;
        let (out, log) = (dir.join("server.out"), dir.join("server.log"));
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            // As deploy/kho.service runs it (docs/BENCHMARKS.md, "Memory"), unless told otherwise.
            .env("MALLOC_ARENA_MAX", std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into()))
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start kho serve")?;
        let mut server = ServerProcess { child, base: String::new() };
        let started = Instant::now();
        loop {
            let said = std::fs::File::open(&out).map(|file| {
                std::io::BufReader::new(file)
                    .lines()
                    .map_while(Result::ok)
                    .find_map(|line| line.strip_prefix("kho listening on ").map(str::to_owned))
            });
            if let Ok(Some(base)) = said {
                server.base = base;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                anyhow::bail!("kho serve stopped ({status}) before listening:\n{log}");
            }
            anyhow::ensure!(
                started.elapsed() < SERVER_START_TIMEOUT,
                "kho serve did not start in {SERVER_START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's peak resident memory since it started or since `reset_peak` (Linux; None elsewhere).
    fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_kib("VmHWM:").map(|kib| kib * 1024)
    }

    /// Starts the peak over (Linux's clear_refs 5), so that each phase has its own; returns the
    /// resident memory it starts from.
    fn reset_peak(&self) -> Option<u64> {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
        self.status_kib("VmRSS:").map(|kib| kib * 1024)
    }

    /// Runs one phase with the peak started over, and gives it the server's memory before and at peak.
    fn measure(&self, phase: impl FnOnce() -> anyhow::Result<Phase>) -> anyhow::Result<Phase> {
        let before = self.reset_peak();
        let phase = phase()?;
        Ok(Phase { server_peak_rss_bytes: self.peak_rss_bytes(), server_rss_before_bytes: before, ..phase })
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find(|line| line.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Every acknowledged deposit is already durable; the scratch folder is removed next.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The zstd level of the references deposits are judged against: the in-memory limit's frames, and each
/// document compressed whole for the bytes on disk. Level 3, zstd's own default, whatever level deposits
/// use (`content::ZSTD_LEVEL_DEFAULT`).
const REFERENCE_ZSTD_LEVEL: i32 = 3;

/// The in-memory limit of a deposit, the reference its rate is judged against: the same per-document
/// work with no storage and no network (the record's signature checked, BLAKE3 and SHA-256 over the
/// content, every frame of the default size compressed at [`REFERENCE_ZSTD_LEVEL`]), on every core of
/// this machine.
fn in_memory_limit(documents: &Documents, records: &[(crate::ids::Digest, String)]) -> anyhow::Result<Phase> {
    use sha2::Digest as _;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let timed = run(documents.count(), cores, |index| {
        let content = documents.content(index)?;
        let envelope = base64::engine::general_purpose::STANDARD.decode(&records[index].1)?;
        Signed::<crate::statement::Record>::from_envelope(&envelope)?;
        let (mut blake3, mut sha256) = (blake3::Hasher::new(), sha2::Sha256::new());
        let mut compressor = zstd::bulk::Compressor::new(REFERENCE_ZSTD_LEVEL)?;
        for frame in content.chunks(crate::content::FRAME_SIZE_BYTES_DEFAULT as usize) {
            blake3.update(frame);
            sha256.update(frame);
            std::hint::black_box(compressor.compress(frame)?);
        }
        std::hint::black_box((blake3.finalize(), sha256.finalize()));
        Ok(())
    })?;
    Ok(Phase::measured("limit", timed, documents.bytes()))
}

/// Rates over tenths of a long phase (100,000 requests or more), printed as each completes, so that a
/// run of a million shows whether the rate holds as the store grows, and a long read phase whether its
/// rate holds from its first reads on.
struct Windows {
    size: usize,
    done: AtomicUsize,
    marks: Mutex<Vec<(usize, Instant)>>,
}

impl Windows {
    const LONG_PHASE: usize = 100_000;

    fn new(count: usize) -> Windows {
        let size = if count >= Self::LONG_PHASE { count / 10 } else { usize::MAX };
        Windows { size, done: AtomicUsize::new(0), marks: Mutex::new(vec![(0, Instant::now())]) }
    }

    fn tick(&self, what: &str) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !done.is_multiple_of(self.size) {
            return;
        }
        let now = Instant::now();
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let &(before, then) = marks.last().unwrap_or(&(0, now));
        let rate = (done - before) as f64 / now.duration_since(then).as_secs_f64();
        eprintln!("{what}: {done} done, {rate:.0}/s over the last {}", done - before);
        marks.push((done, now));
    }

    fn rates(&self) -> Vec<f64> {
        let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        marks.windows(2).map(|w| (w[1].0 - w[0].0) as f64 / w[1].1.duration_since(w[0].1).as_secs_f64()).collect()
    }
}

/// One timed phase's figures.
struct Phase {
    name: &'static str,
    elapsed: Duration,
    count: usize,
    bytes: usize,
    latency_ms: Percentiles,
    server_peak_rss_bytes: Option<u64>,
    /// The server's resident memory when the phase began: the peak less this is what the phase added.
    server_rss_before_bytes: Option<u64>,
}

/// Latency percentiles in milliseconds.
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    /// Of sorted latencies.
    fn of(sorted: &[Duration]) -> Percentiles {
        let at = |q: f64| {
            let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
            sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Percentiles { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0) }
    }
}

impl Phase {
    fn measured(name: &'static str, (elapsed, latencies): (Duration, Vec<Duration>), bytes: usize) -> Phase {
        let latency_ms = Percentiles::of(&latencies);
        Phase {
            name,
            elapsed,
            count: latencies.len(),
            bytes,
            latency_ms,
            server_peak_rss_bytes: None,
            server_rss_before_bytes: None,
        }
    }

    fn print(&self) {
        let seconds = self.elapsed.as_secs_f64();
        println!(
            "| {:<8} | {:>7} | {:>7.2} s | {:>9.0}/s | {:>8.1} MB/s | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {:>8} |",
            self.name,
            self.count,
            seconds,
            self.count as f64 / seconds,
            self.bytes as f64 / seconds / 1e6,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.max,
            self.server_peak_rss_bytes.map_or("-".to_owned(), |b| format!("{} MiB", b >> 20)),
        );
    }

    fn json(&self) -> serde_json::Value {
        let seconds = self.elapsed.as_secs_f64();
        serde_json::json!({
            "phase": self.name,
            "count": self.count,
            "seconds": seconds,
            "per_second": self.count as f64 / seconds,
            "megabytes_per_second": self.bytes as f64 / seconds / 1e6,
            "latency_ms": {
                "p50": self.latency_ms.p50,
                "p90": self.latency_ms.p90,
                "p99": self.latency_ms.p99,
                "max": self.latency_ms.max,
            },
            "server_peak_rss_bytes": self.server_peak_rss_bytes,
            "server_rss_before_bytes": self.server_rss_before_bytes,
        })
    }
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

pub(super) fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let documents = match &args.corpus {
        Some(dir) => Documents::Corpus(corpus_files(dir)?),
        None => Documents::Generated { count: args.documents.max(1), size: args.size_bytes },
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kho-bench-{}-{}", std::process::id(), now_unix_ms())));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = bench_in(&dir, &documents, &args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench_in(dir: &Path, documents: &Documents, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let (reads, concurrency) = (args.reads, args.concurrency.max(1));
    let anchor = SecretKey::generate();
    let issuer = SecretKey::generate();
    crate::keys::write_public_key(&dir.join("anchor.pub.pem"), &anchor.public_key())?;
    let config = Config {
        data_dir: dir.join("data"),
        trust_anchors: vec![dir.join("anchor.pub.pem")],
        concurrency_limit: concurrency.max(crate::config::CONCURRENCY_LIMIT_DEFAULT),
        // The server takes whatever is deposited here, a single 1 GiB document included.
        document_size_bytes_max: (0..documents.count())
            .map(|index| documents.size(index) as u64)
            .max()
            .unwrap_or(0)
            .max(crate::vault::DOCUMENT_SIZE_BYTES_MAX_DEFAULT),
        ..Config::default()
    };
    let server = ServerProcess::start(dir, &config)?;
    let base = server.base.clone();
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

    // Every record is signed before the clock starts, as an agency's system signs before it sends.
    let agency = Code::parse("agency", AGENCY)?;
    let owners: Vec<OwnerId> = (0..args.owners.max(1))
        .map(|k| if k == 0 { OwnerId::parse(OWNER) } else { OwnerId::parse(&format!("001{k:09}")) })
        .collect::<Result<_, _>>()?;
    let mut records = Vec::with_capacity(documents.count());
    // What bytes on disk are judged against: each document compressed whole at the reference level.
    let mut compressed_bytes = 0;
    for index in 0..documents.count() {
        let content = documents.content(index)?;
        compressed_bytes += zstd::bulk::compress(&content, REFERENCE_ZSTD_LEVEL)?.len().min(content.len());
        let owner = &owners[index % owners.len()];
        let mut record = crate::sample::record(&content, owner, &agency, now + index as i64);
        if let Documents::Corpus(files) = documents {
            record.media_type = files[index].media_type.clone();
        }
        let signed = Signed::sign(record, &issuer);
        records.push((signed.id(), base64::engine::general_purpose::STANDARD.encode(signed.to_envelope())));
    }

    println!(
        "kho bench: {} deposited, then {reads} reads, {concurrency} clients, server {base} (pid {})",
        documents.describe(),
        server.child.id()
    );
    println!(
        "| phase    |   count |    time   |   throughput |   data rate  | p50 ms  | p90 ms  | p99 ms  | max ms  | peak RSS |"
    );
    println!(
        "|----------|---------|-----------|--------------|--------------|---------|---------|---------|---------|----------|"
    );
    let limit = in_memory_limit(documents, &records)?;
    limit.print();
    let last_index = std::sync::atomic::AtomicU64::new(0);
    let windows = Windows::new(documents.count());
    let deposits = server.measure(|| {
        let timed = run(documents.count(), concurrency, |index| {
            let request = agent
                .post(format!("{base}/v1/records"))
                .header("Authorization", format!("Bearer {issuer_token}"))
                .header(crate::http::RECORD_HEADER, &records[index].1);
            let response = documents.send(index, request)?;
            anyhow::ensure!(response.status().as_u16() == 201, "deposit refused: {}", response.status());
            let mut response = response;
            let view: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
            let log_index = view["receipt"]["log_index"].as_u64().unwrap_or(0);
            last_index.fetch_max(log_index, std::sync::atomic::Ordering::Relaxed);
            windows.tick("deposits");
            Ok(())
        })?;
        Ok(Phase::measured("deposit", timed, documents.bytes()))
    })?;
    deposits.print();
    let on_disk_after_deposits = walk_size(&config.data_dir);
    // Where those bytes are: the packs, the catalog, its journal.
    let parts: serde_json::Map<String, serde_json::Value> =
        ["store/packs", "store/catalog.redb", "store/catalog.journal"]
            .iter()
            .map(|part| (part.to_string(), walk_size(&config.data_dir.join(part)).into()))
            .collect();
    println!("bytes on disk after the deposits, by part: {}", serde_json::Value::Object(parts.clone()));
    let checkpoint_delay = checkpoint_delay(&agent, &base, last_index.into_inner())?;
    let read_bytes = AtomicUsize::new(0);
    let read_windows = Windows::new(reads);
    let reads = server.measure(|| {
        let timed = run(reads, concurrency, |index| {
            let which = (index * 7919) % records.len();
            let size = documents.size(which);
            let mut response = agent
                .get(format!("{base}/v1/records/{}/content", records[which].0))
                .header("Authorization", format!("Bearer {officer}"))
                .header(crate::http::PURPOSE_HEADER, PURPOSE)
                .call()?;
            anyhow::ensure!(response.status().as_u16() == 200, "read refused: {}", response.status());
            let body = response.body_mut().with_config().limit(size as u64 + 1).read_to_vec()?;
            anyhow::ensure!(body.len() == size, "short read");
            read_bytes.fetch_add(size, Ordering::Relaxed);
            read_windows.tick("reads");
            Ok(())
        })?;
        Ok(Phase::measured("read", timed, read_bytes.into_inner()))
    })?;
    reads.print();
    let mut phases = vec![limit.json(), deposits.json(), reads.json()];
    if args.listings > 0 {
        let expected = documents.count().div_ceil(args.owners.max(1)).min(args.list_limit);
        let listed_bytes = AtomicUsize::new(0);
        let list = server.measure(|| {
            let timed = run(args.listings, args.list_clients.max(1), |_| {
                let mut response = agent
                    .get(format!("{base}/v1/owners/{OWNER}/records?limit={}", args.list_limit))
                    .header("Authorization", format!("Bearer {officer}"))
                    .header(crate::http::PURPOSE_HEADER, PURPOSE)
                    .call()?;
                anyhow::ensure!(response.status().as_u16() == 200, "listing refused: {}", response.status());
                let body = response.body_mut().with_config().limit(64 << 20).read_to_string()?;
                let page: serde_json::Value = serde_json::from_str(&body)?;
                let listed = page["records"].as_array().map_or(0, Vec::len);
                anyhow::ensure!(listed == expected, "listed {listed} records, not {expected}");
                listed_bytes.fetch_add(body.len(), Ordering::Relaxed);
                Ok(())
            })?;
            Ok(Phase::measured("list", timed, listed_bytes.into_inner()))
        })?;
        list.print();
        phases.push(list.json());
    }
    if args.wrk_seconds > 0 {
        let ids: Vec<String> = records.iter().map(|(id, _)| id.to_string()).collect();
        let wrk = server.measure(|| wrk_reads(dir, &base, &officer, &ids, args))?;
        wrk.print();
        phases.push(wrk.json());
    }
    drop(server); // SIGKILL: no shutdown, as at a power cut or a kill -9
    let reopen_seconds = if args.crash_reopen {
        let started = Instant::now();
        let reopened = ServerProcess::start(dir, &config)?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "killed at {} documents, the server listened again {seconds:.2} s after it was started",
            documents.count()
        );
        drop(reopened);
        Some(seconds)
    } else {
        None
    };
    println!(
        "the first signed checkpoint covering the last deposit came {} ms after its acknowledgement",
        checkpoint_delay.as_millis()
    );
    let on_disk: u64 = walk_size(&config.data_dir);
    let deposited = documents.bytes();
    println!(
        "bytes on disk after the deposits: {on_disk_after_deposits} for {deposited} bytes deposited ({:.3}), \
         {compressed_bytes} compressed whole at zstd-{} ({:.3})",
        on_disk_after_deposits as f64 / deposited as f64,
        REFERENCE_ZSTD_LEVEL,
        on_disk_after_deposits as f64 / compressed_bytes as f64,
    );
    println!(
        "bytes on disk after the run: {on_disk} ({:.3} of those deposited), access log entries included",
        on_disk as f64 / deposited as f64
    );
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "machine": machine(),
            "documents": documents.describe(),
            "document_count": documents.count(),
            "bytes_deposited": deposited,
            "reads": args.reads,
            "concurrency": concurrency,
            "phases": phases,
            "checkpoint_delay_ms": checkpoint_delay.as_secs_f64() * 1000.0,
            "deposit_windows_per_second": windows.rates(),
            "read_windows_per_second": read_windows.rates(),
            "reopen_after_kill_seconds": reopen_seconds,
            "bytes_compressed": compressed_bytes,
            "bytes_on_disk_after_deposits": on_disk_after_deposits,
            "bytes_on_disk_after_deposits_by_part": parts,
            "bytes_on_disk": on_disk,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Officer reads of the deposited documents (in turn, whole, with the purpose) by wrk for
/// `--wrk-seconds` over `--wrk-connections` connections on two threads; any answer but 200 fails.
fn wrk_reads(dir: &Path, base: &str, officer: &str, ids: &[String], args: &BenchArgs) -> anyhow::Result<Phase> {
    let script = dir.join("kho-read.lua");
    let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    std::fs::write(
        &script,
        format!(
            "local ids = {{{}}}\nlocal i = 0\nwrk.headers[\"Authorization\"] = \"Bearer {officer}\"\n\
             wrk.headers[\"{}\"] = \"{PURPOSE}\"\n\
             request = function() i = i % #ids + 1; return wrk.format(\"GET\", \"/v1/records/\" .. ids[i] .. \"/content\") end\n",
            quoted.join(","),
            crate::http::PURPOSE_HEADER,
        ),
    )?;
    let output = std::process::Command::new("wrk")
        .args(["-t2", "--latency", "-c", &args.wrk_connections.to_string(), "-d"])
        .arg(format!("{}s", args.wrk_seconds))
        .arg("-s")
        .arg(&script)
        .arg(base)
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {}{text}", String::from_utf8_lossy(&output.stderr));
    parse_wrk(&text).with_context(|| format!("cannot read wrk's report:\n{text}"))
}

/// wrk's `--latency` report as a phase: requests, seconds, bytes read, percentiles.
fn parse_wrk(text: &str) -> anyhow::Result<Phase> {
    anyhow::ensure!(!text.contains("Non-2xx"), "some reads were refused");
    anyhow::ensure!(!text.contains("Socket errors"), "some connections failed");
    let duration_ms = |value: &str| -> anyhow::Result<f64> {
        let split = value.find(|c: char| c.is_ascii_alphabetic()).context("a duration without unit")?;
        let number: f64 = value[..split].parse()?;
        Ok(number
            * match &value[split..] {
                "us" => 0.001,
                "ms" => 1.0,
                "s" => 1000.0,
                "m" => 60_000.0,
                unit => anyhow::bail!("unknown unit {unit}"),
            })
    };
    let bytes = |value: &str| -> anyhow::Result<f64> {
        let split = value.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(value.len());
        let number: f64 = value[..split].parse()?;
        let scale = match &value[split..] {
            "" | "B" => 1.0,
            "KB" => 1024.0,
            "MB" => 1024.0 * 1024.0,
            "GB" => 1024.0 * 1024.0 * 1024.0,
            unit => anyhow::bail!("unknown unit {unit}"),
        };
        Ok(number * scale)
    };
    let words = |prefix: &str| -> anyhow::Result<Vec<&str>> {
        let line = text.lines().map(str::trim).find(|line| line.starts_with(prefix));
        Ok(line.with_context(|| format!("no line {prefix}"))?.split_whitespace().collect())
    };
    // "Latency   12.5ms    3.1ms  80.0ms   90%" (average, deviation, max, within one deviation)
    let max = duration_ms(words("Latency ")?.get(3).context("no maximum latency")?)?;
    let percentile = |name: &str| -> anyhow::Result<f64> { duration_ms(words(name)?.get(1).context("no value")?) };
    // "123 requests in 10.00s, 1.2GB read"
    let totals: Vec<&str> = text
        .lines()
        .find(|line| line.contains(" requests in "))
        .context("no totals line")?
        .split_whitespace()
        .collect();
    anyhow::ensure!(totals.len() >= 6 && totals[1] == "requests", "no totals line");
    let count: usize = totals[0].parse()?;
    let seconds = duration_ms(totals[3].trim_end_matches(','))? / 1000.0;
    Ok(Phase {
        name: "wrk-read",
        elapsed: Duration::from_secs_f64(seconds),
        count,
        bytes: bytes(totals[4])? as usize,
        latency_ms: Percentiles { p50: percentile("50%")?, p90: percentile("90%")?, p99: percentile("99%")?, max },
        server_peak_rss_bytes: None,
        server_rss_before_bytes: None,
    })
}

/// The machine the figures were measured on.
fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned());
    serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": model,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
    })
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

/// The bytes of a file, or of everything under a folder (0 for what cannot be read).
fn walk_size(path: &Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(entries) => entries.filter_map(Result::ok).map(|entry| walk_size(&entry.path())).sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as wrk 4.1 prints it with `--latency` and a script.
    const REPORT: &str = "Running 10s test @ http://127.0.0.1:41234
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.41ms    5.02ms  81.30ms   77.12%
    Req/Sec     1.30k   120.55     1.60k    70.00%
  Latency Distribution
     50%   11.52ms
     75%   14.01ms
     90%   18.77ms
     99%  862.00us
  25934 requests in 10.01s, 7.98GB read
Requests/sec:   2591.01
Transfer/sec:    816.31MB
";

    #[test]
    fn a_wrk_report_is_read_into_a_phase_and_refusals_fail_it() {
        let phase = parse_wrk(REPORT).unwrap();
        assert_eq!(phase.count, 25934);
        assert!((phase.elapsed.as_secs_f64() - 10.01).abs() < 1e-9);
        assert_eq!(phase.bytes, (7.98 * 1024.0 * 1024.0 * 1024.0) as usize);
        assert_eq!((phase.latency_ms.p50, phase.latency_ms.p90), (11.52, 18.77));
        assert!((phase.latency_ms.p99 - 0.862).abs() < 1e-9);
        assert_eq!(phase.latency_ms.max, 81.30);
        let refused = REPORT.replace("Requests/sec", "  Non-2xx or 3xx responses: 3\nRequests/sec");
        assert!(parse_wrk(&refused).is_err());
        assert!(parse_wrk("nothing").is_err());
    }
}
