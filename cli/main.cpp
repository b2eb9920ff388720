#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string_view>

#include "cli/commands.h"

namespace {

// A simulated world at scale is gigabytes of heap touched at random: 150,000 devices' state,
// 50,000 sessions a chat server, the simulated disks, SQLite's page caches. With 4 KiB pages
// nearly every such touch is a TLB miss too, and in this kind of VM (nested paging) a TLB miss
// is a walk of two page tables. Transparent huge pages cut that, but where the kernel gives them
// only on request (`madvise`, Debian's default) glibc's malloc asks only when GLIBC_TUNABLES
// holds glibc.malloc.hugetlb=1, which it reads once at start-up. So a simulator command
// executes itself again with it set. Measured (docs/performance-history.md, session 12): a
// 15,000-device copy of the full-scale crash, 112 -> 84 s of CPU, same digest. The run's
// behaviour cannot change: nothing in the simulator depends on addresses (DESIGN.md).
// MSGSIM_HUGE_PAGES=0 runs without; a GLIBC_TUNABLES of the user's own is left as it is; under
// valgrind (which would not follow the exec) nothing happens.
void reexec_with_huge_pages(int argc, char** argv) {
  if (argc < 2) return;
  const std::string_view command = argv[1];
  if (command != "run" && command != "replay" && command != "shrink" && command != "sweep") return;
  const char* choice = std::getenv("MSGSIM_HUGE_PAGES");
  if (choice != nullptr && std::string_view(choice) == "0") return;
  if (std::getenv("GLIBC_TUNABLES") != nullptr) return;
  const char* preload = std::getenv("LD_PRELOAD");
  if (preload != nullptr && std::strstr(preload, "vgpreload") != nullptr) return;
  if (setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1", 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("GLIBC_TUNABLES");  // the exec failed: go on as we are, without them
}

}  // namespace

int main(int argc, char** argv) {
  reexec_with_huge_pages(argc, argv);
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
