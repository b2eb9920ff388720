#include "live/lean_websocket.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <set>

namespace msgsim::live {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

namespace {
constexpr size_t kControlPayloadMax = 125;
constexpr size_t kUpgradeHeaderBytesMax = 8 * 1024;
constexpr int64_t kHandshakeTimeoutNs = 5 * kNanosPerSecond;
constexpr size_t kWebSocketKeyChars = 24;  // base64 of 16 bytes
constexpr uint16_t kCloseNoCode = 1005;
constexpr uint16_t kCloseProtocolError = 1002;
constexpr uint16_t kCloseTooBig = 1009;
constexpr int64_t kCloseLingerNs = 2 * kNanosPerSecond;     // waiting for the peer's end after our close
constexpr size_t kCloseDiscardBytesMax = 4 * 1024 * 1024;  // read and dropped meanwhile, at most

bool is_data_opcode(uint8_t op) { return op <= 0x2; }
bool is_control_opcode(uint8_t op) { return op == 0x8 || op == 0x9 || op == 0xA; }
}  // namespace

Result<size_t> WsFrameReader::parse(std::span<uint8_t> data, const std::function<void(const WsInbound&)>& on_inbound) {
  oversized_ = false;
  size_t pos = 0;
  while (data.size() - pos >= 2) {
    uint8_t* p = data.data() + pos;
    const size_t available = data.size() - pos;
    const bool fin = (p[0] & 0x80) != 0;
    const uint8_t opcode = p[0] & 0x0F;
    if ((p[0] & 0x70) != 0) return make_error(ErrorCode::bad_input, "WebSocket frame with reserved bits set (no extension was agreed)");
    if (masked_ && (p[1] & 0x80) == 0) return make_error(ErrorCode::bad_input, "unmasked WebSocket frame from a client");
    if (!masked_ && (p[1] & 0x80) != 0) return make_error(ErrorCode::bad_input, "masked WebSocket frame from a server");
    if (!is_data_opcode(opcode) && !is_control_opcode(opcode)) {
      return make_error(ErrorCode::bad_input, "WebSocket frame with unknown opcode " + std::to_string(opcode));
    }
    uint64_t length = p[1] & 0x7F;
    size_t header = 2;
    if (length == 126) {
      if (available < 4) break;
      length = (uint64_t{p[2]} << 8) | p[3];
      header = 4;
    } else if (length == 127) {
      if (available < 10) break;
      length = 0;
      for (int i = 0; i < 8; ++i) length = (length << 8) | p[2 + i];
      header = 10;
    }
    const bool control = is_control_opcode(opcode);
    if (control && (!fin || length > kControlPayloadMax)) {
      return make_error(ErrorCode::bad_input, "WebSocket control frame fragmented or longer than 125 bytes");
    }
    if (!control) {
      // Checked before the payload arrives: an oversized message is refused from its header.
      const uint64_t so_far = opcode == 0 ? fragments_.size() : 0;
      if (length > message_bytes_max_ || so_far + length > message_bytes_max_) {
        oversized_ = true;
        return make_error(ErrorCode::bad_input, "WebSocket message of " + std::to_string(so_far + length) +
                                                   " bytes or more, the bound is " + std::to_string(message_bytes_max_));
      }
      if (opcode == 0 && !in_fragmented_) return make_error(ErrorCode::bad_input, "WebSocket continuation frame without a message");
      if (opcode != 0 && in_fragmented_) return make_error(ErrorCode::bad_input, "WebSocket message begun inside a fragmented one");
    }
    const size_t key_bytes = masked_ ? 4 : 0;
    if (available - header < key_bytes || available - header - key_bytes < length) break;  // not complete yet
    uint8_t* payload = p + header + key_bytes;
    if (masked_) {
      const uint8_t* key = p + header;
      for (size_t i = 0; i < length; ++i) payload[i] ^= key[i & 3];
    }
    const ByteView view(payload, static_cast<size_t>(length));
    pos += header + key_bytes + static_cast<size_t>(length);
    if (opcode == 0x8) {
      if (length == 1) return make_error(ErrorCode::bad_input, "WebSocket close frame with a 1-byte payload");
      WsInbound inbound{WsInbound::Kind::close, view.subspan(length >= 2 ? 2 : 0), kCloseNoCode};
      if (length >= 2) inbound.close_code = static_cast<uint16_t>((payload[0] << 8) | payload[1]);
      on_inbound(inbound);
    } else if (opcode == 0x9) {
      on_inbound(WsInbound{WsInbound::Kind::ping, view, 0});
    } else if (opcode == 0xA) {
      on_inbound(WsInbound{WsInbound::Kind::pong, view, 0});
    } else if (opcode == 0 || !fin) {
      fragments_.insert(fragments_.end(), view.begin(), view.end());
      in_fragmented_ = true;
      if (fin) {
        on_inbound(WsInbound{WsInbound::Kind::message, fragments_, 0});
        Bytes().swap(fragments_);  // idle connections hold no message buffer
        in_fragmented_ = false;
      }
    } else {
      on_inbound(WsInbound{WsInbound::Kind::message, view, 0});
    }
  }
  return pos;
}

namespace {
// The frame's first two bytes and its extended length; `mask_bit` is 0x80 for a client's frame.
void append_ws_header(Bytes& out, WsOpcode opcode, size_t n, uint8_t mask_bit) {
  out.push_back(static_cast<uint8_t>(0x80 | static_cast<uint8_t>(opcode)));
  if (n < 126) {
    out.push_back(static_cast<uint8_t>(mask_bit | n));
  } else if (n <= 0xFFFF) {
    out.push_back(static_cast<uint8_t>(mask_bit | 126));
    out.push_back(static_cast<uint8_t>(n >> 8));
    out.push_back(static_cast<uint8_t>(n));
  } else {
    out.push_back(static_cast<uint8_t>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(n) >> shift));
  }
}
}  // namespace

