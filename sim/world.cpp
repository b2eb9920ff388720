#include "sim/world.h"

#include <algorithm>
#include <cstdio>

#include "impl/base/assert.h"
#include "impl/ledger/ledger.h"
#include "oracle/event.h"
#include "sim/chat_system.h"
#include "sim/disk.h"
#include "sim/perfetto.h"

namespace msgsim::sim {

namespace {

// The end grace: settledness is judged at an instant, and devices do periodic work (anti-entropy
// syncs, receipt batches) that may be in flight at the end, so the end waits up to this long,
// in steps, for it to finish. The liveness phase polls settledness at the same step.
constexpr int64_t kSettleGraceStepNs = 100 * kNanosPerMilli;
constexpr int64_t kSettleGraceNs = 50 * kSettleGraceStepNs;
// Settled only once it stays so for this long. A device with nothing left to do may still be
// owed traffic: a message acked to its sender an instant ago is on its way through the queue,
// storage and a chat server to the other members, and no device knows of it yet, so the
// instant after the last ack looks settled. Ending the run there judged no-loss on a run that
// had not settled (chat-drain with every server drained at once: "acked but never shown", the
// ack 0.35 ms before the end). A second covers a message's path after its ack across the
// scenarios' regions (one way at most ~100 ms, four hops, a storage batch) with room to spare.
constexpr int64_t kSettleConfirmNs = 10 * kSettleGraceStepNs;

// Runs the simulator in grace steps until the system has stayed settled for kSettleConfirmNs,
// or until `until_ns` passes with the system unsettled (a settled stretch under way at
// `until_ns` is seen to its end). Returns when the settled stretch began, or -1.
int64_t run_until_settled(Simulator& sim, SystemUnderTest& system, int64_t until_ns) {
  int64_t settled_since_ns = -1;
  for (;;) {
    if (system.settled(sim)) {
      if (settled_since_ns < 0) settled_since_ns = sim.now_ns();
      if (sim.now_ns() - settled_since_ns >= kSettleConfirmNs) return settled_since_ns;
    } else {
      settled_since_ns = -1;
      if (sim.now_ns() >= until_ns) return -1;
    }
    const int64_t step_end_ns = settled_since_ns >= 0 ? settled_since_ns + kSettleConfirmNs : until_ns;
    sim.run_until(std::min(sim.now_ns() + kSettleGraceStepNs, std::max(step_end_ns, sim.now_ns() + 1)));
  }
}

NetworkConfig network_of(const Scenario& scenario) {
  NetworkConfig net;
  net.regions = scenario.regions;
  const size_t n = scenario.regions.size();
  net.base_ns.assign(n, std::vector<int64_t>(n, 0));
  net.jitter_mean_ns.assign(n, std::vector<int64_t>(n, 0));
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = 0; b < n; ++b) {
      net.base_ns[a][b] = scenario.latency[a][b].base_ns;
      net.jitter_mean_ns[a][b] = scenario.latency[a][b].jitter_mean_ns;
    }
  }
  net.connection_timeout_ns = scenario.connection_timeout_ns;
  return net;
}

CrashDisk crash_disk_of(CrashDiskMode mode) {
  switch (mode) {
    case CrashDiskMode::keep_unsynced: return CrashDisk::keep_unsynced;
    case CrashDiskMode::lose_unsynced: return CrashDisk::lose_unsynced;
    case CrashDiskMode::torn: return CrashDisk::torn;
  }
  MSGSIM_UNREACHABLE("unknown crash disk mode");
}

std::string seconds_text(int64_t ns) {
  const int64_t ms = ns / kNanosPerMilli;
  std::string out = std::to_string(ms / 1000) + "." + std::to_string(1000 + ms % 1000).substr(1) + "s";
  return out;
}

// ---------------------------------------------------------------------------------------------
// The ledger system (impl/ledger): the foundation's probe protocol.

