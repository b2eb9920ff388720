// The oracle against small hand-written histories (tests/data/oracle/*.jsonl): for each
// invariant one history where it holds and one that breaks only it, plus the tricky cases of
// the issue. The expected verdicts are written here, from the spec, not produced by the code.
// Also: the JSON Lines reader's acceptance and bad-input rules, and the writer round trip.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "oracle/checker.h"
#include "oracle/jsonl.h"
#include "oracle/tables.h"

namespace msgsim::history {
namespace {

std::string data_path(const std::string& name) {
  return std::string(MSGSIM_SOURCE_DIR) + "/tests/data/oracle/" + name + ".jsonl";
}

// Every history here is judged twice, as a stream (check_stream: stdin, pipes) and from memory
// (check_text: what `msgsim check FILE` does over the mapped file); the two must agree exactly,
// verdicts and errors alike.
Result<Verdict> judge_text(std::string_view text, CheckerOptions options = {}) {
  std::istringstream in{std::string(text)};
  Result<Verdict> streamed = check_stream(in, options);
  Result<Verdict> in_memory = check_text(text, options);
  EXPECT_EQ(streamed.ok(), in_memory.ok());
  if (streamed.ok() && in_memory.ok()) {
    EXPECT_EQ(render_json(*streamed), render_json(*in_memory));
  } else if (!streamed.ok() && !in_memory.ok()) {
    EXPECT_EQ(streamed.error().message, in_memory.error().message);
  }
  return streamed;
}

Result<Verdict> check_file(const std::string& name, CheckerOptions options = {}) {
  Result<MappedFile> mapped = MappedFile::open(data_path(name));
  EXPECT_TRUE(mapped.ok()) << "cannot map " << data_path(name);
  if (!mapped.ok()) return mapped.error();
  return judge_text(mapped->bytes(), options);
}

std::set<std::string> violated(const Verdict& v) {
  std::set<std::string> names;
  for (const InvariantResult& r : v.invariants) {
    if (!r.valid) names.insert(r.name);
  }
  return names;
}

struct Case {
  const char* file;
  std::set<std::string> expected;  // exactly the invariants that must be violated
  bool with_latency_bound = false;  // --latency-p99-ms 100
};

class HandWritten : public ::testing::TestWithParam<Case> {};

TEST_P(HandWritten, VerdictIsExactlyTheExpectedOne) {
  const Case& c = GetParam();
  CheckerOptions options;
  if (c.with_latency_bound) options.latency_p99_bound_ns = 100'000'000;
  Result<Verdict> verdict = check_file(c.file, options);
  ASSERT_TRUE(verdict.ok()) << verdict.error().message;
  EXPECT_EQ(violated(*verdict), c.expected) << render_summary(*verdict);
  EXPECT_EQ(verdict->valid, c.expected.empty());
  for (const InvariantResult& r : verdict->invariants) {
    if (r.valid) {
      EXPECT_EQ(r.count, 0u) << r.name;
      continue;
    }
    // Every violation comes with an example naming the lines involved.
    ASSERT_FALSE(r.examples.empty()) << r.name;
    if (r.invariant != Invariant::latency) {
      EXPECT_FALSE(r.examples[0].lines.empty()) << r.name;
    }
  }
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Oracle, HandWritten, ::testing::Values(
    // A new device (b3 appears after m1's send) is owed no back-history; several devices per
    // user; the sender's own other devices are owed its messages.
    Case{"no_loss_holds", {}},
    Case{"no_loss_breaks", {"no-loss"}},
    // A non-quiescent end: no-loss is not judged.
    Case{"no_loss_not_quiescent", {}},
    Case{"no_duplicate_holds", {}},
    // The same message shown twice on one device (across a reconnect) is a duplicate only: the
    // repeat is not a new step in the order (a deliberate choice; see checker.cpp).
    Case{"no_duplicate_breaks", {"no-duplicate"}},
    Case{"no_phantom_holds", {}},
    Case{"no_phantom_breaks_body", {"no-phantom"}},
    Case{"no_phantom_breaks_unsent", {"no-phantom"}},
    Case{"order_holds", {}},
    // Showing seq 2 and then seq 1 breaks order, and gap-free too: when seq 2 was shown, seq 1
    // (meant for b1) had not been shown or expired there.
    Case{"order_breaks", {"order", "gap-free"}},
    // The same on a device that first appears after both sends: nothing was owed to it, so the
    // late seq 1 breaks order only.
    Case{"order_breaks_only", {"order"}},
    // A disappearing message that expired before it reached the device: expired, not shown.
    Case{"gap_free_holds", {}},
    Case{"gap_free_breaks", {"gap-free"}},
    // A deliver may give the seq before the ack does; a join seen twice is one change.
    Case{"seq_agreement_holds", {}},
    Case{"seq_agreement_breaks", {"seq-agreement"}},
    Case{"seq_agreement_breaks_shared", {"seq-agreement"}},
    // Acks may arrive out of send order; the seqs must not be.
    Case{"sender_fifo_holds", {}},
    Case{"sender_fifo_breaks", {"sender-fifo"}},
    Case{"causal_holds", {}},
    Case{"causal_breaks", {"causal"}},
    // Receipts across a reconnect (the same up_to again is fine); the delivered receipt counts
    // any of the reader's devices.
    Case{"receipts_holds", {}},
    Case{"receipts_breaks_regress", {"receipts"}},
    Case{"receipts_breaks_early_delivered", {"receipts"}},
    Case{"receipts_breaks_early_read", {"receipts"}},
    // Membership changes in the middle of a conversation.
    Case{"membership_holds", {}},
    Case{"membership_breaks", {"membership"}},
    // The join is written after the delivery it allows: judged against the whole history.
    Case{"membership_late_join_holds", {}},
    // The leave is written after a delivery it forbids.
    Case{"membership_late_leave_breaks", {"membership"}},
    // Disappearing and view-once messages; a message that expires before it is delivered to an
    // offline device is expired there, not lost.
    Case{"expiry_holds", {}},
    Case{"expiry_breaks_late_show", {"expiry"}},
    Case{"expiry_breaks_never_expired", {"expiry"}},
    Case{"expiry_run_ends_first", {}},
    Case{"expiry_breaks_view_once", {"expiry"}},
    // A rejected message never shown, and an unacked one that is shown (allowed).
    Case{"no_rejected_delivery_holds", {}},
    Case{"no_rejected_delivery_breaks", {"no-rejected-delivery"}},
    // A decrypt error for a message from someone who has since left is allowed.
    Case{"decrypt_holds", {}},
    Case{"decrypt_breaks", {"decrypt"}},
    // Deliveries during a fault are not measured.
    Case{"latency_holds", {}, true},
    Case{"latency_breaks", {"latency"}, true},
    Case{"latency_breaks", {}, false}));
// clang-format on

TEST(OracleExamples, NameMessagesAndLines) {
  Result<Verdict> v = check_file("order_breaks");
  ASSERT_TRUE(v.ok());
  const InvariantResult& order = (*v)[Invariant::order];
  ASSERT_EQ(order.count, 1u);
  EXPECT_EQ(order.examples[0].msgs, (std::vector<std::string>{"m2", "m1"}));
  EXPECT_EQ(order.examples[0].lines, (std::vector<uint64_t>{6, 7}));

  Result<Verdict> loss = check_file("no_loss_breaks");
  ASSERT_TRUE(loss.ok());
  const InvariantResult& no_loss = (*loss)[Invariant::no_loss];
  ASSERT_EQ(no_loss.count, 1u);
  EXPECT_EQ(no_loss.examples[0].msgs, (std::vector<std::string>{"m1"}));
  EXPECT_EQ(no_loss.examples[0].lines, (std::vector<uint64_t>{4, 5}));
  EXPECT_NE(no_loss.examples[0].detail.find("b2"), std::string::npos);
}

// no-loss and gap-free at the end, over more messages than one word of a device's shown bits
// holds (32): b1 misses one message in each of its two words, b2 shows only from the 41st message
// on (its bits start at the second word) and misses one in the last, partial word, and c1 never
// shows anything in the group (no (device, conv) record). Every miss is reported, the examples
// in message order and, per message, in membership order then device order.
TEST(OracleVerdict, ReportsEveryMissedMessageInMessageThenDeviceOrder) {
  constexpr int kMessages = 70;
  std::string text;
  text += R"({"type":"join","t":0,"conv":"g","user":"alice","seq":1})" "\n";
  text += R"({"type":"join","t":0,"conv":"g","user":"bob","seq":2})" "\n";
  text += R"({"type":"join","t":0,"conv":"g","user":"carol","seq":3})" "\n";
  for (const char* device : {"a1", "b1", "b2", "c1"}) {
    const std::string user = device[0] == 'a' ? "alice" : device[0] == 'b' ? "bob" : "carol";
    text += R"({"type":"online","t":0,"user":")" + user + R"(","device":")" + device + "\"}\n";
  }
  const auto shows = [](const std::string& device, int i) {
    if (device == "b1") return i != 5 && i != 37;
    if (device == "b2") return i >= 40 && i != 64;
    return false;
  };
  for (int i = 0; i < kMessages; ++i) {
    const std::string msg = "m" + std::to_string(i);
    const std::string seq = std::to_string(4 + i);
    const std::string t = std::to_string(1 + i);
    text += R"({"type":"send","t":)" + t + R"(,"user":"alice","device":"a1","conv":"g","msg":")" + msg + R"(","body":"h"})" "\n";
    text += R"({"type":"ack","t":)" + t + R"(,"device":"a1","conv":"g","msg":")" + msg + R"(","seq":)" + seq + "}\n";
    for (const std::string device : {"b1", "b2"}) {
      if (!shows(device, i)) continue;
      text += R"({"type":"deliver","t":)" + t + R"(,"user":"bob","device":")" + device + R"(","conv":"g","msg":")" + msg +
              R"(","seq":)" + seq + R"(,"from":"alice","body":"h"})" "\n";
    }
  }
  text += R"({"type":"end","t":100,"quiescent":true})" "\n";

  std::vector<std::string> expected_loss;
  std::vector<std::string> expected_gaps;
  for (int i = 0; i < kMessages; ++i) {
    for (const std::string device : {"b1", "b2", "c1"}) {
      if (shows(device, i)) continue;
      const std::string user = device[0] == 'b' ? "bob" : "carol";
      expected_loss.push_back("m" + std::to_string(i) + " acked but never shown on " + device + " (" + user + ")");
      // b1 and b2 both showed the last message, seq 73; c1 showed nothing.
      if (device != "c1") {
        expected_gaps.push_back("m" + std::to_string(i) + " " + device + " showed seq 73 but never seq " +
                                std::to_string(4 + i));
      }
    }
  }
  CheckerOptions options;
  options.examples_max = 1000;
  Result<Verdict> v = judge_text(text, options);
  ASSERT_TRUE(v.ok()) << v.error().message;
  const auto listed = [](const InvariantResult& r) {
    std::vector<std::string> out;
    for (const Example& e : r.examples) out.push_back(e.msgs.back() + " " + e.detail);
    return out;
  };
  EXPECT_EQ((*v)[Invariant::no_loss].count, expected_loss.size());
  EXPECT_EQ(listed((*v)[Invariant::no_loss]), expected_loss);
  EXPECT_EQ((*v)[Invariant::gap_free].count, expected_gaps.size());
  EXPECT_EQ(listed((*v)[Invariant::gap_free]), expected_gaps);
  EXPECT_EQ(violated(*v), (std::set<std::string>{"no-loss", "gap-free"}));
}

