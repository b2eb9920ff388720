// msgsim live bench: what the real system does on this machine over real sockets.
//
//  (a) idle: N WebSocket connections to one chat server process, each a device that said Hello
//      and then only heartbeats. Reports the server's RSS per connection (VmRSS after the
//      connections settled minus before, over N) and its CPU while they heartbeat
//      (utime + stime from /proc/<pid>/stat over a window).
//  (b) traffic: 1:1 messages from S senders to S receivers, each acked only after the queue's
//      commit (fsync), at several offered rates: delivered msgs/s and end-to-end latency
//      (the sender's send to the receiver's Deliver) p50/p99/p999.
//
// Process model. The server process hosts the system's server nodes (registry, queue, storage,
// push, chat server: the unchanged impl/chat classes) on two event loops (`--server-loops 2`, the
// default: the chat server and its devices on one thread, the other nodes on another) or on one
// (`--server-loops 1`), each node single-threaded on its loop; nodes
// talk to each other in process (posted to the loop, FIFO per connection, no re-entrancy),
// devices talk WebSocket (binary frames, docs/protocol.md; live/lean_websocket.h on the server,
// its framing's client side, BenchClient, in the load processes) to the chat server, and every
// database is a real SQLite file with real fsync, batched by live/group_commit.h: one fsync per
// batch for every partition and node, off the loop, and frames to devices wait for the batch of
// their commits.
// Client load runs in separate processes, as many as the descriptor limit needs, each from its
// own source address 127.0.0.x. Everything stays on 127.0.0.0/8.
//
// This host exists because the bench needs the server side in one measurable process; it is
// not the live runtime of `msgsim live run` (live/), which runs every node as its own process
// with TCP between them: that hop is not measured here (see live/README.md, "Bench").
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
#include <liburing.h>
#include <charconv>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cli/commands.h"
#include "impl/base/assert.h"
#include "impl/chat/chat_server.h"
#include "impl/chat/config.h"
#include "impl/chat/protocol.h"
#include "impl/chat/push.h"
#include "impl/chat/queue.h"
#include "impl/chat/registry.h"
#include "impl/chat/storage.h"
#include "live/group_commit.h"
#include "live/wal_checkpointer.h"
#include "live/lean_websocket.h"
#include "reports/live_twin.h"

namespace msgsim::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using beast::error_code;
__extension__ typedef __int128 int128;

int64_t monotonic_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------------------------
// /proc readings and the descriptor limit

struct DescriptorLimit {
  rlim_t soft_before = 0;
  rlim_t soft = 0;
  rlim_t hard = 0;
};

DescriptorLimit raise_descriptor_limit() {
  DescriptorLimit limit;
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  limit.soft_before = r.rlim_cur;
  limit.hard = r.rlim_max;
  r.rlim_cur = r.rlim_max;
  setrlimit(RLIMIT_NOFILE, &r);
  getrlimit(RLIMIT_NOFILE, &r);
  limit.soft = r.rlim_cur;
  return limit;
}

// VmRSS of a process, in bytes; 0 if it cannot be read.
uint64_t rss_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// utime + stime of a process, in clock ticks.
uint64_t cpu_ticks(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t close_paren = text.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(close_paren + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  // Fields after the command: state is field 3; utime and stime are fields 14 and 15.
  for (int index = 3; index <= 15 && fields >> field; ++index) {
    if (index == 14) utime = std::stoull(field);
    if (index == 15) stime = std::stoull(field);
  }
  return utime + stime;
}

std::pair<uint32_t, uint32_t> ephemeral_port_range() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  uint32_t low = 32768, high = 60999;
  in >> low >> high;
  return {low, high};
}

// ---------------------------------------------------------------------------------------------
// The server process: the system's server nodes on one loop, devices over WebSocket.

// The server process's group commit counters, in memory shared with the bench process (an
// anonymous MAP_SHARED mapping made before the fork): the server's loop publishes them after
// every batch, the bench reads them before and after each offered rate. Lock-free atomics, so
// the two processes never block each other.
struct SharedGroupCommitCounters {
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> files_synced{0};
  std::atomic<uint64_t> syncs_deferred{0};
  std::atomic<uint64_t> sync_ns{0};
  // The distribution of the worker's fdatasync time (reports/live_twin.h draws from it): each
  // publish adds its new files to the bucket of their mean sync time (one file per batch at low
  // rates, so one fdatasync each). Buckets are log-spaced, kFsyncBucketsPerOctave per doubling
  // from kFsyncBucketFloorNs; the last one holds everything above.
  static constexpr size_t kFsyncBuckets = 200;
  std::atomic<uint64_t> fsync_buckets[kFsyncBuckets]{};
  // How alike consecutive fdatasyncs are: a disk's slow spells outlast a batch (measured here,
  // session 16: two files synced one after the other, a few ms apart, correlate at ~0.36, and
  // the p99 of their sum is 30 % above that of independent draws), and a message at low rates
  // waits for two batches in a row, the queue's log then the storage's. For each pair of
  // batches in a row, the natural logs of their mean time per file (x the earlier, y the later)
  // are summed here; the bench takes each rate's differences (FsyncPairSums). Written by the
  // store loop only; a reading may catch one pair half added, which moves nothing measurable.
  std::atomic<uint64_t> fsync_pairs{0};
  std::atomic<double> fsync_pair_x{0}, fsync_pair_y{0}, fsync_pair_xx{0}, fsync_pair_yy{0}, fsync_pair_xy{0};
  // Each server event loop's figures, published by that loop's own thread: `loops[0]` is the
  // device loop (the only one with `--server-loops 1`), `loops[1]` the store loop.
  static constexpr size_t kLoopTurnBuckets = 200;
  struct Loop {
    // The loop thread's CPU time (CLOCK_THREAD_CPUTIME_ID), published every kLoopCpuPublishNs:
    // the CPU every message waits for, without the fsync worker thread's.
    std::atomic<uint64_t> cpu_ns{0};
    // The distribution of the loop thread's CPU per turn (one io_context::run_one: the epoll
    // wait's own CPU and one completion handler), log-spaced as the fsync buckets but from
    // kLoopTurnBucketFloorNs: whether a message's latency tail comes from long turns of the loop
    // it waits behind (a WAL checkpoint, a burst of writes) rather than from the mean CPU.
    std::atomic<uint64_t> turn_buckets[kLoopTurnBuckets]{};  // the timed turns (about 1 in 8)
    std::atomic<uint64_t> turns{0};                           // every turn
    // The loop thread's time runnable but not running (/proc/thread-self/schedstat's second
    // field) and its involuntary context switches (getrusage RUSAGE_THREAD), published with
    // cpu_ns: how long the other processes on the machine's cores kept the loop waiting.
    std::atomic<uint64_t> runqueue_wait_ns{0};
    std::atomic<uint64_t> involuntary_switches{0};
  };
  static constexpr size_t kServerLoopsMax = 2;
  Loop loops[kServerLoopsMax];
  std::atomic<uint32_t> loop_count{1};  // the server's loops (`--server-loops`)
  // 1: the device sessions are on io_uring (LeanWsRing); 0: on Asio's epoll, where the kernel
  // refused a ring. The JSON says which (traffic.device_sessions): they cost differently.
  std::atomic<uint32_t> device_ring{0};
  // SQLite's checkpoints as far as they run on the store loop and hold every frame waiting for
  // it meanwhile (live::GroupCommitStats::checkpoints: the tails of live/wal_checkpointer.h):
  // how many, the loop's CPU in them, and their wall-clock durations, log-spaced as the fsync
  // buckets.
  std::atomic<uint64_t> checkpoints{0};
  std::atomic<uint64_t> checkpoint_cpu_ns{0};
  static constexpr size_t kCheckpointBuckets = 200;
  std::atomic<uint64_t> checkpoint_buckets[kCheckpointBuckets]{};
  // The checkpoints' bulks, on the checkpointer's thread (they do not stall the loop): how many,
  // the log pages they copied, how many failed, and the longest since a rate's client last reset
  // it (it exchanges 0 in at the start of its window).
  std::atomic<uint64_t> bulks{0};
  std::atomic<uint64_t> bulk_pages{0};
  std::atomic<uint64_t> bulk_errors{0};
  std::atomic<uint64_t> bulk_ns_max{0};
};
constexpr int64_t kLoopCpuPublishNs = 50 * kNanosPerMilli;
constexpr double kFsyncBucketFloorNs = 1000;
constexpr double kLoopTurnBucketFloorNs = 128;
constexpr double kBucketsPerOctave = 8;

// A log-spaced histogram's bucket for a duration: kBucketsPerOctave buckets per doubling from
// `floor_ns` (bucket 0 holds everything below it, the last one everything above).
size_t log_bucket_of(double duration_ns, double floor_ns, size_t buckets) {
  if (!(duration_ns > floor_ns)) return 0;
  const double index = std::floor(std::log2(duration_ns / floor_ns) * kBucketsPerOctave);
  return static_cast<size_t>(std::min(index, static_cast<double>(buckets - 1)));
}
double log_bucket_lower_ns(size_t bucket, double floor_ns) {
  return bucket == 0 ? 0 : floor_ns * std::exp2(static_cast<double>(bucket) / kBucketsPerOctave);
}
size_t fsync_bucket_of(double sync_ns) { return log_bucket_of(sync_ns, kFsyncBucketFloorNs, SharedGroupCommitCounters::kFsyncBuckets); }

// A histogram's non-empty buckets, in microseconds' bounds for the JSON and nanoseconds' for
// reports::quantiles_from_buckets.
std::vector<reports::DurationBucket> log_buckets_of(const uint64_t* counts, size_t buckets, double floor_ns) {
  std::vector<reports::DurationBucket> out;
  for (size_t b = 0; b < buckets; ++b) {
    if (counts[b] == 0) continue;
    out.push_back({std::llround(log_bucket_lower_ns(b, floor_ns)), std::llround(log_bucket_lower_ns(b + 1, floor_ns)), counts[b]});
  }
  return out;
}
// SharedGroupCommitCounters' sums over pairs of consecutive batches' log fdatasync times, read
// at one moment; a rate takes the difference of two readings.
struct FsyncPairSums {
  uint64_t pairs = 0;
  double x = 0, y = 0, xx = 0, yy = 0, xy = 0;
  static FsyncPairSums read(const SharedGroupCommitCounters& c) {
    return {c.fsync_pairs.load(std::memory_order_relaxed), c.fsync_pair_x.load(std::memory_order_relaxed),
            c.fsync_pair_y.load(std::memory_order_relaxed),  c.fsync_pair_xx.load(std::memory_order_relaxed),
            c.fsync_pair_yy.load(std::memory_order_relaxed), c.fsync_pair_xy.load(std::memory_order_relaxed)};
  }
  FsyncPairSums since(const FsyncPairSums& start) const {
    return {pairs - start.pairs, x - start.x, y - start.y, xx - start.xx, yy - start.yy, xy - start.xy};
  }
  // Pearson's correlation of the pairs (the earlier batch's log time against the later one's);
  // nothing below kPairsMin pairs or without spread.
  static constexpr uint64_t kPairsMin = 30;
  std::optional<double> correlation() const {
    if (pairs < kPairsMin) return std::nullopt;
    const double n = static_cast<double>(pairs);
    const double var_x = n * xx - x * x, var_y = n * yy - y * y;
    if (!(var_x > 0) || !(var_y > 0)) return std::nullopt;
    return std::clamp((n * xy - x * y) / std::sqrt(var_x * var_y), -1.0, 1.0);
  }
};

std::vector<reports::DurationBucket> fsync_buckets_of(const uint64_t* counts) {
  return log_buckets_of(counts, SharedGroupCommitCounters::kFsyncBuckets, kFsyncBucketFloorNs);
}
std::vector<reports::DurationBucket> loop_turn_buckets_of(const uint64_t* counts) {
  return log_buckets_of(counts, SharedGroupCommitCounters::kLoopTurnBuckets, kLoopTurnBucketFloorNs);
}
std::vector<reports::DurationBucket> checkpoint_buckets_of(const uint64_t* counts) {
  return log_buckets_of(counts, SharedGroupCommitCounters::kCheckpointBuckets, kFsyncBucketFloorNs);
}
// [[lower_us, upper_us, count], ..]: the histogram itself, so that a lone slow fsync keeps its
// own weight for the twin (reports/live_twin.h) rather than a quantile step's.
nlohmann::json buckets_json(const std::vector<reports::DurationBucket>& buckets) {
  nlohmann::json out = nlohmann::json::array();
  for (const reports::DurationBucket& b : buckets)
    out.push_back({static_cast<double>(b.lower_ns) / 1e3, static_cast<double>(b.upper_ns) / 1e3, b.count});
  return out;
}

