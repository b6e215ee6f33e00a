//! The CLI as a client of a Kho server: deposit, get (and verify locally), ls, access-log.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use sha2::Digest as _;

use super::{sign_record, ClientArgs, DepositArgs, EXIT_DENIED, EXIT_INVALID, EXIT_NOT_FOUND};
use crate::ids::Digest;
use crate::keys;
use crate::statement::{Receipt, Record, Signed};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn url(client: &ClientArgs, path: &str) -> String {
    format!("{}{path}", client.server.trim_end_matches('/'))
}

/// Adds the token and the purpose to a request.
fn authorized<B>(client: &ClientArgs, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    let request = request.header("Authorization", format!("Bearer {}", client.token));
    match &client.purpose {
        Some(purpose) => request.header(crate::http::PURPOSE_HEADER, purpose),
        None => request,
    }
}

fn unreachable(client: &ClientArgs, error: ureq::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot reach the Kho server at {}: {error}", client.server)
}

/// Turns an error response into a message on stderr and the matching exit code.
pub(super) fn refused(mut response: ureq::http::Response<ureq::Body>) -> ExitCode {
    let status = response.status();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    let (code, message) = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| Some((v["error"]["code"].as_str()?.to_owned(), v["error"]["message"].as_str()?.to_owned())))
        .unwrap_or_else(|| ("http_error".into(), body));
    let what = match status.as_u16() {
        401 => "unauthorized",
        403 => "denied",
        404 => "not found",
        400..=499 => "rejected",
        _ => "server error",
    };
    eprintln!("error: {what} ({} {code}): {message}", status.as_u16());
    ExitCode::from(match status.as_u16() {
        401 | 403 => EXIT_DENIED,
        404 => EXIT_NOT_FOUND,
        400..=499 => EXIT_INVALID,
        _ => 1,
    })
}

fn json_body(response: &mut ureq::http::Response<ureq::Body>) -> anyhow::Result<serde_json::Value> {
    let text = response.body_mut().read_to_string().context("reading the server's answer")?;
    serde_json::from_str(&text).context("the server's answer is not JSON")
}

