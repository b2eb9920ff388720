#include "impl/crypto/ratchet.h"

#include <algorithm>
#include <cstring>

#include "impl/base/assert.h"

namespace msgsim::crypto {

RootStep kdf_rk(const Key32& root_key, const Key32& dh_out) {
  std::array<uint8_t, 64> out;
  hkdf_sha256(root_key, dh_out, as_bytes(kInfoRatchet), out);
  RootStep step;
  std::copy_n(out.begin(), 32, step.root_key.begin());
  std::copy_n(out.begin() + 32, 32, step.chain_key.begin());
  wipe(out);
  return step;
}

ChainStep kdf_ck(const Key32& chain_key) {
  static constexpr uint8_t message_key_constant = 0x01;
  static constexpr uint8_t chain_key_constant = 0x02;
  const HmacKey keyed(chain_key);
  ChainStep step;
  keyed.mac_pair(ByteSpan(&message_key_constant, 1), ByteSpan(&chain_key_constant, 1),
                 step.message_key, step.next_chain_key);
  return step;
}

void expand_message_key(const Key32& message_key, MessageKeys& out) {
  std::array<uint8_t, 32 + kAeadNonceBytes> expanded;
  hkdf_sha256_zero_salt(message_key, as_bytes(kInfoMessageKey), expanded);
  std::copy_n(expanded.begin(), 32, out.aead_key.begin());
  std::copy_n(expanded.begin() + 32, kAeadNonceBytes, out.nonce.begin());
  wipe(expanded);
}

uint64_t ratchet_key_fingerprint(const Key32& ratchet_public) {
  uint64_t out = 0;
  for (size_t i = 0; i < 8; ++i) out = out << 8 | ratchet_public[i];
  return out;
}

void encode_ratchet_header(const RatchetHeader& header, uint8_t* out) {
  std::memcpy(out, header.ratchet_public.data(), 32);
  store_u32be(out + 32, header.previous_chain_length);
  store_u32be(out + 36, header.message_number);
}

RatchetHeader decode_ratchet_header(const uint8_t* in) {
  RatchetHeader header;
  std::memcpy(header.ratchet_public.data(), in, 32);
  header.previous_chain_length = load_u32be(in + 32);
  header.message_number = load_u32be(in + 36);
  return header;
}

void encode_prekey_header(const PrekeyHeader& header, uint8_t* out) {
  std::memcpy(out, header.initiator_identity.data(), 32);
  std::memcpy(out + 32, header.ephemeral_public.data(), 32);
  store_u32be(out + 64, header.signed_prekey_id);
  store_u32be(out + 68, header.one_time_prekey_id);
}

PrekeyHeader decode_prekey_header(const uint8_t* in) {
  PrekeyHeader header;
  std::memcpy(header.initiator_identity.data(), in, 32);
  std::memcpy(header.ephemeral_public.data(), in + 32, 32);
  header.signed_prekey_id = load_u32be(in + 64);
  header.one_time_prekey_id = load_u32be(in + 68);
  return header;
}

Result<ParsedEnvelope> parse_envelope(ByteSpan envelope) {
  ByteReader reader(envelope, "pairwise envelope");
  ParsedEnvelope parsed;
  uint8_t kind = 0;
  if (auto s = reader.u8(kind, "kind"); !s) return s.error();
  if (kind != kEnvelopeNormal && kind != kEnvelopePrekey) {
    return reader.error(ErrorCode::bad_input, "kind", "unknown kind " + std::to_string(kind));
  }
  if (kind == kEnvelopePrekey) {
    auto prekey = reader.view(kPrekeyHeaderBytes, "prekey header");
    if (!prekey) return prekey.error();
    parsed.has_prekey_header = true;
    parsed.prekey_header = decode_prekey_header(prekey->data());
  }
  auto header = reader.view(kRatchetHeaderBytes, "ratchet header");
  if (!header) return header.error();
  parsed.ratchet_header = *header;
  if (reader.remaining() < kAeadTagBytes) {
    return reader.error(ErrorCode::bad_input, "ciphertext", "shorter than the 16-byte tag");
  }
  parsed.ciphertext = reader.rest();
  return parsed;
}

namespace {

void wipe_skipped(std::vector<SkippedMessageKey>& keys) {
  for (auto& key : keys) wipe(key.message_key);
}

// Drops the oldest skipped keys beyond the session cap.
void trim_skipped(std::vector<SkippedMessageKey>& keys) {
  if (keys.size() <= kSkippedKeysMax) return;
  const auto excess = static_cast<ptrdiff_t>(keys.size() - kSkippedKeysMax);
  for (auto it = keys.begin(); it != keys.begin() + excess; ++it) wipe(it->message_key);
  keys.erase(keys.begin(), keys.begin() + excess);
}

// Derives the keys of messages [from, until) of a chain into `staged` and returns the chain key
// that follows them.
Key32 skip_chain(const Key32& chain_key, const Key32& ratchet_public, uint32_t from,
                 uint32_t until, std::vector<SkippedMessageKey>& staged) {
  Key32 chain = chain_key;
  for (uint32_t n = from; n < until; ++n) {
    ChainStep step = kdf_ck(chain);
    staged.push_back(SkippedMessageKey{ratchet_public, n, step.message_key});
    chain = step.next_chain_key;
    wipe(step.message_key);
    wipe(step.next_chain_key);
  }
  return chain;
}

Error too_many_skipped(const char* chain, uint32_t from, uint32_t until) {
  return make_error(ErrorCode::too_large,
                    std::string("ratchet header asks to skip ") + chain + " chain messages " +
                        std::to_string(from) + ".." + std::to_string(until) +
                        ", more than MAX_SKIP = " + std::to_string(kMaxSkip));
}

// AD || header, the AEAD's associated data for a pairwise message.
std::array<uint8_t, kAssociatedDataBytes + kRatchetHeaderBytes> message_ad(
    const std::array<uint8_t, kAssociatedDataBytes>& associated_data, ByteSpan header) {
  std::array<uint8_t, kAssociatedDataBytes + kRatchetHeaderBytes> ad;
  std::copy(associated_data.begin(), associated_data.end(), ad.begin());
  std::copy(header.begin(), header.end(), ad.begin() + kAssociatedDataBytes);
  return ad;
}

bool open_with(const Key32& message_key, ByteSpan ad, ByteSpan ciphertext, MutableByteSpan out) {
  MessageKeys keys;
  expand_message_key(message_key, keys);
  return aead_decrypt(keys.aead_key, keys.nonce, ad, ciphertext, out);
}

Error tag_mismatch(const RatchetHeader& header) {
  return make_error(ErrorCode::crypto_error,
                    "pairwise message " + std::to_string(header.message_number) +
                        " of ratchet key " + to_hex(header.ratchet_public).substr(0, 16) +
                        ": authentication tag mismatch");
}

}  // namespace

Session::~Session() {
  wipe(ratchet.own_ratchet.secret);
  wipe(ratchet.root_key);
  wipe(ratchet.sending_chain_key);
  wipe(ratchet.receiving_chain_key);
  wipe_skipped(ratchet.skipped);
}

Key32 Session::peer_identity() const {
  Key32 out;
  const size_t offset = is_initiator ? 32 : 0;
  std::copy_n(associated_data.begin() + static_cast<ptrdiff_t>(offset), 32, out.begin());
  return out;
}

size_t Session::envelope_size(size_t plaintext_bytes) const {
  return 1 + (has_pending_prekey_header ? kPrekeyHeaderBytes : 0) + kRatchetHeaderBytes +
         plaintext_bytes + kAeadTagBytes;
}

Status Session::encrypt(ByteSpan plaintext, MutableByteSpan envelope) {
  if (envelope.size() != envelope_size(plaintext.size())) {
    return make_error(ErrorCode::bad_input,
                      "envelope buffer of " + std::to_string(envelope.size()) +
                          " bytes, expected " + std::to_string(envelope_size(plaintext.size())));
  }
  size_t offset = 0;
  envelope[offset++] = has_pending_prekey_header ? kEnvelopePrekey : kEnvelopeNormal;
  if (has_pending_prekey_header) {
    std::copy(pending_prekey_header.begin(), pending_prekey_header.end(), envelope.begin() + 1);
    offset += kPrekeyHeaderBytes;
  }
  return encrypt_parts(plaintext, envelope.subspan(offset, kRatchetHeaderBytes),
                       envelope.subspan(offset + kRatchetHeaderBytes));
}

Status Session::encrypt_parts(ByteSpan plaintext, MutableByteSpan header_out,
                              MutableByteSpan ciphertext_out) {
  if (!ratchet.has_sending_chain) {
    return make_error(ErrorCode::unavailable,
                      "session has no sending chain yet (a responder sends after it received)");
  }
  if (ratchet.sent_count == UINT32_MAX) {
    return make_error(ErrorCode::too_large, "sending chain exhausted its 2^32 message numbers");
  }
  if (header_out.size() != kRatchetHeaderBytes ||
      ciphertext_out.size() != plaintext.size() + kAeadTagBytes) {
    return make_error(ErrorCode::bad_input, "header or ciphertext buffer of the wrong size");
  }
  ChainStep step = kdf_ck(ratchet.sending_chain_key);
  const RatchetHeader header{ratchet.own_ratchet.public_key, ratchet.previous_sending_count,
                             ratchet.sent_count};
  encode_ratchet_header(header, header_out.data());
  const auto ad = message_ad(associated_data, header_out);
  {
    MessageKeys keys;
    expand_message_key(step.message_key, keys);
    aead_encrypt(keys.aead_key, keys.nonce, ad, plaintext, ciphertext_out);
  }
  ratchet.sending_chain_key = step.next_chain_key;
  ratchet.sent_count += 1;
  wipe(step.message_key);
  wipe(step.next_chain_key);
  return {};
}

Result<size_t> Session::decrypt(ByteSpan envelope, MutableByteSpan plaintext_out) {
  auto parsed = parse_envelope(envelope);
  if (!parsed) return parsed.error();
  if (parsed->has_prekey_header) {
    // A prekey message for a session that already exists: the session decrypts it as usual (a
    // retransmission, or the initiator's messages sent before our first reply reached it). It
    // must come from the peer the session was made with.
    if (parsed->prekey_header.initiator_identity != peer_identity()) {
      return make_error(ErrorCode::crypto_error,
                        "prekey message from identity " +
                            to_hex(parsed->prekey_header.initiator_identity).substr(0, 16) +
                            " for a session with another peer");
    }
  }
  return decrypt_parts(parsed->ratchet_header, parsed->ciphertext, plaintext_out);
}

Result<size_t> Session::decrypt_parts(ByteSpan header_bytes, ByteSpan ciphertext,
                                      MutableByteSpan plaintext_out) {
  if (header_bytes.size() != kRatchetHeaderBytes) {
    return make_error(ErrorCode::bad_input, "ratchet header of " +
                                                std::to_string(header_bytes.size()) +
                                                " bytes, expected 40");
  }
  if (ciphertext.size() < kAeadTagBytes) {
    return make_error(ErrorCode::bad_input, "ciphertext shorter than its 16-byte tag");
  }
  const size_t plaintext_size = ciphertext.size() - kAeadTagBytes;
  if (plaintext_out.size() < plaintext_size) {
    return make_error(ErrorCode::bad_input, "plaintext buffer of " +
                                                std::to_string(plaintext_out.size()) +
                                                " bytes for " + std::to_string(plaintext_size));
  }
  MutableByteSpan out = plaintext_out.first(plaintext_size);
  const RatchetHeader header = decode_ratchet_header(header_bytes.data());
  if (header.message_number == UINT32_MAX) {
    return make_error(ErrorCode::too_large, "message number 2^32-1 is past the end of a chain");
  }
  const auto ad = message_ad(associated_data, header_bytes);
  RatchetState& r = ratchet;

  // 1. A key skipped earlier (out-of-order or late delivery).
  for (size_t i = 0; i < r.skipped.size(); ++i) {
    if (r.skipped[i].message_number != header.message_number ||
        r.skipped[i].ratchet_public != header.ratchet_public) {
      continue;
    }
    if (!open_with(r.skipped[i].message_key, ad, ciphertext, out)) return tag_mismatch(header);
    wipe(r.skipped[i].message_key);
    r.skipped.erase(r.skipped.begin() + static_cast<ptrdiff_t>(i));
    has_pending_prekey_header = false;
    return plaintext_size;
  }

  std::vector<SkippedMessageKey> staged;
  const bool current_chain = r.has_peer_ratchet && header.ratchet_public == r.peer_ratchet_public;
  if (current_chain && !r.has_receiving_chain) {
    // Only the initiator's first DHr (the responder's signed prekey) has no receiving chain;
    // the responder never sends under it.
    return make_error(ErrorCode::crypto_error,
                      "message under the signed prekey, which never sends");
  }

  // 2. The current receiving chain.
  if (current_chain) {
    if (header.message_number < r.received_count) {
      return make_error(ErrorCode::not_found,
                        "duplicate: message " + std::to_string(header.message_number) +
                            " of the current chain was already decrypted (no key left)");
    }
    if (header.message_number - r.received_count > kMaxSkip) {
      return too_many_skipped("current", r.received_count, header.message_number);
    }
    Key32 chain = skip_chain(r.receiving_chain_key, r.peer_ratchet_public, r.received_count,
                             header.message_number, staged);
    ChainStep step = kdf_ck(chain);
    wipe(chain);
    const bool opened = open_with(step.message_key, ad, ciphertext, out);
    wipe(step.message_key);
    if (!opened) {
      wipe(step.next_chain_key);
      wipe_skipped(staged);
      return tag_mismatch(header);
    }
    r.receiving_chain_key = step.next_chain_key;
    wipe(step.next_chain_key);
    r.received_count = header.message_number + 1;
    r.skipped.insert(r.skipped.end(), staged.begin(), staged.end());
    wipe_skipped(staged);
    trim_skipped(r.skipped);
    has_pending_prekey_header = false;
    return plaintext_size;
  }

  // 3. An old chain whose keys are all used or dropped: a retransmission.
  const uint64_t fingerprint = ratchet_key_fingerprint(header.ratchet_public);
  for (const uint64_t previous : r.previous_peer_ratchets) {
    if (previous == fingerprint) {
      return make_error(ErrorCode::not_found,
                        "duplicate: message " + std::to_string(header.message_number) +
                            " of an earlier chain has no key left");
    }
  }

  // 4. A new ratchet key: finish the old receiving chain up to PN, step the root chain.
  if (r.has_receiving_chain && header.previous_chain_length > r.received_count) {
    if (header.previous_chain_length - r.received_count > kMaxSkip) {
      return too_many_skipped("previous", r.received_count, header.previous_chain_length);
    }
    Key32 rest = skip_chain(r.receiving_chain_key, r.peer_ratchet_public, r.received_count,
                            header.previous_chain_length, staged);
    wipe(rest);
  }
  if (header.message_number > kMaxSkip) {
    wipe_skipped(staged);
    return too_many_skipped("new", 0, header.message_number);
  }
  auto dh_receive = dh(r.own_ratchet.secret, header.ratchet_public);
  if (!dh_receive) {
    wipe_skipped(staged);
    return dh_receive.error();
  }
  RootStep receive_step = kdf_rk(r.root_key, *dh_receive);
  wipe(*dh_receive);
  Key32 chain = skip_chain(receive_step.chain_key, header.ratchet_public, 0,
                           header.message_number, staged);
  ChainStep step = kdf_ck(chain);
  wipe(chain);
  const bool opened = open_with(step.message_key, ad, ciphertext, out);
  wipe(step.message_key);
  if (!opened) {
    wipe(step.next_chain_key);
    wipe(receive_step.root_key);
    wipe(receive_step.chain_key);
    wipe_skipped(staged);
    return tag_mismatch(header);
  }
  // Authenticated: only now draw the new ratchet pair, so forged messages cost no randomness.
  X25519KeyPair next_pair = generate_x25519_key_pair();
  auto dh_send = dh(next_pair.secret, header.ratchet_public);
  MSGSIM_ASSERT(dh_send.ok(), "a peer ratchet key that passed one DH failed another");
  RootStep send_step = kdf_rk(receive_step.root_key, *dh_send);
  wipe(*dh_send);

  if (r.has_peer_ratchet) {
    r.previous_peer_ratchets.push_back(ratchet_key_fingerprint(r.peer_ratchet_public));
    if (r.previous_peer_ratchets.size() > kPreviousPeerRatchetKeysMax) {
      r.previous_peer_ratchets.erase(r.previous_peer_ratchets.begin());
    }
  }
  r.previous_sending_count = r.sent_count;
  r.sent_count = 0;
  r.received_count = header.message_number + 1;
  r.peer_ratchet_public = header.ratchet_public;
  r.has_peer_ratchet = true;
  r.receiving_chain_key = step.next_chain_key;
  r.has_receiving_chain = true;
  r.root_key = send_step.root_key;
  r.sending_chain_key = send_step.chain_key;
  r.has_sending_chain = true;
  wipe(r.own_ratchet.secret);
  r.own_ratchet = next_pair;
  r.skipped.insert(r.skipped.end(), staged.begin(), staged.end());
  trim_skipped(r.skipped);

  wipe(next_pair.secret);
  wipe(step.next_chain_key);
  wipe(receive_step.root_key);
  wipe(receive_step.chain_key);
  wipe(send_step.root_key);
  wipe(send_step.chain_key);
  wipe_skipped(staged);
  has_pending_prekey_header = false;
  return plaintext_size;
}

namespace {
constexpr uint8_t kSessionFormatVersion = 1;
constexpr uint8_t kFlagHasPeerRatchet = 1 << 0;
constexpr uint8_t kFlagHasSendingChain = 1 << 1;
constexpr uint8_t kFlagHasReceivingChain = 1 << 2;
constexpr uint8_t kFlagIsInitiator = 1 << 3;
constexpr uint8_t kFlagPendingPrekeyHeader = 1 << 4;
constexpr uint8_t kFlagsKnown = (1 << 5) - 1;
}  // namespace

Bytes Session::serialize() const {
  Bytes out;
  const RatchetState& r = ratchet;
  out.reserve(1 + 1 + 6 * 32 + 12 + kAssociatedDataBytes + kPrekeyHeaderBytes + 4 +
              r.skipped.size() * 68 + 1 + r.previous_peer_ratchets.size() * 8);
  ByteWriter w(out);
  w.u8(kSessionFormatVersion);
  w.u8(static_cast<uint8_t>((r.has_peer_ratchet ? kFlagHasPeerRatchet : 0) |
                            (r.has_sending_chain ? kFlagHasSendingChain : 0) |
                            (r.has_receiving_chain ? kFlagHasReceivingChain : 0) |
                            (is_initiator ? kFlagIsInitiator : 0) |
                            (has_pending_prekey_header ? kFlagPendingPrekeyHeader : 0)));
  w.bytes(r.own_ratchet.secret);
  w.bytes(r.own_ratchet.public_key);
  w.bytes(r.peer_ratchet_public);
  w.bytes(r.root_key);
  w.bytes(r.sending_chain_key);
  w.bytes(r.receiving_chain_key);
  w.u32(r.sent_count);
  w.u32(r.received_count);
  w.u32(r.previous_sending_count);
  w.bytes(associated_data);
  if (has_pending_prekey_header) w.bytes(pending_prekey_header);
  w.u32(static_cast<uint32_t>(r.skipped.size()));
  for (const auto& key : r.skipped) {
    w.bytes(key.ratchet_public);
    w.u32(key.message_number);
    w.bytes(key.message_key);
  }
  w.u8(static_cast<uint8_t>(r.previous_peer_ratchets.size()));
  for (const uint64_t fingerprint : r.previous_peer_ratchets) {
    w.u32(static_cast<uint32_t>(fingerprint >> 32));
    w.u32(static_cast<uint32_t>(fingerprint));
  }
  return out;
}

Result<Session> Session::deserialize(ByteSpan blob) {
  ByteReader reader(blob, "session blob");
  Session s;
  RatchetState& r = s.ratchet;
  uint8_t version = 0, flags = 0;
  if (auto st = reader.u8(version, "version"); !st) return st.error();
  if (version != kSessionFormatVersion) {
    return reader.error(ErrorCode::bad_input, "version", "unknown " + std::to_string(version));
  }
  if (auto st = reader.u8(flags, "flags"); !st) return st.error();
  if ((flags & ~kFlagsKnown) != 0) {
    return reader.error(ErrorCode::bad_input, "flags", "unknown bits set");
  }
  r.has_peer_ratchet = (flags & kFlagHasPeerRatchet) != 0;
  r.has_sending_chain = (flags & kFlagHasSendingChain) != 0;
  r.has_receiving_chain = (flags & kFlagHasReceivingChain) != 0;
  s.is_initiator = (flags & kFlagIsInitiator) != 0;
  s.has_pending_prekey_header = (flags & kFlagPendingPrekeyHeader) != 0;
  Status st;
  if (!(st = reader.array(r.own_ratchet.secret, "own ratchet secret"))) return st.error();
  if (!(st = reader.array(r.own_ratchet.public_key, "own ratchet public"))) return st.error();
  if (!(st = reader.array(r.peer_ratchet_public, "peer ratchet public"))) return st.error();
  if (!(st = reader.array(r.root_key, "root key"))) return st.error();
  if (!(st = reader.array(r.sending_chain_key, "sending chain key"))) return st.error();
  if (!(st = reader.array(r.receiving_chain_key, "receiving chain key"))) return st.error();
  if (!(st = reader.u32(r.sent_count, "Ns"))) return st.error();
  if (!(st = reader.u32(r.received_count, "Nr"))) return st.error();
  if (!(st = reader.u32(r.previous_sending_count, "PN"))) return st.error();
  if (!(st = reader.array(s.associated_data, "associated data"))) return st.error();
  if (s.has_pending_prekey_header) {
    if (!(st = reader.array(s.pending_prekey_header, "prekey header"))) return st.error();
  }
  uint32_t skipped_count = 0;
  if (!(st = reader.u32(skipped_count, "skipped key count"))) return st.error();
  if (skipped_count > kSkippedKeysMax) {
    return reader.error(ErrorCode::bad_input, "skipped key count",
                        std::to_string(skipped_count) + " exceeds the cap of 2000");
  }
  if (reader.remaining() < size_t{skipped_count} * 68) {
    return reader.error(ErrorCode::bad_input, "skipped keys", "truncated");
  }
  r.skipped.resize(skipped_count);
  for (auto& key : r.skipped) {
    if (!(st = reader.array(key.ratchet_public, "skipped key ratchet"))) return st.error();
    if (!(st = reader.u32(key.message_number, "skipped key number"))) return st.error();
    if (!(st = reader.array(key.message_key, "skipped message key"))) return st.error();
  }
  uint8_t previous_count = 0;
  if (!(st = reader.u8(previous_count, "previous ratchet count"))) return st.error();
  if (previous_count > kPreviousPeerRatchetKeysMax) {
    return reader.error(ErrorCode::bad_input, "previous ratchet count", "exceeds the cap");
  }
  r.previous_peer_ratchets.resize(previous_count);
  for (uint64_t& fingerprint : r.previous_peer_ratchets) {
    uint32_t high = 0, low = 0;
    if (!(st = reader.u32(high, "previous peer ratchet"))) return st.error();
    if (!(st = reader.u32(low, "previous peer ratchet"))) return st.error();
    fingerprint = uint64_t{high} << 32 | low;
  }
  if (!(st = reader.expect_end())) return st.error();
  return s;
}

Result<Session> make_initiator_session(const Key32& shared_secret, const Key32& initiator_identity,
                                       const Key32& responder_identity,
                                       const Key32& responder_signed_prekey,
                                       const PrekeyHeader& prekey_header) {
  X25519KeyPair pair = generate_x25519_key_pair();
  auto session = make_initiator_session_with(shared_secret, initiator_identity, responder_identity,
                                             responder_signed_prekey, prekey_header, pair);
  wipe(pair.secret);
  return session;
}

Result<Session> make_initiator_session_with(const Key32& shared_secret,
                                            const Key32& initiator_identity,
                                            const Key32& responder_identity,
                                            const Key32& responder_signed_prekey,
                                            const PrekeyHeader& prekey_header,
                                            const X25519KeyPair& ratchet_pair) {
  Session s;
  s.is_initiator = true;
  std::copy(initiator_identity.begin(), initiator_identity.end(), s.associated_data.begin());
  std::copy(responder_identity.begin(), responder_identity.end(), s.associated_data.begin() + 32);
  RatchetState& r = s.ratchet;
  r.own_ratchet = ratchet_pair;
  r.peer_ratchet_public = responder_signed_prekey;
  r.has_peer_ratchet = true;
  auto dh_out = dh(r.own_ratchet.secret, r.peer_ratchet_public);
  if (!dh_out) return dh_out.error();
  RootStep step = kdf_rk(shared_secret, *dh_out);
  wipe(*dh_out);
  r.root_key = step.root_key;
  r.sending_chain_key = step.chain_key;
  r.has_sending_chain = true;
  wipe(step.root_key);
  wipe(step.chain_key);
  s.has_pending_prekey_header = true;
  encode_prekey_header(prekey_header, s.pending_prekey_header.data());
  return s;
}

Session make_responder_session(const Key32& shared_secret, const Key32& initiator_identity,
                               const Key32& responder_identity,
                               const X25519KeyPair& signed_prekey) {
  Session s;
  s.is_initiator = false;
  std::copy(initiator_identity.begin(), initiator_identity.end(), s.associated_data.begin());
  std::copy(responder_identity.begin(), responder_identity.end(), s.associated_data.begin() + 32);
  s.ratchet.own_ratchet = signed_prekey;
  s.ratchet.root_key = shared_secret;
  return s;
}

}  // namespace msgsim::crypto
