#!/usr/bin/env python3
"""Verify a Kho evidence bundle (docs/FORMAT.md section 5) without Kho's code, with Python's standard
library only: the statements and their rule from section 1, the log from section 4.

usage: verify_bundle.py BUNDLE [--anchor HEX]... [--vault-key HEX] [--at YYYY-MM-DD]
Without --anchor, the bundle's own trust anchors are used (and printed). Without --vault-key, the
bundle's vault key certificate must be signed by an anchor. Documents are checked by size and SHA-256
(the standard library has no BLAKE3; the record signs both). A statement signed under X.509 is checked
against the vault's validation of its signer (kind 10): logged just before it, for its certificate and
agency, with the CRLs and OCSP responses it names present; the chain itself is validated again by
`kho verify`, not here.
Prints one line per check and per document, then a JSON summary {"documents": {id: verdict},
"failed_checks": [...]}; exits 1 if any check fails or any document's evidence fails.
"""

import base64
import datetime
import hashlib
import json
import os
import struct
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_record import Reader, parse  # noqa: E402
from verify_log import (leaf_hash, open_checkpoint, open_handover, sha256, verify_consistency,  # noqa: E402
                        verify_inclusion, verify_map_proof)

VERDICTS = ["valid", "not_yet_valid", "expired", "superseded", "revoked", "self_uploaded", "certified_copy",
            "unknown_issuer", "proof_fails", "tampered"]
FAILURES = {"unknown_issuer", "proof_fails", "tampered"}
EXTENSIONS = {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png", "image/tiff": "tif",
              "application/xml": "xml", "text/xml": "xml", "application/json": "json", "text/plain": "txt"}
KIND_NUMBERS = {"record": 1, "record revocation": 2, "key certificate": 3, "certificate revocation": 4,
                "copy certification": 9, "signature validation": 10}
# FORMAT.md 1.5: an X.509 signer's validation counts only if logged at most this long before its statement.
VALIDATION_AGE_MS_MAX = 10 * 60 * 1000
# FORMAT.md 1.5: the vault signs its owners' uploads under this code, and nobody else may.
SELF_UPLOAD = "kho.self-upload"