pub(super) fn deposit(args: DepositArgs) -> anyhow::Result<ExitCode> {
    let key = keys::read_secret_key(&args.key)?;
    let record = sign_record(&args.fields, &key, &args.file)?;
    let envelope = base64::engine::general_purpose::STANDARD.encode(record.to_envelope());
    let mut file = std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let request = authorized(&args.client, agent().post(url(&args.client, "/v1/records")))
        .header(crate::http::RECORD_HEADER, envelope)
        .content_type("application/octet-stream");
    let mut response =
        request.send(ureq::SendBody::from_reader(&mut file)).map_err(|e| unreachable(&args.client, e))?;
    if !response.status().is_success() {
        return Ok(refused(response));
    }
    let view = json_body(&mut response)?;
    println!(
        "deposited {} as record {} (log entry #{}, {})",
        args.file.display(),
        record.id(),
        view["receipt"]["log_index"],
        if response.status().as_u16() == 201 { "new" } else { "already there" }
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn get(client: &ClientArgs, id: &str, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let id = Digest::parse_hex("record id", id)?;
    let mut response = authorized(client, agent().get(url(client, &format!("/v1/records/{id}"))))
        .call()
        .map_err(|e| unreachable(client, e))?;
    if !response.status().is_success() {
        return Ok(refused(response));
    }
    let view = json_body(&mut response)?;
    let decode = |field: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD.decode(field.as_str().unwrap_or_default()).unwrap_or_default()
    };
    // Verify locally: the record's signature and id, and the receipt's signature and subject.
    let record = match Signed::<Record>::from_envelope(&decode(&view["envelope_base64"])) {
        Ok(record) if record.id() == id => record,
        Ok(_) => anyhow::bail!("the server returned another record than {id}"),
        Err(error) => {
            eprintln!("error: the record from the server does not verify: {error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    match Signed::<Receipt>::from_envelope(&decode(&view["receipt"]["envelope_base64"])) {
        Ok(receipt) if receipt.body().statement == id => {}
        _ => {
            eprintln!("error: the receipt from the server does not verify for this record");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    }
    let out = out.unwrap_or_else(|| PathBuf::from(id.to_hex()));
    let mut response = authorized(client, agent().get(url(client, &format!("/v1/records/{id}/content"))))
        .call()
        .map_err(|e| unreachable(client, e))?;
    if !response.status().is_success() {
        return Ok(refused(response));
    }
    let mut reader = response.body_mut().with_config().limit(record.body().size_bytes.saturating_add(1)).reader();
    let mut file = std::fs::File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (mut blake3, mut sha256, mut size) = (blake3::Hasher::new(), sha2::Sha256::new(), 0u64);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let count = reader.read(&mut buffer).context("downloading the document")?;
        if count == 0 {
            break;
        }
        blake3.update(&buffer[..count]);
        sha256.update(&buffer[..count]);
        size += count as u64;
        file.write_all(&buffer[..count]).with_context(|| format!("cannot write {}", out.display()))?;
    }
    let body = record.body();
    if size != body.size_bytes
        || Digest(*blake3.finalize().as_bytes()) != body.blake3
        || Digest(sha256.finalize().into()) != body.sha256
    {
        drop(file);
        let _ = std::fs::remove_file(&out);
        eprintln!("error: the downloaded document does not match its signed record; nothing was kept");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    println!(
        "{}: {} ({}), issued by {}, status {}; signature, receipt and content verified",
        out.display(),
        body.title,
        body.document_type,
        body.issuer_agency,
        view["status"]["status"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// GETs every page of a listing at `path` (following `next_cursor`) and hands each page to `each`.
fn each_page(
    client: &ClientArgs,
    path: &str,
    query: &[(&str, Option<String>)],
    mut each: impl FnMut(&serde_json::Value),
) -> anyhow::Result<ExitCode> {
    let mut cursor: Option<String> = None;
    loop {
        let mut request = authorized(client, agent().get(url(client, path)));
        for (name, value) in query.iter().chain([("cursor", cursor.clone())].iter()) {
            if let Some(value) = value {
                request = request.query(*name, value);
            }
        }
        let mut response = request.call().map_err(|e| unreachable(client, e))?;
        if !response.status().is_success() {
            return Ok(refused(response));
        }
        let page = json_body(&mut response)?;
        each(&page);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

pub(super) fn ls(
    client: &ClientArgs,
    owner: &str,
    document_type: Option<String>,
    status: Option<String>,
) -> anyhow::Result<ExitCode> {
    let query = [("type", document_type), ("status", status)];
    each_page(client, &format!("/v1/owners/{owner}/records"), &query, |page| {
        for view in page["records"].as_array().into_iter().flatten() {
            let record = &view["record"];
            println!(
                "{}  {:<12} {:<14} {:<13} {}",
                record["id"].as_str().unwrap_or("?"),
                record["document_type"].as_str().unwrap_or("?"),
                record["issuer_agency"].as_str().unwrap_or("?"),
                view["status"]["status"].as_str().unwrap_or("?"),
                record["title"].as_str().unwrap_or("?"),
            );
        }
    })
}

pub(super) fn access_log(client: &ClientArgs, owner: &str) -> anyhow::Result<ExitCode> {
    each_page(client, &format!("/v1/owners/{owner}/access-log"), &[], |page| {
        for entry in page["entries"].as_array().into_iter().flatten() {
            println!(
                "{}  {:<8} {:<20} {:<14} {:<13} purpose {:<20} {} {}",
                entry["at"].as_str().unwrap_or("?"),
                entry["role"].as_str().unwrap_or("?"),
                entry["subject"].as_str().unwrap_or("?"),
                entry["agency"].as_str().unwrap_or("-"),
                entry["action"].as_str().unwrap_or("?"),
                entry["purpose"].as_str().unwrap_or("-"),
                entry["outcome"]["outcome"].as_str().unwrap_or("?"),
                entry["outcome"]["reason"].as_str().unwrap_or(""),
            );
        }
    })
}
