#include "sim/randombytes.h"

#include <sodium.h>

#include <cstdio>
#include <cstdlib>

namespace msgsim::sim {
namespace {

// Process-wide by libsodium's design; the simulator is single-threaded.
Prng g_fallback{0};
Prng* g_current = nullptr;
bool g_installed = false;

Prng& stream() { return g_current != nullptr ? *g_current : g_fallback; }

const char* implementation_name() { return "msgsim-deterministic"; }
uint32_t random_u32() { return stream().next_u32(); }
void stir() {}
uint32_t uniform(const uint32_t upper_bound) {
  return upper_bound < 2 ? 0 : static_cast<uint32_t>(stream().below(upper_bound));
}
void buf(void* const out, const size_t size) {
  stream().fill({static_cast<uint8_t*>(out), size});
}
int close_impl() { return 0; }

randombytes_implementation g_implementation = {
    implementation_name, random_u32, stir, uniform, buf, close_impl,
};

}  // namespace

void install_deterministic_randombytes() {
  if (g_installed) return;
  if (randombytes_set_implementation(&g_implementation) != 0 || sodium_init() < 0) {
    std::fprintf(stderr, "msgsim: could not install the deterministic libsodium generator\n");
    std::abort();
  }
  MSGSIM_ASSERT(std::string_view(randombytes_implementation_name()) == implementation_name(),
                "libsodium was initialised before the deterministic generator was installed");
  g_installed = true;
}

void reseed_randombytes(uint64_t seed) {
  install_deterministic_randombytes();
  g_fallback = Prng(seed).split("randombytes");
}

Prng* set_randombytes_stream(Prng* stream) {
  Prng* previous = g_current;
  g_current = stream;
  return previous;
}

}  // namespace msgsim::sim