// expiry at the end over more messages than one word of a device's shown bits holds (32): every
// third message disappears at 5000 + i and the run ends long after; b1 shows every message and
// expires all but one disappearing message in each of its three words, b2 shows only from the
// 41st message on (its bits start at the second word) and expires one. Every shown and never
// expired one is reported, in the order of the devices' first show, then of the messages.
TEST(OracleVerdict, ReportsEveryOverdueMessageStillShownInDeviceThenMessageOrder) {
  constexpr int kMessages = 70;
  const auto disappears = [](int i) { return i % 3 == 0; };
  const auto shows = [](const std::string& device, int i) { return device == "b1" || i >= 40; };
  const auto expires = [&](const std::string& device, int i) {
    if (!disappears(i) || !shows(device, i)) return false;
    return device == "b1" ? i != 3 && i != 36 && i != 66 : i == 42;
  };
  std::string text;
  for (int i = 0; i < kMessages; ++i) {
    const std::string msg = "m" + std::to_string(i);
    const std::string seq = std::to_string(1 + i);
    const std::string t = std::to_string(1 + i);
    text += R"({"type":"send","t":)" + t + R"(,"user":"alice","device":"a1","conv":"ab","msg":")" + msg +
            R"(","body":"h","to":"bob")" + (disappears(i) ? ",\"expires_at\":" + std::to_string(5000 + i) : "") + "}\n";
    text += R"({"type":"ack","t":)" + t + R"(,"device":"a1","conv":"ab","msg":")" + msg + R"(","seq":)" + seq + "}\n";
    for (const std::string device : {"b1", "b2"}) {
      if (!shows(device, i)) continue;
      text += R"({"type":"deliver","t":)" + t + R"(,"user":"bob","device":")" + device + R"(","conv":"ab","msg":")" +
              msg + R"(","seq":)" + seq + R"(,"from":"alice","body":"h"})" "\n";
    }
  }
  for (int i = 0; i < kMessages; ++i) {
    for (const std::string device : {"b1", "b2"}) {
      if (!expires(device, i)) continue;
      text += R"({"type":"expire","t":)" + std::to_string(5000 + i) + R"(,"device":")" + device + R"(","msg":"m)" +
              std::to_string(i) + "\"}\n";
    }
  }
  text += R"({"type":"end","t":2000000000,"quiescent":true})" "\n";

  std::vector<std::string> expected;
  for (const std::string device : {"b1", "b2"}) {
    for (int i = 0; i < kMessages; ++i) {
      if (!disappears(i) || !shows(device, i) || expires(device, i)) continue;
      expected.push_back("m" + std::to_string(i) + " shown on " + device + " and not expired within 1 s of expires_at=" +
                         std::to_string(5000 + i));
    }
  }
  CheckerOptions options;
  options.examples_max = 1000;
  Result<Verdict> v = judge_text(text, options);
  ASSERT_TRUE(v.ok()) << v.error().message;
  std::vector<std::string> listed;
  for (const Example& e : (*v)[Invariant::expiry].examples) listed.push_back(e.msgs.back() + " " + e.detail);
  EXPECT_EQ((*v)[Invariant::expiry].count, expected.size());
  EXPECT_EQ(listed, expected);
}