class LedgerSystem final : public SystemUnderTest {
 public:
  void build(Simulator& sim, const Scenario& scenario) override {
    const auto servers = scenario.nodes_with_role("ledger-server");
    config_.servers.assign(servers.begin(), servers.end());
    config_.append_interval_ns = scenario.ledger.append_interval_ns;
    config_.request_timeout_ns = scenario.ledger.request_timeout_ns;
    config_.synchronous_full = scenario.ledger.synchronous_full;
    reports_.resize(scenario.nodes.size());
    for (size_t i = 0; i < scenario.nodes.size(); ++i) {
      const NodeSpec& spec = scenario.nodes[i];
      NodeFactory factory;
      if (spec.role == "ledger-server") {
        factory = [this] { return std::make_unique<ledger::LedgerServer>(config_); };
      } else {
        MSGSIM_ASSERT_EQ(spec.role, std::string("ledger-client"));
        clients_.push_back(static_cast<NodeId>(i));
        ledger::ClientReport* report = &reports_[i];
        factory = [this, report] { return std::make_unique<ledger::LedgerClient>(config_, *report); };
      }
      const NodeId id = sim.add_node(spec.name, spec.region, std::move(factory));
      MSGSIM_ASSERT_EQ(id, i);
    }
  }

  void start(Simulator& sim) override {
    for (NodeId id = 0; id < sim.node_count(); ++id) sim.start(id);
  }

  void stop_workload(Simulator&) override { config_.appending = false; }

  void judge(Simulator& sim, RunReport& report) override {
    uint64_t appended = 0, acked = 0, retries = 0, reconnects = 0, lost = 0, protocol = 0;
    uint64_t clients_with_loss = 0;
    for (NodeId id : clients_) {
      const ledger::ClientReport& r = reports_[id];
      appended += r.appended();
      acked += r.acked();
      retries += r.retries();
      reconnects += r.reconnects();
      lost += r.lost_acked();
      protocol += r.protocol_errors();
      clients_with_loss += r.lost_acked() > 0;
    }
    uint64_t unsettled = 0;
    for (NodeId id : clients_) {
      auto* client = dynamic_cast<ledger::LedgerClient*>(sim.node_object(id));
      if (client == nullptr || !client->settled()) unsettled++;
    }
    report.summary.push_back("ledger: " + std::to_string(clients_.size()) + " clients, " +
                             std::to_string(config_.servers.size()) + " servers; appended " +
                             std::to_string(appended) + ", acknowledged " + std::to_string(acked) +
                             ", retries " + std::to_string(retries) + ", reconnects " +
                             std::to_string(reconnects));
    report.checks.push_back({"ledger.durability", lost == 0,
                             lost == 0 ? "every acknowledged append stayed stored"
                                       : std::to_string(lost) + " times a server reported fewer entries than it had acknowledged (" +
                                             std::to_string(clients_with_loss) + " clients)"});
    report.checks.push_back({"ledger.protocol", protocol == 0,
                             protocol == 0 ? "no malformed or unexpected frames"
                                           : std::to_string(protocol) + " malformed or unexpected frames"});
    report.checks.push_back({"ledger.liveness", unsettled == 0,
                             unsettled == 0 ? "every client settled after the faults healed"
                                            : std::to_string(unsettled) + " clients still had unacknowledged appends at the end"});
    report.checks.push_back({"ledger.progress", acked > 0,
                             acked > 0 ? "appends were acknowledged" : "no append was ever acknowledged"});
  }

 private:
  ledger::LedgerConfig config_;
  std::vector<ledger::ClientReport> reports_;  // by node id; only clients' are used
  std::vector<NodeId> clients_;
};

// ---------------------------------------------------------------------------------------------
// Faults

// Where devices' history events go: stamped with the run's clock, written out as JSON Lines
// when asked, and judged by the oracle as they happen (no file round trip).
class HistoryRecorder {
 public:
  HistoryRecorder(Simulator& sim, std::ostream* out, history::CheckerOptions options, PerfettoWriter* perfetto)
      : sim_(sim), out_(out), checker_(options), perfetto_(perfetto) {}

