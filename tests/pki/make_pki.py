"""Builds Kho's test PKI with certomancer and asks pyhanko-certvalidator, an independent validator,
for its verdict on every case the Rust tests check.

Usage: python make_pki.py OUT_DIR

Writes OUT_DIR/certs/<label>.der, OUT_DIR/crl/<repo>@<date>.der, OUT_DIR/ocsp/<cert>@<date>.der and
OUT_DIR/chains/<signer>.pem (a signer's certificate and its intermediate, for `kho sign --chain`),
OUT_DIR/keys/<label>.key.pem (PKCS#8), and OUT_DIR/cases.json: for each case, the leaf, the intermediates, the roots Kho is configured with, the
revocation evidence supplied, the validation time, and the validator's verdict, one of
valid / expired / revoked / no_path / bad_signature / no_revocation_info.
"""

import asyncio
import base64
import datetime
import json
import pathlib
import sys

from asn1crypto import algos, ocsp, x509
from certomancer.registry import ArchLabel, CertLabel, CertomancerConfig, ServiceLabel
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from asn1crypto import keys
from pyhanko.sign import signers
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko.sign.validation.generic_cms import async_validate_detached_cms
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator import errors

HERE = pathlib.Path(__file__).resolve().parent
EC_KEYS = {"pub-root", "pub-interm", "pub-signer-ec", "gov-signer-ec"}
SIGNERS = ["gov-signer-rsa", "gov-signer-ec", "gov-expired", "gov-revoked", "pub-signer-ec", "pub-signer-rsa",
           "rogue-signer"]


def utc(text):
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc)


def pem_armor(cert):
    body = base64.encodebytes(cert.dump()).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def make_keys(directory):
    directory.mkdir(parents=True, exist_ok=True)
    config = (HERE / "certomancer.yml").read_text()
    for line in config.splitlines():
        line = line.strip()
        if not line.endswith(".key.pem}"):
            continue
        label = line.split(":")[0]
        path = directory / f"{label}.key.pem"
        if path.exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1()) if label in EC_KEYS else rsa.generate_private_key(65537, 2048)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def ocsp_response(arch, cert_label, at):
    cert = arch.get_cert(CertLabel(cert_label))
    issuer = arch.get_cert(CertLabel(cert_label.split("-")[0] + "-interm"))
    cert_id = ocsp.CertId({
        "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha1"}),
        "issuer_name_hash": issuer.subject.sha1,
        "issuer_key_hash": issuer.public_key.sha1,
        "serial_number": cert.serial_number,
    })
    request = ocsp.OCSPRequest({"tbs_request": {"request_list": [{"req_cert": cert_id}]}})
    responder = arch.service_registry.summon_responder(ServiceLabel(cert_label.split("-")[0] + "-interm"), at_time=at)
    return responder.build_ocsp_response(request)


async def verdict(leaf, intermediates, roots, crls, ocsps, moment):
    context = ValidationContext(trust_roots=roots, other_certs=intermediates, crls=crls, ocsps=ocsps, moment=moment,
                                allow_fetching=False, revocation_mode="hard-fail")
    validator = CertificateValidator(leaf, intermediate_certs=intermediates, validation_context=context)
    try:
        await validator.async_validate_usage({"digital_signature"})
        return "valid"
    except errors.RevokedError:
        return "revoked"
    except errors.ExpiredError:
        return "expired"
    except errors.InsufficientRevinfoError:
        return "no_revocation_info"
    except errors.PathBuildingError:
        return "no_path"
    except errors.PathValidationError as error:
        text = str(error).lower()
        if "signature" in text:
            return "bad_signature"
        if "expired" in text or "not valid until" in text:
            return "expired"
        if "revoked" in text:
            return "revoked"
        if "revocation" in text or "crl" in text or "ocsp" in text:
            return "no_revocation_info"
        return "invalid: " + str(error)