void append_ws_frame(Bytes& out, WsOpcode opcode, ByteView payload) {
  append_ws_header(out, opcode, payload.size(), 0);
  out.insert(out.end(), payload.begin(), payload.end());
}

void append_masked_ws_frame(Bytes& out, WsOpcode opcode, ByteView payload, uint32_t masking_key) {
  append_ws_header(out, opcode, payload.size(), 0x80);
  const uint8_t key[4] = {static_cast<uint8_t>(masking_key >> 24), static_cast<uint8_t>(masking_key >> 16),
                          static_cast<uint8_t>(masking_key >> 8), static_cast<uint8_t>(masking_key)};
  out.insert(out.end(), key, key + 4);
  const size_t start = out.size();
  out.resize(start + payload.size());
  for (size_t i = 0; i < payload.size(); ++i) out[start + i] = payload[i] ^ key[i & 3];
}

// ---------------------------------------------------------------------------------------------
// The ring (LeanWsRing)

namespace {
// A completion's user_data: the session's address with the operation in its low bits (a session
// is allocated by make_shared, at least 8-aligned); 0 is a cancellation's, counted and ignored.
constexpr uint64_t kOpSend = 1;
constexpr uint64_t kOpInjected = 2;  // a NOP standing for an operation the test seam fails
constexpr uint64_t kOpBits = 7;
constexpr uint64_t kCancelTag = 0;
constexpr uint16_t kBufferGroup = 0;
constexpr uint64_t kNoFailure = std::numeric_limits<uint64_t>::max();
constexpr int64_t kRingDrainNs = 2 * kNanosPerSecond;  // the destructor's wait for cancelled operations
}  // namespace