TEST(OracleVerdict, JsonHasTheSpecShape) {
  Result<Verdict> v = check_file("no_loss_not_quiescent");
  ASSERT_TRUE(v.ok());
  const std::string json = render_json(*v);
  EXPECT_EQ(json.rfind("{\"valid\":true,\"invariants\":{\"no-loss\":{\"valid\":true,\"judged\":false,\"count\":0,", 0), 0u)
      << json;
  for (const char* name : {"no-duplicate", "no-phantom", "order", "gap-free", "seq-agreement", "sender-fifo", "causal",
                           "receipts", "membership", "expiry", "no-rejected-delivery", "decrypt", "latency"}) {
    EXPECT_NE(json.find(std::string("\"") + name + "\":{\"valid\":true"), std::string::npos) << name;
  }
  EXPECT_NE(json.find("\"stats\":{\"events\":7,"), std::string::npos) << json;
  const std::string summary = render_summary(*v);
  EXPECT_NE(summary.find("no-loss"), std::string::npos);
  EXPECT_NE(summary.find("not judged"), std::string::npos);
}

TEST(OracleVerdict, CountsEveryViolationButKeepsFewExamples) {
  std::string text;
  text += R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"h","to":"b"})" "\n";
  for (int i = 0; i < 20; ++i) {
    text += R"({"type":"deliver","t":2,"user":"b","device":"b1","conv":"c","msg":"m","seq":1,"from":"a","body":"h"})" "\n";
  }
  CheckerOptions options;
  options.examples_max = 3;
  Result<Verdict> v = judge_text(text, options);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)[Invariant::no_duplicate].count, 19u);
  EXPECT_EQ((*v)[Invariant::no_duplicate].examples.size(), 3u);
}

