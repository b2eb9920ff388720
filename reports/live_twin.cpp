#include "reports/live_twin.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <memory>

#include "impl/base/assert.h"
#include "impl/runtime.h"
#include "sim/simulator.h"

namespace msgsim::reports {

using chat::CostRole;
using chat::Work;

LiveTwinCosts live_twin_costs(const chat::CpuCosts& c, std::vector<int64_t> fsync_quantiles_ns, int64_t loopback_rtt_ns,
                              std::vector<int64_t> idle_hop_quantiles_ns) {
  LiveTwinCosts out;
  // One 1:1 message in the live bench's server process, frame by frame (both users online on the
  // one chat server; the bench's devices send no receipts): the chat server decodes the Send and
  // routes it; the queue decodes the Produce and appends.
  out.server_ns_on_send = c.of(CostRole::chat, Work::decode) + c.of(CostRole::chat, Work::route) +
                          c.of(CostRole::queue, Work::decode) + c.of(CostRole::queue, Work::append);
  // The commit: the chat server decodes the queue's Produced (and answers the device).
  out.server_ns_on_commit = c.of(CostRole::chat, Work::decode);
  // The Records: the storage decodes, stores and fans out; the registry decodes the Lookup and
  // looks up; the storage decodes the Located; the chat server decodes the Route and pushes a
  // Deliver to each of the two users' devices.
  out.server_ns_on_records = c.of(CostRole::storage, Work::decode) + c.of(CostRole::storage, Work::store) +
                             c.of(CostRole::storage, Work::fanout) + c.of(CostRole::registry, Work::decode) +
                             c.of(CostRole::registry, Work::route) + c.of(CostRole::storage, Work::decode) +
                             c.of(CostRole::chat, Work::decode) + 2 * c.of(CostRole::chat, Work::push);
  // The loop's share of a batch: SQLite's sync bookkeeping, counted as two files' (the fdatasync
  // itself runs on the worker thread and costs the loop nothing).
  out.server_ns_per_batch = 2 * c.of(CostRole::storage, Work::sync);
  out.fsync_quantiles_ns = std::move(fsync_quantiles_ns);
  out.loopback_rtt_ns = loopback_rtt_ns;
  out.idle_hop_quantiles_ns = std::move(idle_hop_quantiles_ns);
  return out;
}

LiveTwinCosts with_measured_loop_cpu(const LiveTwinCosts& costs, int64_t loop_ns_per_message) {
  LiveTwinCosts out = costs;
  const int64_t table = costs.server_ns_per_message();
  const auto share = [&](int64_t stage_ns) {
    if (table <= 0) return loop_ns_per_message / 3;
    return static_cast<int64_t>(std::llround(static_cast<double>(loop_ns_per_message) * static_cast<double>(stage_ns) /
                                             static_cast<double>(table)));
  };
  out.server_ns_on_send = share(costs.server_ns_on_send);
  out.server_ns_on_commit = share(costs.server_ns_on_commit);
  // The rounding remainder goes to the last stage, so the total is the measured figure.
  out.server_ns_on_records = loop_ns_per_message - out.server_ns_on_send - out.server_ns_on_commit;
  out.server_ns_per_batch = 0;
  return out;
}

LiveTwinCosts with_measured_fsync_mean(const LiveTwinCosts& costs, int64_t fsync_mean_ns) {
  LiveTwinCosts out = costs;
  auto& q = out.fsync_quantiles_ns;
  if (q.empty()) {
    q = {fsync_mean_ns};
    return out;
  }
  const double mean = quantiles_mean(q);
  if (mean <= 0) {
    q.assign(q.size(), fsync_mean_ns);
    return out;
  }
  const double scale = static_cast<double>(fsync_mean_ns) / mean;
  for (int64_t& v : q) v = static_cast<int64_t>(std::llround(static_cast<double>(v) * scale));
  return out;
}

int64_t sample_quantiles(const std::vector<int64_t>& q, double u) {
  if (q.empty()) return 0;
  if (q.size() == 1) return q[0];
  const double position = u * static_cast<double>(q.size() - 1);
  const auto i = std::min(q.size() - 2, static_cast<size_t>(position));
  const double frac = position - static_cast<double>(i);
  return q[i] + static_cast<int64_t>(std::llround(frac * static_cast<double>(q[i + 1] - q[i])));
}

CorrelatedQuantileDraws::CorrelatedQuantileDraws(double rho) : rho_(rho) {
  MSGSIM_ASSERT(rho >= -0.99 && rho <= 0.99, "fsync correlation " + std::to_string(rho) + " outside [-0.99, 0.99]");
}

int64_t CorrelatedQuantileDraws::next(const std::vector<int64_t>& q, double u1, double u2) {
  MSGSIM_ASSERT(u1 >= 0 && u1 < 1 && u2 >= 0 && u2 < 1, "uniforms " + std::to_string(u1) + ", " + std::to_string(u2));
  constexpr double kTwoPi = 6.283185307179586;
  const double e = std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(kTwoPi * u2);
  z_ = started_ ? rho_ * z_ + std::sqrt(1.0 - rho_ * rho_) * e : e;
  started_ = true;
  // Phi(z), kept inside [0, 1) as sample_quantiles wants it.
  const double u = std::clamp(0.5 * std::erfc(-z_ / std::sqrt(2.0)), 0.0, std::nextafter(1.0, 0.0));
  return sample_quantiles(q, u);
}

double quantiles_mean(const std::vector<int64_t>& q) {
  if (q.empty()) return 0;
  if (q.size() == 1) return static_cast<double>(q[0]);
  double sum = 0;
  for (size_t i = 0; i + 1 < q.size(); ++i) sum += (static_cast<double>(q[i]) + static_cast<double>(q[i + 1])) / 2;
  return sum / static_cast<double>(q.size() - 1);
}

std::vector<int64_t> quantiles_from_buckets(const std::vector<DurationBucket>& all_buckets, size_t steps) {
  std::vector<DurationBucket> buckets;
  uint64_t total = 0;
  for (const DurationBucket& b : all_buckets) {
    if (b.count == 0) continue;
    buckets.push_back(b);
    total += b.count;
  }
  if (total == 0 || steps == 0) return {};
  std::vector<int64_t> out;
  out.reserve(steps + 1);
  size_t bucket = 0;
  double below = 0;  // durations in the buckets before `bucket`
  for (size_t step = 0; step <= steps; ++step) {
    // The rank of this quantile among the durations, from 0 to total (the top of the slowest).
    const double rank = static_cast<double>(total) * static_cast<double>(step) / static_cast<double>(steps);
    while (bucket + 1 < buckets.size() && below + static_cast<double>(buckets[bucket].count) < rank) {
      below += static_cast<double>(buckets[bucket].count);
      ++bucket;
    }
    const DurationBucket& b = buckets[bucket];
    const double frac = std::clamp((rank - below) / static_cast<double>(b.count), 0.0, 1.0);
    out.push_back(b.lower_ns + std::llround(frac * static_cast<double>(b.upper_ns - b.lower_ns)));
  }
  return out;
}

namespace {

// A message on the wire: who sent it (the sender's index) and when (true time).
struct TwinFrame {
  uint32_t sender = 0;
  int64_t sent_ns = 0;
};
constexpr size_t kTwinFrameBytes = 4 + 8;
Bytes encode(const TwinFrame& f) {
  Bytes out(kTwinFrameBytes);
  std::memcpy(out.data(), &f.sender, 4);
  std::memcpy(out.data() + 4, &f.sent_ns, 8);
  return out;
}
TwinFrame decode(ByteView bytes) {
  MSGSIM_ASSERT_EQ(bytes.size(), kTwinFrameBytes);
  TwinFrame f;
  std::memcpy(&f.sender, bytes.data(), 4);
  std::memcpy(&f.sent_ns, bytes.data() + 4, 8);
  return f;
}

// Bounds: far above what a few seconds at a few thousand messages per second hold.
constexpr size_t kHeldMax = 4'000'000;
// Turns drawn one by one for one charge, at most; a larger charge (an overloaded twin's batch of
// thousands of messages) draws this many and scales their sum, which by then is close to its
// mean anyway. Without the bound an overloaded rate's batches grow each turn and so would the
// draws.
constexpr int64_t kTurnsDrawnMax = 4096;

// An event loop's CPU for some work, drawn as turns of the loop (LiveTwinCosts' turn
// distributions): `turns` (a real number: its fraction is one more turn with that probability)
// turns drawn from `quantiles_ns`, each scaled by `scale` so that the expected sum is the work's
// mean CPU.
int64_t draw_turns(Context& ctx, const std::vector<int64_t>& quantiles_ns, double turns, double scale) {
  MSGSIM_ASSERT(turns >= 0 && std::isfinite(turns), "turns to draw: " + std::to_string(turns));
  auto whole = static_cast<int64_t>(turns);
  if (ctx.rng().uniform01() < turns - static_cast<double>(whole)) whole++;
  const int64_t drawn = std::min(whole, kTurnsDrawnMax);
  double sum_ns = 0;
  for (int64_t i = 0; i < drawn; ++i) sum_ns += static_cast<double>(sample_quantiles(quantiles_ns, ctx.rng().uniform01()));
  if (drawn > 0) sum_ns *= static_cast<double>(whole) / static_cast<double>(drawn);
  return std::llround(sum_ns * scale);
}

// An exponentially distributed duration of mean `mean_ns` (at least 1 ns).
int64_t draw_exponential(Context& ctx, double mean_ns) {
  return std::max<int64_t>(1, std::llround(-std::log(1.0 - ctx.rng().uniform01()) * mean_ns));
}

// A loop's preemptions (LiveTwinCosts' *_preemptions_per_s, *_preemption_mean_ns): the timer of
// the next spell, at Poisson times (none at rate 0)...
void arm_preemption(Context& ctx, double per_s, uint64_t tag) {
  if (per_s > 0) ctx.set_timer(draw_exponential(ctx, 1e9 / per_s), tag);
}
// ...and a spell: another thread has the core, so every frame and completion waits behind it; it
// is not the loop's own CPU (not in the utilisation). `busy_until_ns` is the loop's: it stays
// awake through the spell.
void preempt(Context& ctx, double per_s, int64_t mean_ns, int64_t& busy_until_ns, uint64_t tag) {
  const int64_t spell_ns = draw_exponential(ctx, static_cast<double>(mean_ns));
  ctx.charge_cpu(spell_ns);
  busy_until_ns = std::max(busy_until_ns, ctx.now_ns()) + spell_ns;
  arm_preemption(ctx, per_s, tag);
}

// The scale that makes `turns_per_msg` turns of the distribution average `ns_per_msg`.
double turn_scale(const std::vector<int64_t>& quantiles_ns, double turns_per_msg, int64_t ns_per_msg) {
  const double mean_turn_ns = quantiles_mean(quantiles_ns);
  if (quantiles_ns.empty() || turns_per_msg <= 0 || mean_turn_ns <= 0) return 0;
  return static_cast<double>(ns_per_msg) / (turns_per_msg * mean_turn_ns);
}
constexpr size_t kSamplesMax = 4'000'000;

// The server process: one core, one FIFO, the queue's batching and the process's group commit.
class ServerProcessNode final : public Node {
 public:
  struct Shared {
    const LiveTwinCosts* costs = nullptr;
    int64_t commit_window_ns = 0, linger_ns = 0;
    int64_t storage_commit_window_ns = -1;  // negative: each flush commits at once
    int64_t charged_ns = 0;
    uint64_t batches = 0, released = 0, files_synced = 0, checkpoints = 0;
    // The measured window (sends in [measure_from_ns, stop_ns)) and its messages' stage times
    // since the send (LiveTwinResult's read/records/written).
    int64_t measure_from_ns = 0, stop_ns = 0;
    std::vector<int64_t> read_ns, records_ns, written_ns;
  };
  explicit ServerProcessNode(Shared& shared)
      : shared_(shared), fsync_draws_(std::clamp(shared.costs->fsync_correlation, -0.99, 0.99)) {}
  void on_start(Context& ctx) override {
    arm_preemption(ctx, shared_.costs->server_preemptions_per_s, kPreempted);
  }
  void on_accept(Context&, ConnId conn, NodeId) override { loader_conn_ = conn; }
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId conn, ByteView bytes) override {
    loader_conn_ = conn;
    if (shared_.costs->idle_hop_quantiles_ns.empty()) {
      on_send(ctx, Bytes(bytes.begin(), bytes.end()));
      return;
    }
    // The hop from the loader: the network charged nothing; if the loop is asleep the frame
    // reaches it after a wake-up drawn from the measured distribution (a timer per frame in
    // flight); a busy loop finds it on its next epoll_wait. The simulator runs a handler once the
    // core is free, so a frame that arrived during charged CPU runs exactly when that CPU ends.
    if (loop_awake(ctx)) {
      on_send(ctx, Bytes(bytes.begin(), bytes.end()));
      return;
    }
    MSGSIM_ASSERT_LT(arriving_.size(), kHeldMax);
    const uint64_t tag = next_arrival_tag_++;
    arriving_.emplace(tag, Bytes(bytes.begin(), bytes.end()));
    ctx.set_timer(std::max<int64_t>(1, draw_hop(ctx)), tag);
  }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t tag) override {
    if (tag >= kFirstArrival) {
      auto it = arriving_.find(tag);
      MSGSIM_ASSERT(it != arriving_.end(), "no frame arriving with timer tag " + std::to_string(tag));
      Bytes frame = std::move(it->second);
      arriving_.erase(it);
      on_send(ctx, std::move(frame));
      return;
    }
    switch (tag) {
      case kCommit:
        // The queue commits: its log's fsync is deferred to the group commit; the answers go to
        // the chat server (in process), the records wait the linger.
        commit_armed_ = false;
        charge(ctx, stage_cpu(ctx, shared_.costs->server_ns_on_commit, open_batch_.size()));
        maybe_checkpoint(ctx);
        defer_sync(ctx, kQueueFile);
        MSGSIM_ASSERT_LT(committed_.size() + open_batch_.size(), kHeldMax);
        for (Bytes& frame : open_batch_) committed_.push_back(std::move(frame));
        open_batch_.clear();
        if (!flush_armed_ && !committed_.empty()) {
          flush_armed_ = true;
          ctx.set_timer(shared_.linger_ns, kFlush);
        }
        return;
      case kFlush:
        // The storage stores the records and fans them out (its CPU charged here: in live the
        // fan-out's share runs after the commit, but every stage waits in the one FIFO, so a
        // Deliver is decided after the same sum of CPU either way). With a positive commit
        // window (storage's group commit) the transaction stays open until the window ends, so
        // the records of later flushes join it. A window of 0 (the loop's next turn) commits at
        // once here: live posts the commit, and Asio runs a posted handler before the socket
        // events its reactor has not polled yet, so it follows the flush with nothing between
        // at the twin's resolution (modelled as a zero timer behind every frame that reached the
        // loop meanwhile, the twin's p50 and p99 at 2,000 msg/s rose above live's, session 16);
        // a negative window, the storage before its group commit, also commits at once.
        flush_armed_ = false;
        for (const Bytes& frame : committed_) note_stage(ctx, shared_.records_ns, frame);
        charge(ctx, stage_cpu(ctx, shared_.costs->server_ns_on_records, committed_.size()));
        MSGSIM_ASSERT_LT(storing_.size() + committed_.size(), kHeldMax);
        for (Bytes& frame : committed_) storing_.push_back(std::move(frame));
        committed_.clear();
        if (shared_.storage_commit_window_ns <= 0) {
          commit_storage(ctx);
        } else if (!storage_commit_armed_) {
          storage_commit_armed_ = true;
          ctx.set_timer(shared_.storage_commit_window_ns, kStorageCommit);
        }
        return;
      case kStorageCommit:
        storage_commit_armed_ = false;
        commit_storage(ctx);
        return;
      case kPreempted:
        preempt(ctx, shared_.costs->server_preemptions_per_s, shared_.costs->server_preemption_mean_ns, busy_until_ns_, kPreempted);
        return;
      case kStartBatch:
        start_posted_ = false;
        start_batch(ctx);
        return;
      case kSyncDone:
        // The worker's fdatasyncs are done; its completion reaches the loop after a wake-up if
        // the loop is asleep, on the loop's next turn if it is busy.
        ctx.set_timer(loop_awake(ctx) ? 0 : std::max<int64_t>(1, draw_hop(ctx)), kBatchDone);
        return;
      case kBatchDone:
        // The worker posted its completion: the loop starts the next batch, then releases.
        in_flight_ = false;
        durable_ = started_;
        shared_.batches++;
        charge(ctx, shared_.costs->server_ns_per_batch);
        start_batch(ctx);
        release(ctx);
        return;
      default: MSGSIM_ASSERT(false, "unknown timer tag " + std::to_string(tag));
    }
  }

