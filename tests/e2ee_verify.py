#!/usr/bin/python3
"""Independent verifier of msgsim E2EE transcripts, written from spec/e2ee.md alone.

Reads one transcript JSON (a file argument, or stdin), re-derives every X3DH value, ratchet
header, ciphertext and group wire message from the keys it contains, decrypts every pairwise
message in `delivery_order` with its own Double Ratchet receiver and every group message with
its own sender-key receiver, and exits 1 on the first mismatch (0 when everything matches,
2 when the input is not a transcript at all).

Primitives: PyNaCl (libsodium) for X25519, Ed25519 and XChaCha20-Poly1305; Python's own
hmac/hashlib for HMAC-SHA256 and HKDF, so the KDFs do not share code with the C++ library.
Run with Debian's /usr/bin/python3 (package python3-nacl).
"""

import hashlib
import hmac
import json
import struct
import sys

from nacl import bindings as nacl

MAX_SKIP = 1000


class Mismatch(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Mismatch(what)


def unhex(value, size, what):
    check(isinstance(value, str), f"{what}: not a hex string")
    check(value == value.lower(), f"{what}: hex is not lowercase")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise Mismatch(f"{what}: not hex")
    if size is not None:
        check(len(raw) == size, f"{what}: {len(raw)} bytes, expected {size}")
    return raw


def u32be(x):
    check(isinstance(x, int) and 0 <= x <= 0xFFFFFFFF, f"{x!r} is not a u32")
    return struct.pack(">I", x)


# --- primitives, as the spec's table defines them -------------------------------------------

def hmac_sha256(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def hkdf(salt, ikm, info, length):
    prk = hmac_sha256(salt, ikm)
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes([counter]))
        out += block
        counter += 1
    return out[:length]


def dh(private, public):
    try:
        out = nacl.crypto_scalarmult(private, public)
    except Exception as e:  # libsodium refuses an all-zero result
        raise Mismatch(f"DH failed: {e}")
    check(out != bytes(32), "DH gave the all-zero result")
    return out


def x25519_public(private):
    return nacl.crypto_scalarmult_base(private)


def sign(ed_sk64, msg):
    return nacl.crypto_sign(msg, ed_sk64)[:64]


def verify(ed_pk, msg, sig):
    try:
        nacl.crypto_sign_open(sig + msg, ed_pk)
        return True
    except Exception:
        return False


def aead_encrypt(key, nonce, ad, pt):
    return nacl.crypto_aead_xchacha20poly1305_ietf_encrypt(pt, ad, nonce, key)


def aead_decrypt(key, nonce, ad, ct):
    try:
        return nacl.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, ad, nonce, key)
    except Exception:
        return None


def kdf_rk(rk, dh_out):
    o = hkdf(rk, dh_out, b"msgsim.ratchet.v1", 64)
    return o[:32], o[32:]


def kdf_ck(ck):
    return hmac_sha256(ck, b"\x01"), hmac_sha256(ck, b"\x02")


def message_keys(mk, info):
    o = hkdf(bytes(32), mk, info, 56)
    return o[:32], o[32:56]


def ed25519_keys(sk64, what):
    pk = sk64[32:]
    seed_pk, _ = nacl.crypto_sign_seed_keypair(sk64[:32])
    check(seed_pk == pk, f"{what}: the 64-byte secret's public half does not match its seed")
    return pk


# --- X3DH ---------------------------------------------------------------------------------------

def x3dh_sk(dh1, dh2, dh3, dh4):
    ikm = b"\xff" * 32 + dh1 + dh2 + dh3 + (dh4 if dh4 is not None else b"")
    return hkdf(bytes(32), ikm, b"msgsim.x3dh.v1", 32)