int64_t thread_cpu_ns() {
  timespec cpu{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
  return static_cast<int64_t>(cpu.tv_sec) * kNanosPerSecond + cpu.tv_nsec;
}

// The calling thread's scheduler figures: nanoseconds runnable but waiting for a core, and
// involuntary context switches.
struct ThreadSchedule {
  uint64_t runqueue_wait_ns = 0;
  uint64_t involuntary_switches = 0;
};
ThreadSchedule thread_schedule() {
  ThreadSchedule out;
  std::ifstream schedstat("/proc/thread-self/schedstat");
  uint64_t run_ns = 0;
  schedstat >> run_ns >> out.runqueue_wait_ns;
  rusage usage{};
  if (::getrusage(RUSAGE_THREAD, &usage) == 0) out.involuntary_switches = static_cast<uint64_t>(usage.ru_nivcsw);
  return out;
}

// Runs `io` to completion one turn at a time, counting every turn in `turns` and adding the
// thread CPU of about one turn in kTurnSampleEvery to `buckets` (log-spaced from
// kLoopTurnBucketFloorNs). A CLOCK_THREAD_CPUTIME_ID read is a system call: about 1 us on this
// VM when loaded, and reading it on every turn cost 8 % of the server loop's CPU at 25,000 msg/s
// (perf). The gaps between timed turns are pseudo-random (1 to 2 x kTurnSampleEvery - 1), so no
// periodic pattern of the loop's work aliases with the sampling.
constexpr uint64_t kTurnSampleEvery = 8;
template <typename Counter, typename TurnCounter>
void run_counting_turns(asio::io_context& io, Counter* buckets, size_t bucket_count, TurnCounter& turns) {
  uint64_t gap_state = 0x9E3779B97F4A7C15u;
  uint64_t until_timed = 1;
  for (;;) {
    if (--until_timed > 0) {
      if (io.run_one() == 0) return;
      turns += 1;
      continue;
    }
    const int64_t before_ns = thread_cpu_ns();
    if (io.run_one() == 0) return;
    const int64_t after_ns = thread_cpu_ns();
    turns += 1;
    buckets[log_bucket_of(static_cast<double>(after_ns - before_ns), kLoopTurnBucketFloorNs, bucket_count)] += 1;
    gap_state ^= gap_state << 13;
    gap_state ^= gap_state >> 7;
    gap_state ^= gap_state << 17;
    until_timed = 1 + gap_state % (2 * kTurnSampleEvery - 1);
  }
}
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the counters are shared between processes");

SharedGroupCommitCounters* map_shared_counters() {
  void* memory = ::mmap(nullptr, sizeof(SharedGroupCommitCounters), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  MSGSIM_ASSERT(memory != MAP_FAILED, std::strerror(errno));
  return new (memory) SharedGroupCommitCounters();
}

// MSGSIM_BENCH_TRACE=1: where a message's time goes inside the server process. The traffic
// part's bodies start with the sender's CLOCK_MONOTONIC send time (run_rate), the clock of every
// process, so each stage's delay since the send is read off the frame as it passes the host;
// nothing is kept per message. Stages, in path order: the Send read from the device's socket,
// the Produce handed to the queue, the committed Records handed to the storage, the Deliver
// the chat server decided, and that Deliver written to the receiver's socket (after its group
// commit batch was durable). Every second, the p50 and p99 of each stage since the send go to
// stderr. Decoding every frame twice costs CPU: the trace is for finding delays, not for the
// CPU figures.
class StageTrace {
 public:
  enum Stage : size_t { kServerRead, kProduce, kRecords, kDeliverDecided, kDeliverWritten, kStages };
  static constexpr size_t kSamplesPerStageMax = 1'000'000;  // per reporting interval

  static bool enabled() {
    static const bool on = std::getenv("MSGSIM_BENCH_TRACE") != nullptr;
    return on;
  }
  // The send time a traffic body carries (-1: none).
  static int64_t sent_ns_of(const Bytes& body) {
    if (body.size() < sizeof(int64_t)) return -1;
    int64_t sent_ns = 0;
    std::memcpy(&sent_ns, body.data(), sizeof sent_ns);
    return sent_ns;
  }
  // From either server loop (`--server-loops 2`): the samples are guarded by a mutex, taken only
  // for traced frames (the trace is off unless MSGSIM_BENCH_TRACE is set).
  void note(Stage stage, int64_t sent_ns) {
    if (sent_ns <= 0) return;
    std::lock_guard lock(mutex_);
    auto& samples = samples_[stage];
    if (samples.size() < kSamplesPerStageMax) samples.push_back(monotonic_now_ns() - sent_ns);
  }
  // Notes every traffic message a frame between nodes or from a device carries.
  void note_frame(Stage read_stage, ByteView bytes) {
    auto frame = chat::decode(bytes);
    if (!frame.ok()) return;
    if (const auto* send = std::get_if<chat::Send>(&*frame)) note(read_stage, sent_ns_of(send->body));
    if (const auto* produce = std::get_if<chat::Produce>(&*frame)) note(kProduce, sent_ns_of(produce->entry.body));
    if (const auto* records = std::get_if<chat::Records>(&*frame)) {
      for (const chat::RecordAt& record : records->records) note(kRecords, sent_ns_of(record.entry.body));
    }
  }
  // The send time of a Deliver (-1: another frame).
  static int64_t deliver_sent_ns(ByteView bytes) {
    auto frame = chat::decode(bytes);
    if (!frame.ok()) return -1;
    const auto* deliver = std::get_if<chat::Deliver>(&*frame);
    return deliver == nullptr ? -1 : sent_ns_of(deliver->entry.body);
  }
  void report() {
    std::lock_guard lock(mutex_);
    if (samples_[kDeliverWritten].empty()) return;
    static constexpr const char* kNames[kStages] = {"server read", "produce", "records", "deliver decided", "deliver written"};
    std::string line = "trace: " + std::to_string(samples_[kDeliverWritten].size()) + " delivered; since the send (p50/p99 ms):";
    for (size_t stage = 0; stage < kStages; ++stage) {
      auto& samples = samples_[stage];
      if (samples.empty()) continue;
      std::sort(samples.begin(), samples.end());
      auto at = [&](double q) {
        return static_cast<double>(samples[std::min(samples.size() - 1, static_cast<size_t>(q * static_cast<double>(samples.size())))]) / 1e6;
      };
      char text[96];
      std::snprintf(text, sizeof text, " %s %.3f/%.3f", kNames[stage], at(0.5), at(0.99));
      line += text;
      line += stage + 1 < kStages ? " |" : "";
      samples.clear();
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }

 private:
  std::mutex mutex_;
  std::vector<int64_t> samples_[kStages];
};

// Threads (`--server-loops 2`): the device loop (the thread that calls run_server_process), the
// store loop (a second thread) and the group commit's fsync worker. What each object belongs to:
// - slots_ (nodes, their contexts and databases): written before either loop runs, then each
//   node is touched only by its own loop's thread (its handlers, its timers, its database).
// - Loop::conns and Loop::timers: each loop's own; a link between loops has one end in each
//   table, and nothing of one loop's table is read by the other thread: what one end does to the
//   other crosses as a Handoff (a frame, an accept, a connected, a close) by value.
// - Channel: `outbox`/`flush_posted` the sending loop's, `drained` the receiving loop's,
//   `inbox`/`drain_posted` under its mutex (the only lock; never held while another is taken
//   or a node runs).
// - lean_ws_, device_ring_, held_, acceptor_, store_ticket_seen_, reads_held_count_: the device loop's.
// - group_commit_ (stats, tickets, the VFS shim's files), counters_' group commit fields,
//   published_*: the store loop's; the worker only fsyncs and posts back to the store loop.
// - Atomics shared by both: next_conn_, next_timer_ (ids), backlog_frames_ (frames between
//   nodes not yet handled), reads_held_now_ and release_posted_ (the store loop's view of the
//   device reads being held, and at most one release posted), durable_published_ (the store
//   loop's durable(), release/acquire: a device frame whose ticket it covers may go out).
// - trace_: its own mutex. SharedGroupCommitCounters: atomics, each loop's figures written by
//   its own thread only.
// With one loop every role is that loop's and the hand-off is never used.
class BenchHost final : public live::LeanWsHandler {
 public:
  // Frames queued to one device connection, at most; a reader slower than that is dropped.
  static constexpr size_t kDeviceOutboxMax = 4096;
  // Backpressure on the devices. Frames between nodes are posted to the loop; past
  // kBacklogHoldFrames of them not yet handled, the device sessions stop reading (their bytes stay
  // in the kernel, the senders' TCP windows close) until the loops have worked the queue down to
  // kBacklogReleaseFrames (LeanWsShared::reads_held). Without it an offered rate above capacity
  // was read in whole: each message crosses the loop's FIFO about five times (Produce, Produced,
  // Records, Lookup and Located, Route), each time behind everything read since, so the loop
  // shared itself among every message in the server and finished few: at 25,000/s offered (load
  // ~6) 6,945 of 124,995 were delivered within the run, the server having spent 187 us of loop
  // CPU per delivered message; with the bound 43,751, at 50 us (session 11). ~5 frames a message,
  // so the bound holds ~1,600 messages, tens of milliseconds of the loop's work.
  static constexpr size_t kBacklogHoldFrames = 8192;
  static constexpr size_t kBacklogReleaseFrames = 2048;
  // The loops (`--server-loops`): the device loop runs the chat server, its WebSocket sessions
  // and the acceptor; the store loop every node with a database (queue, storage) and the registry
  // and push nodes they talk to, and the group commit. With one loop both are the same.
  static constexpr size_t kDeviceLoop = 0;

  // One io_context per loop: `ios[0]` the device loop, `ios.back()` the store loop (the same
  // one when there is only one).
  BenchHost(std::vector<asio::io_context*> ios, std::string dir)
      : dir_(std::move(dir)),
        store_loop_(ios.size() - 1),
        group_commit_(
            *ios.back(), [this](uint64_t durable) { on_durable(durable); },
            [](const std::string& what) {
              // What the nodes took for committed may be lost: stop, as a node does when its
              // commit fails.
              std::fprintf(stderr, "bench server: %s; stopping\n", what.c_str());
              std::_Exit(3);
            }) {
    MSGSIM_ASSERT(!ios.empty() && ios.size() <= SharedGroupCommitCounters::kServerLoopsMax, std::to_string(ios.size()) + " loops");
    for (asio::io_context* io : ios) loops_.push_back(std::make_unique<Loop>(*io));
    checkpointer_ = std::make_unique<live::WalCheckpointer>(*ios.back(), live::kLiveWalCheckpointPages);
    // The device sessions' reads and writes on an io_uring (live/lean_websocket.h, LeanWsRing);
    // where the kernel refuses one, on Asio's epoll as before.
    auto ring = live::LeanWsRing::make(loops_[kDeviceLoop]->io);
    if (ring.ok()) {
      device_ring_ = std::move(*ring);
      lean_ws_.ring = device_ring_.get();
    } else {
      std::fprintf(stderr, "bench server: device sessions on epoll: %s\n", ring.error().message.c_str());
    }
  }
  ~BenchHost() {
    checkpointer_.reset();  // waits for a bulk in flight; the nodes' connections are closed after it
    for (auto& slot : slots_) {
      slot.node.reset();
      if (slot.db != nullptr) sqlite3_close_v2(slot.db);
    }
  }

  size_t store_loop() const { return store_loop_; }
  bool device_sessions_on_ring() const { return device_ring_ != nullptr; }

  // Where the group commit counters are published after every batch (none: not published).
  void publish_group_commit_to(SharedGroupCommitCounters* counters) {
    counters_ = counters;
    if (counters_ == nullptr) return;
    group_commit_.on_checkpoint([counters](int64_t wall_ns, int64_t cpu_ns) {
      counters->checkpoints.fetch_add(1, std::memory_order_relaxed);
      counters->checkpoint_cpu_ns.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, cpu_ns)), std::memory_order_relaxed);
      const size_t bucket = log_bucket_of(static_cast<double>(wall_ns), kFsyncBucketFloorNs, SharedGroupCommitCounters::kCheckpointBuckets);
      counters->checkpoint_buckets[bucket].fetch_add(1, std::memory_order_relaxed);
    });
    checkpointer_->on_bulk([counters](const live::WalBulk& bulk) {
      if (!bulk.ok) {
        counters->bulk_errors.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      counters->bulks.fetch_add(1, std::memory_order_relaxed);
      counters->bulk_pages.fetch_add(static_cast<uint64_t>(std::max(0, bulk.copied_pages)), std::memory_order_relaxed);
      // Raised only here (the store loop); the client process only resets it.
      uint64_t longest = counters->bulk_ns_max.load(std::memory_order_relaxed);
      const auto wall_ns = static_cast<uint64_t>(std::max<int64_t>(0, bulk.wall_ns));
      while (wall_ns > longest && !counters->bulk_ns_max.compare_exchange_weak(longest, wall_ns, std::memory_order_relaxed)) {
      }
    });
  }

  // Before any loop runs (the nodes' on_start and the setup happen on the thread that calls
  // run_server_process, before the store loop's thread starts).
  void add_node(NodeId id, std::unique_ptr<Node> node, size_t loop) {
    MSGSIM_ASSERT_LT(loop, loops_.size());
    if (slots_.size() <= id) slots_.resize(id + 1);
    slots_[id].node = std::move(node);
    slots_[id].context = std::make_unique<NodeContext>(*this, id);
    slots_[id].loop = loop;
  }
  void start_all() {
    for (NodeId id = 0; id < slots_.size(); ++id) {
      if (slots_[id].node) call(id, [](Node& node, Context& ctx) { node.on_start(ctx); });
    }
  }
  // On the node's own loop.
  std::string describe(NodeId id) const { return id < slots_.size() && slots_[id].node ? slots_[id].node->describe() : ""; }
  bool runs_on(NodeId id, size_t loop) const { return id < slots_.size() && slots_[id].node && slots_[id].loop == loop; }
  // On the store loop.
  std::string describe_group_commit() const {
    const live::GroupCommitStats& s = group_commit_.stats();
    return "group commit: batches=" + std::to_string(s.batches) + " files_synced=" + std::to_string(s.files_synced) +
           " syncs_deferred=" + std::to_string(s.syncs_deferred) + " syncs_immediate=" + std::to_string(s.syncs_immediate) +
           " loop_backlog_frames=" + std::to_string(backlog_frames_.load());
  }
  // On the device loop.
  std::string describe_devices() const {
    return "devices: held_frames=" + std::to_string(held_.size()) + " device_reads_held=" + std::to_string(reads_held_count_) +
           (lean_ws_.reads_held ? " (held now)" : "");
  }
  // MSGSIM_BENCH_TRACE: the last second's stage delays to stderr (StageTrace).
  void report_trace() { trace_.report(); }
  // On the device loop, before it runs.
  Result<uint16_t> listen_devices(NodeId chat_server) {
    MSGSIM_ASSERT(runs_on(chat_server, kDeviceLoop), "the chat server must run on the device loop");
    chat_server_ = chat_server;
    error_code error;
    acceptor_ = std::make_unique<tcp::acceptor>(loops_[kDeviceLoop]->io);
    const tcp::endpoint endpoint(asio::ip::make_address_v4("127.0.0.1"), 0);
    acceptor_->open(endpoint.protocol(), error);
    if (!error) acceptor_->bind(endpoint, error);
    if (!error) acceptor_->listen(asio::socket_base::max_listen_connections, error);
    if (error) return make_error(ErrorCode::unavailable, "bench server: cannot listen: " + error.message());
    do_accept();
    return acceptor_->local_endpoint().port();
  }

  // Device connections (live/lean_websocket.h): one handler for all of them, on the device loop.
  void on_ws_open(live::LeanWsSession& session, std::string_view) override {
    const ConnId id = next_conn_++;
    session.tag = id;
    loops_[kDeviceLoop]->conns.emplace(id, Conn{chat_server_, kNoConn, kNoNode, true, session.shared_from_this()});
    call(chat_server_, [id](Node& node, Context& ctx) { node.on_accept(ctx, id, kNoNode); });
  }
  void on_ws_message(live::LeanWsSession& session, ByteView frame) override {
    const ConnId id = session.tag;
    auto& conns = loops_[kDeviceLoop]->conns;
    const auto it = conns.find(id);
    if (it == conns.end() || !it->second.open) return;
    if (StageTrace::enabled()) trace_.note_frame(StageTrace::kServerRead, frame);
    call(chat_server_, [id, frame](Node& node, Context& ctx) { node.on_frame(ctx, id, frame); });
  }
  void on_ws_gone(live::LeanWsSession& session, bool closed_by_peer) override {
    const ConnId id = session.tag;
    const DisconnectReason reason = closed_by_peer ? DisconnectReason::closed_by_peer : DisconnectReason::reset;
    auto& conns = loops_[kDeviceLoop]->conns;
    const auto it = conns.find(id);
    if (it == conns.end()) return;
    const bool was_open = it->second.open;
    conns.erase(it);
    if (was_open) call(chat_server_, [id, reason](Node& node, Context& ctx) { node.on_disconnect(ctx, id, reason); });
  }

 private:
  struct Conn {
    NodeId owner;
    ConnId peer_conn;  // in-process links: the other end's handle
    NodeId peer;
    bool open;
    std::shared_ptr<live::LeanWsSession> device;  // device links
  };
  // What each loop owns; touched only by that loop's thread (or before the loops run). A
  // connection's entry lives on its owner node's loop: a link between nodes on two loops has one
  // end in each table, and everything one end does to the other is posted to the other's loop.
  struct Loop {
    explicit Loop(asio::io_context& context) : io(context) {}
    asio::io_context& io;
    std::unordered_map<ConnId, Conn> conns;
    std::unordered_map<TimerId, std::shared_ptr<asio::steady_timer>> timers;
  };

  class NodeContext final : public Context {
   public:
    NodeContext(BenchHost& host, NodeId id) : host_(host), id_(id), rng_(Prng(0x6c697665).split("node " + std::to_string(id))) {}
    int64_t now_ns() const override { return monotonic_now_ns(); }
    NodeId self() const override { return id_; }
    std::string_view region() const override { return "local"; }
    ConnId connect(NodeId peer) override { return host_.connect(id_, peer); }
    void send(ConnId conn, Bytes frame) override { host_.send(id_, conn, std::move(frame)); }
    void close(ConnId conn) override { host_.close(id_, conn); }
    TimerId set_timer(int64_t delay_ns, uint64_t tag) override { return host_.set_timer(id_, delay_ns, tag); }
    void cancel_timer(TimerId timer) override { host_.cancel_timer(id_, timer); }
    Prng& rng() override { return rng_; }
    sqlite3* db() override { return host_.db(id_); }
    void emit(const history::Event&) override { log(LogLevel::error, "a server node emitted a history event"); }
    void log(LogLevel level, std::string_view message) override {
      static const bool verbose = std::getenv("MSGSIM_BENCH_LOG") != nullptr;
      if (level >= LogLevel::warn || verbose) std::fprintf(stderr, "node %u: %.*s\n", id_, static_cast<int>(message.size()), message.data());
    }
    void charge_cpu(int64_t) override {}
    void exit() override {}

   private:
    BenchHost& host_;
    NodeId id_;
    Prng rng_;
  };

  struct Slot {
    std::unique_ptr<Node> node;
    std::unique_ptr<NodeContext> context;
    sqlite3* db = nullptr;
    size_t loop = 0;  // the loop whose thread runs every handler of the node
  };

  template <typename F>
  void call(NodeId id, F&& f) {
    Slot& slot = slots_[id];
    if (slot.node) f(*slot.node, *slot.context);
  }
  Loop& loop_of(NodeId id) { return *loops_[slots_[id].loop]; }

  // The hand-off between the two loops (`--server-loops 2`). One item is one thing a node on the
  // sending loop did to a node on the other: handled there, in the order it was made.
  struct Handoff {
    enum Kind : uint8_t { kFrame, kAccept, kConnected, kClosed };
    Kind kind;
    NodeId node;        // the receiving loop's node it is for
    ConnId conn;        // that node's end of the link
    NodeId peer;        // kAccept: the opener
    ConnId peer_conn;   // kAccept: the opener's end
    uint64_t ticket;    // made on the store loop: group_commit_.sync_point() then (else 0)
    Bytes frame;        // kFrame
  };
  // One direction of the hand-off, by receiving loop. Items are owned by exactly one thread at a
  // time: the sending loop appends to `outbox` (its thread only) and, once per batch (a flush
  // posted to its own loop, so it runs after the handlers already queued there and takes what
  // they send too), moves them to `inbox` under `mutex`, posting one drain to the receiving loop
  // unless one is pending; the drain swaps `inbox` out under `mutex` and handles the items on the
  // receiving thread. So each batch costs one lock each side and at most one wake-up of the other
  // loop, where a post per frame woke it per frame (on this PVM guest every sleep and wake-up is
  // expensive: `pvm_irq_enable` took 27 % of the device loop's samples that way).
  struct Channel {
    std::vector<Handoff> outbox;  // the sending loop's
    bool flush_posted = false;    // the sending loop's
    std::mutex mutex;
    std::vector<Handoff> inbox;   // guarded by mutex
    bool drain_posted = false;    // guarded by mutex
    std::vector<Handoff> drained; // the receiving loop's: the batch being handled
  };

  // Runs on loop `to` after everything `from` handed or posted there before. Between the loops
  // the item carries the group commit's sync_point() when it came from the store loop: every
  // commit the item may depend on was made before it there, so its batch is at most that
  // ticket; the device loop raises store_ticket_seen_ to it before handling the item, and a frame
  // to a device waits for the batch of every ticket seen so far (to_device), as one loop's frames
  // wait for sync_point().
  void hand_off(size_t from, size_t to, Handoff item) {
    item.ticket = from == store_loop_ ? group_commit_.sync_point() : 0;
    Channel& channel = channels_[to];
    channel.outbox.push_back(std::move(item));
    if (channel.flush_posted) return;
    channel.flush_posted = true;
    asio::post(loops_[from]->io, [this, to] { flush_handoffs(to); });
  }
  // On the sending loop.
  void flush_handoffs(size_t to) {
    Channel& channel = channels_[to];
    channel.flush_posted = false;
    bool post_drain = false;
    {
      std::lock_guard lock(channel.mutex);
      if (channel.inbox.empty()) {
        channel.inbox.swap(channel.outbox);  // the outbox keeps the inbox's spare capacity
      } else {
        std::move(channel.outbox.begin(), channel.outbox.end(), std::back_inserter(channel.inbox));
        channel.outbox.clear();
      }
      post_drain = !channel.drain_posted;
      channel.drain_posted = true;
    }
    if (post_drain) asio::post(loops_[to]->io, [this, to] { drain_handoffs(to); });
  }
  // On the receiving loop `here`.
  void drain_handoffs(size_t here) {
    Channel& channel = channels_[here];
    {
      std::lock_guard lock(channel.mutex);
      channel.drained.swap(channel.inbox);
      channel.drain_posted = false;
    }
    for (Handoff& item : channel.drained) handle_handoff(here, item);
    channel.drained.clear();
  }
  void handle_handoff(size_t here, Handoff& item) {
    if (here == kDeviceLoop) store_ticket_seen_ = std::max(store_ticket_seen_, item.ticket);
    const ConnId conn = item.conn;
    switch (item.kind) {
      case Handoff::kFrame:
        on_backlog_frame_handled(here);
        if (!is_open(here, conn)) return;
        call(item.node, [conn, &item](Node& node, Context& ctx) { node.on_frame(ctx, conn, item.frame); });
        return;
      case Handoff::kAccept: {
        loops_[here]->conns.emplace(conn, Conn{item.node, item.peer_conn, item.peer, true, nullptr});
        const NodeId opener = item.peer;
        call(item.node, [conn, opener](Node& node, Context& ctx) { node.on_accept(ctx, conn, opener); });
        hand_off(here, 1 - here, Handoff{Handoff::kConnected, item.peer, item.peer_conn, kNoNode, kNoConn, 0, {}});
        return;
      }
      case Handoff::kConnected:
        if (is_open(here, conn)) call(item.node, [conn](Node& node, Context& ctx) { node.on_connected(ctx, conn); });
        return;
      case Handoff::kClosed:
        if (!is_open(here, conn)) return;
        loops_[here]->conns.erase(conn);
        call(item.node, [conn](Node& node, Context& ctx) { node.on_disconnect(ctx, conn, DisconnectReason::closed_by_peer); });
        return;
    }
  }

  ConnId connect(NodeId from, NodeId to) {
    const ConnId a = next_conn_++;
    const ConnId b = next_conn_++;
    const size_t here = slots_[from].loop;
    Loop& loop = *loops_[here];
    if (to >= slots_.size() || !slots_[to].node) {
      loop.conns.emplace(a, Conn{from, kNoConn, to, false, nullptr});
      asio::post(loop.io, [this, from, a] {
        loop_of(from).conns.erase(a);
        call(from, [a](Node& node, Context& ctx) { node.on_disconnect(ctx, a, DisconnectReason::refused); });
      });
      return a;
    }
    loop.conns.emplace(a, Conn{from, b, to, true, nullptr});
    const size_t there = slots_[to].loop;
    if (here != there) {
      // The accepting end is made on its own loop, before any frame `from` sends on `a` (handed
      // after this, in order): accepted there, then connected here.
      hand_off(here, there, Handoff{Handoff::kAccept, to, b, from, a, 0, {}});
      return a;
    }
    loop.conns.emplace(b, Conn{to, a, from, true, nullptr});
    asio::post(loop.io, [this, here, from, to, a, b] {
      if (!is_open(here, a) || !is_open(here, b)) return;
      call(to, [b, from](Node& node, Context& ctx) { node.on_accept(ctx, b, from); });
      if (is_open(here, a)) call(from, [a](Node& node, Context& ctx) { node.on_connected(ctx, a); });
    });
    return a;
  }
  bool is_open(size_t loop, ConnId id) const {
    const auto& conns = loops_[loop]->conns;
    const auto it = conns.find(id);
    return it != conns.end() && it->second.open;
  }
  void send(NodeId from, ConnId id, Bytes frame) {
    const size_t here = slots_[from].loop;
    auto& conns = loops_[here]->conns;
    const auto it = conns.find(id);
    if (it == conns.end() || !it->second.open) return;
    if (it->second.device) {
      to_device(it->second.device, std::move(frame));
      return;
    }
    const ConnId to_conn = it->second.peer_conn;
    const NodeId to = it->second.peer;
    const size_t there = slots_[to].loop;
    if (StageTrace::enabled()) trace_.note_frame(StageTrace::kServerRead, frame);
    // Only the device loop holds its sessions' reads; the store loop's frames count in the
    // backlog and take effect at the device loop's next send.
    if (++backlog_frames_ > kBacklogHoldFrames && here == kDeviceLoop && !lean_ws_.reads_held) {
      lean_ws_.reads_held = true;
      reads_held_now_.store(true, std::memory_order_relaxed);
      reads_held_count_++;
    }
    if (here != there) {
      hand_off(here, there, Handoff{Handoff::kFrame, to, to_conn, kNoNode, kNoConn, 0, std::move(frame)});
      return;
    }
    asio::post(loops_[here]->io, [this, here, to, to_conn, frame = std::move(frame)] {
      on_backlog_frame_handled(here);
      if (!is_open(here, to_conn)) return;
      call(to, [to_conn, &frame](Node& node, Context& ctx) { node.on_frame(ctx, to_conn, frame); });
    });
  }
  // A frame between nodes was taken off loop `here`'s queue: past the low mark, the device
  // sessions read again (on the device loop; from the store loop by one posted release at a time,
  // and only while the reads are held).
  void on_backlog_frame_handled(size_t here) {
    if (--backlog_frames_ > kBacklogReleaseFrames) return;
    if (here == kDeviceLoop) {
      if (lean_ws_.reads_held) release_device_reads();
      return;
    }
    if (!reads_held_now_.load(std::memory_order_relaxed) || release_posted_.exchange(true)) return;
    asio::post(loops_[kDeviceLoop]->io, [this] {
      release_posted_.store(false);
      if (backlog_frames_ <= kBacklogReleaseFrames && lean_ws_.reads_held) release_device_reads();
    });
  }
  void release_device_reads() {
    reads_held_now_.store(false, std::memory_order_relaxed);
    lean_ws_.release_reads();
  }
  void close(NodeId from, ConnId id) {
    const size_t here = slots_[from].loop;
    auto& conns = loops_[here]->conns;
    const auto it = conns.find(id);
    if (it == conns.end() || !it->second.open) return;
    it->second.open = false;
    if (it->second.device) {
      auto device = it->second.device;
      conns.erase(it);
      if (held_.empty()) device->close();
      else held_.push_back(Held{0, std::move(device), {}, true, -1});  // after the frames held before it
      return;
    }
    const ConnId peer_conn = it->second.peer_conn;
    const NodeId peer = it->second.peer;
    const size_t there = slots_[peer].loop;
    conns.erase(it);
    // After every frame sent before it: the peer gets them all, then the close.
    if (here != there) {
      hand_off(here, there, Handoff{Handoff::kClosed, peer, peer_conn, kNoNode, kNoConn, 0, {}});
      return;
    }
    asio::post(loops_[here]->io, [this, here, peer, peer_conn] {
      if (!is_open(here, peer_conn)) return;
      loops_[here]->conns.erase(peer_conn);
      call(peer, [peer_conn](Node& node, Context& ctx) { node.on_disconnect(ctx, peer_conn, DisconnectReason::closed_by_peer); });
    });
  }
  // A frame to a device leaves the process: it may tell of a commit (an ack, a delivered
  // message), so it waits for the group commit batch that covers every commit made so far
  // (live/group_commit.h). Held frames go out in the order they were sent; tickets only grow, so
  // one FIFO keeps every connection's order.
  void on_ws_rejected(std::string_view why) override {
    std::fprintf(stderr, "bench server: device connection closed: %.*s\n", static_cast<int>(why.size()), why.data());
  }

  // On the device loop. With one loop the ticket is the group commit's own; with two, every
  // commit this frame may follow from reached the device loop through a frame from the store
  // loop, whose ticket store_ticket_seen_ already covers (hand_off).
  void to_device(const std::shared_ptr<live::LeanWsSession>& device, Bytes frame) {
    const uint64_t ticket = single_loop() ? group_commit_.sync_point() : store_ticket_seen_;
    const int64_t traced_sent_ns = StageTrace::enabled() ? StageTrace::deliver_sent_ns(frame) : -1;
    trace_.note(StageTrace::kDeliverDecided, traced_sent_ns);
    if (held_.empty() && ticket <= durable_on_device_loop()) {
      device->send(std::move(frame));
      trace_.note(StageTrace::kDeliverWritten, traced_sent_ns);
      return;
    }
    held_.push_back(Held{ticket, device, std::move(frame), false, traced_sent_ns});
  }
  bool single_loop() const { return store_loop_ == kDeviceLoop; }
  uint64_t durable_on_device_loop() const {
    return single_loop() ? group_commit_.durable() : durable_published_.load(std::memory_order_acquire);
  }
  // On the store loop, after every group commit batch.
  void on_durable(uint64_t durable) {
    if (counters_ != nullptr) {
      const live::GroupCommitStats& s = group_commit_.stats();
      counters_->batches.store(s.batches, std::memory_order_relaxed);
      counters_->files_synced.store(s.files_synced, std::memory_order_relaxed);
      counters_->syncs_deferred.store(s.syncs_deferred, std::memory_order_relaxed);
      counters_->sync_ns.store(s.sync_ns, std::memory_order_relaxed);
      if (s.files_synced > published_files_synced_) {
        const uint64_t files = s.files_synced - published_files_synced_;
        const double mean_ns = static_cast<double>(s.sync_ns - published_sync_ns_) / static_cast<double>(files);
        counters_->fsync_buckets[fsync_bucket_of(mean_ns)].fetch_add(files, std::memory_order_relaxed);
        published_files_synced_ = s.files_synced;
        published_sync_ns_ = s.sync_ns;
        const double log_ns = std::log(std::max(1.0, mean_ns));
        if (previous_log_fsync_ns_.has_value()) {
          const double x = *previous_log_fsync_ns_;
          const auto add = [](std::atomic<double>& sum, double v) { sum.store(sum.load(std::memory_order_relaxed) + v, std::memory_order_relaxed); };
          add(counters_->fsync_pair_x, x);
          add(counters_->fsync_pair_y, log_ns);
          add(counters_->fsync_pair_xx, x * x);
          add(counters_->fsync_pair_yy, log_ns * log_ns);
          add(counters_->fsync_pair_xy, x * log_ns);
          counters_->fsync_pairs.fetch_add(1, std::memory_order_relaxed);
        }
        previous_log_fsync_ns_ = log_ns;
      }
    }
    if (single_loop()) {
      release_held(durable);
      return;
    }
    durable_published_.store(durable, std::memory_order_release);
    asio::post(loops_[kDeviceLoop]->io, [this] { release_held(durable_published_.load(std::memory_order_acquire)); });
  }
  // On the device loop.
  void release_held(uint64_t durable) {
    while (!held_.empty() && held_.front().ticket <= durable) {
      Held& front = held_.front();
      if (front.close) front.device->close();
      else front.device->send(std::move(front.frame));
      trace_.note(StageTrace::kDeliverWritten, front.traced_sent_ns);
      held_.pop_front();
    }
  }

  TimerId set_timer(NodeId node, int64_t delay_ns, uint64_t tag) {
    const TimerId id = next_timer_++;
    Loop& loop = loop_of(node);
    if (delay_ns <= 0) {
      // "The loop's next turn" (the queue's zero commit window and linger, once per batch): a
      // posted handler, behind every handler already queued, as a zero steady_timer would run,
      // without arming the reactor's timerfd twice (timerfd_settime was 9 % of the server's CPU
      // at 3,000 msgs/s with zero timers). Cancelling erases the id; the handler then does nothing.
      loop.timers.emplace(id, nullptr);
      asio::post(loop.io, [this, &loop, id, node, tag] {
        if (loop.timers.erase(id) == 0) return;
        call(node, [tag](Node& n, Context& ctx) { n.on_timer(ctx, tag); });
      });
      return id;
    }
    auto timer = std::make_shared<asio::steady_timer>(loop.io, std::chrono::nanoseconds(std::max<int64_t>(delay_ns, 0)));
    loop.timers.emplace(id, timer);
    timer->async_wait([this, &loop, id, node, tag](error_code error) {
      if (error || loop.timers.erase(id) == 0) return;
      call(node, [tag](Node& n, Context& ctx) { n.on_timer(ctx, tag); });
    });
    return id;
  }
  void cancel_timer(NodeId node, TimerId id) {
    auto& timers = loop_of(node).timers;
    const auto it = timers.find(id);
    if (it == timers.end()) return;
    if (it->second) it->second->cancel();  // null: a posted zero-delay timer
    timers.erase(it);
  }
  sqlite3* db(NodeId id) {
    Slot& slot = slots_[id];
    // The group commit is the store loop's: a node with a database must run there.
    MSGSIM_ASSERT_EQ(slot.loop, store_loop_);
    if (slot.db == nullptr) {
      // Through the group commit shim: the node's synchronous=FULL commits are synced in
      // batches off the loop, and device frames wait for them (to_device).
      Result<sqlite3*> db = group_commit_.open(dir_ + "/node-" + std::to_string(id) + ".db");
      MSGSIM_ASSERT(db.ok(), db.ok() ? std::string() : db.error().message);
      // Checkpoints every kLiveWalCheckpointPages, as msgsim live run's host has them
      // (live_host.cpp), not SQLite's default 1,000 pages (when they ran whole on the loop, the
      // bar command, load 2.5-5, alternated: 74-94 checkpoints a rate -> 14-21, 25,000/s
      // 12,206 / 13,509 -> 19,456 / 21,893 delivered/s, server loop 54 / 39 -> 40 / 40 us a
      // message); the bulk of each on the checkpointer's thread, its tail on the store loop.
      const std::string path = dir_ + "/node-" + std::to_string(id) + ".db";
      const Status attached = checkpointer_->attach(*db, path);
      MSGSIM_ASSERT(attached.ok(), attached.ok() ? std::string() : attached.error().message);
      slot.db = *db;
    }
    return slot.db;
  }
  void do_accept() {
    acceptor_->async_accept([this](error_code error, tcp::socket socket) {
      if (error == asio::error::operation_aborted) return;
      if (!error) std::make_shared<live::LeanWsSession>(lean_ws_, std::move(socket))->start();
      do_accept();
    });
  }

  struct Held {
    uint64_t ticket;  // the group commit batch it waits for
    std::shared_ptr<live::LeanWsSession> device;
    Bytes frame;
    bool close;  // the node closed the connection after the frames before it
    int64_t traced_sent_ns;  // a traced Deliver's send time (StageTrace), else -1
  };

  std::string dir_;
  std::vector<std::unique_ptr<Loop>> loops_;
  size_t store_loop_;  // kDeviceLoop with one loop
  // The store loop's (its io_context; its worker thread only fsyncs and posts back).
  live::GroupCommit group_commit_;
  // The nodes' checkpoints (live/wal_checkpointer.h): its completions and tails on the store loop.
  std::unique_ptr<live::WalCheckpointer> checkpointer_;
  // Set up before the loops run, then only read: which loop runs each node.
  std::vector<Slot> slots_;
  // The hand-off's two directions, by receiving loop (Channel says which thread owns what).
  Channel channels_[SharedGroupCommitCounters::kServerLoopsMax];
  // Shared by both loops: connection and timer ids (unique across the process), and the frames
  // between nodes posted and not yet handled, with the device loop's "reads are held" mirrored
  // for the store loop and at most one release posted from there at a time.
  std::atomic<ConnId> next_conn_{1};
  std::atomic<TimerId> next_timer_{1};
  std::atomic<size_t> backlog_frames_{0};
  std::atomic<bool> reads_held_now_{false};
  std::atomic<bool> release_posted_{false};
  // Published by the store loop after each batch (two loops): the device loop's durable().
  std::atomic<uint64_t> durable_published_{0};
  StageTrace trace_;  // its own mutex
  // The device loop's.
  live::LeanWsShared lean_ws_{.handler = this, .message_bytes_max = 1 << 20, .outbound_frames_max = kDeviceOutboxMax, .read_chunk_bytes = 64 * 1024, .read_buffer = {}, .reads_held = false, .held_readers = {}, .ring = nullptr};
  std::unique_ptr<live::LeanWsRing> device_ring_;  // after lean_ws_: ends before it
  std::deque<Held> held_;
  uint64_t store_ticket_seen_ = 0;  // the largest ticket a frame from the store loop carried
  uint64_t reads_held_count_ = 0;   // times the device reads were held for the backlog
  std::unique_ptr<tcp::acceptor> acceptor_;
  NodeId chat_server_ = kNoNode;
  // The store loop's.
  SharedGroupCommitCounters* counters_ = nullptr;
  uint64_t published_files_synced_ = 0, published_sync_ns_ = 0;  // at the last fsync_buckets update
  std::optional<double> previous_log_fsync_ns_;  // the last batch's, for fsync_pair_*
};

// The traffic part's users: run r (one per offered rate) has its own 2 x pairs users, senders
// first. The idle part's users are u1000000 and up.
std::string traffic_user(uint32_t run, uint32_t index) { return "u" + std::to_string(run * 10'000 + index); }
constexpr uint32_t kIdleFirstUser = 1'000'000;

// Node ids of the bench system.
constexpr NodeId kRegistry = 0;
constexpr NodeId kQueue = 1;
constexpr NodeId kStorage = 2;
constexpr NodeId kPush = 3;
constexpr NodeId kChatServer = 4;

// The server's batching delays the bench runs with. The queue's (ChatTuning::queue_commit_window_ns
// / queue_linger_ns, `--queue-commit-window-us` and `--queue-linger-us`) are 0 by default (the
// loop's next turn), not the simulator's 250 us and 1 ms: here the group commit (live/
// group_commit.h) already makes one fsync cover every commit of a batch, so the queue's own
// timers only added 1.25 ms to every message at low load (MSGSIM_BENCH_TRACE showed the Records
// reaching the storage 1.4 ms after the send, 0.2 ms with both 0), and a loop turn still batches
// every produce that arrived in one wakeup. The storage's (ChatTuning::storage_commit_window_ns,
// `--storage-commit-window-us`) is the default, 0, as in the simulator; negative commits each
// Records frame alone, as the storage did before its group commit. The plan's twin models all
// three, so the JSON reports them.
struct ServerBatching {
  int64_t commit_window_ns = 0;
  int64_t linger_ns = 0;
  int64_t storage_commit_window_ns = chat::ChatTuning{}.storage_commit_window_ns;
};

// Storage fans a message out to the devices of the users the configuration lists (one device
// each here), so the configuration names every user the traffic part will use.
chat::ChatConfig bench_config(uint32_t traffic_runs, uint32_t pairs, const ServerBatching& batching) {
  chat::ChatConfig config;
  config.tuning.queue_commit_window_ns = batching.commit_window_ns;
  config.tuning.queue_linger_ns = batching.linger_ns;
  config.tuning.storage_commit_window_ns = batching.storage_commit_window_ns;
  for (uint32_t run = 1; run <= traffic_runs; ++run) {
    for (uint32_t i = 0; i < 2 * pairs; ++i) config.users.push_back(chat::UserPlan{traffic_user(run, i), 1, {}});
  }
  config.topology.registries = {kRegistry};
  config.topology.queues = {kQueue};
  config.topology.storages = {kStorage};
  config.topology.push = {kPush};
  config.topology.chat_servers = {kChatServer};
  config.topology.partitions = 16;
  return config;
}

// Runs one server loop until killed: its figures published to `counters` (none: not published)
// every kLoopCpuPublishNs from its own thread, its turns counted.
void run_server_loop(asio::io_context& io, SharedGroupCommitCounters::Loop* counters) {
  if (counters == nullptr) {
    io.run();
    return;
  }
  asio::steady_timer loop_cpu_timer(io);
  std::function<void(error_code)> publish_loop_cpu = [&](error_code error) {
    if (error) return;
    counters->cpu_ns.store(static_cast<uint64_t>(thread_cpu_ns()), std::memory_order_relaxed);
    const ThreadSchedule schedule = thread_schedule();
    counters->runqueue_wait_ns.store(schedule.runqueue_wait_ns, std::memory_order_relaxed);
    counters->involuntary_switches.store(schedule.involuntary_switches, std::memory_order_relaxed);
    loop_cpu_timer.expires_after(std::chrono::nanoseconds(kLoopCpuPublishNs));
    loop_cpu_timer.async_wait(publish_loop_cpu);
  };
  publish_loop_cpu({});
  run_counting_turns(io, counters->turn_buckets, SharedGroupCommitCounters::kLoopTurnBuckets, counters->turns);
}

// Runs the server side until killed; writes its device port to `port_fd` first. `server_loops`
// 1: every node on one loop; 2: the chat server on the device loop (the main thread), the other
// nodes and the group commit on the store loop (a second thread), see BenchHost.
[[noreturn]] void run_server_process(const std::string& dir, uint32_t traffic_runs, uint32_t pairs, const ServerBatching& batching,
                                     uint32_t server_loops, int port_fd, SharedGroupCommitCounters* counters) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  MSGSIM_ASSERT(server_loops >= 1 && server_loops <= SharedGroupCommitCounters::kServerLoopsMax, std::to_string(server_loops));
  static const chat::ChatConfig config = bench_config(traffic_runs, pairs, batching);
  asio::io_context device_io(1);
  std::optional<asio::io_context> store_io;
  std::vector<asio::io_context*> ios{&device_io};
  if (server_loops == 2) ios.push_back(&store_io.emplace(1));
  BenchHost host(ios, dir);
  const size_t store = host.store_loop();
  host.publish_group_commit_to(counters);
  host.add_node(kRegistry, std::make_unique<chat::RegistryNode>(config), store);
  host.add_node(kQueue, std::make_unique<chat::QueueNode>(config), store);
  host.add_node(kStorage, std::make_unique<chat::StorageNode>(config), store);
  host.add_node(kPush, std::make_unique<chat::PushNode>(config), store);
  host.add_node(kChatServer, std::make_unique<chat::ChatServerNode>(config), BenchHost::kDeviceLoop);
  host.start_all();
  // Before the port: the bench reads it once the port says the server is up.
  if (counters != nullptr) {
    counters->loop_count.store(static_cast<uint32_t>(ios.size()), std::memory_order_relaxed);
    counters->device_ring.store(host.device_sessions_on_ring() ? 1 : 0, std::memory_order_relaxed);
  }
  const auto port = host.listen_devices(kChatServer);
  const std::string line = port.ok() ? std::to_string(*port) + "\n" : "0\n";
  if (!port.ok()) std::fprintf(stderr, "%s\n", port.error().message.c_str());
  (void)!::write(port_fd, line.data(), line.size());
  ::close(port_fd);
  // MSGSIM_BENCH_LOG: every node's one-line state each second, to see where a message stops,
  // each from its own loop.
  const bool describe = std::getenv("MSGSIM_BENCH_LOG") != nullptr;
  struct Describer {
    asio::steady_timer timer;
    std::function<void(error_code)> tick;
  };
  std::vector<std::unique_ptr<Describer>> describers;
  for (size_t loop = 0; describe && loop < ios.size(); ++loop) {
    auto& d = *describers.emplace_back(std::make_unique<Describer>(Describer{asio::steady_timer(*ios[loop]), {}}));
    d.tick = [&host, &d, loop, store](error_code error) {
      if (error) return;
      for (NodeId id : {kQueue, kStorage, kChatServer}) {
        if (host.runs_on(id, loop)) std::fprintf(stderr, "node %u: %s\n", id, host.describe(id).c_str());
      }
      if (loop == BenchHost::kDeviceLoop) std::fprintf(stderr, "%s\n", host.describe_devices().c_str());
      if (loop == store) std::fprintf(stderr, "%s\n", host.describe_group_commit().c_str());
      d.timer.expires_after(std::chrono::seconds(1));
      d.timer.async_wait(d.tick);
    };
    d.tick({});
  }
  asio::steady_timer trace_timer(device_io);
  std::function<void(error_code)> report_trace = [&](error_code error) {
    if (error) return;
    host.report_trace();
    static const long interval_s = std::getenv("MSGSIM_BENCH_TRACE_INTERVAL_S") ? std::max(1L, std::atol(std::getenv("MSGSIM_BENCH_TRACE_INTERVAL_S"))) : 1L;
    trace_timer.expires_after(std::chrono::seconds(interval_s));
    trace_timer.async_wait(report_trace);
  };
  if (StageTrace::enabled()) report_trace({});
  std::optional<std::thread> store_thread;
  if (store_io) {
    // The store loop waits for frames from the device loop when it has nothing else to do.
    store_thread.emplace([&store_io, counters] {
      auto keep_running = asio::make_work_guard(*store_io);
      run_server_loop(*store_io, counters != nullptr ? &counters->loops[1] : nullptr);
    });
  }
  run_server_loop(device_io, counters != nullptr ? &counters->loops[0] : nullptr);
  std::_Exit(0);
}

// ---------------------------------------------------------------------------------------------
// Client load processes

// The load process's send window on one io_uring (liburing), not Asio's epoll loop. Why (strace
// and perf of the load process at 25,000 msg/s, session 14): each message cost it a sendto, and
// for each of its two reads (the ack, the Deliver) an epoll_ctl (Asio's async_wait re-arms the
// socket every time, which also reported it writable again, a spurious event) and a recvfrom,
// plus its share of epoll_wait: ~5 system calls a message at ~1 us each on this PVM guest before
// any of the network's work. On the ring a tick's sends go to the kernel in one io_uring_enter,
// every connection keeps a recv pending, and one io_uring_enter submits the re-armed recvs and
// waits for the next completions (IORING_ENTER_EXT_ARG's timeout: the next tick).
class BenchRing {
 public:
  // Enough for every connection's pending recv and send: a completion is never dropped
  // (IORING_FEAT_NODROP), and a full submission queue is submitted before taking more.
  explicit BenchRing(unsigned entries) {
    const int error = ::io_uring_queue_init(entries, &ring_, 0);
    MSGSIM_ASSERT(error == 0, std::string("io_uring_queue_init: ") + std::strerror(-error));
  }
  ~BenchRing() { ::io_uring_queue_exit(&ring_); }
  BenchRing(const BenchRing&) = delete;
  BenchRing& operator=(const BenchRing&) = delete;

  io_uring_sqe* sqe() {
    io_uring_sqe* entry = ::io_uring_get_sqe(&ring_);
    if (entry == nullptr) {
      ::io_uring_submit(&ring_);
      entry = ::io_uring_get_sqe(&ring_);
    }
    MSGSIM_ASSERT(entry != nullptr, "the submission queue stays full after a submit");
    return entry;
  }
  // Submits what is queued, then waits for a completion at most `timeout_ns` (0: does not wait).
  void submit_and_wait(int64_t timeout_ns) {
    io_uring_cqe* cqe = nullptr;
    if (timeout_ns <= 0) {
      ::io_uring_submit(&ring_);
      return;
    }
    __kernel_timespec timeout{.tv_sec = timeout_ns / kNanosPerSecond, .tv_nsec = timeout_ns % kNanosPerSecond};
    const int result = ::io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &timeout, nullptr);
    MSGSIM_ASSERT(result >= 0 || result == -ETIME || result == -EINTR, std::string("io_uring_submit_and_wait_timeout: ") + std::strerror(-result));
  }
  // Calls `on(user_data, res)` for every completion there is, then frees their slots.
  template <typename On>
  unsigned reap(On on) {
    unsigned head = 0, count = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      on(cqe->user_data, cqe->res);
      count++;
    }
    ::io_uring_cq_advance(&ring_, count);
    return count;
  }

 private:
  io_uring ring_{};
};

