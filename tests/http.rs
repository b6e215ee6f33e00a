//! The HTTP API through `http::router`, without sockets: the whole role × endpoint matrix of
//! docs/SECURITY.md (denials included, and what each leaves in the owner's access log), every
//! documented bad input with its status and code and no change to the store, content headers, and the
//! OpenAPI document.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use common::*;
use http_body_util::BodyExt as _;
use kho::config::RateLimitConfig;
use kho::http::auth::Issuer;
use kho::http::auth::{mint, Audience, Claims};
use kho::http::jwks::KeySet;
use kho::http::{AppState, Authenticator, Limits, Role};
use kho::ids::{now_unix_ms, Digest, OwnerId, Title};
use kho::statement::{CertificateRevocation, RecordRevocation, SecretKey, Signed};
use serde_json::Value;
use tower::ServiceExt as _;

const IDP: &str = "https://id.test.gov.vn";
const PURPOSE: &str = "H26.99-240301-0001";

struct Api {
    _dir: tempfile::TempDir,
    anchor: SecretKey,
    issuer: SecretKey,
    other_issuer: SecretKey,
    state: AppState,
    app: Router,
    idp: SecretKey,
    record: Digest,
    content: Vec<u8>,
}

fn token_with(idp: &SecretKey, role: Role, adjust: impl FnOnce(&mut Claims)) -> String {
    let now = now_unix_ms() / 1000;
    let mut claims = Claims {
        iss: IDP.into(),
        aud: Audience::One("kho".into()),
        sub: format!("{}-1", role.as_str()),
        exp: now + 600,
        nbf: Some(now - 10),
        iat: Some(now - 10),
        role,
        agency: matches!(role, Role::Officer | Role::Issuer).then(|| AGENCY.to_owned()),
        owner: (role == Role::Citizen).then(|| OWNER.to_owned()),
    };
    adjust(&mut claims);
    mint(&claims, idp)
}

impl Api {
    fn new() -> Api {
        Api::with(|_| {})
    }

    /// A vault with two certified agencies and one deposited record of OWNER, served by the router.
    fn with(adjust: impl FnOnce(&mut kho::vault::VaultConfig)) -> Api {
        Api::build(adjust, RateLimitConfig::unlimited())
    }

    fn build(adjust: impl FnOnce(&mut kho::vault::VaultConfig), rate_limits: RateLimitConfig) -> Api {
        let fixture = fixture_with(adjust);
        let content = document(150_000, 9, true);
        let record = deposit(&fixture, &content);
        let Fixture { dir, anchor, issuer, other_issuer, vault, .. } = fixture;
        let idp = key(70);
        let provider = Issuer::new(IDP, "kho", KeySet::ed25519(&[idp.public_key()]));
        let auth = Authenticator::new(vec![provider]).with_leeway_seconds(0);
        let limits = Limits {
            statement_body_size_bytes_max: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 64,
            rate_limits,
        };
        let state = AppState::new(vault, auth, limits, Default::default());
        let app = kho::http::router(state.clone());
        Api { _dir: dir, anchor, issuer, other_issuer, state, app, idp, record, content }
    }

    fn token(&self, role: Role) -> String {
        token_with(&self.idp, role, |_| {})
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response =
            self.app.clone().oneshot(request.body(Body::from(body)).expect("request")).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
        Reply { status, headers, body }
    }

    fn state(&self) -> [u8; 32] {
        self.state.vault().state_digest().expect("state digest")
    }

    fn access_log(&self) -> Vec<(u64, kho::vault::AccessEvent)> {
        let owner = OwnerId::parse(OWNER).expect("owner");
        self.state.vault().access_log(&owner, None, 1000).expect("access log").entries
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").to_owned()
    }
}

/// The callers of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    CitizenOwner,
    CitizenOther,
    OfficerWithPurpose,
    OfficerWithout,
    IssuerOwnAgency,
    IssuerOtherAgency,
    Auditor,
    AuditorWithPurpose,
    Admin,
}

const CALLERS: [Caller; 10] = [
    Caller::Anonymous,
    Caller::CitizenOwner,
    Caller::CitizenOther,
    Caller::OfficerWithPurpose,
    Caller::OfficerWithout,
    Caller::IssuerOwnAgency,
    Caller::IssuerOtherAgency,
    Caller::Auditor,
    Caller::AuditorWithPurpose,
    Caller::Admin,
];

impl Caller {
    fn token(self, api: &Api) -> Option<String> {
        let idp = &api.idp;
        Some(match self {
            Caller::Anonymous => return None,
            Caller::CitizenOwner => token_with(idp, Role::Citizen, |_| {}),
            Caller::CitizenOther => token_with(idp, Role::Citizen, |c| c.owner = Some(OTHER_OWNER.into())),
            Caller::OfficerWithPurpose | Caller::OfficerWithout => token_with(idp, Role::Officer, |_| {}),
            Caller::IssuerOwnAgency => token_with(idp, Role::Issuer, |_| {}),
            Caller::IssuerOtherAgency => token_with(idp, Role::Issuer, |c| c.agency = Some(OTHER_AGENCY.into())),
            Caller::Auditor | Caller::AuditorWithPurpose => token_with(idp, Role::Auditor, |_| {}),
            Caller::Admin => token_with(idp, Role::Admin, |_| {}),
        })
    }

    fn purpose(self) -> bool {
        matches!(self, Caller::OfficerWithPurpose | Caller::AuditorWithPurpose)
    }

    /// Whether this caller's reads of OWNER's documents are logged (everyone identified but the owner).
    fn logged(self) -> bool {
        !matches!(self, Caller::Anonymous | Caller::CitizenOwner)
    }
}

/// Expected status per caller, in CALLERS order.
type Row = [u16; 10];
type Headers<'a> = &'a [(&'a str, &'a str)];
/// A write: name, URI, body, headers, expected statuses.
type Write<'a> = (&'a str, &'a str, Vec<u8>, Headers<'a>, Row);
/// A bad read: method, URI, headers, status, code.
type BadRead<'a> = (&'a str, String, Headers<'a>, u16, &'a str);