def fmt_ms(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(timespec="milliseconds")


def decode_entry(data):
    """A log entry (section 4.1) as a dict."""
    r = Reader(data)
    if r.u8() != 1:
        raise ValueError("entry version")
    entry = {"kind": r.u8(), "accepted_at_ms": r.i64(), "id": r.hex32(), "owner": None}
    flag = r.u8()
    if flag == 1:
        entry.update(owner=r.str(), position=r.u64(), previous=r.take(32))
    elif flag != 0:
        raise ValueError("owner link flag")
    if r.at != len(data):
        raise ValueError("trailing bytes")
    return entry


class Bundle:
    def __init__(self, path):
        self.files, self.documents = {}, {}
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                if member.isdir():
                    continue
                if not member.isreg():
                    raise ValueError("%s is not a regular file" % member.name)
                if member.name in self.files or member.name in self.documents:
                    raise ValueError("%s appears twice" % member.name)
                data = archive.extractfile(member)
                parts = member.name.split("/")
                if len(parts) == 3 and parts[0] == "records" and parts[2].startswith("document."):
                    digest, size = hashlib.sha256(), 0
                    for chunk in iter(lambda: data.read(1 << 16), b""):
                        digest.update(chunk)
                        size += len(chunk)
                    self.documents[member.name] = (digest.hexdigest(), size)
                else:
                    self.files[member.name] = data.read()
        self.manifest = json.loads(self.files["manifest.json"])

    def statement(self, path):
        if path not in self.files:
            raise ValueError("%s is missing" % path)
        statement = parse(self.files[path])
        if not statement["signature_valid"]:
            raise ValueError("%s: the signature does not verify" % path)
        return statement


def main(argv):
    args = argv[1:]
    if not args or args[0].startswith("--"):
        print(__doc__)
        return 2
    path, options = args[0], args[1:]
    anchors, vault_key, today = [], None, None
    while options:
        flag, value, options = options[0], options[1], options[2:]
        if flag == "--anchor":
            anchors.append(value.lower())
        elif flag == "--vault-key":
            vault_key = value.lower()
        elif flag == "--at":
            today = value
        else:
            print(__doc__)
            return 2
    today = today or datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=7))).date().isoformat()
    bundle = Bundle(path)
    m = bundle.manifest
    assert m["format"] == "kho-bundle" and m["version"] == 1, "not a version 1 Kho bundle"
    checks = []

    def check(ok, what):
        checks.append((bool(ok), what))
        print(("ok   " if ok else "FAIL ") + what)
        return bool(ok)

    # Trust: anchors, then the vault key, then the checkpoint.
    if not anchors:
        anchors = m["trust_anchors"]
        check(anchors, "trusting the bundle's own trust anchors " + ", ".join(anchors))
    window = None
    if vault_key is not None:
        trusted = check(vault_key == m["vault_key"], "the bundle's vault key is the given one")
    else:
        try:
            cert = bundle.statement("vault-key.kho-cert")
            trusted = check(cert["kind"] == "vault key certificate" and cert["signer"] in anchors
                            and cert["subject"] == m["vault_key"] and cert["origin"] == m["log_origin"],
                            "the vault key is certified for the log by a trust anchor")
            window = (cert["valid_from_ms"], cert["valid_until_ms"])
        except ValueError as error:
            trusted = check(False, "the vault key is not trusted: %s" % error)
        vault_key = m["vault_key"]
    checkpoint = None
    if trusted:
        try:
            size, root = open_checkpoint(bundle.files["checkpoint"].decode(), m["log_origin"],
                                         bytes.fromhex(vault_key))
            if check(size == m["checkpoint_size"], "the checkpoint of %d entries is signed by the vault key" % size):
                checkpoint = (size, root)
        except (ValueError, KeyError) as error:
            check(False, "the checkpoint does not verify: %s" % error)

    # The vault's earlier keys (section 5.1): each handover note names the key that followed it and is
    # signed by both, a prefix of the checkpoint; `served` maps each trusted key to the log entries it
    # receipted.
    served = {vault_key: (0, float("inf"))}
    if checkpoint:
        successor, successor_size, chain = vault_key, checkpoint[0], []
        for listed in reversed(m.get("retired_vault_keys", [])):
            try:
                note = bundle.files[listed["handover"]].decode()
                size, root, named = open_handover(note, m["log_origin"], bytes.fromhex(listed["key"]))
                if named.hex() != successor:
                    raise ValueError("the handover names another key than the one that followed")
                proof = [bytes.fromhex(h) for h in listed["consistency"]]
                if size > successor_size or size > 0 and not verify_consistency(
                        size, checkpoint[0], root, checkpoint[1], proof):
                    raise ValueError("the handover is not a prefix of the checkpoint")
            except (ValueError, KeyError) as error:
                check(False, "the earlier vault key %s is not trusted: %s" % (listed["key"], error))
                break
            check(True, "the earlier vault key %s handed over at log size %d" % (listed["key"][:16], size))
            chain.append((listed["key"], size))
            successor, successor_size = listed["key"], size
        start = 0
        for key, until in reversed(chain):
            served[key] = (start, until)
            start = until
        served[vault_key] = (start, float("inf"))

    log = json.loads(bundle.files["log.json"])
    entries = {}
    for item in log["entries"]:
        data = bytes.fromhex(item["entry_hex"])
        proven = None
        if item["inclusion"] is None:
            proven = "it has no inclusion proof"
        elif checkpoint is None:
            proven = "there is no valid checkpoint"
        elif not verify_inclusion(item["index"], checkpoint[0], leaf_hash(data),
                                  [bytes.fromhex(h) for h in item["inclusion"]], checkpoint[1]):
            proven = "its inclusion proof fails"
        entries[item["index"]] = (data, proven)

    def receipted(statement, receipt_path):
        """The checked receipt of `statement` (raises ValueError with the reason)."""
        if not trusted:
            raise ValueError("the vault key is not trusted")
        receipt = bundle.statement(receipt_path)
        if receipt["kind"] != "receipt" or receipt["signer"] not in served:
            raise ValueError("the receipt is not signed by the vault key")
        first, end = served[receipt["signer"]]
        if not first <= receipt["log_index"] < end:
            raise ValueError("the receipt is signed by a vault key that did not serve its log entry")
        if window and receipt["signer"] == vault_key and not window[0] <= receipt["accepted_at_ms"] <= window[1]:
            raise ValueError("the receipt's time is outside the vault key certificate")
        if receipt["statement"] != statement["id"] or receipt["statement_kind"] != KIND_NUMBERS[statement["kind"]]:
            raise ValueError("the receipt is for another statement")
        index = receipt["log_index"]
        if index not in entries:
            raise ValueError("log entry #%d is not in the bundle" % index)
        data, proven = entries[index]
        if proven:
            raise ValueError("log entry #%d: %s" % (index, proven))
        entry = decode_entry(data)
        if (entry["kind"], entry["id"], entry["accepted_at_ms"]) != (
                KIND_NUMBERS[statement["kind"]], statement["id"], receipt["accepted_at_ms"]):
            raise ValueError("log entry #%d is not this statement's" % index)
        return receipt

    # Issuer certificates whose own evidence holds.
    issuers = []
    for cert_id in m["certificates"]:
        base = "certs/%s/" % cert_id
        try:
            cert = bundle.statement(base + "certificate.kho-cert")
            accepted = receipted(cert, base + "certificate.kho-receipt")["accepted_at_ms"]
        except ValueError:
            continue
        revoked = None
        if cert["signer"] in anchors and base + "revocation.kho-revocation" in bundle.files:
            try:
                revocation = bundle.statement(base + "revocation.kho-revocation")
                if revocation["certificate"] == cert["id"] and revocation["signer"] in anchors:
                    revoked = receipted(revocation, base + "revocation.kho-receipt")["accepted_at_ms"]
            except ValueError:
                pass
        issuers.append((cert, accepted, revoked, cert["signer"] in anchors))

    # The vault's validations of X.509 signers, by the statement each validated; those receipted and in
    # the log count for the owner's chain (even one whose statement was then refused).
    validations, validation_ids, signed_by = {}, set(), {}
    for name in bundle.files:
        if name.startswith("validations/") and name.endswith(".kho-validation"):
            receipt_path = name[:-len(".kho-validation")] + ".kho-receipt"
            try:
                validation = bundle.statement(name)
                if validation["kind"] != "signature validation":
                    continue
                receipted(validation, receipt_path)
            except ValueError:
                continue
            validation_ids.add(validation["id"])
            validations.setdefault(validation["statement"], []).append((validation, receipt_path))

    def x509_acceptance(statement, agency, receipt):
        """None if the vault's logged validation covers the X.509 `statement`, else the reason."""
        reasons = []
        for validation, receipt_path in validations.get(statement["id"], []):
            try:
                if validation["signer"] not in served:
                    raise ValueError("not signed by the vault key")
                validated = bundle.statement(receipt_path)
                if validation["agency"] != agency:
                    raise ValueError("for another agency")
                age = receipt["accepted_at_ms"] - validated["accepted_at_ms"]
                if validated["log_index"] >= receipt["log_index"] or not 0 <= age <= VALIDATION_AGE_MS_MAX:
                    raise ValueError("not logged in the minutes before the statement")
                # A document deposited with its own signature: the certificate is in the document.
                embedded = statement["signer"] in served
                if not embedded and validation["signer_certificate"] != statement["x509_certificate"]:
                    raise ValueError("of another certificate than the signer's")
                for digest in validation["evidence"]:
                    data = bundle.files.get("x509/evidence/%s.der" % digest)
                    if data is None or hashlib.sha256(data).hexdigest() != digest:
                        raise ValueError("its revocation evidence %s is missing or altered" % digest)
            except ValueError as error:
                reasons.append("validation %s: %s" % (validation["id"], error))
                continue
            detached = "records/%s/signature.p7s" % statement["id"]
            if embedded and detached in bundle.files:
                again = "its detached signature is %s: check it again with `kho check-signature " \
                        "--signature`" % detached
            elif embedded:
                again = "check the document's signature again with `kho check-signature`"
            else:
                again = "the chain is validated again by `kho verify`, not here"
            signed_by[statement["id"]] = "%ssigned by %s under %s, as the vault validated at %s with %d CRL/OCSP " \
                "response(s) (%s)" % ("the document's own signature: " if embedded else "", validation["signer_subject"],
                                      validation["root_subject"], fmt_ms(validation["decided_at_ms"]),
                                      len(validation["evidence"]), again)
            return None
        return "; ".join(reasons) or "no validation by the vault of this X.509 signer in the bundle"

    def acceptance(statement, agency, receipt):
        """None if a trusted certificate (or, for an X.509 signer, the vault's validation) covers the
        signer of `statement` for `agency` when `receipt` says it was accepted, else the reason."""
        if statement["signer"].startswith("x509:") or (statement["signer"] in served
                                                         and statement["kind"] == "record"):
            return x509_acceptance(statement, agency, receipt)
        signer, at = statement["signer"], receipt["accepted_at_ms"]
        reasons = []
        for cert, accepted, revoked, anchored in issuers:
            if cert["subject"] != signer:
                continue
            if not anchored:
                reasons.append("certificate %s is not signed by a trusted anchor" % cert["id"])
            elif cert["agency"] != agency:
                reasons.append("certificate %s is for another agency" % cert["id"])
            elif not cert["valid_from_ms"] <= at <= cert["valid_until_ms"]:
                reasons.append("certificate %s was not valid then" % cert["id"])
            elif accepted > at:
                reasons.append("certificate %s reached the vault later" % cert["id"])
            elif revoked is not None and revoked <= at:
                reasons.append("certificate %s was revoked before" % cert["id"])
            else:
                return None
        return "; ".join(reasons) or "no certificate in the bundle for the signing key"

    documents, record_ids, revocation_ids, certification_ids = {}, set(), set(), set()
    for listed in m["records"]:
        verdict, reasons = "valid", []

        def fail(v, reason):
            nonlocal verdict
            verdict = max(verdict, v, key=VERDICTS.index)
            reasons.append(reason)

        rid = listed["id"]
        base = "records/%s/" % rid
        try:
            record = bundle.statement(base + "record.kho-record")
            if record["kind"] != "record" or record["id"] != rid:
                raise ValueError("the record file is not record %s" % rid)
        except ValueError as error:
            fail("tampered", str(error))
            documents[rid] = verdict
            print("%s  %s  %s" % (verdict.upper(), rid, "; ".join(reasons)))
            continue
        record_ids.add(rid)
        if record["owner"] != m["owner"]:
            fail("tampered", "the record's owner is not the bundle's")
        document = base + "document." + EXTENSIONS.get(record["media_type"], "bin")
        if document not in bundle.documents:
            fail("tampered", "%s is missing" % document)
        elif bundle.documents[document] != (record["sha256"], record["size_bytes"]):
            fail("tampered", "the document is not the one signed (size or SHA-256 differ)")
        try:
            receipt = receipted(record, base + "record.kho-receipt")
            if record["issuer_agency"] == SELF_UPLOAD:
                reason = None if record["signer"] in served else "a self-upload not signed by the vault key"
            else:
                reason = acceptance(record, record["issuer_agency"], receipt)
            if reason:
                fail("unknown_issuer", reason)
            elif rid in signed_by:
                reasons.append(signed_by[rid])
        except ValueError as error:
            fail("proof_fails", "record: %s" % error)
        if verdict not in FAILURES and record["issuer_agency"] == SELF_UPLOAD:
            verdict = "self_uploaded"
            if base + "certified-copy.kho-copy" in bundle.files:
                try:
                    certification = bundle.statement(base + "certified-copy.kho-copy")
                    if certification["kind"] != "copy certification" or certification["record"] != rid:
                        raise ValueError("the certification names another record")
                    receipt = receipted(certification, base + "certified-copy.kho-receipt")
                    at = receipt["accepted_at_ms"]
                    reason = acceptance(certification, certification["agency"], receipt)
                    if reason:
                        raise ValueError(reason)
                    certification_ids.add(certification["id"])
                    verdict = "certified_copy"
                    reasons.append("certified by %s at %s from %s" % (certification["agency"], fmt_ms(at),
                                                                       certification["original"]))
                except ValueError as error:
                    verdict = "proof_fails"
                    reasons.append("certification: %s" % error)
        elif verdict not in FAILURES:
            if base + "revocation.kho-revocation" in bundle.files:
                try:
                    revocation = bundle.statement(base + "revocation.kho-revocation")
                    if revocation["record"] != rid or revocation["issuer_agency"] != record["issuer_agency"]:
                        raise ValueError("the revocation names another record or agency")
                    receipt = receipted(revocation, base + "revocation.kho-receipt")
                    at = receipt["accepted_at_ms"]
                    reason = acceptance(revocation, revocation["issuer_agency"], receipt)
                    if reason:
                        raise ValueError(reason)
                    revocation_ids.add(revocation["id"])
                    verdict = "revoked"
                    reasons.append("revoked at %s: %s" % (fmt_ms(at), revocation["reason"]))
                except ValueError as error:
                    fail("proof_fails", "revocation: %s" % error)
            elif base + "superseded-by.kho-record" in bundle.files:
                try:
                    by = bundle.statement(base + "superseded-by.kho-record")
                    if (by["supersedes"], by["owner"], by["issuer_agency"]) != (
                            rid, record["owner"], record["issuer_agency"]):
                        raise ValueError("the superseding record does not supersede this one")
                    receipt = receipted(by, base + "superseded-by.kho-receipt")
                    reason = acceptance(by, by["issuer_agency"], receipt)
                    if reason:
                        raise ValueError(reason)
                    verdict = "superseded"
                    reasons.append("superseded by record %s" % by["id"])
                except ValueError as error:
                    fail("proof_fails", "superseding record: %s" % error)
            elif today < record["valid_from"]:
                verdict = "not_yet_valid"
            elif record["valid_until"] is not None and today > record["valid_until"]:
                verdict = "expired"
        documents[rid] = verdict
        print("%s  %s  %s" % (verdict.upper(), rid, "; ".join(reasons)))

    listed = {"records/%s/" % r["id"] for r in m["records"]}
    for name in list(bundle.files) + list(bundle.documents):
        if name.startswith("records/") and not any(name.startswith(prefix) for prefix in listed):
            check(False, "%s belongs to no record the manifest lists" % name)

    if m["scope"] == "owner":
        completeness(bundle, log, entries, checkpoint, record_ids,
                     revocation_ids | certification_ids | validation_ids, check)

    failed = [what for ok, what in checks if not ok]
    print(json.dumps({"documents": documents, "failed_checks": failed}, sort_keys=True))
    return 1 if failed or any(v in FAILURES for v in documents.values()) else 0


