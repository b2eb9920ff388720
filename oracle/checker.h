// The streaming checker of spec/history.md: observe() each event as it happens (the simulator
// does, with no file in between), then finish() for the verdict. check_stream() does the same
// for a JSON Lines stream (a file, stdin), turning malformed lines into a bad-input error.
//
// Time is linear in the history (plus a sort of the few messages that appear before their
// send), and the state is per message, per device, per conversation and per membership change;
// nothing is kept per event. Per message the checker holds its id, a fixed-size record and two
// bits per device of its conversation that may show it (shown, expired), which is what
// no-duplicate, gap-free, no-loss and expiry need.
#pragma once

#include <cstdint>
#include <istream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/result.h"
#include "oracle/event.h"

namespace msgsim::history {

// The invariants, in the spec's order; to_string gives the name printed in verdicts.
enum class Invariant : uint8_t {
  no_loss,
  no_duplicate,
  no_phantom,
  order,
  gap_free,
  seq_agreement,
  sender_fifo,
  causal,
  receipts,
  membership,
  expiry,
  no_rejected_delivery,
  decrypt,
  latency,
};
inline constexpr int kInvariantCount = 14;
const char* to_string(Invariant invariant);

struct CheckerOptions {
  // latency fails only when this is set and the p99 delivery time exceeds it.
  std::optional<int64_t> latency_p99_bound_ns;
  // How many examples each invariant keeps (counts are always complete).
  size_t examples_max = 5;
};

// One violation: the messages and the history lines (1-based) involved, and what went wrong.
struct Example {
  std::vector<std::string> msgs;
  std::vector<uint64_t> lines;
  std::string detail;
};

struct InvariantResult {
  Invariant invariant = Invariant::no_loss;
  std::string name;
  bool judged = true;  // no-loss is not judged when the run did not end quiescent
  bool valid = true;
  uint64_t count = 0;  // violations found
  std::vector<Example> examples;
};

struct LatencyStats {
  uint64_t samples = 0;
  // p50 and p99 come from a log-linear histogram, within 1% of the exact order statistic; max
  // is exact, and so is the bound check (it counts the samples under the bound exactly).
  int64_t p50_ns = 0;
  int64_t p99_ns = 0;
  int64_t max_ns = 0;
  std::optional<int64_t> bound_p99_ns;
  uint64_t over_bound = 0;  // samples above the bound
};

struct Stats {
  uint64_t events = 0;
  uint64_t messages = 0;  // distinct msg ids
  uint64_t sends = 0;
  uint64_t acks = 0;
  uint64_t delivers = 0;
  uint64_t users = 0;
  uint64_t devices = 0;
  uint64_t convs = 0;
  bool ended = false;      // an `end` event was seen
  bool quiescent = false;  // the last `end` said quiescent
  int64_t last_t = 0;
  LatencyStats latency;
  uint64_t checker_bytes = 0;  // the checker's own state at finish (capacity, not size)
};

struct Verdict {
  bool valid = true;
  std::vector<InvariantResult> invariants;  // all 14, in the spec's order
  Stats stats;

  const InvariantResult& operator[](Invariant invariant) const {
    return invariants[static_cast<size_t>(invariant)];
  }
  const InvariantResult* find(std::string_view name) const;
};

// The human summary: one line per invariant, then its first examples, then the stats.
std::string render_summary(const Verdict& verdict);
// {"valid": bool, "invariants": {NAME: {"valid", "count", "examples", ...}}, "stats": {...}}
std::string render_json(const Verdict& verdict);

class LineReader;  // oracle/jsonl.h

class Checker {
 public:
  explicit Checker(CheckerOptions options = {});
  ~Checker();
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;

  // The event on history line events_observed() + 1. An event whose t is smaller than the
  // previous one is bad input: it is recorded in input_error() and otherwise ignored.
  void observe(const Event& event);
  // The same for an event whose strings are views (what EventParser gives).
  void observe(const EventView& event);
  // A hint that `event` comes next: starts loading the id-table slots observing it will look
  // up, so those cache misses overlap with observing the current event. Changes no verdict.
  // (LineFeed does this, and more, for a JSON Lines stream.)
  void prefetch(const EventView& event);
  // The verdict over everything observed. Call once.
  Verdict finish();

  const std::optional<Error>& input_error() const;
  uint64_t events_observed() const;
  // Bytes the checker's structures hold now (capacities of every container it owns).
  size_t memory_bytes() const;

 private:
  friend class LineFeed;
  struct State;
  std::unique_ptr<State> state_;
};

// Feeds JSON Lines to a Checker through a short pipeline, so that the cache misses of several
// events overlap instead of following one another: each line is parsed (into a copy the feed
// keeps), its ids hashed and their table slots prefetched kLinesAhead lines before it is
// judged, and the records it will touch (message, device, device-conversation) prefetched
// halfway. The verdict is exactly what observing the lines one by one gives. check_stream and
// the benchmark read through it.
class LineFeed {
 public:
  static constexpr size_t kLinesAhead = 12;
  // Lines the feed holds at once: a LineReader that keeps this many (LineReader(in,
  // kLinesInFlight)) lets the feed parse each line where the reader has it instead of a copy.
  static constexpr size_t kLinesInFlight = kLinesAhead + 1;

  // `source`, when given, is the reader the lines come from: if it keeps kLinesInFlight lines,
  // they are not copied.
  explicit LineFeed(Checker& checker, const LineReader* source = nullptr);
  ~LineFeed();
  LineFeed(const LineFeed&) = delete;
  LineFeed& operator=(const LineFeed&) = delete;

  // Parses the next line and observes the one kLinesAhead before it. A malformed line is not
  // kept: every line before it is observed first (so that the checker's own bad-input error,
  // a decreasing t, on an earlier line is seen first), and the parse error is returned (the
  // reason only; the caller knows the line number).
  Status push(std::string_view line);
  // Observes every line still in the pipeline.
  void drain();

 private:
  struct Ring;
  Checker& checker_;
  std::unique_ptr<Ring> ring_;
  bool copy_lines_ = true;
};

// Reads JSON Lines from `in` and judges them. Bad input (spec/history.md "Format") gives an
// Error{bad_input, "line N: reason"}.
Result<Verdict> check_stream(std::istream& in, CheckerOptions options = {});
// The same over bytes in memory (a MappedFile's, a string): each line is judged where it lies,
// with no copy; the verdict and the errors are check_stream's over the same bytes.
Result<Verdict> check_text(std::string_view text, CheckerOptions options = {});

}  // namespace msgsim::history
