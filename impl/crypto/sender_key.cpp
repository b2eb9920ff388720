#include "impl/crypto/sender_key.h"

#include <algorithm>

#include "impl/base/assert.h"
#include "impl/crypto/ed25519_verify.h"

namespace msgsim::crypto {

OwnSenderKey::~OwnSenderKey() {
  wipe(chain_key);
  wipe(signing.secret);
}

PeerSenderKey::~PeerSenderKey() {
  wipe(chain_key);
  for (auto& s : skipped) wipe(s.message_key);
}

Result<OwnSenderKey> create_sender_key(std::string_view group_id, uint32_t key_id) {
  if (group_id.size() > kGroupIdBytesMax) {
    return make_error(ErrorCode::bad_input, "group id of " + std::to_string(group_id.size()) +
                                                " bytes, at most 255");
  }
  OwnSenderKey key;
  key.group_id = std::string(group_id);
  key.key_id = key_id;
  randombytes_buf(key.chain_key.data(), key.chain_key.size());
  key.signing = generate_ed25519_key_pair();
  return key;
}

namespace {

void write_group_id(ByteWriter& w, std::string_view group_id) {
  w.u8(static_cast<uint8_t>(group_id.size()));
  w.bytes(as_bytes(group_id));
}

size_t header_size(std::string_view group_id) { return 1 + group_id.size() + 8; }

void sender_message_keys(const Key32& message_key, MessageKeys& out) {
  std::array<uint8_t, 32 + kAeadNonceBytes> expanded;
  hkdf_sha256_zero_salt(message_key, as_bytes(kInfoSenderKey), expanded);
  std::copy_n(expanded.begin(), 32, out.aead_key.begin());
  std::copy_n(expanded.begin() + 32, kAeadNonceBytes, out.nonce.begin());
  wipe(expanded);
}

Status read_group_id(ByteReader& reader, std::string_view& group_id) {
  uint8_t length = 0;
  if (auto s = reader.u8(length, "group id length"); !s) return s;
  auto bytes = reader.view(length, "group id");
  if (!bytes) return bytes.error();
  group_id = std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  return {};
}

}  // namespace

Bytes distribution_message(const OwnSenderKey& key) {
  Bytes out;
  out.reserve(header_size(key.group_id) + 64);
  ByteWriter w(out);
  write_group_id(w, key.group_id);
  w.u32(key.key_id);
  w.u32(key.iteration);
  w.bytes(key.chain_key);
  w.bytes(key.signing.public_key);
  return out;
}

size_t sender_key_wire_size(std::string_view group_id, size_t plaintext_bytes) {
  return header_size(group_id) + plaintext_bytes + kAeadTagBytes + kSignatureBytes;
}

Status sender_key_encrypt(OwnSenderKey& key, ByteSpan plaintext, MutableByteSpan wire) {
  if (wire.size() != sender_key_wire_size(key.group_id, plaintext.size())) {
    return make_error(ErrorCode::bad_input, "group wire buffer of the wrong size");
  }
  if (key.iteration == UINT32_MAX) {
    return make_error(ErrorCode::too_large, "sender key exhausted its 2^32 iterations");
  }
  const size_t header_bytes = header_size(key.group_id);
  wire[0] = static_cast<uint8_t>(key.group_id.size());
  std::copy(key.group_id.begin(), key.group_id.end(), wire.begin() + 1);
  store_u32be(wire.data() + 1 + key.group_id.size(), key.key_id);
  store_u32be(wire.data() + 5 + key.group_id.size(), key.iteration);
  ChainStep step = kdf_ck(key.chain_key);
  const size_t ciphertext_bytes = plaintext.size() + kAeadTagBytes;
  {
    MessageKeys keys;
    sender_message_keys(step.message_key, keys);
    aead_encrypt(keys.aead_key, keys.nonce, wire.first(header_bytes), plaintext,
                 wire.subspan(header_bytes, ciphertext_bytes));
  }
  MSGSIM_ASSERT(crypto_sign_detached(wire.data() + header_bytes + ciphertext_bytes, nullptr,
                                     wire.data(), header_bytes + ciphertext_bytes,
                                     key.signing.secret.data()) == 0);
  key.chain_key = step.next_chain_key;
  key.iteration += 1;
  wipe(step.message_key);
  wipe(step.next_chain_key);
  return {};
}

Result<PeerSenderKey> parse_distribution_message(ByteSpan message) {
  ByteReader reader(message, "sender key distribution");
  PeerSenderKey key;
  std::string_view group_id;
  if (auto s = read_group_id(reader, group_id); !s) return s.error();
  key.group_id = std::string(group_id);
  Status s;
  if (!(s = reader.u32(key.key_id, "key id"))) return s.error();
  if (!(s = reader.u32(key.next_iteration, "iteration"))) return s.error();
  if (!(s = reader.array(key.chain_key, "chain key"))) return s.error();
  if (!(s = reader.array(key.signing_public, "signing key"))) return s.error();
  if (!(s = reader.expect_end())) return s.error();
  return key;
}

Result<SenderKeyWireHeader> peek_sender_key_header(ByteSpan wire) {
  ByteReader reader(wire, "group message");
  SenderKeyWireHeader header;
  if (auto s = read_group_id(reader, header.group_id); !s) return s.error();
  Status s;
  if (!(s = reader.u32(header.key_id, "key id"))) return s.error();
  if (!(s = reader.u32(header.iteration, "iteration"))) return s.error();
  if (reader.remaining() < kAeadTagBytes + kSignatureBytes) {
    return reader.error(ErrorCode::bad_input, "ciphertext", "shorter than tag and signature");
  }
  return header;
}

Result<size_t> sender_key_decrypt(PeerSenderKey& key, ByteSpan wire,
                                  MutableByteSpan plaintext_out) {
  auto header = peek_sender_key_header(wire);
  if (!header) return header.error();
  if (header->group_id != key.group_id || header->key_id != key.key_id) {
    return make_error(ErrorCode::crypto_error,
                      "group message for group '" + std::string(header->group_id) + "' key " +
                          std::to_string(header->key_id) + ", the sender's key is '" +
                          key.group_id + "' key " + std::to_string(key.key_id));
  }
  const size_t header_bytes = header_size(key.group_id);
  const size_t signed_bytes = wire.size() - kSignatureBytes;
  // The signature first, before anything else (spec). The chain's key is the same for every
  // message, so its verification table is cached (ed25519_verify.h; libsodium's verdicts).
  Signature signature;
  std::copy_n(wire.begin() + static_cast<ptrdiff_t>(signed_bytes), signature.size(),
              signature.begin());
  if (!ed25519_verify_cached(key.signing_public, wire.first(signed_bytes), signature)) {
    return make_error(ErrorCode::crypto_error,
                      "group '" + key.group_id + "' key " + std::to_string(key.key_id) +
                          " iteration " + std::to_string(header->iteration) + ": bad signature");
  }
  const ByteSpan ciphertext = wire.subspan(header_bytes, signed_bytes - header_bytes);
  const size_t plaintext_size = ciphertext.size() - kAeadTagBytes;
  if (plaintext_out.size() < plaintext_size) {
    return make_error(ErrorCode::bad_input, "plaintext buffer too small for a group message");
  }
  MutableByteSpan out = plaintext_out.first(plaintext_size);
  const ByteSpan ad = wire.first(header_bytes);
  const uint32_t iteration = header->iteration;

  auto open = [&](const Key32& message_key) {
    MessageKeys keys;
    sender_message_keys(message_key, keys);
    return aead_decrypt(keys.aead_key, keys.nonce, ad, ciphertext, out);
  };
  auto tag_mismatch = [&] {
    return make_error(ErrorCode::crypto_error, "group '" + key.group_id + "' iteration " +
                                                   std::to_string(iteration) +
                                                   ": authentication tag mismatch");
  };

  if (iteration < key.next_iteration) {
    for (size_t i = 0; i < key.skipped.size(); ++i) {
      if (key.skipped[i].iteration != iteration) continue;
      if (!open(key.skipped[i].message_key)) return tag_mismatch();
      wipe(key.skipped[i].message_key);
      key.skipped.erase(key.skipped.begin() + static_cast<ptrdiff_t>(i));
      return plaintext_size;
    }
    return make_error(ErrorCode::not_found, "duplicate: group '" + key.group_id +
                                                "' iteration " + std::to_string(iteration) +
                                                " has no key left");
  }
  if (iteration - key.next_iteration > kMaxSkip || iteration == UINT32_MAX) {
    return make_error(ErrorCode::too_large,
                      "group message skips " + std::to_string(iteration - key.next_iteration) +
                          " iterations, more than MAX_SKIP");
  }
  std::vector<PeerSenderKey::Skipped> staged;
  Key32 chain = key.chain_key;
  for (uint32_t i = key.next_iteration; i < iteration; ++i) {
    ChainStep step = kdf_ck(chain);
    staged.push_back({i, step.message_key});
    chain = step.next_chain_key;
    wipe(step.message_key);
    wipe(step.next_chain_key);
  }
  ChainStep step = kdf_ck(chain);
  wipe(chain);
  const bool opened = open(step.message_key);
  wipe(step.message_key);
  if (!opened) {
    wipe(step.next_chain_key);
    for (auto& s : staged) wipe(s.message_key);
    return tag_mismatch();
  }
  key.chain_key = step.next_chain_key;
  wipe(step.next_chain_key);
  key.next_iteration = iteration + 1;
  key.skipped.insert(key.skipped.end(), staged.begin(), staged.end());
  for (auto& s : staged) wipe(s.message_key);
  if (key.skipped.size() > kSkippedKeysMax) {
    const auto excess = static_cast<ptrdiff_t>(key.skipped.size() - kSkippedKeysMax);
    for (auto it = key.skipped.begin(); it != key.skipped.begin() + excess; ++it) {
      wipe(it->message_key);
    }
    key.skipped.erase(key.skipped.begin(), key.skipped.begin() + excess);
  }
  return plaintext_size;
}

namespace {
constexpr uint8_t kSenderKeyFormatVersion = 1;
}  // namespace

Bytes serialize_own_sender_key(const OwnSenderKey& key) {
  Bytes out;
  ByteWriter w(out);
  w.u8(kSenderKeyFormatVersion);
  write_group_id(w, key.group_id);
  w.u32(key.key_id);
  w.u32(key.iteration);
  w.bytes(key.chain_key);
  w.bytes(key.signing.secret);
  return out;
}

Result<OwnSenderKey> deserialize_own_sender_key(ByteSpan blob) {
  ByteReader reader(blob, "own sender key blob");
  OwnSenderKey key;
  uint8_t version = 0;
  Status s;
  if (!(s = reader.u8(version, "version"))) return s.error();
  if (version != kSenderKeyFormatVersion) {
    return reader.error(ErrorCode::bad_input, "version", "unknown " + std::to_string(version));
  }
  std::string_view group_id;
  if (!(s = read_group_id(reader, group_id))) return s.error();
  key.group_id = std::string(group_id);
  if (!(s = reader.u32(key.key_id, "key id"))) return s.error();
  if (!(s = reader.u32(key.iteration, "iteration"))) return s.error();
  if (!(s = reader.array(key.chain_key, "chain key"))) return s.error();
  if (!(s = reader.array(key.signing.secret, "signing secret"))) return s.error();
  if (!(s = reader.expect_end())) return s.error();
  // libsodium's Ed25519 secret is seed || public key.
  std::copy_n(key.signing.secret.begin() + 32, 32, key.signing.public_key.begin());
  return key;
}

Bytes serialize_peer_sender_key(const PeerSenderKey& key) {
  Bytes out;
  ByteWriter w(out);
  w.u8(kSenderKeyFormatVersion);
  write_group_id(w, key.group_id);
  w.u32(key.key_id);
  w.u32(key.next_iteration);
  w.bytes(key.chain_key);
  w.bytes(key.signing_public);
  w.u32(static_cast<uint32_t>(key.skipped.size()));
  for (const auto& skipped : key.skipped) {
    w.u32(skipped.iteration);
    w.bytes(skipped.message_key);
  }
  return out;
}

Result<PeerSenderKey> deserialize_peer_sender_key(ByteSpan blob) {
  ByteReader reader(blob, "peer sender key blob");
  PeerSenderKey key;
  uint8_t version = 0;
  Status s;
  if (!(s = reader.u8(version, "version"))) return s.error();
  if (version != kSenderKeyFormatVersion) {
    return reader.error(ErrorCode::bad_input, "version", "unknown " + std::to_string(version));
  }
  std::string_view group_id;
  if (!(s = read_group_id(reader, group_id))) return s.error();
  key.group_id = std::string(group_id);
  if (!(s = reader.u32(key.key_id, "key id"))) return s.error();
  if (!(s = reader.u32(key.next_iteration, "iteration"))) return s.error();
  if (!(s = reader.array(key.chain_key, "chain key"))) return s.error();
  if (!(s = reader.array(key.signing_public, "signing key"))) return s.error();
  uint32_t count = 0;
  if (!(s = reader.u32(count, "skipped key count"))) return s.error();
  if (count > kSkippedKeysMax || reader.remaining() < size_t{count} * 36) {
    return reader.error(ErrorCode::bad_input, "skipped key count",
                        std::to_string(count) + " is over the cap or past the end");
  }
  key.skipped.resize(count);
  for (auto& skipped : key.skipped) {
    if (!(s = reader.u32(skipped.iteration, "skipped iteration"))) return s.error();
    if (!(s = reader.array(skipped.message_key, "skipped message key"))) return s.error();
  }
  if (!(s = reader.expect_end())) return s.error();
  return key;
}

GroupKeys::GroupKeys(std::string group_id, std::string self, std::vector<std::string> members)
    : group_id_(std::move(group_id)), self_(std::move(self)), members_(std::move(members)) {
  if (std::find(members_.begin(), members_.end(), self_) == members_.end()) {
    members_.push_back(self_);
  }
  std::sort(members_.begin(), members_.end());
  members_.erase(std::unique(members_.begin(), members_.end()), members_.end());
  MSGSIM_ASSERT_LE(members_.size(), kGroupMembersMax);
}

Status GroupKeys::add_member(const std::string& member) {
  auto it = std::lower_bound(members_.begin(), members_.end(), member);
  if (it != members_.end() && *it == member) {
    return make_error(ErrorCode::bad_input, "'" + member + "' is already in group " + group_id_);
  }
  if (members_.size() >= kGroupMembersMax) {
    return make_error(ErrorCode::too_large, "group " + group_id_ + " is full");
  }
  members_.insert(it, member);
  return {};
}

Status GroupKeys::remove_member(const std::string& member) {
  auto it = std::lower_bound(members_.begin(), members_.end(), member);
  if (it == members_.end() || *it != member || member == self_) {
    return make_error(ErrorCode::bad_input, "'" + member + "' is not another member of group " +
                                                group_id_);
  }
  members_.erase(it);
  peer_keys_.erase(std::remove_if(peer_keys_.begin(), peer_keys_.end(),
                                  [&](const auto& entry) { return entry.first == member; }),
                   peer_keys_.end());
  rotation_pending_ = true;
  return {};
}

Result<std::optional<GroupKeys::Distribution>> GroupKeys::prepare_send() {
  if (has_own_key_ && !rotation_pending_) return std::optional<Distribution>{};
  auto fresh = create_sender_key(group_id_, next_key_id_);
  if (!fresh) return fresh.error();
  next_key_id_ += 1;
  own_ = std::move(*fresh);
  has_own_key_ = true;
  rotation_pending_ = false;
  Distribution distribution{distribution_message(own_), {}};
  for (const auto& member : members_) {
    if (member != self_) distribution.recipients.push_back(member);
  }
  return std::optional<Distribution>(std::move(distribution));
}

OwnSenderKey& GroupKeys::own_key() {
  MSGSIM_ASSERT(has_own_key_ && !rotation_pending_, "own_key() before prepare_send()");
  return own_;
}

Status GroupKeys::accept_distribution(const std::string& sender, ByteSpan message) {
  if (!std::binary_search(members_.begin(), members_.end(), sender) || sender == self_) {
    return make_error(ErrorCode::crypto_error, "sender key distribution from '" + sender +
                                                   "', not another member of " + group_id_);
  }
  auto key = parse_distribution_message(message);
  if (!key) return key.error();
  if (key->group_id != group_id_) {
    return make_error(ErrorCode::bad_input, "distribution for group '" + key->group_id +
                                                "' given to group '" + group_id_ + "'");
  }
  for (auto& entry : peer_keys_) {
    if (entry.first != sender) continue;
    // Key ids only grow: the same id again is a retransmitted distribution (keep the state we
    // advanced since), a lower one a stale distribution that must not replace the current key.
    if (key->key_id == entry.second.key_id) return {};
    if (key->key_id < entry.second.key_id) {
      return make_error(ErrorCode::bad_input,
                        "stale sender key distribution from '" + sender + "': key " +
                            std::to_string(key->key_id) + " after key " +
                            std::to_string(entry.second.key_id));
    }
    entry.second = std::move(*key);
    return {};
  }
  peer_keys_.emplace_back(sender, std::move(*key));
  return {};
}

Result<size_t> GroupKeys::decrypt(const std::string& sender, ByteSpan wire,
                                  MutableByteSpan plaintext_out) {
  for (auto& entry : peer_keys_) {
    if (entry.first == sender) return sender_key_decrypt(entry.second, wire, plaintext_out);
  }
  // Not a duplicate: the sender's distribution has not arrived yet, so retry after it does.
  return make_error(ErrorCode::unavailable,
                    "no sender key from '" + sender + "' in group " + group_id_);
}

}  // namespace msgsim::crypto