  void record(NodeId node, const history::Event& event) {
    history::Event stamped = event;
    stamped.t = sim_.now_ns();
    // Devices state expiry on their own clocks; the history speaks the run's.
    if (stamped.expires_at && node != kNoNode) stamped.expires_at = sim_.true_time_of(node, *stamped.expires_at);
    if (perfetto_ != nullptr && node != kNoNode) perfetto_->history(node, stamped.t, stamped);
    observe(stamped);
  }
  void fault(bool begins, const std::string& name) {
    history::Event e;
    e.type = begins ? history::EventType::fault : history::EventType::heal;
    e.t = sim_.now_ns();
    e.name = name;
    observe(e);
  }
  history::Verdict end(bool quiescent) {
    history::Event e;
    e.type = history::EventType::end;
    e.t = sim_.now_ns();
    e.quiescent = quiescent;
    observe(e);
    return checker_.finish();
  }
  size_t oracle_bytes() const { return checker_.memory_bytes(); }

 private:
  void observe(const history::Event& e) {
    if (out_ != nullptr) *out_ << history::to_jsonl(e);
    checker_.observe(e);
  }

  Simulator& sim_;
  std::ostream* out_;
  history::Checker checker_;
  PerfettoWriter* perfetto_;
};

// A fault in progress: how to end it, once.
struct ActiveFault {
  std::string label;
  std::function<void()> end;
  bool ended = false;
  size_t perfetto_fault = 0;  // its PerfettoWriter handle, when one is written
};

class FaultScheduler {
 public:
  FaultScheduler(Simulator& sim, const Scenario& scenario, RunReport& report, HistoryRecorder* history,
                 PerfettoWriter* perfetto)
      : sim_(sim), scenario_(scenario), report_(report), history_(history), perfetto_(perfetto) {}

  void schedule(const FaultSpec& fault) {
    sim_.at(fault.at_ns, [this, fault] { begin(fault); });
  }

  // Ends every fault still active (the quiescence phase begins).
  void end_all() {
    for (size_t i = 0; i < active_.size(); ++i) finish(i);
  }

 private:
  void note(const std::string& what) {
    report_.faults.push_back(seconds_text(sim_.now_ns()) + " " + what);
  }

  std::string names(const std::vector<uint32_t>& nodes) const {
    std::string out;
    for (size_t i = 0; i < nodes.size() && i < 4; ++i) out += (i ? "," : "") + sim_.node_name(nodes[i]);
    if (nodes.size() > 4) out += ",... (" + std::to_string(nodes.size()) + " nodes)";
    return out;
  }

