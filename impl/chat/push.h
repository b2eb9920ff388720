// The push service: stands in for APNs/FCM. Storage sends it a `Notify` for every device that
// was not connected when an entry was fanned out; it records them (counts per device, in
// memory: a real push service's delivery is not something the system can observe either).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "impl/chat/config.h"
#include "impl/chat/protocol.h"

namespace msgsim::chat {

class PushNode final : public Node {
 public:
  static constexpr size_t kDevicesMax = 4'000'000;

  explicit PushNode(const ChatConfig& config) : config_(config) {}
  void on_start(Context& ctx) override;
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override;
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context&, uint64_t) override {}
  std::string describe() const override;

  uint64_t notifications() const { return state_.notifications; }
  // Notifications recorded for one device (its id, "u17.d2").
  uint64_t notifications_for(const std::string& device) const;

 private:
  struct State {
    std::map<std::string, uint64_t> per_device;
    uint64_t notifications = 0;
    uint64_t dropped = 0;  // per_device was full: counted in `notifications` only
  };
  void invariants() const;

  const ChatConfig& config_;
  State state_;
};

}  // namespace msgsim::chat
