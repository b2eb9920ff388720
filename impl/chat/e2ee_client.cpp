#include "impl/chat/e2ee_client.h"

#include <algorithm>

namespace msgsim::chat {

namespace {

void put_u16(Bytes& out, size_t value) {
  out.push_back(static_cast<uint8_t>(value >> 8));
  out.push_back(static_cast<uint8_t>(value));
}

void put_u32(Bytes& out, size_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

template <size_t N>
bool copy_key(const Bytes& from, std::array<uint8_t, N>& to) {
  if (from.size() != N) return false;
  std::copy(from.begin(), from.end(), to.begin());
  return true;
}

// One recipient envelope of a body, read without copying.
struct RecipientEnvelope {
  std::string_view device;
  ByteView envelope;
};

// Walks the envelope list that follows the 2-byte body header, calling visit(envelope) for
// each; `rest` is what follows it. No list is built: open() looks for one envelope per call.
template <class Visit>
Status walk_envelopes(ByteView body, ByteView& rest, Visit&& visit) {
  auto bad = [](const std::string& what) { return make_error(ErrorCode::bad_input, "E2EE body: " + what); };
  if (body.size() < 4) return bad("shorter than its header");
  size_t at = 2;
  const size_t count = size_t{body[at]} << 8 | body[at + 1];
  at += 2;
  for (size_t i = 0; i < count; ++i) {
    if (at + 1 > body.size()) return bad("envelope " + std::to_string(i) + ": device id length past the end");
    const size_t id_bytes = body[at++];
    if (at + id_bytes + 4 > body.size()) return bad("envelope " + std::to_string(i) + ": device id past the end");
    const std::string_view device(reinterpret_cast<const char*>(body.data() + at), id_bytes);
    at += id_bytes;
    const size_t bytes = crypto::load_u32be(body.data() + at);
    at += 4;
    if (bytes > body.size() - at) return bad("envelope " + std::to_string(i) + ": " + std::to_string(bytes) + " bytes past the end");
    visit(RecipientEnvelope{device, body.subspan(at, bytes)});
    at += bytes;
  }
  rest = body.subspan(at);
  return {};
}

}  // namespace

std::vector<std::string> devices_of(const std::string& user, uint32_t devices) {
  std::vector<std::string> out;
  out.reserve(devices);
  for (uint32_t d = 1; d <= devices; ++d) out.push_back(user + ".d" + std::to_string(d));
  return out;
}

E2eeClient::E2eeClient(std::string user, std::string device)
    : user_(std::move(user)), device_(std::move(device)),
      store_(crypto::make_prekey_store(/*signed_prekey_id=*/1, kInitialOneTimePrekeys)) {}

PublishKeys E2eeClient::initial_publish(uint64_t request_id) const {
  PublishKeys publish;
  publish.request_id = request_id;
  publish.user = user_;
  publish.device = device_;
  const auto& identity = store_.identity.signing.public_key;
  publish.identity.assign(identity.begin(), identity.end());
  publish.spk_id = store_.signed_prekey.id;
  publish.spk.assign(store_.signed_prekey.pair.public_key.begin(), store_.signed_prekey.pair.public_key.end());
  publish.spk_sig.assign(store_.signed_prekey.signature.begin(), store_.signed_prekey.signature.end());
  for (const crypto::OneTimePrekey& opk : store_.one_time_prekeys) {
    if (publish.opks.size() >= kOneTimePrekeysPerPublishMax) break;
    publish.opks.push_back({opk.id, Bytes(opk.pair.public_key.begin(), opk.pair.public_key.end())});
  }
  return publish;
}

PublishKeys E2eeClient::replenish(uint64_t request_id) {
  PublishKeys publish;
  publish.request_id = request_id;
  publish.user = user_;
  publish.device = device_;
  const size_t before = store_.one_time_prekeys.size();
  store_.generate_one_time_prekeys(kReplenishBatch);
  for (size_t i = before; i < store_.one_time_prekeys.size(); ++i) {
    const crypto::OneTimePrekey& opk = store_.one_time_prekeys[i];
    publish.opks.push_back({opk.id, Bytes(opk.pair.public_key.begin(), opk.pair.public_key.end())});
  }
  return publish;
}

PublishKeys E2eeClient::rotate_signed_prekey(uint64_t request_id) {
  previous_signed_prekey_ = store_.signed_prekey;
  store_.signed_prekey = crypto::generate_signed_prekey(store_.identity, store_.signed_prekey.id + 1);
  PublishKeys publish = initial_publish(request_id);
  publish.opks.clear();  // the service keeps the ones it has: same identity
  return publish;
}

Status E2eeClient::add_bundle(const DeviceBundle& bundle) {
  if (has_session(bundle.device) || bundle.device == device_) return {};
  crypto::PrekeyBundle prekeys;
  prekeys.signed_prekey_id = bundle.spk_id;
  if (!copy_key(bundle.identity, prekeys.identity) || !copy_key(bundle.spk, prekeys.signed_prekey) ||
      !copy_key(bundle.spk_sig, prekeys.signed_prekey_signature) ||
      (bundle.has_opk && !copy_key(bundle.opk, prekeys.one_time_prekey))) {
    return make_error(ErrorCode::bad_input, "bundle of " + bundle.device + ": a key of the wrong size");
  }
  if (bundle.has_opk) prekeys.one_time_prekey_id = bundle.opk_id;
  Result<crypto::Session> session = crypto::initiate_session(store_.identity, prekeys, &peer_identities_);
  if (!session.ok()) return make_error(session.error().code, "X3DH with " + bundle.device + ": " + session.error().message);
  sessions_[bundle.device].push_back(std::move(*session));
  return {};
}

Status E2eeClient::append_envelope(Bytes& body, const std::string& recipient, ByteView plaintext) {
  auto it = sessions_.find(recipient);
  MSGSIM_ASSERT(it != sessions_.end() && !it->second.empty(), "sealing for " + recipient + " without a session");
  MSGSIM_ASSERT_LE(recipient.size(), size_t{255});
  crypto::Session& session = it->second.front();
  const size_t bytes = session.envelope_size(plaintext.size());
  body.push_back(static_cast<uint8_t>(recipient.size()));
  body.insert(body.end(), recipient.begin(), recipient.end());
  put_u32(body, bytes);
  const size_t at = body.size();
  body.resize(at + bytes);
  // Encrypted straight into its place in the body: no intermediate buffer.
  return session.encrypt(plaintext, crypto::MutableByteSpan(body.data() + at, bytes));
}

Result<Bytes> E2eeClient::seal_direct(ByteView plaintext, const std::vector<std::string>& recipients) {
  Bytes body;
  size_t estimate = 4;
  for (const std::string& r : recipients) estimate += 1 + r.size() + 4 + plaintext.size() + 256;
  body.reserve(estimate);
  body.push_back(kE2eeBodyMagic);
  body.push_back(kE2eeBodyDirect);
  put_u16(body, recipients.size());
  for (const std::string& recipient : recipients) {
    Status sealed = append_envelope(body, recipient, plaintext);
    if (!sealed.ok()) return sealed.error();
  }
  return body;
}

E2eeClient::GroupState& E2eeClient::group(const std::string& group) {
  auto it = groups_.find(group);
  if (it != groups_.end()) return it->second;
  MSGSIM_ASSERT_LT(groups_.size(), kGroupsMax);
  return groups_[group];
}

void E2eeClient::rotate_group_key(const std::string& group_id) {
  auto it = groups_.find(group_id);
  if (it != groups_.end()) it->second.rotate = true;
}

void E2eeClient::forget_group_sender(const std::string& group_id, const std::string& sender_device) {
  auto it = groups_.find(group_id);
  if (it == groups_.end()) return;
  std::erase_if(it->second.peers, [&](const auto& peer) { return peer.first == sender_device; });
  std::erase(it->second.distributed_to, sender_device);
}

Result<Bytes> E2eeClient::seal_group(const std::string& group_id, ByteView plaintext,
                                     const std::vector<std::string>& member_devices) {
  GroupState& g = group(group_id);
  std::vector<std::string> members(member_devices);
  std::sort(members.begin(), members.end());
  // The current key went to a device that is no member now: it must not see this message.
  const bool reached_a_non_member =
      !std::includes(members.begin(), members.end(), g.sent_to.begin(), g.sent_to.end());
  if (!g.has_own || g.rotate || reached_a_non_member) {
    Result<crypto::OwnSenderKey> fresh = crypto::create_sender_key(group_id, g.next_key_id);
    if (!fresh.ok()) return fresh.error();
    g.next_key_id++;
    g.own = std::move(*fresh);
    g.has_own = true;
    g.rotate = false;
    g.distributed_to.clear();
    g.sent_to.clear();
  }
  std::vector<const std::string*> needing;
  for (const std::string& d : member_devices) {
    if (d != device_ && !std::binary_search(g.distributed_to.begin(), g.distributed_to.end(), d)) needing.push_back(&d);
  }
  const size_t wire_bytes = crypto::sender_key_wire_size(group_id, plaintext.size());
  Bytes body;
  body.reserve(4 + wire_bytes + needing.size() * 256);
  body.push_back(kE2eeBodyMagic);
  body.push_back(kE2eeBodyGroup);
  put_u16(body, needing.size());
  if (!needing.empty()) {
    const Bytes distribution = crypto::distribution_message(g.own);
    for (const std::string* d : needing) {
      Status sealed = append_envelope(body, *d, distribution);
      if (!sealed.ok()) return sealed.error();
      auto at = std::lower_bound(g.sent_to.begin(), g.sent_to.end(), *d);
      if (at == g.sent_to.end() || *at != *d) {
        MSGSIM_ASSERT_LT(g.sent_to.size(), crypto::kGroupMembersMax * 64);
        g.sent_to.insert(at, *d);
      }
    }
  }
  const size_t at = body.size();
  body.resize(at + wire_bytes);
  Status encrypted = crypto::sender_key_encrypt(g.own, plaintext, crypto::MutableByteSpan(body.data() + at, wire_bytes));
  if (!encrypted.ok()) return encrypted.error();
  return body;
}

void E2eeClient::note_own_echo(const std::string& group_id, ByteView body) {
  auto it = groups_.find(group_id);
  if (it == groups_.end() || !it->second.has_own) return;
  if (body.size() < 2 || body[0] != kE2eeBodyMagic || body[1] != kE2eeBodyGroup) return;
  GroupState& g = it->second;
  ByteView rest;
  std::vector<std::string_view> devices;
  if (!walk_envelopes(body, rest, [&](const RecipientEnvelope& e) { devices.push_back(e.device); }).ok()) return;
  Result<crypto::SenderKeyWireHeader> header = crypto::peek_sender_key_header(rest);
  if (!header.ok() || header->key_id != g.own.key_id || g.rotate) return;  // an older key's message
  for (const std::string_view d : devices) {
    const std::string device(d);
    auto at = std::lower_bound(g.distributed_to.begin(), g.distributed_to.end(), device);
    if (at == g.distributed_to.end() || *at != device) {
      MSGSIM_ASSERT_LT(g.distributed_to.size(), crypto::kGroupMembersMax * 64);
      g.distributed_to.insert(at, device);
    }
  }
}

Result<size_t> E2eeClient::open_pairwise(const std::string& peer_device, ByteView envelope, crypto::MutableByteSpan out,
                                         bool& duplicate, bool& used_opk) {
  std::vector<crypto::Session>& sessions = sessions_[peer_device];
  std::optional<Error> last;
  for (size_t i = 0; i < sessions.size(); ++i) {
    Result<size_t> size = sessions[i].decrypt(envelope, out);
    if (size.ok()) {
      // The peer answered on this session: send with it from now on (it is confirmed both ways).
      if (i != 0) std::rotate(sessions.begin(), sessions.begin() + static_cast<std::ptrdiff_t>(i), sessions.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      return *size;
    }
    if (crypto::is_duplicate_message(size.error())) {
      duplicate = true;
      return size_t{0};
    }
    last = size.error();
  }
  if (!envelope.empty() && envelope[0] == crypto::kEnvelopePrekey) {
    // A prekey message naming the previous signed prekey (sent before the last rotation) is
    // accepted with it: the store is given that key for the one call.
    Result<crypto::ParsedEnvelope> parsed = crypto::parse_envelope(envelope);
    const bool previous = parsed.ok() && previous_signed_prekey_ &&
                          parsed->prekey_header.signed_prekey_id == previous_signed_prekey_->id;
    if (previous) std::swap(store_.signed_prekey, *previous_signed_prekey_);
    Result<crypto::AcceptedSession> accepted = crypto::accept_prekey_message(store_, envelope, out, &peer_identities_);
    if (previous) std::swap(store_.signed_prekey, *previous_signed_prekey_);
    if (accepted.ok()) {
      used_opk = true;
      // A first contact from the peer. If this device's own session to the peer was never
      // answered (both initiated at once), the peer's session becomes the one to send with.
      const bool own_unconfirmed = !sessions.empty() && sessions.front().has_pending_prekey_header;
      if (sessions.empty() || own_unconfirmed) sessions.insert(sessions.begin(), std::move(accepted->session));
      else sessions.push_back(std::move(accepted->session));
      if (sessions.size() > kSessionsPerPeerMax) sessions.pop_back();
      return accepted->plaintext_size;
    }
    last = accepted.error();
  }
  if (sessions.empty()) sessions_.erase(peer_device);
  if (!last) return make_error(ErrorCode::not_found, "no session with " + peer_device);
  return *last;
}

Result<E2eeClient::Opened> E2eeClient::open(const std::string& conv, const std::string& sender_device, ByteView body) {
  if (body.size() < 2 || body[0] != kE2eeBodyMagic || (body[1] != kE2eeBodyDirect && body[1] != kE2eeBodyGroup)) {
    return make_error(ErrorCode::bad_input, "not an E2EE body");
  }
  ByteView rest;
  std::optional<RecipientEnvelope> mine;  // the last one addressed to this device
  Status walked = walk_envelopes(body, rest, [&](const RecipientEnvelope& e) {
    if (e.device == device_) mine = e;
  });
  if (!walked.ok()) return walked.error();
  Opened opened;

  if (body[1] == kE2eeBodyDirect) {
    if (!mine) return make_error(ErrorCode::not_found, "no envelope for " + device_);
    opened.plaintext.resize(mine->envelope.size());
    Result<size_t> size = open_pairwise(sender_device, mine->envelope, opened.plaintext, opened.duplicate,
                                        opened.used_one_time_prekey);
    if (!size.ok()) return size.error();
    opened.plaintext.resize(*size);
    return opened;
  }

  GroupState& g = group(conv);
  if (mine) {
    Bytes distribution(mine->envelope.size());
    bool duplicate = false;
    Result<size_t> size = open_pairwise(sender_device, mine->envelope, distribution, duplicate, opened.used_one_time_prekey);
    if (!size.ok()) return make_error(size.error().code, "sender key distribution: " + size.error().message);
    if (!duplicate) {
      Result<crypto::PeerSenderKey> key = crypto::parse_distribution_message(ByteView(distribution.data(), *size));
      if (!key.ok()) return key.error();
      if (key->group_id != conv) return make_error(ErrorCode::crypto_error, "a sender key for " + key->group_id + " in " + conv);
      auto it = std::find_if(g.peers.begin(), g.peers.end(), [&](const auto& p) { return p.first == sender_device; });
      if (it == g.peers.end()) g.peers.emplace_back(sender_device, std::move(*key));
      else if (it->second.key_id != key->key_id) it->second = std::move(*key);
    }
  }
  auto it = std::find_if(g.peers.begin(), g.peers.end(), [&](const auto& p) { return p.first == sender_device; });
  if (it == g.peers.end()) return make_error(ErrorCode::not_found, "no sender key of " + sender_device + " in " + conv);
  Result<crypto::SenderKeyWireHeader> header = crypto::peek_sender_key_header(rest);
  if (!header.ok()) return header.error();
  if (header->key_id != it->second.key_id) {
    return make_error(ErrorCode::not_found, "sender key " + std::to_string(header->key_id) + " of " + sender_device +
                                                " unknown here (holding " + std::to_string(it->second.key_id) + ")");
  }
  opened.plaintext.resize(rest.size());
  Result<size_t> size = crypto::sender_key_decrypt(it->second, rest, opened.plaintext);
  if (!size.ok()) {
    if (crypto::is_duplicate_message(size.error())) {
      opened.duplicate = true;
      opened.plaintext.clear();
      return opened;
    }
    return size.error();
  }
  opened.plaintext.resize(*size);
  return opened;
}

size_t E2eeClient::memory_bytes() const {
  size_t bytes = sizeof(*this) + store_.one_time_prekeys.capacity() * sizeof(crypto::OneTimePrekey) +
                 peer_identities_.memory_bytes();
  for (const auto& [peer, sessions] : sessions_) {
    bytes += 64 + peer.capacity();
    for (const crypto::Session& s : sessions) {
      bytes += sizeof(s) + s.ratchet.skipped.capacity() * sizeof(crypto::SkippedMessageKey) +
               s.ratchet.previous_peer_ratchets.capacity() * sizeof(uint64_t);
    }
  }
  for (const auto& [id, g] : groups_) bytes += 64 + sizeof(g) + g.peers.size() * sizeof(crypto::PeerSenderKey);
  return bytes;
}

}  // namespace msgsim::chat
