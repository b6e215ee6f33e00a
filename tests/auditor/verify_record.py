#!/usr/bin/env python3
"""Verify a Kho record, its issuer key certificate and its document without Kho's code.

Written from docs/FORMAT.md alone, with only the Python standard library: the Ed25519 verification
below follows RFC 8032 section 6 (reference implementation), SHA-256 comes from hashlib.

usage: verify_record.py RECORD RECEIPT CERTIFICATE ANCHOR_KEY_HEX VAULT_KEY_HEX [DOCUMENT]
                        [--revocation CERTIFICATE_REVOCATION REVOCATION_RECEIPT]
       VAULT_KEY_HEX may be --vault-certificate=FILE: the vault key certificate (statement kind 8), which
       must be signed by the anchor and valid at the receipt's time.
The rule is the vault's (docs/FORMAT.md section 1.5): the certificate must be valid, and not revoked,
at the moment the vault accepted the record (its receipt's time), a revocation counting from its own
receipt's time. Prints the decoded statements as JSON and one line per check; exits 1 if any fails.
"""
import hashlib
import json
import sys

# ---- Ed25519 verification (RFC 8032, section 6) ----
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P)
    if x2 % P == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _add(a, b):
    e1 = (a[1] - a[0]) * (b[1] - b[0]) % P
    e2 = (a[1] + a[0]) * (b[1] + b[0]) % P
    c = 2 * a[3] * b[3] * D % P
    d = 2 * a[2] * b[2] % P
    e, f, g, h = e2 - e1, d - c, d + c, e2 + e1
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s, point):
    result = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            result = _add(result, point)
        point = _add(point, point)
        s >>= 1
    return result


