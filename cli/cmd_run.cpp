// `msgsim run SCENARIO [--seed N] [--trace FILE]`: one simulated run, its summary, its verdict,
// `trace digest: <hex>` and `speed: <factor>x real time (<factor>x of CPU time)`.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>

#include "cli/commands.h"
#include "cli/run_output.h"
#include "sim/perfetto.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::cli {

namespace {

struct RunArgs {
  std::string scenario;
  std::optional<uint64_t> seed;
  std::string trace_file;
  std::string history_file;
  std::string perfetto_file;
  size_t perfetto_events_max = sim::kPerfettoEventsMaxDefault;
  std::vector<std::string> bugs;
};

int run(const RunArgs& args) {
  Result<sim::Scenario> loaded = sim::load_scenario_file(args.scenario);
  if (!loaded.ok()) {
    std::cerr << "msgsim run: " << loaded.error().message << "\n";
    return kExitBadInput;
  }
  const sim::Scenario& scenario = *loaded;

  sim::RunOptions options;
  options.seed = args.seed.value_or(scenario.seed);
  Result<chat::BugSet> bugs = parse_bugs(args.bugs, scenario);
  if (!bugs.ok()) {
    std::cerr << "msgsim run: " << bugs.error().message << "\n";
    return kExitBadInput;
  }
  options.bugs = *bugs;
  std::ofstream history_out;
  if (!args.history_file.empty()) {
    history_out.open(args.history_file, std::ios::binary | std::ios::trunc);
    if (!history_out) {
      std::cerr << "msgsim run: --history " << args.history_file << ": cannot open for writing\n";
      return kExitBadInput;
    }
    options.history_out = &history_out;
  }
  std::ofstream trace_out;
  if (!args.trace_file.empty()) {
    trace_out.open(args.trace_file, std::ios::binary | std::ios::trunc);
    if (!trace_out) {
      std::cerr << "msgsim run: --trace " << args.trace_file << ": cannot open for writing\n";
      return kExitBadInput;
    }
    options.trace = make_trace_writer(trace_out);
  }

  std::ofstream perfetto_out;
  if (!args.perfetto_file.empty()) {
    perfetto_out.open(args.perfetto_file, std::ios::binary | std::ios::trunc);
    if (!perfetto_out) {
      std::cerr << "msgsim run: --perfetto " << args.perfetto_file << ": cannot open for writing\n";
      return kExitBadInput;
    }
    options.perfetto_out = &perfetto_out;
    options.perfetto_events_max = args.perfetto_events_max;
  }

  const RunClock clock;
  const sim::RunReport report = sim::run_world(scenario, options);
  const RunCost cost = clock.stop();

  if (history_out.is_open()) {
    history_out.flush();
    if (!history_out) {
      std::cerr << "msgsim run: --history " << args.history_file << ": write failed\n";
      return kExitBadInput;
    }
  }
  if (trace_out.is_open()) {
    trace_out.flush();
    if (!trace_out) {
      std::cerr << "msgsim run: --trace " << args.trace_file << ": write failed\n";
      return kExitBadInput;
    }
  }
  if (perfetto_out.is_open()) {
    perfetto_out.flush();
    if (!perfetto_out) {
      std::cerr << "msgsim run: --perfetto " << args.perfetto_file << ": write failed\n";
      return kExitBadInput;
    }
  }
  print_run_report(std::cout, scenario, report, cost);
  return report.passed() ? kExitOk : kExitViolation;
}

}  // namespace

void add_run_command(CLI::App& app, Outcome& outcome) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "one simulated run of a scenario: summary, verdict, trace digest");
  cmd->add_option("scenario", args->scenario, "the scenario file (JSON)")->required();
  cmd->add_option("--seed", args->seed, "the run's seed (default: the scenario's)");
  cmd->add_option("--trace", args->trace_file, "write every dispatched event to this file as JSON Lines");
  cmd->add_option("--history", args->history_file, "write the devices' history (spec/history.md) to this file");
  add_perfetto_options(*cmd, args->perfetto_file, args->perfetto_events_max);
  cmd->add_option("--bug", args->bugs, "switch on a planted bug (see `msgsim bugs`); repeatable");
  cmd->callback([args, &outcome] { outcome.exit_code = run(*args); });
}

}  // namespace msgsim::cli
