// X3DH (spec/e2ee.md): the keys a device publishes, the bundle the key service hands out, the
// initiator's key agreement and the responder's acceptance of a first (prekey) message.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "impl/crypto/primitives.h"
#include "impl/crypto/ratchet.h"

namespace msgsim::crypto {

inline constexpr std::string_view kSignedPrekeyLabel = "msgsim.spk.v1";
// Used one-time prekey ids remembered for a clear "already used" error; an older used id is
// simply unknown, which fails the same way.
inline constexpr size_t kUsedOneTimePrekeyIdsMax = 64;
// One-time prekeys a device holds unused at once (it uploads them to the key service).
inline constexpr size_t kOneTimePrekeysMax = 1000;

// Identity key: Ed25519, with its X25519 form (for DH1 and DH2) cached.
struct IdentityKeyPair {
  Ed25519KeyPair signing;
  Key32 x25519_secret{};  // IKx.sk
  ~IdentityKeyPair() {
    wipe(signing.secret);
    wipe(x25519_secret);
  }
  IdentityKeyPair() = default;
  IdentityKeyPair(const IdentityKeyPair&) = default;
  IdentityKeyPair& operator=(const IdentityKeyPair&) = default;
};
IdentityKeyPair generate_identity();
IdentityKeyPair identity_from_secret(const Ed25519Secret& secret);

struct SignedPrekey {
  uint32_t id = 0;
  X25519KeyPair pair;
  Signature signature{};
};
// The signed message: "msgsim.spk.v1" || u32be(spk_id) || SPK.pub.
Bytes signed_prekey_message(uint32_t id, const Key32& public_key);
SignedPrekey generate_signed_prekey(const IdentityKeyPair& identity, uint32_t id);

struct OneTimePrekey {
  uint32_t id = 0;
  X25519KeyPair pair;
};

// What the key service hands an initiator.
struct PrekeyBundle {
  Key32 identity{};  // IK_B.pub (Ed25519)
  uint32_t signed_prekey_id = 0;
  Key32 signed_prekey{};
  Signature signed_prekey_signature{};
  std::optional<uint32_t> one_time_prekey_id;
  Key32 one_time_prekey{};
};

// A device's own prekeys: the identity, the current signed prekey, the unused one-time
// prekeys (secret halves deleted on first use).
struct PrekeyStore {
  IdentityKeyPair identity;
  SignedPrekey signed_prekey;
  std::vector<OneTimePrekey> one_time_prekeys;   // unused, at most kOneTimePrekeysMax
  std::vector<uint32_t> used_one_time_prekey_ids;  // newest last
  uint32_t next_one_time_prekey_id = 1;

  ~PrekeyStore();
  // Generates up to `count` more one-time prekeys (bounded by kOneTimePrekeysMax) and returns
  // how many it made.
  size_t generate_one_time_prekeys(size_t count);
  // The bundle for one initiator; `one_time_prekey_id` picks an unused OPK or none.
  PrekeyBundle bundle(std::optional<uint32_t> one_time_prekey_id) const;
};
PrekeyStore make_prekey_store(uint32_t signed_prekey_id, size_t one_time_prekey_count);

// The X25519 forms (IKx) of peers' Ed25519 identity keys, each converted once.
// crypto_sign_ed25519_pk_to_curve25519 checks that the point is in the prime-order subgroup (a
// scalar multiplication by the group order): about 45 us, more than one X25519, and both sides
// of every X3DH pay it for the peer's identity. A client keeps the keys it converted, so that
// a peer device it meets again (a re-initiation after a failed session, simultaneous first
// contacts, the responder side after its own initiation) costs no second conversion. A key that
// fails the conversion is not kept. At most kEntriesMax keys, the oldest replaced first.
//
// It also remembers the signed prekeys whose signature it verified (identity, id, key and
// signature, compared in full): a bundle seen again (a re-initiation, a second device session
// to the same peer device) skips the Ed25519 verification (about 50 us) because the very same
// bytes were verified before. A bad signature is never kept. At most kSignedPrekeysMax records,
// the oldest replaced first.
class PeerIdentityCache {
 public:
  static constexpr size_t kEntriesMax = 256;
  static constexpr size_t kSignedPrekeysMax = 256;
  Result<Key32> x25519_of(const Key32& identity);
  // True when the bundle's signed prekey signature verifies under its identity key (from the
  // record of an earlier verification of the same bytes, or by verifying and recording it).
  bool signed_prekey_valid(const PrekeyBundle& bundle);
  // Both checks of the initiator's X3DH, the bundle's signature first: the X25519 form of its
  // identity key, or the error. What neither record holds (a first contact) is checked on one
  // decoding and doubling chain (ed25519_verify_and_convert).
  Result<Key32> check_bundle(const PrekeyBundle& bundle);
  size_t size() const { return entries_.size(); }
  size_t verified_signed_prekeys() const { return verified_.size(); }
  // The heap bytes of both records (identity conversions and verified signed prekeys).
  size_t memory_bytes() const {
    return entries_.capacity() * sizeof(entries_[0]) + verified_.capacity() * sizeof(VerifiedSignedPrekey);
  }

 private:
  bool knows_signed_prekey(const PrekeyBundle& bundle) const;
  void record_signed_prekey(const PrekeyBundle& bundle);
  const Key32* known_x25519(const Key32& identity) const;
  void record_x25519(const Key32& identity, const Key32& x25519);

  struct VerifiedSignedPrekey {
    Key32 identity;
    uint32_t id = 0;
    Key32 signed_prekey;
    Signature signature;
  };
  std::vector<std::pair<Key32, Key32>> entries_;  // (Ed25519 public, X25519 public)
  size_t next_replaced_ = 0;
  std::vector<VerifiedSignedPrekey> verified_;
  size_t next_verified_replaced_ = 0;
};

// The initiator's X3DH agreement with a given ephemeral pair: verifies spk_sig and returns SK.
// `identities` (optional) converts the peer's identity key through the client's cache.
Result<Key32> x3dh_initiator_secret(const IdentityKeyPair& self, const PrekeyBundle& bundle,
                                    const X25519KeyPair& ephemeral,
                                    PeerIdentityCache* identities = nullptr);
// The responder's side of the same agreement.
Result<Key32> x3dh_responder_secret(const IdentityKeyPair& self,
                                    const X25519KeyPair& signed_prekey,
                                    const X25519KeyPair* one_time_prekey,
                                    const PrekeyHeader& header,
                                    PeerIdentityCache* identities = nullptr);

// The initiator's whole first step: X3DH with a fresh ephemeral, then the ratchet. The session
// attaches the prekey header to its messages until the first reply.
Result<Session> initiate_session(const IdentityKeyPair& self, const PrekeyBundle& bundle,
                                 PeerIdentityCache* identities = nullptr);

// The responder receives a prekey message from a peer it has no session with: X3DH from its
// store, then the first decryption. The one-time prekey is consumed (its secret wiped) only
// when the message authenticates, so a forged message burns nothing; a message naming a used
// or unknown one-time prekey, or another signed prekey, fails with crypto_error.
struct AcceptedSession {
  Session session;
  size_t plaintext_size = 0;
};
Result<AcceptedSession> accept_prekey_message(PrekeyStore& store, ByteSpan envelope,
                                              MutableByteSpan plaintext_out,
                                              PeerIdentityCache* identities = nullptr);

}  // namespace msgsim::crypto