def main(out):
    out = pathlib.Path(out)
    make_keys(out / "keys")
    config = CertomancerConfig.from_file(str(HERE / "certomancer.yml"), key_search_dir=str(out))
    arch = config.get_pki_arch(ArchLabel("kho"))
    for directory in ("certs", "crl", "ocsp"):
        (out / directory).mkdir(exist_ok=True)
    certs = {}
    labels = ["gov-root", "gov-interm", "gov-ocsp", "tsa", "pub-root", "pub-interm", "rogue-root"] + SIGNERS
    for label in labels:
        cert = arch.get_cert(CertLabel(label))
        certs[label] = cert
        (out / "certs" / f"{label}.der").write_bytes(cert.dump())
    # Each signer's chain as `kho sign --chain` takes it: PEM, its own certificate first.
    (out / "chains").mkdir(exist_ok=True)
    for signer in SIGNERS:
        issuer = signer.split("-")[0] + ("-root" if signer.startswith("rogue") else "-interm")
        chain = [certs[signer]] + ([] if signer.startswith("rogue") else [certs[issuer]])
        (out / "chains" / f"{signer}.pem").write_text("".join(pem_armor(c) for c in chain))
    # A signer whose certificate's signature was altered on the way.
    tampered = bytearray(certs["gov-signer-rsa"].dump())
    tampered[-10] ^= 0x01
    (out / "certs" / "gov-signer-rsa-tampered.der").write_bytes(bytes(tampered))
    certs["gov-signer-rsa-tampered"] = x509.Certificate.load(bytes(tampered))

    dates = {"2025-03-01": utc("2025-03-01T12:00:00"), "2026-02-01": utc("2026-02-01T12:00:00"),
             "2026-06-01": utc("2026-06-01T12:00:00")}
    crls, ocsps = {}, {}
    for repo in ("gov-interm", "pub-interm", "gov-root", "pub-root"):
        for name, at in dates.items():
            crl = arch.service_registry.get_crl(ServiceLabel(repo), at_time=at)
            crls[f"{repo}@{name}"] = crl
            (out / "crl" / f"{repo}@{name}.der").write_bytes(crl.dump())
    for signer in SIGNERS:
        if signer.startswith("rogue"):
            continue
        for name, at in dates.items():
            response = ocsp_response(arch, signer, at)
            ocsps[f"{signer}@{name}"] = response
            (out / "ocsp" / f"{signer}@{name}.der").write_bytes(response.dump())

    gov = ["gov-root"]
    pub = ["pub-root"]
    both = gov + pub
    cases = [
        # name, leaf, intermediates, roots, crls, ocsps, time
        ("gov RSA signer, CRLs", "gov-signer-rsa", ["gov-interm"], both, ["gov-interm@2026-06-01", "gov-root@2026-06-01"], [], "2026-06-01"),
        ("gov ECDSA signer, OCSP", "gov-signer-ec", ["gov-interm"], both, ["gov-root@2026-06-01"], ["gov-signer-ec@2026-06-01"], "2026-06-01"),
        ("public CA ECDSA signer, CRLs", "pub-signer-ec", ["pub-interm"], both, ["pub-interm@2026-06-01", "pub-root@2026-06-01"], [], "2026-06-01"),
        ("public CA RSA signer, OCSP", "pub-signer-rsa", ["pub-interm"], both, ["pub-root@2026-06-01"], ["pub-signer-rsa@2026-06-01"], "2026-06-01"),
        ("expired signer", "gov-expired", ["gov-interm"], both, ["gov-interm@2026-06-01", "gov-root@2026-06-01"], [], "2026-06-01"),
        ("expired signer, at a time it was valid", "gov-expired", ["gov-interm"], both, ["gov-interm@2025-03-01", "gov-root@2025-03-01"], [], "2025-03-01"),
        ("revoked signer, after the revocation", "gov-revoked", ["gov-interm"], both, ["gov-interm@2026-06-01", "gov-root@2026-06-01"], [], "2026-06-01"),
        ("revoked signer, OCSP after the revocation", "gov-revoked", ["gov-interm"], both, ["gov-root@2026-06-01"], ["gov-revoked@2026-06-01"], "2026-06-01"),
        ("revoked signer, before the revocation", "gov-revoked", ["gov-interm"], both, ["gov-interm@2026-02-01", "gov-root@2026-02-01"], [], "2026-02-01"),
        ("public CA signer, only the gov root configured", "pub-signer-ec", ["pub-interm"], gov, ["pub-interm@2026-06-01", "pub-root@2026-06-01"], [], "2026-06-01"),
        ("a rogue root with the gov root's name", "rogue-signer", [], both, [], [], "2026-06-01"),
        ("tampered certificate", "gov-signer-rsa-tampered", ["gov-interm"], both, ["gov-interm@2026-06-01", "gov-root@2026-06-01"], [], "2026-06-01"),
        ("no revocation evidence", "gov-signer-rsa", ["gov-interm"], both, [], [], "2026-06-01"),
        ("stale CRL (past its next update)", "gov-signer-rsa", ["gov-interm"], both, ["gov-interm@2025-03-01", "gov-root@2026-06-01"], [], "2026-06-01"),
        ("missing intermediate", "gov-signer-rsa", [], both, ["gov-interm@2026-06-01", "gov-root@2026-06-01"], [], "2026-06-01"),
    ]
    results = []
    for name, leaf, intermediates, roots, crl_names, ocsp_names, when in cases:
        result = asyncio.run(verdict(certs[leaf], [certs[i] for i in intermediates], [certs[r] for r in roots],
                                     [crls[c] for c in crl_names], [ocsps[o] for o in ocsp_names], dates[when]))
        results.append({"name": name, "leaf": leaf, "intermediates": intermediates, "roots": roots, "crls": crl_names,
                        "ocsps": ocsp_names, "time": dates[when].isoformat(), "verdict": result})
        print(f"{result:>20}  {name}")
    (out / "cases.json").write_text(json.dumps(results, indent=1))
    asyncio.run(cms_cases(out, arch, certs))
    asyncio.run(pdf_cases(out, arch, certs))