// One device's WebSocket connection, bound to a source address in 127.0.0.0/8: the client side
// of live/lean_websocket.h, without Beast's websocket::stream. Why (perf of the load process at
// 25,000 msg/s, session 13): Beast's composed read and write operations were ~20 % of the load
// process's samples (their handler allocations, executor copies and work guards), and every
// read of a message began with a speculative recv that failed with EAGAIN before the wait. Here
// a readable socket is read into one buffer shared by every client of the process, every whole
// frame in it is handled at once, and a send is written at once (non-blocking, one write per
// frame as before; what the kernel does not take waits for writability, in order).
// The handshake is RFC 6455's client side: a GET with a fresh Sec-WebSocket-Key, a 101 answer
// with the matching Sec-WebSocket-Accept. Frames out are masked (a fresh key each), frames in are
// read by WsFrameReader as a server's (unmasked; fragments, ping answered, close ends it).
class BenchClient : public std::enable_shared_from_this<BenchClient> {
 public:
  using FrameHandler = std::function<void(BenchClient&, chat::Frame&)>;
  BenchClient(asio::io_context& io, std::string user, FrameHandler on_frame)
      : socket_(io), user_(std::move(user)), device_(user_ + ".d1"), on_frame_(std::move(on_frame)) {}

  // `done(ok)` once welcomed, or failed.
  void start(const asio::ip::address_v4& source, uint16_t port, std::function<void(bool)> done) {
    done_ = std::move(done);
    error_code error;
    socket_.open(tcp::v4(), error);
    const int one = 1;
    if (!error) ::setsockopt(socket_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (!error) socket_.bind(tcp::endpoint(source, 0), error);
    if (error) return finish(false, "bind " + source.to_string() + ": " + error.message());
    socket_.set_option(tcp::no_delay(true), error);
    // Once: Asio's non_blocking(true) is an ioctl on every call (live/lean_websocket.cpp).
    if (!error) socket_.non_blocking(true, error);
    if (error) return finish(false, "socket options: " + error.message());
    auto self = shared_from_this();
    socket_.async_connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), port), [self](error_code e) {
      if (e) return self->finish(false, "connect: " + e.message());
      beast::websocket::detail::sec_ws_key_type key;
      beast::websocket::detail::make_sec_ws_key(key);
      beast::websocket::detail::make_sec_ws_accept(self->expected_accept_, beast::string_view(key.data(), key.size()));
      const std::string request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: " + std::string(key.data(), key.size()) +
                                  "\r\nSec-WebSocket-Version: 13\r\n\r\n";
      self->out_.assign(request.begin(), request.end());
      self->handshaking_ = true;
      self->write_out();
      self->wait_readable();
    });
  }
  void send(const Bytes& frame) {
    if (failed_) return;
    append_masked_ws_frame(out_, live::WsOpcode::binary, frame, next_masking_key());
    if (!handshaking_ && !writing_) write_out();
  }
  // From now on (welcomed, nothing being written) the connection's traffic goes through `ring`:
  // the descriptor leaves Asio (its loop must not run again for this client) and a recv waits on
  // the ring. The ring's completions come back through on_ring_completion; the ring must go
  // before the client.
  void use_ring(BenchRing& ring) {
    MSGSIM_ASSERT(welcomed_ && !writing_ && !handshaking_, "a client moves to the ring once welcomed, with nothing in flight");
    if (failed_) return;
    error_code error;
    ring_fd_ = socket_.release(error);
    if (error) return finish(false, "release: " + error.message());
    // Blocking: the ring's recv and send wait in the kernel (poll-armed) instead of failing with
    // EAGAIN as they would on a descriptor in non-blocking mode.
    const int flags = ::fcntl(ring_fd_, F_GETFL);
    if (flags < 0 || ::fcntl(ring_fd_, F_SETFL, flags & ~O_NONBLOCK) < 0) return finish(false, std::string("fcntl: ") + std::strerror(errno));
    ring_ = &ring;
    ring_recv();
    if (!out_.empty()) write_out();
  }
  // A completion of this client's recv (`send` false) or send.
  void on_ring_completion(bool send, int result) {
    if (send) {
      writing_ = false;
      if (failed_) return;
      if (result < 0) return finish(false, std::string("write: ") + std::strerror(-result));
      ring_written_ += static_cast<size_t>(result);
      if (ring_written_ < wire_.size()) return ring_send();  // the rest of a short write
      wire_.clear();
      ring_written_ = 0;
      write_out();
      return;
    }
    if (failed_) return;
    if (result <= 0) return finish(false, result == 0 ? std::string("read: end of stream") : std::string("read: ") + std::strerror(-result));
    if (!take(std::span<uint8_t>(ring_read_.data(), static_cast<size_t>(result)))) return;
    ring_recv();
  }
  ~BenchClient() {
    if (ring_fd_ >= 0) ::close(ring_fd_);
  }
  // The ring's user_data of an operation: the client's address, the low bit saying send.
  static BenchClient* ring_client(uint64_t user_data) { return reinterpret_cast<BenchClient*>(user_data & ~uint64_t{1}); }
  static bool ring_is_send(uint64_t user_data) { return (user_data & 1) != 0; }
  const std::string& user() const { return user_; }
  const std::string& device() const { return device_; }
  bool welcomed() const { return welcomed_; }
  uint64_t acked = 0;
  uint64_t in_flight = 0;

 private:
  static constexpr size_t kReadChunkBytes = 64 * 1024;
  static constexpr size_t kUpgradeAnswerBytesMax = 8 * 1024;
  static constexpr size_t kMessageBytesMax = 1 << 20;

  // Every client of the process reads into this one (the load process is single-threaded).
  static std::vector<uint8_t>& read_buffer() {
    static std::vector<uint8_t> buffer(kReadChunkBytes);
    return buffer;
  }
  // The masking keys (RFC 6455 asks for unpredictable ones; they guard proxies, and a load
  // generator needs no more than a fresh key per frame): xorshift64 from the clock.
  static uint32_t next_masking_key() {
    static uint64_t state = static_cast<uint64_t>(monotonic_now_ns()) | 1;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<uint32_t>(state >> 32);
  }

  void finish(bool ok, const std::string& why) {
    if (!ok) {
      failed_ = true;
      error_code ignored;
      socket_.close(ignored);
      if (ring_fd_ >= 0) ::shutdown(ring_fd_, SHUT_RDWR);  // ends the ring's operations; closed with the client
    }
    if (!ok && failures_reported_++ == 0) std::fprintf(stderr, "bench client %s: %s\n", device_.c_str(), why.c_str());
    if (done_) {
      auto done = std::move(done_);
      done_ = nullptr;
      done(ok);
    }
  }
  bool fail(const std::string& why) {
    finish(false, why);
    return false;
  }
  void wait_readable() {
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code error) {
      if (self->failed_) return;
      if (error) return self->finish(false, "read: " + error.message());
      self->on_readable();
    });
  }
  void on_readable() {
    std::vector<uint8_t>& buffer = read_buffer();
    for (;;) {
      error_code error;
      const size_t n = socket_.read_some(asio::buffer(buffer.data(), buffer.size()), error);
      if (error == asio::error::would_block || error == asio::error::try_again) break;
      if (error) return finish(false, "read: " + error.message());
      if (!take(std::span<uint8_t>(buffer.data(), n))) return;
      // A full buffer may have left bytes in the socket: read on before waiting again.
      if (n < buffer.size()) break;
    }
    wait_readable();
  }
  // The bytes just read, after any kept from the last read; false once the client failed.
  bool take(std::span<uint8_t> data) {
    if (!partial_.empty()) {
      partial_.insert(partial_.end(), data.begin(), data.end());
      data = partial_;
    }
    size_t consumed = 0;
    if (handshaking_) {
      const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
      const size_t end = text.find("\r\n\r\n");
      if (end == std::string_view::npos) {
        if (data.size() > kUpgradeAnswerBytesMax) return fail("handshake: an answer header past 8 KiB");
        if (partial_.empty()) partial_.assign(data.begin(), data.end());
        return true;
      }
      const std::string_view header = text.substr(0, end + 2);
      const std::string_view accept(expected_accept_.data(), expected_accept_.size());
      if (header.rfind("HTTP/1.1 101 ", 0) != 0 || header.find("\r\nSec-WebSocket-Accept: " + std::string(accept) + "\r\n") == std::string_view::npos) {
        return fail("handshake: not a WebSocket upgrade answer: " + std::string(header.substr(0, header.find('\r'))));
      }
      handshaking_ = false;
      consumed = end + 4;
      send(chat::encode_as(chat::Hello{user_, device_, "token:" + device_}));
      if (failed_) return false;
    }
    auto parsed = reader_.parse(data.subspan(consumed), [this](const live::WsInbound& inbound) { handle(inbound); });
    if (!parsed.ok()) return fail("read: " + parsed.error().message);
    if (failed_) return false;
    consumed += *parsed;
    if (!partial_.empty()) {
      partial_.erase(partial_.begin(), partial_.begin() + static_cast<std::ptrdiff_t>(consumed));
    } else if (consumed < data.size()) {
      partial_.assign(data.begin() + static_cast<std::ptrdiff_t>(consumed), data.end());
    }
    return true;
  }
  void handle(const live::WsInbound& inbound) {
    if (failed_) return;
    switch (inbound.kind) {
      case live::WsInbound::Kind::message: {
        auto frame = chat::decode(inbound.payload);
        if (!frame.ok()) return;
        if (std::holds_alternative<chat::Welcome>(*frame)) {
          welcomed_ = true;
          finish(true, "");
        } else if (on_frame_) {
          on_frame_(*this, *frame);
        }
        return;
      }
      case live::WsInbound::Kind::ping:
        append_masked_ws_frame(out_, live::WsOpcode::pong, inbound.payload, next_masking_key());
        if (!writing_) write_out();
        return;
      case live::WsInbound::Kind::pong:
        return;
      case live::WsInbound::Kind::close:
        return finish(false, "closed by the server (code " + std::to_string(inbound.close_code) + ")");
    }
  }
  void ring_recv() {
    io_uring_sqe* sqe = ring_->sqe();
    ::io_uring_prep_recv(sqe, ring_fd_, ring_read_.data(), ring_read_.size(), 0);
    ::io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(this));
  }
  void ring_send() {
    writing_ = true;
    io_uring_sqe* sqe = ring_->sqe();
    ::io_uring_prep_send(sqe, ring_fd_, wire_.data() + ring_written_, wire_.size() - ring_written_, MSG_NOSIGNAL);
    ::io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(this) | 1);
  }
  // Writes what is queued, from `written_`, without blocking; the rest after writability. On the
  // ring: what is queued becomes one send (submitted with the loop's next io_uring_enter), and
  // frames queued while it is in flight follow in the next one.
  void write_out() {
    if (ring_ != nullptr) {
      if (writing_ || out_.empty() || failed_) return;
      wire_.swap(out_);
      out_.clear();
      ring_written_ = 0;
      return ring_send();
    }
    while (written_ < out_.size()) {
      error_code error;
      const size_t n = socket_.write_some(asio::buffer(out_.data() + written_, out_.size() - written_), error);
      if (error == asio::error::would_block || error == asio::error::try_again) {
        writing_ = true;
        socket_.async_wait(tcp::socket::wait_write, [self = shared_from_this()](error_code e) {
          self->writing_ = false;
          if (self->failed_) return;
          if (e) return self->finish(false, "write: " + e.message());
          self->write_out();
        });
        return;
      }
      if (error) return finish(false, "write: " + error.message());
      written_ += n;
    }
    out_.clear();
    written_ = 0;
  }

  tcp::socket socket_;
  live::WsFrameReader reader_{kMessageBytesMax, live::WsFramesFrom::server};
  beast::websocket::detail::sec_ws_accept_type expected_accept_;
  std::string user_, device_;
  FrameHandler on_frame_;
  std::function<void(bool)> done_;
  Bytes out_;                // frames not yet written, from written_
  size_t written_ = 0;
  // On the ring (use_ring): the descriptor, the send in flight and how much of it is written,
  // what the pending recv reads into.
  BenchRing* ring_ = nullptr;
  int ring_fd_ = -1;
  Bytes wire_;
  size_t ring_written_ = 0;
  std::array<uint8_t, 4096> ring_read_{};
  Bytes partial_;            // the start of a frame (or of the upgrade answer) not yet complete
  bool handshaking_ = false;
  bool writing_ = false;     // waiting for writability
  bool failed_ = false;
  bool welcomed_ = false;
  int failures_reported_ = 0;
};