  void begin(const FaultSpec& f) {
    std::string label = std::string(to_string(f.kind)) + " ";
    std::function<void()> end;
    switch (f.kind) {
      case FaultKind::crash:
        label += names(f.nodes);
        for (uint32_t n : f.nodes) sim_.crash(n, crash_disk_of(f.disk));
        end = [this, nodes = f.nodes] {
          for (uint32_t n : nodes)
            if (!sim_.node_up(n)) sim_.start(n);
        };
        break;
      case FaultKind::shutdown:
        label += names(f.nodes);
        for (uint32_t n : f.nodes) sim_.shutdown(n, f.drain_ns);
        end = [this, nodes = f.nodes, drain = f.drain_ns] {
          for (uint32_t n : nodes) {
            if (!sim_.node_up(n)) {
              sim_.start(n);
            } else {  // still draining: restart once the drain deadline has stopped it
              sim_.at(sim_.now_ns() + drain, [this, n] {
                if (!sim_.node_up(n)) sim_.start(n);
              });
            }
          }
        };
        break;
      case FaultKind::host_loss:
        label += names(f.nodes);
        for (uint32_t n : f.nodes) sim_.lose_host(n);
        end = [this, nodes = f.nodes] {
          for (uint32_t n : nodes) sim_.replace_host(n);
        };
        break;
      case FaultKind::partition: {
        label += names(f.side_a) + (f.one_way ? " -> " : " <-> ") + names(f.side_b);
        const auto id = sim_.partition(to_ids(f.side_a), to_ids(f.side_b), f.one_way);
        end = [this, id] { sim_.heal(id); };
        break;
      }
      case FaultKind::isolate: {
        label += names(f.nodes);
        std::vector<NodeId> rest;
        for (NodeId n = 0; n < sim_.node_count(); ++n)
          if (!std::binary_search(f.nodes.begin(), f.nodes.end(), n)) rest.push_back(n);
        const auto id = sim_.partition(to_ids(f.nodes), rest, false);
        end = [this, id] { sim_.heal(id); };
        break;
      }
      case FaultKind::region_split: {
        std::vector<NodeId> a, b;
        for (NodeId n = 0; n < sim_.node_count(); ++n) {
          const uint32_t r = sim_.node_region(n);
          if (std::binary_search(f.regions_a.begin(), f.regions_a.end(), r)) a.push_back(n);
          if (std::binary_search(f.regions_b.begin(), f.regions_b.end(), r)) b.push_back(n);
        }
        for (uint32_t r : f.regions_a) label += scenario_.regions[r] + " ";
        label += "|";
        for (uint32_t r : f.regions_b) label += " " + scenario_.regions[r];
        const auto id = sim_.partition(a, b, false);
        end = [this, id] { sim_.heal(id); };
        break;
      }
      case FaultKind::latency_spike:
        label += names(f.nodes) + " +" + std::to_string(f.extra_latency_ns / kNanosPerMilli) + "ms";
        for (uint32_t n : f.nodes) sim_.add_latency(n, f.extra_latency_ns);
        end = [this, nodes = f.nodes, extra = f.extra_latency_ns] {
          for (uint32_t n : nodes) sim_.add_latency(n, -extra);
        };
        break;
      case FaultKind::clock:
        label += names(f.nodes) + " skew " + std::to_string(f.skew_ns / kNanosPerMilli) + "ms drift " +
                 std::to_string(f.drift_ppm) + "ppm";
        for (uint32_t n : f.nodes) sim_.set_clock(n, f.skew_ns, f.drift_ppm);
        end = [this, nodes = f.nodes] {
          for (uint32_t n : nodes) sim_.set_clock(n, 0, 0);
        };
        break;
      case FaultKind::slow:
        label += names(f.nodes) + " x" + std::to_string(f.slow_factor);
        for (uint32_t n : f.nodes) sim_.set_slow(n, f.slow_factor);
        end = [this, nodes = f.nodes] {
          for (uint32_t n : nodes) sim_.set_slow(n, 1);
        };
        break;
      case FaultKind::disk: {
        label += names(f.nodes) + (f.disk_fault == DiskFaultKind::fsync_fail ? " fsync-fail" : " full");
        for (uint32_t n : f.nodes) {
          DiskFaults faults;
          if (f.disk_fault == DiskFaultKind::fsync_fail) faults.fsync_fails = true;
          else faults.capacity_bytes = sim_.disk().bytes_stored(n);
          sim_.disk().set_faults(n, faults);
        }
        end = [this, nodes = f.nodes] {
          for (uint32_t n : nodes) sim_.disk().set_faults(n, DiskFaults{});
        };
        break;
      }
    }
    note("fault " + label);
    if (report_.first_fault_ns < 0) report_.first_fault_ns = sim_.now_ns();
    if (history_ != nullptr) history_->fault(true, label);
    const size_t index = active_.size();
    const size_t perfetto_fault = perfetto_ != nullptr ? perfetto_->fault_begin(sim_.now_ns(), label) : 0;
    active_.push_back(ActiveFault{label, std::move(end), false, perfetto_fault});
    if (f.end_after_ns) sim_.at(sim_.now_ns() + *f.end_after_ns, [this, index] { finish(index); });
  }

  void finish(size_t index) {
    ActiveFault& fault = active_[index];
    if (fault.ended) return;
    fault.ended = true;
    note("heal " + fault.label);
    if (history_ != nullptr) history_->fault(false, fault.label);
    if (perfetto_ != nullptr) perfetto_->fault_end(fault.perfetto_fault, sim_.now_ns());
    fault.end();
  }

  static std::vector<NodeId> to_ids(const std::vector<uint32_t>& nodes) {
    return std::vector<NodeId>(nodes.begin(), nodes.end());
  }

