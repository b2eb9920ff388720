// Rendering a verdict: the human summary and the JSON object of spec/history.md "Verdict".
#include <cstdio>
#include <string>

#include "oracle/checker.h"
#include "oracle/jsonl.h"

namespace msgsim::history {

namespace {

std::string milliseconds(int64_t ns) {
  char text[48];
  std::snprintf(text, sizeof text, "%.3f ms", static_cast<double>(ns) / 1e6);
  return text;
}

std::string example_text(const Example& e) {
  std::string out;
  for (size_t i = 0; i < e.msgs.size(); ++i) {
    out += i == 0 ? "msg " : ", ";
    out += e.msgs[i];
  }
  if (!e.lines.empty()) {
    out += out.empty() ? "line" : " (line";
    if (e.lines.size() > 1) out += 's';
    out += ' ';
    for (size_t i = 0; i < e.lines.size(); ++i) {
      if (i > 0) out += ", ";
      out += std::to_string(e.lines[i]);
    }
    if (!e.msgs.empty()) out += ')';
  }
  out += ": ";
  out += e.detail;
  return out;
}

}  // namespace

std::string render_summary(const Verdict& verdict) {
  std::string out;
  size_t width = 0;
  for (const InvariantResult& r : verdict.invariants) width = std::max(width, r.name.size());
  for (const InvariantResult& r : verdict.invariants) {
    out += r.name;
    out.append(width + 2 - r.name.size(), ' ');
    if (!r.judged) {
      out += "not judged (the run did not end quiescent)\n";
      continue;
    }
    out += r.valid ? "valid" : "VIOLATED";
    if (!r.valid) out += " (" + std::to_string(r.count) + ")";
    if (r.invariant == Invariant::latency) {
      const LatencyStats& l = verdict.stats.latency;
      out += "  samples " + std::to_string(l.samples) + ", p50 " + milliseconds(l.p50_ns) + ", p99 " +
             milliseconds(l.p99_ns) + ", max " + milliseconds(l.max_ns);
      out += l.bound_p99_ns ? ", p99 bound " + milliseconds(*l.bound_p99_ns) : std::string(", no bound");
    }
    out += '\n';
    for (const Example& e : r.examples) out += "    " + example_text(e) + "\n";
  }
  const Stats& s = verdict.stats;
  out += "events " + std::to_string(s.events) + ", messages " + std::to_string(s.messages) + ", delivers " +
         std::to_string(s.delivers) + ", users " + std::to_string(s.users) + ", devices " + std::to_string(s.devices) +
         ", convs " + std::to_string(s.convs) + "; end: " +
         (s.ended ? (s.quiescent ? "quiescent" : "not quiescent") : "none") + "\n";
  out += verdict.valid ? "verdict: valid\n" : "verdict: VIOLATED\n";
  return out;
}

std::string render_json(const Verdict& verdict) {
  std::string out = "{\"valid\":";
  out += verdict.valid ? "true" : "false";
  out += ",\"invariants\":{";
  bool first = true;
  for (const InvariantResult& r : verdict.invariants) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, r.name);
    out += ":{\"valid\":";
    out += r.valid ? "true" : "false";
    out += ",\"judged\":";
    out += r.judged ? "true" : "false";
    out += ",\"count\":" + std::to_string(r.count) + ",\"examples\":[";
    for (size_t i = 0; i < r.examples.size(); ++i) {
      const Example& e = r.examples[i];
      if (i > 0) out += ',';
      out += "{\"msgs\":[";
      for (size_t j = 0; j < e.msgs.size(); ++j) {
        if (j > 0) out += ',';
        append_json_string(out, e.msgs[j]);
      }
      out += "],\"lines\":[";
      for (size_t j = 0; j < e.lines.size(); ++j) {
        if (j > 0) out += ',';
        out += std::to_string(e.lines[j]);
      }
      out += "],\"detail\":";
      append_json_string(out, e.detail);
      out += '}';
    }
    out += "]}";
  }
  const Stats& s = verdict.stats;
  const LatencyStats& l = s.latency;
  out += "},\"stats\":{";
  out += "\"events\":" + std::to_string(s.events);
  out += ",\"messages\":" + std::to_string(s.messages);
  out += ",\"sends\":" + std::to_string(s.sends);
  out += ",\"acks\":" + std::to_string(s.acks);
  out += ",\"delivers\":" + std::to_string(s.delivers);
  out += ",\"users\":" + std::to_string(s.users);
  out += ",\"devices\":" + std::to_string(s.devices);
  out += ",\"convs\":" + std::to_string(s.convs);
  out += std::string(",\"ended\":") + (s.ended ? "true" : "false");
  out += std::string(",\"quiescent\":") + (s.quiescent ? "true" : "false");
  out += ",\"last_t\":" + std::to_string(s.last_t);
  out += ",\"latency\":{\"samples\":" + std::to_string(l.samples) + ",\"p50_ns\":" + std::to_string(l.p50_ns) +
         ",\"p99_ns\":" + std::to_string(l.p99_ns) + ",\"max_ns\":" + std::to_string(l.max_ns) +
         ",\"bound_p99_ns\":" + (l.bound_p99_ns ? std::to_string(*l.bound_p99_ns) : std::string("null")) +
         ",\"over_bound\":" + std::to_string(l.over_bound) + "}";
  out += ",\"checker_bytes\":" + std::to_string(s.checker_bytes);
  out += "}}";
  return out;
}

}  // namespace msgsim::history