void write_line(int fd, const std::string& line) { (void)!::write(fd, line.data(), line.size()); }

// Opens `count` idle devices (users first_user..), at most `concurrent` handshakes at once,
// reports "ready <ok> <failed>" on `report_fd`, then heartbeats each every interval until killed.
[[noreturn]] void run_idle_clients(uint16_t port, asio::ip::address_v4 source, uint32_t first_user, uint32_t count,
                                   int64_t heartbeat_interval_ns, int report_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  asio::io_context io(1);
  std::vector<std::shared_ptr<BenchClient>> clients;
  clients.reserve(count);
  uint32_t started = 0, finished = 0, failed = 0;
  constexpr uint32_t kConcurrentHandshakes = 256;
  std::function<void()> start_next = [&] {
    while (started < count && started - finished < kConcurrentHandshakes) {
      auto client = std::make_shared<BenchClient>(io, "u" + std::to_string(first_user + started), nullptr);
      clients.push_back(client);
      ++started;
      client->start(source, port, [&](bool ok) {
        ++finished;
        failed += ok ? 0 : 1;
        if (finished == count) write_line(report_fd, "ready " + std::to_string(count - failed) + " " + std::to_string(failed) + "\n");
        asio::post(io, start_next);
      });
    }
  };
  start_next();
  // Heartbeats: each device once per interval, spread evenly over it in 100 ms ticks.
  constexpr int64_t kTickNs = 100 * kNanosPerMilli;
  const uint64_t ticks_per_interval = static_cast<uint64_t>(std::max<int64_t>(1, heartbeat_interval_ns / kTickNs));
  asio::steady_timer tick(io);
  uint64_t tick_number = 0;
  const Bytes heartbeat = chat::encode_as(chat::Heartbeat{});
  std::function<void(error_code)> on_tick = [&](error_code error) {
    if (error) return;
    for (size_t i = tick_number % ticks_per_interval; i < clients.size(); i += ticks_per_interval) {
      if (clients[i]->welcomed()) clients[i]->send(heartbeat);
    }
    ++tick_number;
    tick.expires_after(std::chrono::nanoseconds(kTickNs));
    tick.async_wait(on_tick);
  };
  tick.expires_after(std::chrono::nanoseconds(kTickNs));
  tick.async_wait(on_tick);
  io.run();
  std::_Exit(0);
}

