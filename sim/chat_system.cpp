#include "sim/chat_system.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "impl/chat/chat_server.h"
#include "impl/chat/device.h"
#include "impl/chat/key_service.h"
#include "impl/chat/load_balancer.h"
#include "impl/chat/push.h"
#include "impl/chat/queue.h"
#include "impl/chat/registry.h"
#include "impl/chat/storage.h"
#include "sim/disk.h"
#include "sim/e2ee_scan.h"
#include "sim/handoff_check.h"
#include "sim/store_check.h"

namespace msgsim::sim {

namespace {

std::string user_name(size_t index) { return "u" + std::to_string(index + 1); }

void draw_people(const Scenario& scenario, uint64_t seed, size_t users, chat::ChatConfig& config) {
  const ChatWorkloadSpec& spec = scenario.chat;
  Prng rng = Prng(seed).split("chat.workload");
  config.users.resize(users);
  std::vector<std::set<size_t>> contacts(users);
  if (users > 1) {
    const size_t per_user = std::min<size_t>(spec.contacts_per_user, users - 1);
    for (size_t u = 0; u < users; ++u) {
      for (size_t attempt = 0; contacts[u].size() < per_user && attempt < 16 * per_user; ++attempt) {
        const size_t other = rng.below(users);
        if (other == u) continue;
        contacts[u].insert(other);
        contacts[other].insert(u);
      }
    }
  }
  for (size_t u = 0; u < users; ++u) {
    chat::UserPlan& plan = config.users[u];
    plan.user = user_name(u);
    plan.devices = spec.devices_per_user;
    for (size_t c : contacts[u]) plan.contacts.push_back(user_name(c));
  }

  const size_t group_size = std::min<size_t>(spec.group_size, users);
  for (uint32_t g = 0; g < spec.groups && group_size >= 2; ++g) {
    chat::GroupPlan plan;
    plan.conv = "g:" + std::to_string(g + 1);
    std::set<size_t> members;
    while (members.size() < group_size) members.insert(rng.below(users));
    std::vector<size_t> ordered(members.begin(), members.end());
    rng.shuffle(std::span<size_t>(ordered));
    plan.admin = user_name(ordered.front());
    for (size_t m : ordered) plan.members.push_back(user_name(m));
    // Membership changes spread over the middle of the workload phase, each valid against
    // the membership the plan has reached by then.
    std::vector<int64_t> times;
    for (uint32_t k = 0; k < spec.membership_changes && k < 64; ++k) {
      times.push_back(scenario.duration_ns / 10 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(scenario.duration_ns * 8 / 10))));
    }
    std::sort(times.begin(), times.end());
    std::set<size_t> current(ordered.begin(), ordered.end());
    for (int64_t at : times) {
      std::vector<size_t> removable, addable;
      for (size_t m : current)
        if (user_name(m) != plan.admin) removable.push_back(m);
      if (current.size() < users) {
        for (size_t tries = 0; tries < 32; ++tries) {
          const size_t candidate = rng.below(users);
          if (!current.count(candidate)) {
            addable.push_back(candidate);
            break;
          }
        }
      }
      const bool leave = !removable.empty() && (addable.empty() || rng.chance(0.5));
      if (leave) {
        const size_t who = removable[rng.below(removable.size())];
        current.erase(who);
        plan.changes.push_back({at, false, user_name(who)});
      } else if (!addable.empty()) {
        current.insert(addable.front());
        plan.changes.push_back({at, true, user_name(addable.front())});
      }
    }
    config.groups.push_back(std::move(plan));
  }
}

// Devices of a user are consecutive "device" nodes.
struct DeviceSlot {
  uint32_t user_index;
  uint32_t device_number;
};

class ChatSystem final : public SystemUnderTest {
 public:
  ChatSystem(const Scenario& scenario, const RunOptions& options) {
    config_ = chat_config_for(scenario, options.seed);
    config_.cpu_costs = options.cpu_costs;
    server_cores_ = options.server_cores;
    for (int b = 0; b < static_cast<int>(chat::Bug::count); ++b) {
      if (options.bugs.on(static_cast<chat::Bug>(b))) config_.bugs.enable(static_cast<chat::Bug>(b));
    }
  }

  bool emits_history() const override { return true; }