struct LeanWsRing::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& context, Options opts) : io(context), options(opts), notify(context) {}
  ~Impl();

  asio::io_context& io;
  Options options;
  io_uring ring{};
  bool ring_made = false;
  io_uring_buf_ring* buffer_ring = nullptr;  // mmap'd (page-aligned, as the kernel requires)
  size_t buffer_ring_bytes = 0;
  // The provided buffers; not zeroed, so a page costs memory only once the kernel has written it.
  std::unique_ptr<uint8_t[]> buffers;
  unsigned buffers_returned = 0;  // given back since the last advance of the buffer ring
  asio::posix::stream_descriptor notify;  // the ring's descriptor, readable when completions wait
  bool waiting = false;                   // an async_wait on `notify` is pending
  bool submit_posted = false;             // a flush_and_submit is posted to the loop
  bool in_batch = false;                  // inside reap or flush_and_submit: they submit at their end
  uint64_t in_flight = 0;                 // operations queued or in the kernel, cancellations too
  std::vector<std::shared_ptr<LeanWsSession>> dirty;  // sessions with frames to write
  std::set<LeanWsSession*> attached;  // sessions whose descriptors are on the ring
  uint64_t fail_after = kNoFailure;   // the test seam: operations queued before the failed one
  int fail_error = 0;
  uint64_t submits = 0, completions = 0;

  io_uring_sqe* sqe() {
    io_uring_sqe* entry = ::io_uring_get_sqe(&ring);
    if (entry == nullptr) {
      submit();
      entry = ::io_uring_get_sqe(&ring);
    }
    MSGSIM_ASSERT(entry != nullptr, "the submission queue stays full after a submit");
    return entry;
  }
  // A session's operation; the test seam may put a NOP that completes with its error in its place.
  io_uring_sqe* session_op(LeanWsSession& session, uint64_t op) {
    io_uring_sqe* entry = sqe();
    uint64_t data = reinterpret_cast<uint64_t>(&session) | op;
    MSGSIM_ASSERT_EQ(reinterpret_cast<uint64_t>(&session) & kOpBits, uint64_t{0});
    // ENOBUFS (no provided buffer) can only be a recv's: the seam counts recvs only then.
    const bool counted = fail_after != kNoFailure && (fail_error != ENOBUFS || op != kOpSend);
    if (counted && fail_after-- == 0) {
      fail_after = kNoFailure;
      ::io_uring_prep_nop(entry);
      data |= kOpInjected;
    }
    ::io_uring_sqe_set_data64(entry, data);
    in_flight++;
    want_submit();
    return (data & kOpInjected) != 0 ? nullptr : entry;
  }
  void queue_recv(LeanWsSession& session) {
    io_uring_sqe* entry = session_op(session, 0);
    if (entry == nullptr) return;
    const size_t len = std::min<size_t>(session.shared_.read_chunk_bytes, options.buffer_bytes);
    ::io_uring_prep_recv(entry, session.fd_, nullptr, len, 0);
    entry->flags |= IOSQE_BUFFER_SELECT;
    entry->buf_group = kBufferGroup;
  }
  void queue_send(LeanWsSession& session, const uint8_t* data, size_t len) {
    io_uring_sqe* entry = session_op(session, kOpSend);
    if (entry == nullptr) return;
    ::io_uring_prep_send(entry, session.fd_, data, len, MSG_NOSIGNAL);
  }
  void queue_cancel(int fd) {
    io_uring_sqe* entry = sqe();
    ::io_uring_prep_cancel_fd(entry, fd, IORING_ASYNC_CANCEL_ALL);
    ::io_uring_sqe_set_data64(entry, kCancelTag);
    in_flight++;
    want_submit();
  }
  void queue_flush(std::shared_ptr<LeanWsSession> session) {
    dirty.push_back(std::move(session));
    want_submit();
  }
  // The session's descriptor is closed: it leaves the ring, and drops its hold on itself from
  // the loop (never inside its own call).
  void detach(LeanWsSession& session) {
    attached.erase(&session);
    asio::post(io, [hold = std::move(session.ring_self_)] {});
  }

  // What is queued goes to the kernel once, after every handler already posted to the loop.
  void want_submit() {
    if (in_batch || submit_posted) return;
    submit_posted = true;
    asio::post(io, [weak = weak_from_this()] {
      auto self = weak.lock();
      if (!self) return;
      self->submit_posted = false;
      self->flush_and_submit();
    });
  }
  void flush_and_submit() {
    in_batch = true;
    while (!dirty.empty()) {
      std::vector<std::shared_ptr<LeanWsSession>> sessions;
      sessions.swap(dirty);
      for (const auto& session : sessions) {
        session->flush_posted_ = false;
        session->flush();
      }
    }
    in_batch = false;
    if (::io_uring_sq_ready(&ring) > 0) submit();
    arm_wait();
  }
  void submit() {
    const int result = ::io_uring_submit(&ring);
    // EBUSY / EAGAIN: completions must be reaped first; what is queued is submitted after the next reap.
    MSGSIM_ASSERT(result >= 0 || result == -EBUSY || result == -EAGAIN || result == -EINTR,
                  std::string("io_uring_submit: ") + std::strerror(-result));
    submits++;
  }
  void arm_wait() {
    if (waiting || in_flight == 0) return;
    waiting = true;
    notify.async_wait(asio::posix::stream_descriptor::wait_read, [weak = weak_from_this()](error_code ec) {
      if (ec == asio::error::operation_aborted) return;
      auto self = weak.lock();
      if (!self) return;
      self->waiting = false;
      MSGSIM_ASSERT(!ec, "waiting on the io_uring's descriptor: " + ec.message());
      self->reap();
    });
  }
  void give_back(unsigned buffer_id) {
    ::io_uring_buf_ring_add(buffer_ring, buffers.get() + size_t{buffer_id} * options.buffer_bytes, options.buffer_bytes,
                            static_cast<unsigned short>(buffer_id), ::io_uring_buf_ring_mask(options.buffers),
                            static_cast<int>(buffers_returned));
    buffers_returned++;
  }
  // Every completion there is, each handed to its session, then one submission of what they
  // queued (re-posted recvs, writes) and of the sessions' writes.
  void reap() {
    in_batch = true;
    for (;;) {
      unsigned head = 0, count = 0;
      io_uring_cqe* cqe = nullptr;
      io_uring_for_each_cqe(&ring, head, cqe) {
        count++;
        MSGSIM_ASSERT_GT(in_flight, uint64_t{0});
        in_flight--;
        const uint64_t data = cqe->user_data;
        if (data == kCancelTag) continue;
        int result = cqe->res;
        uint8_t* bytes = nullptr;
        if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
          const unsigned buffer_id = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
          MSGSIM_ASSERT_LT(buffer_id, options.buffers);
          bytes = buffers.get() + size_t{buffer_id} * options.buffer_bytes;
          give_back(buffer_id);  // reusable once the buffer ring advances, after this batch
        }
        if ((data & kOpInjected) != 0) result = -fail_error;
        completions++;
        auto* session = reinterpret_cast<LeanWsSession*>(data & ~kOpBits);
        const std::shared_ptr<LeanWsSession> hold = session->ring_self_;  // it may detach inside
        if ((data & kOpSend) != 0) {
          session->on_ring_send(result);
        } else {
          session->on_ring_recv(result, result > 0 ? bytes : nullptr);
        }
      }
      if (count == 0) {
        // Completions past the queue's size wait in the kernel (IORING_FEAT_NODROP) and keep the
        // ring's descriptor readable. liburing's submit brings them in, but a reap may have
        // nothing to submit (every session's reads held): bring them in here, then reap on.
        if (!::io_uring_cq_has_overflow(&ring)) break;
        const int flushed = ::io_uring_get_events(&ring);
        MSGSIM_ASSERT(flushed >= 0 || flushed == -EINTR || flushed == -EAGAIN || flushed == -EBUSY,
                      std::string("io_uring_get_events: ") + std::strerror(-flushed));
        if (::io_uring_cq_ready(&ring) == 0) break;
        continue;
      }
      ::io_uring_cq_advance(&ring, count);
      if (buffers_returned > 0) {
        ::io_uring_buf_ring_advance(buffer_ring, static_cast<int>(buffers_returned));
        buffers_returned = 0;
      }
    }
    in_batch = false;
    flush_and_submit();
  }
};

