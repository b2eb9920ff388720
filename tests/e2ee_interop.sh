#!/usr/bin/env bash
# Interop bar of spec/e2ee.md: the independent verifier (tests/e2ee_verify.py, written from the
# spec alone) re-derives and decrypts the transcripts of seeds 1..20 byte for byte, and rejects
# transcripts with one flipped byte (ciphertext, header, group wire).
# Usage: e2ee_interop.sh MSGSIM_BINARY VERIFIER
set -euo pipefail
msgsim="$1"
verifier="$2"
python=/usr/bin/python3  # Debian's, with python3-nacl (the PATH one may be a pyenv without it)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for seed in $(seq 1 20); do
  "$msgsim" e2ee transcript --seed "$seed" > "$work/t$seed.json"
  if ! "$python" "$verifier" "$work/t$seed.json" > /dev/null; then
    echo "e2ee_interop: seed $seed: the verifier rejected the transcript" >&2
    exit 1
  fi
done

# Same seed, same bytes.
"$msgsim" e2ee transcript --seed 7 | cmp -s - "$work/t7.json" ||
  { echo "e2ee_interop: seed 7 gave two different transcripts" >&2; exit 1; }

# Negative checks: each tampering must make the verifier fail (exit 1, not a crash).
tamper() {  # tamper FIELD_PATH OUT: flips one byte in the middle of the hex field
  "$python" - "$work/t3.json" "$1" "$2" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
node = t
path = sys.argv[2].split("/")
for part in path[:-1]:
    node = node[int(part)] if part.isdigit() else node[part]
raw = bytearray.fromhex(node[path[-1]])
raw[len(raw) // 2] ^= 0x01
node[path[-1]] = raw.hex()
json.dump(t, open(sys.argv[3], "w"))
PY
}
for field in messages/1/ciphertext messages/0/header messages/2/plaintext group/messages/0/wire \
             group/messages/1/ck x3dh/sk bob/spk_sig; do
  tamper "$field" "$work/bad.json"
  set +e
  "$python" "$verifier" "$work/bad.json" > /dev/null 2> "$work/err"
  status=$?
  set -e
  if [ "$status" -ne 1 ]; then
    echo "e2ee_interop: a flipped byte in $field gave verifier exit $status, expected 1" >&2
    cat "$work/err" >&2
    exit 1
  fi
done
echo "e2ee_interop: seeds 1..20 verified; tampered transcripts rejected"