// An event loop in a rate's send window: the CPU of its timed turns (about one in
// kTurnSampleEvery, log-spaced from kLoopTurnBucketFloorNs), and per delivered message its CPU,
// turns (all of them) and time runnable but waiting for a core.
struct LoopFigures {
  uint64_t turn_counts[SharedGroupCommitCounters::kLoopTurnBuckets] = {};
  double cpu_us_per_msg = 0;
  double turns_per_msg = 0;
  double runqueue_wait_us_per_msg = 0;
  double involuntary_switches_per_s = 0;
};
nlohmann::json loop_json(const LoopFigures& loop) {
  return {{"cpu_us_per_msg", loop.cpu_us_per_msg},
          {"turns_per_msg", loop.turns_per_msg},
          {"turn_cpu_buckets_us", buckets_json(loop_turn_buckets_of(loop.turn_counts))},
          {"runqueue_wait_us_per_msg", loop.runqueue_wait_us_per_msg},
          {"involuntary_switches_per_s", loop.involuntary_switches_per_s}};
}

// One server loop's counters at one moment (SharedGroupCommitCounters::Loop); the difference of
// two is what the loop used between them, and readings of several loops add up.
struct ServerLoopReading {
  uint64_t cpu_ns = 0, turns = 0, runqueue_wait_ns = 0, involuntary_switches = 0;
  uint64_t turn_counts[SharedGroupCommitCounters::kLoopTurnBuckets] = {};
  ServerLoopReading operator-(const ServerLoopReading& before) const {
    ServerLoopReading out;
    out.cpu_ns = cpu_ns - before.cpu_ns;
    out.turns = turns - before.turns;
    out.runqueue_wait_ns = runqueue_wait_ns - before.runqueue_wait_ns;
    out.involuntary_switches = involuntary_switches - before.involuntary_switches;
    for (size_t b = 0; b < SharedGroupCommitCounters::kLoopTurnBuckets; ++b) out.turn_counts[b] = turn_counts[b] - before.turn_counts[b];
    return out;
  }
  ServerLoopReading& operator+=(const ServerLoopReading& other) {
    cpu_ns += other.cpu_ns;
    turns += other.turns;
    runqueue_wait_ns += other.runqueue_wait_ns;
    involuntary_switches += other.involuntary_switches;
    for (size_t b = 0; b < SharedGroupCommitCounters::kLoopTurnBuckets; ++b) turn_counts[b] += other.turn_counts[b];
    return *this;
  }
  // Per delivered message (nothing delivered: only the histogram and the switches).
  LoopFigures figures(uint64_t delivered, double window_s) const {
    LoopFigures out;
    std::copy_n(turn_counts, SharedGroupCommitCounters::kLoopTurnBuckets, out.turn_counts);
    if (window_s > 0) out.involuntary_switches_per_s = static_cast<double>(involuntary_switches) / window_s;
    if (delivered == 0) return out;
    const double n = static_cast<double>(delivered);
    out.cpu_us_per_msg = static_cast<double>(cpu_ns) / 1e3 / n;
    out.turns_per_msg = static_cast<double>(turns) / n;
    out.runqueue_wait_us_per_msg = static_cast<double>(runqueue_wait_ns) / 1e3 / n;
    return out;
  }
};
ServerLoopReading read_server_loop(const SharedGroupCommitCounters::Loop& loop) {
  ServerLoopReading out;
  out.cpu_ns = loop.cpu_ns.load(std::memory_order_relaxed);
  out.turns = loop.turns.load(std::memory_order_relaxed);
  out.runqueue_wait_ns = loop.runqueue_wait_ns.load(std::memory_order_relaxed);
  out.involuntary_switches = loop.involuntary_switches.load(std::memory_order_relaxed);
  for (size_t b = 0; b < SharedGroupCommitCounters::kLoopTurnBuckets; ++b) out.turn_counts[b] = loop.turn_buckets[b].load(std::memory_order_relaxed);
  return out;
}

