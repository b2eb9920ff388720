// How a run is shown: the human summary of `run`/`replay`, and the --trace JSON Lines writer.
#pragma once

#include <chrono>
#include <ostream>

#include <CLI/CLI.hpp>

#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::cli {

// What a run cost this process: wall-clock seconds, and CPU seconds (user + system, from
// getrusage) for the simulator, whose speed on a loaded machine the wall clock understates.
// cpu_seconds < 0 when the CPU time does not describe the run (the live runtime's work is
// done by other processes).
struct RunCost {
  double wall_seconds = 0;
  double cpu_seconds = -1;
};

// Measures a RunCost from construction to stop().
class RunClock {
 public:
  RunClock();
  RunCost stop() const;

 private:
  std::chrono::steady_clock::time_point wall_start_;
  double cpu_start_seconds_;
};

// The summary ends with `speed: <F>x real time (<C>x of CPU time)`: virtual seconds per wall
// second, and per CPU second of this process.
void print_run_report(std::ostream& out, const sim::Scenario& scenario, const sim::RunReport& report,
                      RunCost cost);

// `factor` rounded to a whole number with thousands separators: 1530.4 -> "1,530".
std::string format_factor(double factor);

// The planted bugs named on the command line, checked against the catalogue. They apply to the
// chat system only.
Result<chat::BugSet> parse_bugs(const std::vector<std::string>& names, const sim::Scenario& scenario);

// A trace sink writing one JSON object per line: t (ns), node, kind, digest, detail.
sim::TraceSink make_trace_writer(std::ostream& out);

// --perfetto FILE and --perfetto-events-max N (run and replay).
void add_perfetto_options(CLI::App& cmd, std::string& file, size_t& events_max);

// `text` as a JSON string literal, quotes included.
std::string json_quote(std::string_view text);

}  // namespace msgsim::cli
