// The simulated twin of `msgsim live bench` part (b) (cli/cmd_live_bench.cpp): S senders send
// 1:1 messages to S receivers at an offered rate, through one server process that holds every
// server node (registry, queue, storage, push, chat) on one event loop, with SQLite group commit
// (live/group_commit.h). The twin runs on the deterministic simulator with measured costs and the
// bench's own configuration only:
//  - the server process is one node with one core: every frame of every server role waits in
//    one FIFO, and costs the cost table's per-role CPU of the frames the message makes there
//    (live_twin_costs), charged at the stage where the server does that work;
//  - the loaders are a separate node (their CPU is their own, not charged);
//  - each hop between a loader and the server is drawn from calibrate's measured distribution of
//    the one-way loopback hop to a reader asleep between frames (the bench's processes sleep in
//    epoll between messages at its rates, and a wake-up from idle on a VM has a long tail); so is
//    the group commit worker's completion reaching the loop (another wake-up of a sleeping
//    thread). Without that distribution each hop costs half the back-to-back loopback round trip
//    and the completion nothing;
//  - the queue's batching as the bench server ran it (ChatTuning::queue_commit_window_ns and
//    queue_linger_ns, which `live bench --json` reports): a Send's produce waits in the open
//    transaction until the commit window ends (0: the loop's next turn, behind the frames
//    already waiting), then the committed records wait the linger before the storage stores
//    them and fans them out to both users' devices; the storage's transaction commits when its
//    own window ends (storage_commit_window_ns, also reported; 0: at once, see kFlush);
//  - group commit as live does it: each commit defers its database file's fsync; a batch syncs
//    every file deferred since the last batch began (one fsync each, in order, drawn from the
//    measured fsync distribution of this disk), the next batch starts when it completes, and a
//    frame that leaves the process waits for the batch covering every commit made before it. So
//    at low load the queue's log and the storage's file go in two batches one after the other,
//    and the files per batch come out of the model (live bench measures them: a check);
//  - the loader sends as live bench does: every millisecond the messages owed by then at the
//    offered rate, round-robin over the senders.
// Latency is from the send to the receiver's Deliver, as live bench measures it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "impl/chat/config.h"
#include "impl/chat/cpu_costs.h"