def verify_x3dh(t):
    a, b, x = t["alice"], t["bob"], t["x3dh"]
    keys = {}
    keys["ik_a_sk"] = unhex(a["ik_sk"], 64, "alice.ik_sk")
    keys["ik_a_pk"] = unhex(a["ik_pk"], 32, "alice.ik_pk")
    check(ed25519_keys(keys["ik_a_sk"], "alice.ik_sk") == keys["ik_a_pk"], "alice.ik_pk")
    keys["ik_b_sk"] = unhex(b["ik_sk"], 64, "bob.ik_sk")
    keys["ik_b_pk"] = unhex(b["ik_pk"], 32, "bob.ik_pk")
    check(ed25519_keys(keys["ik_b_sk"], "bob.ik_sk") == keys["ik_b_pk"], "bob.ik_pk")
    keys["spk_id"] = b["spk_id"]
    keys["spk_sk"] = unhex(b["spk_sk"], 32, "bob.spk_sk")
    keys["spk_pk"] = unhex(b["spk_pk"], 32, "bob.spk_pk")
    check(x25519_public(keys["spk_sk"]) == keys["spk_pk"], "bob.spk_pk is not spk_sk's public key")
    spk_sig = unhex(b["spk_sig"], 64, "bob.spk_sig")
    signed = b"msgsim.spk.v1" + u32be(keys["spk_id"]) + keys["spk_pk"]
    check(verify(keys["ik_b_pk"], signed, spk_sig), "bob.spk_sig does not verify")
    check(sign(keys["ik_b_sk"], signed) == spk_sig, "bob.spk_sig is not SIGN(IK_B, ...)")
    keys["opk_id"] = b["opk_id"]
    u32be(keys["opk_id"])
    check(keys["opk_id"] != 0xFFFFFFFF, "bob.opk_id is the 'no OPK' marker")
    keys["opk_sk"] = unhex(b["opk_sk"], 32, "bob.opk_sk")
    keys["opk_pk"] = unhex(b["opk_pk"], 32, "bob.opk_pk")
    check(x25519_public(keys["opk_sk"]) == keys["opk_pk"], "bob.opk_pk is not opk_sk's public key")
    keys["ek_sk"] = unhex(x["ek_sk"], 32, "x3dh.ek_sk")
    keys["ek_pk"] = unhex(x["ek_pk"], 32, "x3dh.ek_pk")
    check(x25519_public(keys["ek_sk"]) == keys["ek_pk"], "x3dh.ek_pk is not ek_sk's public key")

    ikx_a_sk = nacl.crypto_sign_ed25519_sk_to_curve25519(keys["ik_a_sk"])
    ikx_a_pk = nacl.crypto_sign_ed25519_pk_to_curve25519(keys["ik_a_pk"])
    ikx_b_sk = nacl.crypto_sign_ed25519_sk_to_curve25519(keys["ik_b_sk"])
    ikx_b_pk = nacl.crypto_sign_ed25519_pk_to_curve25519(keys["ik_b_pk"])
    # Initiator's view.
    sk_a = x3dh_sk(dh(ikx_a_sk, keys["spk_pk"]), dh(keys["ek_sk"], ikx_b_pk),
                   dh(keys["ek_sk"], keys["spk_pk"]), dh(keys["ek_sk"], keys["opk_pk"]))
    # Responder's view.
    sk_b = x3dh_sk(dh(keys["spk_sk"], ikx_a_pk), dh(ikx_b_sk, keys["ek_pk"]),
                   dh(keys["spk_sk"], keys["ek_pk"]), dh(keys["opk_sk"], keys["ek_pk"]))
    check(sk_a == sk_b, "X3DH: initiator and responder derive different SK")
    check(unhex(x["sk"], 32, "x3dh.sk") == sk_a, "x3dh.sk differs from the re-derived SK")
    keys["sk"] = sk_a
    keys["ad"] = keys["ik_a_pk"] + keys["ik_b_pk"]
    check(unhex(x["ad"], 64, "x3dh.ad") == keys["ad"], "x3dh.ad is not IK_A.pub || IK_B.pub")
    keys["prekey_header"] = (keys["ik_a_pk"] + keys["ek_pk"] + u32be(keys["spk_id"]) +
                             u32be(keys["opk_id"]))
    return keys


# --- Double Ratchet: the senders' side ----------------------------------------------------------

