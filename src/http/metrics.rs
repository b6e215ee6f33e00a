//! `GET /metrics`: the server's figures in the OpenMetrics text format Prometheus scrapes, made by Prometheus'
//! own client (one registry per server), and the reuse figures (`vault::stats`) as JSON for auditors
//! (`GET /v1/stats/reuse`) and as a public daily aggregate with no personal data (`GET /v1/stats/daily`).
//! docs/OPERATIONS.md lists every metric and the alarms to set on them.

use crate::error_code::ErrorCode;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState, Principal, Role};
use crate::ids::{Code, Date};

/// The media type of the OpenMetrics text format prometheus-client writes (Prometheus scrapes it).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's pattern (`/v1/records/{id}`), never the path asked for: no ids in labels.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgencyLabels {
    pub agency: String,
}

/// Every figure `/metrics` shows.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    deposit_bytes: Counter,
    pub(super) read_bytes: Counter,
    sync_seconds: Histogram,
    sync_entries: Histogram,
    /// Open connections (the accept loop's).
    pub connections: Gauge,
    log_entries: Gauge,
    checkpoint_size: Gauge,
    checkpoint_age_seconds: Gauge,
    witnessed_size: Gauge,
    witness_lag_entries: Gauge,
    store_disk_bytes: Gauge,
    records: Gauge,
    record_bytes: Gauge,
    scrub_entries_checked: Gauge,
    scrub_entries_total: Gauge,
    scrub_runs: Counter,
    scrub_findings: Gauge,
    reused: Family<AgencyLabels, Counter>,
    deposited: Family<AgencyLabels, Counter>,
    /// When this process last signed a checkpoint (a note carries no time).
    checkpoint_signed: Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kho");
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            requests.clone(),
        );
        // 1 ms to about 65 s.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        registry.register_with_unit(
            "http_request_duration",
            "Time to each response's head, by route pattern, method and status",
            Unit::Seconds,
            latency.clone(),
        );
        let deposit_bytes = Counter::default();
        registry.register_with_unit(
            "deposit",
            "Document bytes accepted by deposits",
            Unit::Bytes,
            deposit_bytes.clone(),
        );
        let read_bytes = Counter::default();
        registry.register_with_unit("read", "Document bytes served", Unit::Bytes, read_bytes.clone());
        let sync_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register_with_unit(
            "commit_sync",
            "Time a commit waited for its durable group sync",
            Unit::Seconds,
            sync_seconds.clone(),
        );
        let sync_entries = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_sync_entries",
            "Log entries each group sync made durable (the group's size)",
            sync_entries.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let connections = gauge(&mut registry, "open_connections", "Client connections open now");
        let log_entries = gauge(&mut registry, "log_entries", "Durable entries in the transparency log");
        let checkpoint_size = gauge(&mut registry, "log_checkpoint_size", "Size of the newest signed checkpoint");
        let checkpoint_age_seconds = gauge(
            &mut registry,
            "log_checkpoint_age_seconds",
            "Seconds since the newest checkpoint was signed by this process (0 before the first)",
        );
        let witnessed_size = gauge(
            &mut registry,
            "log_witnessed_size",
            "Size of the newest checkpoint cosigned by a quorum of witnesses",
        );
        let witness_lag_entries = gauge(
            &mut registry,
            "log_witness_lag_entries",
            "Entries the newest checkpoint holds beyond the newest witnessed one (0 without witnesses)",
        );
        let store_disk_bytes = gauge(&mut registry, "store_disk_bytes", "Bytes the store occupies on disk");
        let records = gauge(&mut registry, "records", "Records accepted");
        let record_bytes = gauge(
            &mut registry,
            "record_bytes",
            "Logical size: the records' documents' bytes as deposited (identical content is stored once)",
        );
        let scrub_entries_checked =
            gauge(&mut registry, "scrub_entries_checked", "Log entries the running or last background scrub checked");
        let scrub_entries_total = gauge(
            &mut registry,
            "scrub_entries_total_planned",
            "Log entries the running or last background scrub covers",
        );
        let scrub_runs = Counter::default();
        registry.register("scrub_runs", "Background scrubs finished", scrub_runs.clone());
        let scrub_findings = gauge(&mut registry, "scrub_findings", "Damage the last background scrub found");
        let reused = Family::<AgencyLabels, Counter>::default();
        registry.register(
            "documents_reused",
            "Documents read by an agency's officers for a dossier, once per day, dossier and record (from the log)",
            reused.clone(),
        );
        let deposited = Family::<AgencyLabels, Counter>::default();
        registry.register("documents_deposited", "Documents deposited by an agency (from the log)", deposited.clone());
        Metrics {
            registry,
            requests,
            latency,
            deposit_bytes,
            read_bytes,
            sync_seconds,
            sync_entries,
            connections,
            log_entries,
            checkpoint_size,
            checkpoint_age_seconds,
            witnessed_size,
            witness_lag_entries,
            store_disk_bytes,
            records,
            record_bytes,
            scrub_entries_checked,
            scrub_entries_total,
            scrub_runs,
            scrub_findings,
            reused,
            deposited,
            checkpoint_signed: Mutex::new(None),
        }
    }

    /// A durable sync: how long its caller waited, and how many entries it made durable.
    pub fn observe_sync(&self, waited: std::time::Duration, entries: u64) {
        self.sync_seconds.observe(waited.as_secs_f64());
        if entries > 0 {
            self.sync_entries.observe(entries as f64);
        }
    }

    /// A new deposit of `bytes` document bytes.
    pub fn count_deposit(&self, bytes: u64) {
        self.deposit_bytes.inc_by(bytes);
    }

    /// A checkpoint was just signed.
    pub fn checkpoint_signed(&self) {
        *self.checkpoint_signed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// The background scrub's progress, and its end (`findings` once finished).
    pub fn scrub_progress(&self, checked: u64, total: u64, findings: Option<usize>) {
        self.scrub_entries_checked.set(gauge_value(checked));
        self.scrub_entries_total.set(gauge_value(total));
        if let Some(findings) = findings {
            self.scrub_runs.inc();
            self.scrub_findings.set(gauge_value(findings as u64));
        }
    }
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Counts every routed request by its route's pattern, method and status, with the time to its head.
pub(super) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("(unmatched)", |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = RouteLabels { route, method, status: response.status().as_u16() };
    let metrics = &state.0.metrics;
    metrics.requests.get_or_create(&labels).inc();
    metrics.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: the figures read now (the log, the store, the reuse tally), then all of them encoded.
#[utoipa::path(get, path = "/metrics", tag = "service",
    summary = "The server's figures in the OpenMetrics text format Prometheus scrapes (docs/OPERATIONS.md lists them)",
    description = "Roles: anyone (restrict it at the reverse proxy).",
    responses((status = 200, description = "the figures", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (figures, disk, latest, witnessed) = state
        .blocking(|vault| {
            Ok::<_, crate::vault::StorageError>((
                vault.log_figures()?,
                vault.size_on_disk()?,
                vault.latest_checkpoint()?,
                vault.latest_witnessed_size()?,
            ))
        })
        .await??;
    let metrics = &state.0.metrics;
    metrics.log_entries.set(gauge_value(state.vault().log_size()));
    metrics.store_disk_bytes.set(gauge_value(disk));
    metrics.records.set(gauge_value(figures.records));
    metrics.record_bytes.set(gauge_value(figures.record_bytes));
    let latest_size = latest.as_ref().map_or(0, |c| c.checkpoint.size);
    metrics.checkpoint_size.set(gauge_value(latest_size));
    let signed = *metrics.checkpoint_signed.lock().unwrap_or_else(|p| p.into_inner());
    metrics.checkpoint_age_seconds.set(signed.map_or(0, |at| gauge_value(at.elapsed().as_secs())));
    if let Some(latest) = &latest {
        // Without witnesses every checkpoint counts as witnessed.
        let witnessed = if latest.witnessed.quorum == 0 { latest_size } else { witnessed.unwrap_or(0) };
        metrics.witnessed_size.set(gauge_value(witnessed));
        metrics.witness_lag_entries.set(gauge_value(latest_size.saturating_sub(witnessed)));
    }
    // Counters of the log's totals: raised to them (the tally only grows).
    let mut reused: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut deposited: std::collections::BTreeMap<&str, u64> = Default::default();
    for day in &figures.days {
        *reused.entry(day.agency.as_str()).or_default() += day.documents_reused;
        *deposited.entry(day.agency.as_str()).or_default() += day.documents_deposited;
    }
    for (family, totals) in [(&metrics.reused, reused), (&metrics.deposited, deposited)] {
        for (agency, total) in totals {
            let counter = family.get_or_create(&AgencyLabels { agency: agency.to_owned() });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
        .map_err(|e| ApiError::internal(format!("encoding the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], text).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReuseQuery {
    /// First day, inclusive (Vietnam time).
    #[param(value_type = super::openapi::DateText, required = false)]
    from: Option<String>,
    /// Last day, inclusive.
    #[param(value_type = super::openapi::DateText, required = false)]
    to: Option<String>,
    /// Only this agency's figures.
    #[param(value_type = super::openapi::CodeText, required = false)]
    agency: Option<String>,
}

/// One agency's figures for one day.
#[derive(Serialize, ToSchema)]
pub(super) struct ReuseDayJson {
    #[schema(format = Date)]
    day: String,
    agency: String,
    /// Documents its officers read for a dossier (once per day, dossier and record).
    documents_reused: u64,
    /// Documents it deposited.
    documents_deposited: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ReuseTotalJson {
    documents_reused: u64,
    documents_deposited: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ReuseJson {
    days: Vec<ReuseDayJson>,
    total: ReuseTotalJson,
}

/// One day across all agencies: no person and no agency named.
#[derive(Serialize, ToSchema)]
pub(super) struct DailyJson {
    #[schema(format = Date)]
    day: String,
    documents_reused: u64,
    documents_deposited: u64,
    /// Agencies that reused at least one document that day.
    agencies_reusing: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct DailiesJson {
    days: Vec<DailyJson>,
}

/// The days between `from` and `to` (inclusive) a query asks for.
fn day_range(from: &Option<String>, to: &Option<String>) -> Result<(Option<Date>, Option<Date>), ApiError> {
    let parse = |name: &str, text: &Option<String>| {
        text.as_deref()
            .map(Date::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, format!("{name}: {e}")))
    };
    Ok((parse("from", from)?, parse("to", to)?))
}

/// `GET /v1/stats/reuse`: per day and agency, documents reused and deposited (auditors, admins).
#[utoipa::path(get, path = "/v1/stats/reuse", tag = "statistics",
    summary = "Reuse figures per day and agency, computed from the log: documents read by an agency's officers for a dossier (once per day, dossier and record) against documents it deposited",
    description = "Roles: auditor, admin.",
    params(ReuseQuery),
    responses(
        (status = 200, description = "the figures", body = ReuseJson),
        (status = 400, description = "malformed day, agency or query", body = super::openapi::ErrorBody),
        (status = 403, description = "not an auditor or admin", body = super::openapi::ErrorBody),
        super::openapi::SignedIn,
    ),
    security(("bearer" = [])))]
pub(super) async fn reuse(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ReuseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReuseJson>, ApiError> {
    if !matches!(principal.role, Role::Auditor | Role::Admin) {
        return Err(ApiError::forbidden(
            ErrorCode::Forbidden,
            "only auditors and admins may read the reuse figures per agency",
        ));
    }
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))?;
    let (from, to) = day_range(&query.from, &query.to)?;
    let agency = query
        .agency
        .as_deref()
        .map(|text| Code::parse("agency", text))
        .transpose()
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.to_string()))?;
    let figures = state.blocking(|vault| vault.log_figures()).await??;
    let days: Vec<_> = figures
        .days
        .into_iter()
        .filter(|d| from.is_none_or(|from| d.day >= from) && to.is_none_or(|to| d.day <= to))
        .filter(|d| agency.as_ref().is_none_or(|agency| &d.agency == agency))
        .collect();
    let (reused, deposited) =
        days.iter().fold((0, 0), |(r, d), day| (r + day.documents_reused, d + day.documents_deposited));
    let days = days
        .into_iter()
        .map(|d| ReuseDayJson {
            day: d.day.to_string(),
            agency: d.agency.as_str().to_owned(),
            documents_reused: d.documents_reused,
            documents_deposited: d.documents_deposited,
        })
        .collect();
    Ok(Json(ReuseJson { days, total: ReuseTotalJson { documents_reused: reused, documents_deposited: deposited } }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DailyQuery {
    /// First day, inclusive (Vietnam time).
    #[param(value_type = super::openapi::DateText, required = false)]
    from: Option<String>,
    /// Last day, inclusive.
    #[param(value_type = super::openapi::DateText, required = false)]
    to: Option<String>,
}

/// `GET /v1/stats/daily`: anyone; per day, the documents reused and deposited across all agencies and
/// how many agencies reused one. No person and no agency is named.
#[utoipa::path(get, path = "/v1/stats/daily", tag = "statistics",
    summary = "The public daily aggregate of the reuse figures: no person and no agency named",
    description = "Roles: anyone.",
    params(DailyQuery),
    responses(
        (status = 200, description = "the days", body = DailiesJson),
        (status = 400, description = "malformed day or query", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn daily(
    State(state): State<AppState>,
    query: Result<Query<DailyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DailiesJson>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))?;
    let (from, to) = day_range(&query.from, &query.to)?;
    let figures = state.blocking(|vault| vault.log_figures()).await??;
    let mut days: std::collections::BTreeMap<Date, (u64, u64, u64)> = Default::default();
    for day in figures.days {
        if from.is_some_and(|from| day.day < from) || to.is_some_and(|to| day.day > to) {
            continue;
        }
        let totals = days.entry(day.day).or_default();
        totals.0 += day.documents_reused;
        totals.1 += day.documents_deposited;
        totals.2 += u64::from(day.documents_reused > 0);
    }
    let days = days
        .into_iter()
        .map(|(day, (reused, deposited, agencies))| DailyJson {
            day: day.to_string(),
            documents_reused: reused,
            documents_deposited: deposited,
            agencies_reusing: agencies,
        })
        .collect();
    Ok(Json(DailiesJson { days }))
}

/// For requests no route matched: counted like the others.
pub(super) fn unmatched(metrics: &Metrics, method: &str, status: StatusCode) {
    let labels = RouteLabels { route: "(unmatched)".into(), method: method.to_owned(), status: status.as_u16() };
    metrics.requests.get_or_create(&labels).inc();
}