 private:
  static constexpr uint64_t kCommit = 1, kFlush = 2, kStartBatch = 3, kBatchDone = 4, kSyncDone = 5, kPreempted = 6,
                            kStorageCommit = 7;
  static constexpr uint64_t kFirstArrival = 1000;  // tags of frames arriving from a loader
  static constexpr uint32_t kQueueFile = 1, kStorageFile = 2;  // bits of dirty_files_
  struct Held {
    uint64_t ticket;
    Bytes frame;
  };

  // A Send: the chat server forwards it, the queue appends it to the open transaction.
  void on_send(Context& ctx, Bytes frame) {
    note_stage(ctx, shared_.read_ns, frame);
    charge(ctx, stage_cpu(ctx, shared_.costs->server_ns_on_send, 1));
    MSGSIM_ASSERT_LT(open_batch_.size(), kHeldMax);
    open_batch_.push_back(std::move(frame));
    if (!commit_armed_) {
      commit_armed_ = true;
      ctx.set_timer(shared_.commit_window_ns, kCommit);
    }
  }
  // Whether the loop is still running at this handler's start: it waited for the CPU charged
  // before it (which ends now) or runs inside it.
  bool loop_awake(const Context& ctx) const { return busy_until_ns_ > 0 && busy_until_ns_ >= ctx.now_ns(); }
  // A wake-up of a sleeping thread or process: drawn from calibrate's idle-hop distribution, zero
  // where it was not measured.
  int64_t draw_hop(Context& ctx) const {
    const auto& q = shared_.costs->idle_hop_quantiles_ns;
    return q.empty() ? 0 : sample_quantiles(q, ctx.rng().uniform01());
  }
  // live/group_commit.h: a deferred sync joins the batch being formed; if none is in flight, a
  // batch start is posted to the loop (a zero timer).
  void defer_sync(Context& ctx, uint32_t file) {
    dirty_files_ |= file;
    if (!in_flight_ && !start_posted_) {
      start_posted_ = true;
      ctx.set_timer(0, kStartBatch);
    }
  }
  uint64_t sync_point() const { return dirty_files_ != 0 ? started_ + 1 : started_; }
  void start_batch(Context& ctx) {
    if (in_flight_ || dirty_files_ == 0) return;
    // The files in the order they were first deferred: the queue's log before the storage.
    int64_t sync_ns = 0;
    for (uint32_t file : {kQueueFile, kStorageFile}) {
      if ((dirty_files_ & file) == 0) continue;
      sync_ns += draw_fsync(ctx);
      shared_.files_synced++;
    }
    dirty_files_ = 0;
    started_++;
    in_flight_ = true;
    ctx.set_timer(std::max<int64_t>(1, sync_ns), shared_.costs->idle_hop_quantiles_ns.empty() ? kBatchDone : kSyncDone);
  }
  // The storage's transaction commits (its file's fsync deferred to the group commit): each
  // Deliver leaves once the batch covering both commits is durable.
  void commit_storage(Context& ctx) {
    if (storing_.empty()) return;
    maybe_checkpoint(ctx);
    defer_sync(ctx, kStorageFile);
    const uint64_t ticket = sync_point();
    for (Bytes& frame : storing_) held_.push_back(Held{ticket, std::move(frame)});
    storing_.clear();
    release(ctx);
  }
  // The Delivers whose batch is durable go to the devices. With the bench's device sessions on
  // io_uring (live/lean_websocket.h) the writes are submitted from a handler the loop posts, but
  // Asio runs a posted handler before the socket events its reactor has not polled yet, so at
  // the twin's resolution they leave at once, as on epoll. (Modelled as a zero timer behind every
  // frame that reached the loop meanwhile, the twin's p99 at 2,000 msg/s rose 7-25 % above live's.)
  void release(Context& ctx) {
    while (!held_.empty() && held_.front().ticket <= durable_) {
      note_stage(ctx, shared_.written_ns, held_.front().frame);
      ctx.send(loader_conn_, std::move(held_.front().frame));
      held_.pop_front();
      shared_.released++;
    }
  }
  // One fdatasync's time: independent draws from the measured distribution, or, where the bench
  // measured how alike consecutive ones were, a correlated sequence of draws from it.
  int64_t draw_fsync(Context& ctx) {
    const LiveTwinCosts& c = *shared_.costs;
    if (c.fsync_correlation == 0) return sample_quantiles(c.fsync_quantiles_ns, ctx.rng().uniform01());
    const double u1 = ctx.rng().uniform01();
    return fsync_draws_.next(c.fsync_quantiles_ns, u1, ctx.rng().uniform01());
  }
  // A stage's CPU for `messages` messages: its mean each, or, where the loop's turns were
  // measured, the stage's share of each message's turns drawn from their distribution.
  int64_t stage_cpu(Context& ctx, int64_t stage_ns, size_t messages) {
    const LiveTwinCosts& c = *shared_.costs;
    const int64_t per_message_ns = c.server_ns_per_message();
    if (c.server_turn_quantiles_ns.empty() || per_message_ns <= 0) return stage_ns * static_cast<int64_t>(messages);
    if (turn_scale_ < 0) turn_scale_ = turn_scale(c.server_turn_quantiles_ns, c.server_turns_per_msg, per_message_ns);
    const double turns = c.server_turns_per_msg * static_cast<double>(stage_ns) / static_cast<double>(per_message_ns) *
                         static_cast<double>(messages);
    return draw_turns(ctx, c.server_turn_quantiles_ns, turns, turn_scale_);
  }
  // A commit's checkpoint, with the measured probability: the loop stalls for its measured
  // duration (its CPU and its fsyncs, both on the loop thread in live).
  void maybe_checkpoint(Context& ctx) {
    const LiveTwinCosts& c = *shared_.costs;
    if (c.checkpoints_per_commit <= 0 || c.checkpoint_quantiles_ns.empty()) return;
    if (ctx.rng().uniform01() >= c.checkpoints_per_commit) return;
    shared_.checkpoints++;
    charge(ctx, sample_quantiles(c.checkpoint_quantiles_ns, ctx.rng().uniform01()));
  }
  // A measured message's time since its send, at a stage.
  void note_stage(const Context& ctx, std::vector<int64_t>& samples, const Bytes& frame) const {
    const int64_t sent_ns = decode(frame).sent_ns;
    if (sent_ns < shared_.measure_from_ns || sent_ns >= shared_.stop_ns || samples.size() >= kSamplesMax) return;
    samples.push_back(ctx.now_ns() - sent_ns);
  }
  void charge(Context& ctx, int64_t cost_ns) {
    if (cost_ns <= 0) return;
    ctx.charge_cpu(cost_ns);
    shared_.charged_ns += cost_ns;
    busy_until_ns_ = std::max(busy_until_ns_, ctx.now_ns()) + cost_ns;
  }
  Shared& shared_;
  ConnId loader_conn_ = kNoConn;
  bool commit_armed_ = false, flush_armed_ = false, start_posted_ = false, in_flight_ = false;
  bool storage_commit_armed_ = false;
  uint32_t dirty_files_ = 0;
  uint64_t started_ = 0, durable_ = 0;
  // A Send's frame on its way: in the queue's open transaction, committed and lingering, in the
  // storage's open transaction, then held for its group commit batch (held_).
  std::vector<Bytes> open_batch_, committed_, storing_;
  std::deque<Held> held_;
  uint64_t next_arrival_tag_ = kFirstArrival;
  int64_t busy_until_ns_ = 0;  // the end of the CPU charged so far: the loop is awake until then
  double turn_scale_ = -1;     // turn_scale() of the server loop's turns, once computed
  CorrelatedQuantileDraws fsync_draws_;  // used where costs->fsync_correlation is not 0
  std::map<uint64_t, Bytes> arriving_;  // by timer tag
};

