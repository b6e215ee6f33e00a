//! My uploads: a person's own scans (self-uploaded, not legally valid), and asking an agency to
//! certify one as a copy of its original. The certification itself is the agency's, over the API.

use axum::extract::{DefaultBodyLimit, Multipart};

use super::*;
use crate::vault::{CertificationRequest, CERTIFICATION_REQUESTS_PER_RECORD_MAX, UPLOAD_SIZE_BYTES_MAX};

/// The largest upload form: the scan and a little room for the other fields and the multipart framing.
const UPLOAD_FORM_BYTES_MAX: usize = UPLOAD_SIZE_BYTES_MAX as usize + 64 * 1024;
/// Longest title of an upload, in characters.
const UPLOAD_TITLE_CHARS_MAX: usize = 200;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/uploads", get(uploads_page).post(upload).layer(DefaultBodyLimit::max(UPLOAD_FORM_BYTES_MAX)))
        .route("/uploads/{id}/certification", post(request_certification))
}

/// One upload in the list.
struct UploadRow {
    id: String,
    title: String,
    uploaded: String,
    status: &'static str,
    status_label: String,
    detail: String,
    /// "agency (date)" of each agency asked.
    requested: Vec<String>,
    /// The agencies it may still be sent to; empty once certified or at the limit.
    agencies: Vec<Choice>,
}

#[derive(Template)]
#[template(path = "uploads.html")]
struct UploadsPage {
    chrome: Chrome,
    rows: Vec<UploadRow>,
    title_max: usize,
    size_max: String,
}