// ---- the reader ----

TEST(OracleReader, AcceptsAnyValidJsonObject) {
  const std::string line =
      " { \"t\" : 5e0 , \"ty\\u0070e\":\"send\",\"user\":\"al\\\"ice\\n\",\"device\":\"d\\u00e9v\",\"conv\":\"c\","
      "\"msg\":\"m\\ud83d\\ude00\",\"body\":\"h\",\"extra\":{\"nested\":[1,2.5e-3,{\"x\":null}],\"y\":true},"
      "\"more\":[],\"n\":-0.0,\"to\":\"bob\",\"expires_at\":1.5e3,\"view_once\":false } \r";
  Event e;
  Status s = parse_event_line(line, e);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(e.type, EventType::send);
  EXPECT_EQ(e.t, 5);
  EXPECT_EQ(e.user, "al\"ice\n");
  EXPECT_EQ(e.device, "d\xc3\xa9v");
  EXPECT_EQ(e.msg, "m\xf0\x9f\x98\x80");
  EXPECT_EQ(e.to, std::optional<std::string>("bob"));
  EXPECT_EQ(e.expires_at, std::optional<int64_t>(1500));
  EXPECT_FALSE(e.view_once);
}

TEST(OracleReader, WriterRoundTripsEveryType) {
  std::vector<Event> events = {
      Event{.type = EventType::send, .t = 1, .user = "u\t\"x\\", .device = "d\x01", .conv = "c", .msg = "m", .body = "b",
            .to = "v", .expires_at = 99, .view_once = true},
      Event{.type = EventType::ack, .t = 2, .device = "d", .conv = "c", .msg = "m", .seq = -3},
      Event{.type = EventType::reject, .t = 3, .device = "d", .conv = "c", .msg = "m", .reason = "blocked"},
      Event{.type = EventType::deliver, .t = 4, .user = "u", .device = "d", .conv = "c", .msg = "m", .body = "b",
            .seq = 9223372036854775807, .from = "f"},
      Event{.type = EventType::read, .t = 5, .user = "u", .device = "d", .conv = "c", .up_to = 7},
      Event{.type = EventType::receipt, .t = 6, .device = "d", .conv = "c", .up_to = 8, .reader = "r",
            .kind = ReceiptKind::read},
      Event{.type = EventType::join, .t = 7, .user = "u", .conv = "c", .seq = 1},
      Event{.type = EventType::leave, .t = 8, .user = "u", .conv = "c", .seq = 2},
      Event{.type = EventType::expire, .t = 9, .device = "d", .msg = "m"},
      Event{.type = EventType::decrypt_error, .t = 10, .device = "d", .conv = "c", .msg = "m", .reason = "mac"},
      Event{.type = EventType::online, .t = 11, .user = "u", .device = "d"},
      Event{.type = EventType::offline, .t = 12, .user = "u", .device = "d"},
      Event{.type = EventType::fault, .t = 13, .name = "p"},
      Event{.type = EventType::heal, .t = 14, .name = "p"},
      Event{.type = EventType::end, .t = 15, .quiescent = true},
  };
  for (const Event& e : events) {
    const std::string line = to_jsonl(e);
    ASSERT_EQ(line.back(), '\n');
    ASSERT_EQ(line.find('\n'), line.size() - 1);
    Event back;
    Status s = parse_event_line(std::string_view(line).substr(0, line.size() - 1), back);
    ASSERT_TRUE(s.ok()) << line << s.error().message;
    EXPECT_EQ(to_jsonl(back), line);
    EXPECT_EQ(back.type, e.type);
    EXPECT_EQ(back.t, e.t);
    EXPECT_EQ(back.user, e.user);
    EXPECT_EQ(back.device, e.device);
    EXPECT_EQ(back.to, e.to);
    EXPECT_EQ(back.expires_at, e.expires_at);
    EXPECT_EQ(back.seq, e.seq);
  }
}

