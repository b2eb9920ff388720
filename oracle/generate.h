// A generator of valid histories: a small model of a correct messaging system (per-conversation
// sequence numbers, in-order gap-free fan-out to every device meant for a message, joins and
// leaves, several devices per user, devices added mid-run, receipts, reads, disappearing and
// view-once messages, rejects, offline periods, faults). Every history it writes satisfies
// every invariant of spec/history.md; the property test mutates them and the benchmark times
// the checker on them. Deterministic: a seed gives the same history everywhere.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "oracle/event.h"

namespace msgsim::history {

struct GeneratorOptions {
  uint64_t seed = 1;
  uint32_t users = 6;
  uint32_t devices_per_user_max = 3;
  uint32_t groups = 2;
  uint32_t group_size_max = 5;  // potential members of each group
  uint32_t one_to_one_convs = 3;
  uint32_t deliver_burst_max = 4;  // a delivery step shows up to this many messages
  uint64_t events = 400;  // roughly: the drain at the end adds what is still owed
  bool quiescent_end = true;  // false: stop abruptly with a non-quiescent end
  bool membership_changes = true;
  bool new_devices = true;
  bool expiring_messages = true;
  bool rejects = true;
  bool receipts = true;
  bool faults = true;
};

// Calls `sink` with each event of one valid history, in order.
void generate_history(const GeneratorOptions& options, const std::function<void(const Event&)>& sink);
std::vector<Event> generate_history(const GeneratorOptions& options);

}  // namespace msgsim::history
