#!/usr/bin/env python3
"""Checks Kho's transparency log from docs/FORMAT.md section 4 alone, with Python's standard library:
a checkpoint's signed note (C2SP tlog-checkpoint, Ed25519 note signature), an inclusion proof and a
consistency proof (RFC 9162 section 2.1), and log entries rebuilt from their fields.

usage: verify_log.py PROOFS.json
PROOFS.json holds {"vault_key_hex", "origin", "checkpoint_note", "old_checkpoint_note",
"inclusions": [{"index", "leaf_hash", "hashes"}], "consistency": [hex...],
"entries": [{"index", "entry_hex", "kind", "accepted_at_ms", "id", "owner"?, "position"?, "previous"?}],
"map_proofs": [{"owner", "root", "siblings": [hex...], "leaf": {"key", "value"} or null, "value": hex or null}]}.
When the entries start at index 0, it also replays them: every owner link must extend its owner's
chain, and every owner-map commitment (kind 7) must be the root of the owner map rebuilt so far
(docs/FORMAT.md section 4.4).
Prints one line per check and a JSON summary; exits 1 if any check fails.
"""

import base64
import hashlib
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_record import ed25519_verify  # noqa: E402  (the RFC 8032 reference verifier)


def sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(entry):
    return sha256(b"\x00" + entry)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def key_id(name, public):
    return sha256(name.encode() + b"\n" + b"\x01" + public)[:4]


def open_checkpoint(note, origin, public):
    """Returns (size, root) if `note` is a checkpoint of `origin` signed by `public`, else raises."""
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise ValueError("no blank line before the signatures")
    text += "\n"
    lines = text.split("\n")
    if lines[0] != origin:
        raise ValueError("origin %r, expected %r" % (lines[0], origin))
    size = int(lines[1])
    if str(size) != lines[1]:
        raise ValueError("tree size not canonical")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32:
        raise ValueError("root is not 32 bytes")
    for line in signatures.rstrip("\n").split("\n"):
        if not line.startswith("\u2014 "):
            raise ValueError("malformed signature line")
        name, _, encoded = line[2:].partition(" ")
        blob = base64.b64decode(encoded, validate=True)
        if name == origin and blob[:4] == key_id(origin, public) and ed25519_verify(public, text.encode(), blob[4:]):
            return size, root
    raise ValueError("no valid signature by the vault key")


def open_handover(note, origin, retiring):
    """A vault key handover (FORMAT.md 4.2): (size, root, successor key) if `note` is a checkpoint of
    `origin` signed by `retiring` whose extension line `kho-key-handover <verifier key>` names a
    successor that signed it too; else raises."""
    size, root = open_checkpoint(note, origin, retiring)
    named = [line[len("kho-key-handover "):] for line in note.rpartition("\n\n")[0].split("\n")[3:]
             if line.startswith("kho-key-handover ")]
    if len(named) != 1:
        raise ValueError("a handover names exactly one successor")
    name, key_id_hex, encoded = named[0].split("+", 2)
    raw = base64.b64decode(encoded, validate=True)
    if name != origin or len(raw) != 33 or raw[0] != 1 or key_id(origin, raw[1:]).hex() != key_id_hex:
        raise ValueError("the successor is not a note key of this log")
    if open_checkpoint(note, origin, raw[1:]) != (size, root):
        raise ValueError("the successor did not sign the handover")
    return size, root, raw[1:]


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_hash, second_hash, proof):
    """RFC 9162 section 2.1.4.2 (first > 0)."""
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0 or first > second or not proof and first & (first - 1):
        return False
    if first & (first - 1) == 0:
        proof = [first_hash] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash


def build_entry(fields):
    """The leaf bytes of docs/FORMAT.md section 4.1, from their fields."""
    out = bytes([1, fields["kind"]]) + struct.pack(">q", fields["accepted_at_ms"]) + bytes.fromhex(fields["id"])
    owner = fields.get("owner")
    if owner is None:
        return out + b"\x00"
    owner = owner.encode()
    return (out + b"\x01" + struct.pack(">I", len(owner)) + owner + struct.pack(">Q", fields["position"])
            + bytes.fromhex(fields["previous"]))


def map_leaf_hash(key, value):
    return sha256(b"\x02" + key + value)


def map_node_hash(left, right):
    return sha256(b"\x03" + left + right)


