// Each `msgsim` subcommand registers itself here. Exit codes, for every command:
// 0 ok, 1 an invariant was violated or a check failed, 2 bad input or usage.
#pragma once

#include <CLI/CLI.hpp>

namespace msgsim::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitViolation = 1;
inline constexpr int kExitBadInput = 2;

// Set by the subcommand that ran.
struct Outcome {
  int exit_code = kExitOk;
};

void add_run_command(CLI::App& app, Outcome& outcome);
void add_sweep_command(CLI::App& app, Outcome& outcome);
void add_replay_command(CLI::App& app, Outcome& outcome);
void add_shrink_command(CLI::App& app, Outcome& outcome);
void add_check_command(CLI::App& app, Outcome& outcome);
void add_e2ee_command(CLI::App& app, Outcome& outcome);
void add_bugs_command(CLI::App& app, Outcome& outcome);
void add_calibrate_command(CLI::App& app, Outcome& outcome);
void add_plan_command(CLI::App& app, Outcome& outcome);
void add_live_command(CLI::App& app, Outcome& outcome);
// `msgsim live bench`, under the `live` subcommand (cli/cmd_live_bench.cpp).
void add_live_bench_command(CLI::App& live, Outcome& outcome);

}  // namespace msgsim::cli
