// ledger::decode on arbitrary bytes: a message or an error, never a crash. Every field is
// fixed-width little-endian and trailing bytes are refused, so whatever decodes must encode
// back to exactly the input, and decode(encode(x)) must re-encode to the same bytes.
#include <cstddef>
#include <cstdint>

#include "impl/base/assert.h"
#include "impl/ledger/ledger.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using msgsim::Bytes;
  using msgsim::ErrorCode;
  const msgsim::ByteView input(data, size);
  const auto decoded = msgsim::ledger::decode(input);
  if (!decoded.ok()) {
    const auto& error = decoded.error();
    MSGSIM_ASSERT(error.code == ErrorCode::bad_input || error.code == ErrorCode::too_large, error.message);
    MSGSIM_ASSERT(error.message.rfind("ledger frame: ", 0) == 0, error.message);
    return 0;
  }
  MSGSIM_ASSERT_LE(decoded->payload.size(), msgsim::ledger::kPayloadMax);
  const Bytes encoded = msgsim::ledger::encode(*decoded);
  MSGSIM_ASSERT(Bytes(input.begin(), input.end()) == encoded, "a decoded ledger frame re-encodes to other bytes");
  const auto again = msgsim::ledger::decode(encoded);
  MSGSIM_ASSERT(again.ok(), again.ok() ? "" : again.error().message);
  MSGSIM_ASSERT(again->type == decoded->type && again->client == decoded->client && again->seq == decoded->seq &&
                again->payload == decoded->payload);
  MSGSIM_ASSERT(msgsim::ledger::encode(*again) == encoded, "decode(encode(x)) re-encodes to other bytes");
  return 0;
}
