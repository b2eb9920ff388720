// live::WsFrameReader (live/lean_websocket.h) on arbitrary bytes, as a server reads them from a
// client and as the bench's client reads them from a server: it returns how much it consumed or
// an error naming what was wrong, never crashes, and hands over no message past its bound. The
// first byte picks the side (its top bit: server frames, unmasked) and a chunk size (its low six
// bits): the bytes are also fed in chunks, as a socket delivers them, keeping the unconsumed tail
// as the session does, and the events must be the same as from one pass over all of them (up to
// the first error).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "impl/base/assert.h"
#include "live/lean_websocket.h"

namespace {

constexpr size_t kMessageBytesMax = 4096;

struct Run {
  std::vector<std::string> events;
  bool failed = false;
};

void record(Run& run, const msgsim::live::WsInbound& inbound) {
  MSGSIM_ASSERT(inbound.kind != msgsim::live::WsInbound::Kind::message || inbound.payload.size() <= kMessageBytesMax,
                "a message past the bound was handed over");
  run.events.push_back(std::to_string(static_cast<int>(inbound.kind)) + ":" + std::to_string(inbound.close_code) + ":" +
                       std::string(inbound.payload.begin(), inbound.payload.end()));
}

Run parse_in_chunks(const uint8_t* data, size_t size, size_t chunk, msgsim::live::WsFramesFrom from) {
  msgsim::live::WsFrameReader reader(kMessageBytesMax, from);
  Run run;
  msgsim::Bytes pending;
  for (size_t at = 0; at < size && !run.failed; at += chunk) {
    const size_t n = std::min(chunk, size - at);
    pending.insert(pending.end(), data + at, data + at + n);
    auto consumed = reader.parse(pending, [&](const msgsim::live::WsInbound& in) { record(run, in); });
    if (!consumed.ok()) {
      MSGSIM_ASSERT(!consumed.error().message.empty());
      run.failed = true;
      break;
    }
    MSGSIM_ASSERT(*consumed <= pending.size());
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(*consumed));
  }
  return run;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = 1 + (data[0] & 63);
  const auto from = (data[0] & 0x80) != 0 ? msgsim::live::WsFramesFrom::server : msgsim::live::WsFramesFrom::client;
  const Run whole = parse_in_chunks(data + 1, size - 1, size, from);
  const Run chunked = parse_in_chunks(data + 1, size - 1, chunk, from);
  // Chunking can only cut a run short (an error found before a later frame is complete is found
  // at the same frame either way), so the shorter event list is a prefix of the longer.
  const size_t common = std::min(whole.events.size(), chunked.events.size());
  for (size_t i = 0; i < common; ++i) MSGSIM_ASSERT(whole.events[i] == chunked.events[i], "chunking changed a frame");
  MSGSIM_ASSERT(whole.failed == chunked.failed, "chunking changed whether the bytes are refused");
  if (!whole.failed) MSGSIM_ASSERT(whole.events.size() == chunked.events.size(), "chunking lost or added a frame");
  return 0;
}
