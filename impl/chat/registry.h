// The connection registry and presence service (Redis-like): which chat server each connected
// device is on, with a TTL that chat servers refresh while the device stays. Soft state only:
// it lives in memory, a crash loses it, and the next refreshes rebuild it. A lookup that misses
// means "not connected anywhere we know of".
#pragma once

#include <map>
#include <string>
#include <utility>

#include "impl/chat/config.h"
#include "impl/chat/protocol.h"

namespace msgsim::chat {

class RegistryNode final : public Node {
 public:
  static constexpr size_t kEntriesMax = 4'000'000;

  explicit RegistryNode(const ChatConfig& config) : config_(config) {}
  void on_start(Context& ctx) override;
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t tag) override;
  std::string describe() const override;

  size_t entries() const { return entries_.size(); }

 private:
  struct Presence {
    NodeId server;
    int64_t expires_at_ns;  // this node's clock
  };
  void expire(int64_t now_ns);
  void invariants() const;

  const ChatConfig& config_;
  // (user, device) -> where; ordered, so lookups by user are a range scan.
  std::map<std::pair<std::string, std::string>, Presence> entries_;
};

}  // namespace msgsim::chat
