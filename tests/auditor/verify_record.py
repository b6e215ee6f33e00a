#!/usr/bin/env python3
"""Verify a Kho record, its issuer key certificate and its document without Kho's code.

Written from docs/FORMAT.md alone, with only the Python standard library: the Ed25519 verification
below follows RFC 8032 section 6 (reference implementation), SHA-256 comes from hashlib; statements signed
under X.509 (algorithms 2 and 3) are verified with the key of the signer's certificate (ECDSA P-256 from
FIPS 186-4, RSA PKCS#1 v1.5 and PSS from RFC 8017). Whether that certificate chains to a root is the
vault's validation (statement kind 10), which verify_bundle.py checks is logged; `kho verify` validates
the chain again.

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


# ---- X.509 signers (docs/FORMAT.md 1.3): the key in the signer's certificate ----
def der_items(data):
    """The top-level DER items of `data`: (tag, contents) pairs."""
    items, at = [], 0
    while at < len(data):
        tag, length = data[at], data[at + 1]
        at += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[at:at + count], "big")
            at += count
        if at + length > len(data):
            raise ValueError("truncated DER")
        items.append((tag, data[at:at + length]))
        at += length
    return items


def certificate_key(der):
    """(algorithm OID bytes, key bytes) of a certificate's subjectPublicKeyInfo."""
    (tag, certificate), = der_items(der)
    tbs = der_items(der_items(certificate)[0][1])
    fields = tbs[1:] if tbs[0][0] == 0xA0 else tbs  # skip the explicit version
    spki = der_items(fields[5][1])  # serial, signature, issuer, validity, subject, then the key
    algorithm = der_items(spki[0][1])[0][1]
    return algorithm, spki[1][1][1:]  # the BIT STRING without its unused-bits byte


EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")
RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")
# P-256 (FIPS 186-4 D.1.2.3)
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
P256_G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
          0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)


def _ec_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P256_P == 0:
        return None
    if a == b:
        slope = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, P256_P)
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, P256_P)
    x = (slope * slope - a[0] - b[0]) % P256_P
    return x, (slope * (a[0] - x) - a[1]) % P256_P


def _ec_mul(k, point):
    result = None
    while k:
        if k & 1:
            result = _ec_add(result, point)
        point, k = _ec_add(point, point), k >> 1
    return result


def ecdsa_p256_verify(point, message, signature):
    if len(point) != 65 or point[0] != 4 or len(signature) != 64:
        return False
    q = (int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))
    if (q[1] * q[1] - q[0] ** 3 + 3 * q[0] - P256_B) % P256_P:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (0 < r < P256_N and 0 < s < P256_N):
        return False
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    w = pow(s, -1, P256_N)
    point = _ec_add(_ec_mul(e * w % P256_N, P256_G), _ec_mul(r * w % P256_N, q))
    return point is not None and point[0] % P256_N == r


def _mgf1(seed, length):
    out, counter = b"", 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def rsa_verify(key, message, signature, padding):
    n, e = (int.from_bytes(value, "big") for _, value in der_items(der_items(key)[0][1]))
    k = (n.bit_length() + 7) // 8
    if len(signature) != k or int.from_bytes(signature, "big") >= n:
        return False
    digest = hashlib.sha256(message).digest()
    if padding == 1:  # PKCS#1 v1.5 (RFC 8017 9.2) with SHA-256's DigestInfo
        info = bytes.fromhex("3031300d060960864801650304020105000420") + digest
        expected = b"\x00\x01" + b"\xff" * (k - len(info) - 3) + b"\x00" + info
        return pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big") == expected
    em_bits = n.bit_length() - 1  # PSS (RFC 8017 9.1.2), MGF1-SHA-256, 32-byte salt
    em_len = (em_bits + 7) // 8
    em = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")[-em_len:]
    if em[-1] != 0xBC:
        return False
    masked, h = em[:em_len - 33], em[em_len - 33:-1]
    db = bytes(a ^ b for a, b in zip(masked, _mgf1(h, len(masked))))
    db = bytes([db[0] & (0xFF >> (8 * em_len - em_bits))]) + db[1:]
    salt_at = len(db) - 32
    if db[:salt_at - 1].strip(b"\x00") or db[salt_at - 1] != 1:
        return False
    return hashlib.sha256(bytes(8) + digest + db[salt_at:]).digest() == h


def x509_verify(algorithm, padding, chain, message, signature):
    oid, key = certificate_key(chain[0])
    if algorithm == 2:
        return oid == EC_PUBLIC_KEY and ecdsa_p256_verify(key, message, signature)
    return oid == RSA_ENCRYPTION and rsa_verify(key, message, signature, padding)


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
         8: "vault key certificate", 9: "copy certification", 10: "signature validation"}


def parse(envelope):
    outer = Reader(envelope)
    signed, signature = outer.bytes(), outer.bytes()
    if outer.at != len(envelope):
        raise ValueError("trailing bytes after the envelope")
    r = Reader(signed)
    if r.take(8) != b"kho-stmt" or r.u8() != 1:
        raise ValueError("not a version 1 Kho statement")
    kind = r.u8()
    algorithm = r.u16()
    if algorithm not in (1, 2, 3):
        raise ValueError("unknown signature algorithm %d" % algorithm)
    signer = r.bytes()
    out = {"kind": KINDS.get(kind), "signer": signer.hex()}
    if algorithm != 1:
        key = Reader(signer)
        padding = key.u8() if algorithm == 3 else None
        chain = [key.bytes() for _ in range(key.u8())]
        if not 1 <= len(chain) <= 9 or key.at != len(signer) or padding not in (None, 1, 2):
            raise ValueError("a malformed X.509 signer")
        # Identified by its certificate: FORMAT.md's key fingerprint.
        out.update(signer="x509:" + hashlib.sha256(algorithm.to_bytes(2, "big") + chain[0]).hexdigest(),
                   x509_chain=[c.hex() for c in chain], x509_certificate=hashlib.sha256(chain[0]).hexdigest())
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
    elif kind == 10:
        out.update(statement=r.hex32(), agency=r.str(), signer_certificate=r.hex32(), signer_subject=r.str(),
                   root=r.hex32(), root_subject=r.str(), decided_at_ms=r.i64())
        basis = r.u8()
        if basis == 2:
            out.update(timestamp_token=r.hex32(), timestamp_authority=r.str())
        elif basis != 1:
            raise ValueError("unknown validation basis %d" % basis)
        out.update(evidence=[r.hex32() for _ in range(r.u16())], signed_at_ms=r.i64())
    elif kind == 9:
        out.update(record=r.hex32(), agency=r.str(), officer=r.str(), original_type=r.str(), original=r.str(),
                   signed_at_ms=r.i64())
    else:
        raise ValueError("unknown statement kind %d" % kind)
    if r.at != len(signed):
        raise ValueError("trailing bytes after the last field")
    out["id"] = hashlib.sha256(signed).hexdigest()
    if algorithm == 1:
        out["signature_valid"] = ed25519_verify(signer, signed, signature)
    else:
        try:
            out["signature_valid"] = x509_verify(algorithm, padding, chain, signed, signature)
        except (ValueError, IndexError):
            out["signature_valid"] = False
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
