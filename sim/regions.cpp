#include "sim/regions.h"

#include "impl/base/assert.h"

namespace msgsim::sim {
namespace {
#include "sim/region_table.inc"
}  // namespace

std::span<const BuiltinRegion> builtin_regions() { return kBuiltinRegions; }

std::span<const RegionPairRtt> builtin_region_pairs() { return kBuiltinPairs; }

double builtin_route_factor_ms_per_km() { return kRouteFactorMsPerKm; }

bool is_builtin_region(std::string_view name) {
  for (const BuiltinRegion& region : kBuiltinRegions) {
    if (region.name == name) return true;
  }
  return false;
}

std::optional<int64_t> builtin_rtt_p95_us(std::string_view a, std::string_view b) {
  if (a == b) return std::nullopt;
  for (const RegionPairRtt& pair : kBuiltinPairs) {
    if ((pair.a == a && pair.b == b) || (pair.a == b && pair.b == a)) return pair.rtt_p95_us;
  }
  return std::nullopt;
}

LinkLatency latency_from_rtt_p95_us(int64_t rtt_p95_us) {
  // RTTs are bounded far below the point where these products overflow (about 10^13 us).
  MSGSIM_ASSERT(rtt_p95_us >= 0 && rtt_p95_us < 10'000'000'000'000,
                "RTT out of the model's range");
  return LinkLatency{.base_ns = rtt_p95_us * 450, .jitter_mean_ns = rtt_p95_us * 1000 / 60};
}

std::optional<LinkLatency> builtin_latency(std::string_view a, std::string_view b) {
  const std::optional<int64_t> rtt_us = builtin_rtt_p95_us(a, b);
  if (!rtt_us) return std::nullopt;
  return latency_from_rtt_p95_us(*rtt_us);
}

}  // namespace msgsim::sim
