#include <cstdio>
#include <exception>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"msgsim: a deterministic fault-injection simulator and conformance test bed for "
               "real-time messaging systems"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "msgsim 0.1");
  msgsim::cli::Outcome outcome;
  msgsim::cli::add_run_command(app, outcome);
  msgsim::cli::add_sweep_command(app, outcome);
  msgsim::cli::add_replay_command(app, outcome);
  msgsim::cli::add_shrink_command(app, outcome);
  msgsim::cli::add_bugs_command(app, outcome);
  msgsim::cli::add_check_command(app, outcome);
  msgsim::cli::add_e2ee_command(app, outcome);
  msgsim::cli::add_calibrate_command(app, outcome);
  msgsim::cli::add_plan_command(app, outcome);
  msgsim::cli::add_live_command(app, outcome);
  // `live` gathers the real-socket commands; whichever registers first creates it.
  CLI::App* live = nullptr;
  for (CLI::App* sub : app.get_subcommands([](CLI::App* s) { return s->get_name() == "live"; })) live = sub;
  if (live == nullptr) live = app.add_subcommand("live", "real sockets, real processes, real faults")->require_subcommand(1);
  msgsim::cli::add_live_bench_command(*live, outcome);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return msgsim::cli::kExitBadInput;
  }
  return outcome.exit_code;
}