  void build(Simulator& sim, const Scenario& scenario) override {
    const uint32_t per_user = config_.users.empty() ? 1 : config_.users.front().devices;
    uint32_t device_index = 0;
    for (size_t i = 0; i < scenario.nodes.size(); ++i) {
      const NodeSpec& spec = scenario.nodes[i];
      NodeFactory factory;
      const std::string& role = spec.role;
      if (role == "lb") {
        factory = [this] { return std::make_unique<chat::LoadBalancerNode>(config_, balancer_stats_); };
      } else if (role == "chat") {
        factory = [this] { return std::make_unique<chat::ChatServerNode>(config_); };
      } else if (role == "registry") {
        factory = [this] { return std::make_unique<chat::RegistryNode>(config_); };
      } else if (role == "queue") {
        factory = [this] { return std::make_unique<chat::QueueNode>(config_); };
      } else if (role == "storage") {
        factory = [this] { return std::make_unique<chat::StorageNode>(config_); };
      } else if (role == "push") {
        factory = [this] { return std::make_unique<chat::PushNode>(config_); };
      } else if (role == "keys") {
        factory = [this] { return std::make_unique<chat::KeyServiceNode>(config_); };
      } else {
        MSGSIM_ASSERT_EQ(role, std::string("device"));
        const DeviceSlot slot{device_index / per_user, device_index % per_user + 1};
        device_index++;
        devices_.push_back(static_cast<NodeId>(i));
        factory = [this, slot] { return std::make_unique<chat::DeviceNode>(config_, slot.user_index, slot.device_number); };
      }
      const NodeId id = sim.add_node(spec.name, spec.region, std::move(factory));
      MSGSIM_ASSERT_EQ(id, i);
      if (server_cores_ > 1 && role != "device") sim.set_cores(id, server_cores_);
      is_device_.push_back(role == "device");
    }
  }

  // The confidentiality check: devices report their plaintexts, every frame from or to a server
  // is scanned as it is sent (devices talk only to servers, so that is every frame).
  void watch_plaintexts(Simulator& sim) {
    if (!e2ee_on()) return;
    config_.plaintext_observer = &scanner_;
    sim.set_frame_observer([this](NodeId from, NodeId to, ByteView frame) {
      if (from < is_device_.size() && to < is_device_.size() && is_device_[from] && is_device_[to]) return;
      frames_scanned_++;
      if (scanner_.hits() == 0) {
        scanner_.scan(frame, [&] { return "a frame from node " + std::to_string(from) + " to node " + std::to_string(to); });
      }
    });
  }

  // The handoff check (sim/handoff_check.h) follows every device request through the chat
  // servers, to see none closes a device's connection while it still owes an answer.
  void watch_handoffs(Simulator& sim) {
    std::vector<bool> is_chat_server(sim.node_count(), false);
    for (NodeId id : config_.topology.chat_servers) is_chat_server.at(id) = true;
    std::vector<std::string> names;
    for (NodeId id = 0; id < sim.node_count(); ++id) names.push_back(sim.node_name(id));
    handoffs_ = std::make_unique<HandoffCheck>(std::move(is_chat_server), is_device_,
                                               config_.tuning.server_request_timeout_ns, std::move(names));
    sim.set_connection_watcher(handoffs_.get());
  }

  bool e2ee_on() const { return config_.workload.e2ee && config_.topology.key_service() != kNoNode; }

  void start(Simulator& sim) override {
    watch_plaintexts(sim);
    watch_handoffs(sim);
    for (NodeId id = 0; id < sim.node_count(); ++id) sim.start(id);
  }

  void stop_workload(Simulator&) override { config_.workload.sending = false; }

  bool quiescent(Simulator& sim) override {
    for (NodeId id : devices_) {
      auto* device = dynamic_cast<chat::DeviceNode*>(sim.node_object(id));
      if (device == nullptr || !device->online()) return false;
    }
    return true;
  }

  bool settled(Simulator& sim) override {
    for (NodeId id : devices_) {
      auto* device = dynamic_cast<chat::DeviceNode*>(sim.node_object(id));
      if (device == nullptr || !device->settled()) return false;
    }
    return true;
  }

  FrameLabel frame_label() const override { return &chat::frame_type_name; }

  std::vector<std::string> unsettled(Simulator& sim) override {
    constexpr size_t kNamedMax = 5;
    std::vector<std::string> out;
    size_t count = 0;
    for (NodeId id : devices_) {
      auto* device = dynamic_cast<chat::DeviceNode*>(sim.node_object(id));
      if (device != nullptr && device->settled()) continue;
      if (count++ < kNamedMax) out.push_back(device == nullptr ? sim.node_name(id) + " down" : device->describe());
    }
    if (count > kNamedMax) out.push_back("and " + std::to_string(count - kNamedMax) + " more devices");
    return out;
  }