struct LeanWsSession::Handshake {
  explicit Handshake(const asio::any_io_executor& executor) : timer(executor) {}
  beast::flat_buffer buffer;
  http::request_parser<http::empty_body> parser;
  asio::steady_timer timer;
};

LeanWsSession::LeanWsSession(LeanWsShared& shared, asio::ip::tcp::socket socket)
    : shared_(shared), socket_(std::move(socket)), reader_(shared.message_bytes_max) {}

LeanWsSession::~LeanWsSession() {
  // Only when the ring ended first (its destructor): it closed nothing of ours.
  if (fd_ >= 0) ::close(fd_);
}

void LeanWsSession::start() {
  error_code ignored;
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
  handshake_ = std::make_unique<Handshake>(socket_.get_executor());
  handshake_->parser.header_limit(kUpgradeHeaderBytesMax);
  handshake_->parser.body_limit(0);
  handshake_->timer.expires_after(std::chrono::nanoseconds(kHandshakeTimeoutNs));
  handshake_->timer.async_wait([weak = weak_from_this()](error_code ec) {
    auto self = weak.lock();
    if (ec || !self || !self->handshake_) return;
    self->shared_.handler->on_ws_rejected("no WebSocket upgrade within the handshake timeout");
    error_code ignored_close;
    self->socket_.close(ignored_close);
  });
  http::async_read(socket_, handshake_->buffer, handshake_->parser,
                   [self = shared_from_this()](error_code ec, size_t) { self->on_request_read(ec); });
}