def completeness(bundle, log, entries, checkpoint, record_ids, statement_ids, check):
    """Section 4.4, then: every record, revocation, certification and access event of the chain is in
    the bundle."""
    owner = bundle.manifest["owner"]
    c = log["completeness"]
    index = c["commitment_index"]
    if checkpoint is None or index not in entries or entries[index][1]:
        check(False, "the owner-map commitment is not proven in the checkpoint")
        return
    commitment = decode_entry(entries[index][0])
    if not check(commitment["kind"] == 7, "entry #%d is an owner-map commitment" % index):
        return
    leaf = c["map_proof"]["leaf"]
    try:
        value = verify_map_proof(bytes.fromhex(commitment["id"]), sha256(owner.encode()),
                                 [bytes.fromhex(s) for s in c["map_proof"]["siblings"]],
                                 None if leaf is None else (bytes.fromhex(leaf["key"]), bytes.fromhex(leaf["value"])))
    except ValueError as error:
        check(False, "the owner map proof fails: %s" % error)
        return
    length, head_index, expected = (0, None, bytes(32)) if value is None else (
        struct.unpack(">QQ", value[:16]) + (value[16:],))
    position, chain = length, []
    for n, i in enumerate(c["chain"]):
        data = entries.get(i, (None,))[0]
        entry = decode_entry(data) if data is not None else None
        ok = (entry is not None and position > 0 and leaf_hash(data) == expected and entry["owner"] == owner
              and entry["position"] == position and i < index and (n > 0 or i == head_index))
        if not ok:
            check(False, "the owner's chain breaks at position %d" % position)
            return
        chain.append((i, entry))
        expected, position = entry["previous"], position - 1
    if not check(position == 0, "the owner's %d log entries are complete through entry #%d" % (len(chain), index)):
        return
    missing = [e["id"] for _, e in chain if (e["kind"] == 1 and e["id"] not in record_ids)
               or (e["kind"] in (2, 9, 10) and e["id"] not in statement_ids)]
    check(not missing, "every record and revocation of the owner's log is in the bundle"
          + ("" if not missing else ": missing " + ", ".join(missing)))
    events = json.loads(bundle.files["access-log.json"])["events"]
    given = {}
    for event in events:
        canonical = base64.b64decode(event["canonical_base64"])
        given[event["log_index"]] = hashlib.sha256(canonical).hexdigest()
    chained = {i: e["id"] for i, e in chain if e["kind"] == 6}
    check(given == chained, "the access log holds exactly the owner's %d access events of the log" % len(chained))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
