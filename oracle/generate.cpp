#include "oracle/generate.h"

#include <algorithm>
#include <map>
#include <queue>
#include <span>
#include <tuple>
#include <string>

#include "impl/base/assert.h"
#include "impl/base/hash.h"
#include "impl/base/prng.h"

namespace msgsim::history {

namespace {

constexpr int64_t kNoSeq = -1;

// One entry of a conversation's log, in seq order: a message or a membership change.
struct LogEntry {
  int64_t seq = 0;
  bool is_message = true;
  bool join = false;           // membership change: join or leave
  uint32_t user = 0;           // the member who changed, or the sender
  uint32_t sender_device = 0;  // message
  uint32_t msg = 0;            // message index
  int64_t expires_at = -1;     // message: -1 when it does not disappear
  bool view_once = false;
};

// Where one device is in one conversation's log, and whether its user is a member there.
struct Cursor {
  uint32_t conv = 0;
  size_t position = 0;
  bool member = false;
  int64_t covered_seq = kNoSeq;  // seq of the last entry walked past
};

struct GenConv {
  std::string name;
  bool one_to_one = false;
  std::vector<uint32_t> potential;  // users who may be members
  std::vector<bool> member;         // by index in `potential`
  std::vector<LogEntry> log;
  int64_t next_seq = 1;
};

struct GenDevice {
  std::string name;
  uint32_t user = 0;
  bool online = true;
  std::vector<Cursor> cursors;
};

struct GenUser {
  std::string name;
  std::vector<uint32_t> devices;
  std::vector<uint32_t> convs;
};

struct PendingExpire {
  int64_t expires_at;
  uint32_t device;
  uint32_t msg;
  bool operator>(const PendingExpire& o) const {
    return expires_at != o.expires_at ? expires_at > o.expires_at : (device != o.device ? device > o.device : msg > o.msg);
  }
};

std::string body_of(uint64_t msg_index, uint64_t seed) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string body(64, '0');
  for (int part = 0; part < 4; ++part) {
    uint64_t v = mix64(msg_index * 4 + static_cast<uint64_t>(part) + seed * 0x9e3779b97f4a7c15ULL);
    for (int i = 0; i < 16; ++i, v >>= 4) body[static_cast<size_t>(part * 16 + i)] = kHex[v & 15];
  }
  return body;
}

class Generator {
 public:
  Generator(const GeneratorOptions& options, const std::function<void(const Event&)>& sink)
      : options_(options), sink_(sink), rng_(Prng(options.seed).split("history-generator")) {}

  void run() {
    setup();
    while (emitted_ < options_.events) step();
    if (options_.quiescent_end) drain();
    Event end{.type = EventType::end, .t = t_};
    end.quiescent = options_.quiescent_end;
    emit(end);
  }

 private:
  void emit(const Event& e) {
    sink_(e);
    ++emitted_;
  }

  uint32_t add_device(uint32_t user) {
    const auto id = static_cast<uint32_t>(devices_.size());
    GenDevice d;
    d.name = users_[user].name + "." + std::to_string(users_[user].devices.size() + 1);
    d.user = user;
    for (const uint32_t c : users_[user].convs) {
      Cursor cursor;
      cursor.conv = c;
      cursor.position = convs_[c].log.size();
      cursor.member = is_member(c, user);
      cursor.covered_seq = convs_[c].log.empty() ? kNoSeq : convs_[c].log.back().seq;
      d.cursors.push_back(cursor);
    }
    devices_.push_back(d);
    users_[user].devices.push_back(id);
    emit(Event{.type = EventType::online, .t = t_, .user = users_[user].name, .device = d.name});
    return id;
  }

  bool is_member(uint32_t conv, uint32_t user) const {
    const GenConv& c = convs_[conv];
    for (size_t i = 0; i < c.potential.size(); ++i) {
      if (c.potential[i] == user) return c.member[i];
    }
    return false;
  }