  void judge(Simulator& sim, RunReport& report) override {
    size_t online = 0, settled = 0;
    std::vector<std::string> unsettled;
    for (NodeId id : devices_) {
      auto* device = dynamic_cast<chat::DeviceNode*>(sim.node_object(id));
      online += device != nullptr && device->online();
      settled += device != nullptr && device->settled();
      if (device != nullptr && !device->settled() && unsettled.size() < 5) unsettled.push_back(device->describe());
    }
    uint64_t peak = 0;
    for (const auto& [second, count] : balancer_stats_.routed_per_second) peak = std::max(peak, count);
    if (report.first_fault_ns >= 0) {
      // The reconnect storm: what the load balancers saw from the first fault on, and when the
      // last device that came online after it did.
      const int64_t fault_s = report.first_fault_ns / kNanosPerSecond;
      uint64_t storm_peak = 0, storm_routes = 0;
      for (const auto& [second, count] : balancer_stats_.routed_per_second) {
        if (second < fault_s) continue;
        storm_peak = std::max(storm_peak, count);
        storm_routes += count;
      }
      int64_t last_back_ns = -1;
      for (NodeId id : devices_) {
        auto* device = dynamic_cast<chat::DeviceNode*>(sim.node_object(id));
        if (device == nullptr || device->last_online_ns() < 0) continue;
        const int64_t back = sim.true_time_of(id, device->last_online_ns());
        if (back >= report.first_fault_ns) last_back_ns = std::max(last_back_ns, back);
      }
      char line[256];
      std::snprintf(line, sizeof line,
                    "reconnects after the first fault (%.3fs): %llu routes, peak %llu routes/s; last device back online "
                    "%.3fs after it",
                    static_cast<double>(report.first_fault_ns) / 1e9, static_cast<unsigned long long>(storm_routes),
                    static_cast<unsigned long long>(storm_peak),
                    last_back_ns < 0 ? 0.0 : static_cast<double>(last_back_ns - report.first_fault_ns) / 1e9);
      report.summary.push_back(line);
    }
    report.summary.push_back("chat: " + std::to_string(config_.users.size()) + " users, " +
                             std::to_string(devices_.size()) + " devices (" + std::to_string(online) + " online, " +
                             std::to_string(settled) + " settled at the end), " + std::to_string(config_.groups.size()) +
                             " groups, " + std::to_string(config_.topology.chat_servers.size()) + " chat servers");
 for (const std::string& line : unsettled) report.summary.push_back("  unsettled: " + line);
    if (e2ee_on()) {
      // The servers' disks, as they are at the end (current images: what a server could read).
      for (NodeId id = 0; id < is_device_.size(); ++id) {
        if (is_device_[id]) continue;
        sim.disk().for_each_file(id, [&](const std::string& name, ByteView bytes) {
          scanner_.scan(bytes, [&] { return "file " + name + " of " + sim.node_name(id); });
        });
      }
      const bool clean = scanner_.hits() == 0;
      report.checks.push_back(
          {"e2ee-confidentiality", clean,
           clean ? "no plaintext of " + std::to_string(scanner_.tracked()) + " message bodies in " +
                       std::to_string(frames_scanned_) + " server frames or the servers' databases (" +
                       std::to_string(scanner_.bytes_scanned()) + " bytes scanned)"
                 : "a message body's plaintext seen by a server: " + scanner_.first_hit() + " (" +
                       std::to_string(scanner_.hits()) + " places)"});
    } else {
      report.summary.push_back("e2ee: off (no key service in the topology): bodies travel as plaintext");
    }
    judge_store(sim, report);
    sim.set_connection_watcher(nullptr);
    report.checks.push_back({"handoff", handoffs_->passed(), handoffs_->detail()});
    report.checks.push_back({"liveness", settled == devices_.size(),
                             settled == devices_.size()
                                 ? "every device settled: sends acknowledged, no gap open, receipts sent"
                                 : std::to_string(devices_.size() - settled) + " devices still had work in flight at the end"});
    report.summary.push_back(memory_line(sim));
    report.summary.push_back("load balancer: " + std::to_string(balancer_stats_.routed) + " routed, " +
                             std::to_string(balancer_stats_.refused) + " refused, peak " + std::to_string(peak) +
                             " routes/s");
  }

