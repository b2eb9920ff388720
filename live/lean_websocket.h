// A lean server side of WebSocket (RFC 6455) for many mostly idle device connections.
//
// Why not Beast's websocket::stream: every stream carries a fixed 1.5 KB read buffer, control
// frame buffers, a timer and seven saved-handler slots whether the connection is busy or not,
// and its pending read operation is another allocation, about 3 KB per idle connection in all
// (live/README.md, "Bench"). Here an idle connection holds its socket, a small session object
// and one pending wait for readability: no buffer. When bytes arrive they are read into one
// buffer shared by every session of the loop, every whole frame in it is handled at once, and
// only the tail of an unfinished frame is kept per connection. Queued outbound frames are written
// with one write per connection per loop turn, and the write buffer is released afterwards.
//
// What is implemented: the HTTP upgrade (GET with Upgrade: websocket, Sec-WebSocket-Version 13
// and a 16-byte key; the answer carries Sec-WebSocket-Accept, no extension and no subprotocol),
// masked client frames (an unmasked one is a protocol error, as the RFC demands), binary and text
// messages (payload handed over as bytes), fragmented messages, ping (answered with pong), pong
// (ignored), close (answered with a close echoing the code, then the connection ends). Server
// frames are unmasked, FIN set, never fragmented.
// Bounds: the upgrade request's header (8 KiB), a message (message_bytes_max, close code 1009),
// control frames (125 bytes, unfragmented), outbound frames queued per connection
// (outbound_frames_max; past it the connection is dropped as a slow reader). Inbound, the
// handler may hold every session's reads while it catches up (LeanWsShared::reads_held): TCP's
// flow control then stops the peers.
// On an io_uring (LeanWsShared::ring, LeanWsRing below): once upgraded, a session's reads and
// writes are the ring's operations instead of Asio's epoll waits and system calls; the upgrade
// itself stays on Asio.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "impl/base/result.h"
#include "impl/runtime.h"

namespace msgsim::live {

// Opcodes of RFC 6455 section 5.2.
enum class WsOpcode : uint8_t { continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA };

struct WsInbound {
  enum class Kind : uint8_t { message, ping, pong, close };
  Kind kind = Kind::message;
  ByteView payload;         // valid during the callback only
  uint16_t close_code = 0;  // for close: the code the peer sent (1005 when it sent none)
};

// Who wrote the frames a reader reads: a client masks every frame, a server none (RFC 6455
// section 5.1; either side refuses the other kind).
enum class WsFramesFrom : uint8_t { client, server };

// Sans-IO: reads a peer's frames out of a byte stream (a server's reader reads client frames, the
// default; a client's reads server frames). `parse` unmasks every complete frame in place, hands
// over each message and control frame, and returns how many bytes it consumed; the bytes of a
// frame not yet complete are left for the next call (the caller keeps them). An error names what
// was wrong (the caller closes the connection; code 1009 for an oversized message, 1002 for
// anything else).
class WsFrameReader {
 public:
  explicit WsFrameReader(size_t message_bytes_max, WsFramesFrom from = WsFramesFrom::client)
      : message_bytes_max_(message_bytes_max), masked_(from == WsFramesFrom::client) {}
  Result<size_t> parse(std::span<uint8_t> data, const std::function<void(const WsInbound&)>& on_inbound);
  bool oversized() const { return oversized_; }  // the last error was a message past the bound

 private:
  size_t message_bytes_max_;
  bool masked_;      // the frames read carry a masking key (a client's)
  Bytes fragments_;  // a fragmented message's parts so far (empty, and unallocated, otherwise)
  bool in_fragmented_ = false;
  bool oversized_ = false;
};

// Appends one server frame (FIN, unmasked) to `out`.
void append_ws_frame(Bytes& out, WsOpcode opcode, ByteView payload);
// Appends one client frame (FIN, masked with `masking_key`, the 4 key bytes in network order) to
// `out`: what a client sends (a server refuses unmasked frames).
void append_masked_ws_frame(Bytes& out, WsOpcode opcode, ByteView payload, uint32_t masking_key);

class LeanWsSession;

// One io_uring (liburing) for the upgraded sessions of one loop: every session keeps a recv posted
// that takes a buffer from a ring of provided buffers only when bytes arrive (an idle connection
// pins no buffer), the sends of every session written to in a loop turn go to the kernel in one
// io_uring_enter together with the re-posted recvs, and the completions are reaped on the Asio
// loop when the ring's descriptor turns readable. Why (perf of the bench's device loop at 25,000
// msg/s, session 15): Asio's reactor re-armed every socket with an epoll_ctl(MOD) before each read,
// then a recv, and each frame batch to a device was its own sendto: ~4 system calls a message on
// a guest where each costs ~1 us, a third of the device loop's CPU.
class LeanWsRing {
 public:
  struct Options {
    unsigned entries = 4096;        // submission queue (the completion queue is four times that)
    unsigned buffers = 1024;        // provided buffers, a power of two
    uint32_t buffer_bytes = 2048;   // each; a read takes at most one
  };
  // Fails when the kernel refuses a ring (io_uring disabled, no memory): the caller keeps Asio.
  static Result<std::unique_ptr<LeanWsRing>> make(boost::asio::io_context& io, Options options);
  static Result<std::unique_ptr<LeanWsRing>> make(boost::asio::io_context& io) { return make(io, Options{}); }
  ~LeanWsRing();
  LeanWsRing(const LeanWsRing&) = delete;
  LeanWsRing& operator=(const LeanWsRing&) = delete;