  void setup() {
    for (uint32_t u = 0; u < options_.users; ++u) users_.push_back(GenUser{"u" + std::to_string(u), {}, {}});
    const uint32_t user_count = std::max<uint32_t>(options_.users, 2);
    while (users_.size() < user_count) users_.push_back(GenUser{"u" + std::to_string(users_.size()), {}, {}});
    for (uint32_t i = 0; i < options_.one_to_one_convs; ++i) {
      GenConv c;
      c.name = "d" + std::to_string(i);
      c.one_to_one = true;
      const auto a = static_cast<uint32_t>(rng_.below(users_.size()));
      auto b = static_cast<uint32_t>(rng_.below(users_.size() - 1));
      if (b >= a) ++b;
      c.potential = {a, b};
      c.member = {true, true};
      add_conv(std::move(c));
    }
    for (uint32_t i = 0; i < options_.groups; ++i) {
      GenConv c;
      c.name = "g" + std::to_string(i);
      const uint32_t size = std::min<uint32_t>(2 + static_cast<uint32_t>(rng_.below(std::max<uint32_t>(options_.group_size_max, 2) - 1)),
                                               static_cast<uint32_t>(users_.size()));
      std::vector<uint32_t> all(users_.size());
      for (uint32_t u = 0; u < all.size(); ++u) all[u] = u;
      rng_.shuffle(std::span<uint32_t>(all));
      c.potential.assign(all.begin(), all.begin() + size);
      c.member.assign(size, false);
      add_conv(std::move(c));
    }
    for (uint32_t u = 0; u < users_.size(); ++u) {
      const uint32_t n = 1 + static_cast<uint32_t>(rng_.below(std::max<uint32_t>(options_.devices_per_user_max, 1)));
      for (uint32_t k = 0; k < n; ++k) add_device(u);
    }
    // Every group starts with its potential members joined, except maybe one who joins later.
    for (uint32_t c = 0; c < convs_.size(); ++c) {
      if (convs_[c].one_to_one) continue;
      for (size_t i = 0; i < convs_[c].potential.size(); ++i) {
        if (i + 1 == convs_[c].potential.size() && i >= 2 && options_.membership_changes && rng_.chance(0.5)) continue;
        change_membership(c, i, true);
      }
    }
  }

  void add_conv(GenConv c) {
    const auto id = static_cast<uint32_t>(convs_.size());
    for (const uint32_t u : c.potential) users_[u].convs.push_back(id);
    convs_.push_back(std::move(c));
  }

  void change_membership(uint32_t conv, size_t index, bool join) {
    GenConv& c = convs_[conv];
    c.member[index] = join;
    LogEntry entry;
    entry.seq = c.next_seq++;
    entry.is_message = false;
    entry.join = join;
    entry.user = c.potential[index];
    c.log.push_back(entry);
    emit(Event{.type = join ? EventType::join : EventType::leave, .t = t_, .user = users_[entry.user].name,
               .conv = c.name, .seq = entry.seq});
  }

  void step() {
    t_ += static_cast<int64_t>(rng_.below(2'000'000));
    flush_expires(t_);
    const uint64_t roll = rng_.below(1000);
    if (roll < 260) {
      send();
    } else if (roll < 800) {
      deliver_step();
    } else if (roll < 850) {
      read_step();
    } else if (roll < 910) {
      if (options_.receipts) receipt_step();
    } else if (roll < 950) {
      toggle_online();
    } else if (roll < 970) {
      if (options_.membership_changes) membership_step();
    } else if (roll < 975) {
      if (options_.new_devices) add_device(static_cast<uint32_t>(rng_.below(users_.size())));
    } else if (roll < 990) {
      if (options_.faults) fault_step();
    } else {
      deliver_step();
    }
  }

  void flush_expires(int64_t until) {
    while (!expires_.empty() && expires_.top().expires_at <= until) {
      const PendingExpire p = expires_.top();
      expires_.pop();
      t_ = std::max(t_, p.expires_at);
      emit(Event{.type = EventType::expire, .t = t_, .device = devices_[p.device].name, .msg = msg_name(p.msg)});
    }
  }

  std::string msg_name(uint32_t msg) const { return "m" + std::to_string(msg); }