  Simulator& sim_;
  const Scenario& scenario_;
  RunReport& report_;
  HistoryRecorder* history_;
  PerfettoWriter* perfetto_;
  std::vector<ActiveFault> active_;
};

}  // namespace

std::unique_ptr<SystemUnderTest> make_system(const Scenario& scenario, const RunOptions& options) {
  if (scenario.system == "ledger") return std::make_unique<LedgerSystem>();
  if (scenario.system == "chat") return make_chat_system(scenario, options);
  MSGSIM_UNREACHABLE("the scenario loader accepted an unknown system: " + scenario.system);
}

std::string NemesisChoice::describe() const {
  std::string out = swarm ? "swarm: " : "";
  for (size_t i = 0; i < kinds.size(); ++i) out += (i ? ", " : "") + std::string(to_string(kinds[i]));
  char rates[96];
  std::snprintf(rates, sizeof rates, "; mean interval %.3fs, at most %u at once",
                static_cast<double>(mean_interval_ns) / 1e9, max_concurrent);
  return out + rates;
}

NemesisChoice nemesis_choice(const Scenario& scenario, uint64_t seed) {
  MSGSIM_ASSERT(scenario.nemesis.has_value(), "nemesis_choice needs a scenario with a nemesis");
  const NemesisSpec& nemesis = *scenario.nemesis;
  NemesisChoice choice;
  choice.kinds = nemesis.kinds;
  choice.mean_interval_ns = nemesis.mean_interval_ns;
  choice.max_concurrent = nemesis.max_concurrent;
  if (!nemesis.swarm) return choice;
  // Its own stream, so that the fault draws below do not depend on how many numbers this took.
  Prng rng = Prng(seed).split("nemesis.swarm");
  choice.swarm = true;
  choice.kinds.clear();
  for (const FaultKind kind : nemesis.kinds)
    if (rng.chance(0.5)) choice.kinds.push_back(kind);
  if (choice.kinds.empty()) choice.kinds.push_back(nemesis.kinds[rng.below(nemesis.kinds.size())]);
  // Rates: a mean interval from half to twice the scenario's, as many steps below as above (no
  // libm call, so the same on every machine).
  static constexpr int64_t kIntervalPercent[] = {50, 71, 100, 141, 200};
  const int64_t percent = kIntervalPercent[rng.below(std::size(kIntervalPercent))];
  choice.mean_interval_ns = std::max<int64_t>(1, nemesis.mean_interval_ns / 100 * percent);
  choice.max_concurrent = static_cast<uint32_t>(rng.range(1, nemesis.max_concurrent));
  return choice;
}

int64_t liveness_bound_ns(const Scenario& scenario) {
  return scenario.liveness_ns.value_or(scenario.quiescence_ns + kSettleGraceNs);
}

