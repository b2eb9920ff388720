#include "cli/run_output.h"

#include "oracle/jsonl.h"

#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <string>

namespace msgsim::cli {

namespace {

std::string seconds(int64_t ns) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.3fs", static_cast<double>(ns) / 1e9);
  return buffer;
}

double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds_of = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return seconds_of(usage.ru_utime) + seconds_of(usage.ru_stime);
}

}  // namespace

RunClock::RunClock() : wall_start_(std::chrono::steady_clock::now()), cpu_start_seconds_(process_cpu_seconds()) {}

RunCost RunClock::stop() const {
  RunCost cost;
  cost.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start_).count();
  cost.cpu_seconds = process_cpu_seconds() - cpu_start_seconds_;
  return cost;
}

std::string format_factor(double factor) {
  if (!(factor >= 0) || !std::isfinite(factor)) return "0";
  // Below 10x the digits after the point matter: a full-scale run at 0.46x real time must not
  // read "0x".
  if (factor < 9.995) {
    char text[16];
    std::snprintf(text, sizeof text, "%.2f", factor);
    return text;
  }
  const std::string digits = std::to_string(static_cast<uint64_t>(std::llround(factor)));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string json_quote(std::string_view text) {
  std::string out;
  history::append_json_string(out, text);
  return out;
}

void print_run_report(std::ostream& out, const sim::Scenario& scenario, const sim::RunReport& report,
                      RunCost cost) {
  const sim::SimStats& s = report.stats;
  out << "scenario: " << scenario.name << " (" << scenario.file << "), seed " << report.seed << "\n";
  out << "nodes: " << scenario.nodes.size() << " in " << scenario.regions.size() << " regions; virtual time "
      << seconds(report.virtual_ns) << " (" << seconds(scenario.duration_ns) << " workload + "
      << seconds(scenario.quiescence_ns) << " quiescence)\n";
  out << "events: " << s.events << "; frames sent " << s.frames_sent << ", delivered " << s.frames_delivered
      << ", lost " << s.frames_lost << "; connections opened " << s.connections_opened << ", broken "
      << s.connections_broken << "; crashes " << s.crashes << ", restarts " << s.restarts << "\n";
  if (!report.faults.empty()) {
    out << "faults:\n";
    constexpr size_t kShownMax = 40;
    for (size_t i = 0; i < report.faults.size() && i < kShownMax; ++i) out << "  " << report.faults[i] << "\n";
    if (report.faults.size() > kShownMax) out << "  ... " << report.faults.size() - kShownMax << " more\n";
  }
  if (!report.nemesis.empty()) out << "nemesis: " << report.nemesis << "\n";
  // The liveness phase's line, for systems that report settledness (a check named liveness).
  bool has_liveness = false;
  for (const auto& check : report.checks) has_liveness |= check.name == "liveness";
  if (has_liveness) {
    out << "liveness: ";
    if (report.settled_after_heal_ns >= 0) out << "settled " << seconds(report.settled_after_heal_ns) << " after the heal";
    else out << "NOT settled";
    out << " (bound " << seconds(report.liveness_bound_ns) << ")\n";
  }
  for (const auto& line : report.summary) out << line << "\n";
  if (report.verdict) {
    const history::Stats& h = report.verdict->stats;
    out << "history: " << h.events << " events, " << h.sends << " sends, " << h.acks << " acks, " << h.delivers
        << " deliveries; latency p50 " << seconds(h.latency.p50_ns) << " p99 " << seconds(h.latency.p99_ns) << " max "
        << seconds(h.latency.max_ns) << " (" << h.latency.samples << " samples)\n";
  }
  out << "checks:\n";
  for (const auto& check : report.checks) {
    out << "  " << check.name << ": " << (check.passed ? "valid" : "VIOLATED") << " (" << check.detail << ")\n";
  }
  out << "verdict: " << (report.passed() ? "PASS" : "FAIL") << "\n";
  out << "trace digest: " << report.digest_hex << "\n";
  const double virtual_seconds = static_cast<double>(report.virtual_ns) / 1e9;
  out << "speed: " << format_factor(cost.wall_seconds > 0 ? virtual_seconds / cost.wall_seconds : 0.0) << "x real time";
  if (cost.cpu_seconds > 0) out << " (" << format_factor(virtual_seconds / cost.cpu_seconds) << "x of CPU time)";
  out << "\n";
}

Result<chat::BugSet> parse_bugs(const std::vector<std::string>& names, const sim::Scenario& scenario) {
  chat::BugSet bugs;
  for (const std::string& name : names) {
    if (scenario.system != "chat") {
      return make_error(ErrorCode::bad_input, "--bug " + name + ": planted bugs are in the chat system; " +
                                                  scenario.file + " runs the " + scenario.system + " system");
    }
    bool known = false;
    for (const chat::BugInfo& info : chat::bug_catalogue()) {
      if (name == info.name) {
        bugs.enable(info.bug);
        known = true;
      }
    }
    if (!known) return make_error(ErrorCode::bad_input, "--bug " + name + ": no such planted bug (see `msgsim bugs`)");
  }
  return bugs;
}

void add_perfetto_options(CLI::App& cmd, std::string& file, size_t& events_max) {
  cmd.add_option("--perfetto", file,
                 "write the run as a timeline in Chrome's trace event format (open it in ui.perfetto.dev or "
                 "chrome://tracing): a track per node, frames as flows, faults and node lifecycle as slices, "
                 "history events as instants");
  cmd.add_option("--perfetto-events-max", events_max,
                 "bound on the --perfetto file's events; a cut file says so (default 2,000,000, ~250 MB)")
      ->check(CLI::Range(size_t{10}, size_t{1'000'000'000}));
}

sim::TraceSink make_trace_writer(std::ostream& out) {
  return [&out](const sim::TraceRecord& r) {
    char digest[24];
    std::snprintf(digest, sizeof digest, "%016llx", static_cast<unsigned long long>(r.payload_digest));
    out << "{\"t\":" << r.time_ns << ",\"node\":";
    if (r.node == kNoNode) out << "null";
    else out << r.node;
    out << ",\"kind\":" << json_quote(r.kind) << ",\"digest\":\"" << digest << "\"";
    if (!r.detail.empty()) out << ",\"detail\":" << json_quote(r.detail);
    out << "}\n";
  };
}

}  // namespace msgsim::cli