struct RateResult;
nlohmann::json server_loops_json(const RateResult& r);

struct RateResult {
  uint64_t offered_per_s = 0;
  uint64_t sent = 0;
  uint64_t acked = 0;
  uint64_t delivered = 0;
  uint64_t skipped_in_flight_max = 0;  // sends not made: the sender had too many unacked
  // Deliveries of a message already delivered (each body carries its message number): never
  // counted in `delivered`, and never expected (a session of one device, no reconnects).
  uint64_t duplicated = 0;
  double duration_s = 0;
  // Deliveries per second of the send window (the drain's deliveries counted too): what
  // `plan`'s twin predicts. It flatters a rate the system cannot keep up with, whose backlog
  // drains after the window, so the table shows `sustained_per_s`: the deliveries over the time
  // from the first send to the last delivery (the window at least).
  double delivered_per_s = 0;
  double sustained_per_s = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
  // CPU time per delivered message, load-independent where the rate is not: the server
  // process's over the whole run of this rate (its 1,000 connects included), and the client
  // process's (senders and receivers, connects included).
  double server_cpu_us_per_msg = 0;
  double client_cpu_us_per_msg = 0;
  // The server process's CPU per delivered message from the first send to the end of the drain
  // only: without the 1,000 connects, which dominate the whole-run figure at low rates.
  double server_send_window_cpu_us_per_msg = 0;
  // Of it, the server's event-loop thread (SharedGroupCommitCounters::loop_cpu_ns): the service
  // demand of one message on the one core every frame waits for (reports/live_twin.h uses it).
  double server_loop_cpu_us_per_msg = 0;
  // The server's group commit over this rate's whole client process (connects, sends, drain),
  // from SharedGroupCommitCounters: how many files one batch synced, and fsyncs per second.
  uint64_t batches = 0;
  uint64_t files_synced = 0;
  double window_s = 0;
  double fsync_mean_us = 0;
  // fsync_quantiles_us(): 0 %, 0.1 %, .., 100 % of the fdatasyncs in this rate's send window
  // (first send to the end of the drain, as server_loop_cpu_us_per_msg; fsync_quantiles_count of them).
  static constexpr size_t kFsyncQuantilesMax = 1001;
  double fsync_quantiles_us[kFsyncQuantilesMax] = {};
  size_t fsync_quantiles_count = 0;
  // The histogram they come from (SharedGroupCommitCounters::fsync_buckets, the send window's).
  uint64_t fsync_bucket_counts[SharedGroupCommitCounters::kFsyncBuckets] = {};
  // How alike consecutive batches' fdatasyncs were in the send window (FsyncPairSums): the
  // correlation of their log times over fsync_pairs pairs, if there were enough.
  uint64_t fsync_pairs = 0;
  bool fsync_correlation_measured = false;
  double fsync_lag1_log_correlation = 0;
  // The send window's commits (WAL syncs deferred) and the checkpoints among them, which stall
  // the loop: their loop CPU and their durations (SharedGroupCommitCounters::checkpoint_buckets).
  uint64_t commits = 0;
  uint64_t checkpoints = 0;
  uint64_t checkpoint_cpu_ns = 0;
  uint64_t checkpoint_bucket_counts[SharedGroupCommitCounters::kCheckpointBuckets] = {};
  // The checkpoints' bulks in the send window, off the loop (SharedGroupCommitCounters::bulks).
  uint64_t bulks = 0;
  uint64_t bulk_pages = 0;
  uint64_t bulk_errors = 0;
  uint64_t bulk_ns_max = 0;
  // The server loop in the send window (its cpu_us_per_msg is server_loop_cpu_us_per_msg), and
  // the client process's loop (every sender and receiver on one thread), whose turns a Deliver
  // also waits behind before its latency is taken. With two server loops, server_loop is both
  // together (CPU, turns, waits and switches summed, the turn histograms merged: the whole
  // service demand of a message, as one loop would have it) and server_loops each one.
  LoopFigures server_loop, client_loop;
  uint32_t server_loop_count = 1;
  LoopFigures server_loops[SharedGroupCommitCounters::kServerLoopsMax];
};

nlohmann::json server_loops_json(const RateResult& r) {
  nlohmann::json out = nlohmann::json::array();
  for (uint32_t l = 0; l < r.server_loop_count; ++l) {
    nlohmann::json loop = loop_json(r.server_loops[l]);
    loop["name"] = r.server_loop_count == 1 ? "all" : l == 0 ? "device" : "store";
    out.push_back(std::move(loop));
  }
  return out;
}

