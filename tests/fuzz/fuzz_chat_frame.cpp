// chat::decode on arbitrary bytes: it returns a frame or an error, never crashes. The encoding
// is canonical (minimal varints, bools 0 or 1, no trailing bytes), so whatever decodes must
// encode back to exactly the input, and that encoding must decode again to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "impl/base/assert.h"
#include "impl/chat/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using msgsim::Bytes;
  using msgsim::ByteView;
  using msgsim::ErrorCode;
  const ByteView input(data, size);
  const auto decoded = msgsim::chat::decode(input);
  if (!decoded.ok()) {
    const auto& error = decoded.error();
    MSGSIM_ASSERT(error.code == ErrorCode::bad_input || error.code == ErrorCode::too_large, error.message);
    MSGSIM_ASSERT(!error.message.empty());
    return 0;
  }
  const Bytes encoded = msgsim::chat::encode(*decoded);
  MSGSIM_ASSERT(Bytes(input.begin(), input.end()) == encoded,
                std::string("a decoded ") + msgsim::chat::frame_name(*decoded) + " re-encodes to other bytes");
  const auto again = msgsim::chat::decode(encoded);
  MSGSIM_ASSERT(again.ok(), again.ok() ? "" : again.error().message);
  MSGSIM_ASSERT(again->index() == decoded->index());
  MSGSIM_ASSERT(msgsim::chat::encode(*again) == encoded, "decode(encode(x)) re-encodes to other bytes");
  return 0;
}
