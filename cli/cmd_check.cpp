// `msgsim check FILE|- [--json] [--latency-p99-ms N]`: judge any history (simulated, live,
// third-party) against spec/history.md. Exit 0 valid, 1 a violation, 2 bad input.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "oracle/checker.h"
#include "oracle/jsonl.h"

namespace msgsim::cli {

namespace {

struct CheckArgs {
  std::string path;
  bool json = false;
  int64_t latency_p99_ms = -1;
};

int run_check(const CheckArgs& args) {
  history::CheckerOptions options;
  if (args.latency_p99_ms >= 0) {
    constexpr int64_t kMaxMs = std::numeric_limits<int64_t>::max() / 1'000'000;  // no overflow
    options.latency_p99_bound_ns = std::min(args.latency_p99_ms, kMaxMs) * 1'000'000;
  }
  // A regular file is judged where the kernel maps it, with no copy of its bytes; stdin, a pipe
  // or a file that cannot be mapped (an empty one) is read as a stream. The verdict is the same.
  Result<history::MappedFile> mapped = args.path != "-" ? history::MappedFile::open(args.path)
                                                        : Result<history::MappedFile>(make_error(ErrorCode::io_error, "stdin"));
  std::ifstream file;
  std::istream* in = &std::cin;
  if (args.path == "-") {
    std::ios::sync_with_stdio(false);
  } else if (!mapped.ok()) {
    file.open(args.path, std::ios::binary);
    if (!file) {
      std::fprintf(stderr, "msgsim check: cannot open %s\n", args.path.c_str());
      return kExitBadInput;
    }
    in = &file;
  }
  Result<history::Verdict> verdict =
      mapped.ok() ? history::check_text(mapped->bytes(), options) : history::check_stream(*in, options);
  if (!verdict.ok()) {
    const std::string where = args.path == "-" ? std::string("stdin") : args.path;
    std::fprintf(stderr, "msgsim check: %s: %s\n", where.c_str(), verdict.error().message.c_str());
    return kExitBadInput;
  }
  const std::string out = args.json ? history::render_json(*verdict) + "\n" : history::render_summary(*verdict);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return verdict->valid ? kExitOk : kExitViolation;
}

}  // namespace

void add_check_command(CLI::App& app, Outcome& outcome) {
  auto args = std::make_shared<CheckArgs>();
  auto* check = app.add_subcommand("check", "judge a history (JSON Lines, spec/history.md) against the invariants");
  check->add_option("history", args->path, "the history file, or - for stdin")->required();
  check->add_flag("--json", args->json, "print the verdict as one JSON object");
  check->add_option("--latency-p99-ms", args->latency_p99_ms, "fail latency when the p99 delivery time exceeds N ms")
      ->check(CLI::NonNegativeNumber);
  check->callback([args, &outcome] { outcome.exit_code = run_check(*args); });
}

}  // namespace msgsim::cli
