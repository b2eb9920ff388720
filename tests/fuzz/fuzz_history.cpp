// Fuzzes the oracle end to end: any bytes as a JSON Lines history. Nothing may crash, hang or
// trip a sanitizer; bad input must come back as an error naming a line. Every line that parses
// must survive the writer and parse back to the same line, and the parser's fast path for
// plainly written lines must agree with the general parser on every line. The history judged
// from memory (check_text, what `msgsim check FILE` does) must come out exactly as the stream.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>

#include "oracle/checker.h"
#include "oracle/jsonl.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace msgsim::history;
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::istringstream in(text);
  CheckerOptions options;
  options.latency_p99_bound_ns = 1'000'000;
  msgsim::Result<Verdict> verdict = check_stream(in, options);
  if (verdict.ok()) {
    const std::string summary = render_summary(*verdict);
    const std::string json = render_json(*verdict);
    if (summary.empty() || json.empty()) std::abort();
  } else if (verdict.error().message.rfind("line ", 0) != 0) {
    std::abort();
  }
  msgsim::Result<Verdict> from_memory = check_text(text, options);
  if (from_memory.ok() != verdict.ok()) std::abort();
  if (verdict.ok() && render_json(*from_memory) != render_json(*verdict)) std::abort();
  if (!verdict.ok() && from_memory.error().message != verdict.error().message) std::abort();

  std::string_view rest(text);
  Event event;
  Event back;
  EventParser parser;
  EventParser general;
  EventView parsed;
  EventView parsed_general;
  while (!rest.empty()) {
    const size_t newline = rest.find('\n');
    const std::string_view line = rest.substr(0, newline);
    rest = newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);
    const msgsim::Status fast_status = parser.parse(line, parsed);
    const msgsim::Status general_status = general.parse_general(line, parsed_general);
    if (fast_status.ok() != general_status.ok()) std::abort();
    if (!fast_status.ok() && fast_status.error().message != general_status.error().message) std::abort();
    if (fast_status.ok() && to_jsonl(parsed.to_event()) != to_jsonl(parsed_general.to_event())) std::abort();
    if (!parse_event_line(line, event).ok()) continue;
    const std::string written = to_jsonl(event);
    if (!parse_event_line(std::string_view(written).substr(0, written.size() - 1), back).ok()) std::abort();
    if (to_jsonl(back) != written) std::abort();
  }
  return 0;
}
