// Sender Keys for groups (spec/e2ee.md): each member encrypts a group message once under its
// own sender key and signs it; the other members hold that key, received as a distribution
// message over the pairwise sessions. After any member leaves or is removed, every remaining
// member rotates its key before its next group message and distributes it to the current
// members only (GroupKeys below does that bookkeeping).
//
// Decrypt errors follow ratchet.h: not_found = duplicate (no key left), too_large = more than
// kMaxSkip iterations ahead, bad_input = malformed, crypto_error = bad signature or tag.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "impl/crypto/primitives.h"
#include "impl/crypto/ratchet.h"

namespace msgsim::crypto {

inline constexpr std::string_view kInfoSenderKey = "msgsim.senderkey.v1";
inline constexpr size_t kGroupIdBytesMax = 255;  // its length is one byte on the wire
inline constexpr size_t kSignatureBytes = 64;
// Members of one group as GroupKeys tracks them.
inline constexpr size_t kGroupMembersMax = 1024;

// The sender's own key.
struct OwnSenderKey {
  std::string group_id;
  uint32_t key_id = 0;
  Key32 chain_key{};       // CK
  uint32_t iteration = 0;  // of the next message
  Ed25519KeyPair signing;  // SG
  ~OwnSenderKey();
  OwnSenderKey() = default;
  OwnSenderKey(const OwnSenderKey&) = default;
  OwnSenderKey& operator=(const OwnSenderKey&) = default;
  OwnSenderKey(OwnSenderKey&&) = default;
  OwnSenderKey& operator=(OwnSenderKey&&) = default;
};

// A fresh key: CK and SG from randombytes. group_id must be at most 255 bytes.
Result<OwnSenderKey> create_sender_key(std::string_view group_id, uint32_t key_id);
// group_id || u32be(key_id) || u32be(iteration) || CK || SG.pub
Bytes distribution_message(const OwnSenderKey& key);

// Bytes of the wire message for a plaintext of `plaintext_bytes`: header || ct || sig.
size_t sender_key_wire_size(std::string_view group_id, size_t plaintext_bytes);
// Encrypts and signs into `wire` (exactly sender_key_wire_size bytes), then advances CK.
Status sender_key_encrypt(OwnSenderKey& key, ByteSpan plaintext, MutableByteSpan wire);

// Another member's key as a receiver holds it.
struct PeerSenderKey {
  std::string group_id;
  uint32_t key_id = 0;
  Key32 chain_key{};            // CK for `next_iteration`
  uint32_t next_iteration = 0;
  Key32 signing_public{};       // SG.pub
  struct Skipped {
    uint32_t iteration;
    Key32 message_key;
  };
  std::vector<Skipped> skipped;  // oldest first, at most kSkippedKeysMax
  ~PeerSenderKey();
  PeerSenderKey() = default;
  PeerSenderKey(const PeerSenderKey&) = default;
  PeerSenderKey& operator=(const PeerSenderKey&) = default;
  PeerSenderKey(PeerSenderKey&&) = default;
  PeerSenderKey& operator=(PeerSenderKey&&) = default;
};
Result<PeerSenderKey> parse_distribution_message(ByteSpan message);

// Byte serialisation for the client's database; deserialisation checks every bound and returns
// bad_input for a malformed blob.
Bytes serialize_own_sender_key(const OwnSenderKey& key);
Result<OwnSenderKey> deserialize_own_sender_key(ByteSpan blob);
Bytes serialize_peer_sender_key(const PeerSenderKey& key);
Result<PeerSenderKey> deserialize_peer_sender_key(ByteSpan blob);

// The header fields of a group wire message, read without verifying (to find the key).
struct SenderKeyWireHeader {
  std::string_view group_id;
  uint32_t key_id = 0;
  uint32_t iteration = 0;
};
Result<SenderKeyWireHeader> peek_sender_key_header(ByteSpan wire);

// Verifies the signature first, then decrypts into `plaintext_out`; returns the plaintext size.
// The key is unchanged on any error.
Result<size_t> sender_key_decrypt(PeerSenderKey& key, ByteSpan wire,
                                  MutableByteSpan plaintext_out);

// One member's view of one group's keys: its own sender key and the other members' keys,
// with rotation after removals.
class GroupKeys {
 public:
  GroupKeys(std::string group_id, std::string self, std::vector<std::string> members);

  const std::string& group_id() const { return group_id_; }
  const std::vector<std::string>& members() const { return members_; }

  // A member joins: it must be sent the current own key (if any), never an older one.
  Status add_member(const std::string& member);
  // A member leaves or is removed: its key is forgotten and ours rotates before the next send.
  Status remove_member(const std::string& member);

  // What the caller must do before sending: if the own key is missing or must rotate, a new
  // key is made and its distribution message is to be sent (over the pairwise sessions) to
  // exactly `recipients`, the current members other than us.
  struct Distribution {
    Bytes message;
    std::vector<std::string> recipients;
  };
  Result<std::optional<Distribution>> prepare_send();
  // The own key; prepare_send() must have returned successfully first.
  OwnSenderKey& own_key();
  bool rotation_pending() const { return rotation_pending_ || !has_own_key_; }

  // A distribution message from a current member. The same key id again is a no-op (a
  // retransmission); a lower one is refused as stale.
  Status accept_distribution(const std::string& sender, ByteSpan message);
  Result<size_t> decrypt(const std::string& sender, ByteSpan wire, MutableByteSpan plaintext_out);

 private:
  std::string group_id_;
  std::string self_;
  std::vector<std::string> members_;  // sorted, ourselves included
  bool has_own_key_ = false;
  bool rotation_pending_ = false;
  uint32_t next_key_id_ = 1;
  OwnSenderKey own_;
  std::vector<std::pair<std::string, PeerSenderKey>> peer_keys_;  // one current key per member
};

}  // namespace msgsim::crypto