struct BadInput {
  std::string text;
  std::string message;  // the whole error message
};

TEST(OracleReader, BadInputNamesTheLineAndTheReason) {
  const std::string ok = R"({"type":"online","t":1,"user":"u","device":"d"})" "\n";
  const std::vector<BadInput> cases = {
      {ok + R"({"type":"dance","t":2})" "\n", "line 2: unknown type \"dance\""},
      {ok + R"({"type":"ack","t":2,"device":"d","conv":"c","msg":"m"})" "\n",
       "line 2: missing required field \"seq\" for type \"ack\""},
      {ok + R"({"t":2})" "\n", "line 2: missing required field \"type\""},
      {ok + ok + R"({"type":"online","t":0,"user":"u","device":"d"})" "\n", "line 3: t decreases (from 1 to 0)"},
      {ok + "{\"type\":\"online\",\"t\":2,\"user\":\"u\",\"device\":\"d\"\n", "line 2: unterminated object"},
      {ok + "\n" + ok, "line 2: empty line"},
      {ok + "[1,2]\n", "line 2: not a JSON object"},
      {ok + R"({"type":"online","t":"2","user":"u","device":"d"})" "\n", "line 2: field \"t\" must be an integer"},
      {ok + R"({"type":"online","t":2.5,"user":"u","device":"d"})" "\n",
       "line 2: field \"t\" must be an integer in the signed 64-bit range"},
      {ok + R"({"type":"online","t":99999999999999999999,"user":"u","device":"d"})" "\n",
       "line 2: field \"t\" must be an integer in the signed 64-bit range"},
      {ok + R"({"type":"online","t":2,"user":7,"device":"d"})" "\n", "line 2: field \"user\" must be a string"},
      {ok + R"({"type":"end","t":2,"quiescent":"yes"})" "\n", "line 2: field \"quiescent\" must be true or false"},
      {ok + R"({"type":"receipt","t":2,"device":"d","conv":"c","reader":"r","kind":"seen","up_to":1})" "\n",
       "line 2: field \"kind\" must be \"delivered\" or \"read\""},
      {ok + R"({"type":"online","t":2,"user":"u","device":"d"} x)" "\n", "line 2: trailing characters after the object"},
      {ok + R"({"type":"online","t":02,"user":"u","device":"d"})" "\n", "line 2: expected ',' or '}' in an object"},
      {ok + "{\"type\":\"online\",\"t\":2,\"user\":\"u\xff\",\"device\":\"d\"}\n", "line 2: invalid UTF-8 in a string"},
      {ok + "{\"type\":\"online\",\"t\":2,\"user\":\"\\ud800\",\"device\":\"d\"}\n",
       "line 2: lone high surrogate in a \\u escape"},
      {ok + "{\"type\":\"online\",\"t\":2,\"user\":\"a\tb\",\"device\":\"d\"}\n", "line 2: control character in a string"},
      {ok + "{\"type\":\"online\",\"t\":2,\"x\":" + std::string(100, '[') + std::string(100, ']') + "}\n",
       "line 2: nesting deeper than 64 levels"},
      {ok + "{\"type\":\"online\",\"t\":2,\"x\":tru}\n", "line 2: invalid JSON literal"},
  };
  for (const BadInput& c : cases) {
    Result<Verdict> v = judge_text(c.text);
    ASSERT_FALSE(v.ok()) << c.text;
    EXPECT_EQ(v.error().code, ErrorCode::bad_input);
    EXPECT_EQ(v.error().message, c.message) << c.text;
  }
}