std::vector<FaultSpec> draw_nemesis(const Scenario& scenario, uint64_t seed) {
  std::vector<FaultSpec> drawn;
  if (!scenario.nemesis) return drawn;
  const NemesisSpec& nemesis = *scenario.nemesis;
  const NemesisChoice choice = nemesis_choice(scenario, seed);
  Prng rng = Prng(seed).split("nemesis");
  std::vector<int64_t> ends;  // end times of the faults drawn so far
  int64_t t = 0;
  for (size_t attempt = 0; attempt < 100'000; ++attempt) {
    t += std::max<int64_t>(1, static_cast<int64_t>(rng.exponential(static_cast<double>(choice.mean_interval_ns))));
    if (t >= scenario.duration_ns) break;
    const int64_t length = rng.range(nemesis.duration_min_ns, nemesis.duration_max_ns);
    const FaultKind kind = choice.kinds[rng.below(choice.kinds.size())];
    const auto concurrent = std::count_if(ends.begin(), ends.end(), [t](int64_t end) { return end > t; });
    if (static_cast<uint32_t>(concurrent) >= choice.max_concurrent) continue;
    FaultSpec f;
    f.kind = kind;
    f.at_ns = t;
    f.end_after_ns = length;
    f.path = "nemesis";
    const uint32_t target = nemesis.targets[rng.below(nemesis.targets.size())];
    switch (kind) {
      case FaultKind::crash:
        f.nodes = {target};
        f.disk = rng.below(3) == 0 ? CrashDiskMode::torn : CrashDiskMode::lose_unsynced;
        break;
      case FaultKind::shutdown:
        f.nodes = {target};
        f.drain_ns = std::min<int64_t>(length, 5 * kNanosPerSecond);
        break;
      case FaultKind::host_loss:
      case FaultKind::isolate: f.nodes = {target}; break;
      case FaultKind::partition: {
        // A random split of the targets against everything else.
        for (uint32_t n : nemesis.targets)
          if (rng.chance(0.5)) f.side_a.push_back(n);
        if (f.side_a.empty()) f.side_a.push_back(target);
        for (uint32_t n = 0; n < scenario.nodes.size(); ++n)
          if (!std::binary_search(f.side_a.begin(), f.side_a.end(), n)) f.side_b.push_back(n);
        if (f.side_b.empty()) continue;
        f.one_way = rng.below(4) == 0;
        break;
      }
      case FaultKind::region_split: {
        if (scenario.regions.size() < 2) continue;
        const auto cut = static_cast<uint32_t>(rng.range(1, static_cast<int64_t>(scenario.regions.size()) - 1));
        for (uint32_t r = 0; r < scenario.regions.size(); ++r) (r < cut ? f.regions_a : f.regions_b).push_back(r);
        break;
      }
      case FaultKind::latency_spike:
        f.nodes = {target};
        f.extra_latency_ns = rng.range(50, 500) * kNanosPerMilli;
        break;
      case FaultKind::clock:
        f.nodes = {target};
        f.skew_ns = rng.range(-2000, 2000) * kNanosPerMilli;
        f.drift_ppm = static_cast<int32_t>(rng.range(-500, 500));
        break;
      case FaultKind::slow:
        f.nodes = {target};
        f.slow_factor = static_cast<uint32_t>(rng.range(2, 20));
        break;
      case FaultKind::disk:
        // Without swarm, the draws stay what they were before the nemesis could fill a disk.
        f.nodes = {target};
        f.disk_fault = choice.swarm && rng.below(3) == 0 ? DiskFaultKind::full : DiskFaultKind::fsync_fail;
        break;
    }
    ends.push_back(t + length);
    drawn.push_back(std::move(f));
  }
  return drawn;
}


namespace {

// The liveness check: the system's own (settled at the end, named "liveness"), made to also
// fail when the system did not settle within the bound after the heal, with what was unsettled
// then. A system without its own gets one.
void judge_liveness(RunReport& report, const std::vector<std::string>& unsettled_at_bound) {
  CheckResult* check = nullptr;
  for (CheckResult& c : report.checks)
    if (c.name == "liveness") check = &c;
  // Systems without one (the ledger judges its clients in ledger.liveness and reports no
  // settledness to poll) get none: a check that cannot fail says nothing.
  if (check == nullptr) return;
  if (report.settled_after_heal_ns >= 0) {
    check->detail += "; settled " + seconds_text(report.settled_after_heal_ns) + " after the heal (bound " +
                     seconds_text(report.liveness_bound_ns) + ")";
    return;
  }
  check->passed = false;
  std::string detail = "not settled within " + seconds_text(report.liveness_bound_ns) + " after every fault healed";
  for (size_t i = 0; i < unsettled_at_bound.size(); ++i) detail += (i ? "; " : ": ") + unsettled_at_bound[i];
  check->detail = detail + " (at the end: " + check->detail + ")";
}

}  // namespace

