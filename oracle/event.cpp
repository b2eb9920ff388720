#include "oracle/event.h"

#include <charconv>

#include "oracle/jsonl.h"

namespace msgsim::history {

namespace {

const char* const kTypeNames[kEventTypeCount] = {
    "send", "ack",    "reject",  "deliver", "read", "receipt", "join", "leave",
    "expire", "decrypt_error", "online", "offline", "fault", "heal", "end"};

void append_int(std::string& out, int64_t value) {
  char digits[24];
  const auto result = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, result.ptr);
}

struct Writer {
  std::string out;
  void str(const char* key, std::string_view value) {
    out += ",\"";
    out += key;
    out += "\":";
    append_json_string(out, value);
  }
  void num(const char* key, int64_t value) {
    out += ",\"";
    out += key;
    out += "\":";
    append_int(out, value);
  }
  void boolean(const char* key, bool value) {
    out += ",\"";
    out += key;
    out += value ? "\":true" : "\":false";
  }
};

}  // namespace

EventView::EventView(const Event& e)
    : type(e.type),
      t(e.t),
      user(e.user),
      device(e.device),
      conv(e.conv),
      msg(e.msg),
      body(e.body),
      expires_at(e.expires_at),
      view_once(e.view_once),
      seq(e.seq),
      from(e.from),
      reason(e.reason),
      up_to(e.up_to),
      reader(e.reader),
      kind(e.kind),
      name(e.name),
      quiescent(e.quiescent) {
  if (e.to) to = std::string_view(*e.to);
}

Event EventView::to_event() const {
  Event e;
  e.type = type;
  e.t = t;
  e.user = user;
  e.device = device;
  e.conv = conv;
  e.msg = msg;
  e.body = body;
  if (to) e.to = std::string(*to);
  e.expires_at = expires_at;
  e.view_once = view_once;
  e.seq = seq;
  e.from = from;
  e.reason = reason;
  e.up_to = up_to;
  e.reader = reader;
  e.kind = kind;
  e.name = name;
  e.quiescent = quiescent;
  return e;
}

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

const char* to_string(EventType type) {
  const auto index = static_cast<size_t>(type);
  return index < kEventTypeCount ? kTypeNames[index] : "unknown";
}

std::optional<EventType> event_type_from_string(std::string_view text) {
  for (int i = 0; i < kEventTypeCount; ++i) {
    if (text == kTypeNames[i]) return static_cast<EventType>(i);
  }
  return std::nullopt;
}

const char* to_string(ReceiptKind kind) { return kind == ReceiptKind::delivered ? "delivered" : "read"; }

std::string to_jsonl(const Event& e) {
  Writer w;
  w.out.reserve(160);
  w.out += "{\"type\":\"";
  w.out += to_string(e.type);
  w.out += '"';
  w.num("t", e.t);
  switch (e.type) {
    case EventType::send:
      w.str("user", e.user);
      w.str("device", e.device);
      w.str("conv", e.conv);
      w.str("msg", e.msg);
      w.str("body", e.body);
      if (e.to) w.str("to", *e.to);
      if (e.expires_at) w.num("expires_at", *e.expires_at);
      if (e.view_once) w.boolean("view_once", true);
      break;
    case EventType::ack:
      w.str("device", e.device);
      w.str("conv", e.conv);
      w.str("msg", e.msg);
      w.num("seq", e.seq);
      break;
    case EventType::reject:
    case EventType::decrypt_error:
      w.str("device", e.device);
      w.str("conv", e.conv);
      w.str("msg", e.msg);
      w.str("reason", e.reason);
      break;
    case EventType::deliver:
      w.str("user", e.user);
      w.str("device", e.device);
      w.str("conv", e.conv);
      w.str("msg", e.msg);
      w.num("seq", e.seq);
      w.str("from", e.from);
      w.str("body", e.body);
      break;
    case EventType::read:
      w.str("user", e.user);
      w.str("device", e.device);
      w.str("conv", e.conv);
      w.num("up_to", e.up_to);
      break;
    case EventType::receipt:
      w.str("device", e.device);
      w.str("conv", e.conv);
      w.str("reader", e.reader);
      w.str("kind", to_string(e.kind));
      w.num("up_to", e.up_to);
      break;
    case EventType::join:
    case EventType::leave:
      w.str("conv", e.conv);
      w.str("user", e.user);
      w.num("seq", e.seq);
      break;
    case EventType::expire:
      w.str("device", e.device);
      w.str("msg", e.msg);
      break;
    case EventType::online:
    case EventType::offline:
      w.str("user", e.user);
      w.str("device", e.device);
      break;
    case EventType::fault:
    case EventType::heal:
      w.str("name", e.name);
      break;
    case EventType::end:
      w.boolean("quiescent", e.quiescent);
      break;
  }
  w.out += "}\n";
  return std::move(w.out);
}

}  // namespace msgsim::history