// The loader processes (senders and receivers): every millisecond, the sends owed by then.
class LoaderNode final : public Node {
 public:
  struct Shared {
    NodeId server = kNoNode;
    const LiveTwinCosts* costs = nullptr;
    const std::vector<int64_t>* idle_hop_quantiles_ns = nullptr;  // the receiving loader's wake-up
    double rate_per_s = 0;
    uint32_t pairs = 1;
    int64_t start_ns = 0, measure_from_ns = 0, stop_ns = 0;
    uint64_t sent = 0, measured_delivered = 0;
    std::vector<int64_t> samples;
  };
  explicit LoaderNode(Shared& shared) : shared_(shared) {}
  void on_start(Context& ctx) override {
    conn_ = ctx.connect(shared_.server);
    ctx.set_timer(kTickNs, kTick);
    arm_preemption(ctx, shared_.costs->client_preemptions_per_s, kPreempted);
  }
  void on_accept(Context&, ConnId, NodeId) override {}
  void on_connected(Context&, ConnId) override {}
  void on_frame(Context& ctx, ConnId, ByteView bytes) override {
    const TwinFrame f = decode(bytes);
    // The hop to the receiving loader: the network charged nothing where the idle-hop
    // distribution was measured; an idle receiver wakes after a draw from it, a busy one (its
    // measured turns charged) reads the Deliver when its core is free, which is now. The wake-up
    // adds to this message's latency only: the twin does not delay the loop's later work by it.
    const bool awake = busy_until_ns_ > 0 && busy_until_ns_ >= ctx.now_ns();
    charge_turns(ctx, 1 - kClientSendShare);
    if (f.sent_ns < shared_.measure_from_ns || f.sent_ns >= shared_.stop_ns) return;
    shared_.measured_delivered++;
    const auto& q = *shared_.idle_hop_quantiles_ns;
    const int64_t wake_ns = q.empty() || awake ? 0 : sample_quantiles(q, ctx.rng().uniform01());
    if (shared_.samples.size() < kSamplesMax) shared_.samples.push_back(ctx.now_ns() + wake_ns - f.sent_ns);
  }
  void on_disconnect(Context&, ConnId, DisconnectReason) override {}
  void on_timer(Context& ctx, uint64_t tag) override {
    if (tag == kPreempted) {
      preempt(ctx, shared_.costs->client_preemptions_per_s, shared_.costs->client_preemption_mean_ns, busy_until_ns_, kPreempted);
      return;
    }
    const int64_t now = ctx.now_ns();
    if (now >= shared_.stop_ns) return;
    const auto owed = static_cast<uint64_t>(static_cast<double>(now - shared_.start_ns) * shared_.rate_per_s / 1e9);
    while (shared_.sent < owed) {
      // Each Send leaves after the loop's CPU for it (charged before the send).
      charge_turns(ctx, kClientSendShare);
      ctx.send(conn_, encode(TwinFrame{static_cast<uint32_t>(shared_.sent % shared_.pairs), now}));
      shared_.sent++;
    }
    ctx.set_timer(kTickNs, kTick);
  }