#[tokio::test]
async fn the_role_matrix_of_security_md_holds_for_every_endpoint() {
    let api = Api::new();
    let id = api.record.to_hex();
    let reads: [(&str, String, Row); 6] = [
        //                                          anon own other off+p off  iss  iss2 aud  aud+p adm
        ("GET record", format!("/v1/records/{id}"), [401, 200, 403, 200, 403, 200, 403, 200, 200, 403]),
        ("GET content", format!("/v1/records/{id}/content"), [401, 200, 403, 200, 403, 403, 403, 403, 200, 403]),
        (
            "GET owner records",
            format!("/v1/owners/{OWNER}/records"),
            [401, 200, 403, 200, 403, 403, 403, 200, 200, 403],
        ),
        ("GET record bundle", format!("/v1/records/{id}/bundle"), [401, 200, 403, 200, 403, 403, 403, 403, 200, 403]),
        ("GET store export", format!("/v1/owners/{OWNER}/export"), [401, 200, 403, 403, 403, 403, 403, 403, 200, 403]),
        (
            "GET certification requests",
            format!("/v1/agencies/{AGENCY}/certification-requests?owner={OWNER}"),
            [401, 200, 403, 200, 200, 200, 403, 200, 200, 403],
        ),
    ];
    let before = api.access_log().len();
    let mut logged = 0;
    for (name, uri, row) in &reads {
        for (caller, expected) in CALLERS.iter().zip(row) {
            let token = caller.token(&api);
            let headers: &[(&str, &str)] = if caller.purpose() { &[("kho-purpose", PURPOSE)] } else { &[] };
            let reply = api.call("GET", uri, token.as_deref(), headers, Vec::new()).await;
            assert_eq!(
                reply.status.as_u16(),
                *expected,
                "{name} as {caller:?}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            if reply.status == StatusCode::FORBIDDEN {
                assert!(!reply.code().is_empty(), "{name} as {caller:?}: denials carry a code");
            }
            logged += usize::from(caller.logged());
        }
    }
    // Every look by someone other than the owner, allowed or denied, is in the owner's access log.
    let log = api.access_log();
    assert_eq!(log.len() - before, logged);
    assert!(log.iter().any(|(_, e)| e.role == "officer"
        && matches!(e.outcome, kho::vault::AccessOutcome::Denied { ref reason } if reason == "purpose_required")));
    assert!(log.iter().any(|(_, e)| e.role == "officer"
        && e.purpose.as_ref().map(|p| p.as_str()) == Some(PURPOSE)
        && e.outcome == kho::vault::AccessOutcome::Allowed
        && e.action == kho::vault::AccessAction::ReadContent));

    // Metadata everyone authenticated may read; the access log only its owner.
    let everyone: [(&str, String, Row); 4] = [
        ("GET certificates", "/v1/certificates".into(), [401, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
        ("GET trust anchors", "/v1/trust-anchors".into(), [401, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
        (
            "GET access log",
            format!("/v1/owners/{OWNER}/access-log"),
            [401, 200, 403, 403, 403, 403, 403, 403, 403, 403],
        ),
        (
            "GET owner's log entries",
            format!("/v1/owners/{OWNER}/log-entries"),
            [401, 200, 403, 403, 403, 403, 403, 403, 403, 403],
        ),
    ];
    for (name, uri, row) in &everyone {
        for (caller, expected) in CALLERS.iter().zip(row) {
            let reply = api.call("GET", uri, caller.token(&api).as_deref(), &[], Vec::new()).await;
            assert_eq!(reply.status.as_u16(), *expected, "{name} as {caller:?}");
        }
    }
    for uri in ["/healthz", "/readyz", "/v1/openapi.json"] {
        assert_eq!(api.call("GET", uri, None, &[], Vec::new()).await.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn only_issuers_and_admins_write_and_denied_writes_change_nothing() {
    let api = Api::new();
    let content = document(20_000, 77, false);
    let envelope = sign(record_for(&content, OWNER, AGENCY), &api.issuer);
    let header = base64::engine::general_purpose::STANDARD.encode(&envelope);
    let new_issuer = key(80);
    let certificate = current_certificate(&api.anchor, AGENCY, &new_issuer);
    let revoke_record = Signed::sign(
        RecordRevocation {
            record: api.record,
            issuer_agency: code(AGENCY),
            reason: Title::parse("issued in error").expect("reason"),
            signed_at_ms: now_unix_ms(),
        },
        &api.issuer,
    )
    .to_envelope();
    let certificate_id = Signed::<kho::statement::KeyCertificate>::from_envelope(&certificate).expect("cert").id();
    let revoke_certificate = Signed::sign(
        CertificateRevocation {
            certificate: certificate_id,
            reason: Title::parse("rotated").expect("r"),
            signed_at_ms: 0,
        },
        &api.anchor,
    )
    .to_envelope();
    let record_uri = format!("/v1/records/{}/revocation", api.record);
    let certificate_uri = format!("/v1/certificates/{certificate_id}/revocation");
    // Not a signed PDF: an issuer of any agency (depositing for its own) gets the signature's reason.
    let signed_document = format!("/v1/signed-documents?owner={OWNER}&document_type=GKS&title=x&procedure=p&dossier=d");
    let writes: [Write; 5] = [
        //                                                     anon own other off+p off  iss  iss2 aud  aud+p adm
        (
            "deposit signed document",
            signed_document.as_str(),
            b"%PDF-1.7\nunsigned\n%%EOF\n".to_vec(),
            &[],
            [401, 403, 403, 403, 403, 422, 422, 403, 403, 403],
        ),
        (
            "deposit",
            "/v1/records",
            content.clone(),
            &[("kho-record", header.as_str())],
            [401, 403, 403, 403, 403, 201, 403, 403, 403, 403],
        ),
        ("revoke record", record_uri.as_str(), revoke_record, &[], [401, 403, 403, 403, 403, 201, 403, 403, 403, 403]),
        ("add certificate", "/v1/certificates", certificate, &[], [401, 403, 403, 403, 403, 403, 403, 403, 403, 201]),
        (
            "revoke certificate",
            certificate_uri.as_str(),
            revoke_certificate,
            &[],
            [401, 403, 403, 403, 403, 403, 403, 403, 403, 201],
        ),
    ];
    for (name, uri, body, headers, row) in &writes {
        for (caller, expected) in CALLERS.iter().zip(row) {
            let before = api.state();
            let reply = api.call("POST", uri, caller.token(&api).as_deref(), headers, body.clone()).await;
            assert_eq!(
                reply.status.as_u16(),
                *expected,
                "{name} as {caller:?}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            if reply.status.is_client_error() {
                assert_eq!(api.state(), before, "{name} as {caller:?} was refused but changed the store");
            }
        }
    }
    // The deposit landed, and the record revocation shows in its status.
    let view =
        api.call("GET", &format!("/v1/records/{}", api.record), Some(&api.token(Role::Auditor)), &[], Vec::new()).await;
    assert_eq!(view.json()["status"]["status"], "revoked");
    // The revocations themselves come back verbatim with their receipts, so a reader checks them.
    let b64 = |value: &Value| {
        base64::engine::general_purpose::STANDARD.decode(value.as_str().expect("base64 text")).expect("base64")
    };
    let status = &view.json()["status"];
    let revocation = Signed::<RecordRevocation>::from_envelope(&b64(&status["revocation_envelope_base64"]))
        .expect("the signed revocation");
    assert_eq!(revocation.id().to_hex(), status["revocation"]);
    assert_eq!(revocation.body().record, api.record);
    let receipt = Signed::<kho::statement::Receipt>::from_envelope(&b64(&status["revocation_receipt_envelope_base64"]))
        .expect("its receipt");
    assert_eq!((receipt.body().statement, receipt.signer()), (revocation.id(), &api.state.vault().public_key()));
    let certificates = api.call("GET", "/v1/certificates", Some(&api.token(Role::Auditor)), &[], Vec::new()).await;
    let revoked: Vec<Value> = certificates.json()["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| !c["revoked"].is_null())
        .map(|c| c["revoked"].clone())
        .collect();
    assert_eq!(revoked.len(), 1);
    let revocation = Signed::<CertificateRevocation>::from_envelope(&b64(&revoked[0]["envelope_base64"]))
        .expect("the signed certificate revocation");
    assert_eq!(revocation.body().certificate, certificate_id);
    assert_eq!(revoked[0]["receipt"]["statement"], revocation.id().to_hex());
}

#[tokio::test]
async fn bad_tokens_get_401_with_their_code() {
    let api = Api::new();
    let uri = "/v1/certificates";
    let cases: Vec<(String, &str)> = vec![
        (token_with(&api.idp, Role::Auditor, |c| c.exp = now_unix_ms() / 1000 - 60), "token_expired"),
        (token_with(&api.idp, Role::Auditor, |c| c.nbf = Some(now_unix_ms() / 1000 + 600)), "token_not_yet_valid"),
        (token_with(&api.idp, Role::Auditor, |c| c.aud = Audience::One("portal".into())), "wrong_audience"),
        (token_with(&api.idp, Role::Auditor, |c| c.iss = "https://other.idp".into()), "wrong_issuer"),
        (token_with(&key(71), Role::Auditor, |_| {}), "invalid_token"),
        (token_with(&api.idp, Role::Officer, |c| c.agency = None), "invalid_claims"),
        ("garbage".into(), "invalid_token"),
    ];
    for (token, code) in cases {
        let reply = api.call("GET", uri, Some(&token), &[], Vec::new()).await;
        assert_eq!((reply.status, reply.code().as_str()), (StatusCode::UNAUTHORIZED, code));
    }
    let reply = api.call("GET", uri, None, &[], Vec::new()).await;
    assert_eq!((reply.status, reply.code().as_str()), (StatusCode::UNAUTHORIZED, "missing_token"));
}

#[tokio::test]
async fn bad_inputs_get_their_documented_status_and_code_and_change_nothing() {
    let api = Api::with(|config| config.document_size_bytes_max = 200_000);
    let officer = api.token(Role::Officer);
    let issuer = api.token(Role::Issuer);
    let purpose: &[(&str, &str)] = &[("kho-purpose", PURPOSE)];
    let id = api.record.to_hex();
    let cases: Vec<BadRead> = vec![
        ("GET", "/v1/records/xyz".into(), purpose, 400, "invalid_record_id"),
        ("GET", format!("/v1/records/{}", "ab".repeat(32)), purpose, 404, "record_not_found"),
        ("GET", "/v1/owners/12345/records".into(), purpose, 400, "invalid_owner_id"),
        ("GET", format!("/v1/owners/{OWNER}/records?limit=0"), purpose, 400, "invalid_page_size"),
        ("GET", format!("/v1/owners/{OWNER}/records?limit=5000"), purpose, 400, "invalid_page_size"),
        ("GET", format!("/v1/owners/{OWNER}/records?cursor=zz"), purpose, 400, "invalid_cursor"),
        ("GET", format!("/v1/owners/{OWNER}/records?colour=red"), purpose, 400, "invalid_query"),
        ("GET", format!("/v1/owners/{OWNER}/records?status=lost"), purpose, 400, "invalid_query"),
        ("GET", format!("/v1/records/{id}"), &[("kho-purpose", "not a code!")], 400, "invalid_purpose"),
        ("GET", "/v1/nothing-here".into(), purpose, 404, "not_found"),
        ("DELETE", format!("/v1/records/{id}"), purpose, 405, "method_not_allowed"),
    ];
    // A malformed request that names a valid owner or an existing record is an attempt at that
    // person's data: it is in their access log, denied with its error code. Only requests naming no valid
    // owner or record cannot be attributed, and write nothing.
    let unattributable =
        ["invalid_record_id", "record_not_found", "invalid_owner_id", "not_found", "method_not_allowed"];
    for (method, uri, headers, status, code) in cases {
        let (state, logged) = (api.state(), api.access_log().len());
        let reply = api.call(method, &uri, Some(&officer), headers, Vec::new()).await;
        assert_eq!((reply.status.as_u16(), reply.code().as_str()), (status, code), "{method} {uri}");
        assert!(!reply.json()["error"]["message"].as_str().unwrap_or("").is_empty());
        if unattributable.contains(&code) {
            assert_eq!(api.state(), state, "{method} {uri} names no one and must write nothing");
        } else {
            let log = api.access_log();
            assert_eq!(log.len(), logged + 1, "{method} {uri} is an attempt at {OWNER}'s data");
            assert!(
                matches!(&log[0].1.outcome, kho::vault::AccessOutcome::Denied { reason } if reason == code),
                "{method} {uri}: {:?}",
                log[0].1
            );
        }
    }

    // Deposits: each bad upload is refused with its code and leaves the store as it was.
    let content = document(100_000, 5, false);
    let good = sign(record_for(&content, OWNER, AGENCY), &api.issuer);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let good_header = b64(&good);
    let mut altered = content.clone();
    altered[500] ^= 1;
    let big = document(200_001, 6, false);
    let big_header = b64(&sign(record_for(&big, OWNER, AGENCY), &api.issuer));
    let other_agency = b64(&sign(record_for(&content, OWNER, OTHER_AGENCY), &api.other_issuer));
    let mut bad_signature = good.clone();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    let bad_signature = b64(&bad_signature);
    let untrusted = b64(&sign(record_for(&content, OWNER, AGENCY), &key(90)));
    let deposits: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (None, content.clone(), 400, "missing_record"),
        (Some("%%%"), content.clone(), 400, "malformed_record"),
        (Some(&bad_signature), content.clone(), 400, "bad_signature"),
        (Some(&untrusted), content.clone(), 422, "key_not_certified"),
        (Some(&good_header), content[..99_000].to_vec(), 400, "content_truncated"),
        (Some(&good_header), [content.clone(), vec![0]].concat(), 413, "content_too_long"),
        (Some(&good_header), altered, 422, "content_hash_mismatch"),
        (Some(&big_header), big, 413, "document_too_large"),
        (Some(&other_agency), content.clone(), 403, "other_agency"),
    ];
    for (record_header, body, status, code) in deposits {
        let before = api.state();
        let headers: Vec<(&str, &str)> = record_header.map(|h| ("kho-record", h)).into_iter().collect();
        let reply = api.call("POST", "/v1/records", Some(&issuer), &headers, body).await;
        assert_eq!((reply.status.as_u16(), reply.code().as_str()), (status, code));
        assert_eq!(api.state(), before, "{code} changed the store");
    }
    // Statement bodies have their own limit.
    let admin = api.token(Role::Admin);
    let reply = api.call("POST", "/v1/certificates", Some(&admin), &[], vec![0; 64 * 1024 + 1]).await;
    assert_eq!((reply.status.as_u16(), reply.code().as_str()), (413, "body_too_large"));
    let reply = api.call("POST", "/v1/certificates", Some(&admin), &[], b"garbage".to_vec()).await;
    assert_eq!((reply.status.as_u16(), reply.code().as_str()), (400, "malformed_certificate"));
    // And the good deposit still goes through afterwards, once.
    let reply = api.call("POST", "/v1/records", Some(&issuer), &[("kho-record", &good_header)], content.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = api.call("POST", "/v1/records", Some(&issuer), &[("kho-record", &good_header)], content).await;
    assert_eq!(reply.status, StatusCode::OK, "a repeated deposit returns the earlier receipt");
}

#[tokio::test]
async fn content_has_etag_type_length_and_ranges() {
    let api = Api::new();
    let citizen = api.token(Role::Citizen);
    let uri = format!("/v1/records/{}/content", api.record);
    let whole = api.call("GET", &uri, Some(&citizen), &[], Vec::new()).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body, api.content);
    let etag = whole.headers["etag"].to_str().expect("etag").to_owned();
    assert_eq!(etag, format!("\"{}\"", Digest(*blake3::hash(&api.content).as_bytes())));
    assert_eq!(whole.headers["content-type"], "application/pdf");
    assert_eq!(whole.headers["content-length"], api.content.len().to_string().as_str());
    assert_eq!(whole.headers["accept-ranges"], "bytes");

    let part = api.call("GET", &uri, Some(&citizen), &[("range", "bytes=65530-65545")], Vec::new()).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, &api.content[65530..65546]);
    assert_eq!(part.headers["content-range"], format!("bytes 65530-65545/{}", api.content.len()).as_str());
    let tail = api.call("GET", &uri, Some(&citizen), &[("range", "bytes=-10")], Vec::new()).await;
    assert_eq!(tail.body, &api.content[api.content.len() - 10..]);

    let beyond = api.call("GET", &uri, Some(&citizen), &[("range", "bytes=999999-")], Vec::new()).await;
    assert_eq!((beyond.status.as_u16(), beyond.code().as_str()), (416, "range_not_satisfiable"));
    assert_eq!(beyond.headers["content-range"], format!("bytes */{}", api.content.len()).as_str());

    let cached = api.call("GET", &uri, Some(&citizen), &[("if-none-match", &etag)], Vec::new()).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.body.is_empty());
}

/// A document damaged on disk, read through the API: damage within the first pieces a read takes before
/// answering is a clean 500 `integrity_error`; damage further on aborts the body after the headers, so
/// the client sees an incomplete response and never wrong bytes. The read was logged either way.
#[tokio::test]
async fn damaged_content_is_a_clean_500_before_the_headers_and_an_aborted_body_after() {
    let api = Api::new();
    // Ten frames of incompressible bytes, stored raw so that they can be found on disk.
    let content = document(10 * 65_536, 31, false);
    let envelope = sign(record_for(&content, OWNER, AGENCY), &api.issuer);
    let record = api.state.vault().deposit(&envelope, content.as_slice()).expect("deposit").id;
    let officer = api.token(Role::Officer);
    let uri = format!("/v1/records/{record}/content");
    let read = |range: Option<&'static str>| {
        let mut request = Request::builder()
            .uri(&uri)
            .header("authorization", format!("Bearer {officer}"))
            .header(kho::http::PURPOSE_HEADER, PURPOSE);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let app = api.app.clone();
        async move {
            let response = app.oneshot(request.body(Body::empty()).expect("request")).await.expect("infallible");
            let status = response.status();
            (status, response.into_body().collect().await.map(|body| body.to_bytes().to_vec()))
        }
    };
    let (status, body) = read(None).await;
    assert_eq!((status, body.expect("whole body")), (StatusCode::OK, content.clone()));
    let (status, body) = read(Some("bytes=300000-")).await;
    assert_eq!((status, body.expect("range body")), (StatusCode::PARTIAL_CONTENT, content[300_000..].to_vec()));

    // Damage in frame 8, past the first pieces: the headers are out, so the body is cut off.
    assert_eq!(flip_on_disk(api._dir.path(), &content[8 * 65_536 + 100..8 * 65_536 + 164]), 1);
    let logged = api.access_log().len();
    let (status, body) = read(None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_err(), "a damaged frame after the headers aborts the body");
    assert_eq!(api.access_log().len(), logged + 1, "the read was logged before any byte left");
    // A range that avoids it still reads.
    let (status, body) = read(Some("bytes=0-999")).await;
    assert_eq!((status, body.expect("range body")), (StatusCode::PARTIAL_CONTENT, content[..1000].to_vec()));

    // Damage in frame 1, among the first pieces: a clean 500 before any header of success.
    assert_eq!(flip_on_disk(api._dir.path(), &content[65_536 + 100..65_536 + 164]), 1);
    let (status, body) = read(None).await;
    let body: Value = serde_json::from_slice(&body.expect("an error body")).expect("json");
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("integrity_error")));
    assert_eq!(api.access_log().len(), logged + 3);
}

/// A download past its first pieces reads each further frame where the response is written when the
/// engine has it at hand, and on a blocking thread when not. On an engine that never has a frame at
/// hand (the fault wrapper answers as one that cannot tell), every such frame takes the blocking way,
/// and the whole document and a range still arrive exactly.
#[tokio::test]
async fn a_download_reads_frames_not_at_hand_on_a_blocking_thread() {
    use_engine(Engine::FaultWrapped);
    let api = Api::new();
    let content = document(10 * 65_536 + 123, 32, false);
    let envelope = sign(record_for(&content, OWNER, AGENCY), &api.issuer);
    let record = api.state.vault().deposit(&envelope, content.as_slice()).expect("deposit").id;
    let citizen = api.token(Role::Citizen);
    let uri = format!("/v1/records/{record}/content");
    let whole = api.call("GET", &uri, Some(&citizen), &[], Vec::new()).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body == content, "the whole document, {} bytes read", whole.body.len());
    let part = api.call("GET", &uri, Some(&citizen), &[("range", "bytes=100000-")], Vec::new()).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert!(part.body == content[100_000..], "the range, {} bytes read", part.body.len());
}

/// A deposit whose body is still arriving holds none of the store threads. The server's runtime keeps
/// one blocking thread here (`serve` keeps `store_threads`): while the deposit waits for the rest of its
/// body, an officer's logged read of the owner's content is served, its access entry made durable, and
/// the deposit then completes.
#[test]
fn a_deposit_waiting_for_its_body_holds_no_store_thread() {
    use futures_util::StreamExt as _;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let api = Api::new();
    let content = document(200_000, 41, true);
    let header =
        base64::engine::general_purpose::STANDARD.encode(sign(record_for(&content, OWNER, AGENCY), &api.issuer));
    let (first, rest) = content.split_at(100_000);
    let (first, rest) = (axum::body::Bytes::copy_from_slice(first), axum::body::Bytes::copy_from_slice(rest));
    let (waiting, until_waiting) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async move {
            let _ = waiting.send(());
            let _ = released.await;
            Ok(rest)
        }),
    );
    let request = Request::builder()
        .method("POST")
        .uri("/v1/records")
        .header("authorization", format!("Bearer {}", api.token(Role::Issuer)))
        .header("kho-record", header)
        .body(Body::from_stream(body))
        .expect("request");
    let entries_before = api.access_log().len();
    runtime.block_on(async {
        let deposit = tokio::spawn(api.app.clone().oneshot(request));
        until_waiting.await.expect("the deposit took its first piece and waits for the next");
        let uri = format!("/v1/records/{}/content", api.record);
        let officer = api.token(Role::Officer);
        let read = api.call("GET", &uri, Some(&officer), &[("kho-purpose", PURPOSE)], Vec::new());
        let read = tokio::time::timeout(Duration::from_secs(20), read).await.expect("a read while the deposit waits");
        assert_eq!(read.status, StatusCode::OK);
        assert!(read.body == api.content, "the document, {} bytes", read.body.len());
        release.send(()).expect("the deposit still waits");
        let deposited = deposit.await.expect("the deposit's task").expect("infallible");
        assert_eq!(deposited.status(), StatusCode::CREATED);
    });
    assert_eq!(api.access_log().len(), entries_before + 1, "the read's access entry");
}

