#include "impl/chat/load_balancer.h"

namespace msgsim::chat {

namespace {
constexpr uint64_t kCheckTimer = 1;
constexpr uint64_t kDeadlineTimer = 2;
}  // namespace

void LoadBalancerNode::on_start(Context& ctx) {
  backends_.clear();
  for (NodeId server : config_.topology.chat_servers) backends_.push_back(Backend{server, kNoConn, true, false});
  check_all(ctx);
  invariants();
}

void LoadBalancerNode::check_all(Context& ctx) {
  for (Backend& b : backends_) {
    if (b.conn == kNoConn) b.conn = ctx.connect(b.node);
    b.answered = false;
    ctx.send(b.conn, encode_as(HealthCheck{}));
  }
  ctx.set_timer(config_.tuning.health_check_timeout_ns, kDeadlineTimer);
  ctx.set_timer(config_.tuning.health_check_interval_ns, kCheckTimer);
}

NodeId LoadBalancerNode::choose(std::string_view user) const {
  // Rendezvous hashing: the healthy server with the highest hash(user, server) wins.
  NodeId best = kNoNode;
  uint64_t best_score = 0;
  const uint64_t user_hash = hash_string(user);
  for (const Backend& b : backends_) {
    if (!b.healthy) continue;
    const uint64_t score = mix64(user_hash ^ mix64(b.node + 0x51ed27));
    if (best == kNoNode || score > best_score) {
      best = b.node;
      best_score = score;
    }
  }
  return best;
}

size_t LoadBalancerNode::healthy_count() const {
  size_t n = 0;
  for (const Backend& b : backends_) n += b.healthy;
  return n;
}

void LoadBalancerNode::on_frame(Context& ctx, ConnId conn, ByteView bytes) {
  Result<Frame> decoded = decode(bytes);
  if (!decoded.ok()) {
    ctx.log(LogLevel::warn, "lb: closing a connection that sent a bad frame: " + decoded.error().message);
    ctx.close(conn);
    return;
  }
  ctx.charge_cpu(config_.cpu_costs.frame_cost_ns(CostRole::lb, *decoded));
  if (const auto* request = std::get_if<RouteRequest>(&*decoded)) {
    const NodeId server = choose(request->user);
    if (server == kNoNode) {
      stats_.refused++;
      ctx.send(conn, encode_as(RouteReply{false, 0}));
    } else {
      stats_.routed++;
      stats_.routed_per_second[ctx.now_ns() / kNanosPerSecond]++;
      ctx.send(conn, encode_as(RouteReply{true, server}));
    }
  } else if (const auto* health = std::get_if<Health>(&*decoded)) {
    for (Backend& b : backends_) {
      if (b.conn != conn) continue;
      b.answered = true;
      b.healthy = health->status == HealthStatus::ok;
    }
  } else {
    ctx.log(LogLevel::warn, std::string("lb: unexpected ") + frame_name(*decoded) + "; closing");
    ctx.close(conn);
  }
  invariants();
}

void LoadBalancerNode::on_disconnect(Context&, ConnId conn, DisconnectReason) {
  for (Backend& b : backends_) {
    if (b.conn != conn) continue;
    b.conn = kNoConn;
    b.healthy = false;  // a broken health connection is a failed check; the next one reconnects
  }
  invariants();
}

void LoadBalancerNode::on_timer(Context& ctx, uint64_t tag) {
  if (tag == kCheckTimer) {
    check_all(ctx);
  } else {
    MSGSIM_ASSERT_EQ(tag, kDeadlineTimer);
    for (Backend& b : backends_)
      if (!b.answered) b.healthy = false;
  }
  invariants();
}

std::string LoadBalancerNode::describe() const {
  return "lb healthy=" + std::to_string(healthy_count()) + "/" + std::to_string(backends_.size());
}

void LoadBalancerNode::invariants() const { MSGSIM_ASSERT_EQ(backends_.size(), config_.topology.chat_servers.size()); }

}  // namespace msgsim::chat
