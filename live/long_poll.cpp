#include "live/long_poll.h"

#include <charconv>

namespace msgsim::live::long_poll {

namespace {

Error bad(std::string_view target, const std::string& why) {
  const std::string shown = target.size() > 80 ? std::string(target.substr(0, 80)) + "..." : std::string(target);
  return make_error(ErrorCode::bad_input, "long-poll target \"" + shown + "\": " + why);
}

bool parse_decimal(std::string_view text, uint64_t& out) {
  if (text.empty() || text.size() > 19) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

bool is_long_poll_target(std::string_view target) { return target.starts_with(kPathPrefix); }

std::string format_session(uint64_t session) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, session >>= 4) out[static_cast<size_t>(i)] = kHex[session & 15];
  return out;
}

Result<uint64_t> parse_session(std::string_view text) {
  uint64_t out = 0;
  if (text.size() != 16) return make_error(ErrorCode::bad_input, "a session is 16 hex digits");
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, 16);
  if (ec != std::errc() || end != text.data() + text.size() || out == 0) {
    return make_error(ErrorCode::bad_input, "a session is 16 hex digits, not all zero");
  }
  return out;
}

Result<Target> parse_target(std::string_view target) {
  if (!is_long_poll_target(target)) return bad(target, "does not begin with /lp/");
  std::string_view rest = target.substr(kPathPrefix.size());
  std::string_view query;
  if (const size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return bad(target, "expected /lp/<opener id>/<open|send|poll|close>");
  Target out;
  uint64_t opener = 0;
  if (!parse_decimal(rest.substr(0, slash), opener) || opener >= kNoNode) return bad(target, "the opener id is not a node id");
  out.opener = static_cast<NodeId>(opener);
  const std::string_view verb = rest.substr(slash + 1);
  if (verb == "open") out.verb = Verb::open;
  else if (verb == "send") out.verb = Verb::send;
  else if (verb == "poll") out.verb = Verb::poll;
  else if (verb == "close") out.verb = Verb::close;
  else return bad(target, "unknown verb (open, send, poll, close)");

  bool have_session = false, have_number = false;
  const std::string_view number_key = out.verb == Verb::send ? "seq" : out.verb == Verb::poll ? "after" : "";
  size_t params = 0;
  while (!query.empty()) {
    if (++params > 4) return bad(target, "too many parameters");
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos) return bad(target, "a parameter without '='");
    const std::string_view key = pair.substr(0, eq), value = pair.substr(eq + 1);
    if (key == "session" && !have_session) {
      Result<uint64_t> session = parse_session(value);
      if (!session.ok()) return bad(target, session.error().message);
      out.session = *session;
      have_session = true;
    } else if (!number_key.empty() && key == number_key && !have_number) {
      if (!parse_decimal(value, out.number)) return bad(target, std::string(key) + " is not a number");
      have_number = true;
    } else {
      return bad(target, "unexpected or repeated parameter \"" + std::string(key) + "\"");
    }
  }
  if (out.verb == Verb::open) {
    if (have_session) return bad(target, "open takes no session");
    return out;
  }
  if (!have_session) return bad(target, "the session is missing");
  if (!number_key.empty() && !have_number) return bad(target, std::string(number_key) + " is missing");
  if (out.verb == Verb::send && out.number == 0) return bad(target, "seq counts from 1");
  return out;
}

std::string format_target(const Target& target) {
  std::string out = std::string(kPathPrefix) + std::to_string(target.opener);
  switch (target.verb) {
    case Verb::open: return out + "/open";
    case Verb::send: return out + "/send?session=" + format_session(target.session) + "&seq=" + std::to_string(target.number);
    case Verb::poll: return out + "/poll?session=" + format_session(target.session) + "&after=" + std::to_string(target.number);
    case Verb::close: return out + "/close?session=" + format_session(target.session);
  }
  return out;
}

void append_frame(std::string& body, ByteView frame) {
  const uint32_t n = static_cast<uint32_t>(frame.size());
  const char header[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                          static_cast<char>(n)};
  body.append(header, 4);
  body.append(reinterpret_cast<const char*>(frame.data()), frame.size());
}

Result<std::vector<Bytes>> decode_frames(std::string_view body, size_t frame_bytes_max, size_t frames_max) {
  std::vector<Bytes> out;
  size_t at = 0;
  while (at < body.size()) {
    if (body.size() - at < 4) {
      return make_error(ErrorCode::bad_input, "long-poll body: a frame header cut short at byte " + std::to_string(at));
    }
    const auto* p = reinterpret_cast<const uint8_t*>(body.data() + at);
    const size_t length = (size_t{p[0]} << 24) | (size_t{p[1]} << 16) | (size_t{p[2]} << 8) | size_t{p[3]};
    if (length > frame_bytes_max) {
      return make_error(ErrorCode::too_large, "long-poll body: a frame of " + std::to_string(length) + " bytes at byte " +
                                                  std::to_string(at) + ", the bound is " + std::to_string(frame_bytes_max));
    }
    if (body.size() - at - 4 < length) {
      return make_error(ErrorCode::bad_input, "long-poll body: the frame at byte " + std::to_string(at) + " is cut short");
    }
    if (out.size() == frames_max) {
      return make_error(ErrorCode::too_large, "long-poll body: more than " + std::to_string(frames_max) + " frames");
    }
    out.emplace_back(p + 4, p + 4 + length);
    at += 4 + length;
  }
  return out;
}

void Outbox::push(Bytes frame) { frames_.push_back(std::move(frame)); }

Result<size_t> Outbox::acknowledge(uint64_t after) {
  const uint64_t last = first_ + frames_.size() - 1;
  if (after > last) {
    return make_error(ErrorCode::bad_input, "poll after frame " + std::to_string(after) + ", but only " +
                                                std::to_string(last) + " were sent");
  }
  size_t bytes = 0;
  while (!frames_.empty() && first_ <= after) {
    bytes += frames_.front().size();
    frames_.pop_front();
    first_++;
  }
  return bytes;
}

std::string Outbox::answer(size_t body_bytes_max, uint64_t& first) const {
  first = first_;
  std::string body;
  for (const Bytes& frame : frames_) {
    if (!body.empty() && body.size() + 4 + frame.size() > body_bytes_max) break;
    append_frame(body, frame);
  }
  return body;
}

Result<size_t> Inbox::already_delivered(uint64_t seq, size_t count) const {
  if (seq > next_) {
    return make_error(ErrorCode::bad_input, "send of frame " + std::to_string(seq) + " while frame " +
                                                std::to_string(next_) + " is the next expected (a gap)");
  }
  return static_cast<size_t>(std::min<uint64_t>(next_ - seq, count));
}

}  // namespace msgsim::live::long_poll
