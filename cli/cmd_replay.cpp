// `msgsim replay SCENARIO --seed N [--bug NAME]... [--expect-digest HEX]`: re-runs one seed and
// confirms that its trace digest is what it should be: the digest given (one recorded by an
// earlier `run`, `sweep --junit` or a CI log), or, without one, the digest of a second run in
// the same process, which catches nondeterminism (state that leaks from one run into the next,
// iteration over unordered containers, the wall clock).
//
// Exit: 0 when the digest is confirmed and the run passes its checks; 1 on a digest mismatch or
// a failed check (a replayed failing seed is still a failure); 2 on bad input.
#include <algorithm>
#include <cctype>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/run_output.h"
#include "sim/perfetto.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::cli {

namespace {

constexpr size_t kDigestHexDigits = 16;

struct ReplayArgs {
  std::string scenario;
  uint64_t seed = 0;
  std::vector<std::string> bugs;
  std::optional<std::string> expect_digest;
  std::string perfetto_file;
  size_t perfetto_events_max = sim::kPerfettoEventsMaxDefault;
};

// The digest as run_world prints it: 16 lowercase hex digits. Upper case is accepted.
Result<std::string> parse_digest(const std::string& text) {
  const bool hex = std::all_of(text.begin(), text.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  if (text.size() != kDigestHexDigits || !hex) {
    return make_error(ErrorCode::bad_input, "--expect-digest " + text + ": expected " + std::to_string(kDigestHexDigits) +
                                                " hex digits, as `msgsim run` prints after `trace digest:`");
  }
  std::string lower = text;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower;
}

int replay(const ReplayArgs& args) {
  std::optional<std::string> expected;
  if (args.expect_digest) {
    Result<std::string> parsed = parse_digest(*args.expect_digest);
    if (!parsed.ok()) {
      std::cerr << "msgsim replay: " << parsed.error().message << "\n";
      return kExitBadInput;
    }
    expected = *parsed;
  }
  Result<sim::Scenario> loaded = sim::load_scenario_file(args.scenario);
  if (!loaded.ok()) {
    std::cerr << "msgsim replay: " << loaded.error().message << "\n";
    return kExitBadInput;
  }
  const sim::Scenario& scenario = *loaded;
  Result<chat::BugSet> bugs = parse_bugs(args.bugs, scenario);
  if (!bugs.ok()) {
    std::cerr << "msgsim replay: " << bugs.error().message << "\n";
    return kExitBadInput;
  }
  sim::RunOptions options;
  options.seed = args.seed;
  options.bugs = *bugs;

  // The timeline is of the first run (the second, when there is one, is the same run).
  std::ofstream perfetto_out;
  if (!args.perfetto_file.empty()) {
    perfetto_out.open(args.perfetto_file, std::ios::binary | std::ios::trunc);
    if (!perfetto_out) {
      std::cerr << "msgsim replay: --perfetto " << args.perfetto_file << ": cannot open for writing\n";
      return kExitBadInput;
    }
    options.perfetto_out = &perfetto_out;
    options.perfetto_events_max = args.perfetto_events_max;
  }

  const RunClock clock;
  const sim::RunReport report = sim::run_world(scenario, options);
  const RunCost cost = clock.stop();
  if (perfetto_out.is_open()) {
    perfetto_out.flush();
    if (!perfetto_out) {
      std::cerr << "msgsim replay: --perfetto " << args.perfetto_file << ": write failed\n";
      return kExitBadInput;
    }
    options.perfetto_out = nullptr;
  }
  print_run_report(std::cout, scenario, report, cost);

  // Without a digest to expect, the first run's is the expectation and a second run must match.
  const std::string got = expected ? report.digest_hex : sim::run_world(scenario, options).digest_hex;
  if (!expected) expected = report.digest_hex;
  if (got != *expected) {
    std::cout << "replay: DIGEST MISMATCH expected " << *expected << " got " << got << "\n";
    return kExitViolation;
  }
  std::cout << "replay: digest " << report.digest_hex << " confirmed\n";
  return report.passed() ? kExitOk : kExitViolation;
}

}  // namespace

void add_replay_command(CLI::App& app, Outcome& outcome) {
  auto args = std::make_shared<ReplayArgs>();
  CLI::App* cmd = app.add_subcommand("replay", "re-run one seed and confirm its trace digest");
  cmd->add_option("scenario", args->scenario, "the scenario file (JSON)")->required();
  cmd->add_option("--seed", args->seed, "the seed to replay")->required();
  cmd->add_option("--bug", args->bugs, "switch on a planted bug (see `msgsim bugs`); repeatable");
  cmd->add_option("--expect-digest", args->expect_digest,
                  "the trace digest the run must have (16 hex digits); without it, the seed runs twice and "
                  "the two digests must agree");
  add_perfetto_options(*cmd, args->perfetto_file, args->perfetto_events_max);
  cmd->callback([args, &outcome] { outcome.exit_code = replay(*args); });
}

}  // namespace msgsim::cli
