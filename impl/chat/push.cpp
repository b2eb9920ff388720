#include "impl/chat/push.h"

namespace msgsim::chat {

void PushNode::on_start(Context& ctx) {
  (void)config_;  // the push service needs no configuration yet; kept for a uniform factory
  ctx.log(LogLevel::info, "push: started");
}

void PushNode::on_frame(Context& ctx, ConnId conn, ByteView bytes) {
  Result<Frame> decoded = decode(bytes);
  if (!decoded.ok()) {
    ctx.log(LogLevel::warn, "push: closing a connection that sent a bad frame: " + decoded.error().message);
    ctx.close(conn);
    return;
  }
  ctx.charge_cpu(config_.cpu_costs.frame_cost_ns(CostRole::push, *decoded));
  const auto* notify = std::get_if<Notify>(&*decoded);
  if (notify == nullptr) {
    ctx.log(LogLevel::warn, std::string("push: unexpected ") + frame_name(*decoded) + "; closing");
    ctx.close(conn);
    return;
  }
  state_.notifications++;
  const auto it = state_.per_device.find(notify->device);
  if (it != state_.per_device.end()) {
    it->second++;
  } else if (state_.per_device.size() < kDevicesMax) {
    state_.per_device.emplace(notify->device, 1);
  } else {
    state_.dropped++;
  }
  invariants();
}

uint64_t PushNode::notifications_for(const std::string& device) const {
  const auto it = state_.per_device.find(device);
  return it == state_.per_device.end() ? 0 : it->second;
}

std::string PushNode::describe() const {
  return "push notifications=" + std::to_string(state_.notifications) +
         " devices=" + std::to_string(state_.per_device.size()) + " dropped=" + std::to_string(state_.dropped);
}

void PushNode::invariants() const { MSGSIM_ASSERT_LE(state_.per_device.size(), kDevicesMax); }

}  // namespace msgsim::chat
