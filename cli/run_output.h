// How a run is shown: the human summary of `run`/`replay`, and the --trace JSON Lines writer.
#pragma once

#include <ostream>

#include <CLI/CLI.hpp>

#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::cli {

void print_run_report(std::ostream& out, const sim::Scenario& scenario, const sim::RunReport& report,
                      double wall_seconds);

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