  void send() {
    const auto device = static_cast<uint32_t>(rng_.below(devices_.size()));
    GenDevice& d = devices_[device];
    if (!d.online) return;
    const GenUser& user = users_[d.user];
    if (user.convs.empty()) return;
    const uint32_t conv = user.convs[rng_.below(user.convs.size())];
    GenConv& c = convs_[conv];
    if (!is_member(conv, d.user)) return;
    const uint32_t msg = next_msg_++;
    Event e{.type = EventType::send, .t = t_, .user = user.name, .device = d.name, .conv = c.name,
            .msg = msg_name(msg), .body = body_of(msg, options_.seed)};
    if (c.one_to_one) e.to = users_[c.potential[0] == d.user ? c.potential[1] : c.potential[0]].name;
    LogEntry entry;
    entry.is_message = true;
    entry.user = d.user;
    entry.sender_device = device;
    entry.msg = msg;
    if (options_.expiring_messages) {
      const uint64_t kind = rng_.below(100);
      if (kind < 8) {
        entry.expires_at = t_ + 50'000'000 + static_cast<int64_t>(rng_.below(2'000'000'000));
        e.expires_at = entry.expires_at;
      } else if (kind < 12) {
        entry.view_once = true;
        e.view_once = true;
      }
    }
    emit(e);
    t_ += static_cast<int64_t>(rng_.below(1'000'000));
    if (options_.rejects && rng_.below(100) < 3) {
      emit(Event{.type = EventType::reject, .t = t_, .device = d.name, .conv = c.name, .msg = msg_name(msg),
                 .reason = "rate_limited"});
      return;
    }
    entry.seq = c.next_seq++;
    c.log.push_back(entry);
    emit(Event{.type = EventType::ack, .t = t_, .device = d.name, .conv = c.name, .msg = msg_name(msg), .seq = entry.seq});
    // The sender device walks past its own message: nothing is owed to it.
    for (Cursor& cursor : d.cursors) {
      if (cursor.conv == conv && cursor.position + 1 == c.log.size()) advance_silently(device, cursor);
    }
  }

  void advance_silently(uint32_t device, Cursor& cursor) {
    (void)device;
    const LogEntry& entry = convs_[cursor.conv].log[cursor.position];
    if (!entry.is_message && entry.user == devices_[device].user) cursor.member = entry.join;
    cursor.covered_seq = entry.seq;
    ++cursor.position;
  }

  // Walks one device forward in one conversation until it emits something or catches up.
  bool walk(uint32_t device, Cursor& cursor) {
    GenConv& c = convs_[cursor.conv];
    GenDevice& d = devices_[device];
    while (cursor.position < c.log.size()) {
      const LogEntry entry = c.log[cursor.position];
      const bool meant = entry.is_message && cursor.member && entry.sender_device != device;
      advance_silently(device, cursor);
      if (!meant) continue;
      if (entry.expires_at >= 0 && t_ >= entry.expires_at) {
        emit(Event{.type = EventType::expire, .t = t_, .device = d.name, .msg = msg_name(entry.msg)});
        return true;
      }
      emit(Event{.type = EventType::deliver, .t = t_, .user = users_[d.user].name, .device = d.name, .conv = c.name,
                 .msg = msg_name(entry.msg), .body = body_of(entry.msg, options_.seed), .seq = entry.seq,
                 .from = users_[entry.user].name});
      if (entry.view_once) {
        emit(Event{.type = EventType::expire, .t = t_, .device = d.name, .msg = msg_name(entry.msg)});
      } else if (entry.expires_at >= 0) {
        expires_.push(PendingExpire{entry.expires_at, device, entry.msg});
      }
      return true;
    }
    return false;
  }

  void deliver_step() {
    const auto device = static_cast<uint32_t>(rng_.below(devices_.size()));
    GenDevice& d = devices_[device];
    if (!d.online || d.cursors.empty()) return;
    // A device that comes to the front catches up on a few messages at once, so deliveries
    // keep pace with sends however many devices there are.
    const uint64_t burst = 1 + rng_.below(options_.deliver_burst_max);
    const size_t start = rng_.below(d.cursors.size());
    uint64_t shown = 0;
    for (size_t k = 0; k < d.cursors.size() && shown < burst; ++k) {
      Cursor& cursor = d.cursors[(start + k) % d.cursors.size()];
      while (shown < burst && walk(device, cursor)) ++shown;
    }
  }

  void read_step() {
    const auto device = static_cast<uint32_t>(rng_.below(devices_.size()));
    GenDevice& d = devices_[device];
    if (d.cursors.empty()) return;
    Cursor& cursor = d.cursors[rng_.below(d.cursors.size())];
    if (cursor.covered_seq == kNoSeq) return;
    const uint32_t conv = cursor.conv;
    emit(Event{.type = EventType::read, .t = t_, .user = users_[d.user].name, .device = d.name, .conv = convs_[conv].name,
               .up_to = cursor.covered_seq});
    int64_t& max_read = max_read_[{d.user, conv}];
    max_read = std::max(max_read, cursor.covered_seq);
  }

  void receipt_step() {
    const auto reader = static_cast<uint32_t>(rng_.below(users_.size()));
    const GenUser& u = users_[reader];
    if (u.convs.empty() || u.devices.empty()) return;
    const uint32_t conv = u.convs[rng_.below(u.convs.size())];
    const GenConv& c = convs_[conv];
    // Another potential member's device hears about it.
    const uint32_t other = c.potential[rng_.below(c.potential.size())];
    if (other == reader || users_[other].devices.empty()) return;
    const uint32_t to_device = users_[other].devices[rng_.below(users_[other].devices.size())];
    const bool read = rng_.chance(0.5);
    int64_t up_to = kNoSeq;
    if (read) {
      auto it = max_read_.find({reader, conv});
      if (it == max_read_.end()) return;
      up_to = it->second;
    } else {
      // Everything meant for the reader up to the least advanced of its devices was handled.
      bool first = true;
      for (const uint32_t dev : u.devices) {
        for (const Cursor& cursor : devices_[dev].cursors) {
          if (cursor.conv != conv) continue;
          up_to = first ? cursor.covered_seq : std::min(up_to, cursor.covered_seq);
          first = false;
        }
      }
      if (up_to == kNoSeq) return;
    }
    int64_t& last = receipts_[{to_device, conv, reader, read ? 1u : 0u}];
    if (up_to < last) return;
    last = up_to;
    emit(Event{.type = EventType::receipt, .t = t_, .device = devices_[to_device].name, .conv = c.name,
               .up_to = up_to, .reader = u.name, .kind = read ? ReceiptKind::read : ReceiptKind::delivered});
  }

  void toggle_online() {
    const auto device = static_cast<uint32_t>(rng_.below(devices_.size()));
    GenDevice& d = devices_[device];
    d.online = !d.online;
    emit(Event{.type = d.online ? EventType::online : EventType::offline, .t = t_, .user = users_[d.user].name,
               .device = d.name});
  }

  void membership_step() {
    std::vector<uint32_t> groups;
    for (uint32_t c = 0; c < convs_.size(); ++c) {
      if (!convs_[c].one_to_one) groups.push_back(c);
    }
    if (groups.empty()) return;
    const uint32_t conv = groups[rng_.below(groups.size())];
    GenConv& c = convs_[conv];
    const size_t index = rng_.below(c.potential.size());
    size_t members = 0;
    for (const bool m : c.member) members += m ? 1 : 0;
    if (c.member[index] && members <= 2) return;  // keep groups alive
    change_membership(conv, index, !c.member[index]);
  }

  void fault_step() {
    if (active_fault_.empty()) {
      active_fault_ = "partition-" + std::to_string(fault_count_++);
      emit(Event{.type = EventType::fault, .t = t_, .name = active_fault_});
    } else {
      emit(Event{.type = EventType::heal, .t = t_, .name = active_fault_});
      active_fault_.clear();
    }
  }

  // Quiescence: faults healed, every device online, every owed delivery made, every shown
  // disappearing message expired.
  void drain() {
    if (!active_fault_.empty()) {
      emit(Event{.type = EventType::heal, .t = t_, .name = active_fault_});
      active_fault_.clear();
    }
    for (uint32_t device = 0; device < devices_.size(); ++device) {
      GenDevice& d = devices_[device];
      if (!d.online) {
        d.online = true;
        emit(Event{.type = EventType::online, .t = t_, .user = users_[d.user].name, .device = d.name});
      }
    }
    for (uint32_t device = 0; device < devices_.size(); ++device) {
      for (size_t k = 0; k < devices_[device].cursors.size(); ++k) {
        while (walk(device, devices_[device].cursors[k])) {
          t_ += 1000;
          flush_expires(t_);
        }
      }
    }
    while (!expires_.empty()) flush_expires(expires_.top().expires_at);
  }

  const GeneratorOptions& options_;
  const std::function<void(const Event&)>& sink_;
  Prng rng_;
  int64_t t_ = 0;
  uint64_t emitted_ = 0;
  uint32_t next_msg_ = 0;
  std::vector<GenUser> users_;
  std::vector<GenDevice> devices_;
  std::vector<GenConv> convs_;
  std::priority_queue<PendingExpire, std::vector<PendingExpire>, std::greater<>> expires_;
  std::map<std::pair<uint32_t, uint32_t>, int64_t> max_read_;
  std::map<std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>, int64_t> receipts_;
  std::string active_fault_;
  uint32_t fault_count_ = 0;
};

}  // namespace

void generate_history(const GeneratorOptions& options, const std::function<void(const Event&)>& sink) {
  Generator(options, sink).run();
}

std::vector<Event> generate_history(const GeneratorOptions& options) {
  std::vector<Event> events;
  generate_history(options, [&](const Event& e) { events.push_back(e); });
  return events;
}

}  // namespace msgsim::history