void LeanWsSession::on_request_read(error_code ec) {
  handshake_->timer.cancel();
  if (ec) {
    if (ec != asio::error::eof && ec != asio::error::operation_aborted) {
      shared_.handler->on_ws_rejected("bad HTTP upgrade request: " + ec.message());
    }
    handshake_.reset();
    error_code ignored;
    socket_.close(ignored);
    return;
  }
  const auto& request = handshake_->parser.get();
  const auto key = request[http::field::sec_websocket_key];
  const auto version = request[http::field::sec_websocket_version];
  if (!beast::websocket::is_upgrade(request) || version != "13" || key.size() != kWebSocketKeyChars) {
    shared_.handler->on_ws_rejected("not a WebSocket upgrade (version 13, 16-byte key): " +
                                    std::string(request.target().data(), request.target().size()));
    static constexpr std::string_view kBadRequest = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    wire_.assign(kBadRequest.begin(), kBadRequest.end());
    handshake_.reset();
    writing_ = true;
    asio::async_write(socket_, asio::buffer(wire_), [self = shared_from_this()](error_code, size_t) {
      error_code ignored;
      self->socket_.close(ignored);
    });
    return;
  }
  beast::websocket::detail::sec_ws_accept_type accept;
  beast::websocket::detail::make_sec_ws_accept(accept, key);
  const std::string response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
                               std::string(accept.data(), accept.size()) + "\r\n\r\n";
  const std::string target(request.target().data(), request.target().size());
  // Bytes after the request (a client that sent frames before the answer) are frames.
  const auto rest = handshake_->buffer.data();
  const auto* rest_bytes = static_cast<const uint8_t*>(rest.data());
  partial_.assign(rest_bytes, rest_bytes + rest.size());
  handshake_.reset();
  if (shared_.ring != nullptr) {
    attach_to_ring();
    if (fd_ < 0) return;  // could not be moved: closed, the handler never heard of it
  }
  open_ = true;
  control_.assign(response.begin(), response.end());  // goes out before any frame
  flush();
  shared_.handler->on_ws_open(*this, target);
  if (gone_) return;
  // Parse what came with the request, as with what the socket gives.
  if (!partial_.empty() && !take({})) return;
  wait_readable();
}

void LeanWsSession::refuse(std::string_view why) {
  // Bad bytes from the peer: tell it why with a close code, then end only this connection.
  const uint16_t code = reader_.oversized() ? kCloseTooBig : kCloseProtocolError;
  const uint8_t payload[2] = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code)};
  queue_frame(WsOpcode::close, ByteView(payload, 2));
  close_after_write_ = true;
  fail(false, why);
}

void LeanWsSession::wait_readable() {
  if (ring_ != nullptr) {
    // A recv stays posted; it takes a provided buffer only when bytes arrive.
    if (!recv_pending_ && !ring_closing_) {
      recv_pending_ = true;
      ring_->queue_recv(*this);
    }
    return;
  }
  // Waiting for readability needs no buffer: an idle connection holds none.
  socket_.async_wait(asio::ip::tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
    if (self->gone_) return;
    if (ec) return self->fail(false, "");
    self->on_readable();
  });
}

void LeanWsShared::release_reads() {
  reads_held = false;
  std::vector<std::weak_ptr<LeanWsSession>> waiting;
  waiting.swap(held_readers);
  for (const auto& weak : waiting) {
    if (auto session = weak.lock()) session->resume_reading();
  }
}

void LeanWsSession::resume_reading() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    if (self->gone_) return;
    if (self->ring_ == nullptr) return self->on_readable();
    // On the ring the held bytes were read already and wait in partial_.
    if (self->shared_.reads_held) {
      self->shared_.held_readers.push_back(self->weak_from_this());
      return;
    }
    if (!self->partial_.empty() && !self->take({})) return;
    self->wait_readable();
  });
}

bool LeanWsSession::take(std::span<uint8_t> fresh) {
  std::span<uint8_t> data = fresh;
  if (!partial_.empty()) {
    partial_.insert(partial_.end(), fresh.begin(), fresh.end());
    data = partial_;
  }
  auto consumed = reader_.parse(data, [this](const WsInbound& inbound) { handle(inbound); });
  if (!consumed.ok()) {
    refuse(consumed.error().message);
    return false;
  }
  if (gone_) return false;
  if (!partial_.empty()) {
    partial_.erase(partial_.begin(), partial_.begin() + static_cast<std::ptrdiff_t>(*consumed));
    if (partial_.empty()) Bytes().swap(partial_);
  } else if (*consumed < fresh.size()) {
    partial_.assign(fresh.begin() + static_cast<std::ptrdiff_t>(*consumed), fresh.end());
  }
  return true;
}

void LeanWsSession::on_readable() {
  if (shared_.reads_held) {
    // Readable, but the handler has more than it can work off: the bytes stay in the kernel.
    shared_.held_readers.push_back(weak_from_this());
    return;
  }
  std::vector<uint8_t>& buffer = shared_.read_buffer;
  if (buffer.size() < shared_.read_chunk_bytes) buffer.resize(shared_.read_chunk_bytes);
  error_code ec;
  // Once per connection: Asio's non_blocking(true) is an ioctl(FIONBIO) on every call, even when
  // the mode is already set (a system call per readable event, and each one is expensive on this
  // PVM guest); non_blocking() only reads Asio's own flag.
  if (!socket_.non_blocking()) socket_.non_blocking(true, ec);
  const size_t n = ec ? 0 : socket_.read_some(asio::buffer(buffer.data(), buffer.size()), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) return wait_readable();
  if (ec) return fail(false, "");  // end of stream or reset without a close frame
  if (!take(std::span<uint8_t>(buffer.data(), n))) return;
  wait_readable();
}

