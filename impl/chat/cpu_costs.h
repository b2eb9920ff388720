// The cost model's table as the nodes see it: how much virtual CPU each kind of work costs each
// server role, in nanoseconds. The runtime loads the table (reports/cost_model.h reads the JSON
// that `msgsim calibrate` writes) and hands it to every node in ChatConfig; a node charges a
// frame's cost with one call, `ctx.charge_cpu(config.cpu_costs.frame_cost_ns(role, frame))`,
// before it acts on the frame, so whatever the frame makes the node send leaves once the work
// is done. The all-zero table (the default) charges nothing: correctness runs keep their
// digests.
//
// Which work a frame costs is fixed here, so that the table stays a list of measurable
// operations (see reports/README.md for how each is measured):
//   every frame, every role: decode
//   lb:       RouteRequest -> route (pick a server by user hash)
//   chat:     Hello -> connect (authenticate, register presence); Heartbeat -> heartbeat;
//             Send -> route (forward to the partition's queue leader); SyncRequest -> sync;
//             Route -> push for each target device (encode and send a Deliver)
//   registry: Register, Unregister, Lookup -> route (one in-memory table operation)
//   queue:    Produce -> append; Replicate -> replicate for each record
//   storage:  Records -> store + fanout for each record; SyncQuery -> sync
//   push:     Notify -> push
#pragma once

#include <array>
#include <cstdint>
#include <type_traits>
#include <variant>

#include "impl/chat/protocol.h"

namespace msgsim::chat {

enum class CostRole : uint8_t { lb, chat, registry, queue, storage, push, count };
enum class Work : uint8_t { decode, route, append, replicate, store, fanout, push, sync, connect, heartbeat, count };

inline constexpr size_t kCostRoles = static_cast<size_t>(CostRole::count);
inline constexpr size_t kWorkKinds = static_cast<size_t>(Work::count);

inline const char* to_string(CostRole role) {
  static constexpr const char* names[] = {"lb", "chat", "registry", "queue", "storage", "push"};
  return names[static_cast<size_t>(role)];
}
inline const char* to_string(Work work) {
  static constexpr const char* names[] = {"decode", "route", "append", "replicate", "store",
                                          "fanout", "push",  "sync",   "connect",   "heartbeat"};
  return names[static_cast<size_t>(work)];
}

struct CpuCosts {
  // ns[role][work]: virtual CPU nanoseconds for one unit of that work at that role.
  std::array<std::array<int64_t, kWorkKinds>, kCostRoles> ns{};

  int64_t of(CostRole role, Work work) const { return ns[static_cast<size_t>(role)][static_cast<size_t>(work)]; }
  int64_t& at(CostRole role, Work work) { return ns[static_cast<size_t>(role)][static_cast<size_t>(work)]; }

  bool zero() const {
    for (const auto& row : ns)
      for (int64_t v : row)
        if (v != 0) return false;
    return true;
  }

  // The CPU one received frame costs a node of `role` (the mapping in the header comment).
  int64_t frame_cost_ns(CostRole role, const Frame& frame) const {
    const auto cost = [&](Work work) { return of(role, work); };
    int64_t total = cost(Work::decode);
    switch (role) {
      case CostRole::lb:
        if (std::holds_alternative<RouteRequest>(frame)) total += cost(Work::route);
        break;
      case CostRole::chat:
        if (std::holds_alternative<Hello>(frame)) total += cost(Work::connect);
        else if (std::holds_alternative<Heartbeat>(frame)) total += cost(Work::heartbeat);
        else if (std::holds_alternative<Send>(frame)) total += cost(Work::route);
        else if (std::holds_alternative<SyncRequest>(frame)) total += cost(Work::sync);
        else if (const auto* route = std::get_if<Route>(&frame))
          total += cost(Work::push) * static_cast<int64_t>(route->targets.size());
        break;
      case CostRole::registry:
        if (std::holds_alternative<Register>(frame) || std::holds_alternative<Unregister>(frame) ||
            std::holds_alternative<Lookup>(frame))
          total += cost(Work::route);
        break;
      case CostRole::queue:
        if (std::holds_alternative<Produce>(frame)) total += cost(Work::append);
        else total += cost(Work::replicate) * replicated_records(frame);
        break;
      case CostRole::storage:
        if (const auto* records = std::get_if<Records>(&frame))
          total += (cost(Work::store) + cost(Work::fanout)) * static_cast<int64_t>(records->records.size());
        else if (std::holds_alternative<SyncQuery>(frame)) total += cost(Work::sync);
        break;
      case CostRole::push:
        if (std::holds_alternative<Notify>(frame)) total += cost(Work::push);
        break;
      case CostRole::count: break;
    }
    return total;
  }

  // Records in a leader-to-follower Replicate frame (type 45), zero for any other frame. Found
  // by type number so that this header does not depend on the replication protocol's version.
  static int64_t replicated_records(const Frame& frame) {
    return std::visit(
        [](const auto& f) -> int64_t {
          using T = std::decay_t<decltype(f)>;
          if constexpr (T::kType == 45) return static_cast<int64_t>(f.records.size());
          else return 0;
        },
        frame);
  }
};

}  // namespace msgsim::chat
