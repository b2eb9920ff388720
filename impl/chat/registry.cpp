#include "impl/chat/registry.h"

#include <algorithm>

namespace msgsim::chat {

namespace {
constexpr uint64_t kExpiryTimer = 1;
}

void RegistryNode::on_start(Context& ctx) {
  entries_.clear();
  ctx.set_timer(config_.tuning.registry_ttl_ns, kExpiryTimer);
}

void RegistryNode::on_frame(Context& ctx, ConnId conn, ByteView bytes) {
  Result<Frame> decoded = decode(bytes);
  if (!decoded.ok()) {
    ctx.log(LogLevel::warn, "registry: closing a connection that sent a bad frame: " + decoded.error().message);
    ctx.close(conn);
    return;
  }
  ctx.charge_cpu(config_.cpu_costs.frame_cost_ns(CostRole::registry, *decoded));
  const int64_t now = ctx.now_ns();
  if (const auto* reg = std::get_if<Register>(&*decoded)) {
    auto key = std::make_pair(reg->user, reg->device);
    auto it = entries_.find(key);
    if (it == entries_.end() && entries_.size() >= kEntriesMax) {
      ctx.log(LogLevel::warn, "registry: full, not registering " + reg->device);
      return;
    }
    const int64_t ttl = std::clamp<int64_t>(reg->ttl_ns, 0, 10 * config_.tuning.registry_ttl_ns);
    entries_[std::move(key)] = Presence{reg->server, now + ttl};
  } else if (const auto* unreg = std::get_if<Unregister>(&*decoded)) {
    auto it = entries_.find({unreg->user, unreg->device});
    // Only the server that holds the device may remove it: a late unregister from the old
    // server must not undo the registration on the new one.
    if (it != entries_.end() && it->second.server == unreg->server) entries_.erase(it);
  } else if (const auto* lookup = std::get_if<Lookup>(&*decoded)) {
    Located answer;
    answer.request_id = lookup->request_id;
    for (const UserRef& ref : lookup->users) {
      for (auto it = entries_.lower_bound({ref.user, std::string()}); it != entries_.end() && it->first.first == ref.user;
           ++it) {
        if (it->second.expires_at_ns <= now) continue;
        if (answer.locations.size() >= kTargetsMax) break;
        answer.locations.push_back(Location{ref.user, it->first.second, it->second.server});
      }
    }
    ctx.send(conn, encode_as(answer));
  } else {
    ctx.log(LogLevel::warn, std::string("registry: unexpected ") + frame_name(*decoded) + "; closing");
    ctx.close(conn);
  }
  invariants();
}

void RegistryNode::on_timer(Context& ctx, uint64_t tag) {
  MSGSIM_ASSERT_EQ(tag, kExpiryTimer);
  expire(ctx.now_ns());
  ctx.set_timer(config_.tuning.registry_ttl_ns, kExpiryTimer);
  invariants();
}

void RegistryNode::expire(int64_t now_ns) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = it->second.expires_at_ns <= now_ns ? entries_.erase(it) : std::next(it);
  }
}

std::string RegistryNode::describe() const { return "registry entries=" + std::to_string(entries_.size()); }

void RegistryNode::invariants() const { MSGSIM_ASSERT_LE(entries_.size(), kEntriesMax); }

}  // namespace msgsim::chat