def verify_sending(t, keys):
    msgs = t["messages"]
    check(isinstance(msgs, list) and msgs, "messages: empty")
    parsed = []
    for i, m in enumerate(msgs):
        check(m["from"] in ("alice", "bob"), f"messages[{i}].from")
        parsed.append({
            "from": m["from"],
            "dh_sk": unhex(m["dh_sk"], 32, f"messages[{i}].dh_sk"),
            "prekey_header": (None if m["prekey_header"] is None else
                              unhex(m["prekey_header"], 72, f"messages[{i}].prekey_header")),
            "header": unhex(m["header"], 40, f"messages[{i}].header"),
            "ciphertext": unhex(m["ciphertext"], None, f"messages[{i}].ciphertext"),
            "plaintext": unhex(m["plaintext"], None, f"messages[{i}].plaintext"),
        })
    check(parsed[0]["from"] == "alice", "the first message is not the initiator's")

    # Ratchet keys in order of first use. Each party makes a new one only after receiving the
    # other's newest, so they alternate alice, bob, alice, ...; chain j's root step is
    # RK_j, CK_j = KDF_RK(RK_{j-1}, DH(key_j, key_{j-1})), key_0 being bob's SPK.
    sequence = []
    for m in parsed:
        if not any(k["sk"] == m["dh_sk"] for k in sequence):
            sequence.append({"owner": m["from"], "sk": m["dh_sk"], "pk": x25519_public(m["dh_sk"])})
    for j, k in enumerate(sequence):
        check(k["owner"] == ("alice" if j % 2 == 0 else "bob"),
              f"ratchet key {j} belongs to {k['owner']}: keys do not alternate")
    rk, prev_pk = keys["sk"], keys["spk_pk"]
    for k in sequence:
        rk, k["ck"] = kdf_rk(rk, dh(k["sk"], prev_pk))
        k["rk_after"] = rk
        prev_pk = k["pk"]

    sent_under = {}        # ratchet key pk -> messages sent so far
    previous_chain = {}    # party -> pk of its previous sending chain
    current_chain = {}
    chain_state = {}       # pk -> (n, ck)
    alice_prekey_phase = True
    for i, m in enumerate(parsed):
        k = next(k for k in sequence if k["sk"] == m["dh_sk"])
        party = m["from"]
        if current_chain.get(party) != k["pk"]:
            if party in current_chain:
                previous_chain[party] = current_chain[party]
            current_chain[party] = k["pk"]
        ns = sent_under.get(k["pk"], 0)
        pn = sent_under.get(previous_chain[party], 0) if party in previous_chain else 0
        header = k["pk"] + u32be(pn) + u32be(ns)
        check(m["header"] == header, f"messages[{i}].header differs from DHs.pub || PN || Ns")
        n, ck = chain_state.get(k["pk"], (0, k["ck"]))
        check(n == ns, "internal: chain position")
        mk, ck = kdf_ck(ck)
        chain_state[k["pk"]] = (n + 1, ck)
        sent_under[k["pk"]] = ns + 1
        key, nonce = message_keys(mk, b"msgsim.msgkey.v1")
        ct = aead_encrypt(key, nonce, keys["ad"] + header, m["plaintext"])
        check(m["ciphertext"] == ct, f"messages[{i}].ciphertext differs from the re-derived one")
        # The prekey header rides on alice's messages until her first reply arrives: a prefix.
        if party == "bob":
            check(m["prekey_header"] is None, f"messages[{i}]: bob sent a prekey header")
        elif m["prekey_header"] is not None:
            check(alice_prekey_phase, f"messages[{i}]: prekey header after alice stopped sending it")
            check(m["prekey_header"] == keys["prekey_header"],
                  f"messages[{i}].prekey_header is not IK_A || EK || spk_id || opk_id")
        else:
            check(i != 0, "the first message lacks the prekey header")
            alice_prekey_phase = False
    check(len(sequence) >= 4, f"only {len(sequence)} ratchet keys: not several DH steps")
    check(any(m["from"] == "bob" for m in parsed), "no message from bob: one direction only")
    return parsed, sequence


# --- Double Ratchet: the receivers' side --------------------------------------------------------