def bit(key, depth):
    return (key[depth // 8] >> (7 - depth % 8)) & 1


def map_root(leaves, depth=0):
    """The owner map's root from its (key, value) pairs sorted by key (section 4.4)."""
    if not leaves:
        return bytes(32)
    if len(leaves) == 1:
        return map_leaf_hash(*leaves[0])
    split = next((i for i, (key, _) in enumerate(leaves) if bit(key, depth)), len(leaves))
    return map_node_hash(map_root(leaves[:split], depth + 1), map_root(leaves[split:], depth + 1))


def verify_map_proof(root, key, siblings, leaf):
    """The key's value if the proof shows it present, None if absent; raises ValueError if it fails."""
    depth = len(siblings)
    if leaf is None:
        current = bytes(32)
    else:
        leaf_key, value = leaf
        if any(bit(leaf_key, d) != bit(key, d) for d in range(depth)):
            raise ValueError("the proof's leaf is off the key's path")
        current = map_leaf_hash(leaf_key, value)
    for d in reversed(range(depth)):
        current = map_node_hash(siblings[d], current) if bit(key, d) else map_node_hash(current, siblings[d])
    if current != root:
        raise ValueError("the proof does not lead to the root")
    return leaf[1] if leaf is not None and leaf[0] == key else None


def replay(entries, check):
    """Rebuilds owner chains and the owner map from entries 0.. and checks each link and commitment."""
    heads = {}
    for fields in entries:
        entry = bytes.fromhex(fields["entry_hex"])
        index = fields["index"]
        if fields.get("owner") is not None:
            key = sha256(fields["owner"].encode())
            length, _, head = heads.get(key, (0, 0, bytes(32)))
            ok = fields["position"] == length + 1 and bytes.fromhex(fields["previous"]) == head
            if not ok:
                check("entry %d extends its owner's chain" % index, False)
            heads[key] = (fields["position"], index, leaf_hash(entry))
        if fields["kind"] == 7:
            leaves = sorted((key, struct.pack(">QQ", n, i) + h) for key, (n, i, h) in heads.items())
            check("owner-map commitment %d is the map of the entries before it" % index,
                  map_root(leaves).hex() == fields["id"])


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    data = json.load(open(argv[1]))
    public = bytes.fromhex(data["vault_key_hex"])
    results = []

    def check(name, ok):
        results.append((name, bool(ok)))
        print(("ok    " if ok else "FAIL  ") + name)

    try:
        size, root = open_checkpoint(data["checkpoint_note"], data["origin"], public)
        check("checkpoint signature", True)
    except (ValueError, KeyError) as error:
        check("checkpoint signature (%s)" % error, False)
        size, root = 0, b""
    for proof in data.get("inclusions", []):
        ok = verify_inclusion(proof["index"], size, bytes.fromhex(proof["leaf_hash"]),
                              [bytes.fromhex(h) for h in proof["hashes"]], root)
        check("inclusion of entry %d in tree %d" % (proof["index"], size), ok)
    if "old_checkpoint_note" in data:
        try:
            old_size, old_root = open_checkpoint(data["old_checkpoint_note"], data["origin"], public)
            ok = verify_consistency(old_size, size, old_root, root, [bytes.fromhex(h) for h in data["consistency"]])
            check("consistency from tree %d to tree %d" % (old_size, size), ok)
        except (ValueError, KeyError) as error:
            check("old checkpoint (%s)" % error, False)
    leaves = {p["index"]: p["leaf_hash"] for p in data.get("inclusions", [])}
    for fields in data.get("entries", []):
        rebuilt = build_entry(fields)
        ok = rebuilt.hex() == fields["entry_hex"] and leaf_hash(rebuilt).hex() == leaves.get(fields["index"])
        check("entry %d rebuilt from its fields matches its leaf" % fields["index"], ok)
    entries = sorted(data.get("entries", []), key=lambda fields: fields["index"])
    if entries and [e["index"] for e in entries] == list(range(len(entries))):
        replay(entries, check)
    for proof in data.get("map_proofs", []):
        leaf = proof["leaf"] and (bytes.fromhex(proof["leaf"]["key"]), bytes.fromhex(proof["leaf"]["value"]))
        try:
            value = verify_map_proof(bytes.fromhex(proof["root"]), sha256(proof["owner"].encode()),
                                     [bytes.fromhex(h) for h in proof["siblings"]], leaf)
            ok = (value.hex() if value is not None else None) == proof["value"]
        except ValueError:
            ok = False
        check("owner map proof for %s" % proof["owner"], ok)
    print(json.dumps({"tree_size": size, "root": root.hex(), "checks": len(results),
                      "failed": [name for name, ok in results if not ok]}, indent=1))
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
