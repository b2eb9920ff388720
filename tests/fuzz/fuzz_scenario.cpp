// The scenario loader on arbitrary bytes: it must return a value or an error, never crash,
// and whatever it accepts must be fully resolved (every index in range, faults in time order).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "impl/base/assert.h"
#include "sim/scenario.h"

namespace {

void check_indexes(const std::vector<uint32_t>& indexes, size_t bound) {
  for (size_t i = 0; i < indexes.size(); ++i) {
    MSGSIM_ASSERT_LT(indexes[i], bound);
    if (i > 0) MSGSIM_ASSERT_LT(indexes[i - 1], indexes[i]);  // sorted and unique
  }
}

void check_resolved(const msgsim::sim::Scenario& s) {
  MSGSIM_ASSERT(!s.nodes.empty());
  MSGSIM_ASSERT_GT(s.duration_ns, 0);
  MSGSIM_ASSERT_GE(s.quiescence_ns, 0);
  MSGSIM_ASSERT_EQ(s.latency.size(), s.regions.size());
  for (size_t a = 0; a < s.regions.size(); ++a) {
    MSGSIM_ASSERT_EQ(s.latency[a].size(), s.regions.size());
    for (size_t b = 0; b < s.regions.size(); ++b) {
      MSGSIM_ASSERT_EQ(s.latency[a][b].base_ns, s.latency[b][a].base_ns);
      MSGSIM_ASSERT_GE(s.latency[a][b].jitter_mean_ns, 0);
    }
  }
  for (const auto& node : s.nodes) MSGSIM_ASSERT_LT(node.region, s.regions.size());
  int64_t previous_at_ns = 0;
  for (const auto& fault : s.faults) {
    MSGSIM_ASSERT_GE(fault.at_ns, previous_at_ns);
    MSGSIM_ASSERT_LT(fault.at_ns, s.duration_ns);
    previous_at_ns = fault.at_ns;
    if (fault.end_after_ns) MSGSIM_ASSERT_GT(*fault.end_after_ns, 0);
    check_indexes(fault.nodes, s.nodes.size());
    check_indexes(fault.side_a, s.nodes.size());
    check_indexes(fault.side_b, s.nodes.size());
    check_indexes(fault.regions_a, s.regions.size());
    check_indexes(fault.regions_b, s.regions.size());
  }
  if (s.nemesis) {
    MSGSIM_ASSERT(!s.nemesis->kinds.empty());
    MSGSIM_ASSERT(!s.nemesis->targets.empty());
    MSGSIM_ASSERT_LE(s.nemesis->duration_min_ns, s.nemesis->duration_max_ns);
    check_indexes(s.nemesis->targets, s.nodes.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto loaded = msgsim::sim::load_scenario_text(text, "fuzz.json");
  if (loaded.ok()) {
    check_resolved(*loaded);
  } else {
    const std::string& message = loaded.error().message;
    MSGSIM_ASSERT(message.rfind("fuzz.json", 0) == 0, message);
    // This line means a reader met a type the schema should have excluded: a loader bug. (The
    // input itself cannot produce it: echoed input is always quoted, with newlines escaped.)
    MSGSIM_ASSERT(message.rfind("fuzz.json: $: internal error", 0) != 0 &&
                      message.find("\nfuzz.json: $: internal error") == std::string::npos,
                  message);
  }
  return 0;
}