def load_key(out, label):
    key = serialization.load_pem_private_key((out / "keys" / f"{label}.key.pem").read_bytes(), password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return keys.PrivateKeyInfo.load(der)


def pyhanko_signer(out, certs, label):
    """pyHanko's signer for a test signer, carrying its intermediate (the rogue one carries none)."""
    chain = [] if label.startswith("rogue") else [certs[label.split("-")[0] + "-interm"]]
    return signers.SimpleSigner(signing_cert=certs[label], signing_key=load_key(out, label),
                                cert_registry=SimpleCertificateStore.from_certs(chain))


def timestamper_at(out, certs, when):
    """The test TSA, answering with `when` as its time (None: no timestamp)."""
    if when is None:
        return None
    return DummyTimeStamper(tsa_cert=certs["tsa"], tsa_key=load_key(out, "tsa"),
                            certs_to_embed=SimpleCertificateStore.from_certs([certs["gov-root"]]), fixed_dt=when)


def crls_at(arch, folder, stem, moment):
    """The CRLs of every CA current at `moment`, written as folder/<stem>-<repo>.crl; their names and
    the validation context pyHanko validates with at that moment."""
    repos = ("gov-interm", "pub-interm", "gov-root", "pub-root")
    crls = [arch.service_registry.get_crl(ServiceLabel(repo), at_time=moment) for repo in repos]
    for repo, crl in zip(repos, crls):
        (folder / f"{stem}-{repo}.crl").write_bytes(crl.dump())
    return [f"{stem}-{repo}" for repo in repos], crls


def context_at(certs, crls, moment):
    return ValidationContext(trust_roots=[certs["gov-root"], certs["pub-root"]],
                             other_certs=[certs["gov-interm"], certs["pub-interm"]], crls=crls, moment=moment,
                             allow_fetching=False, revocation_mode="hard-fail")


async def cms_cases(out, arch, certs):
    """Detached CMS signatures (.p7s) over a document, as agencies attach them to any file: with and
    without an RFC 3161 timestamp, by good, expired, revoked and unknown signers, and over altered
    bytes. Each is validated by pyHanko at the signing time (the timestamp's, or now) with the CRLs
    current then; Kho must agree."""
    (out / "cms").mkdir(exist_ok=True)
    now = datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0)
    before_revocation = utc("2026-02-01T12:00:00")
    document = b"Ket qua giai quyet thu tuc hanh chinh: Giay khai sinh so 123/2026\n" * 40
    (out / "cms" / "document.txt").write_bytes(document)
    cases = [
        # name, signer, timestamp time or None, tamper
        ("gov RSA, no timestamp", "gov-signer-rsa", None, False),
        ("public CA ECDSA, no timestamp", "pub-signer-ec", None, False),
        ("gov ECDSA, timestamped", "gov-signer-ec", now, False),
        ("public CA RSA, timestamped", "pub-signer-rsa", now, False),
        ("document altered after signing", "gov-signer-rsa", None, True),
        ("revoked signer, timestamped after the revocation", "gov-revoked", now, False),
        ("revoked signer, timestamped before the revocation", "gov-revoked", before_revocation, False),
        ("expired signer", "gov-expired", now, False),
        ("unknown root", "rogue-signer", None, False),
    ]
    results = []
    for index, (name, signer_label, ts_time, tamper) in enumerate(cases):
        signer = pyhanko_signer(out, certs, signer_label)
        signed = await signer.async_sign_general_data(document, "sha256", detached=True,
                                                      timestamper=timestamper_at(out, certs, ts_time))
        data = document + b"!" if tamper else document
        stem = f"case{index}"
        (out / "cms" / f"{stem}.p7s").write_bytes(signed.dump())
        (out / "cms" / f"{stem}.data").write_bytes(data)
        moment = ts_time or now
        crl_names, crls = crls_at(arch, out / "cms", stem, moment)
        try:
            status = await async_validate_detached_cms(data, signed["content"],
                                                       signer_validation_context=context_at(certs, crls, moment),
                                                       ts_validation_context=context_at(certs, crls, moment))
            verdict_text = cms_verdict(status)
        except errors.PathBuildingError:
            verdict_text = "no_path"
        results.append({"name": name, "p7s": f"{stem}.p7s", "data": f"{stem}.data", "crls": crl_names,
                        "time": moment.isoformat(), "timestamped": ts_time is not None,
                        "verdict": verdict_text})
        print(f"{results[-1]['verdict']:>20}  {name}")
    (out / "cms_cases.json").write_text(json.dumps(results, indent=1))


