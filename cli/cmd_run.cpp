#include "cli/commands.h"

namespace msgsim::cli {

void add_run_command(CLI::App& app, Outcome& outcome) {
  auto* run = app.add_subcommand("run", "one simulated run of a scenario");
  (void)run;
  (void)outcome;
}

}  // namespace msgsim::cli
