// One line of a history (spec/history.md): what a client device observed, or a run-level
// event (faults, end). One plain struct serves every event type, so client devices can build
// them with designated initializers and the simulator can pass them to Checker::observe as
// they happen; fields that an event type does not use are left at their defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace msgsim::history {

enum class EventType : uint8_t {
  send,
  ack,
  reject,
  deliver,
  read,
  receipt,
  join,
  leave,
  expire,
  decrypt_error,
  online,
  offline,
  fault,
  heal,
  end,
};
inline constexpr int kEventTypeCount = 15;

enum class ReceiptKind : uint8_t { delivered, read };

struct Event {
  EventType type = EventType::send;
  int64_t t = 0;  // nanoseconds since the run started
  std::string user{};
  std::string device{};
  std::string conv{};
  std::string msg{};
  std::string body{};  // hex SHA-256 of the plaintext (send, deliver)
  std::optional<std::string> to{};  // send in a 1:1 conversation: the other user
  std::optional<int64_t> expires_at{};  // send of a disappearing message
  bool view_once = false;  // send
  int64_t seq = 0;  // ack, deliver, join, leave
  std::string from{};  // deliver: the sender user
  std::string reason{};  // reject, decrypt_error
  int64_t up_to = 0;  // read, receipt
  std::string reader{};  // receipt
  ReceiptKind kind = ReceiptKind::delivered;  // receipt
  std::string name{};  // fault, heal
  bool quiescent = false;  // end
};

// The same event with its strings as views: what the checker reads. The parser fills one with
// views into the line it parsed (no string is copied per event); EventView(event) views an
// Event's own strings. Either way the views live only as long as what they point into.
struct EventView {
  EventType type = EventType::send;
  int64_t t = 0;
  std::string_view user{};
  std::string_view device{};
  std::string_view conv{};
  std::string_view msg{};
  std::string_view body{};
  std::optional<std::string_view> to{};
  std::optional<int64_t> expires_at{};
  bool view_once = false;
  int64_t seq = 0;
  std::string_view from{};
  std::string_view reason{};
  int64_t up_to = 0;
  std::string_view reader{};
  ReceiptKind kind = ReceiptKind::delivered;
  std::string_view name{};
  bool quiescent = false;

  EventView() = default;
  explicit EventView(const Event& e);
  // An Event that owns copies of the strings.
  Event to_event() const;
};

const char* to_string(EventType type);
std::optional<EventType> event_type_from_string(std::string_view text);
const char* to_string(ReceiptKind kind);

// One JSON Lines line, '\n' included, with exactly the fields the spec names for the event's
// type (optional ones only when set). parse_event_line reads back exactly what this writes.
std::string to_jsonl(const Event& event);

}  // namespace msgsim::history
