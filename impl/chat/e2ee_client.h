// A device's end-to-end encryption (spec/e2ee.md), as the DeviceNode uses it: its own prekeys,
// one Double Ratchet session per peer device (created lazily, by X3DH on first contact or on
// the first prekey message received), and Sender Keys per group. Sans-IO and plain: the
// DeviceNode feeds it bundles from the key service and entries from the chat server, and puts
// what it seals into Send bodies. Every key comes from libsodium's randombytes, which the
// runtime points at the node's own seeded stream for the duration of each handler, and every
// draw happens inside a handler in an order fixed by the node's inputs: same seed, same keys.
//
// Message bodies (docs/protocol.md "E2EE bodies"); the servers see only these:
//   direct: 0xE1 0x01 | u16be n | n x recipient envelope
//   group:  0xE1 0x02 | u16be n | n x recipient envelope (sender key distributions) | sender-key wire
//   recipient envelope: u8 device-id length | device id | u32be length | pairwise envelope
// A direct message is sealed once per recipient device: every device of the peer user and the
// sender's own other devices (they show what it sent, spec/history.md). Each recipient opens
// only the envelope addressed to it; the server stores and fans out the whole body, so a
// device that syncs later finds its envelope in what storage kept.
//
// A group message is encrypted once under the sender device's sender key. Its distribution
// (the key at its current iteration) travels in the same body, pairwise-encrypted to every
// current member device that does not have it yet: so it reaches exactly the members at the
// message's place in the log, and a joining member gets the current key with the next message.
// "Has it" means: a body of this device carrying the distribution to that device came back in
// the log (the sender's own echo, note_own_echo). Not the ack: a retried send is sealed again
// after a reconnect (the membership may have changed meanwhile), and whichever of its bodies the
// queue kept is the one the members got.
// A key is never used for a member list that leaves out a device it may have reached: before
// sealing, if any device the current key's distribution was sent to (acknowledged or not) is
// not among `member_devices`, a new key is made and distributed to the members only. That is
// the rotation after a leave, whether the device learnt of the leave from the log or from the
// queue refusing a message sealed for an older list (SendStale; queue.h "E2EE ordering rule").
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "impl/base/result.h"
#include "impl/chat/protocol.h"
#include "impl/crypto/ratchet.h"
#include "impl/crypto/sender_key.h"
#include "impl/crypto/x3dh.h"

namespace msgsim::chat {

inline constexpr uint8_t kE2eeBodyMagic = 0xE1;
inline constexpr uint8_t kE2eeBodyDirect = 1;
inline constexpr uint8_t kE2eeBodyGroup = 2;

class E2eeClient {
 public:
  // One-time prekeys: a small first batch, topped up when the service runs low (a device asks
  // the count after each first contact that used one). A ci-nemesis device meets about 3 first
  // contacts in 5 minutes; 8 at the start left two thirds of them never used, and an X25519 key
  // generation each. Running out is no failure: X3DH works without one (no DH4).
  static constexpr size_t kInitialOneTimePrekeys = 4;
  static constexpr size_t kReplenishBelow = 2;      // service-side count that triggers a top-up
  static constexpr size_t kReplenishBatch = 4;
  static constexpr size_t kSessionsPerPeerMax = 3;  // simultaneous initiations leave two
  static constexpr size_t kGroupsMax = 4096;

  E2eeClient(std::string user, std::string device);

  const std::string& device() const { return device_; }
  // The publish of this device's identity, signed prekey and first one-time prekeys.
  PublishKeys initial_publish(uint64_t request_id) const;
  // More one-time prekeys (after KeysPublished said few are left); empty opks when full.
  PublishKeys replenish(uint64_t request_id);
  // A new signed prekey (the rotation schedule). The previous one is kept for prekey messages
  // already on their way that name it; the one before is deleted.
  PublishKeys rotate_signed_prekey(uint64_t request_id);
  uint32_t signed_prekey_id() const { return store_.signed_prekey.id; }

  bool has_session(const std::string& peer_device) const { return sessions_.count(peer_device) != 0; }
  // X3DH with a fetched bundle (verifies its signature first: a bad one is a crypto_error
  // naming the device, and no session is made). A no-op when a session exists.
  Status add_bundle(const DeviceBundle& bundle);

  // Seals a direct message for `recipients` (device ids; each must have a session).
  Result<Bytes> seal_direct(ByteView plaintext, const std::vector<std::string>& recipients);
  // Seals a group message; `member_devices` are the current members' devices (self included
  // or not), each other one with a session. Makes a new sender key first when the current one
  // was sent to a device not in `member_devices` (a member left).
  Result<Bytes> seal_group(const std::string& group, ByteView plaintext, const std::vector<std::string>& member_devices);
  // Forces a new sender key before the next group message (a member left, or a sealed message
  // was refused so its distribution may never have arrived).
  void rotate_group_key(const std::string& group);
  // This device's own group message came back from the log: the devices its envelopes address
  // now hold its sender key (if the key is still the current one).
  void note_own_echo(const std::string& group, ByteView body);
  // A member's device left the group: forget its sender key.
  void forget_group_sender(const std::string& group, const std::string& sender_device);

  // Opens a body addressed (among others) to this device. `duplicate` is set, with no error
  // and no state change, when the message was already decrypted (a retransmission).
  struct Opened {
    Bytes plaintext;
    bool duplicate = false;
    bool used_one_time_prekey = false;  // a first contact consumed one: check the service's count
  };
  Result<Opened> open(const std::string& conv, const std::string& sender_device, ByteView body);

  // Bytes this client holds (sessions, keys), for the memory figures.
  size_t memory_bytes() const;

 private:
  struct GroupState {
    bool has_own = false;
    bool rotate = false;
    uint32_t next_key_id = 1;
    crypto::OwnSenderKey own;
    std::vector<std::string> distributed_to;  // sorted: devices holding the current own key
    std::vector<std::string> sent_to;         // sorted: devices any body carried it to (a superset)
    std::vector<std::pair<std::string, crypto::PeerSenderKey>> peers;  // sender device -> key
  };
  Result<size_t> open_pairwise(const std::string& peer_device, ByteView envelope, crypto::MutableByteSpan out,
                               bool& duplicate, bool& used_opk);
  Status append_envelope(Bytes& body, const std::string& recipient, ByteView plaintext);
  GroupState& group(const std::string& group);

  std::string user_;
  std::string device_;
  crypto::PrekeyStore store_;
  crypto::PeerIdentityCache peer_identities_;
  std::optional<crypto::SignedPrekey> previous_signed_prekey_;
  // peer device -> sessions, the one this device sends with first.
  std::map<std::string, std::vector<crypto::Session>> sessions_;
  std::map<std::string, GroupState> groups_;
};

// The device ids of a user with `devices` devices: "<user>.d1" ... (the user service's device
// list; every node of a run shares it through the configuration).
std::vector<std::string> devices_of(const std::string& user, uint32_t devices);

}  // namespace msgsim::chat
