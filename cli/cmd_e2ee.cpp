// `msgsim e2ee transcript --seed N`: the interop test vectors of spec/e2ee.md as one JSON
// object on stdout, deterministic for N (the transcript logic is impl/crypto/transcript.h).
#include <cstdio>

#include "cli/commands.h"
#include "impl/crypto/transcript.h"
#include "sim/randombytes.h"

namespace msgsim::cli {

void add_e2ee_command(CLI::App& app, Outcome& outcome) {
  auto* e2ee = app.add_subcommand("e2ee", "end-to-end encryption tools (spec/e2ee.md)");
  e2ee->require_subcommand(1);
  auto* transcript = e2ee->add_subcommand(
      "transcript", "print the interop transcript (test vectors) for a seed as JSON");
  auto seed = std::make_shared<uint64_t>(1);
  transcript->add_option("--seed", *seed, "seed of the keys and the conversation")->required();
  transcript->callback([seed, &outcome] {
    // Keys are drawn from libsodium's randombytes: reseeding makes them a function of the seed.
    sim::reseed_randombytes(*seed);
    const std::string json = crypto::make_transcript_json(*seed);
    std::fwrite(json.data(), 1, json.size(), stdout);
    std::fputc('\n', stdout);
    outcome.exit_code = std::fflush(stdout) == 0 ? kExitOk : kExitViolation;
  });
}

}  // namespace msgsim::cli