def minimal_pdf(text):
    """A one-page PDF with a classic cross-reference table, written by hand."""
    stream = f"BT /F1 14 Tf 40 780 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    body = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += f"{number} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(body)
    body += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        body += f"{offset:010d} 00000 n \n".encode()
    body += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(body)


async def pdf_cases(out, arch, certs):
    """PDFs signed by pyHanko as PAdES B-B and B-T (a signature covering the whole file), and altered
    ones; pyHanko validates each at the signing time, Kho must agree."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign import fields
    from pyhanko.sign.validation.pdf_embedded import async_validate_pdf_signature
    import io
    (out / "pdf").mkdir(exist_ok=True)
    now = datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0)
    cases = [
        ("PAdES B-B, gov RSA", "gov-signer-rsa", None, None),
        ("PAdES B-T, public CA ECDSA", "pub-signer-ec", now, None),
        ("PAdES B-T, revoked signer timestamped after the revocation", "gov-revoked", now, None),
        ("PAdES B-B, a byte of the page changed after signing", "gov-signer-rsa", None, "flip"),
        ("PAdES B-T, expired signer", "gov-expired", now, None),
    ]
    results = []
    for index, (name, signer_label, ts_time, tamper) in enumerate(cases):
        signer = pyhanko_signer(out, certs, signer_label)
        timestamper = timestamper_at(out, certs, ts_time)
        writer = IncrementalPdfFileWriter(io.BytesIO(minimal_pdf(f"Giay khai sinh so {index}")))
        meta = signers.PdfSignatureMetadata(field_name="Signature1", subfilter=fields.SigSeedSubFilter.PADES)
        signed = bytearray((await signers.async_sign_pdf(writer, meta, signer=signer, timestamper=timestamper)).getvalue())
        if tamper == "flip":
            position = signed.index(b"Giay khai sinh")
            signed[position] ^= 0x20
        stem = f"pdf{index}"
        (out / "pdf" / f"{stem}.pdf").write_bytes(bytes(signed))
        moment = ts_time or now
        crl_names, crls = crls_at(arch, out / "pdf", stem, moment)
        reader = PdfFileReader(io.BytesIO(bytes(signed)))
        status = await async_validate_pdf_signature(reader.embedded_signatures[0],
                                                    signer_validation_context=context_at(certs, crls, moment),
                                                    ts_validation_context=context_at(certs, crls, moment),
                                                    skip_diff=True)
        results.append({"name": name, "pdf": f"{stem}.pdf", "crls": crl_names, "time": moment.isoformat(),
                        "timestamped": ts_time is not None, "verdict": cms_verdict(status)})
        print(f"{results[-1]['verdict']:>20}  {name}")
    (out / "pdf_cases.json").write_text(json.dumps(results, indent=1))


def cms_verdict(status):
    if not status.intact:
        return "bad_digest"
    if not status.valid:
        return "bad_signature"
    if status.trusted and not status.revoked:
        return "valid"
    indication = str(status.trust_problem_indic)
    for key, verdict in (("REVOKED", "revoked"), ("EXPIRED", "expired"), ("OUT_OF_BOUNDS", "expired"),
                         ("NO_CERTIFICATE_CHAIN", "no_path"), ("TRY_LATER", "no_revocation_info"),
                         ("NOT_YET_VALID", "not_yet_valid")):
        if key in indication:
            return verdict
    return "invalid: " + indication


if __name__ == "__main__":
    main(sys.argv[1])
