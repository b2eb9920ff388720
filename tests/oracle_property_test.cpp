// Property test of the oracle: histories from the generator of valid histories (1:1 and groups,
// joins and leaves, several devices, receipts, expiry) always pass, through observe() and
// through the JSON Lines writer and reader alike; and each single mutation of one (drop,
// duplicate, reorder, forge a body, regress a receipt, show after leave, show a rejected
// message) is caught under the right name, and under no name it cannot explain.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "impl/base/prng.h"
#include "oracle/checker.h"
#include "oracle/generate.h"

namespace msgsim::history {
namespace {

using Events = std::vector<Event>;

Verdict judge(const Events& events) {
  Checker checker;
  for (const Event& e : events) checker.observe(e);
  EXPECT_FALSE(checker.input_error().has_value()) << checker.input_error()->message;
  return checker.finish();
}

std::set<std::string> violated(const Verdict& v) {
  std::set<std::string> names;
  for (const InvariantResult& r : v.invariants) {
    if (!r.valid) names.insert(r.name);
  }
  return names;
}

std::string describe(const Verdict& v) { return render_summary(v); }

GeneratorOptions options_for(uint64_t seed) {
  GeneratorOptions o;
  o.seed = seed;
  Prng rng(seed);
  o.users = 3 + static_cast<uint32_t>(rng.below(6));
  o.devices_per_user_max = 1 + static_cast<uint32_t>(rng.below(3));
  o.groups = static_cast<uint32_t>(rng.below(3));
  o.one_to_one_convs = static_cast<uint32_t>(rng.below(3)) + (o.groups == 0 ? 1 : 0);
  o.events = 100 + rng.below(500);
  o.quiescent_end = rng.below(4) != 0;
  return o;
}

TEST(OracleProperty, GeneratedHistoriesAreValid) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    const Events events = generate_history(options_for(seed));
    const Verdict v = judge(events);
    ASSERT_TRUE(v.valid) << "seed " << seed << "\n" << describe(v);
    ASSERT_EQ(v.stats.events, events.size());
  }
}

TEST(OracleProperty, WriterAndReaderRoundTrip) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const Events events = generate_history(options_for(seed));
    std::string text;
    for (const Event& e : events) text += to_jsonl(e);
    std::istringstream in(text);
    Result<Verdict> from_text = check_stream(in);
    ASSERT_TRUE(from_text.ok()) << from_text.error().message;
    const Verdict direct = judge(events);
    EXPECT_EQ(render_json(*from_text), render_json(direct)) << "seed " << seed;
  }
}

// ---- mutations ----

bool plain_message(const std::map<std::string, const Event*>& sends, const std::string& msg) {
  auto it = sends.find(msg);
  return it != sends.end() && !it->second->expires_at && !it->second->view_once;
}

struct Mutation {
  std::string name;
  std::string expected;                 // must be violated
  std::set<std::string> allowed;        // may also be violated
  bool needs_quiescent = false;
  // Returns the mutated history, or nothing when this history offers no place for it.
  std::optional<Events> (*apply)(const Events&, Prng&);
};

std::map<std::string, const Event*> sends_of(const Events& events) {
  std::map<std::string, const Event*> sends;
  for (const Event& e : events) {
    if (e.type == EventType::send) sends[e.msg] = &e;
  }
  return sends;
}

std::vector<size_t> delivers_of_plain(const Events& events) {
  const auto sends = sends_of(events);
  std::vector<size_t> out;
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].type == EventType::deliver && plain_message(sends, events[i].msg)) out.push_back(i);
  }
  return out;
}

std::optional<Events> drop_deliver(const Events& events, Prng& rng) {
  const auto candidates = delivers_of_plain(events);
  if (candidates.empty()) return std::nullopt;
  Events out = events;
  out.erase(out.begin() + static_cast<ptrdiff_t>(candidates[rng.below(candidates.size())]));
  return out;
}

std::optional<Events> duplicate_deliver(const Events& events, Prng& rng) {
  const auto candidates = delivers_of_plain(events);
  if (candidates.empty()) return std::nullopt;
  const size_t i = candidates[rng.below(candidates.size())];
  Events out = events;
  out.insert(out.begin() + static_cast<ptrdiff_t>(i) + 1, events[i]);
  return out;
}

std::optional<Events> reorder_delivers(const Events& events, Prng& rng) {
  const auto plain = delivers_of_plain(events);
  std::vector<std::pair<size_t, size_t>> pairs;
  std::map<std::pair<std::string, std::string>, size_t> last;
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].type != EventType::deliver) continue;
    const auto key = std::make_pair(events[i].device, events[i].conv);
    auto it = last.find(key);
    if (it != last.end()) pairs.emplace_back(it->second, i);
    last[key] = i;
  }
  std::vector<std::pair<size_t, size_t>> usable;
  const std::set<size_t> plain_set(plain.begin(), plain.end());
  std::map<std::string, size_t> send_line;
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].type == EventType::send) send_line[events[i].msg] = i;
  }
  for (const auto& p : pairs) {
    // Both messages were sent before the first show, so the swap makes no phantom.
    if (plain_set.count(p.first) && plain_set.count(p.second) && send_line[events[p.second].msg] < p.first)
      usable.push_back(p);
  }
  if (usable.empty()) return std::nullopt;
  const auto [a, b] = usable[rng.below(usable.size())];
  Events out = events;
  std::swap(out[a], out[b]);
  std::swap(out[a].t, out[b].t);  // the times stay where they were
  return out;
}