TEST(OracleReader, LongLinesAreBadInputAndTheLastLineNeedsNoNewline) {
  const std::string huge = "{\"type\":\"online\",\"t\":1,\"user\":\"" + std::string(kLineBytesMax, 'u') + "\",\"device\":\"d\"}\n";
  Result<Verdict> v = judge_text(huge);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().message.rfind("line 1: longer than", 0), 0u) << v.error().message;

  Result<Verdict> last = judge_text(R"({"type":"online","t":1,"user":"u","device":"d"})" "\n" R"({"type":"end","t":2,"quiescent":true})");
  ASSERT_TRUE(last.ok()) << last.error().message;
  EXPECT_EQ(last->stats.events, 2u);
  EXPECT_TRUE(last->stats.quiescent);

  // A long but allowed line, after short ones, makes the reader's buffer grow mid-stream.
  std::string grown;
  for (int i = 0; i < 3000; ++i) grown += R"({"type":"online","t":1,"user":"u","device":"d"})" "\n";
  grown += "{\"type\":\"online\",\"t\":1,\"user\":\"u\",\"device\":\"d\",\"pad\":\"" + std::string(700000, 'p') + "\"}\n";
  grown += R"({"type":"end","t":2,"quiescent":true})" "\n";
  Result<Verdict> long_ok = judge_text(grown);
  ASSERT_TRUE(long_ok.ok()) << long_ok.error().message;
  EXPECT_EQ(long_ok->stats.events, 3002u);

  Result<Verdict> empty = judge_text("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->valid);
}

TEST(OracleChecker, ObserveRecordsADecreasingTimeAsBadInput) {
  Checker checker;
  checker.observe(Event{.type = EventType::online, .t = 5, .user = "u", .device = "d"});
  checker.observe(Event{.type = EventType::online, .t = 4, .user = "u", .device = "d"});
  ASSERT_TRUE(checker.input_error().has_value());
  EXPECT_EQ(checker.input_error()->message, "line 2: t decreases (from 5 to 4)");
  EXPECT_EQ(checker.events_observed(), 1u);
}

// The interner's slots hold ids of up to 11 bytes inline, compared as two words, and longer ids
// through a tag and the arena: every length around those boundaries, texts that differ in one
// byte only (at every position), the empty text, and enough ids to grow the table several times.
// Both ways of keeping names (slot positions, or copies of the slots by id) give the same.
class OracleInterner : public ::testing::TestWithParam<detail::Interner::Names> {};
INSTANTIATE_TEST_SUITE_P(Names, OracleInterner,
                         ::testing::Values(detail::Interner::Names::by_position, detail::Interner::Names::by_id));

TEST_P(OracleInterner, FindsExactlyWhatItInterned) {
  detail::Interner interner(GetParam());
  std::vector<std::string> texts;
  texts.push_back("");
  for (size_t n = 1; n <= 20; ++n) {
    const std::string base(n, 'a');
    texts.push_back(base);
    for (size_t i = 0; i < n; ++i) {
      std::string other = base;
      other[i] = 'b';
      texts.push_back(other);
    }
  }
  for (int i = 0; i < 5000; ++i) texts.push_back("m" + std::to_string(i));
  for (size_t i = 0; i < texts.size(); ++i) {
    bool added = false;
    EXPECT_EQ(interner.intern(texts[i], added), i) << texts[i];
    EXPECT_TRUE(added) << texts[i];
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    bool added = true;
    EXPECT_EQ(interner.intern(texts[i], added), i) << texts[i];
    EXPECT_FALSE(added) << texts[i];
    const std::optional<uint32_t> found = interner.find(texts[i]);
    ASSERT_TRUE(found.has_value()) << texts[i];
    EXPECT_EQ(*found, i) << texts[i];
    EXPECT_EQ(interner.name(static_cast<uint32_t>(i)), texts[i]);
    EXPECT_TRUE(interner.name_is(static_cast<uint32_t>(i), texts[i]));
  }
  // Texts never interned: one byte more, a byte changed to one not used above, longer names.
  for (size_t n = 1; n <= 20; ++n) {
    for (size_t i = 0; i < n; ++i) {
      std::string absent(n, 'a');
      absent[i] = 'c';
      EXPECT_FALSE(interner.find(absent).has_value()) << absent;
    }
  }
  EXPECT_FALSE(interner.find("m5000").has_value());
  EXPECT_FALSE(interner.find(std::string(21, 'a')).has_value());
  EXPECT_FALSE(interner.name_is(1, "b"));
  // Long names keep their text in the arena: name_is compares it, not only the tag.
  const std::string long_name(40, 'x');
  const uint32_t long_id = interner.intern(long_name);
  EXPECT_TRUE(interner.name_is(long_id, long_name));
  EXPECT_FALSE(interner.name_is(long_id, std::string(39, 'x') + "y"));
  EXPECT_EQ(interner.name(long_id), long_name);
}