  // Test seam (the fail_count loop of tests/live_lean_websocket_test.cpp): the session
  // operation (recv or send) queued `after` operations from now (0: the next one) is not done:
  // a NOP stands in its place and its completion reports -`error` (e.g. ECONNRESET; ENOBUFS: no
  // provided buffer was free, nothing read, and then `after` counts recvs only).
  void fail_operation(uint64_t after, int error);
  bool failure_pending() const;
  uint64_t submits() const;      // io_uring_enter calls that submitted
  uint64_t completions() const;  // session completions reaped
  size_t sessions() const;       // sessions whose descriptor is on the ring (closing ones too)

  struct Impl;

 private:
  explicit LeanWsRing(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  friend class LeanWsSession;
  std::shared_ptr<Impl> impl_;  // shared with the handlers posted to the loop (weakly)
};

// What a server does with its sessions; one for all of them (a session holds only a pointer).
class LeanWsHandler {
 public:
  virtual ~LeanWsHandler() = default;
  // The upgrade succeeded; `target` is the request's path.
  virtual void on_ws_open(LeanWsSession& session, std::string_view target) = 0;
  virtual void on_ws_message(LeanWsSession& session, ByteView payload) = 0;
  // The connection ended: `closed_by_peer` after the peer's close frame, else a reset, an error,
  // a bound, or close() (never called for a session whose upgrade failed).
  virtual void on_ws_gone(LeanWsSession& session, bool closed_by_peer) = 0;
  // A line for the log: a connection closed by a bound or bad input.
  virtual void on_ws_rejected(std::string_view why) = 0;
};

// Shared by every session of one loop.
struct LeanWsShared {
  LeanWsHandler* handler = nullptr;
  size_t message_bytes_max = 1 << 20;
  size_t outbound_frames_max = 4096;
  size_t read_chunk_bytes = 64 * 1024;
  std::vector<uint8_t> read_buffer;  // read_chunk_bytes, used by one session at a time
  // Backpressure, the handler's choice (e.g. while its own work queue is long): while
  // `reads_held`, a session whose socket turns readable reads nothing and waits in
  // `held_readers`, so its bytes stay in the kernel and the peer's TCP window closes (its writes
  // block) instead of the server taking in more than it can work off. release_reads() reads
  // them again, in the order they waited, each from the loop (never inside the caller).
  bool reads_held = false;
  std::vector<std::weak_ptr<LeanWsSession>> held_readers;
  void release_reads();
  // Upgraded sessions move their descriptors onto this ring (none: Asio's epoll). Outlives them
  // on the ring, or ends them (its destructor closes their descriptors; their handler hears
  // nothing more).
  LeanWsRing* ring = nullptr;
};

class LeanWsSession : public std::enable_shared_from_this<LeanWsSession> {
 public:
  LeanWsSession(LeanWsShared& shared, boost::asio::ip::tcp::socket socket);
  ~LeanWsSession();
  // Reads the upgrade request; on_ws_open follows if it is one.
  void start();
  // Queues a binary message; written with the others queued in this loop turn.
  void send(Bytes payload);
  // Ends the connection at once (no close frame), and tells the handler from the loop.
  void close();
  bool open() const { return open_; }
  // Reads again after release_reads(): posted, so the caller's handler is never re-entered.
  void resume_reading();

  uint64_t tag = 0;  // the server's name for the connection

 private:
  void on_request_read(boost::system::error_code ec);
  void wait_readable();
  void on_readable();
  // The peer sent what the frame reader refuses: a close frame with the reason's code, then fail.
  void refuse(std::string_view why);
  void handle(const WsInbound& inbound);
  void queue_frame(WsOpcode opcode, ByteView payload);
  void flush();
  void fail(bool closed_by_peer, std::string_view rejected_why);
  void linger_after_close();
  void discard_until_end();
  // Parses what is in partial_ followed by `fresh` (unmasked in place); false when the session
  // ended on it.
  bool take(std::span<uint8_t> fresh);
  // The socket is open and writable (on the ring: not closing).
  bool socket_usable() const;
  // Closes the socket; on the ring its pending operations are cancelled first and the
  // descriptor closed when the last one completes.
  void close_socket();
  // On the ring (LeanWsRing::Impl calls these).
  friend struct LeanWsRing::Impl;
  void attach_to_ring();
  void on_ring_recv(int result, uint8_t* data);
  void on_ring_send(int result);
  void queue_ring_send();
  void finish_on_ring_if_done();

  struct Handshake;
  LeanWsShared& shared_;
  boost::asio::ip::tcp::socket socket_;
  std::unique_ptr<Handshake> handshake_;  // only while the upgrade is read
  WsFrameReader reader_;
  Bytes partial_;                // the start of a frame not yet complete
  std::vector<Bytes> outbox_;    // binary payloads queued since the last write
  Bytes wire_;                   // the bytes of the write in flight (released after it)
  Bytes control_;                // pong / close frames waiting for the next write
  bool open_ = false;
  bool writing_ = false;
  bool flush_posted_ = false;
  bool gone_ = false;
  bool close_after_write_ = false;
  bool lingering_ = false;
  size_t discarded_bytes_ = 0;
  std::unique_ptr<boost::asio::steady_timer> linger_timer_;  // only while closing
  // On the ring (after the upgrade, when LeanWsShared::ring is set): the descriptor released
  // from socket_, the session keeping itself alive while it is there (the ring's completions
  // name it by address), which operations are in flight, how much of wire_ is written.
  LeanWsRing::Impl* ring_ = nullptr;
  int fd_ = -1;
  std::shared_ptr<LeanWsSession> ring_self_;
  bool recv_pending_ = false;
  bool send_pending_ = false;
  bool ring_closing_ = false;
  size_t ring_written_ = 0;
};

}  // namespace msgsim::live