// Senders traffic_user(run, 0..pairs-1) send to receivers traffic_user(run, pairs..) at `rate` msgs/s in
// total for `duration_ns`, each with at most `in_flight_max` sends unacked, then wait up to
// `drain_ns` for the deliveries in flight. The body carries the send time (CLOCK_MONOTONIC is the
// same clock in every process).
// server_counters: read, but for bulk_ns_max, which the window starts at 0.
RateResult run_rate(uint16_t port, pid_t server_pid, SharedGroupCommitCounters& server_counters, uint32_t pairs, uint64_t rate, int64_t duration_ns,
                    int64_t drain_ns, uint32_t run_number, uint64_t in_flight_max) {
  asio::io_context io(1);
  RateResult result;
  result.offered_per_s = rate;
  std::vector<int64_t> latencies_ns;
  latencies_ns.reserve(static_cast<size_t>(rate * static_cast<uint64_t>(duration_ns / kNanosPerSecond + 1)));
  int64_t measure_start_ns = 0;
  int64_t last_delivery_ns = 0;
  auto on_sender_frame = [&](BenchClient& client, chat::Frame& frame) {
    if (std::holds_alternative<chat::SendAck>(frame) || std::holds_alternative<chat::SendReject>(frame)) {
      client.acked += std::holds_alternative<chat::SendAck>(frame) ? 1 : 0;
      if (client.in_flight > 0) client.in_flight--;
      result.acked += std::holds_alternative<chat::SendAck>(frame) ? 1 : 0;
    }
  };
  // Which message numbers were delivered (the body's second 8 bytes), to count duplicates.
  std::vector<uint8_t> delivered_numbers;
  auto on_receiver_frame = [&](BenchClient&, chat::Frame& frame) {
    const auto* deliver = std::get_if<chat::Deliver>(&frame);
    if (deliver == nullptr || deliver->entry.body.size() < 16) return;
    int64_t sent_ns = 0;
    uint64_t number = 0;
    std::memcpy(&sent_ns, deliver->entry.body.data(), sizeof sent_ns);
    std::memcpy(&number, deliver->entry.body.data() + sizeof sent_ns, sizeof number);
    if (sent_ns < measure_start_ns) return;
    if (number < result.sent) {  // a number this load process sent (anything else is not ours)
      if (delivered_numbers.size() <= number) delivered_numbers.resize(std::max<size_t>(number + 1, 2 * delivered_numbers.size()));
      if (delivered_numbers[number]++ > 0) {
        result.duplicated++;
        return;
      }
    }
    last_delivery_ns = monotonic_now_ns();
    latencies_ns.push_back(last_delivery_ns - sent_ns);
  };
  std::vector<std::shared_ptr<BenchClient>> senders, receivers;
  // After the clients: destroyed before them (its pending operations point into them). Room
  // for a recv and a send of every connection queued at once.
  BenchRing ring(std::clamp<unsigned>(4 * pairs, 256, 32768));
  uint32_t welcomed = 0, failed = 0;
  auto on_done = [&](bool ok) {
    (ok ? welcomed : failed)++;
    if (welcomed + failed == 2 * pairs) io.stop();
  };
  for (uint32_t i = 0; i < pairs; ++i) {
    receivers.push_back(std::make_shared<BenchClient>(io, traffic_user(run_number, pairs + i), on_receiver_frame));
    senders.push_back(std::make_shared<BenchClient>(io, traffic_user(run_number, i), on_sender_frame));
  }
  const auto source = asio::ip::make_address_v4("127.0.0.2");
  for (uint32_t i = 0; i < pairs; ++i) {
    receivers[i]->start(source, port, on_done);
    senders[i]->start(source, port, on_done);
  }
  io.run();
  io.restart();
  if (failed > 0) {
    std::fprintf(stderr, "live bench: %u of %u traffic connections failed\n", failed, 2 * pairs);
    return result;
  }
  // Let the registrations land before measuring.
  std::vector<std::string> convs;
  for (uint32_t i = 0; i < pairs; ++i) convs.push_back(chat::direct_conversation(senders[i]->user(), receivers[i]->user()));
  constexpr int64_t kTickNs = 1 * kNanosPerMilli;
  const uint64_t server_ticks_at_start = cpu_ticks(server_pid);
  // Each server loop's counters at the start of the send window (ServerLoopReading).
  const uint32_t server_loop_count = std::clamp<uint32_t>(server_counters.loop_count.load(), 1, SharedGroupCommitCounters::kServerLoopsMax);
  std::vector<ServerLoopReading> server_loops_at_start;
  for (uint32_t l = 0; l < server_loop_count; ++l) server_loops_at_start.push_back(read_server_loop(server_counters.loops[l]));
  std::vector<uint64_t> fsync_buckets(SharedGroupCommitCounters::kFsyncBuckets);
  for (size_t b = 0; b < fsync_buckets.size(); ++b) fsync_buckets[b] = server_counters.fsync_buckets[b].load(std::memory_order_relaxed);
  const FsyncPairSums fsync_pairs_at_start = FsyncPairSums::read(server_counters);
  const uint64_t commits_at_start = server_counters.syncs_deferred.load(std::memory_order_relaxed);
  const uint64_t checkpoints_at_start = server_counters.checkpoints.load(std::memory_order_relaxed);
  const uint64_t checkpoint_cpu_at_start_ns = server_counters.checkpoint_cpu_ns.load(std::memory_order_relaxed);
  const uint64_t bulks_at_start = server_counters.bulks.load(std::memory_order_relaxed);
  const uint64_t bulk_pages_at_start = server_counters.bulk_pages.load(std::memory_order_relaxed);
  const uint64_t bulk_errors_at_start = server_counters.bulk_errors.load(std::memory_order_relaxed);
  server_counters.bulk_ns_max.store(0, std::memory_order_relaxed);  // this window's longest from here
  uint64_t checkpoint_buckets[SharedGroupCommitCounters::kCheckpointBuckets];
  for (size_t b = 0; b < SharedGroupCommitCounters::kCheckpointBuckets; ++b)
    checkpoint_buckets[b] = server_counters.checkpoint_buckets[b].load(std::memory_order_relaxed);
  const int64_t client_cpu_at_start_ns = thread_cpu_ns();
  const ThreadSchedule client_schedule_at_start = thread_schedule();
  const int64_t start_ns = monotonic_now_ns();
  measure_start_ns = start_ns;
  uint64_t next_sender = 0;
  uint64_t msg_number = 0;
  Bytes body(64, 'x');
  // Every kTickNs, the sends owed by then at the offered rate.
  auto send_owed = [&](int64_t now) {
    const uint64_t owed = static_cast<uint64_t>((static_cast<int128>(now - start_ns) * rate) / kNanosPerSecond);
    std::memcpy(body.data(), &now, sizeof now);
    while (result.sent + result.skipped_in_flight_max < owed) {
      const size_t i = next_sender++ % pairs;
      BenchClient& sender = *senders[i];
      if (sender.in_flight >= in_flight_max) {
        result.skipped_in_flight_max++;
        continue;
      }
      chat::Send send;
      send.msg_id = "b" + std::to_string(run_number) + "-" + std::to_string(msg_number);
      send.conv = convs[i];
      send.to = receivers[i]->user();
      std::memcpy(body.data() + sizeof now, &msg_number, sizeof msg_number);  // the number after the send time
      send.body = body;
      sender.in_flight++;
      sender.send(chat::encode_as(std::move(send)));
      result.sent++;
      msg_number++;
    }
  };
  // The send window and the drain on the ring (BenchRing says why): one turn is one
  // io_uring_enter (the queued sends and recvs submitted, then a wait until a completion or the
  // next tick) and the handling of every completion it returned; its thread CPU is sampled as
  // run_counting_turns samples an Asio loop's.
  for (auto& client : senders) client->use_ring(ring);
  for (auto& client : receivers) client->use_ring(ring);
  const int64_t stop_ns = start_ns + duration_ns + drain_ns;
  int64_t next_tick_ns = start_ns + kTickNs;
  uint64_t client_turns = 0;
  uint64_t gap_state = 0x9E3779B97F4A7C15u;
  uint64_t until_timed = 1;
  for (;;) {
    const bool timed = --until_timed == 0;
    const int64_t before_ns = timed ? thread_cpu_ns() : 0;
    int64_t now = monotonic_now_ns();
    if (now >= stop_ns) break;
    if (now >= next_tick_ns && now - start_ns < duration_ns) {
      send_owed(now);
      next_tick_ns += kTickNs;
    }
    const int64_t wake_ns = now - start_ns < duration_ns ? std::min(next_tick_ns, stop_ns) : stop_ns;
    ring.submit_and_wait(wake_ns - now);
    ring.reap([](uint64_t user_data, int res) {
      BenchClient::ring_client(user_data)->on_ring_completion(BenchClient::ring_is_send(user_data), res);
    });
    client_turns += 1;
    if (timed) {
      const int64_t after_ns = thread_cpu_ns();
      result.client_loop.turn_counts[log_bucket_of(static_cast<double>(after_ns - before_ns), kLoopTurnBucketFloorNs, SharedGroupCommitCounters::kLoopTurnBuckets)] += 1;
      gap_state ^= gap_state << 13;
      gap_state ^= gap_state >> 7;
      gap_state ^= gap_state << 17;
      until_timed = 1 + gap_state % (2 * kTurnSampleEvery - 1);
    }
  }
  const int64_t client_cpu_at_end_ns = thread_cpu_ns();
  const ThreadSchedule client_schedule_at_end = thread_schedule();
  const double window_s = static_cast<double>(monotonic_now_ns() - start_ns) / 1e9;
  const uint64_t server_ticks_at_end = cpu_ticks(server_pid);
  std::vector<ServerLoopReading> server_loops_at_end;
  for (uint32_t l = 0; l < server_loop_count; ++l) server_loops_at_end.push_back(read_server_loop(server_counters.loops[l]));
  // The fdatasyncs of the send window only (as the latencies): the connects before it commit
  // registry writes whose syncs no measured message waits for.
  for (size_t b = 0; b < fsync_buckets.size(); ++b)
    fsync_buckets[b] = server_counters.fsync_buckets[b].load(std::memory_order_relaxed) - fsync_buckets[b];
  std::copy_n(fsync_buckets.begin(), SharedGroupCommitCounters::kFsyncBuckets, result.fsync_bucket_counts);
  const FsyncPairSums fsync_pairs = FsyncPairSums::read(server_counters).since(fsync_pairs_at_start);
  result.fsync_pairs = fsync_pairs.pairs;
  if (const std::optional<double> r = fsync_pairs.correlation()) {
    result.fsync_correlation_measured = true;
    result.fsync_lag1_log_correlation = *r;
  }
  result.commits = server_counters.syncs_deferred.load(std::memory_order_relaxed) - commits_at_start;
  result.checkpoints = server_counters.checkpoints.load(std::memory_order_relaxed) - checkpoints_at_start;
  result.checkpoint_cpu_ns = server_counters.checkpoint_cpu_ns.load(std::memory_order_relaxed) - checkpoint_cpu_at_start_ns;
  result.bulks = server_counters.bulks.load(std::memory_order_relaxed) - bulks_at_start;
  result.bulk_pages = server_counters.bulk_pages.load(std::memory_order_relaxed) - bulk_pages_at_start;
  result.bulk_errors = server_counters.bulk_errors.load(std::memory_order_relaxed) - bulk_errors_at_start;
  result.bulk_ns_max = server_counters.bulk_ns_max.load(std::memory_order_relaxed);
  for (size_t b = 0; b < SharedGroupCommitCounters::kCheckpointBuckets; ++b)
    result.checkpoint_bucket_counts[b] = server_counters.checkpoint_buckets[b].load(std::memory_order_relaxed) - checkpoint_buckets[b];
  if (window_s > 0) {
    result.client_loop.involuntary_switches_per_s =
        static_cast<double>(client_schedule_at_end.involuntary_switches - client_schedule_at_start.involuntary_switches) / window_s;
  }
  // 0 %, 0.1 %, .., 100 %: fine enough that the top 1 %, which makes the twin's p99, is not one
  // straight line from p95 to the max.
  const std::vector<int64_t> fsync_quantiles = reports::quantiles_from_buckets(fsync_buckets_of(result.fsync_bucket_counts), 1000);
  result.fsync_quantiles_count = std::min(fsync_quantiles.size(), RateResult::kFsyncQuantilesMax);
  for (size_t k = 0; k < result.fsync_quantiles_count; ++k) result.fsync_quantiles_us[k] = static_cast<double>(fsync_quantiles[k]) / 1e3;
  result.duration_s = static_cast<double>(duration_ns) / 1e9;
  result.delivered = latencies_ns.size();
  result.delivered_per_s = static_cast<double>(result.delivered) / result.duration_s;
  const int64_t delivering_ns = std::max(duration_ns, last_delivery_ns - start_ns);
  result.sustained_per_s = static_cast<double>(result.delivered) * 1e9 / static_cast<double>(delivering_ns);
  if (!latencies_ns.empty()) {
    std::sort(latencies_ns.begin(), latencies_ns.end());
    auto at = [&](double q) {
      const size_t index = std::min(latencies_ns.size() - 1, static_cast<size_t>(q * static_cast<double>(latencies_ns.size())));
      return static_cast<double>(latencies_ns[index]) / 1e3;
    };
    result.p50_us = at(0.50);
    result.p99_us = at(0.99);
    result.p999_us = at(0.999);
    result.max_us = static_cast<double>(latencies_ns.back()) / 1e3;
  }
  if (result.delivered > 0) {
    result.server_send_window_cpu_us_per_msg = static_cast<double>(server_ticks_at_end - server_ticks_at_start) * 1e6 /
                                               static_cast<double>(::sysconf(_SC_CLK_TCK)) / static_cast<double>(result.delivered);
    const auto per_msg = [&](double value) { return value / static_cast<double>(result.delivered); };
    result.client_loop.cpu_us_per_msg = per_msg(static_cast<double>(client_cpu_at_end_ns - client_cpu_at_start_ns) / 1e3);
    result.client_loop.turns_per_msg = per_msg(static_cast<double>(client_turns));
    result.client_loop.runqueue_wait_us_per_msg =
        per_msg(static_cast<double>(client_schedule_at_end.runqueue_wait_ns - client_schedule_at_start.runqueue_wait_ns) / 1e3);
  }
  // Each server loop in the send window, and all of them together as server_loop.
  result.server_loop_count = server_loop_count;
  ServerLoopReading all;
  for (uint32_t l = 0; l < server_loop_count; ++l) {
    const ServerLoopReading used = server_loops_at_end[l] - server_loops_at_start[l];
    result.server_loops[l] = used.figures(result.delivered, window_s);
    all += used;
  }
  result.server_loop = all.figures(result.delivered, window_s);
  result.server_loop_cpu_us_per_msg = result.server_loop.cpu_us_per_msg;
  timespec cpu{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
  if (result.delivered > 0) {
    result.client_cpu_us_per_msg = (static_cast<double>(cpu.tv_sec) * 1e6 + static_cast<double>(cpu.tv_nsec) / 1e3) /
                                   static_cast<double>(result.delivered);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// The command

struct BenchOptions {
  uint32_t idle = 19'000;
  std::vector<uint64_t> rates = {5'000, 25'000, 56'000};
  uint32_t pairs = 500;
  double settle_s = 5;
  double cpu_window_s = 10;
  double rate_duration_s = 5;
  uint32_t per_process_max = 9'000;
  // Unacked sends per sender (`--in-flight-max`). Past the server's capacity a sender's window is
  // what the load process writes ahead into the sockets: 500 x 512 messages are about ten seconds
  // of the server's work, more than a rate's run (5 s and 2 s of drain), written by the load
  // process on the same two cores as the server all the same. Session 11 (the bar command, load
  // 2.2-3.8, two runs each): with 64, at 56,000/s the server loop spent 31-33 us a delivered
  // message against 38-59 with 512, the load process 18-20 us against 29-47, 20,892 / 22,562
  // delivered/s against 25,414 / 12,647; but at 25,000/s, where the server sat at its knee with
  // a p50 over a second, 64 sends a sender (1.28 s at 50/s) filled and 29,665 sends were not
  // made. So 512 stays the default; a window as a device keeps (ChatTuning::device_pending_max,
  // 256) was not measured.
  uint64_t in_flight_max = 512;
  ServerBatching batching;
  // The server process's event loops (`--server-loops`): 2, the chat server and its devices on
  // one thread and the nodes with databases (and the registry and push) on another, so the
  // server's work runs on both cores; 1, every node on one loop, as reports/live_twin.h models it
  // (scripts/plan-vs-live asks for it). See live/README.md, "Session 12".
  uint32_t server_loops = 2;
  bool json = false;
  bool skip_idle = false;
  bool skip_traffic = false;
  std::string dir;
};

struct ServerProcess {
  pid_t pid = -1;
  uint16_t port = 0;
  SharedGroupCommitCounters* group_commit = nullptr;  // published by the server, read here (bulk_ns_max reset too)
};

Result<ServerProcess> start_server(const std::string& dir, uint32_t traffic_runs, uint32_t pairs, const ServerBatching& batching,
                                   uint32_t server_loops) {
  std::error_code made;
  std::filesystem::create_directories(dir, made);
  if (made) return make_error(ErrorCode::io_error, "cannot make " + dir + ": " + made.message());
  int fds[2];
  if (::pipe(fds) != 0) return make_error(ErrorCode::io_error, std::string("pipe: ") + std::strerror(errno));
  SharedGroupCommitCounters* counters = map_shared_counters();
  const pid_t pid = ::fork();
  if (pid < 0) return make_error(ErrorCode::io_error, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::close(fds[0]);
    run_server_process(dir, traffic_runs, pairs, batching, server_loops, fds[1], counters);
  }
  ::close(fds[1]);
  char text[32] = {};
  const ssize_t n = ::read(fds[0], text, sizeof text - 1);
  ::close(fds[0]);
  const int port = n > 0 ? std::atoi(text) : 0;
  if (port <= 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::munmap(counters, sizeof *counters);
    return make_error(ErrorCode::unavailable, "the bench server process did not start (see its message above)");
  }
  return ServerProcess{pid, static_cast<uint16_t>(port), counters};
}

void stop_process(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

void stop_server(ServerProcess& server) {
  stop_process(server.pid);
  server.pid = -1;
  if (server.group_commit != nullptr) ::munmap(server.group_commit, sizeof *server.group_commit);
  server.group_commit = nullptr;
}

struct IdleResult {
  uint32_t requested = 0;
  uint32_t connected = 0;
  uint32_t processes = 0;
  uint32_t source_addresses = 0;
  uint64_t rss_before = 0, rss_after = 0;
  double rss_per_connection = 0;
  double cpu_percent = 0;
  double cpu_us_per_heartbeat = 0;
  double heartbeats_per_s = 0;
};

IdleResult run_idle(const BenchOptions& options, const ServerProcess& server) {
  IdleResult result;
  result.requested = options.idle;
  const chat::ChatTuning tuning;
  // Let the server's start-up settle (databases created, timers armed) before the baseline.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  result.rss_before = rss_bytes(server.pid);
  const auto [port_low, port_high] = ephemeral_port_range();
  const uint32_t ports_per_address = port_high - port_low + 1;
  std::vector<pid_t> children;
  std::vector<int> reports;
  uint32_t assigned = 0;
  std::vector<std::string> sources;
  while (assigned < options.idle) {
    const uint32_t count = std::min(options.per_process_max, options.idle - assigned);
    // Each process dials from its own source address: the ephemeral ports of one address
    // (ports_per_address) bound the connections one address can make to one server port.
    MSGSIM_ASSERT_LE(count, ports_per_address);
    const auto source = asio::ip::make_address_v4("127.0.0." + std::to_string(10 + children.size()));
    sources.push_back(source.to_string());
    int fds[2];
    MSGSIM_ASSERT(::pipe(fds) == 0, std::strerror(errno));
    const pid_t pid = ::fork();
    MSGSIM_ASSERT(pid >= 0, std::strerror(errno));
    if (pid == 0) {
      ::close(fds[0]);
      // Users 1,000,000 and up: disjoint from the traffic part's users.
      run_idle_clients(server.port, source, kIdleFirstUser + assigned, count, tuning.heartbeat_interval_ns, fds[1]);
    }
    ::close(fds[1]);
    children.push_back(pid);
    reports.push_back(fds[0]);
    assigned += count;
  }
  result.processes = static_cast<uint32_t>(children.size());
  result.source_addresses = static_cast<uint32_t>(sources.size());
  for (int fd : reports) {
    char text[64] = {};
    const ssize_t n = ::read(fd, text, sizeof text - 1);
    ::close(fd);
    unsigned ok = 0, failed = 0;
    if (n > 0 && std::sscanf(text, "ready %u %u", &ok, &failed) == 2) result.connected += ok;
  }
  // Settle: the heap reaches its steady state, the first heartbeats pass, presence is registered.
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(options.settle_s * 1000)));
  result.rss_after = rss_bytes(server.pid);
  if (result.connected > 0) {
    result.rss_per_connection =
        static_cast<double>(static_cast<int64_t>(result.rss_after) - static_cast<int64_t>(result.rss_before)) / result.connected;
  }
  const uint64_t ticks_before = cpu_ticks(server.pid);
  const auto window_start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(options.cpu_window_s * 1000)));
  const uint64_t ticks_after = cpu_ticks(server.pid);
  const double window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
  const double cpu_s = static_cast<double>(ticks_after - ticks_before) / static_cast<double>(sysconf(_SC_CLK_TCK));
  result.cpu_percent = 100.0 * cpu_s / window_s;
  result.heartbeats_per_s = static_cast<double>(result.connected) * kNanosPerSecond / static_cast<double>(tuning.heartbeat_interval_ns);
  if (result.heartbeats_per_s > 0) result.cpu_us_per_heartbeat = cpu_s * 1e6 / (result.heartbeats_per_s * window_s);
  for (pid_t pid : children) stop_process(pid);
  return result;
}

std::vector<RateResult> run_traffic(const BenchOptions& options, const ServerProcess& server) {
  std::vector<RateResult> results;
  uint32_t run_number = 0;
  for (uint64_t rate : options.rates) {
    // Each rate in its own client process, so one rate's clients and sockets are gone before
    // the next; users are fresh per rate, so no earlier backlog is counted.
    int fds[2];
    MSGSIM_ASSERT(::pipe(fds) == 0, std::strerror(errno));
    const pid_t pid = ::fork();
    MSGSIM_ASSERT(pid >= 0, std::strerror(errno));
    ++run_number;
    const uint64_t server_ticks_before = cpu_ticks(server.pid);
    const uint64_t batches_before = server.group_commit->batches.load();
    const uint64_t files_before = server.group_commit->files_synced.load();
    const uint64_t sync_ns_before = server.group_commit->sync_ns.load();
    const auto window_start = std::chrono::steady_clock::now();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(fds[0]);
      const RateResult r = run_rate(server.port, server.pid, *server.group_commit, options.pairs, rate,
                                    static_cast<int64_t>(options.rate_duration_s * kNanosPerSecond), 2 * kNanosPerSecond, run_number,
                                    options.in_flight_max);
      (void)!::write(fds[1], &r, sizeof r);
      std::_Exit(0);
    }
    ::close(fds[1]);
    RateResult r;
    // RateResult is larger than PIPE_BUF (the fsync quantiles): read until it is whole.
    ssize_t n = 0;
    while (n < static_cast<ssize_t>(sizeof r)) {
      const ssize_t got = ::read(fds[0], reinterpret_cast<char*>(&r) + n, sizeof r - static_cast<size_t>(n));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      n += got;
    }
    ::close(fds[0]);
    ::waitpid(pid, nullptr, 0);
    const double server_cpu_us =
        static_cast<double>(cpu_ticks(server.pid) - server_ticks_before) * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
    if (r.delivered > 0) r.server_cpu_us_per_msg = server_cpu_us / static_cast<double>(r.delivered);
    r.window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
    r.batches = server.group_commit->batches.load() - batches_before;
    r.files_synced = server.group_commit->files_synced.load() - files_before;
    const uint64_t sync_ns = server.group_commit->sync_ns.load() - sync_ns_before;
    if (r.files_synced > 0) r.fsync_mean_us = static_cast<double>(sync_ns) / 1e3 / static_cast<double>(r.files_synced);
    if (n == static_cast<ssize_t>(sizeof r)) results.push_back(r);
  }
  return results;
}