void LeanWsSession::handle(const WsInbound& inbound) {
  if (gone_) return;
  switch (inbound.kind) {
    case WsInbound::Kind::message:
      shared_.handler->on_ws_message(*this, inbound.payload);
      return;
    case WsInbound::Kind::ping:
      queue_frame(WsOpcode::pong, inbound.payload);
      return;
    case WsInbound::Kind::pong:
      return;
    case WsInbound::Kind::close: {
      // Echo the code (none if the peer sent none), then end the connection.
      const uint8_t payload[2] = {static_cast<uint8_t>(inbound.close_code >> 8), static_cast<uint8_t>(inbound.close_code)};
      queue_frame(WsOpcode::close, inbound.close_code == kCloseNoCode ? ByteView() : ByteView(payload, 2));
      close_after_write_ = true;
      fail(true, "");
      return;
    }
  }
}

void LeanWsSession::queue_frame(WsOpcode opcode, ByteView payload) {
  append_ws_frame(control_, opcode, payload);
  if (!writing_) flush();
}

void LeanWsSession::send(Bytes payload) {
  if (gone_ || close_after_write_) return;
  if (outbox_.size() >= shared_.outbound_frames_max) {
    shared_.handler->on_ws_rejected("slow reader: " + std::to_string(outbox_.size()) + " frames queued");
    return close();
  }
  outbox_.push_back(std::move(payload));
  // One write per connection per loop turn: the frames queued until the posted flush runs go
  // out together (on the ring: one flush for every session written to, then one submission).
  if (ring_ != nullptr) {
    if (!writing_ && !flush_posted_) {
      flush_posted_ = true;
      ring_->queue_flush(shared_from_this());
    }
    return;
  }
  if (!writing_ && !flush_posted_) {
    flush_posted_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->flush_posted_ = false;
      self->flush();
    });
  }
}

void LeanWsSession::flush() {
  if (writing_ || !socket_usable()) return;
  if (control_.empty() && outbox_.empty()) {
    if (close_after_write_) linger_after_close();
    return;
  }
  wire_ = std::move(control_);
  control_ = Bytes();
  if (!close_after_write_) {
    for (const Bytes& payload : outbox_) append_ws_frame(wire_, WsOpcode::binary, payload);
  }
  std::vector<Bytes>().swap(outbox_);
  writing_ = true;
  if (ring_ != nullptr) {
    ring_written_ = 0;
    return queue_ring_send();
  }
  asio::async_write(socket_, asio::buffer(wire_), [self = shared_from_this()](error_code ec, size_t) {
    self->writing_ = false;
    Bytes().swap(self->wire_);  // released: idle connections hold no write buffer
    if (ec) {
      error_code ignored;
      self->socket_.close(ignored);
      return self->fail(false, "");
    }
    self->flush();
  });
}

// The close frame is out: stop sending and read (discarding) until the peer's end of stream, so
// its close answer finds an open socket and unread bytes do not turn the close into an RST that
// could destroy the close frame. Bounded in time and bytes.
void LeanWsSession::linger_after_close() {
  if (lingering_) return;
  lingering_ = true;
  error_code ignored;
  if (ring_ != nullptr) {
    ::shutdown(fd_, SHUT_WR);  // a failure (the peer reset) shows in the next recv
  } else {
    socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  }
  linger_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor());
  linger_timer_->expires_after(std::chrono::nanoseconds(kCloseLingerNs));
  linger_timer_->async_wait([weak = weak_from_this()](error_code ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    self->close_socket();
  });
  discard_until_end();
}

void LeanWsSession::discard_until_end() {
  if (ring_ != nullptr) return wait_readable();  // on_ring_recv discards while lingering
  socket_.async_wait(asio::ip::tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
    std::vector<uint8_t>& buffer = self->shared_.read_buffer;
    if (buffer.size() < self->shared_.read_chunk_bytes) buffer.resize(self->shared_.read_chunk_bytes);
    size_t n = 0;
    if (!ec) {
      if (!self->socket_.non_blocking()) self->socket_.non_blocking(true, ec);
      if (!ec) n = self->socket_.read_some(asio::buffer(buffer.data(), buffer.size()), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
    }
    self->discarded_bytes_ += n;
    if (ec || self->discarded_bytes_ > kCloseDiscardBytesMax) {
      error_code ignored;
      self->socket_.close(ignored);
      if (self->linger_timer_) self->linger_timer_->cancel();
      return;
    }
    self->discard_until_end();
  });
}