RunReport run_world(const Scenario& scenario, const RunOptions& options) {
  RunReport report;
  report.scenario = scenario.name;
  report.seed = options.seed;
  Simulator sim(options.seed, network_of(scenario));
  std::unique_ptr<SystemUnderTest> system = make_system(scenario, options);
  std::optional<PerfettoWriter> perfetto;
  if (options.perfetto_out != nullptr) {
    perfetto.emplace(*options.perfetto_out, scenario, options.seed, options.perfetto_events_max, system->frame_label());
    sim.set_frame_tracer([&perfetto](const FrameRecord& r) { perfetto->frame(r); });
    sim.set_trace_sink([&perfetto, trace = options.trace](const TraceRecord& r) {
      perfetto->lifecycle(r);
      if (trace) trace(r);
    });
  } else if (options.trace) {
    sim.set_trace_sink(options.trace);
  }

  std::optional<HistoryRecorder> history;
  if (system->emits_history()) {
    history::CheckerOptions checker_options;
    checker_options.latency_p99_bound_ns = scenario.latency_p99_bound_ns;
    history.emplace(sim, options.history_out, checker_options, perfetto ? &*perfetto : nullptr);
    sim.set_history_sink([&history](NodeId node, const history::Event& e) { history->record(node, e); });
  }
  system->build(sim, scenario);
  MSGSIM_ASSERT_EQ(sim.node_count(), scenario.nodes.size());

  FaultScheduler faults(sim, scenario, report, history ? &*history : nullptr, perfetto ? &*perfetto : nullptr);
  for (const FaultSpec& f : scenario.faults) faults.schedule(f);
  for (const FaultSpec& f : draw_nemesis(scenario, options.seed)) faults.schedule(f);

  if (scenario.nemesis) report.nemesis = nemesis_choice(scenario, options.seed).describe();
  sim.at(scenario.duration_ns, [&] {
    faults.end_all();
    system->stop_workload(sim);
  });
  system->start(sim);
  // Phases 1 and 2: the workload and the faults, then the heal (the event at duration_ns).
  sim.run_until(scenario.duration_ns);

  // Phase 3, liveness: the system must settle within the bound after the heal. Polling reads
  // state only, and run_until in steps dispatches what one call would, so the run is the same.
  report.liveness_bound_ns = liveness_bound_ns(scenario);
  const int64_t run_end_ns = scenario.duration_ns + scenario.quiescence_ns;
  const int64_t liveness_deadline_ns = scenario.duration_ns + report.liveness_bound_ns;
  std::vector<std::string> unsettled_at_bound;
  const int64_t settled_since_ns = run_until_settled(sim, *system, liveness_deadline_ns);
  if (settled_since_ns >= 0) {
    report.settled_after_heal_ns = settled_since_ns - scenario.duration_ns;
  } else {
    unsettled_at_bound = system->unsettled(sim);
  }

  // Phase 4: the rest of the quiescence period, then a short grace for periodic work in flight
  // at the end (settledness is judged at an instant).
  // A run confirmed settled at or after its end has nothing left in flight.
  if (sim.now_ns() < run_end_ns || settled_since_ns < 0) {
    if (sim.now_ns() < run_end_ns) sim.run_until(run_end_ns);
    run_until_settled(sim, *system, std::max(run_end_ns + kSettleGraceNs, sim.now_ns()));
  }
  system->judge(sim, report);
  judge_liveness(report, unsettled_at_bound);
  if (history) {
    const bool quiescent = system->quiescent(sim);
    report.verdict = history->end(quiescent);
    for (const history::InvariantResult& r : report.verdict->invariants) {
      if (!r.judged) continue;
      std::string detail = r.valid ? "holds" : std::to_string(r.count) + " violations";
      if (!r.valid && !r.examples.empty()) detail += "; first: " + r.examples.front().detail;
      report.checks.push_back({r.name, r.valid, detail});
    }
    report.summary.push_back("memory: oracle " + std::to_string(history->oracle_bytes() / 1'000'000) + " MB");
    report.checks.push_back({"quiescence", quiescent,
                             quiescent ? "every device online at the end, so no-loss was judged"
                                       : "some devices were offline at the end of the quiescence period"});
  }
  if (perfetto) {
    perfetto->finish(sim.now_ns());
    sim.set_frame_tracer({});
    sim.set_trace_sink(options.trace);
  }
  report.digest_hex = sim.digest_hex();
  report.virtual_ns = sim.now_ns();
  report.stats = sim.stats();
  return report;
}

}  // namespace msgsim::sim
