// `msgsim shrink`: minimises a failing run while it still fails the same checks, and writes the
// smallest one as a scenario that fails on its own.
//
// The run's concrete faults come first: the nemesis is replaced by its draws for the seed
// (draw_nemesis), so the faults are an explicit timeline the shrinker can cut. Then, greedily,
// in passes until a pass changes nothing or the budget is spent:
//  - faults, by delta debugging (ddmin: drop chunks of the list, halving the chunk size);
//  - clients (devices or ledger clients) and other nodes, from the end of their groups, whole
//    groups when their role has another one, keeping the topology valid (every role present,
//    devices a multiple of devices_per_user);
//  - the workload: groups, membership changes, contacts, disappearing messages, the send rate;
//  - time: the workload phase (faults after the new end are dropped) and quiescence;
//  - when a pass changes nothing and the result is still above the bars (3 faults, 10
//    clients): each single fault dropped and the clients halved, under a few other seeds
//    (shrink_by_reseeding in shrink.cpp says why); a step that fails there moves the best to
//    that seed, and the output scenario carries it.
// Each candidate is written as scenario JSON, loaded back and run with the same seed, so that
// what is accepted is exactly what is written. A candidate is accepted only if every target
// check fails in it. Changing the topology or the duration changes the seed's draws, so many
// candidates stop failing: the shrinker simply tries the next one.
//
// Deterministic for a given budget of runs; the caller may also stop it early (a time budget),
// which keeps the smallest scenario found so far.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "impl/base/result.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::sim {

// The scenario as JSON text in the format of scenarios/schema.json, fully explicit (every node
// group, latency pair, workload field and fault), so that loading it gives the same Scenario
// and the same runs. Selectors name whole groups where they can, nodes otherwise.
std::string scenario_to_json(const Scenario& scenario);

// The scenario with its nemesis replaced by the nemesis's draws for `seed`, merged into the
// timeline (the same run for that seed).
Scenario materialize_nemesis(const Scenario& scenario, uint64_t seed);

// How big a scenario is, for progress lines and the bars.
struct ScenarioSize {
  size_t faults = 0;
  size_t clients = 0;  // device nodes (chat) or ledger-client nodes
  size_t nodes = 0;
  uint32_t groups = 0;  // chat groups
  int64_t duration_ns = 0;
  int64_t quiescence_ns = 0;
  int64_t send_interval_ns = 0;  // chat: a device's mean gap between sends; ledger: between appends
  std::string describe() const;
};
ScenarioSize size_of(const Scenario& scenario);

struct ShrinkOptions {
  uint64_t seed = 1;
  std::vector<std::string> bugs;           // planted bugs (names) beside the scenario's own; written into the output
  std::vector<std::string> target_checks;  // empty: the checks the original run fails (see shrink)
  size_t max_runs = 300;                   // runs of candidates, the original's included
  std::function<bool()> stop;              // asked before each run: true ends the shrinking early
  std::function<void(const std::string&)> progress;  // a line per accepted step
};

struct ShrinkResult {
  std::vector<std::string> target_checks;
  ScenarioSize before, after;
  Scenario scenario;  // the smallest failing scenario (nemesis materialized, bugs inside)
  std::string json;   // scenario_to_json(scenario)
  RunReport report;   // its run
  size_t runs = 0;    // candidates run, the original's included
  size_t accepted = 0;
  bool stopped_early = false;  // by max_runs or `stop`
};

// Errors: the original run passes (nothing to shrink), or a target check it does not fail.
// Without target_checks, the target is the first of the oracle's violated invariants (in the
// order of spec/history.md) if any, else every failed check.
Result<ShrinkResult> shrink(const Scenario& scenario, const ShrinkOptions& options);

}  // namespace msgsim::sim
