// The simulated twin of `msgsim live bench` part (b) (cli/cmd_live_bench.cpp): S senders send
// 1:1 messages to S receivers at an offered rate, through one server process that holds every
// server node (registry, queue, storage, push, chat) on one event loop, with SQLite group commit
// (live/group_commit.h). The twin runs on the deterministic simulator with measured costs only:
//  - the server process is one node with one core: every frame of every server role waits in
//    one FIFO, and costs the sum of the cost table's per-role CPU along the message's path;
//  - the loaders are a separate node (their CPU is their own, not charged);
//  - each hop between a loader and the server costs half the measured loopback round trip;
//  - group commit as live does it: a batch syncs every database file that has commits in it
//    (one fsync each, drawn from the measured fsync distribution of this disk), the frames that
//    leave the process wait until the batch covering their commits is durable, and commits made
//    while a batch syncs go into the next batch;
//  - the loader sends as live bench does: every millisecond the messages owed by then at the
//    offered rate, round-robin over the senders.
// Latency is from the send to the receiver's Deliver, as live bench measures it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "impl/chat/cpu_costs.h"

namespace msgsim::reports {

struct LiveTwinCosts {
  int64_t server_ns_per_message = 0;  // the server process's CPU per delivered message
  int64_t server_ns_per_batch = 0;    // the loop's CPU to release one batch (the sync's own CPU)
  std::vector<int64_t> fsync_quantiles_ns;  // evenly spaced quantiles, 0 % .. 100 %
  int64_t loopback_rtt_ns = 0;
  // Database files one batch syncs: the queue's and the storage's (2) unless measured (`live bench
  // --json`'s group_commit.files_per_batch, below 2 when a batch covers one of them only); a
  // fraction is drawn per batch (1.6: two files in 60 % of the batches).
  double files_per_batch = 2;
};

// The per-message and per-batch server CPU from the cost table: what each role does for one
// delivered message (reports/README.md lists the terms).
LiveTwinCosts live_twin_costs(const chat::CpuCosts& costs, std::vector<int64_t> fsync_quantiles_ns, int64_t loopback_rtt_ns);

struct LiveTwinOptions {
  uint64_t seed = 1;
  double offered_per_s = 1000;
  uint32_t pairs = 500;
  int64_t warmup_ns = 1'000'000'000;
  int64_t measure_ns = 5'000'000'000;
  int64_t drain_ns = 2'000'000'000;
};

struct LiveTwinResult {
  double offered_per_s = 0;
  double delivered_per_s = 0;  // deliveries of messages sent in the measured window, per second of it
  double p50_ms = 0, p99_ms = 0;
  double server_utilisation = 0;
  double mean_batch_messages = 0;
  uint64_t batches = 0;
  std::string digest_hex;
};

LiveTwinResult run_live_twin(const LiveTwinCosts& costs, const LiveTwinOptions& options);

// A sample from evenly spaced quantiles (linear between them); u in [0, 1).
int64_t sample_quantiles(const std::vector<int64_t>& quantiles_ns, double u);

}  // namespace msgsim::reports