namespace msgsim::reports {

struct LiveTwinCosts {
  // The server process's CPU per message, by the stage that spends it:
  int64_t server_ns_on_send = 0;       // the Send arrives: chat decode + route, queue decode + append
  int64_t server_ns_on_commit = 0;     // its batch commits: the chat server takes the Produced (acks)
  int64_t server_ns_on_records = 0;    // the Records reach the storage: store, look up, deliver to both users
  int64_t server_ns_per_batch = 0;     // the loop's CPU to release one batch (the sync's own CPU)
  std::vector<int64_t> fsync_quantiles_ns;  // evenly spaced quantiles, 0 % .. 100 %
  // How alike consecutive fdatasyncs are (the correlation of consecutive batches' log times
  // that `live bench` measured, group_commit.fsync_lag1_log_correlation): a disk's slow spells
  // outlast a batch, and a message at low rates waits for two batches in a row, so independent
  // draws understate the tail of their sum (session 16: two files synced one after the other
  // correlated at ~0.36 here, and the p99 of the pair's sum was 30 % above independent draws').
  // The twin draws the fsyncs through CorrelatedQuantileDraws with this correlation; 0:
  // independent draws, as before it was measured.
  double fsync_correlation = 0;
  int64_t loopback_rtt_ns = 0;
  std::vector<int64_t> idle_hop_quantiles_ns;  // evenly spaced quantiles, or empty: not measured
  // The event loops' turns as `live bench` measured them (its server_loop and client_loop): one
  // turn's CPU as evenly spaced quantiles, and turns per delivered message. With them the twin
  // charges each stage's CPU as that many turns drawn from the distribution, scaled so that their
  // mean is the stage's mean: a message then waits behind a long turn (a WAL checkpoint, a burst
  // of socket writes) as live ones do, instead of every message costing the mean. Without them
  // (empty), every stage costs its mean. The client loop (every sender and receiver of the
  // bench on one thread) is charged only where it was measured; a Deliver waits behind its turns
  // before its latency is taken.
  std::vector<int64_t> server_turn_quantiles_ns;
  double server_turns_per_msg = 0;
  std::vector<int64_t> client_turn_quantiles_ns;
  double client_turns_per_msg = 0;
  int64_t client_ns_per_message = 0;  // the client loop's CPU per delivered message
  // Each loop's preemptions as `live bench` measured them (involuntary context switches per
  // second, and the time runnable but waiting for a core divided among them): even on a quiet
  // machine the server loop, its group commit worker, the load process and the kernel share two
  // cores, and a preempted loop holds every frame waiting for it. The twin takes the core away
  // at Poisson times at that rate for exponentially distributed spells of that mean (only the
  // mean is measured). Zero: a dedicated core, as before.
  double server_preemptions_per_s = 0;
  int64_t server_preemption_mean_ns = 0;
  double client_preemptions_per_s = 0;
  int64_t client_preemption_mean_ns = 0;
  // SQLite's checkpoints as `live bench` measured them (its group_commit's commits, checkpoints
  // and checkpoint_buckets_us): the part of each that runs on the loop thread, copying pages into
  // the database and syncing both files while the loop does nothing else. Since session 16 that
  // is a checkpoint's tail, every few thousand commits (live/wal_checkpointer.h: the bulk runs on
  // a thread of its own and is not counted here); before, the whole checkpoint (~1.5 ms, ~10 a
  // second at 1,000 msg/s: the stalls behind live's p99).
  // A commit of the twin checkpoints with this probability and stalls the loop for a duration
  // drawn from these quantiles. Zero or empty: no checkpoints (the turns may still hold some).
  double checkpoints_per_commit = 0;
  std::vector<int64_t> checkpoint_quantiles_ns;
  int64_t server_ns_per_message() const { return server_ns_on_send + server_ns_on_commit + server_ns_on_records; }
};

// The client loop's share of its per-message CPU spent on the send (the tick's write); the rest
// is the reads of the SendAck and the Deliver, charged when the Deliver arrives.
inline constexpr double kClientSendShare = 0.4;

// The per-message and per-batch server CPU from the cost table: what each role does for one
// delivered message in the bench (reports/README.md lists the terms).
LiveTwinCosts live_twin_costs(const chat::CpuCosts& costs, std::vector<int64_t> fsync_quantiles_ns, int64_t loopback_rtt_ns,
                              std::vector<int64_t> idle_hop_quantiles_ns = {});

// The same costs with the per-message CPU the live bench measured on its server's event-loop
// thread (`server_loop_cpu_us_per_msg`, the service demand every frame waits for): split over the
// stages in the cost table's proportions (evenly when the table is all zero), and no separate
// per-batch charge, since the measured average already holds the loop's share of each batch.
LiveTwinCosts with_measured_loop_cpu(const LiveTwinCosts& costs, int64_t loop_ns_per_message);

// The same costs with the fsync distribution scaled so that its mean is `fsync_mean_ns`: the
// mean fdatasync the live bench's group commit measured during the run (`group_commit.
// fsync_mean_us`). The calibrated distribution (a 4 KiB append, measured at another time) keeps
// its shape; the bench's batches write more pages and meet the disk as it was during the run.
LiveTwinCosts with_measured_fsync_mean(const LiveTwinCosts& costs, int64_t fsync_mean_ns);

struct LiveTwinOptions {
  uint64_t seed = 1;
  double offered_per_s = 1000;
  uint32_t pairs = 500;
  int64_t warmup_ns = 1'000'000'000;
  int64_t measure_ns = 5'000'000'000;
  int64_t drain_ns = 2'000'000'000;
  // The queue's batching delays the bench server ran with (ChatTuning; `live bench --json`'s
  // traffic.queue_commit_window_us / queue_linger_us).
  int64_t queue_commit_window_ns = chat::ChatTuning{}.queue_commit_window_ns;
  int64_t queue_linger_ns = chat::ChatTuning{}.queue_linger_ns;
  // The storage's group commit window (ChatTuning::storage_commit_window_ns; `live bench
  // --json`'s traffic.storage_commit_window_us): the records' transaction stays open until it
  // ends, later flushes joining it; 0 (the loop's next turn, which Asio runs before the socket
  // events it has not polled yet) and negative (each frame alone, the storage before its group
  // commit) commit at once.
  int64_t storage_commit_window_ns = chat::ChatTuning{}.storage_commit_window_ns;
};

struct LiveTwinResult {
  double offered_per_s = 0;
  double delivered_per_s = 0;  // deliveries of messages sent in the measured window, per second of it
  double p50_ms = 0, p99_ms = 0;
  double server_utilisation = 0;
  double mean_batch_messages = 0;  // Delivers released per batch
  uint64_t batches = 0;
  double files_per_batch = 0;      // database files synced per batch
  uint64_t checkpoints = 0;        // SQLite checkpoints the loop stalled for (checkpoints_per_commit)
  // Where a measured message's time goes, as `MSGSIM_BENCH_TRACE=1 msgsim live bench` prints it
  // for live: p50/p99 ms since the send when the server loop reads the Send, when the committed
  // Records reach the storage, and when the Deliver is written (its batch durable).
  double read_p50_ms = 0, read_p99_ms = 0;
  double records_p50_ms = 0, records_p99_ms = 0;
  double written_p50_ms = 0, written_p99_ms = 0;
  std::string digest_hex;
};

LiveTwinResult run_live_twin(const LiveTwinCosts& costs, const LiveTwinOptions& options);

// A sample from evenly spaced quantiles (linear between them); u in [0, 1).
int64_t sample_quantiles(const std::vector<int64_t>& quantiles_ns, double u);

// Draws from evenly spaced quantiles whose consecutive draws are alike: a Gaussian copula over
// an AR(1) sequence, z' = rho z + sqrt(1 - rho^2) e with e standard normal, and the draw at
// u = Phi(z'). Each draw keeps the quantiles' distribution exactly, and consecutive draws' normal
// scores correlate at rho (for log-normal times, their logs do). The first draw is independent.
class CorrelatedQuantileDraws {
 public:
  // rho in [-0.99, 0.99] (a larger one would freeze the sequence).
  explicit CorrelatedQuantileDraws(double rho);
  // u1, u2 independent and uniform in [0, 1): the Box-Muller step's two inputs for e.
  int64_t next(const std::vector<int64_t>& quantiles_ns, double u1, double u2);
  double rho() const { return rho_; }

 private:
  double rho_;
  double z_ = 0;
  bool started_ = false;
};
// The mean of the piecewise-linear distribution sample_quantiles draws from (0: empty).
double quantiles_mean(const std::vector<int64_t>& quantiles_ns);

// A histogram bucket of measured durations: `count` of them in [lower_ns, upper_ns).
struct DurationBucket {
  int64_t lower_ns = 0, upper_ns = 0;
  uint64_t count = 0;
};
// `steps` + 1 evenly spaced quantiles (0 % .. 100 %) of the durations in `buckets` (ascending,
// not overlapping), linear within a bucket; empty when they hold none. With steps far above the
// count, a lone outlier keeps its own weight: 1,001 quantiles of 14,000 fsyncs spread the top
// 0.1 % (14 of them) evenly up to the one slowest.
std::vector<int64_t> quantiles_from_buckets(const std::vector<DurationBucket>& buckets, size_t steps);

}  // namespace msgsim::reports
