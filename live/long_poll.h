// HTTP long polling: the client devices' fallback transport when a WebSocket cannot be opened
// (docs/protocol.md "Long polling"). The sans-IO half: the request targets, the body of
// length-prefixed frames, and the numbering that makes a lost response harmless. LiveHost
// (live_host.cpp) carries it over Beast's HTTP/1.1 parser and serializer on the node's one port.
//
// Exchange, every request an HTTP/1.1 request to the port a WebSocket would upgrade on:
//   POST /lp/<opener id>/open                        -> 200, header X-Msgsim-Session: <token>
//   POST /lp/<opener id>/send?session=T&seq=S  body  -> 200 (frames S, S+1, ... of the device)
//   GET  /lp/<opener id>/poll?session=T&after=N      -> 200 when frames numbered > N are pending,
//        or an empty 200 after the wait (25 s); header X-Msgsim-First: number of the body's first
//        frame; X-Msgsim-Closed: 1 when the server closed the connection after these frames
//   POST /lp/<opener id>/close?session=T             -> 200 (the device closed: closed_by_peer)
// A body is a sequence of frames, each a 4-byte big-endian length and then the bytes. Frames are
// numbered from 1 in each direction; a poll's `after` acknowledges (and frees) every frame up to
// N, and a repeated send or poll (its response was lost) is answered without loss or duplicates:
// the server skips frames it already has, the device skips frames numbered <= its `after`.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/result.h"
#include "impl/runtime.h"

namespace msgsim::live::long_poll {

constexpr std::string_view kPathPrefix = "/lp/";
constexpr std::string_view kSessionHeader = "X-Msgsim-Session";
constexpr std::string_view kFirstHeader = "X-Msgsim-First";
constexpr std::string_view kClosedHeader = "X-Msgsim-Closed";

enum class Verb : uint8_t { open, send, poll, close };

// A request target, e.g. "/lp/12/poll?session=00ab..&after=7".
struct Target {
  NodeId opener = kNoNode;
  Verb verb = Verb::open;
  uint64_t session = 0;  // 0: none (open)
  uint64_t number = 0;   // send: `seq`, the number of the body's first frame; poll: `after`
};

// Whether an HTTP request target is meant for long polling (the rest is WebSocket upgrades).
bool is_long_poll_target(std::string_view target);
// Parses a target; an error names what is wrong. open takes no parameters; send needs session and
// seq >= 1; poll needs session and after; close needs session.
Result<Target> parse_target(std::string_view target);
std::string format_target(const Target& target);
std::string format_session(uint64_t session);  // 16 lowercase hex digits
Result<uint64_t> parse_session(std::string_view text);

// Appends one frame (length prefix and bytes) to a body.
void append_frame(std::string& body, ByteView frame);
// Splits a body into frames: at most frames_max of at most frame_bytes_max bytes each, and
// nothing left over.
Result<std::vector<Bytes>> decode_frames(std::string_view body, size_t frame_bytes_max, size_t frames_max);

// The server's frames to one device, numbered from 1, kept until a poll acknowledges them.
class Outbox {
 public:
  void push(Bytes frame);
  // Frees every frame numbered <= after; returns their bytes. An `after` beyond the last frame
  // pushed is an error (the device claims frames it cannot have).
  Result<size_t> acknowledge(uint64_t after);
  // The body of a poll answer: the pending frames from the first, up to body_bytes_max (at least
  // one frame when any is pending); `first` gets the first one's number.
  std::string answer(size_t body_bytes_max, uint64_t& first) const;
  size_t pending_frames() const { return frames_.size(); }
  uint64_t first_number() const { return first_; }

 private:
  std::deque<Bytes> frames_;
  uint64_t first_ = 1;  // the number of frames_.front()
};

// The server's view of one device's sends: which frame numbers it already delivered.
class Inbox {
 public:
  // Of a send's frames numbered seq, seq+1, ..., how many from the front were delivered before
  // (a repeated send); an error when seq leaves a gap.
  Result<size_t> already_delivered(uint64_t seq, size_t count) const;
  void delivered(size_t count) { next_ += count; }
  uint64_t next() const { return next_; }

 private:
  uint64_t next_ = 1;
};

}  // namespace msgsim::live::long_poll
