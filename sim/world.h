// A world: one scenario, one seed, the system it names built on a Simulator, its fault
// timeline and nemesis scheduled, run through the workload phase and the quiescence phase, and
// judged. The CLI's `run`, `sweep` and `replay` and the scenario tests all go through here.
//
// Phases (DESIGN.md "The simulated world"):
//  1. [0, duration): the workload runs and faults strike (the scenario's timeline, plus the
//     nemesis's draws).
//  2. At duration: every fault still active is healed (crashed nodes restart, partitions heal,
//     clocks and speeds return to normal, disk faults clear) and the workload stops creating
//     work.
//  3. The liveness phase, as TigerBeetle's VOPR's liveness mode: from duration on, with every
//     fault healed and (for systems with devices) every device back online, the system must
//     settle (nothing in flight: sends acknowledged, gaps filled, receipts sent) within the
//     scenario's liveness bound (liveness_s; default quiescence_s + the 5 s end grace). The
//     world polls SystemUnderTest::settled every 100 ms of virtual time (reading state only, so
//     the run is the same as without polling) and fails the check `liveness`, naming what is
//     still unsettled, when the bound passes first.
//  4. [duration, duration + quiescence): the run continues to its end; it is judged there,
//     after at most 5 s more for periodic work in flight (a sync, a receipt batch) to finish.
//
// Swarm testing (nemesis "swarm": true): per seed, the nemesis uses a random non-empty subset
// of its kinds and varied rates (nemesis_choice), so that some seeds see only crashes, others
// only partitions and clock faults, and so on: a bug one kind of fault masks shows up in the
// seeds where that kind is off.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <memory>
#include <string>
#include <vector>

#include "impl/chat/config.h"
#include "oracle/checker.h"
#include "sim/scenario.h"
#include "sim/simulator.h"

namespace msgsim::sim {

struct RunOptions {
  uint64_t seed = 1;
  TraceSink trace;                         // every dispatched event, when set
  std::ostream* history_out = nullptr;     // the history as JSON Lines, when set
  chat::BugSet bugs;                       // planted bugs (with the scenario's own)
  chat::CpuCosts cpu_costs;                // the cost model (zero: none); reports/cost_model.h loads one
  uint32_t server_cores = 1;               // cores of every server node under the cost model
  std::ostream* perfetto_out = nullptr;    // the run as a Perfetto timeline (sim/perfetto.h), when set
  size_t perfetto_events_max = 2'000'000;  // bound on that file's events (kPerfettoEventsMaxDefault)
};

// One named check of a run: the ledger's durability, liveness, ... (the messaging system's
// invariants come from the oracle under the names of spec/history.md).
struct CheckResult {
  std::string name;
  bool passed = true;
  std::string detail;
};

struct RunReport {
  std::string scenario;
  uint64_t seed = 0;
  std::string digest_hex;
  int64_t virtual_ns = 0;
  SimStats stats;
  std::vector<std::string> faults;  // what struck and when, in order
  int64_t first_fault_ns = -1;      // when the first fault began; -1 if none did
  std::vector<std::string> summary;  // system-specific lines
  std::vector<CheckResult> checks;
  std::string nemesis;             // the nemesis's choice for this seed (kinds, rates), empty without one
  int64_t liveness_bound_ns = 0;   // the liveness phase's bound
  int64_t settled_after_heal_ns = -1;  // when the system first settled after the heal; -1 if never
  std::optional<history::Verdict> verdict;  // the oracle's, for systems that emit a history
  bool passed() const {
    for (const auto& c : checks)
      if (!c.passed) return false;
    return true;
  }
};

// The system a scenario names, built on the simulator. One implementation per system.
class SystemUnderTest {
 public:
  virtual ~SystemUnderTest() = default;
  // Adds every node of the scenario's topology (in order: node i of the scenario is NodeId i).
  virtual void build(Simulator& sim, const Scenario& scenario) = 0;
  // Starts the nodes (time 0).
  virtual void start(Simulator& sim) = 0;
  // The workload phase is over: create no new work from now on.
  virtual void stop_workload(Simulator& sim) = 0;
  // Judges the run at its end.
  virtual void judge(Simulator& sim, RunReport& report) = 0;
  // Whether its nodes emit a history for the oracle (client devices do).
  virtual bool emits_history() const { return false; }
  // At the end, after every fault healed: whether every device is online, so every message
  // can have reached it (the history's end.quiescent: the oracle then judges no-loss).
  virtual bool quiescent(Simulator&) { return true; }
  // Whether the system has nothing in flight (sends acknowledged, gaps filled, receipts sent).
  // The end waits a little for this; the system's own liveness check reports it.
  virtual bool settled(Simulator&) { return true; }
  // What keeps it from being settled, a line per thing (at most a few), for the liveness check.
  virtual std::vector<std::string> unsettled(Simulator&) { return {}; }
  // Names a data frame's type from its bytes, for the Perfetto timeline.
  using FrameLabel = const char* (*)(ByteView);
  virtual FrameLabel frame_label() const {
    return [](ByteView) { return "frame"; };
  }
};

std::unique_ptr<SystemUnderTest> make_system(const Scenario& scenario, const RunOptions& options);

// Runs the scenario with the given seed, start to end.
RunReport run_world(const Scenario& scenario, const RunOptions& options);

// What the nemesis does in one seed's run: the scenario's kinds and rates, or with swarm on,
// a random non-empty subset of the kinds, a mean interval from half to twice the scenario's and
// a max_concurrent from 1 to the scenario's, all drawn from the seed.
struct NemesisChoice {
  std::vector<FaultKind> kinds;  // non-empty, in the scenario's order
  int64_t mean_interval_ns = 0;
  uint32_t max_concurrent = 1;
  bool swarm = false;
  std::string describe() const;  // "swarm: crash, slow; mean interval 4.2s, at most 2 at once"
};
// Requires scenario.nemesis.
NemesisChoice nemesis_choice(const Scenario& scenario, uint64_t seed);

// The nemesis's draws for a seed, as timeline faults (exposed for tests and `shrink`): a run
// of the scenario with its nemesis replaced by these faults in its timeline is the same run.
std::vector<FaultSpec> draw_nemesis(const Scenario& scenario, uint64_t seed);

// The liveness bound of a scenario: liveness_ns, or quiescence_ns plus the end grace.
int64_t liveness_bound_ns(const Scenario& scenario);

}  // namespace msgsim::sim