void LeanWsSession::close() {
  if (gone_) return;
  gone_ = true;
  close_socket();
  // Posted: close() may be called from inside a node's handler, which must not be re-entered.
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    if (self->open_) self->shared_.handler->on_ws_gone(*self, false);
  });
}

void LeanWsSession::fail(bool closed_by_peer, std::string_view rejected_why) {
  if (gone_) return;
  gone_ = true;
  if (!rejected_why.empty()) shared_.handler->on_ws_rejected(rejected_why);
  if (!close_after_write_ || !socket_usable()) {
    close_socket();
  } else if (!writing_) {
    flush();  // the close frame, then the socket closes
  }
  if (open_) shared_.handler->on_ws_gone(*this, closed_by_peer);
}

LeanWsRing::Impl::~Impl() {
  if (ring_made) {
    // Cancel what is in flight and wait for it (bounded): the kernel must not write into the
    // buffers, or read a session's wire_, after they are freed.
    if (in_flight > 0) {
      io_uring_sqe* entry = sqe();
      ::io_uring_prep_cancel64(entry, 0, IORING_ASYNC_CANCEL_ANY);
      ::io_uring_sqe_set_data64(entry, kCancelTag);
      in_flight++;
      ::io_uring_submit(&ring);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(kRingDrainNs);
      while (in_flight > 0 && std::chrono::steady_clock::now() < deadline) {
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec timeout{.tv_sec = 0, .tv_nsec = 100'000'000};
        if (::io_uring_wait_cqe_timeout(&ring, &cqe, &timeout) != 0 || cqe == nullptr) continue;
        ::io_uring_cqe_seen(&ring, cqe);
        in_flight--;
      }
    }
    if (notify.is_open()) notify.release();
    ::io_uring_queue_exit(&ring);
  }
  if (buffer_ring != nullptr) ::munmap(buffer_ring, buffer_ring_bytes);
  // Sessions still on the ring: their descriptors closed, their holds on themselves dropped; their
  // handler hears nothing more.
  std::vector<std::shared_ptr<LeanWsSession>> holds;
  for (LeanWsSession* session : attached) {
    session->ring_ = nullptr;
    session->ring_closing_ = true;
    if (session->fd_ >= 0) ::close(session->fd_);
    session->fd_ = -1;
    holds.push_back(std::move(session->ring_self_));
  }
  attached.clear();
}

Result<std::unique_ptr<LeanWsRing>> LeanWsRing::make(asio::io_context& io, Options options) {
  MSGSIM_ASSERT(options.buffers > 0 && options.buffers <= 32768 && (options.buffers & (options.buffers - 1)) == 0,
                std::to_string(options.buffers) + " buffers: a power of two up to 32768");
  MSGSIM_ASSERT_GT(options.buffer_bytes, uint32_t{0});
  auto impl = std::make_shared<Impl>(io, options);
  // A completion queue four times the submission queue: every idle connection has a recv
  // posted, and a burst of them completing at once past the queue's size would wait in the
  // kernel's overflow list until the next reap.
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = 4 * options.entries;
  const int error = ::io_uring_queue_init_params(options.entries, &impl->ring, &params);
  if (error < 0) return make_error(ErrorCode::unavailable, std::string("io_uring_queue_init: ") + std::strerror(-error));
  impl->ring_made = true;
  impl->buffer_ring_bytes = sizeof(io_uring_buf) * options.buffers;
  void* ring_memory = ::mmap(nullptr, impl->buffer_ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring_memory == MAP_FAILED) return make_error(ErrorCode::unavailable, std::string("mmap of the buffer ring: ") + std::strerror(errno));
  impl->buffer_ring = static_cast<io_uring_buf_ring*>(ring_memory);
  ::io_uring_buf_ring_init(impl->buffer_ring);
  io_uring_buf_reg registration{};
  registration.ring_addr = reinterpret_cast<uint64_t>(ring_memory);
  registration.ring_entries = options.buffers;
  registration.bgid = kBufferGroup;
  const int registered = ::io_uring_register_buf_ring(&impl->ring, &registration, 0);
  if (registered < 0) {
    return make_error(ErrorCode::unavailable, std::string("io_uring_register_buf_ring: ") + std::strerror(-registered));
  }
  impl->buffers = std::make_unique_for_overwrite<uint8_t[]>(size_t{options.buffers} * options.buffer_bytes);
  for (unsigned i = 0; i < options.buffers; ++i) impl->give_back(i);
  ::io_uring_buf_ring_advance(impl->buffer_ring, static_cast<int>(impl->buffers_returned));
  impl->buffers_returned = 0;
  error_code assigned;
  impl->notify.assign(impl->ring.ring_fd, assigned);
  if (assigned) return make_error(ErrorCode::unavailable, "the io_uring's descriptor on the loop: " + assigned.message());
  return std::unique_ptr<LeanWsRing>(new LeanWsRing(std::move(impl)));
}

