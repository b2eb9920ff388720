#include "live/lean_websocket.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <chrono>

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

struct LeanWsSession::Handshake {
  explicit Handshake(const asio::any_io_executor& executor) : timer(executor) {}
  beast::flat_buffer buffer;
  http::request_parser<http::empty_body> parser;
  asio::steady_timer timer;
};

LeanWsSession::LeanWsSession(LeanWsShared& shared, asio::ip::tcp::socket socket)
    : shared_(shared), socket_(std::move(socket)), reader_(shared.message_bytes_max) {}

LeanWsSession::~LeanWsSession() = default;

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
  open_ = true;
  control_.assign(response.begin(), response.end());  // goes out before any frame
  flush();
  shared_.handler->on_ws_open(*this, target);
  if (gone_) return;
  if (!partial_.empty()) {
    // Parse what came with the request, as on_readable does with what the socket gives.
    Bytes pending = std::move(partial_);
    partial_.clear();
    auto consumed = reader_.parse(pending, [this](const WsInbound& inbound) { handle(inbound); });
    if (!consumed.ok()) return refuse(consumed.error().message);
    if (gone_) return;
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(*consumed));
    if (!pending.empty()) partial_ = std::move(pending);
  }
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
    if (!self->gone_) self->on_readable();
  });
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
  std::span<uint8_t> data(buffer.data(), n);
  if (!partial_.empty()) {
    partial_.insert(partial_.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
    data = partial_;
  }
  auto consumed = reader_.parse(data, [this](const WsInbound& inbound) { handle(inbound); });
  if (!consumed.ok()) return refuse(consumed.error().message);
  if (gone_) return;
  if (!partial_.empty()) {
    partial_.erase(partial_.begin(), partial_.begin() + static_cast<std::ptrdiff_t>(*consumed));
    if (partial_.empty()) Bytes().swap(partial_);
  } else if (*consumed < n) {
    partial_.assign(data.begin() + static_cast<std::ptrdiff_t>(*consumed), data.end());
  }
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
  // out together.
  if (!writing_ && !flush_posted_) {
    flush_posted_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->flush_posted_ = false;
      self->flush();
    });
  }
}

void LeanWsSession::flush() {
  if (writing_ || !socket_.is_open()) return;
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
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  linger_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor());
  linger_timer_->expires_after(std::chrono::nanoseconds(kCloseLingerNs));
  linger_timer_->async_wait([weak = weak_from_this()](error_code ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    error_code ignored_close;
    self->socket_.close(ignored_close);
  });
  discard_until_end();
}

void LeanWsSession::discard_until_end() {
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
  error_code ignored;
  socket_.close(ignored);
  // Posted: close() may be called from inside a node's handler, which must not be re-entered.
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    if (self->open_) self->shared_.handler->on_ws_gone(*self, false);
  });
}

void LeanWsSession::fail(bool closed_by_peer, std::string_view rejected_why) {
  if (gone_) return;
  gone_ = true;
  if (!rejected_why.empty()) shared_.handler->on_ws_rejected(rejected_why);
  if (!close_after_write_ || !socket_.is_open()) {
    error_code ignored;
    socket_.close(ignored);
  } else if (!writing_) {
    flush();  // the close frame, then the socket closes
  }
  if (open_) shared_.handler->on_ws_gone(*this, closed_by_peer);
}

}  // namespace msgsim::live
