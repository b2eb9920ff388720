// The interop transcript of spec/e2ee.md ("Transcripts"): a conversation between alice and bob
// (X3DH, both directions, several DH ratchet steps, out-of-order and late delivery) and a
// group conversation with a sender-key rotation after a removal, printed as one JSON object
// with every key an independent implementation needs to re-derive each byte.
//
// Keys come from libsodium's randombytes, which the caller seeds first (the CLI and the tests
// call sim::reseed_randombytes(seed)); the conversation's shape (message counts, delivery
// order, plaintexts) comes from Prng(seed). The generator runs the real library on both sides
// and checks every decryption as it goes.
#pragma once

#include <cstdint>
#include <string>

#include "impl/base/result.h"

namespace msgsim::crypto {

std::string make_transcript_json(uint64_t seed);

}  // namespace msgsim::crypto
