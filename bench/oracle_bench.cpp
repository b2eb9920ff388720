// BM_Oracle: the whole checker (JSON Lines reading, parsing, every invariant, the verdict) over
// a generated valid history of about 10 million events; items per second = events per second.
// Counters: bytes_per_message is the checker's own state at the end of the history divided by
// the number of distinct messages, counted two ways: `state_bytes_per_msg` sums the capacities
// of its containers (Checker::memory_bytes), `heap_bytes_per_msg` is what malloc says the
// checker holds (mallinfo2 before and after). The record tables are mapped directly, outside
// malloc (detail::ReservedVector), so the heap counter sees only the rest of the state; the
// bar (<= 200) is checked by state_bytes_per_msg, which counts the tables' usable chunks.
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <map>
#include <string>

#include "oracle/checker.h"
#include "oracle/generate.h"
#include "oracle/jsonl.h"

namespace msgsim::history {
namespace {

struct History {
  std::string text;
  uint64_t events = 0;
};

const History& history_of(uint64_t events) {
  static std::map<uint64_t, History> cache;
  auto it = cache.find(events);
  if (it != cache.end()) return it->second;
  GeneratorOptions o;
  o.seed = 42;
  o.users = 20000;
  o.devices_per_user_max = 3;
  o.one_to_one_convs = 20000;
  o.groups = 2000;
  o.group_size_max = 12;
  o.deliver_burst_max = 24;
  // The quiescent drain at the end adds what is still owed (about 15% here): aim below.
  o.events = events * 87 / 100;
  History& h = cache[events];
  h.text.reserve(events * 150);
  generate_history(o, [&](const Event& e) {
    h.text += to_jsonl(e);
    ++h.events;
  });
  return h;
}

size_t heap_in_use() { return mallinfo2().uordblks; }

void BM_Oracle(benchmark::State& state) {
  const History& h = history_of(static_cast<uint64_t>(state.range(0)));
  double state_bytes = 0;
  double heap_bytes = 0;
  double messages = 0;
  bool valid = true;
  for (auto _ : state) {
    const size_t heap_before = heap_in_use();
    Checker checker;
    // As `msgsim check FILE` does (check_text over the mapped file): lines cut straight out of
    // the text, through the LineFeed pipeline, which parses each line where it lies.
    LineReader reader(h.text);
    LineFeed feed(checker, &reader);
    std::string_view line;
    for (;;) {
      Result<bool> more = reader.next(line);
      if (!more.ok() || !*more) break;
      if (!feed.push(line).ok()) {
        state.SkipWithError("the generated history did not parse");
        return;
      }
    }
    feed.drain();
    const size_t heap_after = heap_in_use();
    state_bytes = static_cast<double>(checker.memory_bytes());
    heap_bytes = static_cast<double>(heap_after - heap_before);
    const Verdict verdict = checker.finish();
    messages = static_cast<double>(verdict.stats.messages);
    valid = verdict.valid;
    benchmark::DoNotOptimize(verdict);
  }
  if (!valid) state.SkipWithError("the generated history was judged invalid");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * h.events));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * h.text.size()));
  state.counters["events"] = static_cast<double>(h.events);
  state.counters["messages"] = messages;
  state.counters["state_bytes_per_msg"] = state_bytes / messages;
  state.counters["heap_bytes_per_msg"] = heap_bytes / messages;
}
BENCHMARK(BM_Oracle)->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMillisecond)->Iterations(1);

// The reader and parser alone (each line parsed where the reader has it, as LineFeed does), for
// the split of the time: BM_Oracle's time per event minus this one's is the judging.
void BM_OracleParseOnly(benchmark::State& state) {
  const History& h = history_of(static_cast<uint64_t>(state.range(0)));
  for (auto _ : state) {
    LineReader reader(h.text);
    EventParser parser;
    EventView event;
    std::string_view line;
    uint64_t parsed = 0;
    for (;;) {
      Result<bool> more = reader.next(line);
      if (!more.ok() || !*more) break;
      parsed += parser.parse(line, event).ok() ? 1 : 0;
    }
    benchmark::DoNotOptimize(parsed);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * h.events));
}
BENCHMARK(BM_OracleParseOnly)->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace
}  // namespace msgsim::history