std::optional<Events> forge_body(const Events& events, Prng& rng) {
  const auto candidates = delivers_of_plain(events);
  if (candidates.empty()) return std::nullopt;
  Events out = events;
  Event& e = out[candidates[rng.below(candidates.size())]];
  e.body[0] = e.body[0] == 'a' ? 'b' : 'a';
  return out;
}

std::optional<Events> regress_receipt(const Events& events, Prng& rng) {
  std::vector<size_t> candidates;
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].type == EventType::receipt && events[i].up_to > 1) candidates.push_back(i);
  }
  if (candidates.empty()) return std::nullopt;
  const size_t i = candidates[rng.below(candidates.size())];
  Events out = events;
  Event copy = events[i];
  copy.up_to -= 1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(copy.up_to - 1)));
  out.insert(out.begin() + static_cast<ptrdiff_t>(i) + 1, copy);
  return out;
}

// A device of a user who left a group shows a message sent there after the leave.
std::optional<Events> show_after_leave(const Events& events, Prng& rng) {
  struct Candidate {
    std::string user, device, conv, msg, from, body;
    int64_t seq;
  };
  std::vector<Candidate> candidates;
  std::map<std::pair<std::string, std::string>, bool> member;  // (conv, user)
  std::map<std::string, std::vector<std::string>> devices;     // user -> devices
  std::map<std::string, const Event*> sends;
  for (const Event& e : events) {
    if (e.type == EventType::join || e.type == EventType::leave) member[{e.conv, e.user}] = e.type == EventType::join;
    if (!e.user.empty() && !e.device.empty()) {
      auto& list = devices[e.user];
      if (std::find(list.begin(), list.end(), e.device) == list.end()) list.push_back(e.device);
    }
    if (e.type == EventType::send) sends[e.msg] = &e;
    if (e.type == EventType::ack) {
      const Event* send = sends[e.msg];
      if (send == nullptr || send->to || send->expires_at || send->view_once) continue;
      for (const auto& [key, is_member] : member) {
        if (key.first != e.conv || is_member || devices[key.second].empty()) continue;
        candidates.push_back({key.second, devices[key.second][0], e.conv, e.msg, send->user, send->body, e.seq});
      }
    }
  }
  if (candidates.empty()) return std::nullopt;
  const Candidate c = candidates[rng.below(candidates.size())];
  Events out = events;
  Event deliver{.type = EventType::deliver, .t = out.back().t, .user = c.user, .device = c.device, .conv = c.conv,
                .msg = c.msg, .body = c.body, .seq = c.seq, .from = c.from};
  out.insert(out.end() - 1, deliver);  // just before `end`
  return out;
}

std::optional<Events> show_rejected(const Events& events, Prng& rng) {
  std::vector<const Event*> rejected;
  const auto sends = sends_of(events);
  for (const Event& e : events) {
    if (e.type != EventType::reject) continue;
    const Event* send = sends.at(e.msg);
    if (send->to && !send->expires_at && !send->view_once) rejected.push_back(send);
  }
  if (rejected.empty()) return std::nullopt;
  const Event* send = rejected[rng.below(rejected.size())];
  std::string device;
  for (const Event& e : events) {
    if (e.user == *send->to && !e.device.empty()) {
      device = e.device;
      break;
    }
  }
  if (device.empty()) return std::nullopt;
  Events out = events;
  Event deliver{.type = EventType::deliver, .t = out.back().t, .user = *send->to, .device = device, .conv = send->conv,
                .msg = send->msg, .body = send->body, .seq = 1'000'000'000, .from = send->user};
  out.insert(out.end() - 1, deliver);
  return out;
}

TEST(OracleProperty, EachMutationIsCaughtUnderItsName) {
  const std::vector<Mutation> mutations = {
      // A dropped delivery is lost; the device may also show later ones past the gap, and a
      // delivered receipt may already cover it.
      {"drop", "no-loss", {"gap-free", "receipts"}, true, drop_deliver},
      {"duplicate", "no-duplicate", {}, false, duplicate_deliver},
      // Showing seq b before seq a (a < b) breaks order, and gap-free at the show of b; a
      // delivered receipt between the two may now be early, and a message the device sent
      // between the two now follows a show of the higher seq b (causal).
      {"reorder", "order", {"gap-free", "receipts", "causal"}, false, reorder_delivers},
      {"forge", "no-phantom", {}, false, forge_body},
      {"regress-receipt", "receipts", {}, false, regress_receipt},
      // Judged at the quiescent end, when the device has caught up; it may have shown higher
      // seqs after rejoining (order).
      {"show-after-leave", "membership", {"order"}, true, show_after_leave},
      {"show-rejected", "no-rejected-delivery", {}, true, show_rejected},
  };
  for (const Mutation& mutation : mutations) {
    int applied = 0;
    for (uint64_t seed = 1; seed <= 400 && applied < 60; ++seed) {
      GeneratorOptions o = options_for(seed);
      if (mutation.needs_quiescent) o.quiescent_end = true;
      const Events events = generate_history(o);
      Prng rng = Prng(seed).split(mutation.name);
      const std::optional<Events> mutated = mutation.apply(events, rng);
      if (!mutated) continue;
      ++applied;
      const Verdict v = judge(*mutated);
      const std::set<std::string> names = violated(v);
      ASSERT_TRUE(names.count(mutation.expected))
          << mutation.name << ", seed " << seed << ": not caught as " << mutation.expected << "\n" << describe(v);
      for (const std::string& name : names) {
        ASSERT_TRUE(name == mutation.expected || mutation.allowed.count(name))
            << mutation.name << ", seed " << seed << ": also reported " << name << "\n" << describe(v);
      }
    }
    EXPECT_GE(applied, 20) << mutation.name << " found too few places to apply";
  }
}

}  // namespace
}  // namespace msgsim::history
