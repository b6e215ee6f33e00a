//! The CLI as a client of a Kho server: deposit, get (and verify locally), ls, access-log.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use sha2::Digest as _;

use super::{sign_record, ClientArgs, DepositArgs, EXIT_DENIED, EXIT_INVALID, EXIT_NOT_FOUND};
use crate::ids::Digest;
use crate::statement::{Receipt, Record, Signed};

pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

pub(super) fn url(client: &ClientArgs, path: &str) -> String {
    format!("{}{path}", client.server.trim_end_matches('/'))
}

/// Adds the token and the purpose to a request.
pub(super) fn authorized<B>(client: &ClientArgs, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    let request = request.header("Authorization", format!("Bearer {}", client.token));
    match &client.purpose {
        Some(purpose) => request.header(crate::http::PURPOSE_HEADER, purpose),
        None => request,
    }
}

pub(super) fn unreachable(client: &ClientArgs, error: ureq::Error) -> anyhow::Error {
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
    let key = args.signer.load()?;
    let record = sign_record(&args.fields, key.as_ref(), &args.file)?;
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
    let receipt = match verified_receipt(&view, record.id()) {
        Ok(receipt) => receipt,
        Err(code) => return Ok(code),
    };
    let receipt_path = super::with_suffix(&args.file, super::RECEIPT_SUFFIX);
    std::fs::write(&receipt_path, receipt.to_envelope()).with_context(|| {
        format!("the deposit is stored, but its receipt cannot be kept in {}", receipt_path.display())
    })?;
    println!(
        "deposited {} as record {} (log entry #{}, {}); receipt in {}",
        args.file.display(),
        record.id(),
        view["receipt"]["log_index"],
        if response.status().as_u16() == 201 { "new" } else { "already there" },
        receipt_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The receipt in a record view, checked to be a signed receipt for record `id`.
fn verified_receipt(view: &serde_json::Value, id: Digest) -> Result<Signed<Receipt>, ExitCode> {
    let envelope = base64_field(&view["receipt"]["envelope_base64"]).unwrap_or_default();
    match Signed::<Receipt>::from_envelope(&envelope) {
        Ok(receipt) if receipt.body().statement == id => Ok(receipt),
        _ => {
            eprintln!("error: the receipt from the server does not verify for this record");
            Err(ExitCode::from(EXIT_INVALID))
        }
    }
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
    // Verify locally: the record's signature and id, and the receipt's signature and subject.
    let record = match Signed::<Record>::from_envelope(&base64_field(&view["envelope_base64"]).unwrap_or_default()) {
        Ok(record) if record.id() == id => record,
        Ok(_) => anyhow::bail!("the server returned another record than {id}"),
        Err(error) => {
            eprintln!("error: the record from the server does not verify: {error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let receipt = match verified_receipt(&view, id) {
        Ok(receipt) => receipt,
        Err(code) => return Ok(code),
    };
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
    // The evidence beside the document, for `kho verify` later and elsewhere.
    std::fs::write(super::with_suffix(&out, super::RECORD_SUFFIX), record.to_envelope())
        .and_then(|()| std::fs::write(super::with_suffix(&out, super::RECEIPT_SUFFIX), receipt.to_envelope()))
        .with_context(|| format!("cannot keep the record and receipt beside {}", out.display()))?;
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
        page["entries"].as_array().into_iter().flatten().for_each(print_access_entry);
    })
}

fn print_access_entry(entry: &serde_json::Value) {
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

/// `kho access-log --verify`: prints the access log, then checks it is complete (docs/FORMAT.md 4.4):
/// the checkpoint verifies under the vault key, the owner-map commitment is in it, the map proves the
/// owner's chain head, the owner's chain walks back from that head link by link, and the access events
/// in the chain below the commitment are exactly the ones listed, each listed as its canonical bytes
/// say.
pub(super) fn verify_access_log(
    client: &ClientArgs,
    owner: &str,
    trust: &super::log::VaultTrustArgs,
) -> anyhow::Result<ExitCode> {
    let (key, certified_origin) = trust.key()?;
    let keys = super::log::follow_handovers(&client.server, key, certified_origin.as_deref());
    let owner_id = crate::ids::OwnerId::parse(owner)?;
    let mut listed = Vec::new();
    let mut completeness = serde_json::Value::Null;
    let code = each_page(client, &format!("/v1/owners/{owner}/access-log"), &[], |page| {
        listed.extend(page["entries"].as_array().into_iter().flatten().cloned());
        if completeness.is_null() {
            completeness = page["completeness"].clone();
        }
    })?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    listed.iter().for_each(print_access_entry);
    if completeness.is_null() {
        eprintln!("error: the server has signed no checkpoint yet; try again in a second");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let evidence = parse_completeness(&completeness, &keys, certified_origin.as_deref())?;
    let evidence = match evidence {
        Ok(evidence) => evidence,
        Err(message) => return Ok(invalid(&message)),
    };
    let mut chain = Vec::new();
    let mut before = completeness["owner_map"]["head"]["log_index"].as_u64().map(|index| index + 1);
    while let Some(next) = before {
        let request = authorized(client, agent().get(url(client, &format!("/v1/owners/{owner}/log-entries"))))
            .query("before", next.to_string());
        let mut response = request.call().map_err(|e| unreachable(client, e))?;
        if !response.status().is_success() {
            return Ok(refused(response));
        }
        let page = json_body(&mut response)?;
        for entry in page["entries"].as_array().into_iter().flatten() {
            let index = entry["log_index"].as_u64().context("a chain entry without a log index")?;
            chain.push((index, base64_field(&entry["entry_base64"])?));
        }
        before = page["next_before"].as_u64();
    }
    let (checkpoint, commitment_index) = (&evidence.checkpoint, evidence.commitment_index);
    let complete = match crate::log::chain::verify_completeness(&owner_id, &evidence, &chain) {
        Ok(complete) => complete,
        Err(error) => return Ok(invalid(&format!("the owner's chain is not complete: {error}"))),
    };
    // The chain's access events, by log index and id, against the listed ones below the commitment.
    let in_chain: std::collections::BTreeMap<u64, Digest> = complete
        .entries
        .iter()
        .filter(|(_, entry)| entry.kind == crate::log::KIND_ACCESS_EVENT)
        .map(|(index, entry)| (*index, entry.id))
        .collect();
    let mut shown = std::collections::BTreeMap::new();
    let mut newer = 0;
    for entry in &listed {
        let index = entry["log_index"].as_u64().context("an access entry without a log index")?;
        let canonical = base64_field(&entry["canonical_base64"])?;
        let event = match crate::vault::AccessEvent::decode(&canonical) {
            Ok(event)
                if serde_json::to_value(crate::json::access_event_json(index, &event)).ok().as_ref() == Some(entry) =>
            {
                event
            }
            _ => return Ok(invalid(&format!("access entry {index} is not what its canonical bytes say"))),
        };
        if index < commitment_index {
            shown.insert(index, event.id());
        } else {
            newer += 1;
        }
    }
    if in_chain != shown {
        let hidden = in_chain.keys().filter(|index| !shown.contains_key(index)).count();
        let extra = shown.keys().filter(|index| !in_chain.contains_key(index)).count();
        return Ok(invalid(&format!(
            "the access log is not the one the log commits to: {hidden} committed access events are not listed, \
             {extra} listed ones are not in the owner's chain (or differ)"
        )));
    }
    let through = completeness["complete_through"]["at"].as_str().unwrap_or("?");
    eprintln!(
        "verified: complete through log entry {commitment_index} ({through}): access events {}, all listed; records \
         and status changes {}; checkpoint of {} entries signed by {}{}",
        in_chain.len(),
        complete.entries.len() - in_chain.len(),
        checkpoint.size,
        super::log::signer_of(checkpoint, &keys, completeness["checkpoint"].as_str().unwrap_or_default()),
        if newer > 0 { format!("; {newer} newer access events are not covered yet") } else { String::new() },
    );
    Ok(ExitCode::SUCCESS)
}

fn invalid(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_INVALID)
}

fn base64_field(value: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
    let text = value.as_str().context("a base64 field is missing")?;
    base64::engine::general_purpose::STANDARD.decode(text).context("a base64 field does not decode")
}

/// The completeness evidence of an access-log answer, its checkpoint's signature checked; the inner
/// error says what does not verify.
fn parse_completeness(
    value: &serde_json::Value,
    keys: &[crate::statement::PublicKey],
    origin: Option<&str>,
) -> anyhow::Result<Result<crate::log::chain::CompletenessEvidence, String>> {
    let note = value["checkpoint"].as_str().context("no checkpoint in the completeness evidence")?;
    let origin = origin.unwrap_or_else(|| note.lines().next().unwrap_or_default());
    let checkpoint = match crate::log::checkpoint::open_any(note, origin, keys) {
        Ok(checkpoint) => checkpoint,
        Err(error) => return Ok(Err(format!("the checkpoint does not verify under the vault key: {error}"))),
    };
    let hashes = |value: &serde_json::Value| -> anyhow::Result<Vec<crate::log::Hash>> {
        value.as_array().context("hashes are missing")?.iter().map(super::log::parse_hash).collect()
    };
    let commitment = &value["commitment"];
    let commitment_index = commitment["log_index"].as_u64().context("no commitment index")?;
    let commitment_entry = base64_field(&commitment["entry_base64"])?;
    let commitment_proof = hashes(&commitment["inclusion_proof"])?;
    let proof = &value["owner_map"]["proof"];
    let leaf = match &proof["leaf"] {
        serde_json::Value::Null => None,
        leaf => Some((super::log::parse_hash(&leaf["key"])?, base64_field(&leaf["value_base64"])?)),
    };
    let map_proof = crate::log::map::MapProof { siblings: hashes(&proof["siblings"])?, leaf };
    Ok(Ok(crate::log::chain::CompletenessEvidence {
        checkpoint,
        commitment_index,
        commitment_entry,
        commitment_proof,
        map_proof,
    }))
}