int run_bench(const BenchOptions& options) {
  const DescriptorLimit limit = raise_descriptor_limit();
  std::string dir = options.dir;
  if (dir.empty()) {
    char pattern[] = "/tmp/msgsim-bench-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    if (made == nullptr) {
      std::fprintf(stderr, "live bench: cannot make a run directory: %s\n", std::strerror(errno));
      return kExitBadInput;
    }
    dir = made;
  } else {
    std::error_code ignored;
    std::filesystem::create_directories(dir, ignored);
  }
  nlohmann::json out;
  out["descriptor_limit"] = {{"soft_before", limit.soft_before}, {"soft", limit.soft}, {"hard", limit.hard}};
  out["run_dir"] = dir;
  if (!options.json) {
    std::printf("descriptor limit: soft %llu -> %llu (hard %llu)\n", static_cast<unsigned long long>(limit.soft_before),
                static_cast<unsigned long long>(limit.soft), static_cast<unsigned long long>(limit.hard));
    std::fflush(stdout);
  }
  if (!options.skip_idle && options.idle > 0) {
    if (options.idle + 100 > limit.soft) {
      std::fprintf(stderr, "live bench: --idle %u needs more descriptors than the limit %llu allows one server process\n",
                   options.idle, static_cast<unsigned long long>(limit.soft));
      return kExitBadInput;
    }
    auto server = start_server(dir + "/idle", 0, 0, options.batching, options.server_loops);
    if (!server.ok()) {
      std::fprintf(stderr, "live bench: %s\n", server.error().message.c_str());
      return kExitViolation;
    }
    const IdleResult idle = run_idle(options, *server);
    stop_server(*server);
    out["idle"] = {{"requested", idle.requested},
                   {"connected", idle.connected},
                   {"client_processes", idle.processes},
                   {"source_addresses", idle.source_addresses},
                   {"server_rss_before_bytes", idle.rss_before},
                   {"server_rss_after_bytes", idle.rss_after},
                   {"server_rss_per_connection_bytes", idle.rss_per_connection},
                   {"heartbeats_per_s", idle.heartbeats_per_s},
                   {"server_cpu_percent", idle.cpu_percent},
                   {"server_cpu_us_per_heartbeat", idle.cpu_us_per_heartbeat}};
    if (!options.json) {
      std::printf("\n(a) idle WebSocket connections to one chat server process\n");
      std::printf("| connections | client processes | server RSS before | after | per connection | heartbeats/s | server CPU | CPU per heartbeat |\n");
      std::printf("|---|---|---|---|---|---|---|---|\n");
      std::printf("| %u of %u | %u (127.0.0.10-%u) | %.1f MB | %.1f MB | %.0f B | %.0f | %.1f %% | %.1f us |\n", idle.connected,
                  idle.requested, idle.processes, 9 + idle.processes, static_cast<double>(idle.rss_before) / 1e6,
                  static_cast<double>(idle.rss_after) / 1e6, idle.rss_per_connection, idle.heartbeats_per_s, idle.cpu_percent,
                  idle.cpu_us_per_heartbeat);
      std::fflush(stdout);
    }
  }
  if (!options.skip_traffic && !options.rates.empty()) {
    auto server = start_server(dir + "/traffic", static_cast<uint32_t>(options.rates.size()), options.pairs, options.batching,
                               options.server_loops);
    if (!server.ok()) {
      std::fprintf(stderr, "live bench: %s\n", server.error().message.c_str());
      return kExitViolation;
    }
    const auto rates = run_traffic(options, *server);
    const bool device_ring = server->group_commit != nullptr && server->group_commit->device_ring.load(std::memory_order_relaxed) != 0;
    stop_server(*server);
    nlohmann::json rows = nlohmann::json::array();
    for (const RateResult& r : rates) {
      rows.push_back({{"offered_per_s", r.offered_per_s},
                      {"sent", r.sent},
                      {"acked", r.acked},
                      {"delivered", r.delivered},
                      {"not_sent_in_flight_max", r.skipped_in_flight_max},
                      {"duplicated", r.duplicated},
                      {"duration_s", r.duration_s},
                      {"delivered_per_s", r.delivered_per_s},
                      {"sustained_per_s", r.sustained_per_s},
                      {"latency_p50_us", r.p50_us},
                      {"latency_p99_us", r.p99_us},
                      {"latency_p999_us", r.p999_us},
                      {"latency_max_us", r.max_us},
                      {"server_cpu_us_per_msg", r.server_cpu_us_per_msg},
                      {"server_send_window_cpu_us_per_msg", r.server_send_window_cpu_us_per_msg},
                      {"server_loop_cpu_us_per_msg", r.server_loop_cpu_us_per_msg},
                      {"client_cpu_us_per_msg", r.client_cpu_us_per_msg},
                      // Each event loop in the send window: CPU and turns per delivered
                      // message, the turns' CPU as a histogram, the time runnable but waiting
                      // for a core, and involuntary context switches.
                      {"server_loop", loop_json(r.server_loop)},
                      {"client_loop", loop_json(r.client_loop)},
                      // With `--server-loops 2` server_loop is both loops together; here each
                      // one ("device": the chat server and its WebSocket sessions; "store": the
                      // nodes with databases, the registry and push).
                      {"server_loops", server_loops_json(r)},
                      // The server's group commit while this rate's clients ran (window_s):
                      // reports/live_twin reads files_per_batch.
                      {"group_commit",
                       {{"window_s", r.window_s},
                        {"batches", r.batches},
                        {"files_synced", r.files_synced},
                        {"files_per_batch", r.batches > 0 ? static_cast<double>(r.files_synced) / static_cast<double>(r.batches) : 0.0},
                        {"batches_per_s", r.window_s > 0 ? static_cast<double>(r.batches) / r.window_s : 0.0},
                        {"fsyncs_per_s", r.window_s > 0 ? static_cast<double>(r.files_synced) / r.window_s : 0.0},
                        {"fsync_mean_us", r.fsync_mean_us},
                        {"fsync_quantiles_us", std::vector<double>(r.fsync_quantiles_us, r.fsync_quantiles_us + r.fsync_quantiles_count)},
                        {"fsync_buckets_us", buckets_json(fsync_buckets_of(r.fsync_bucket_counts))},
                        // The send window's commits and SQLite checkpoints as far as they run on
                        // the loop, stalling it (the tails of live/wal_checkpointer.h):
                        // reports/live_twin draws them.
                        {"commits", r.commits},
                        {"checkpoints", r.checkpoints},
                        {"checkpoint_cpu_us_per_msg",
                         r.delivered > 0 ? static_cast<double>(r.checkpoint_cpu_ns) / 1e3 / static_cast<double>(r.delivered) : 0.0},
                        {"checkpoint_buckets_us", buckets_json(checkpoint_buckets_of(r.checkpoint_bucket_counts))},
                        // The checkpoints' bulks, on the checkpointer's thread (no loop stall):
                        // how many, the log pages they copied, the longest, and failures (each
                        // followed by a whole checkpoint on the loop, counted above).
                        {"bulk_checkpoints",
                         {{"count", r.bulks},
                          {"pages", r.bulk_pages},
                          {"wall_ms_max", static_cast<double>(r.bulk_ns_max) / 1e6},
                          {"errors", r.bulk_errors}}},
                        // How alike consecutive batches' fdatasyncs were (FsyncPairSums; the
                        // correlation only where there were enough pairs): the twin draws them so.
                        {"fsync_pairs", r.fsync_pairs}}}});
      if (r.fsync_correlation_measured) rows.back()["group_commit"]["fsync_lag1_log_correlation"] = r.fsync_lag1_log_correlation;
    }
    out["traffic"] = {{"senders", options.pairs},
                      {"server_loops", options.server_loops},
                      {"receivers", options.pairs},
                      {"in_flight_max", options.in_flight_max},
                      {"queue_commit_window_us", static_cast<double>(options.batching.commit_window_ns) / 1e3},
                      {"queue_linger_us", static_cast<double>(options.batching.linger_ns) / 1e3},
                      {"storage_commit_window_us", static_cast<double>(options.batching.storage_commit_window_ns) / 1e3},
                      {"device_sessions", device_ring ? "io_uring" : "epoll"},
                      {"rates", rows}};
    if (!options.json) {
      std::printf("\n(b) 1:1 messages, %u senders -> %u receivers (at most %llu unacked each), acked after the queue's fsync (group commit); queue commit window %.0f us, linger %.0f us; storage commit window %.0f us; %u server loop%s\n",
                  options.pairs, options.pairs, static_cast<unsigned long long>(options.in_flight_max),
                  static_cast<double>(options.batching.commit_window_ns) / 1e3, static_cast<double>(options.batching.linger_ns) / 1e3,
                  static_cast<double>(options.batching.storage_commit_window_ns) / 1e3, options.server_loops, options.server_loops == 1 ? "" : "s (device + store)");
      std::printf("| offered msgs/s | sent | acked | delivered | sustained msgs/s | p50 | p99 | p999 | max | server CPU/msg | in the send window | its loop thread(s) | client CPU/msg | files/batch | fsyncs/s | fsync mean | checkpoint stalls of the loop (longest) | checkpoint bulks off the loop: pages (longest) |\n");
      std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
      for (const RateResult& r : rates) {
        char loops_text[64];
        if (r.server_loop_count == 1) std::snprintf(loops_text, sizeof loops_text, "%.1f us", r.server_loop_cpu_us_per_msg);
        else std::snprintf(loops_text, sizeof loops_text, "%.1f + %.1f us", r.server_loops[0].cpu_us_per_msg, r.server_loops[1].cpu_us_per_msg);
        // The longest stall: the upper bound of the highest bucket that holds one.
        double stall_ms_max = 0;
        for (const reports::DurationBucket& b : checkpoint_buckets_of(r.checkpoint_bucket_counts))
          stall_ms_max = std::max(stall_ms_max, static_cast<double>(b.upper_ns) / 1e6);
        std::printf("| %llu | %llu | %llu | %llu | %.0f | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.1f us | %.1f us | %s | %.1f us | %.2f | %.0f | %.2f ms | %llu (%.1f ms) | %llu: %llu (%.1f ms)%s |\n",
                    static_cast<unsigned long long>(r.offered_per_s), static_cast<unsigned long long>(r.sent),
                    static_cast<unsigned long long>(r.acked), static_cast<unsigned long long>(r.delivered), r.sustained_per_s,
                    r.p50_us / 1e3, r.p99_us / 1e3, r.p999_us / 1e3, r.max_us / 1e3, r.server_cpu_us_per_msg,
                    r.server_send_window_cpu_us_per_msg, loops_text, r.client_cpu_us_per_msg, r.batches > 0 ? static_cast<double>(r.files_synced) / static_cast<double>(r.batches) : 0.0,
                    r.window_s > 0 ? static_cast<double>(r.files_synced) / r.window_s : 0.0, r.fsync_mean_us / 1e3,
                    static_cast<unsigned long long>(r.checkpoints), stall_ms_max, static_cast<unsigned long long>(r.bulks),
                    static_cast<unsigned long long>(r.bulk_pages), static_cast<double>(r.bulk_ns_max) / 1e6,
                    r.bulk_errors > 0 ? (", " + std::to_string(r.bulk_errors) + " failed").c_str() : "");
      }
      for (const RateResult& r : rates) {
        if (r.duplicated > 0)
          std::printf("%llu/s offered: %llu deliveries of a message already delivered (not counted above)\n",
                      static_cast<unsigned long long>(r.offered_per_s), static_cast<unsigned long long>(r.duplicated));
      }
    }
  }
  if (options.json) std::printf("%s\n", out.dump(2).c_str());
  if (options.dir.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  return kExitOk;
}

}  // namespace

void add_live_bench_command(CLI::App& live, Outcome& outcome) {
  auto options = std::make_shared<BenchOptions>();
  auto rates_text = std::make_shared<std::string>();
  CLI::App* bench = live.add_subcommand("bench", "idle WebSocket connections and 1:1 message throughput and latency, measured on this machine");
  bench->add_option("--idle", options->idle, "idle WebSocket connections to one chat server process (0: skip)");
  bench->add_option("--rates", *rates_text, "offered rates of 1:1 messages per second, comma separated (e.g. 5000,25000,56000)");
  bench->add_option("--pairs", options->pairs, "senders (and as many receivers)")->check(CLI::Range(1u, 5000u));
  bench->add_option("--settle-s", options->settle_s, "seconds to let the idle connections settle before reading RSS")->check(CLI::Range(0.0, 600.0));
  bench->add_option("--cpu-window-s", options->cpu_window_s, "seconds of heartbeat CPU measured")->check(CLI::Range(0.1, 600.0));
  bench->add_option("--rate-duration-s", options->rate_duration_s, "seconds each offered rate runs")->check(CLI::Range(0.1, 600.0));
  bench->add_option("--per-process", options->per_process_max, "client connections per load process")->check(CLI::Range(1u, 19000u));
  bench->add_option("--in-flight-max", options->in_flight_max, "unacked sends a sender keeps, at most (past it a send is not made)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000}))
      ->capture_default_str();
  auto window_us = std::make_shared<double>(static_cast<double>(options->batching.commit_window_ns) / 1e3);
  auto linger_us = std::make_shared<double>(static_cast<double>(options->batching.linger_ns) / 1e3);
  bench->add_option("--queue-commit-window-us", *window_us, "the queue's group commit window (0: until the loop's next turn)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  bench->add_option("--queue-linger-us", *linger_us, "how long the queue's committed records wait before they go to storage (0: the loop's next turn)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  auto storage_window_us = std::make_shared<double>(static_cast<double>(options->batching.storage_commit_window_ns) / 1e3);
  bench->add_option("--storage-commit-window-us", *storage_window_us,
                    "how long the storage's transaction stays open for more records (0: until the loop's next turn; -1: each Records frame commits alone)")
      ->check(CLI::Range(-1.0, 1e6))
      ->capture_default_str();
  bench->add_option("--server-loops", options->server_loops,
                    "event loops of the server process: 2 (the chat server on one, the nodes with databases on the other) or 1 (every node on one, as the plan's twin models)")
      ->check(CLI::Range(1u, 2u))
      ->capture_default_str();
  bench->add_option("--dir", options->dir, "run directory for the databases (default: a temporary one, removed after)");
  bench->add_flag("--json", options->json, "JSON instead of tables");
  bench->add_flag("--no-idle", options->skip_idle, "skip part (a)");
  bench->add_flag("--no-traffic", options->skip_traffic, "skip part (b)");
  bench->callback([options, rates_text, window_us, linger_us, storage_window_us, &outcome] {
    options->batching.commit_window_ns = std::llround(*window_us * 1e3);
    options->batching.linger_ns = std::llround(*linger_us * 1e3);
    options->batching.storage_commit_window_ns = std::llround(*storage_window_us * 1e3);
    if (!rates_text->empty()) {
      options->rates.clear();
      std::string_view text = *rates_text;
      while (!text.empty()) {
        const size_t comma = text.find(',');
        const std::string_view item = text.substr(0, comma);
        uint64_t rate = 0;
        const auto [end, error] = std::from_chars(item.data(), item.data() + item.size(), rate);
        if (error != std::errc{} || end != item.data() + item.size() || rate == 0 || rate > 10'000'000) {
          std::fprintf(stderr, "live bench: --rates: '%.*s' is not a rate between 1 and 10000000 msgs/s\n",
                       static_cast<int>(item.size()), item.data());
          outcome.exit_code = kExitBadInput;
          return;
        }
        if (options->rates.size() == 50) {
          std::fprintf(stderr, "live bench: --rates: at most 50 rates\n");
          outcome.exit_code = kExitBadInput;
          return;
        }
        options->rates.push_back(rate);
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
      }
    }
    outcome.exit_code = run_bench(*options);
  });
}

}  // namespace msgsim::cli