/// The log as a tlog client sees it: the checkpoint verifies under the vault key, the hash tiles hold
/// the leaf hashes, proofs verify against the served checkpoint, and entry bundles (which name people)
/// go only to auditors who state a purpose.
#[tokio::test]
async fn the_log_is_served_as_checkpoint_tiles_and_proofs_and_entries_only_to_auditors_with_a_purpose() {
    use kho::log::{self, checkpoint, Entry};
    let api = Api::new();
    let none = api.call("GET", "/v1/log/checkpoint", None, &[], Vec::new()).await;
    assert_eq!((none.status.as_u16(), none.code().as_str()), (404, "no_checkpoint"));
    let uncertified = api.call("GET", "/v1/vault-certificate", None, &[], Vec::new()).await;
    assert_eq!((uncertified.status.as_u16(), uncertified.code().as_str()), (404, "no_vault_certificate"));
    let keys = api.call("GET", "/v1/vault-keys", None, &[], Vec::new()).await;
    assert_eq!(keys.status, StatusCode::OK, "public, like the checkpoints");
    let keys = keys.json();
    let vault_key = api.state.vault().public_key();
    assert_eq!(keys["origin"], api.state.vault().log_origin());
    assert_eq!(keys["current"]["key"]["public_key_hex"], hex::encode(vault_key.raw_bytes()));
    assert_eq!(keys["current"]["verifier_key"], checkpoint::verifier_key(api.state.vault().log_origin(), &vault_key));
    assert_eq!(keys["retired"], serde_json::json!([]), "a vault that never rotated lists no earlier key");
    let signed = api.state.vault().sign_checkpoint().expect("sign").expect("checkpoint");
    let size = signed.checkpoint.size;
    assert_eq!(size, 4, "two certificates, a record, and the owner-map commitment signed before it");

    let note = api.call("GET", "/v1/log/checkpoint", None, &[], Vec::new()).await;
    assert_eq!(note.status, StatusCode::OK);
    let text = String::from_utf8(note.body.clone()).expect("text");
    let opened = checkpoint::open(&text, api.state.vault().log_origin(), &api.state.vault().public_key());
    assert_eq!(opened, Ok(signed.checkpoint.clone()));

    let tile = api.call("GET", "/v1/log/tile/0/000.p/4", None, &[], Vec::new()).await;
    assert_eq!((tile.status, tile.body.len()), (StatusCode::OK, 4 * 32));
    for bad in ["/v1/log/tile/0/000", "/v1/log/tile/0/000.p/5", "/v1/log/tile/1/000.p/1", "/v1/log/tile/0/0"] {
        let reply = api.call("GET", bad, None, &[], Vec::new()).await;
        assert_eq!((reply.status.as_u16(), reply.code().as_str()), (404, "no_such_tile"), "{bad}");
    }

    let mut leaves = log::MemoryTree::new();
    for i in 0..4 {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&tile.body[i * 32..(i + 1) * 32]);
        leaves.push(hash);
    }
    assert_eq!(leaves.root(size), signed.checkpoint.root, "the tiles rebuild the signed root");

    let proof = api.call("GET", "/v1/log/proof/inclusion?index=2", None, &[], Vec::new()).await.json();
    let hashes: Vec<[u8; 32]> = proof["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|h| hex::decode(h.as_str().expect("hex")).expect("hex").try_into().expect("32 bytes"))
        .collect();
    let leaf: [u8; 32] = hex::decode(proof["leaf_hash"].as_str().expect("leaf")).expect("hex").try_into().expect("32");
    log::verify_inclusion(2, size, &leaf, &hashes, &signed.checkpoint.root).expect("the served proof verifies");
    let beyond = api.call("GET", "/v1/log/proof/inclusion?index=4", None, &[], Vec::new()).await;
    assert_eq!((beyond.status.as_u16(), beyond.code().as_str()), (404, "not_in_checkpoint"));
    let malformed = api.call("GET", "/v1/log/proof/inclusion?index=x", None, &[], Vec::new()).await;
    assert_eq!((malformed.status.as_u16(), malformed.code().as_str()), (400, "invalid_query"));
    let consistency = api.call("GET", "/v1/log/proof/consistency?old=4", None, &[], Vec::new()).await;
    assert_eq!(consistency.status, StatusCode::OK);

    let entries = "/v1/log/tile/entries/000.p/4";
    let anonymous = api.call("GET", entries, None, &[], Vec::new()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    for role in [Role::Citizen, Role::Officer, Role::Issuer, Role::Admin] {
        let reply = api.call("GET", entries, Some(&api.token(role)), &[("kho-purpose", PURPOSE)], Vec::new()).await;
        assert_eq!((reply.status.as_u16(), reply.code().as_str()), (403, "forbidden"), "{role:?}");
    }
    let auditor = api.token(Role::Auditor);
    let no_purpose = api.call("GET", entries, Some(&auditor), &[], Vec::new()).await;
    assert_eq!((no_purpose.status.as_u16(), no_purpose.code().as_str()), (403, "purpose_required"));
    let bundle = api.call("GET", entries, Some(&auditor), &[("kho-purpose", PURPOSE)], Vec::new()).await;
    assert_eq!(bundle.status, StatusCode::OK);
    let mut rest = bundle.body.as_slice();
    let mut index = 0;
    while !rest.is_empty() {
        let length = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let bytes = &rest[2..2 + length];
        Entry::decode(bytes).expect("an entry");
        assert_eq!(&tile.body[index as usize * 32..(index as usize + 1) * 32], &log::leaf_hash(bytes)[..]);
        rest = &rest[2 + length..];
        index += 1;
    }
    assert_eq!(index, 4);
}

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_one_and_describes_every_route() {
    let api = Api::new();
    let served = api.call("GET", "/v1/openapi.json", None, &[], Vec::new()).await.json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let checked_in: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json")).expect("json");
    assert_eq!(served, checked_in, "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`");
    let routes = [
        ("post", "/v1/records"),
        ("post", "/v1/signed-documents"),
        ("get", "/v1/records/{id}"),
        ("get", "/v1/records/{id}/content"),
        ("post", "/v1/records/{id}/revocation"),
        ("get", "/v1/owners/{owner}/records"),
        ("get", "/v1/owners/{owner}/access-log"),
        ("get", "/v1/owners/{owner}/log-entries"),
        ("get", "/v1/owners/{owner}/export"),
        ("get", "/v1/records/{id}/bundle"),
        ("get", "/v1/agencies/{agency}/certification-requests"),
        ("post", "/v1/certifications"),
        ("get", "/v1/certificates"),
        ("post", "/v1/certificates"),
        ("post", "/v1/certificates/{id}/revocation"),
        ("get", "/v1/trust-anchors"),
        ("get", "/v1/vault-certificate"),
        ("get", "/v1/vault-keys"),
        ("get", "/v1/log/checkpoint"),
        ("get", "/v1/log/tile/{level}/{index}"),
        ("get", "/v1/log/tile/entries/{index}"),
        ("get", "/v1/log/proof/inclusion"),
        ("get", "/v1/stats/reuse"),
        ("get", "/v1/stats/daily"),
        ("get", "/metrics"),
        ("get", "/v1/log/proof/consistency"),
        ("get", "/v1/openapi.json"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ];
    for (method, route) in routes {
        let operation = &served["paths"][route][method];
        assert!(operation.is_object(), "{method} {route} is not described");
        for status in ["408", "431", "500"] {
            let body = &operation["responses"][status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(body, "#/components/schemas/ErrorBody", "{method} {route} does not describe its {status}");
        }
    }
    assert_eq!(
        kho::http::openapi::operations().len(),
        routes.len(),
        "the document describes a route the test does not know"
    );
}

/// Regression: a bad `Kho-Purpose` (or any other malformed part of a request about a known person)
/// left no access entry, so the owner never saw the attempt; an attempt at someone else's access log
/// was not logged either. And a subject that hides or reorders text must not reach anyone's log.
#[tokio::test]
async fn every_attributable_attempt_is_logged_and_deceptive_subjects_are_refused_at_sign_in() {
    let api = Api::new();
    let officer = api.token(Role::Officer);
    let uri = format!("/v1/records/{}/content", api.record);
    let before = api.access_log().len();
    let reply = api.call("GET", &uri, Some(&officer), &[("kho-purpose", "not a code!")], Vec::new()).await;
    assert_eq!((reply.status.as_u16(), reply.code().as_str()), (400, "invalid_purpose"));
    let log = api.access_log();
    assert_eq!(log.len(), before + 1);
    assert_eq!(log[0].1.action, kho::vault::AccessAction::ReadContent);
    assert!(matches!(&log[0].1.outcome, kho::vault::AccessOutcome::Denied { reason } if reason == "invalid_purpose"));

    let other_citizen = token_with(&api.idp, Role::Citizen, |c| c.owner = Some(OTHER_OWNER.into()));
    for token in [&officer, &api.token(Role::Auditor), &other_citizen] {
        let reply = api.call("GET", &format!("/v1/owners/{OWNER}/access-log"), Some(token), &[], Vec::new()).await;
        assert_eq!((reply.status.as_u16(), reply.code().as_str()), (403, "not_your_store"));
    }
    let log = api.access_log();
    assert_eq!(log.len(), before + 4);
    assert!(log[..3].iter().all(|(_, e)| e.action == kho::vault::AccessAction::ReadAccessLog));

    for subject in ["alice\u{202E}gnp.exe", "bob\u{200B}", "carol\u{2066}x\u{2069}", "dan\u{FEFF}", "eve\u{0007}"] {
        let token = token_with(&api.idp, Role::Officer, |c| c.sub = subject.into());
        let reply = api.call("GET", &uri, Some(&token), &[("kho-purpose", PURPOSE)], Vec::new()).await;
        assert_eq!((reply.status.as_u16(), reply.code().as_str()), (401, "invalid_claims"), "{subject:?}");
    }
    assert_eq!(api.access_log().len(), before + 4, "a refused sign-in writes nothing into anyone's log");
    let accented = token_with(&api.idp, Role::Officer, |c| c.sub = "Nguyễn Văn An".into());
    let reply = api.call("GET", &uri, Some(&accented), &[("kho-purpose", PURPOSE)], Vec::new()).await;
    assert_eq!(reply.status, StatusCode::OK, "Vietnamese names are fine");
}

/// Regression: an `owner` claim on a token of another role made that caller's reads of the owner's
/// documents go unlogged, as if the owner were reading.
#[tokio::test]
async fn an_owner_claim_on_an_officer_token_does_not_hide_its_reads() {
    let api = Api::new();
    let officer = token_with(&api.idp, Role::Officer, |c| c.owner = Some(OWNER.into()));
    let before = api.access_log().len();
    let reply = api
        .call("GET", &format!("/v1/records/{}", api.record), Some(&officer), &[("kho-purpose", PURPOSE)], Vec::new())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(api.access_log().len(), before + 1);
}

#[tokio::test]
async fn issuers_supersede_through_the_deposit_endpoint_once() {
    let api = Api::new();
    let issuer = api.token(Role::Issuer);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let content = document(30_000, 31, true);
    let mut newer = record_for(&content, OWNER, AGENCY);
    newer.supersedes = Some(api.record);
    let header = b64(&sign(newer.clone(), &api.issuer));
    let reply = api.call("POST", "/v1/records", Some(&issuer), &[("kho-record", &header)], content.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let new_id = reply.json()["record"]["id"].as_str().expect("id").to_owned();
    let citizen = api.token(Role::Citizen);
    let old = api.call("GET", &format!("/v1/records/{}", api.record), Some(&citizen), &[], Vec::new()).await;
    assert_eq!(old.json()["status"], serde_json::json!({"status": "superseded", "by": new_id}));
    // The answer, made from the record and receipt in hand, is the record as it reads from the store;
    // the same deposit again is answered 200 with it, loaded.
    let stored = api.call("GET", &format!("/v1/records/{new_id}"), Some(&citizen), &[], Vec::new()).await;
    assert_eq!((stored.status, stored.json()), (StatusCode::OK, reply.json()));
    assert_eq!(reply.json()["receipt"]["statement"], serde_json::json!(new_id), "{}", reply.json());
    let again = api.call("POST", "/v1/records", Some(&issuer), &[("kho-record", &header)], content.clone()).await;
    assert_eq!((again.status, again.json()), (StatusCode::OK, reply.json()));

    newer.title = Title::parse("a second replacement").expect("title");
    let before = api.state();
    let header = b64(&sign(newer, &api.issuer));
    let reply = api.call("POST", "/v1/records", Some(&issuer), &[("kho-record", &header)], content).await;
    assert_eq!((reply.status.as_u16(), reply.code().as_str()), (409, "already_superseded"));
    assert_eq!(api.state(), before);
}

// ----- the citizen's pages -----

/// A browser as the pages see it: its cookies, kept between requests.
struct Browser<'a> {
    api: &'a Api,
    cookies: std::collections::BTreeMap<String, String>,
}

impl<'a> Browser<'a> {
    fn new(api: &'a Api) -> Browser<'a> {
        Browser { api, cookies: Default::default() }
    }

    async fn request(&mut self, method: &str, uri: &str, form: Option<&[(&str, &str)]>) -> Reply {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers = vec![("cookie", cookie.as_str())];
        let body =
            form.map(|fields| fields.iter().map(|(k, v)| format!("{k}={}", percent(v))).collect::<Vec<_>>().join("&"));
        if body.is_some() {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let reply = self.api.call(method, uri, None, &headers, body.unwrap_or_default().into_bytes()).await;
        for value in reply.headers.get_all("set-cookie") {
            let text = value.to_str().expect("cookie text");
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            if text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        reply
    }

    async fn get(&mut self, uri: &str) -> Reply {
        self.request("GET", uri, None).await
    }

    async fn post(&mut self, uri: &str, form: &[(&str, &str)]) -> Reply {
        self.request("POST", uri, Some(form)).await
    }

    /// The CSRF token of this browser's forms, read from a page.
    async fn csrf(&mut self) -> String {
        let page = self.get("/signin").await.text();
        let at = page.find("name=\"csrf\" value=\"").expect("a form with a csrf field") + 19;
        page[at..at + 64].to_owned()
    }

    async fn sign_in(&mut self, token: &str) -> Reply {
        let csrf = self.csrf().await;
        self.post("/signin", &[("csrf", &csrf), ("token", token)]).await
    }
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

fn other_citizen(api: &Api) -> String {
    token_with(&api.idp, Role::Citizen, |claims| {
        claims.sub = "citizen-2".into();
        claims.owner = Some(OTHER_OWNER.into());
    })
}

#[tokio::test]
async fn pages_sign_in_with_a_cookie_show_only_the_owners_documents_and_refuse_forms_without_their_csrf_token() {
    let api = Api::new();
    let id = api.record.to_hex();
    let mut browser = Browser::new(&api);
    let first = browser.get("/documents").await;
    assert_eq!(
        (first.status, first.location()),
        (StatusCode::SEE_OTHER, "/signin"),
        "not signed in: to the sign-in page"
    );
    let page = browser.get("/signin").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'") && !csp.contains("script"),
        "{csp}"
    );
    for (name, value) in
        [("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer")]
    {
        assert_eq!(page.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
    }
    assert!(browser.cookies.contains_key("__Host-kho-browser"), "the browser got its CSRF cookie");

    // A form without this browser's CSRF token changes nothing.
    let token = api.token(Role::Citizen);
    let stranger = Browser::new(&api).csrf().await;
    for csrf in ["", "00", stranger.as_str()] {
        let refused = browser.post("/signin", &[("csrf", csrf), ("token", &token)]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "csrf {csrf:?}");
        assert!(!browser.cookies.contains_key("__Host-kho-session"), "no session from a forged form");
    }
    let signed_in = browser.sign_in(&token).await;
    assert_eq!((signed_in.status, signed_in.location()), (StatusCode::SEE_OTHER, "/documents"));
    let set_cookie: Vec<_> = signed_in.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect();
    let session = set_cookie.iter().find(|c| c.starts_with("__Host-kho-session=")).expect("session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attribute), "{session} lacks {attribute}");
    }
    let documents = browser.get("/documents").await;
    assert_eq!(documents.status, StatusCode::OK);
    assert!(documents.text().contains(&id), "the owner sees their document");
    let page = browser.get(&format!("/documents/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains(AGENCY) && page.text().contains("id=\"verdict\""));
    let state = api.state();
    let csrf = browser.csrf().await;
    let forged = browser.post("/shares", &[("csrf", "0"), ("record", &id), ("recipient", "Bank"), ("days", "7")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let cross_site = {
        let cookie = browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let body = format!("csrf={csrf}&record={id}&recipient=Bank&days=7");
        let headers = [
            ("cookie", cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("sec-fetch-site", "cross-site"),
        ];
        api.call("POST", "/shares", None, &headers, body.into_bytes()).await
    };
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN, "a form posted from another site");
    assert_eq!(api.state(), state, "refused forms changed nothing");
    assert!(api.state.vault().shares(&OwnerId::parse(OWNER).expect("owner")).expect("shares").is_empty());

    // Another citizen sees none of it, and their attempt is in the owner's log.
    let mut other = Browser::new(&api);
    assert_eq!(other.sign_in(&other_citizen(&api)).await.status, StatusCode::SEE_OTHER);
    let theirs = other.get("/documents").await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert!(!theirs.text().contains(&id) && !theirs.text().contains(OWNER));
    for path in [format!("/documents/{id}"), format!("/documents/{id}/file"), format!("/documents/{id}/bundle")] {
        let denied = other.get(&path).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{path}");
        assert!(!denied.text().contains(OWNER), "{path}");
    }
    let log = api.access_log();
    let denied: Vec<_> = log.iter().filter(|(_, e)| e.subject == "citizen-2").collect();
    assert_eq!(denied.len(), 3, "each attempt is in the owner's log");
    assert!(denied.iter().all(
        |(_, e)| matches!(&e.outcome, kho::vault::AccessOutcome::Denied { reason } if reason == "not_your_store")
    ));

    // Officers use their agency's system, not these pages.
    let officer = Browser::new(&api).sign_in(&api.token(Role::Officer)).await;
    assert_eq!(officer.status, StatusCode::FORBIDDEN);
    // Signing out ends the session.
    let csrf = browser.csrf().await;
    assert_eq!(browser.post("/signout", &[("csrf", &csrf)]).await.location(), "/signin");
    assert_eq!(browser.get("/documents").await.location(), "/signin");
}

#[tokio::test]
async fn a_share_link_works_until_revoked_or_expired_and_every_use_is_in_the_owners_log() {
    let api = Api::new();
    let id = api.record.to_hex();
    let owner = OwnerId::parse(OWNER).expect("owner");
    let mut browser = Browser::new(&api);
    browser.sign_in(&api.token(Role::Citizen)).await;
    let csrf = browser.csrf().await;
    let created = browser
        .post("/shares", &[("csrf", &csrf), ("record", &id), ("recipient", "Ngân hàng ABC"), ("days", "7")])
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER);
    let shares = api.state.vault().shares(&owner).expect("shares");
    assert_eq!(shares.len(), 1);
    let share = &shares[0];
    assert_eq!(created.location(), format!("/shares?created={}", share.id));
    let token = api.state.vault().share_token(share.id);
    let listing = browser.get(created.location()).await.text();
    assert!(listing.contains(&format!("/s/{token}")) && listing.contains("Ngân hàng ABC"), "the owner sees the link");

    // The holder needs no sign-in; each use is logged before anything is shown.
    let before = api.access_log().len();
    let mut holder = Browser::new(&api);
    let page = holder.get(&format!("/s/{token}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains(OWNER), "a share's holder sees the owner");
    let file = holder.get(&format!("/s/{token}/file")).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body, api.content);
    let log = api.access_log();
    assert_eq!(log.len(), before + 2);
    let subject = format!("share:{}", share.id);
    assert!(log.iter().take(2).all(|(_, e)| e.subject == subject
        && e.role == "share_holder"
        && e.outcome == kho::vault::AccessOutcome::Allowed
        && e.record == Some(api.record)));
    // A token altered by one character is not a share (and names nobody, so nothing is logged).
    let mut altered = token.clone().into_bytes();
    altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ascii");
    assert_eq!(holder.get(&format!("/s/{altered}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.access_log().len(), before + 2);

    // Revoked: refused at once, and the refusal is logged.
    let csrf = browser.csrf().await;
    let revoked = browser.post(&format!("/shares/{}/revoke", share.id), &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    for path in [format!("/s/{token}"), format!("/s/{token}/file")] {
        let gone = holder.get(&path).await;
        assert_eq!(gone.status, StatusCode::GONE, "{path}");
        assert!(!gone.text().contains(OWNER) && gone.body != api.content);
    }
    let log = api.access_log();
    assert!(matches!(&log[0].1.outcome, kho::vault::AccessOutcome::Denied { reason } if reason == "share_revoked"));

    // Expired: a share that lasts one second stops working when it ends.
    let short = api
        .state
        .vault()
        .create_share(&owner, &api.record, Title::parse("Employer").expect("title"), Duration::from_secs(1))
        .expect("share");
    let token = api.state.vault().share_token(short.id);
    assert_eq!(holder.get(&format!("/s/{token}")).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(u64::try_from(short.expires_at_ms - now_unix_ms() + 50).unwrap_or(0)))
        .await;
    assert_eq!(holder.get(&format!("/s/{token}")).await.status, StatusCode::GONE);
    assert!(
        matches!(&api.access_log()[0].1.outcome, kho::vault::AccessOutcome::Denied { reason } if reason == "share_expired")
    );
    // Another citizen cannot revoke (or learn of) the owner's share.
    let mut other = Browser::new(&api);
    other.sign_in(&other_citizen(&api)).await;
    let csrf = other.csrf().await;
    assert_eq!(
        other.post(&format!("/shares/{}/revoke", short.id), &[("csrf", &csrf)]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_public_page_of_a_printed_result_says_authentic_and_valid_without_content_or_owner() {
    let api = Api::new();
    let id = api.record.to_hex();
    let before = api.access_log().len();
    let page = Browser::new(&api).get(&format!("/verify/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let text = page.text();
    assert!(text.contains(AGENCY) && text.contains("badge valid"), "issuer and validity are shown");
    assert!(!text.contains(OWNER), "the owner is not shown");
    assert!(!text.contains("/file") && !text.contains("Nguyễn Văn An"), "nor the content");
    let log = api.access_log();
    assert_eq!(log.len(), before + 1, "the check is in the owner's log");
    assert_eq!(log[0].1.role, "public");
    // A code Kho never issued is said to be not authentic.
    let forged = Browser::new(&api).get(&format!("/verify/{}", "ab".repeat(32))).await;
    assert_eq!(forged.status, StatusCode::NOT_FOUND);
    assert!(forged.text().contains("id=\"verdict\""));
}

/// A multipart form as a browser sends it: fields in order, the file last.
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "----khoformboundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    if let Some((filename, bytes)) = file {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Browser<'_> {
    async fn upload(&mut self, fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Reply {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let (content_type, body) = multipart(fields, file);
        let headers = [("cookie", cookie.as_str()), ("content-type", content_type.as_str())];
        self.api.call("POST", "/uploads", None, &headers, body).await
    }
}

#[tokio::test]
async fn a_citizen_uploads_a_scan_asks_an_agency_and_the_agencys_certification_makes_it_a_certified_copy() {
    let api = Api::new();
    let owner = OwnerId::parse(OWNER).expect("owner");
    let mut browser = Browser::new(&api);
    browser.sign_in(&api.token(Role::Citizen)).await;
    let csrf = browser.csrf().await;
    let mut scan = b"%PDF-1.4\n".to_vec();
    scan.extend(std::iter::repeat_n(b'x', 3000));

    // Refused uploads store nothing: no CSRF token, not a scan, no title.
    let before = api.state();
    let title = ("title", "Bằng tốt nghiệp THPT");
    let no_csrf = browser.upload(&[title], Some(("scan.pdf", &scan))).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let wrong_csrf = browser.upload(&[("csrf", &"0".repeat(64)), title], Some(("scan.pdf", &scan))).await;
    assert_eq!(wrong_csrf.status, StatusCode::FORBIDDEN);
    let not_a_scan = browser.upload(&[("csrf", &csrf), title], Some(("virus.exe", b"MZ\x90\x00 payload"))).await;
    assert_eq!(not_a_scan.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let untitled = browser.upload(&[("csrf", &csrf), ("title", " ")], Some(("scan.pdf", &scan))).await;
    assert_eq!(untitled.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.state(), before);
    // An officer is not a citizen: the pages do not sign them in, so nothing is uploaded anywhere.
    let mut officer = Browser::new(&api);
    officer.sign_in(&api.token(Role::Officer)).await;
    let officer_csrf = officer.csrf().await;
    let refused = officer.upload(&[("csrf", &officer_csrf), title], Some(("scan.pdf", &scan))).await;
    assert_eq!((refused.status, refused.location()), (StatusCode::SEE_OTHER, "/signin"));
    assert_eq!(api.state(), before);

    let uploaded = browser.upload(&[("csrf", &csrf), title], Some(("scan.pdf", &scan))).await;
    assert_eq!(uploaded.status, StatusCode::SEE_OTHER, "{}", uploaded.text());
    let page = api.state.vault().list_owner(&owner, &Default::default(), None, 10).expect("list");
    let upload = page.records.iter().find(|v| v.record.body().is_self_upload()).expect("uploaded").id();
    assert_eq!(uploaded.location(), format!("/uploads#upload-{upload}"));
    let list = browser.get("/uploads").await.text();
    assert!(list.contains("badge self_uploaded") && list.contains("Bằng tốt nghiệp THPT"), "{list}");
    let documents = browser.get("/documents").await.text();
    assert!(documents.contains("badge self_uploaded"), "the upload is among the documents, marked");
    let page = browser.get(&format!("/documents/{upload}")).await.text();
    assert!(page.contains("Tự tải lên") && page.contains("không có giá trị pháp lý"), "marked not legally valid");

    // Another citizen cannot ask for certification of it.
    let mut other = Browser::new(&api);
    other.sign_in(&other_citizen(&api)).await;
    let other_csrf = other.csrf().await;
    let theirs =
        other.post(&format!("/uploads/{upload}/certification"), &[("csrf", &other_csrf), ("agency", AGENCY)]).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let no_csrf = browser.post(&format!("/uploads/{upload}/certification"), &[("csrf", ""), ("agency", AGENCY)]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let asked = browser.post(&format!("/uploads/{upload}/certification"), &[("csrf", &csrf), ("agency", AGENCY)]).await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER);

    // The agency's officer at the counter looks the person up (logged), reads the scan with a purpose
    // (logged), compares it with the original; the agency's system signs and posts the certification.
    let requests_uri = format!("/v1/agencies/{AGENCY}/certification-requests?owner={OWNER}");
    let log_before = api.access_log().len();
    let requests = api.call("GET", &requests_uri, Some(&api.token(Role::Officer)), &[], Vec::new()).await;
    assert_eq!(requests.status, StatusCode::OK);
    let listed = requests.json()["requests"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["record"]["record"]["id"], upload.to_hex());
    let other_uri = format!("/v1/agencies/{OTHER_AGENCY}/certification-requests?owner={OWNER}");
    let issuer_other = token_with(&api.idp, Role::Issuer, |c| c.agency = Some(OTHER_AGENCY.into()));
    let theirs = api.call("GET", &other_uri, Some(&issuer_other), &[], Vec::new()).await;
    assert!(theirs.json()["requests"].as_array().is_some_and(Vec::is_empty), "nothing was sent to the other agency");
    let content = api
        .call(
            "GET",
            &format!("/v1/records/{upload}/content"),
            Some(&api.token(Role::Officer)),
            &[("kho-purpose", PURPOSE)],
            Vec::new(),
        )
        .await;
    assert_eq!(content.body, scan);
    let log = api.access_log();
    assert_eq!(log.len(), log_before + 3, "the look-ups and the read are in the owner's log");

    let certification = |officer: &str, agency: &str, key: &SecretKey| copy_certification(upload, agency, key, officer);
    let before = api.state();
    let issuer = api.token(Role::Issuer);
    let by_officer = api
        .call(
            "POST",
            "/v1/certifications",
            Some(&api.token(Role::Officer)),
            &[],
            certification("A", AGENCY, &api.issuer),
        )
        .await;
    assert_eq!(by_officer.status, StatusCode::FORBIDDEN, "officers compare; the agency's system signs");
    let for_other = api
        .call("POST", "/v1/certifications", Some(&issuer), &[], certification("A", OTHER_AGENCY, &api.other_issuer))
        .await;
    assert_eq!((for_other.status, for_other.code().as_str()), (StatusCode::FORBIDDEN, "other_agency"));
    let unasked = api
        .call(
            "POST",
            "/v1/certifications",
            Some(&issuer_other),
            &[],
            certification("A", OTHER_AGENCY, &api.other_issuer),
        )
        .await;
    assert_eq!((unasked.status, unasked.code().as_str()), (StatusCode::FORBIDDEN, "certification_not_requested"));
    let wrong_key =
        api.call("POST", "/v1/certifications", Some(&issuer), &[], certification("A", AGENCY, &api.other_issuer)).await;
    assert_eq!(
        (wrong_key.status, wrong_key.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "key_of_another_agency")
    );
    let garbage = api.call("POST", "/v1/certifications", Some(&issuer), &[], b"not a statement".to_vec()).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.state(), before);

    let certified = api
        .call("POST", "/v1/certifications", Some(&issuer), &[], certification("Nguyễn Văn An", AGENCY, &api.issuer))
        .await;
    assert_eq!(certified.status, StatusCode::CREATED, "{}", certified.text());
    let status = &certified.json()["status"];
    assert_eq!(status["status"], "certified_copy");
    assert_eq!((status["agency"].as_str(), status["officer"].as_str()), (Some(AGENCY), Some("Nguyễn Văn An")));
    let again = api
        .call("POST", "/v1/certifications", Some(&issuer), &[], certification("Lê Văn C", AGENCY, &api.issuer))
        .await;
    assert_eq!((again.status, again.code().as_str()), (StatusCode::CONFLICT, "already_certified"));
    let requests = api.call("GET", &requests_uri, Some(&api.token(Role::Officer)), &[], Vec::new()).await;
    assert!(requests.json()["requests"].as_array().is_some_and(Vec::is_empty), "done: no longer pending");

    // The citizen sees a certified copy; so does anyone checking the printed copy's QR code (once the
    // certification is inside a signed checkpoint).
    api.state.vault().sign_checkpoint().expect("sign").expect("checkpoint");
    let list = browser.get("/uploads").await.text();
    assert!(list.contains("badge certified_copy"), "{list}");
    let page = browser.get(&format!("/documents/{upload}")).await.text();
    assert!(
        page.contains("Bằng tốt nghiệp THPT số A123") && page.contains("Nguyễn Văn An"),
        "who and from what original"
    );
    let public = Browser::new(&api).get(&format!("/verify/{upload}")).await.text();
    assert!(public.contains("badge certified_copy") && public.contains("notice good"));
    assert!(!public.contains(OWNER) && !public.contains("Nguyễn Văn An"), "no owner, no officer on the public page");
}

/// The value of the sample `name` (with its labels, as exposed) in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A known workload, then `/metrics`: every counter is what the workload made it, the reuse figures
/// included (two dossiers' reads of one record by an officer, reading it twice for the same dossier
/// counted once, a denied read not at all), and the figures per agency and the public daily aggregate
/// say the same.
#[tokio::test]
async fn metrics_after_a_known_workload_count_exactly_and_reuse_figures_come_from_the_log() {
    let api = Api::new();
    let officer = api.token(Role::Officer);
    let issuer = api.token(Role::Issuer);
    let content_path = format!("/v1/records/{}/content", api.record);
    let record_path = format!("/v1/records/{}", api.record);
    let other_dossier = "H26.99-240301-0002";
    for (path, purpose) in
        [(&content_path, PURPOSE), (&content_path, PURPOSE), (&record_path, PURPOSE), (&content_path, other_dossier)]
    {
        let reply = api.call("GET", path, Some(&officer), &[("kho-purpose", purpose)], Vec::new()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let denied = api.call("GET", &content_path, Some(&officer), &[], Vec::new()).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "no purpose: refused and logged, not a reuse");
    let content = document(40_000, 77, true);
    let header =
        base64::engine::general_purpose::STANDARD.encode(sign(record_for(&content, OWNER, AGENCY), &api.issuer));
    let reply = api.call("POST", "/v1/records", Some(&issuer), &[("kho-record", &header)], content.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(api.call("GET", "/no/such/thing", None, &[], Vec::new()).await.status, StatusCode::NOT_FOUND);

    let reply = api.call("GET", "/metrics", None, &[], Vec::new()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let text = reply.text();
    let route = |route: &str, method: &str, status: u16| {
        sample(&text, &format!("kho_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"))
    };
    assert_eq!(route("/v1/records/{id}/content", "GET", 200), Some(3.0), "{text}");
    assert_eq!(route("/v1/records/{id}/content", "GET", 403), Some(1.0), "{text}");
    assert_eq!(route("/v1/records/{id}", "GET", 200), Some(1.0), "{text}");
    assert_eq!(route("/v1/records", "POST", 201), Some(1.0), "{text}");
    assert_eq!(route("(unmatched)", "GET", 404), Some(1.0), "{text}");
    let latency =
        "kho_http_request_duration_seconds_count{route=\"/v1/records/{id}/content\",method=\"GET\",status=\"200\"}";
    assert_eq!(sample(&text, latency), Some(3.0), "{text}");
    assert_eq!(sample(&text, "kho_read_bytes_total"), Some(3.0 * api.content.len() as f64), "{text}");
    assert_eq!(sample(&text, "kho_deposit_bytes_total"), Some(content.len() as f64), "{text}");
    let agency = |name: &str| sample(&text, &format!("{name}{{agency=\"{AGENCY}\"}}"));
    assert_eq!(agency("kho_documents_reused_total"), Some(2.0), "{text}");
    assert_eq!(agency("kho_documents_deposited_total"), Some(2.0), "the fixture's record and this one: {text}");
    assert_eq!(sample(&text, "kho_records"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "kho_record_bytes"), Some((api.content.len() + content.len()) as f64), "{text}");
    assert_eq!(sample(&text, "kho_log_entries"), Some(api.state.vault().log_size() as f64), "{text}");
    assert!(sample(&text, "kho_commit_sync_seconds_count").is_some_and(|n| n >= 1.0), "{text}");
    assert!(sample(&text, "kho_store_disk_bytes").is_some_and(|n| n > 0.0), "{text}");

    // The same figures per day and agency (auditors and admins), and the public aggregate.
    let auditor = api.call("GET", "/v1/stats/reuse", Some(&api.token(Role::Auditor)), &[], Vec::new()).await.json();
    let today = kho::ids::Date::at(now_unix_ms(), 7 * 60).to_string();
    assert_eq!(
        auditor["days"],
        serde_json::json!([{"day": today, "agency": AGENCY, "documents_reused": 2, "documents_deposited": 2}]),
        "{auditor}"
    );
    let (admin, filtered) = (api.token(Role::Admin), format!("/v1/stats/reuse?from={today}&agency={AGENCY}"));
    let admin = api.call("GET", &filtered, Some(&admin), &[], Vec::new()).await;
    assert_eq!(admin.json()["total"], serde_json::json!({"documents_reused": 2, "documents_deposited": 2}));
    for role in [Role::Citizen, Role::Officer, Role::Issuer] {
        let reply = api.call("GET", "/v1/stats/reuse", Some(&api.token(role)), &[], Vec::new()).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{role:?}");
    }
    assert_eq!(api.call("GET", "/v1/stats/reuse", None, &[], Vec::new()).await.status, StatusCode::UNAUTHORIZED);
    let bad = api.call("GET", "/v1/stats/reuse?from=yesterday", Some(&api.token(Role::Auditor)), &[], Vec::new()).await;
    assert_eq!((bad.status, bad.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_query"));
    let public = api.call("GET", "/v1/stats/daily", None, &[], Vec::new()).await.json();
    assert_eq!(
        public,
        serde_json::json!({"days": [{"day": today, "documents_reused": 2, "documents_deposited": 2, "agencies_reusing": 1}]})
    );
}

/// Every answer carries a request id: the gateway's when it sent a sensible one, else a new one each
/// time (errors and unmatched paths included).
#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let api = Api::new();
    let id =
        |reply: &Reply| reply.headers.get("x-request-id").expect("x-request-id").to_str().expect("ascii").to_owned();
    let first = id(&api.call("GET", "/healthz", None, &[], Vec::new()).await);
    let second = id(&api.call("GET", "/no/such/thing", None, &[], Vec::new()).await);
    assert!(first.len() == 24 && first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_ne!(first, second, "a new id per request");
    let given = api.call("GET", "/healthz", None, &[("x-request-id", "gw-2026.11_24-0001")], Vec::new()).await;
    assert_eq!(id(&given), "gw-2026.11_24-0001");
    let odd = api
        .call("GET", "/v1/records/zz", Some(&api.token(Role::Citizen)), &[("x-request-id", "a\"b")], Vec::new())
        .await;
    assert_eq!(odd.status, StatusCode::BAD_REQUEST);
    assert_eq!(id(&odd).len(), 24, "an odd id is replaced");
}

/// Too many header fields, or too many bytes of them, get 431 `headers_too_large` in the JSON error
/// shape (not hyper's empty answer), before authentication and without touching the owner's log; at the
/// limits the request is served.
#[tokio::test]
async fn too_many_or_too_large_headers_get_a_json_431_and_change_nothing() {
    use kho::http::{REQUEST_HEADERS_MAX, REQUEST_HEADER_BYTES_MAX};
    let api = Api::new();
    let records = format!("/v1/owners/{OWNER}/records");
    let citizen = api.token(Role::Citizen);
    // `call` adds the Authorization header.
    let fields = |count: usize| (0..count).map(|n| (format!("x-extra-{n}"), "1".to_owned())).collect::<Vec<_>>();
    let call = |extra: Vec<(String, String)>| {
        let (api, records, citizen) = (&api, records.clone(), citizen.clone());
        async move {
            let headers: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            api.call("GET", &records, Some(&citizen), &headers, Vec::new()).await
        }
    };
    assert_eq!(call(fields(REQUEST_HEADERS_MAX - 1)).await.status, StatusCode::OK, "at the limit");
    let before = (api.state(), api.access_log().len());
    let many = call(fields(REQUEST_HEADERS_MAX)).await;
    assert_eq!(many.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(many.json()["error"]["code"], "headers_too_large");
    assert!(many.headers.contains_key("x-request-id"));
    let big = call(vec![("x-big".to_owned(), "a".repeat(REQUEST_HEADER_BYTES_MAX))]).await;
    assert_eq!(big.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(big.json()["error"]["code"], "headers_too_large");
    assert!(big.json()["error"]["message"].as_str().is_some_and(|m| m.contains("bytes")));
    assert_eq!((api.state(), api.access_log().len()), before, "a refused request changes nothing");
    // Unauthenticated routes too.
    let big = "b".repeat(REQUEST_HEADER_BYTES_MAX + 1);
    let health = api.call("GET", "/healthz", None, &[("x-big", big.as_str())], Vec::new()).await;
    assert_eq!(health.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

/// A subject over its role's rate gets 429 `rate_limited` with `Retry-After`, and nothing else happens;
/// another subject of the same role has its own bucket, and a role set to 0 is not limited.
#[tokio::test]
async fn a_subject_over_its_rate_is_refused_with_retry_after_and_others_are_not() {
    let rates = RateLimitConfig { citizen: 1, officer: 0, burst_seconds: 3, ..RateLimitConfig::default() };
    let api = Api::build(|_| {}, rates);
    let records = format!("/v1/owners/{OWNER}/records");
    let citizen = api.token(Role::Citizen);
    for n in 0..3 {
        let reply = api.call("GET", &records, Some(&citizen), &[], Vec::new()).await;
        assert_eq!(reply.status, StatusCode::OK, "request {n} is within the burst of 3");
    }
    let before = (api.state(), api.access_log().len());
    let refused = api.call("GET", &records, Some(&citizen), &[], Vec::new()).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    assert_eq!((api.state(), api.access_log().len()), before, "a refused request changes nothing");
    let other = token_with(&api.idp, Role::Citizen, |claims| claims.sub = "citizen-2".into());
    assert_eq!(api.call("GET", &records, Some(&other), &[], Vec::new()).await.status, StatusCode::OK);
    let officer = api.token(Role::Officer);
    let purpose = [("kho-purpose", "H26.22-240301-0001")];
    for _ in 0..20 {
        let reply = api.call("GET", &records, Some(&officer), &purpose, Vec::new()).await;
        assert_eq!(reply.status, StatusCode::OK, "officers are not limited at 0");
    }
}