def _equal(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _decompress(data):
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


_GY = 4 * pow(5, P - 2, P) % P
_GX = _recover_x(_GY, 0)
BASE = (_GX, _GY, 1, _GX * _GY % P)


def ed25519_verify(public, message, signature):
    a = _decompress(public)
    r = _decompress(signature[:32]) if len(signature) == 64 else None
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % L
    return _equal(_mul(s, BASE), _add(r, _mul(h, a)))


# ---- The canonical encoding (docs/FORMAT.md, "Signed statements") ----
class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        if self.at + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return int.from_bytes(self.take(2), "big")

    def u32(self):
        return int.from_bytes(self.take(4), "big")

    def u64(self):
        return int.from_bytes(self.take(8), "big")

    def i64(self):
        return int.from_bytes(self.take(8), "big", signed=True)

    def bytes(self):
        return self.take(self.u32())

    def str(self):
        return self.bytes().decode("utf-8")

    def hex32(self):
        return self.take(32).hex()

    def option(self, read):
        flag = self.u8()
        if flag not in (0, 1):
            raise ValueError("bad option flag")
        return read() if flag else None

    def date(self):
        v = self.u32()
        return "%04d-%02d-%02d" % (v // 10000, v // 100 % 100, v % 100)


KINDS = {1: "record", 2: "record revocation", 3: "key certificate", 4: "certificate revocation", 5: "receipt",
         8: "vault key certificate", 9: "copy certification"}


def parse(envelope):
    outer = Reader(envelope)
    signed, signature = outer.bytes(), outer.bytes()
    if outer.at != len(envelope):
        raise ValueError("trailing bytes after the envelope")
    r = Reader(signed)
    if r.take(8) != b"kho-stmt" or r.u8() != 1:
        raise ValueError("not a version 1 Kho statement")
    kind = r.u8()
    if r.u16() != 1:
        raise ValueError("only algorithm 1 (Ed25519) is handled here")
    out = {"kind": KINDS.get(kind), "signer": r.bytes().hex()}
    if kind == 1:
        out.update(owner=r.str(), document_type=r.str(), title=r.str(), issuer_agency=r.str(),
                   issued_on=r.date(), valid_from=r.date(), valid_until=r.option(r.date),
                   procedure=r.str(), dossier=r.str(), blake3=r.hex32(), sha256=r.hex32(),
                   size_bytes=r.u64(), media_type=r.str(), supersedes=r.option(r.hex32),
                   signed_at_ms=r.i64())
    elif kind == 3:
        out.update(agency=r.str())
        if r.u16() != 1:
            raise ValueError("certificate subject is not Ed25519")
        out.update(subject=r.bytes().hex(), valid_from_ms=r.i64(), valid_until_ms=r.i64(), signed_at_ms=r.i64())
    elif kind == 8:
        out.update(origin=r.str())
        if r.u16() != 1:
            raise ValueError("vault key certificate subject is not Ed25519")
        out.update(subject=r.bytes().hex(), valid_from_ms=r.i64(), valid_until_ms=r.i64(), signed_at_ms=r.i64())
    elif kind == 2:
        out.update(record=r.hex32(), issuer_agency=r.str(), reason=r.str(), signed_at_ms=r.i64())
    elif kind == 4:
        out.update(certificate=r.hex32(), reason=r.str(), signed_at_ms=r.i64())
    elif kind == 5:
        out.update(statement=r.hex32(), statement_kind=r.u8(), log_index=r.u64(), accepted_at_ms=r.i64())
    elif kind == 9:
        out.update(record=r.hex32(), agency=r.str(), officer=r.str(), original_type=r.str(), original=r.str(),
                   signed_at_ms=r.i64())
    else:
        raise ValueError("unknown statement kind %d" % kind)
    if r.at != len(signed):
        raise ValueError("trailing bytes after the last field")
    out["id"] = hashlib.sha256(signed).hexdigest()
    out["signature_valid"] = ed25519_verify(bytes.fromhex(out["signer"]), signed, signature)
    return out


def main(argv):
    args = argv[1:]
    revocation = None
    if "--revocation" in args:
        at = args.index("--revocation")
        revocation = args[at + 1:at + 3]
        args = args[:at] + args[at + 3:]
        if len(revocation) != 2:
            print(__doc__)
            return 2
    if len(args) not in (5, 6):
        print(__doc__)
        return 2
    read = lambda path: parse(open(path, "rb").read())  # noqa: E731
    record, receipt, certificate = read(args[0]), read(args[1]), read(args[2])
    anchor, vault_key = args[3].lower(), args[4].lower()
    statements = {"record": record, "receipt": receipt, "certificate": certificate}
    accepted_at = receipt.get("accepted_at_ms")
    checks = []
    if args[4].startswith("--vault-certificate="):
        vault_certificate = read(args[4].split("=", 1)[1])
        statements["vault_certificate"] = vault_certificate
        vault_key = vault_certificate.get("subject")
        checks += [
            (vault_certificate["kind"] == "vault key certificate" and vault_certificate["signature_valid"]
             and vault_certificate["signer"] == anchor, "the vault key certificate is signed by the trust anchor"),
            (accepted_at is not None
             and vault_certificate["valid_from_ms"] <= accepted_at <= vault_certificate["valid_until_ms"],
             "the vault key was certified when it signed the receipt"),
        ]
    checks += [
        (record["kind"] == "record", "the first file is a record"),
        (record["signature_valid"], "the record's signature verifies under its signer key"),
        (receipt["kind"] == "receipt" and receipt["signature_valid"], "the second file is a signed receipt"),
        (receipt["signer"] == vault_key, "the receipt is signed by the given vault key"),
        (receipt.get("statement") == record["id"] and receipt.get("statement_kind") == 1,
         "the receipt is for this record"),
        (certificate["kind"] == "key certificate", "the third file is a key certificate"),
        (certificate["signer"] == anchor, "the certificate is signed by the given trust anchor"),
        (certificate["signature_valid"], "the certificate's signature verifies"),
        (certificate["subject"] == record["signer"], "the certificate is for the record's signer"),
        (certificate["agency"] == record["issuer_agency"], "the certificate's agency is the record's issuer"),
        (accepted_at is not None and certificate["valid_from_ms"] <= accepted_at <= certificate["valid_until_ms"],
         "the key was certified when the vault accepted the record"),
    ]
    if revocation is not None:
        revoked, revoked_receipt = read(revocation[0]), read(revocation[1])
        statements.update(revocation=revoked, revocation_receipt=revoked_receipt)
        checks += [
            (revoked["kind"] == "certificate revocation" and revoked["signature_valid"]
             and revoked["signer"] == anchor and revoked.get("certificate") == certificate["id"],
             "the revocation is of this certificate, signed by the trust anchor"),
            (revoked_receipt["kind"] == "receipt" and revoked_receipt["signature_valid"]
             and revoked_receipt["signer"] == vault_key and revoked_receipt.get("statement") == revoked["id"]
             and revoked_receipt.get("statement_kind") == 4,
             "the revocation's receipt is the vault's, for this revocation"),
            (accepted_at is not None and revoked_receipt.get("accepted_at_ms", 0) > accepted_at,
             "the certificate was revoked after the vault accepted the record"),
        ]
    print(json.dumps(statements, indent=2, ensure_ascii=False))
    if len(args) == 6:
        content = open(args[5], "rb").read()
        checks.append((len(content) == record["size_bytes"], "the document's size matches"))
        checks.append((hashlib.sha256(content).hexdigest() == record["sha256"], "the document's SHA-256 matches"))
    for passed, what in checks:
        print(("ok   " if passed else "FAIL ") + what)
    return 0 if all(passed for passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
