// The key service (the key half of the user service, spec/e2ee.md "Keys a user publishes"):
// devices publish their identity key, signed prekey and one-time prekeys; an initiator fetches
// a user's bundles, one per device, each with at most one one-time prekey that is never handed
// out again.
//
// Durability: everything lives in the node's SQLite database (WAL, synchronous=FULL). A
// FetchBundles answer is sent only after the transaction that deletes the one-time prekeys it
// hands out committed, so even a crash right after the answer cannot hand the same prekey to a
// second initiator. A PublishKeys is acknowledged only after its keys are durable.
//
// Validation: a published signed prekey whose signature does not verify under the published
// identity is refused (KeyRequestFailed naming the device), and nothing is stored; so every
// bundle this service hands out verifies, and a bundle that does not (a tampering service)
// makes the initiator abort X3DH with a clear error (the device's side of the spec).
//
// Exhaustion: when a device's one-time prekeys run out, its bundle comes without one
// (has_opk = false) and X3DH runs without DH4, as the spec allows. Devices learn how many are
// left from every KeysPublished (a PublishKeys with no keys is a pure query) and replenish.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "impl/base/sqlite.h"
#include "impl/chat/config.h"
#include "impl/chat/protocol.h"
#include "impl/crypto/primitives.h"

namespace msgsim::chat {

class KeyServiceNode final : public Node {
 public:
  // Bounds: devices registered, and one-time prekeys held per device (a publish beyond it
  // stores only what fits).
  static constexpr size_t kDevicesMax = 4'000'000;
  static constexpr size_t kOneTimePrekeysPerDeviceMax = 200;

  explicit KeyServiceNode(const ChatConfig& config) : config_(config) {}
  void on_start(Context& ctx) override;
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context&, uint64_t) override {}
  std::string describe() const override;

  uint64_t bundles_served() const { return bundles_served_; }
  uint64_t one_time_prekeys_handed_out() const { return opks_handed_out_; }

 private:
  // Keys held inline at their fixed sizes (on_publish checks them): a full-scale run holds a
  // record per device (150,000), and three byte vectors cost 248 bytes where the keys take 128.
  struct DeviceKeysRecord {
    crypto::Key32 identity{};
    crypto::Key32 spk{};
    crypto::Signature spk_sig{};
    uint32_t spk_id = 0;
    // Unused one-time prekeys, lowest id first, at most kOneTimePrekeysPerDeviceMax. A vector of
    // fixed-size keys, not a deque of byte vectors: libstdc++'s deque allocates about 600 bytes
    // even when empty and each Bytes key is an allocation of its own, and a full-scale run holds
    // a record per device (150,000). Handing out the front shifts at most a few KB.
    struct OneTimePrekeyRecord {
      uint32_t id = 0;
      crypto::Key32 key{};
    };
    std::vector<OneTimePrekeyRecord> opks;
    // The highest one-time prekey id ever stored for this identity: a device numbers its
    // prekeys upwards, so an id at or below it is a re-publish (a retry after a lost answer)
    // of a key that may have been handed out since, and is never stored again.
    uint32_t opk_high = 0;
  };
  void on_publish(Context& ctx, ConnId conn, const PublishKeys& publish);
  void on_fetch(Context& ctx, ConnId conn, const FetchBundles& fetch);
  void fail(Context& ctx, ConnId conn, uint64_t request_id, const std::string& reason);
  void halt(Context& ctx, const std::string& what);
  void invariants() const;

  const ChatConfig& config_;
  sqlite3* db_ = nullptr;
  bool halted_ = false;  // a write failed: fail-stop, answer nothing
  // (user, device) -> keys; ordered so that a user's bundles are adjacent and come in a
  // deterministic order (by device). One map, not a map per user: with one device a user,
  // the inner map's node and header cost ~130 bytes a device.
  using DeviceKey = std::pair<std::string, std::string>;
  std::map<DeviceKey, DeviceKeysRecord> records_;
  size_t devices_ = 0;
  uint64_t bundles_served_ = 0;
  uint64_t opks_handed_out_ = 0;
};

}  // namespace msgsim::chat
