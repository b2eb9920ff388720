#include "impl/crypto/x3dh.h"

#include <algorithm>
#include <map>
#include <set>

#include "impl/base/assert.h"
#include "impl/crypto/ed25519_verify.h"

namespace msgsim::crypto {

namespace {

// Below every client's own PeerIdentityCache, one memo per thread shared by all the clients on
// it (the simulator runs every device on one thread). Converting an identity key to its X25519
// form and verifying a signed prekey signature are pure functions of the bytes, so a client may
// take what another client on the thread computed: nothing any client holds, sends or decides
// changes, only the simulator's CPU. In ci-nemesis 300 devices converted 1,712 identity keys
// (565 k instructions each, the subgroup check is a scalar multiplication) of 300 distinct ones,
// and verified each user's signed prekey once per device that contacted it. Only successes are
// kept (a bad key or signature is checked afresh every time). Bounded: a full memo starts over.
constexpr size_t kSharedMemoEntriesMax = size_t{1} << 14;
constexpr size_t kSignedPrekeyRecordBytes = 32 + 4 + 32 + 64;  // identity, id, key, signature

struct SharedMemo {
  std::map<Key32, Key32> conversions;  // Ed25519 public -> X25519 public
  std::set<std::array<uint8_t, kSignedPrekeyRecordBytes>> verified_signed_prekeys;
};

SharedMemo& shared_memo() {
  thread_local SharedMemo memo;
  return memo;
}

const Key32* shared_conversion(const Key32& identity) {
  const SharedMemo& memo = shared_memo();
  const auto it = memo.conversions.find(identity);
  return it != memo.conversions.end() ? &it->second : nullptr;
}

void remember_conversion(const Key32& identity, const Key32& x25519) {
  SharedMemo& memo = shared_memo();
  if (memo.conversions.size() >= kSharedMemoEntriesMax) memo.conversions.clear();
  memo.conversions.emplace(identity, x25519);
}

Result<Key32> shared_x25519_of(const Key32& identity) {
  if (const Key32* known = shared_conversion(identity)) return *known;
  Result<Key32> converted = ed25519_public_to_x25519(identity);
  if (!converted) return converted;
  remember_conversion(identity, *converted);
  return converted;
}

std::array<uint8_t, kSignedPrekeyRecordBytes> signed_prekey_record(const PrekeyBundle& bundle) {
  std::array<uint8_t, kSignedPrekeyRecordBytes> record;
  auto at = std::copy(bundle.identity.begin(), bundle.identity.end(), record.begin());
  for (int shift = 24; shift >= 0; shift -= 8) *at++ = static_cast<uint8_t>(bundle.signed_prekey_id >> shift);
  at = std::copy(bundle.signed_prekey.begin(), bundle.signed_prekey.end(), at);
  at = std::copy(bundle.signed_prekey_signature.begin(), bundle.signed_prekey_signature.end(), at);
  MSGSIM_ASSERT(at == record.end());
  return record;
}

bool shared_signature_known(const PrekeyBundle& bundle) {
  return shared_memo().verified_signed_prekeys.count(signed_prekey_record(bundle)) != 0;
}

void remember_signature(const PrekeyBundle& bundle) {
  SharedMemo& memo = shared_memo();
  if (memo.verified_signed_prekeys.size() >= kSharedMemoEntriesMax) memo.verified_signed_prekeys.clear();
  memo.verified_signed_prekeys.insert(signed_prekey_record(bundle));
}

}  // namespace

IdentityKeyPair generate_identity() {
  IdentityKeyPair identity;
  identity.signing = generate_ed25519_key_pair();
  identity.x25519_secret = ed25519_secret_to_x25519(identity.signing.secret);
  return identity;
}

IdentityKeyPair identity_from_secret(const Ed25519Secret& secret) {
  IdentityKeyPair identity;
  identity.signing.secret = secret;
  // libsodium's 64-byte secret is seed || public key.
  std::copy_n(secret.begin() + 32, 32, identity.signing.public_key.begin());
  identity.x25519_secret = ed25519_secret_to_x25519(secret);
  return identity;
}

Bytes signed_prekey_message(uint32_t id, const Key32& public_key) {
  Bytes message;
  message.reserve(kSignedPrekeyLabel.size() + 4 + 32);
  ByteWriter w(message);
  w.bytes(as_bytes(kSignedPrekeyLabel));
  w.u32(id);
  w.bytes(public_key);
  return message;
}

SignedPrekey generate_signed_prekey(const IdentityKeyPair& identity, uint32_t id) {
  SignedPrekey prekey;
  prekey.id = id;
  prekey.pair = generate_x25519_key_pair();
  prekey.signature = sign(identity.signing.secret, signed_prekey_message(id, prekey.pair.public_key));
  return prekey;
}

PrekeyStore::~PrekeyStore() {
  wipe(signed_prekey.pair.secret);
  for (auto& prekey : one_time_prekeys) wipe(prekey.pair.secret);
}

size_t PrekeyStore::generate_one_time_prekeys(size_t count) {
  size_t made = 0;
  while (made < count && one_time_prekeys.size() < kOneTimePrekeysMax &&
         next_one_time_prekey_id != kNoOneTimePrekey) {
    one_time_prekeys.push_back(OneTimePrekey{next_one_time_prekey_id++, generate_x25519_key_pair()});
    ++made;
  }
  return made;
}

PrekeyBundle PrekeyStore::bundle(std::optional<uint32_t> one_time_prekey_id) const {
  PrekeyBundle out;
  out.identity = identity.signing.public_key;
  out.signed_prekey_id = signed_prekey.id;
  out.signed_prekey = signed_prekey.pair.public_key;
  out.signed_prekey_signature = signed_prekey.signature;
  if (one_time_prekey_id) {
    auto it = std::find_if(one_time_prekeys.begin(), one_time_prekeys.end(),
                           [&](const OneTimePrekey& p) { return p.id == *one_time_prekey_id; });
    MSGSIM_ASSERT(it != one_time_prekeys.end(), "bundle asked for an unknown one-time prekey");
    out.one_time_prekey_id = it->id;
    out.one_time_prekey = it->pair.public_key;
  }
  return out;
}

PrekeyStore make_prekey_store(uint32_t signed_prekey_id, size_t one_time_prekey_count) {
  PrekeyStore store;
  store.identity = generate_identity();
  store.signed_prekey = generate_signed_prekey(store.identity, signed_prekey_id);
  store.generate_one_time_prekeys(one_time_prekey_count);
  return store;
}

namespace {

// SK = HKDF(32 zero bytes, 32 x 0xFF || DH1 || DH2 || DH3 [|| DH4], "msgsim.x3dh.v1", 32).
Key32 derive_shared_secret(const Key32& dh1, const Key32& dh2, const Key32& dh3,
                           const Key32* dh4) {
  std::array<uint8_t, 32 * 5> ikm;
  std::fill_n(ikm.begin(), 32, uint8_t{0xFF});
  std::copy(dh1.begin(), dh1.end(), ikm.begin() + 32);
  std::copy(dh2.begin(), dh2.end(), ikm.begin() + 64);
  std::copy(dh3.begin(), dh3.end(), ikm.begin() + 96);
  if (dh4 != nullptr) std::copy(dh4->begin(), dh4->end(), ikm.begin() + 128);
  Key32 shared;
  hkdf_sha256_zero_salt(ByteSpan(ikm.data(), dh4 != nullptr ? 160 : 128), as_bytes(kInfoX3dh),
                        shared);
  wipe(ikm);
  return shared;
}

// DH1..DH3 [DH4] computed together, then SK; the first DH (in order) that gives the all-zero
// result is the error, as computing them one by one would report it.
Result<Key32> secret_of_dhs(std::span<const DhPair> pairs) {
  std::array<Key32, 4> dhs;
  const std::span<Key32> results(dhs.data(), pairs.size());
  if (Status computed = dh_all(pairs, results); !computed) return computed.error();
  Key32 shared = derive_shared_secret(dhs[0], dhs[1], dhs[2], pairs.size() == 4 ? &dhs[3] : nullptr);
  for (Key32& key : dhs) wipe(key);
  return shared;
}

}  // namespace

Result<Key32> PeerIdentityCache::x25519_of(const Key32& identity) {
  if (const Key32* known = known_x25519(identity)) return *known;
  Result<Key32> converted = shared_x25519_of(identity);
  if (!converted) return converted;
  record_x25519(identity, *converted);
  return converted;
}

namespace {

Bytes bundle_signed_message(const PrekeyBundle& bundle) {
  return signed_prekey_message(bundle.signed_prekey_id, bundle.signed_prekey);
}

bool signed_prekey_signature_valid(const PrekeyBundle& bundle) {
  return verify(bundle.identity, bundle_signed_message(bundle), bundle.signed_prekey_signature);
}

Error bad_signature_error(const PrekeyBundle& bundle) {
  return make_error(ErrorCode::crypto_error,
                    "prekey bundle of " + to_hex(bundle.identity).substr(0, 16) +
                        ": signed prekey " + std::to_string(bundle.signed_prekey_id) +
                        " has a bad signature");
}

// A bundle met for the first time: the signature check and the identity key's conversion on
// one decoding and doubling chain (ed25519_verify.h), with libsodium's verdicts. The signature
// is judged first, as the spec orders it.
Result<Key32> first_contact_identity(const PrekeyBundle& bundle) {
  const Ed25519IdentityCheck check = ed25519_verify_and_convert(
      bundle.identity, bundle_signed_message(bundle), bundle.signed_prekey_signature);
  if (!check.signature_valid) return bad_signature_error(bundle);
  if (!check.converted) return invalid_identity_error(bundle.identity);
  return check.x25519;
}

// The same through the thread's shared memo of signatures that verified.
bool shared_signed_prekey_valid(const PrekeyBundle& bundle) {
  if (shared_signature_known(bundle)) return true;
  if (!signed_prekey_signature_valid(bundle)) return false;
  remember_signature(bundle);
  return true;
}

}  // namespace

bool PeerIdentityCache::signed_prekey_valid(const PrekeyBundle& bundle) {
  if (knows_signed_prekey(bundle)) return true;
  if (!shared_signed_prekey_valid(bundle)) return false;
  record_signed_prekey(bundle);
  return true;
}

bool PeerIdentityCache::knows_signed_prekey(const PrekeyBundle& bundle) const {
  for (const VerifiedSignedPrekey& record : verified_) {
    if (record.id == bundle.signed_prekey_id && record.identity == bundle.identity &&
        record.signed_prekey == bundle.signed_prekey &&
        record.signature == bundle.signed_prekey_signature) {
      return true;
    }
  }
  return false;
}

void PeerIdentityCache::record_signed_prekey(const PrekeyBundle& bundle) {
  const VerifiedSignedPrekey record{bundle.identity, bundle.signed_prekey_id,
                                    bundle.signed_prekey, bundle.signed_prekey_signature};
  if (verified_.size() < kSignedPrekeysMax) {
    verified_.push_back(record);
  } else {
    verified_[next_verified_replaced_] = record;
    next_verified_replaced_ = (next_verified_replaced_ + 1) % kSignedPrekeysMax;
  }
}

const Key32* PeerIdentityCache::known_x25519(const Key32& identity) const {
  for (const auto& [ed25519, x25519] : entries_) {
    if (ed25519 == identity) return &x25519;
  }
  return nullptr;
}

void PeerIdentityCache::record_x25519(const Key32& identity, const Key32& x25519) {
  if (entries_.size() < kEntriesMax) {
    entries_.emplace_back(identity, x25519);
  } else {
    entries_[next_replaced_] = {identity, x25519};
    next_replaced_ = (next_replaced_ + 1) % kEntriesMax;
  }
}

Result<Key32> PeerIdentityCache::check_bundle(const PrekeyBundle& bundle) {
  const bool signature_known = knows_signed_prekey(bundle);
  const Key32* known = known_x25519(bundle.identity);
  if (signature_known && known != nullptr) return *known;
  if (signature_known) return x25519_of(bundle.identity);
  if (known != nullptr) {
    if (!shared_signed_prekey_valid(bundle)) return bad_signature_error(bundle);
    record_signed_prekey(bundle);
    return *known;
  }
  // Neither is this client's: another client on the thread may have converted the key.
  if (const Key32* shared = shared_conversion(bundle.identity)) {
    const Key32 x25519 = *shared;
    if (!shared_signed_prekey_valid(bundle)) return bad_signature_error(bundle);
    record_signed_prekey(bundle);
    record_x25519(bundle.identity, x25519);
    return x25519;
  }
  Result<Key32> converted = first_contact_identity(bundle);
  if (!converted) return converted;
  record_signed_prekey(bundle);
  record_x25519(bundle.identity, *converted);
  remember_signature(bundle);
  remember_conversion(bundle.identity, *converted);
  return converted;
}

namespace {

Result<Key32> peer_identity_x25519(const Key32& identity, PeerIdentityCache* identities) {
  return identities != nullptr ? identities->x25519_of(identity) : ed25519_public_to_x25519(identity);
}

}  // namespace

Result<Key32> x3dh_initiator_secret(const IdentityKeyPair& self, const PrekeyBundle& bundle,
                                    const X25519KeyPair& ephemeral,
                                    PeerIdentityCache* identities) {
  auto peer_identity_x = identities != nullptr ? identities->check_bundle(bundle)
                                               : first_contact_identity(bundle);
  if (!peer_identity_x) return peer_identity_x.error();
  // DH1 = DH(IKa, SPKb), DH2 = DH(EKa, IKb), DH3 = DH(EKa, SPKb) [, DH4 = DH(EKa, OPKb)]:
  // independent, so computed together (dh_all: one pass of the four-lane ladder).
  const DhPair pairs[4] = {{&self.x25519_secret, &bundle.signed_prekey},
                           {&ephemeral.secret, &*peer_identity_x},
                           {&ephemeral.secret, &bundle.signed_prekey},
                           {&ephemeral.secret, &bundle.one_time_prekey}};
  return secret_of_dhs(std::span<const DhPair>(pairs, bundle.one_time_prekey_id ? 4 : 3));
}

Result<Key32> x3dh_responder_secret(const IdentityKeyPair& self,
                                    const X25519KeyPair& signed_prekey,
                                    const X25519KeyPair* one_time_prekey,
                                    const PrekeyHeader& header,
                                    PeerIdentityCache* identities) {
  auto peer_identity_x = peer_identity_x25519(header.initiator_identity, identities);
  if (!peer_identity_x) return peer_identity_x.error();
  // The same four DHs from the responder's side: DH1 = DH(SPKb, IKa), DH2 = DH(IKb, EKa),
  // DH3 = DH(SPKb, EKa) [, DH4 = DH(OPKb, EKa)].
  const DhPair pairs[4] = {
      {&signed_prekey.secret, &*peer_identity_x},
      {&self.x25519_secret, &header.ephemeral_public},
      {&signed_prekey.secret, &header.ephemeral_public},
      {one_time_prekey != nullptr ? &one_time_prekey->secret : nullptr, &header.ephemeral_public}};
  return secret_of_dhs(std::span<const DhPair>(pairs, one_time_prekey != nullptr ? 4 : 3));
}

Result<Session> initiate_session(const IdentityKeyPair& self, const PrekeyBundle& bundle,
                                 PeerIdentityCache* identities) {
  X25519KeyPair ephemeral = generate_x25519_key_pair();
  auto shared = x3dh_initiator_secret(self, bundle, ephemeral, identities);
  if (!shared) {
    wipe(ephemeral.secret);
    return shared.error();
  }
  const PrekeyHeader header{self.signing.public_key, ephemeral.public_key, bundle.signed_prekey_id,
                            bundle.one_time_prekey_id.value_or(kNoOneTimePrekey)};
  wipe(ephemeral.secret);  // EK.sk is used for X3DH only
  auto session = make_initiator_session(*shared, self.signing.public_key, bundle.identity,
                                        bundle.signed_prekey, header);
  wipe(*shared);
  return session;
}

Result<AcceptedSession> accept_prekey_message(PrekeyStore& store, ByteSpan envelope,
                                              MutableByteSpan plaintext_out,
                                              PeerIdentityCache* identities) {
  auto parsed = parse_envelope(envelope);
  if (!parsed) return parsed.error();
  if (!parsed->has_prekey_header) {
    return make_error(ErrorCode::crypto_error,
                      "a normal message from a peer this device has no session with");
  }
  const PrekeyHeader& header = parsed->prekey_header;
  if (header.signed_prekey_id != store.signed_prekey.id) {
    return make_error(ErrorCode::crypto_error,
                      "prekey message names signed prekey " +
                          std::to_string(header.signed_prekey_id) + ", this device's is " +
                          std::to_string(store.signed_prekey.id));
  }
  const OneTimePrekey* one_time = nullptr;
  if (header.one_time_prekey_id != kNoOneTimePrekey) {
    auto it = std::find_if(store.one_time_prekeys.begin(), store.one_time_prekeys.end(),
                           [&](const OneTimePrekey& p) { return p.id == header.one_time_prekey_id; });
    if (it == store.one_time_prekeys.end()) {
      const bool used = std::find(store.used_one_time_prekey_ids.begin(),
                                  store.used_one_time_prekey_ids.end(),
                                  header.one_time_prekey_id) !=
                        store.used_one_time_prekey_ids.end();
      return make_error(ErrorCode::crypto_error,
                        "prekey message names one-time prekey " +
                            std::to_string(header.one_time_prekey_id) +
                            (used ? ", which was already used" : ", which this device never had"));
    }
    one_time = &*it;
  }
  auto shared = x3dh_responder_secret(store.identity, store.signed_prekey.pair,
                                      one_time != nullptr ? &one_time->pair : nullptr, header,
                                      identities);
  if (!shared) return shared.error();
  AcceptedSession accepted{make_responder_session(*shared, header.initiator_identity,
                                                  store.identity.signing.public_key,
                                                  store.signed_prekey.pair),
                           0};
  wipe(*shared);
  auto opened = accepted.session.decrypt_parts(parsed->ratchet_header, parsed->ciphertext,
                                               plaintext_out);
  if (!opened) return opened.error();
  accepted.plaintext_size = *opened;
  if (one_time != nullptr) {
    // The owner deletes OPK.sk after its first use (spec).
    const uint32_t id = one_time->id;
    auto it = store.one_time_prekeys.begin() + (one_time - store.one_time_prekeys.data());
    wipe(it->pair.secret);
    store.one_time_prekeys.erase(it);
    store.used_one_time_prekey_ids.push_back(id);
    if (store.used_one_time_prekey_ids.size() > kUsedOneTimePrekeyIdsMax) {
      store.used_one_time_prekey_ids.erase(store.used_one_time_prekey_ids.begin());
    }
  }
  return accepted;
}

}  // namespace msgsim::crypto