class Receiver:
    """The decrypt half of the Signal Double Ratchet, for one party."""

    def __init__(self, name, ad, dhs_sk, dhr, rk, next_own_key):
        self.name, self.ad = name, ad
        self.dhs_sk, self.dhr, self.rk = dhs_sk, dhr, rk
        self.ckr, self.nr = None, 0
        self.skipped = {}
        self.next_own_key = next_own_key  # the party's ratchet key made at a DH step

    def skip(self, until):
        check(self.nr + MAX_SKIP >= until, f"{self.name}: more than MAX_SKIP keys to skip")
        if self.ckr is None:
            return
        while self.nr < until:
            mk, self.ckr = kdf_ck(self.ckr)
            self.skipped[(self.dhr, self.nr)] = mk
            self.nr += 1

    def decrypt(self, header, ct, i):
        dh_pub, pn, n = header[:32], struct.unpack(">I", header[32:36])[0], struct.unpack(">I", header[36:40])[0]
        ad = self.ad + header
        if (dh_pub, n) in self.skipped:
            key, nonce = message_keys(self.skipped.pop((dh_pub, n)), b"msgsim.msgkey.v1")
            return aead_decrypt(key, nonce, ad, ct)
        if dh_pub != self.dhr:
            self.skip(pn)
            self.dhr = dh_pub
            self.rk, self.ckr = kdf_rk(self.rk, dh(self.dhs_sk, self.dhr))
            self.nr = 0
            new_sk = self.next_own_key(dh_pub)
            if new_sk is not None:
                self.dhs_sk = new_sk
                self.rk, _ = kdf_rk(self.rk, dh(self.dhs_sk, self.dhr))
            else:
                self.dhs_sk = None  # this party never sends again in the transcript
        check(n >= self.nr, f"messages[{i}]: message number {n} already used (replay)")
        self.skip(n)
        mk, self.ckr = kdf_ck(self.ckr)
        self.nr += 1
        key, nonce = message_keys(mk, b"msgsim.msgkey.v1")
        return aead_decrypt(key, nonce, ad, ct)


def verify_delivery(t, keys, parsed, sequence):
    order = t["delivery_order"]
    check(isinstance(order, list), "delivery_order is not a list")
    check(sorted(order) == list(range(len(parsed))),
          "delivery_order is not a permutation of the message indexes")

    def next_key_after(owner):
        def pick(received_pk):
            j = next(j for j, k in enumerate(sequence) if k["pk"] == received_pk)
            if j + 1 < len(sequence):
                check(sequence[j + 1]["owner"] == owner, "internal: alternation")
                return sequence[j + 1]["sk"]
            return None
        return pick

    first = sequence[0]
    rk_alice, _ = kdf_rk(keys["sk"], dh(first["sk"], keys["spk_pk"]))
    alice = Receiver("alice", keys["ad"], first["sk"], keys["spk_pk"], rk_alice, next_key_after("alice"))
    bob = None
    late = False
    last_seen = {"alice": -1, "bob": -1}
    for i in order:
        m = parsed[i]
        if m["from"] == "alice":
            if bob is None:
                # Bob's first message: X3DH from the prekey header, as the responder computes it.
                ph = m["prekey_header"]
                check(ph is not None, f"messages[{i}]: bob's first message has no prekey header")
                check(ph[:32] == keys["ik_a_pk"] and ph[32:64] == keys["ek_pk"],
                      f"messages[{i}]: prekey header names other keys")
                check(struct.unpack(">I", ph[64:68])[0] == keys["spk_id"] and
                      struct.unpack(">I", ph[68:72])[0] == keys["opk_id"],
                      f"messages[{i}]: prekey header names another SPK or OPK")
                ikx_a = nacl.crypto_sign_ed25519_pk_to_curve25519(ph[:32])
                ikx_b_sk = nacl.crypto_sign_ed25519_sk_to_curve25519(keys["ik_b_sk"])
                ek = ph[32:64]
                sk = x3dh_sk(dh(keys["spk_sk"], ikx_a), dh(ikx_b_sk, ek), dh(keys["spk_sk"], ek),
                             dh(keys["opk_sk"], ek))
                bob = Receiver("bob", keys["ik_a_pk"] + keys["ik_b_pk"], keys["spk_sk"], None, sk,
                               next_key_after("bob"))
            receiver = bob
        else:
            receiver = alice
        pt = receiver.decrypt(m["header"], m["ciphertext"], i)
        check(pt is not None, f"messages[{i}]: {receiver.name} cannot decrypt it (tag mismatch)")
        check(pt == m["plaintext"], f"messages[{i}]: decrypts to other bytes than its plaintext")
        if i < last_seen[receiver.name]:
            late = True
        last_seen[receiver.name] = max(last_seen[receiver.name], i)
    check(late, "no out-of-order delivery in delivery_order")


# --- Sender Keys --------------------------------------------------------------------------------