// body_hash (a 64-byte body by text_hash's rounds unrolled) is text_hash: bodies of every length
// 0-100, and 64-byte ones with each byte changed in turn (a send stores one, a deliver compares).
TEST(OracleTextHash, BodyHashIsTextHash) {
  std::string text;
  for (int n = 0; n <= 100; ++n) {
    EXPECT_EQ(detail::body_hash(text), detail::text_hash(text)) << "length " << n;
    text += static_cast<char>('a' + (n * 7) % 26);
  }
  std::string body(64, '0');
  for (size_t i = 0; i < body.size(); ++i) body[i] = "0123456789abcdef"[(i * 5) % 16];
  const uint64_t original = detail::body_hash(body);
  for (size_t i = 0; i < body.size(); ++i) {
    std::string changed = body;
    changed[i] = changed[i] == 'f' ? '0' : 'f';
    EXPECT_EQ(detail::body_hash(changed), detail::text_hash(changed)) << "byte " << i;
    EXPECT_NE(detail::body_hash(changed), original) << "byte " << i;
  }
}

// A name inside a record (message ids): inline up to 14 bytes, in the arena beyond; the same
// length and one-byte-difference cases as the interner's, around both boundaries.
TEST(OracleInlineName, IsExactlyItsText) {
  detail::NameArena arena;
  for (size_t n = 0; n <= 40; ++n) {
    const std::string text(n, 'a');
    const detail::InlineName name(text, arena);
    EXPECT_EQ(name.view(), text);
    EXPECT_TRUE(name.is(text)) << n;
    EXPECT_FALSE(name.is(text + "a")) << n;
    if (n > 0) {
      EXPECT_FALSE(name.is(text.substr(1))) << n;
    }
    for (size_t i = 0; i < n; ++i) {
      std::string other = text;
      other[i] = 'b';
      EXPECT_FALSE(name.is(other)) << n << " " << i;
    }
  }
  // A text longer than an arena block gets a block of its own.
  const std::string huge(100'000, 'z');
  const detail::InlineName huge_name(huge, arena);
  EXPECT_TRUE(huge_name.is(huge));
  EXPECT_EQ(huge_name.view().size(), huge.size());
}

// The record tables: one range of address space, made usable a chunk at a time and moved
// (mremap, or a copy) when the reservation fills. Every element keeps its value (a heap
// member included) across those moves, records stay line-aligned, and the memory counted is
// exactly the usable chunks.
TEST(OracleReservedVector, KeepsEveryElementAcrossMoves) {
  struct alignas(64) Record {
    uint64_t value = 0;
    std::vector<uint32_t> heap;
  };
  detail::ReservedVector<Record, 4> records;  // 16 records (1 KB) a chunk: many moves
  EXPECT_EQ(records.memory_bytes(), 0u);
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t chunk_bytes = (16 * sizeof(Record) + page - 1) / page * page;
  size_t moves = 0;
  const Record* first = nullptr;
  for (uint32_t i = 0; i < 100'000; ++i) {
    Record r;
    r.value = uint64_t{i} * 2654435761u;
    r.heap.assign(i % 5, i);
    records.push_back(std::move(r));
    if (&records[0] != first) {
      first = &records[0];
      ++moves;
    }
    ASSERT_EQ(reinterpret_cast<uintptr_t>(&records[i]) % 64, 0u) << i;
  }
  EXPECT_GE(moves, 5u);  // the reservation doubled, moving the table, more than a few times
  ASSERT_EQ(records.size(), 100'000u);
  for (uint32_t i = 0; i < records.size(); ++i) {
    ASSERT_EQ(records[i].value, uint64_t{i} * 2654435761u) << i;
    ASSERT_EQ(records[i].heap, std::vector<uint32_t>(i % 5, i)) << i;
  }
  // Usable memory is whole chunks (rounded up to pages), no more than one chunk past the last record.
  EXPECT_EQ(records.memory_bytes() % chunk_bytes, 0u);
  EXPECT_GE(records.memory_bytes(), records.size() * sizeof(Record));
  EXPECT_LT(records.memory_bytes(), records.size() * sizeof(Record) + chunk_bytes);
  EXPECT_GE(records.reserved_bytes(), records.memory_bytes());
}

// The tagged index slots over records kept elsewhere: every stored index is found again (and
// nothing else) across the table's growth, its retags (more index bits, the same size) and
// its rebuilds, for sparse indices (some records are never stored) and dense ones. Keys are
// chosen with many equal low hash bits, so that probe paths are long and tags decide.
TEST(OracleHashedIndexSlots, FindsEveryStoredIndexAcrossGrowth) {
  for (const auto indices : {detail::HashedIndexSlots::Indices::sparse, detail::HashedIndexSlots::Indices::dense}) {
    const bool dense = indices == detail::HashedIndexSlots::Indices::dense;
    detail::HashedIndexSlots slots(16, indices);
    std::vector<uint64_t> keys;  // record i's key
    auto hash_of_key = [](uint64_t key) { return mix64(key) & ~uint64_t{0xF0}; };
    std::vector<bool> stored;
    for (uint32_t i = 0; i < 20'000; ++i) {
      keys.push_back(uint64_t{i} * 7919 + 3);
      const bool store = dense || i % 3 != 1;
      stored.push_back(store);
      if (!store) continue;
      slots.insert(
          hash_of_key(keys[i]), i, [&](uint32_t index) { return hash_of_key(keys[index]); }, [](uint32_t) {});
    }
    for (uint32_t i = 0; i < keys.size(); ++i) {
      const uint32_t found =
          slots.find(hash_of_key(keys[i]), [&](uint32_t index) { return index < keys.size() && keys[index] == keys[i]; });
      EXPECT_EQ(found, stored[i] ? i : detail::kNone) << i << (dense ? " dense" : " sparse");
    }
    EXPECT_EQ(slots.find(hash_of_key(1), [](uint32_t) { return false; }), detail::kNone);
  }
}

// find_or_insert is find, then insert when nothing matched: the same answers, and the table grows
// at the same moments and ends with the same slots (checker_bytes, which a verdict reports,
// counts them), also when keys repeat (found, nothing stored) and across retags and rebuilds,
// for sparse indices (a record per key tried) and dense ones (a record per key stored).
TEST(OracleHashedIndexSlots, FindOrInsertIsFindThenInsert) {
  for (const auto indices : {detail::HashedIndexSlots::Indices::sparse, detail::HashedIndexSlots::Indices::dense}) {
    const bool dense = indices == detail::HashedIndexSlots::Indices::dense;
    detail::HashedIndexSlots two_calls(16, indices);
    detail::HashedIndexSlots one_call(16, indices);
    std::vector<uint64_t> tried;       // every key tried, in order
    std::vector<uint64_t> record_key;  // record index -> key
    auto hash_of_key = [](uint64_t key) { return mix64(key) & ~uint64_t{0xF0}; };
    auto hash_of = [&](uint32_t index) { return hash_of_key(record_key[index]); };
    size_t found_again = 0;
    for (uint32_t i = 0; i < 30'000; ++i) {
      // Every fourth key repeats an earlier one.
      const uint64_t key = i % 4 == 3 ? tried[i / 2] : uint64_t{i} * 7919 + 3;
      tried.push_back(key);
      const uint64_t h = hash_of_key(key);
      const auto index = static_cast<uint32_t>(record_key.size());
      auto matches = [&](uint32_t at) { return at < index && record_key[at] == key; };
      const uint32_t expected = two_calls.find(h, matches);
      if (expected == detail::kNone) two_calls.insert(h, index, hash_of);
      const uint32_t got = one_call.find_or_insert(h, index, matches, hash_of);
      ASSERT_EQ(got, expected) << i << (dense ? " dense" : " sparse");
      if (got != detail::kNone) ++found_again;
      if (!dense || got == detail::kNone) record_key.push_back(key);
      ASSERT_EQ(one_call.memory_bytes(), two_calls.memory_bytes()) << i << (dense ? " dense" : " sparse");
    }
    EXPECT_GT(found_again, 5'000u);
    for (const uint64_t key : tried) {
      auto same_key = [&](uint32_t at) { return record_key[at] == key; };
      EXPECT_EQ(one_call.find(hash_of_key(key), same_key), two_calls.find(hash_of_key(key), same_key));
      EXPECT_EQ(one_call.first_candidate(hash_of_key(key)), two_calls.first_candidate(hash_of_key(key)));
    }
  }
}

}  // namespace
}  // namespace msgsim::history