 private:
  // Where the run's memory goes, by the structures' own counts (the full-scale bar is memory
  // per simulated client): the simulated disks' current images by role (they grow with
  // messages, not clients; SQLite's page caches and the disks' undo records of unsynced
  // writes come on top), the devices' E2EE state and the network's per-connection state.
  std::string memory_line(Simulator& sim) const {
    const chat::ChatTopology& t = config_.topology;
    auto disk_of = [&](const std::vector<NodeId>& nodes) {
      uint64_t bytes = 0;
      for (NodeId id : nodes) bytes += sim.disk().bytes_stored(id);
      return bytes;
    };
    uint64_t e2ee_bytes = 0;
    for (NodeId id : devices_) {
      auto* device = dynamic_cast<chat::DeviceNode*>(sim.node_object(id));
      if (device != nullptr) e2ee_bytes += device->e2ee_memory_bytes();
    }
    const auto mb = [](uint64_t bytes) {
      char text[32];
      std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / 1e6);
      return std::string(text);
    };
    const uint64_t per_device = devices_.empty() ? 0 : e2ee_bytes / devices_.size();
    return "memory: disks (current images) queue " + mb(disk_of(t.queues)) + ", storage " + mb(disk_of(t.storages)) +
           ", registry " + mb(disk_of(t.registries)) + ", keys " + mb(disk_of(t.key_services)) + ", devices " +
           mb(disk_of(devices_)) + "; device E2EE state " + mb(e2ee_bytes) + " (" + std::to_string(per_device) +
           " bytes per device); network " + mb(sim.connection_bytes()) + " (" + std::to_string(sim.connection_slots()) +
           " connection slots); " + std::to_string(sim.pending_events()) + " events pending";
  }

  // The storage databases against each other, the queue and the devices (sim/store_check.h).
  void judge_store(Simulator& sim, RunReport& report) {
    std::vector<DeviceCursor> cursors;
    for (NodeId id : devices_) {
      auto* device = dynamic_cast<chat::DeviceNode*>(sim.node_object(id));
      if (device == nullptr) continue;  // down: its cursors are gone with its memory
      device->for_each_cursor([&](const std::string& conv, uint64_t cursor) {
        cursors.push_back(DeviceCursor{sim.node_name(id), conv, cursor});
      });
    }
    std::vector<std::string> names;
    for (NodeId id = 0; id < sim.node_count(); ++id) names.push_back(sim.node_name(id));
    const StoreCheckResult store = check_store_consistency(sim.disk(), names, config_.topology, cursors);
    report.checks.push_back({"store-consistency", store.passed, store.detail});
  }

  chat::ChatConfig config_;
  chat::BalancerStats balancer_stats_;
  std::vector<NodeId> devices_;
  std::vector<bool> is_device_;  // by node id
  PlaintextScanner scanner_;
  std::unique_ptr<HandoffCheck> handoffs_;
  uint64_t frames_scanned_ = 0;
  uint32_t server_cores_ = 1;
};

}  // namespace

chat::ChatConfig chat_config_for(const Scenario& scenario, uint64_t seed) {
  chat::ChatConfig config;
  auto ids = [&](std::string_view role) {
    std::vector<NodeId> out;
    for (uint32_t i : scenario.nodes_with_role(role)) out.push_back(i);
    return out;
  };
  config.topology.load_balancers = ids("lb");
  config.topology.chat_servers = ids("chat");
  config.topology.registries = ids("registry");
  config.topology.queues = ids("queue");
  config.topology.storages = ids("storage");
  config.topology.push = ids("push");
  config.topology.key_services = ids("keys");
  config.topology.partitions = scenario.chat.partitions;
  config.topology.replication_factor = scenario.chat.replication_factor;

  const ChatWorkloadSpec& spec = scenario.chat;
  config.workload.send_interval_mean_ns = spec.send_interval_mean_ns;
  config.workload.turn_messages = spec.turn_messages;
  config.workload.body_bytes_min = spec.body_bytes_min;
  config.workload.body_bytes_max = spec.body_bytes_max;
  config.workload.group_share = spec.group_share;
  config.workload.disappearing_share = spec.disappearing_share;
  config.workload.disappearing_ttl_ns = spec.disappearing_ttl_ns;
  config.workload.read_share = spec.read_share;
  for (const std::string& name : scenario.bugs) {
    bool known = false;
    for (const chat::BugInfo& info : chat::bug_catalogue()) {
      if (name == info.name) {
        config.bugs.enable(info.bug);
        known = true;
      }
    }
    MSGSIM_ASSERT(known, "the scenario loader accepted an unknown bug: " + name);
  }
  const size_t devices = scenario.nodes_with_role("device").size();
  MSGSIM_ASSERT_GT(spec.devices_per_user, 0u);
  draw_people(scenario, seed, (devices + spec.devices_per_user - 1) / spec.devices_per_user, config);
  return config;
}

std::unique_ptr<SystemUnderTest> make_chat_system(const Scenario& scenario, const RunOptions& options) {
  return std::make_unique<ChatSystem>(scenario, options);
}

}  // namespace msgsim::sim
