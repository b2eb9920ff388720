// `msgsim bugs`: the planted-bug catalogue, one a line: name, then what it does.
#include <iostream>

#include "cli/commands.h"
#include "impl/chat/config.h"

namespace msgsim::cli {

void add_bugs_command(CLI::App& app, Outcome& outcome) {
  CLI::App* cmd = app.add_subcommand("bugs", "the planted-bug catalogue (switch one on with --bug NAME)");
  cmd->callback([&outcome] {
    size_t width = 0;
    for (const auto& info : chat::bug_catalogue()) width = std::max(width, std::string_view(info.name).size());
    for (const auto& info : chat::bug_catalogue()) {
      std::cout << info.name << std::string(width + 2 - std::string_view(info.name).size(), ' ') << info.what << "\n";
    }
    outcome.exit_code = kExitOk;
  });
}

}  // namespace msgsim::cli
