// `msgsim shrink SCENARIO --seed N [--bug NAME]... [--check NAME]... -o OUT.json
//  [--max-runs N] [--time-budget-s S]`: minimises a failing run (sim/shrink.h) and writes the
// smallest scenario that still fails the same checks, its seed and bugs inside, so that
// `msgsim run OUT.json` fails on its own.
//
// Exit: 0 when OUT.json was written and fails on its own (re-checked by loading the written
// file and running it); 1 when the written scenario does not reproduce; 2 on bad input or a
// seed that passes (nothing to shrink).
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/run_output.h"
#include "sim/scenario.h"
#include "sim/shrink.h"
#include "sim/world.h"

namespace msgsim::cli {

namespace {

struct ShrinkArgs {
  std::string scenario;
  uint64_t seed = 0;
  std::vector<std::string> bugs;
  std::vector<std::string> checks;
  std::string output;
  size_t max_runs = 300;
  double time_budget_s = 300;
};

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

int shrink(const ShrinkArgs& args) {
  Result<sim::Scenario> loaded = sim::load_scenario_file(args.scenario);
  if (!loaded.ok()) {
    std::cerr << "msgsim shrink: " << loaded.error().message << "\n";
    return kExitBadInput;
  }
  const sim::Scenario& scenario = *loaded;
  // Checked here for the message; the names go into the output scenario.
  Result<chat::BugSet> bugs = parse_bugs(args.bugs, scenario);
  if (!bugs.ok()) {
    std::cerr << "msgsim shrink: " << bugs.error().message << "\n";
    return kExitBadInput;
  }
  std::ofstream out(args.output, std::ios::binary | std::ios::trunc);
  if (!out) {
    std::cerr << "msgsim shrink: -o " << args.output << ": cannot open for writing\n";
    return kExitBadInput;
  }

  sim::ShrinkOptions options;
  options.seed = args.seed;
  options.bugs = args.bugs;
  options.target_checks = args.checks;
  options.max_runs = args.max_runs;
  const auto wall_start = std::chrono::steady_clock::now();
  const auto elapsed_s = [wall_start] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  };
  // The time budget is the one thing that is not deterministic: a run that hits it keeps the
  // smallest scenario found so far, which still fails.
  options.stop = [&] { return elapsed_s() > args.time_budget_s; };
  options.progress = [&](const std::string& line) {
    char at[32];
    std::snprintf(at, sizeof at, "[%6.1fs] ", elapsed_s());
    std::cout << at << line << "\n" << std::flush;
  };
  Result<sim::ShrinkResult> shrunk = sim::shrink(scenario, options);
  if (!shrunk.ok()) {
    std::cerr << "msgsim shrink: " << shrunk.error().message << "\n";
    return kExitBadInput;
  }
  const sim::ShrinkResult& result = *shrunk;
  out << result.json;
  out.close();
  if (!out) {
    std::cerr << "msgsim shrink: -o " << args.output << ": write failed\n";
    return kExitBadInput;
  }

  std::cout << "shrink: " << result.runs << " runs, " << result.accepted << " steps accepted"
            << (result.stopped_early ? " (stopped by --max-runs or --time-budget-s)" : "") << "\n";
  std::cout << "before: " << result.before.describe() << "\n";
  std::cout << "after:  " << result.after.describe() << "\n";
  std::cout << "fails:  " << joined(result.target_checks) << "\n";

  // The written file must fail on its own: load it back and run it with no other input.
  Result<sim::Scenario> written = sim::load_scenario_file(args.output);
  if (!written.ok()) {
    std::cerr << "msgsim shrink: the written scenario does not load: " << written.error().message << "\n";
    return kExitViolation;
  }
  sim::RunOptions run;
  run.seed = written->seed;
  const sim::RunReport report = sim::run_world(*written, run);
  std::vector<std::string> missing;
  for (const std::string& name : result.target_checks) {
    bool failed = false;
    for (const sim::CheckResult& c : report.checks) failed |= c.name == name && !c.passed;
    if (!failed) missing.push_back(name);
  }
  if (!missing.empty()) {
    std::cout << "shrink: " << args.output << " does NOT reproduce: " << joined(missing) << " passed\n";
    return kExitViolation;
  }
  std::cout << "wrote " << args.output << " (seed " << written->seed << ", trace digest " << report.digest_hex
            << "): `msgsim run " << args.output << "` fails " << joined(result.target_checks) << "\n";
  return kExitOk;
}

}  // namespace

void add_shrink_command(CLI::App& app, Outcome& outcome) {
  auto args = std::make_shared<ShrinkArgs>();
  CLI::App* cmd = app.add_subcommand(
      "shrink", "minimise a failing run (fewer faults, clients, messages, less time) while it fails the same checks");
  cmd->add_option("scenario", args->scenario, "the scenario file (JSON)")->required();
  cmd->add_option("--seed", args->seed, "the failing seed")->required();
  cmd->add_option("--bug", args->bugs, "switch on a planted bug (see `msgsim bugs`); repeatable; written into the output");
  cmd->add_option("--check", args->checks,
                  "a check the shrunk run must still fail; repeatable (default: the first invariant the oracle finds violated, "
                  "else every failed check)");
  cmd->add_option("-o,--output", args->output, "where to write the smallest failing scenario (JSON)")->required();
  cmd->add_option("--max-runs", args->max_runs, "at most this many runs (default 300)")->check(CLI::Range(1, 1'000'000));
  cmd->add_option("--time-budget-s", args->time_budget_s, "stop after this many seconds of wall time (default 300)")
      ->check(CLI::PositiveNumber);
  cmd->callback([args, &outcome] { outcome.exit_code = shrink(*args); });
}

}  // namespace msgsim::cli