def verify_group(t):
    g = t["group"]
    gid = g["group_id"].encode("utf-8")
    check(len(gid) <= 255, "group_id longer than 255 bytes")
    records = g["messages"]
    check(isinstance(records, list) and records, "group.messages: empty")
    keys_of = {}     # sender -> list of key ids in order of first use
    chains = {}      # (sender, key_id) -> (next iteration, ck, sg_pk)
    seen_sg, seen_ck = set(), set()
    removed = []
    must_rotate = set()
    rotations = 0
    for i, r in enumerate(records):
        what = f"group.messages[{i}]"
        sender = r["sender"]
        key_id, iteration = r["key_id"], r["iteration"]
        ck = unhex(r["ck"], 32, what + ".ck")
        sg_sk = unhex(r["sg_sk"], 64, what + ".sg_sk")
        sg_pk = unhex(r["sg_pk"], 32, what + ".sg_pk")
        check(ed25519_keys(sg_sk, what + ".sg_sk") == sg_pk, what + ".sg_pk")
        wire = unhex(r["wire"], None, what + ".wire")
        pt = unhex(r["plaintext"], None, what + ".plaintext")
        check(sender not in removed, f"{what}: {sender} sends after being removed")

        # Re-derive the wire message.
        mk, _ = kdf_ck(ck)
        key, nonce = message_keys(mk, b"msgsim.senderkey.v1")
        header = bytes([len(gid)]) + gid + u32be(key_id) + u32be(iteration)
        ct = aead_encrypt(key, nonce, header, pt)
        sig = sign(sg_sk, header + ct)
        check(wire == header + ct + sig, f"{what}.wire differs from header || ct || sig")

        # Key lifecycle: a sender changes keys only by a rotation after a removal.
        chain_id = (sender, key_id)
        new_key = chain_id not in chains
        marker = r["after_removal_of"]
        if marker is not None:
            if marker not in removed:
                removed.append(marker)
                must_rotate |= {s for s in keys_of if s != marker}
            check(new_key, f"{what}: marked after the removal of {marker} but reuses key {key_id}")
            rotations += 1
        if new_key:
            check(sg_pk not in seen_sg and ck not in seen_ck, f"{what}: a 'new' key reuses old material")
            if keys_of.get(sender):
                check(marker is not None, f"{what}: {sender} changed keys without a removal")
            keys_of.setdefault(sender, []).append(key_id)
            seen_sg.add(sg_pk)
            seen_ck.add(ck)
            must_rotate.discard(sender)
        else:
            check(sender not in must_rotate,
                  f"{what}: {sender} sends under its old key after a removal")
            # Continuity: ck follows from the previous record's by KDF_CK per iteration.
            next_iteration, chain_ck, chain_sg = chains[chain_id]
            check(chain_sg == sg_pk, f"{what}: signing key changed within key {key_id}")
            check(iteration >= next_iteration, f"{what}: iteration {iteration} went backwards")
            check(iteration - next_iteration <= MAX_SKIP, f"{what}: more than MAX_SKIP ahead")
            while next_iteration < iteration:
                _, chain_ck = kdf_ck(chain_ck)
                next_iteration += 1
            check(chain_ck == ck, f"{what}.ck does not follow from the previous message's chain key")

        # Receive: verify the signature first, then decrypt.
        check(verify(sg_pk, wire[:-64], wire[-64:]), f"{what}: signature does not verify")
        body = wire[len(header):-64]
        check(wire[:len(header)] == header, f"{what}: header")
        check(aead_decrypt(key, nonce, header, body) == pt, f"{what}: does not decrypt to its plaintext")
        _, next_ck = kdf_ck(ck)
        chains[chain_id] = (iteration + 1, next_ck, sg_pk)
    check(rotations >= 1, "group: no rotation after a removal")


def main():
    try:
        text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
        transcript = json.loads(text)
    except (OSError, ValueError) as e:
        print(f"e2ee_verify: cannot read the transcript: {e}", file=sys.stderr)
        return 2
    try:
        check(transcript.get("version") == 1, "version is not 1")
        keys = verify_x3dh(transcript)
        parsed, sequence = verify_sending(transcript, keys)
        verify_delivery(transcript, keys, parsed, sequence)
        verify_group(transcript)
    except Mismatch as e:
        print(f"e2ee_verify: MISMATCH: {e}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, IndexError, StopIteration) as e:
        print(f"e2ee_verify: MISMATCH: malformed transcript ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 1
    n = len(transcript["messages"])
    print(f"e2ee_verify: ok: {n} pairwise messages, {len(transcript['group']['messages'])} group "
          f"messages re-derived and decrypted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