LeanWsRing::~LeanWsRing() = default;

void LeanWsRing::fail_operation(uint64_t after, int error) {
  impl_->fail_after = after;
  impl_->fail_error = error;
}
bool LeanWsRing::failure_pending() const { return impl_->fail_after != kNoFailure; }
uint64_t LeanWsRing::submits() const { return impl_->submits; }
uint64_t LeanWsRing::completions() const { return impl_->completions; }
size_t LeanWsRing::sessions() const { return impl_->attached.size(); }

bool LeanWsSession::socket_usable() const { return ring_ != nullptr ? fd_ >= 0 && !ring_closing_ : socket_.is_open(); }

void LeanWsSession::attach_to_ring() {
  error_code ec;
  const int fd = socket_.release(ec);
  if (ec) {
    shared_.handler->on_ws_rejected("cannot move the connection onto the ring: " + ec.message());
    error_code ignored;
    socket_.close(ignored);
    return;
  }
  // Blocking: the ring's recv and send wait in the kernel (poll-armed) instead of failing with
  // EAGAIN as they would on a descriptor in non-blocking mode.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    shared_.handler->on_ws_rejected(std::string("cannot move the connection onto the ring: fcntl: ") + std::strerror(errno));
    ::close(fd);
    return;
  }
  fd_ = fd;
  ring_ = shared_.ring->impl_.get();
  ring_self_ = shared_from_this();
  ring_->attached.insert(this);
}

void LeanWsSession::close_socket() {
  if (ring_ == nullptr) {
    error_code ignored;
    socket_.close(ignored);
    return;
  }
  if (ring_closing_) return;
  ring_closing_ = true;
  // A pending recv holds the file: closing the descriptor alone would not end it.
  if (recv_pending_ || send_pending_) ring_->queue_cancel(fd_);
  finish_on_ring_if_done();
}

void LeanWsSession::finish_on_ring_if_done() {
  if (!ring_closing_ || recv_pending_ || send_pending_ || fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  ring_->detach(*this);
}

void LeanWsSession::on_ring_recv(int result, uint8_t* data) {
  recv_pending_ = false;
  if (ring_closing_) return finish_on_ring_if_done();
  if (lingering_) {
    // Our close frame is out: discard until the peer's end, as discard_until_end does.
    if (result == -ENOBUFS) return wait_readable();
    if (result > 0) discarded_bytes_ += static_cast<size_t>(result);
    if (result <= 0 || discarded_bytes_ > kCloseDiscardBytesMax) {
      if (linger_timer_) linger_timer_->cancel();
      return close_socket();
    }
    return wait_readable();
  }
  if (gone_) return;  // a close frame on its way out: linger_after_close reads again
  if (result == -ENOBUFS) {
    // No provided buffer was free: nothing was read, the bytes wait in the kernel.
    if (shared_.reads_held) return shared_.held_readers.push_back(weak_from_this());
    return wait_readable();
  }
  if (result <= 0) return fail(false, "");  // end of stream or reset without a close frame
  std::span<uint8_t> fresh(data, static_cast<size_t>(result));
  if (shared_.reads_held) {
    // Read already: kept unparsed until release_reads(), and no recv posted meanwhile.
    partial_.insert(partial_.end(), fresh.begin(), fresh.end());
    shared_.held_readers.push_back(weak_from_this());
    return;
  }
  if (!take(fresh)) return;
  wait_readable();
}

void LeanWsSession::queue_ring_send() {
  send_pending_ = true;
  ring_->queue_send(*this, wire_.data() + ring_written_, wire_.size() - ring_written_);
}

void LeanWsSession::on_ring_send(int result) {
  send_pending_ = false;
  if (ring_closing_ || result <= 0) {
    writing_ = false;
    Bytes().swap(wire_);
    if (ring_closing_) return finish_on_ring_if_done();
    // 0 bytes of a non-empty write taken is as good as an error.
    close_socket();
    return fail(false, "");
  }
  ring_written_ += static_cast<size_t>(result);
  if (ring_written_ < wire_.size()) return queue_ring_send();  // the rest of a short write
  writing_ = false;
  Bytes().swap(wire_);  // released: idle connections hold no write buffer
  flush();
}

}  // namespace msgsim::live