async fn uploads_page(State(state): State<AppState>, ctx: Ctx) -> Response {
    let result = async {
        let (principal, owner) = ctx.owner()?;
        guard(&state, principal, Resource::OwnerRecords { owner: owner.clone() }, None, Ok(None), Ok(())).await?;
        let (uploads, agencies) = state
            .blocking(move |vault| {
                let mut uploads = Vec::new();
                for view in vault.list_owner(&owner, &ListFilter::default(), None, FILTER_OPTIONS_SCAN_MAX)?.records {
                    if view.record.body().is_self_upload() {
                        let requests = vault.certification_requests(&view.id())?;
                        uploads.push((view, requests));
                    }
                }
                let mut agencies: Vec<String> = vault
                    .certificates()?
                    .iter()
                    .filter(|c| c.revocation.is_none())
                    .map(|c| c.certificate.body().agency.to_string())
                    .collect();
                agencies.sort();
                agencies.dedup();
                Ok::<_, ApiError>((uploads, agencies))
            })
            .await??;
        let t = &ctx.t;
        let rows = uploads
            .iter()
            .map(|(view, requests): &(RecordView, Vec<CertificationRequest>)| {
                let status = view.status.kind().as_str();
                let open = matches!(view.status, Status::SelfUploaded)
                    && requests.len() < CERTIFICATION_REQUESTS_PER_RECORD_MAX;
                let asked = |agency: &String| requests.iter().any(|r| r.agency.as_str() == agency);
                UploadRow {
                    id: view.id().to_hex(),
                    title: view.record.body().title.to_string(),
                    uploaded: t.datetime(view.receipt.body().accepted_at_ms),
                    status,
                    status_label: status_label(t, status),
                    detail: status_detail(t, &view.status),
                    requested: requests
                        .iter()
                        .map(|r| format!("{} ({})", r.agency, t.datetime(r.requested_at_ms)))
                        .collect(),
                    agencies: if open {
                        choices(agencies.iter().filter(|a| !asked(a)).map(|a| (a.clone(), a.clone())), "")
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        html(&UploadsPage {
            chrome: ctx.chrome("page.uploads"),
            rows,
            title_max: UPLOAD_TITLE_CHARS_MAX,
            size_max: t.size(UPLOAD_SIZE_BYTES_MAX),
        })
    }
    .await;
    ctx.respond(result)
}

/// The upload form, in the order the page sends it: the CSRF token and the title before the file, so
/// that nothing is read into memory for a form that will be refused.
async fn upload(State(state): State<AppState>, ctx: Ctx, headers: HeaderMap, multipart: Multipart) -> Response {
    let result = async {
        let (_, owner) = ctx.owner()?;
        let (title, bytes) = read_upload_form(&ctx, &headers, multipart).await?;
        let size = bytes.len() as u64;
        let accepted = state.blocking(move |vault| vault.upload(&owner, title, &bytes[..])).await?.map_err(
            |error| match error {
                crate::vault::UploadError::NotAScan => {
                    PageError::show(StatusCode::UNSUPPORTED_MEDIA_TYPE, "error.not_a_scan")
                }
                crate::vault::UploadError::Empty => PageError::show(StatusCode::BAD_REQUEST, "error.not_a_scan"),
                crate::vault::UploadError::TooLarge => {
                    PageError::show(StatusCode::PAYLOAD_TOO_LARGE, "error.upload_too_large")
                }
                other => ApiError::from(other).into(),
            },
        )?;
        if accepted.newly_accepted {
            state.metrics().count_deposit(size);
        }
        Ok(back_to(&format!("/uploads#upload-{}", accepted.id)))
    }
    .await;
    ctx.respond(result)
}

async fn read_upload_form(
    ctx: &Ctx,
    headers: &HeaderMap,
    mut multipart: Multipart,
) -> Result<(Title, Vec<u8>), PageError> {
    let bad_form = |detail: String| PageError::Show { status: StatusCode::BAD_REQUEST, key: "error.generic", detail };
    let (mut csrf_checked, mut title) = (false, None);
    while let Some(mut field) = multipart.next_field().await.map_err(|e| bad_form(e.body_text()))? {
        match field.name().unwrap_or_default() {
            "csrf" => {
                let token = field.text().await.map_err(|e| bad_form(e.body_text()))?;
                ctx.check_form(headers, &token)?;
                csrf_checked = true;
            }
            "title" => {
                let text: String = field.text().await.map_err(|e| bad_form(e.body_text()))?;
                let text: String = text.trim().chars().take(UPLOAD_TITLE_CHARS_MAX).collect();
                title = Some(Title::parse(&text).map_err(|e| PageError::Show {
                    status: StatusCode::BAD_REQUEST,
                    key: "error.bad_title",
                    detail: e.to_string(),
                })?);
            }
            "file" => {
                if !csrf_checked {
                    return Err(PageError::show(StatusCode::FORBIDDEN, "error.csrf"));
                }
                let title = title.take().ok_or_else(|| PageError::show(StatusCode::BAD_REQUEST, "error.bad_title"))?;
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(|e| bad_form(e.body_text()))? {
                    if bytes.len() + chunk.len() > UPLOAD_SIZE_BYTES_MAX as usize {
                        return Err(PageError::show(StatusCode::PAYLOAD_TOO_LARGE, "error.upload_too_large"));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                return Ok((title, bytes));
            }
            _ => {}
        }
    }
    Err(if csrf_checked {
        PageError::show(StatusCode::BAD_REQUEST, "error.not_a_scan")
    } else {
        PageError::show(StatusCode::FORBIDDEN, "error.csrf")
    })
}

#[derive(Deserialize)]
struct CertificationForm {
    csrf: String,
    agency: String,
}

async fn request_certification(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Form<CertificationForm>,
) -> Response {
    let result = async {
        let (_, owner) = ctx.owner()?;
        ctx.check_form(&headers, &form.csrf)?;
        let record = parse_id(&id)?;
        let agency = Code::parse("agency", &form.agency).map_err(|e| PageError::Show {
            status: StatusCode::BAD_REQUEST,
            key: "error.generic",
            detail: e.to_string(),
        })?;
        state
            .blocking(move |vault| vault.request_certification(&owner, &record, &agency))
            .await?
            .map_err(ApiError::from)?;
        Ok(back_to(&format!("/uploads#upload-{record}")))
    }
    .await;
    ctx.respond(result)
}