 private:
  static constexpr int64_t kTickNs = kNanosPerMilli;
  static constexpr uint64_t kTick = 0, kPreempted = 1;
  // The client loop's CPU for `share` of a message, where its turns were measured.
  void charge_turns(Context& ctx, double share) {
    const LiveTwinCosts& c = *shared_.costs;
    if (c.client_turn_quantiles_ns.empty() || c.client_ns_per_message <= 0) return;
    if (turn_scale_ < 0) turn_scale_ = turn_scale(c.client_turn_quantiles_ns, c.client_turns_per_msg, c.client_ns_per_message);
    const int64_t cost_ns = draw_turns(ctx, c.client_turn_quantiles_ns, c.client_turns_per_msg * share, turn_scale_);
    if (cost_ns <= 0) return;
    ctx.charge_cpu(cost_ns);
    busy_until_ns_ = std::max(busy_until_ns_, ctx.now_ns()) + cost_ns;
  }
  Shared& shared_;
  ConnId conn_ = kNoConn;
  int64_t busy_until_ns_ = 0;  // the end of the CPU charged so far (client turns measured only)
  double turn_scale_ = -1;
};

double percentile_ms(std::vector<int64_t>& samples, double q) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const size_t index = std::min(samples.size() - 1, static_cast<size_t>(q * static_cast<double>(samples.size())));
  return static_cast<double>(samples[index]) / 1e6;
}

}  // namespace

