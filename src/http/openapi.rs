//! The OpenAPI 3.1 description of the API, served at `/v1/openapi.json` and checked in as
//! docs/openapi.json (`kho openapi > docs/openapi.json`); tests keep the two equal and check that every
//! route of the router is described here.

use serde_json::{json, Map, Value};

/// One operation: method, path, summary, roles, parameters (name, location, description), request body
/// media type, and the responses (status, description).
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    roles: &'static str,
    parameters: &'static [(&'static str, &'static str, &'static str)],
    body: Option<(&'static str, &'static str)>,
    responses: &'static [(&'static str, &'static str)],
}

const ID: (&str, &str, &str) = ("id", "path", "64 hex digits");
const OWNER: (&str, &str, &str) = ("owner", "path", "12-digit citizen id or 10/13-digit organization code");
const PURPOSE: (&str, &str, &str) =
    ("Kho-Purpose", "header", "the dossier code being processed (officers; auditors for content)");
const DENIED: (&str, &str) = ("403", "denied; the attempt is recorded in the owner's access log");
const UNAUTHENTICATED: (&str, &str) = ("401", "missing, invalid, expired or wrong-audience token");

const OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/v1/records",
        summary:
            "Deposit a document: the signed record (base64 envelope) in Kho-Record, the content as the body, streamed",
        roles: "issuer (own agency)",
        parameters: &[("Kho-Record", "header", "base64 of the signed record envelope (docs/FORMAT.md)")],
        body: Some(("application/octet-stream", "the document bytes")),
        responses: &[
            ("201", "accepted; the record view with its receipt"),
            ("200", "this record was accepted before; the earlier receipt"),
            ("400", "malformed record, bad signature, truncated content"),
            UNAUTHENTICATED,
            ("403", "the record is another agency's"),
            ("409", "supersedes a record that is already superseded or revoked"),
            ("413", "document larger than the limit or than the record declares"),
            ("422", "untrusted signer, content hash mismatch, unknown superseded record"),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/signed-documents",
        summary: "Deposit a document as the agency signed it (a PAdES-signed PDF, or any file with its detached \
                  CMS signature in Kho-Signature): its signature, chain to a configured X.509 root, timestamp and \
                  revocation evidence are checked, and the vault records it for the caller's agency with the \
                  validation logged (a detached signature is kept beside the record)",
        roles: "issuer (own agency: the signer's certificate must name it)",
        parameters: &[
            ("owner", "query", "12-digit citizen id or 10/13-digit organization code"),
            ("document_type", "query", "document type code"),
            ("title", "query", "title, 1-512 characters"),
            ("procedure", "query", "procedure code"),
            ("dossier", "query", "dossier code"),
            ("issued_on", "query", "YYYY-MM-DD; default today (Vietnam)"),
            ("valid_from", "query", "YYYY-MM-DD; default issued_on"),
            ("valid_until", "query", "YYYY-MM-DD, inclusive; default none"),
            ("supersedes", "query", "64 hex digits: the record this one replaces"),
            ("Kho-Signature", "header", "base64 of a detached CMS signature (.p7s, DER or PEM) over the body, \
                                         whose Content-Type becomes the document's media type; without it the \
                                         body must be a PAdES-signed PDF"),
        ],
        body: Some(("application/pdf", "the signed PDF exactly as signed, or the file the detached signature signs")),
        responses: &[
            ("201", "accepted; the record view with its receipt"),
            ("200", "this document was accepted before with the same details; the earlier record"),
            ("400", "malformed details, Kho-Signature not base64, or a malformed Content-Type"),
            UNAUTHENTICATED,
            ("403", "not an issuer, or the token names no agency; supersedes another agency's or owner's record"),
            ("409", "supersedes a record that is already superseded or revoked"),
            ("413", "larger than the signed-document limit"),
            ("422", "the embedded signature fails (its code says why: changed_after_signing, bad_digest, revoked, \
                     expired, no_path, no_revocation_info, ...), or its certificate is another agency's"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/agencies/{agency}/certification-requests",
        summary: "A person's uploads sent to this agency for certification and not yet certified (logged in their access log)",
        roles: "officer or issuer (own agency), auditor, citizen (own)",
        parameters: &[
            ("agency", "path", "the agency code"),
            ("owner", "query", "the person's 12-digit citizen id or 10/13-digit organization code"),
        ],
        body: None,
        responses: &[
            ("200", "{\"requests\": [{\"requested_at\", \"record\": record view}]}"),
            ("400", "malformed agency, owner or query"),
            UNAUTHENTICATED,
            DENIED,
        ],
    },
    Operation {
        method: "post",
        path: "/v1/certifications",
        summary: "Certify an upload as a copy of an original (the body is the signed copy certification, kind 9)",
        roles: "issuer (own agency)",
        parameters: &[],
        body: Some(("application/octet-stream", "the signed copy certification envelope")),
        responses: &[
            ("201", "accepted; the certified record's view"),
            ("200", "this certification was accepted before"),
            ("400", "malformed certification or bad signature"),
            UNAUTHENTICATED,
            ("403", "signed for another agency, or the owner did not ask this agency"),
            ("404", "no such record"),
            ("409", "the upload is already certified"),
            ("413", "body larger than the statement limit"),
            ("422", "untrusted signer, or the record is not an upload"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/records/{id}",
        summary: "A record with its current status and receipt",
        roles: "citizen (own), officer (with purpose), auditor, issuer (own agency)",
        parameters: &[ID, PURPOSE],
        body: None,
        responses: &[
            ("200", "the record view"),
            ("400", "malformed id or purpose"),
            UNAUTHENTICATED,
            DENIED,
            ("404", "no such record"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/records/{id}/content",
        summary: "The document bytes, verified; ETag is the BLAKE3 address; single byte ranges",
        roles: "citizen (own), officer (with purpose), auditor (with purpose)",
        parameters: &[ID, PURPOSE, ("Range", "header", "bytes=a-b, a- or -n"), ("If-None-Match", "header", "an ETag")],
        body: None,
        responses: &[
            ("200", "the whole document"),
            ("206", "the requested range"),
            ("304", "not modified"),
            UNAUTHENTICATED,
            DENIED,
            ("404", "no such record"),
            ("416", "range not satisfiable"),
            ("500", "integrity_error: the stored bytes failed verification and were not served"),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/records/{id}/revocation",
        summary: "Revoke a record with a signed revocation (the body is its envelope)",
        roles: "issuer (own agency)",
        parameters: &[ID],
        body: Some(("application/octet-stream", "the signed revocation envelope")),
        responses: &[
            ("201", "revoked; the record view"),
            ("200", "this revocation was accepted before"),
            ("400", "malformed revocation, or it names another record"),
            UNAUTHENTICATED,
            ("403", "another agency's record"),
            ("404", "no such record"),
            ("409", "already revoked"),
            ("422", "untrusted signer"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/owners/{owner}/records",
        summary: "An owner's records, newest first, filtered, paginated",
        roles: "citizen (own), officer (with purpose), auditor",
        parameters: &[
            OWNER,
            PURPOSE,
            ("type", "query", "document type code"),
            ("issuer", "query", "issuing agency code"),
            ("status", "query", "valid | not_yet_valid | expired | revoked | superseded"),
            ("cursor", "query", "next_cursor of the previous page"),
            ("limit", "query", "page size, 1 to 1000, default 50"),
        ],
        body: None,
        responses: &[
            ("200", "a page of record views and next_cursor"),
            ("400", "malformed owner, filter, cursor or limit"),
            UNAUTHENTICATED,
            DENIED,
        ],
    },
    Operation {
        method: "get",
        path: "/v1/owners/{owner}/access-log",
        summary: "Who read the owner's documents, when, why, and with what outcome; newest first",
        roles: "citizen (own)",
        parameters: &[
            OWNER,
            ("cursor", "query", "next_cursor of the previous page"),
            ("limit", "query", "page size, 1 to 1000, default 50"),
        ],
        body: None,
        responses: &[
            (
                "200",
                "a page of access events, next_cursor, and completeness: the newest checkpoint, the owner-map \
                 commitment with its inclusion proof, and the owner's chain head with its map proof (null before \
                 the first checkpoint); see docs/FORMAT.md 4.4",
            ),
            ("400", "malformed owner, cursor or limit"),
            UNAUTHENTICATED,
            ("403", "not the owner"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/owners/{owner}/log-entries",
        summary: "The owner's chain in the log (records, status changes, accesses) as leaf bytes, newest first, \
                  up to the newest owner-map commitment: what proves the access log complete",
        roles: "citizen (own)",
        parameters: &[
            OWNER,
            ("before", "query", "only entries with a log index below this (next_before of the previous page)"),
            ("limit", "query", "page size, 1 to 1000, default 50"),
        ],
        body: None,
        responses: &[
            ("200", "entries (log_index, entry_base64) and next_before"),
            ("400", "malformed owner, before or limit"),
            UNAUTHENTICATED,
            ("403", "not the owner"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/owners/{owner}/export",
        summary: "The owner's whole store as an evidence bundle (a ustar archive, docs/FORMAT.md 5): every record \
                  with its document, status evidence, receipts, certificates, the checkpoint, inclusion proofs, and \
                  the access log with its completeness evidence; checked offline by `kho verify BUNDLE`",
        roles: "citizen (own), auditor (with purpose; logged)",
        parameters: &[OWNER, PURPOSE],
        body: None,
        responses: &[
            ("200", "application/x-tar, with Content-Length"),
            ("400", "malformed owner or purpose"),
            UNAUTHENTICATED,
            DENIED,
            ("404", "no checkpoint yet"),
            ("503", "witnesses are required (fail-closed) and have not cosigned the checkpoint yet"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/records/{id}/bundle",
        summary: "One record's evidence bundle, its document included, to hand to a third party",
        roles: "citizen (own), officer (with purpose), auditor (with purpose); logged",
        parameters: &[ID, PURPOSE],
        body: None,
        responses: &[
            ("200", "application/x-tar, with Content-Length"),
            ("400", "malformed id or purpose"),
            UNAUTHENTICATED,
            DENIED,
            ("404", "no such record"),
            ("503", "witnesses are required (fail-closed) and have not cosigned the checkpoint yet"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/certificates",
        summary: "Every issuer key certificate, with its revocation if any",
        roles: "any authenticated caller",
        parameters: &[],
        body: None,
        responses: &[("200", "the certificates"), UNAUTHENTICATED],
    },
    Operation {
        method: "post",
        path: "/v1/certificates",
        summary: "Add an issuer key certificate signed by a trust anchor (the body is its envelope)",
        roles: "admin",
        parameters: &[],
        body: Some(("application/octet-stream", "the signed certificate envelope")),
        responses: &[
            ("201", "added"),
            ("200", "added before"),
            ("400", "malformed certificate"),
            UNAUTHENTICATED,
            ("403", "not an admin"),
            ("413", "body too large"),
            ("422", "not signed by a trust anchor"),
        ],
    },
    Operation {
        method: "post",
        path: "/v1/certificates/{id}/revocation",
        summary: "Revoke a certificate with an anchor-signed revocation (the body is its envelope)",
        roles: "admin",
        parameters: &[ID],
        body: Some(("application/octet-stream", "the signed certificate revocation envelope")),
        responses: &[
            ("201", "revoked"),
            ("200", "this revocation was accepted before"),
            ("400", "malformed revocation, or it names another certificate"),
            UNAUTHENTICATED,
            ("403", "not an admin"),
            ("404", "no such certificate"),
            ("409", "already revoked"),
            ("422", "not signed by a trust anchor"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/trust-anchors",
        summary: "The trust anchors' public keys, the vault's receipt key and its certificate if any",
        roles: "any authenticated caller",
        parameters: &[],
        body: None,
        responses: &[("200", "the keys"), UNAUTHENTICATED],
    },
    Operation {
        method: "get",
        path: "/v1/vault-certificate",
        summary: "The trust anchor's certificate of the vault key (a signed statement envelope, kind 8): with it, \
                  receipts and checkpoints verify from the trust anchors alone",
        roles: "anyone",
        parameters: &[],
        body: None,
        responses: &[("200", "the certificate envelope"), ("404", "no certificate installed")],
    },
    Operation {
        method: "get",
        path: "/v1/log/checkpoint",
        summary:
            "The newest checkpoint of the transparency log: a C2SP tlog-checkpoint signed note (text/plain), with \
                  the witnesses' cosignature lines; the Kho-Witnesses header says `cosigned=C; quorum=Q` and \
                  `; below-quorum` if so (with a fail-closed policy, the newest checkpoint that reached the quorum)",
        roles: "anyone",
        parameters: &[],
        body: None,
        responses: &[("200", "the signed note"), ("404", "no checkpoint has been signed yet")],
    },
    Operation {
        method: "get",
        path: "/v1/log/tile/{level}/{rest}",
        summary: "A hash tile of the log in the C2SP tlog-tiles layout (tile/<L>/<N>[.p/<W>]), 32 bytes per hash",
        roles: "anyone",
        parameters: &[
            ("level", "path", "tile level, 0 to 9"),
            ("rest", "path", "the tile index as x001/x234/067, then .p/<width> for a partial tile"),
        ],
        body: None,
        responses: &[("200", "the hashes"), ("404", "no such tile in the newest checkpoint's tree")],
    },
    Operation {
        method: "get",
        path: "/v1/log/tile/entries/{rest}",
        summary:
            "An entry bundle of the log (tlog-tiles): each leaf as a u16 length and its bytes (docs/FORMAT.md 4.1)",
        roles: "auditor (with purpose)",
        parameters: &[("rest", "path", "the tile index as x001/x234/067, then .p/<width> for a partial tile"), PURPOSE],
        body: None,
        responses: &[
            ("200", "the entries"),
            UNAUTHENTICATED,
            ("403", "not an auditor, or no purpose stated"),
            ("404", "no such tile in the newest checkpoint's tree"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/log/proof/inclusion",
        summary: "An inclusion proof (RFC 9162) of a log entry against a signed checkpoint",
        roles: "anyone",
        parameters: &[
            ("index", "query", "the entry's log index (a receipt's log_index)"),
            ("size", "query", "the tree size of a signed checkpoint; default the newest"),
        ],
        body: None,
        responses: &[
            ("200", "leaf hash, audit path and the signed checkpoint"),
            ("400", "malformed query"),
            ("404", "no checkpoint at that size, or the entry is not in it yet"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/log/proof/consistency",
        summary: "A consistency proof (RFC 9162) between two signed checkpoints",
        roles: "anyone",
        parameters: &[
            ("old", "query", "the older checkpoint's tree size"),
            ("new", "query", "the newer checkpoint's tree size; default the newest"),
        ],
        body: None,
        responses: &[
            ("200", "both signed checkpoints and the proof"),
            ("400", "malformed query, or old larger than new"),
            ("404", "no checkpoint at one of the sizes"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/openapi.json",
        summary: "This document",
        roles: "anyone",
        parameters: &[],
        body: None,
        responses: &[("200", "the OpenAPI document")],
    },
    Operation {
        method: "get",
        path: "/v1/stats/reuse",
        summary: "Reuse figures per day and agency, computed from the log: documents read by an agency's \
                  officers for a dossier (once per day, dossier and record) against documents it deposited",
        roles: "auditor, admin",
        parameters: &[
            ("from", "query", "first day, YYYY-MM-DD (Vietnam time), inclusive"),
            ("to", "query", "last day, YYYY-MM-DD, inclusive"),
            ("agency", "query", "only this agency's code"),
        ],
        body: None,
        responses: &[
            ("200", "{\"days\": [{\"day\", \"agency\", \"documents_reused\", \"documents_deposited\"}], \"total\": {...}}"),
            ("400", "malformed day, agency or query"),
            UNAUTHENTICATED,
            ("403", "not an auditor or admin"),
        ],
    },
    Operation {
        method: "get",
        path: "/v1/stats/daily",
        summary: "The public daily aggregate of the reuse figures: no person and no agency named",
        roles: "anyone",
        parameters: &[
            ("from", "query", "first day, YYYY-MM-DD (Vietnam time), inclusive"),
            ("to", "query", "last day, YYYY-MM-DD, inclusive"),
        ],
        body: None,
        responses: &[
            ("200", "{\"days\": [{\"day\", \"documents_reused\", \"documents_deposited\", \"agencies_reusing\"}]}"),
            ("400", "malformed day or query"),
        ],
    },
    Operation {
        method: "get",
        path: "/metrics",
        summary: "The server's figures in the OpenMetrics text format Prometheus scrapes (docs/OPERATIONS.md lists them)",
        roles: "anyone (restrict it at the reverse proxy)",
        parameters: &[],
        body: None,
        responses: &[("200", "application/openmetrics-text; version=1.0.0")],
    },
    Operation {
        method: "get",
        path: "/healthz",
        summary: "The process is alive",
        roles: "anyone",
        parameters: &[],
        body: None,
        responses: &[("200", "ok")],
    },
    Operation {
        method: "get",
        path: "/readyz",
        summary: "The vault can serve (the catalog answers, no failed fsync)",
        roles: "anyone",
        parameters: &[],
        body: None,
        responses: &[("200", "ready"), ("500", "not ready")],
    },
];

/// (method, path) of every described operation.
pub fn operations() -> Vec<(&'static str, &'static str)> {
    OPERATIONS.iter().map(|o| (o.method, o.path)).collect()
}

fn operation(op: &Operation) -> Value {
    let parameters: Vec<Value> = op
        .parameters
        .iter()
        .map(|(name, location, description)| {
            json!({"name": name, "in": location, "required": *location == "path" || *name == "Kho-Record",
                   "description": description, "schema": {"type": "string"}})
        })
        .collect();
    let mut responses = Map::new();
    for (status, description) in op.responses {
        let content = if status.starts_with('4') || status.starts_with('5') {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
        } else {
            json!({})
        };
        responses.insert((*status).to_owned(), json!({"description": description, "content": content.clone()}));
        if *status == "401" {
            let description =
                "rate_limited: the caller's subject is over its role's rate; Retry-After says when to try again";
            responses.insert("429".to_owned(), json!({"description": description, "content": content}));
        }
    }
    let mut value = json!({
        "summary": op.summary,
        "description": format!("Roles: {}.", op.roles),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some((media, description)) = op.body {
        value["requestBody"] = json!({"required": true, "description": description,
            "content": {media: {"schema": {"type": "string", "format": "binary"}}}});
    }
    if !op.roles.starts_with("anyone") {
        value["security"] = json!([{"bearer": []}]);
    }
    value
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let entry = paths.entry(op.path).or_insert_with(|| json!({}));
        entry[op.method] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Kho",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The e-data warehouse vault. Every read of a person's documents by someone else is recorded in their access log before any byte is sent. Signed statement formats: docs/FORMAT.md. Roles and the access matrix: docs/SECURITY.md."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA)"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string", "description": "stable machine-readable code"},
                        "message": {"type": "string", "description": "for people"}
                    }}}
                }
            }
        }
    })
}