LiveTwinResult run_live_twin(const LiveTwinCosts& costs, const LiveTwinOptions& options) {
  MSGSIM_ASSERT_GT(options.offered_per_s, 0.0);
  sim::NetworkConfig net;
  net.regions = {"loopback"};
  // Each hop: half the back-to-back round trip, unless the idle-hop distribution was measured;
  // then the nodes draw it (the network charges nothing).
  net.base_ns = {{costs.idle_hop_quantiles_ns.empty() ? costs.loopback_rtt_ns / 2 : 0}};
  net.jitter_mean_ns = {{0}};
  net.connection_timeout_ns = 10 * kNanosPerSecond;
  sim::Simulator sim(options.seed, net);
  ServerProcessNode::Shared server_shared;
  server_shared.costs = &costs;
  server_shared.commit_window_ns = std::max<int64_t>(0, options.queue_commit_window_ns);
  server_shared.linger_ns = std::max<int64_t>(0, options.queue_linger_ns);
  server_shared.storage_commit_window_ns = options.storage_commit_window_ns;
  LoaderNode::Shared loader;
  loader.costs = &costs;
  loader.idle_hop_quantiles_ns = &costs.idle_hop_quantiles_ns;
  loader.rate_per_s = options.offered_per_s;
  loader.pairs = std::max<uint32_t>(1, options.pairs);
  loader.start_ns = 0;
  loader.measure_from_ns = options.warmup_ns;
  loader.stop_ns = options.warmup_ns + options.measure_ns;
  server_shared.measure_from_ns = loader.measure_from_ns;
  server_shared.stop_ns = loader.stop_ns;
  const NodeId server = sim.add_node("server-process", 0, [&] { return std::make_unique<ServerProcessNode>(server_shared); });
  sim.set_cores(server, 1);
  loader.server = server;
  const NodeId client = sim.add_node("loaders", 0, [&] { return std::make_unique<LoaderNode>(loader); });
  sim.set_cores(client, 1);  // one thread; charged only where its turns were measured
  sim.start(server);
  sim.start(client);
  sim.run_until(loader.stop_ns + options.drain_ns);
  LiveTwinResult result;
  result.offered_per_s = options.offered_per_s;
  result.delivered_per_s = static_cast<double>(loader.measured_delivered) / (static_cast<double>(options.measure_ns) / 1e9);
  result.p50_ms = percentile_ms(loader.samples, 0.50);
  result.p99_ms = percentile_ms(loader.samples, 0.99);
  result.read_p50_ms = percentile_ms(server_shared.read_ns, 0.50);
  result.read_p99_ms = percentile_ms(server_shared.read_ns, 0.99);
  result.records_p50_ms = percentile_ms(server_shared.records_ns, 0.50);
  result.records_p99_ms = percentile_ms(server_shared.records_ns, 0.99);
  result.written_p50_ms = percentile_ms(server_shared.written_ns, 0.50);
  result.written_p99_ms = percentile_ms(server_shared.written_ns, 0.99);
  result.server_utilisation =
      static_cast<double>(server_shared.charged_ns) / static_cast<double>(loader.stop_ns + options.drain_ns);
  result.batches = server_shared.batches;
  result.mean_batch_messages =
      server_shared.batches == 0 ? 0 : static_cast<double>(server_shared.released) / static_cast<double>(server_shared.batches);
  result.files_per_batch =
      server_shared.batches == 0 ? 0 : static_cast<double>(server_shared.files_synced) / static_cast<double>(server_shared.batches);
  result.checkpoints = server_shared.checkpoints;
  result.digest_hex = sim.digest_hex();
  return result;
}

}  // namespace msgsim::reports
