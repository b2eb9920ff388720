// EventParser::parse tries a fast path for plainly written lines before the general parser; the
// two must agree on every line: the same event, or the same error message. Checked over every
// line of the hand-written histories, a generated history, and lines built to sit on each edge
// of the fast path's shape (whitespace, escapes, number forms, literals, nesting, repeated keys,
// missing and mistyped fields, non-ASCII).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "oracle/checker.h"
#include "oracle/generate.h"
#include "oracle/jsonl.h"

namespace msgsim::history {
namespace {

// Every field, so that a difference in any of them shows.
std::string describe(const EventView& e) {
  std::string out = std::string(to_string(e.type)) + " t=" + std::to_string(e.t);
  auto add = [&](const char* name, std::string_view value) { out += std::string(" ") + name + "=[" + std::string(value) + "]"; };
  add("user", e.user);
  add("device", e.device);
  add("conv", e.conv);
  add("msg", e.msg);
  add("body", e.body);
  out += e.to ? " to=[" + std::string(*e.to) + "]" : std::string(" to=none");
  out += e.expires_at ? " expires_at=" + std::to_string(*e.expires_at) : std::string(" expires_at=none");
  out += std::string(" view_once=") + (e.view_once ? "1" : "0");
  out += " seq=" + std::to_string(e.seq);
  add("from", e.from);
  add("reason", e.reason);
  out += " up_to=" + std::to_string(e.up_to);
  add("reader", e.reader);
  out += std::string(" kind=") + to_string(e.kind);
  add("name", e.name);
  out += std::string(" quiescent=") + (e.quiescent ? "1" : "0");
  return out;
}

// parse() and parse_general() on one line: "ok: <event>" or "error: <message>".
std::string outcome(std::string_view line, bool general) {
  EventParser parser;
  EventView view;
  Status status = general ? parser.parse_general(line, view) : parser.parse(line, view);
  return status.ok() ? "ok: " + describe(view) : "error: " + status.error().message;
}

void expect_agree(std::string_view line) {
  EXPECT_EQ(outcome(line, false), outcome(line, true)) << "line: " << line;
}

TEST(OracleParser, AgreesOnTheHandWrittenHistories) {
  size_t lines = 0;
  const std::filesystem::path dir = std::string(MSGSIM_SOURCE_DIR) + "/tests/data/oracle";
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".jsonl") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string line;
    while (std::getline(in, line)) {
      expect_agree(line);
      ++lines;
    }
  }
  EXPECT_GT(lines, 100u);
}

TEST(OracleParser, AgreesOnAGeneratedHistory) {
  GeneratorOptions options;
  options.seed = 7;
  options.events = 3000;
  size_t lines = 0;
  generate_history(options, [&](const Event& e) {
    std::string line = to_jsonl(e);
    line.pop_back();  // the '\n'
    const std::string parsed = outcome(line, false);
    EXPECT_EQ(parsed.rfind("ok: ", 0), 0u) << line;
    EXPECT_EQ(parsed, outcome(line, true)) << line;
    ++lines;
  });
  EXPECT_GT(lines, 2000u);
}

// A ring slot's view is reused line after line, and the canonical parse resets only what a
// type's shape may leave unset: a line read into a view that holds something in every member
// must read exactly as into a fresh one. Every type, with and without its optional fields.
TEST(OracleParser, ReadsTheSameIntoAReusedView) {
  std::vector<std::string> lines;
  GeneratorOptions options;
  options.seed = 11;
  options.events = 3000;
  generate_history(options, [&](const Event& e) {
    lines.push_back(to_jsonl(e));
    lines.back().pop_back();  // the '\n'
  });
  lines.push_back(R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","to":"z","expires_at":9,"view_once":true})");
  lines.push_back(R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b"})");
  lines.push_back(R"({"type":"reject","t":3,"device":"a1","conv":"c","msg":"m","reason":"r"})");
  lines.push_back(R"({"type":"receipt","t":4,"device":"a1","conv":"c","reader":"b","kind":"read","up_to":5})");
  lines.push_back(R"({"type":"fault","t":6,"name":"partition"})");
  lines.push_back(R"({"type":"heal","t":7,"name":"partition"})");
  lines.push_back(R"({"type":"decrypt_error","t":8,"device":"a1","conv":"c","msg":"m","reason":"x"})");
  lines.push_back(R"({"type":"end","t":9,"quiescent":true})");
  std::set<EventType> types;
  for (const std::string& line : lines) {
    EventParser fresh_parser;
    EventView fresh;
    const Status fresh_status = fresh_parser.parse(line, fresh);
    EventParser reused_parser;
    EventView reused;
    const std::string junk = "junk";
    reused.t = 77;
    reused.user = reused.device = reused.conv = reused.msg = reused.body = junk;
    reused.to = junk;
    reused.expires_at = 66;
    reused.view_once = true;
    reused.seq = 55;
    reused.from = reused.reason = reused.reader = reused.name = junk;
    reused.up_to = 44;
    reused.kind = ReceiptKind::read;
    reused.quiescent = true;
    const Status reused_status = reused_parser.parse(line, reused);
    ASSERT_EQ(fresh_status.ok(), reused_status.ok()) << line;
    if (!fresh_status.ok()) continue;
    EXPECT_EQ(describe(reused), describe(fresh)) << line;
    types.insert(fresh.type);
  }
  EXPECT_EQ(types.size(), 15u);  // every type was read
}

TEST(OracleParser, AgreesOnTheEdgesOfThePlainShape) {
  const std::string deliver_tail = R"("user":"bob","device":"b1","conv":"ab","msg":"m1","seq":3,"from":"alice","body":"h1"})";
  const std::vector<std::string> lines = {
      // Plain lines of each type, and plain lines with unknown fields of plain values.
      R"({"type":"deliver","t":5,)" + deliver_tail,
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","to":"z","expires_at":9,"view_once":true})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","view_once":false})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq":1,"extra":"x","n":-4,"b":false})",
      R"({"type":"reject","t":2,"device":"a1","conv":"c","msg":"m","reason":"rate"})",
      R"({"type":"decrypt_error","t":2,"device":"a1","conv":"c","msg":"m","reason":"bad mac"})",
      R"({"type":"read","t":2,"user":"a","device":"a1","conv":"c","up_to":7})",
      R"({"type":"receipt","t":2,"device":"a1","conv":"c","reader":"b","kind":"read","up_to":7})",
      R"({"type":"receipt","t":2,"device":"a1","conv":"c","reader":"b","kind":"delivered","up_to":0})",
      R"({"type":"join","t":2,"conv":"c","user":"a","seq":1})",
      R"({"type":"leave","t":2,"conv":"c","user":"a","seq":2})",
      R"({"type":"expire","t":2,"device":"a1","msg":"m"})",
      R"({"type":"online","t":2,"user":"a","device":"a1"})",
      R"({"type":"offline","t":2,"user":"a","device":"a1"})",
      R"({"type":"fault","t":2,"name":"partition"})",
      R"({"type":"heal","t":2,"name":"partition"})",
      R"({"type":"end","t":2,"quiescent":true})",
      R"({"type":"end","t":2,"quiescent":false})",
      // Numbers: sign, zero, leading zeros, 18/19/20 digits, fractions and exponents.
      R"({"type":"end","t":-0,"quiescent":true})",
      R"({"type":"end","t":-5,"quiescent":true})",
      R"({"type":"end","t":0,"quiescent":true})",
      R"({"type":"end","t":01,"quiescent":true})",
      R"({"type":"end","t":-,"quiescent":true})",
      R"({"type":"end","t":999999999999999999,"quiescent":true})",
      R"({"type":"end","t":9223372036854775807,"quiescent":true})",
      R"({"type":"end","t":9223372036854775808,"quiescent":true})",
      R"({"type":"end","t":-9223372036854775808,"quiescent":true})",
      R"({"type":"end","t":7.0,"quiescent":true})",
      R"({"type":"end","t":7.5,"quiescent":true})",
      R"({"type":"end","t":1e3,"quiescent":true})",
      R"({"type":"end","t":1E+2,"quiescent":true})",
      // Literals, null, nesting, whitespace, escapes, non-ASCII, control bytes.
      R"({"type":"end","t":1,"quiescent":tru})",
      R"({"type":"end","t":1,"quiescent":"true"})",
      R"({"type":"end","t":1,"quiescent":null})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","to":null})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","to":5})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","expires_at":"5"})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","view_once":1})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq":1,"extra":{"a":[1,2,{"b":null}]}})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq":1,"extra":[]})",
      R"( {"type":"end","t":1,"quiescent":true})",
      R"({"type":"end","t":1,"quiescent":true} )",
      R"({"type": "end","t":1,"quiescent":true})",
      "{\"type\":\"end\",\"t\":1,\"quiescent\":true}\r",
      R"({"type":"deliver","t":5,"user":"b\u006fb","device":"b1","conv":"ab","msg":"m1","seq":3,"from":"alice","body":"h1"})",
      R"({"type":"deliver","t":5,"user":"b\"b","device":"b1","conv":"ab","msg":"m1","seq":3,"from":"alice","body":"h1"})",
      R"({"ty\u0070e":"end","t":1,"quiescent":true})",
      "{\"type\":\"online\",\"t\":1,\"user\":\"\xc3\xa9\",\"device\":\"d\"}",
      "{\"type\":\"online\",\"t\":1,\"user\":\"\xc3\",\"device\":\"d\"}",
      "{\"type\":\"online\",\"t\":1,\"user\":\"a\tb\",\"device\":\"d\"}",
      R"({"type":"online","t":1,"user":"","device":""})",
      // Keys one byte away from a known one are unknown fields (their values would break the
      // event if they were taken for the known field).
      R"({"type":"end","t":1,"quiescent":true,"typf":"x","u":"y","tp":3,"seg":"s","quiescenT":5})",
      R"({"type":"end","t":1,"quiescent":true,"expires_aT":"x","view_oncf":3,"devicf":1,"up_tp":"z"})",
      R"({"type":"end","t":1,"quiescent":true,"readerx":1,"Type":2,"kinds":3,"namf":4,"frim":5})",
      // Repeated keys (the last wins), missing and mistyped fields, unknown types, bad shapes.
      R"({"type":"end","t":1,"t":2,"quiescent":true})",
      R"({"type":"send","type":"end","t":1,"quiescent":true})",
      R"({"type":"deliver","t":5,"user":"bob","device":"b1","conv":"ab","msg":"m1","from":"alice","body":"h1"})",
      R"({"type":"deliver","t":5,"user":"bob","device":"b1","conv":"ab","msg":"m1","seq":"3","from":"alice","body":"h1"})",
      R"({"type":"receipt","t":2,"device":"a1","conv":"c","reader":"b","kind":"seen","up_to":7})",
      R"({"type":"bogus","t":1})",
      R"({"type":5,"t":1})",
      R"({"t":1})",
      R"({"type":"end","quiescent":true})",
      R"({"type":"end","t":"1","quiescent":true})",
      R"({})",
      R"({)",
      R"(})",
      R"()",
      R"([1])",
      R"({"type":"end","t":1,"quiescent":true,})",
      R"({"type":"end","t":1,"quiescent":true}})",
      R"({"type":"end","t":1,"quiescent":true}x)",
      R"({"type":"end","t":1 "quiescent":true})",
      R"({"type":"end","t":1,"quiescent")",
      R"({"type":"end","t":1,"quiescent":)",
      R"({"type":"end","t":1,"quiescent":true)",
      R"({"type":"end","t":1,quiescent:true})",
      R"({"type":"end,"t":1,"quiescent":true})",
      R"({"type":"end","t":1,"quiescent":"})",
  };
  for (const std::string& line : lines) expect_agree(line);
  // Every prefix of a plain line is malformed in some way; both parsers must say the same.
  const std::string plain = R"({"type":"deliver","t":5,)" + deliver_tail;
  for (size_t n = 0; n <= plain.size(); ++n) expect_agree(std::string_view(plain).substr(0, n));
}

// The canonical path (to_jsonl's field order) reads integers 8 digits a step while 8 bytes
// remain: every run length from 1 to 21 digits, with and without a sign, as t (far from the end)
// and as the last field (a few bytes from the end), followed by each byte that may end a run.
TEST(OracleParser, AgreesOnDigitRunsOfEveryLength) {
  std::string digits;
  for (int n = 1; n <= 21; ++n) {
    digits += static_cast<char>('0' + (n * 7) % 10);
    if (digits[0] == '0') digits[0] = '1';
    for (const std::string sign : {"", "-"}) {
      const std::string number = sign + digits;
      expect_agree(R"({"type":"fault","t":)" + number + R"(,"name":"partition"})");
      expect_agree(R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq":)" + number + "}");
      expect_agree(R"({"type":"join","t":2,"conv":"c","user":"a","seq":)" + number + "}");
      for (const char* after : {"x", ".5", "e3", " ", "0", ":", "\\", "\"", "\x80"}) {
        expect_agree(R"({"type":"fault","t":)" + number + after + R"(,"name":"partition"})");
        expect_agree(R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq":)" + number + after + "}");
      }
    }
  }
  // Leading zeros in every position of a run.
  for (int n = 1; n <= 12; ++n) {
    expect_agree(R"({"type":"fault","t":)" + std::string(static_cast<size_t>(n), '0') + R"(7,"name":"p"})");
    expect_agree(R"({"type":"fault","t":7)" + std::string(static_cast<size_t>(n), '0') + R"(,"name":"p"})");
  }
}

// Lines one step off to_jsonl's field order or shape take the general plain path (or the general
// parser); either way the result must be the general parser's.
TEST(OracleParser, AgreesOnNearCanonicalLines) {
  const std::vector<std::string> lines = {
      R"({"type":"deliver","t":5,"device":"b1","user":"bob","conv":"ab","msg":"m1","seq":3,"from":"alice","body":"h1"})",
      R"({"type":"deliver","t":5,"user":"bob","device":"b1","conv":"ab","msg":"m1","seq":3,"from":"alice"})",
      R"({"type":"deliver","t":5,"user":"bob","device":"b1","conv":"ab","msg":"m1","seq":3,"from":"alice","body":"h1","x":1})",
      R"({"type":"deliver","t":5,"user":"bob","device":"b1","conv":"ab","msg":"m1","seq":3,"from":"alice","body":"h1","body":"h2"})",
      R"({"type":"deliver","t":5,"user":bob,"device":"b1","conv":"ab","msg":"m1","seq":3,"from":"alice","body":"h1"})",
      R"({"type":"deliver","t":5,"user":"bob","device":"b1","conv":"ab","msg":"m1","seq":true,"from":"alice","body":"h1"})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","expires_at":9,"to":"z"})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","view_once":true,"to":"z"})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","expires_at":9})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","view_once":true})",
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","to":"z","view_once":false})",
      R"({"type":"end","t":2,"quiescent":truex})",
      R"({"type":"end","t":2,"quiescent":fals})",
      R"({"type":"end","t":2,"quiescent":true,"quiescent":false})",
      R"({"type":"end","t":2})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq":1})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","sequ":1})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq":1}})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq":})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m","seq"})",
      R"({"type":"ack","t":2,"device":"a1","conv":"c","msg":"m"})",
      R"({"type":"ack"})",
      R"({"type":"ack",})",
      R"({"type":"ack","t")",
      R"({"type":""})",
      R"({"type":"})",
      R"({"type":"t":1})",
  };
  for (const std::string& line : lines) expect_agree(line);
  // Every prefix of a canonical send with all its optional fields.
  const std::string send =
      R"({"type":"send","t":123456789012,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","to":"z","expires_at":1234567890123,"view_once":true})";
  for (size_t n = 0; n <= send.size(); ++n) expect_agree(std::string_view(send).substr(0, n));
}

// Bodies around 64 bytes (the simulator's 64-hex digests, which the canonical parse checks as
// one block when the 65th byte is a quote): every length 62-66 with an escaped quote or
// backslash, a raw quote, backslash, tab, DEL or non-ASCII byte at every position, in sends and
// delivers; the result must be the general parser's, and a plain 64-byte body must read as is.
TEST(OracleParser, AgreesOnBodiesAroundSixtyFourBytes) {
  const std::string send_head = R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":")";
  const std::string send_tail = R"(","to":"z"})";
  const std::string deliver_head =
      R"({"type":"deliver","t":5,"user":"bob","device":"b1","conv":"ab","msg":"m1","seq":3,"from":"alice","body":")";
  const std::string deliver_tail = R"("})";
  const std::vector<std::string> specials = {"\\\"", "\\\\", "\"", "\\", "\t", "\x7f", "\xc3\xa9", "\x01"};
  for (size_t length = 62; length <= 66; ++length) {
    std::string body;
    for (size_t i = 0; i < length; ++i) body.push_back("0123456789abcdef"[(i * 7) % 16]);
    for (const auto& [head, tail] : {std::pair{send_head, send_tail}, std::pair{deliver_head, deliver_tail}}) {
      expect_agree(head + body + tail);
      for (size_t at = 0; at <= length; ++at) {
        for (const std::string& special : specials) {
          std::string changed = body;
          changed.replace(std::min(at, changed.size()), at < changed.size() ? 1 : 0, special);
          expect_agree(head + changed + tail);
        }
      }
    }
  }
  EventParser parser;
  EventView view;
  const std::string body(64, 'f');
  ASSERT_TRUE(parser.parse(deliver_head + body + deliver_tail, view).ok());
  EXPECT_EQ(view.body, body);
}

// Calls `check` on `line`, on each copy with one byte replaced by one of `replacements` (an
// empty replacement deletes the byte), and on every proper prefix.
template <typename Check>
void check_line_and_its_changes(const std::string& line, std::span<const std::string> replacements, const Check& check) {
  check(line);
  for (size_t at = 0; at < line.size(); ++at) {
    for (const std::string& replacement : replacements) {
      std::string changed = line;
      changed.replace(at, 1, replacement);
      check(changed);
    }
  }
  for (size_t n = 0; n < line.size(); ++n) check(std::string_view(line).substr(0, n));
}

// The deliver line's straight-through read (read_straight<deliver>): ids of 1, 15, 16 and 17 bytes
// (around its one inline 16-byte step), then every byte of each line replaced by a byte that
// matters to the shape or deleted, and every prefix. parse() must give the general parser's
// result, also into a view that a send with every optional field filled just before.
TEST(OracleParser, AgreesOnEveryChangeOfADeliverLine) {
  std::vector<std::string> lines;
  for (size_t id_bytes : {1, 15, 16, 17}) {
    const std::string id(id_bytes, 'k');
    lines.push_back(R"({"type":"deliver","t":1234567890,"user":")" + id + R"(","device":")" + id + R"(.1","conv":")" + id +
                    R"(","msg":")" + id + R"(","seq":17,"from":")" + id + R"(","body":")" + std::string(64, 'e') + R"("})");
  }
  lines.push_back(R"({"type":"deliver","t":0,"user":"","device":"","conv":"","msg":"","seq":-3,"from":"","body":""})");
  const std::string replacements[] = {"\"", "\\", ",", ":", "0", "-", "x", "}", "{", " ", "\x01", "\x80", "\x7f", ""};
  const std::string send =
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","to":"z","expires_at":9,"view_once":true})";
  size_t checked = 0;
  const auto check = [&](std::string_view line) {
    expect_agree(line);
    EventParser parser;
    EventView view;
    ASSERT_TRUE(parser.parse(send, view).ok());
    Status status = parser.parse(line, view);
    const std::string reused = status.ok() ? "ok: " + describe(view) : "error: " + status.error().message;
    EXPECT_EQ(reused, outcome(line, true)) << "line after a send: " << line;
    ++checked;
  };
  for (const std::string& line : lines) {
    check_line_and_its_changes(line, replacements, check);
  }
  EXPECT_GT(checked, 10000u);
  // The plain line reads as written.
  EventParser parser;
  EventView view;
  ASSERT_TRUE(parser.parse(lines[1], view).ok());
  EXPECT_EQ(view.type, EventType::deliver);
  EXPECT_EQ(view.t, 1234567890);
  EXPECT_EQ(view.user, std::string(15, 'k'));
  EXPECT_EQ(view.device, std::string(15, 'k') + ".1");
  EXPECT_EQ(view.seq, 17);
  EXPECT_EQ(view.body, std::string(64, 'e'));
  EXPECT_FALSE(view.to.has_value());
}

// Every other type read straight through (read_straight in jsonl.cpp), a send with each
// combination of its optional fields: every byte of each line replaced by a byte that matters to
// the shape or deleted, and every prefix. parse() must give the general parser's result, also
// into a view that a line of another type filled just before (each leaves other members set: a
// reset left out of a type's straight read shows as a member kept from the line before).
TEST(OracleParser, AgreesOnEveryChangeOfALineOfEachTypeReadStraightThrough) {
  const std::string body(64, 'e');
  const std::string send_head = R"({"type":"send","t":1234567890,"user":"u15181","device":"u15181.2","conv":"d3258","msg":"m0","body":")" + body + "\"";
  const std::vector<std::string> lines = {
      send_head + "}",
      send_head + R"(,"to":"u15399"})",
      send_head + R"(,"expires_at":956779058})",
      send_head + R"(,"view_once":true})",
      send_head + R"(,"to":"u15399","expires_at":956779058})",
      send_head + R"(,"to":"u15399","view_once":false})",
      send_head + R"(,"expires_at":-5,"view_once":true})",
      send_head + R"(,"to":"u15399","expires_at":0,"view_once":true})",
      R"({"type":"send","t":0,"user":"","device":"","conv":"","msg":"","body":"","to":""})",
      R"({"type":"ack","t":3032680,"device":"u15181.2","conv":"d3258","msg":"m0","seq":1})",
      R"({"type":"ack","t":-1,"device":"kkkkkkkkkkkkkkkk","conv":"kkkkkkkkkkkkkkk","msg":"kkkkkkkkkkkkkkkkk","seq":123456789012345678})",
      R"({"type":"expire","t":399994107,"device":"u7426.2","msg":"m74"})",
      R"({"type":"online","t":0,"user":"u0","device":"u0.1"})",
      R"({"type":"offline","t":66761268,"user":"u7985","device":"u7985.2"})",
      R"({"type":"read","t":66761268,"user":"u7985","device":"u7985.2","conv":"d4715","up_to":17})",
      R"({"type":"receipt","t":66761268,"device":"u7985.2","conv":"d4715","reader":"u19754","kind":"delivered","up_to":3})",
      R"({"type":"receipt","t":66761268,"device":"u7985.2","conv":"d4715","reader":"u19754","kind":"read","up_to":3})",
      R"({"type":"join","t":5,"conv":"g12","user":"u7","seq":40})",
      R"({"type":"leave","t":5,"conv":"g12","user":"u7","seq":41})",
      R"({"type":"reject","t":9,"device":"u1.1","conv":"g12","msg":"m9","reason":"not a member"})",
      R"({"type":"decrypt_error","t":9,"device":"u1.1","conv":"g12","msg":"m9","reason":"no key"})",
      R"({"type":"fault","t":100,"name":"partition"})",
      R"({"type":"heal","t":200,"name":"partition"})",
      R"({"type":"end","t":300,"quiescent":true})",
      R"({"type":"end","t":300,"quiescent":false})",
  };
  // Lines whose types fill every member some other type leaves at its default.
  const std::vector<std::string> before = {
      R"({"type":"send","t":1,"user":"a","device":"a1","conv":"c","msg":"m","body":"b","to":"z","expires_at":9,"view_once":true})",
      R"({"type":"deliver","t":2,"user":"a","device":"a1","conv":"c","msg":"m","seq":4,"from":"f","body":"b"})",
      R"({"type":"receipt","t":3,"device":"a1","conv":"c","reader":"r","kind":"read","up_to":5})",
      R"({"type":"reject","t":4,"device":"a1","conv":"c","msg":"m","reason":"why"})",
      R"({"type":"fault","t":5,"name":"n"})",
      R"({"type":"end","t":6,"quiescent":true})",
  };
  const std::string replacements[] = {"\"", "\\", ",", ":", "0", "-", "x", "}", "{", " ", "\x01", "\x80", "\x7f", ""};
  size_t checked = 0;
  const auto check = [&](std::string_view line) {
    expect_agree(line);
    const std::string fresh = outcome(line, true);
    for (const std::string& earlier : before) {
      EventParser parser;
      EventView view;
      ASSERT_TRUE(parser.parse(earlier, view).ok());
      Status status = parser.parse(line, view);
      const std::string reused = status.ok() ? "ok: " + describe(view) : "error: " + status.error().message;
      EXPECT_EQ(reused, fresh) << "line after " << earlier << ": " << line;
    }
    ++checked;
  };
  for (const std::string& line : lines) {
    ASSERT_EQ(outcome(line, true).substr(0, 3), "ok:") << line;
    check_line_and_its_changes(line, replacements, check);
  }
  EXPECT_GT(checked, 30000u);
  // A send with every optional field reads as written.
  EventParser parser;
  EventView view;
  ASSERT_TRUE(parser.parse(lines[7], view).ok());
  EXPECT_EQ(view.type, EventType::send);
  EXPECT_EQ(view.t, 1234567890);
  EXPECT_EQ(view.device, "u15181.2");
  EXPECT_EQ(view.body, body);
  ASSERT_TRUE(view.to.has_value());
  EXPECT_EQ(*view.to, "u15399");
  ASSERT_TRUE(view.expires_at.has_value());
  EXPECT_EQ(*view.expires_at, 0);
  EXPECT_TRUE(view.view_once);
}

// A LineReader that keeps k lines: every line stays as it was returned until k more lines have
// been returned, across refills, buffer growth (a line longer than the 64 KB buffer) and the
// reuse of freed buffers, and the lines read are exactly the input's.
TEST(LineReader, KeepsTheLastLinesValidAcrossRefills) {
  constexpr size_t kKept = 13;
  std::vector<std::string> expected;
  std::string text;
  for (size_t i = 0; i < 6000; ++i) {
    std::string line = "line " + std::to_string(i) + " " + std::string(i * 37 % 400, static_cast<char>('a' + i % 26));
    if (i == 2500) line += std::string(200'000, 'x');  // longer than the initial buffer
    expected.push_back(line);
    text += line + "\n";
  }
  text += "last line without a newline";
  expected.push_back("last line without a newline");
  std::istringstream in(text);
  LineReader reader(in, kKept);
  std::vector<std::string_view> views;  // every line returned, by index
  std::string_view line;
  for (;;) {
    Result<bool> more = reader.next(line);
    ASSERT_TRUE(more.ok());
    if (!*more) break;
    views.push_back(line);
    ASSERT_LE(views.size(), expected.size());
    // The newest line and the kKept before it are all still what they were.
    const size_t newest = views.size() - 1;
    for (size_t i = newest >= kKept ? newest - kKept : 0; i <= newest; ++i) {
      ASSERT_EQ(views[i], expected[i]) << "line " << i + 1 << " read at line " << newest + 1;
    }
  }
  EXPECT_EQ(views.size(), expected.size());
  EXPECT_EQ(reader.line_number(), expected.size());
}

// What a reader returns, line by line, until the end or the first error (then the error).
std::vector<std::string> read_all(LineReader& reader, std::vector<std::string_view>* views = nullptr) {
  std::vector<std::string> out;
  std::string_view line;
  for (;;) {
    Result<bool> more = reader.next(line);
    if (!more.ok()) {
      out.push_back("error: " + more.error().message);
      return out;
    }
    if (!*more) return out;
    out.emplace_back(line);
    if (views != nullptr) views->push_back(line);
  }
}

// The reader over bytes in memory (check_text, `msgsim check FILE`) cuts exactly the lines and
// gives exactly the errors of the stream reader over the same bytes, at the line-length bound and
// without a final newline, and every line it returned stays valid (it copies nothing).
TEST(LineReader, FromMemoryReadsWhatTheStreamReads) {
  const std::string at_bound(kLineBytesMax, 'b');
  const std::string over_bound(kLineBytesMax + 1, 'o');
  const std::vector<std::string> texts = {
      "", "\n", "a", "a\n", "a\n\nb", "a\nbc\n\n",
      at_bound, at_bound + "\n", "x\n" + at_bound + "\ny",
      over_bound, over_bound + "\n", "x\n" + over_bound, "x\ny\n" + over_bound + "\nz\n",
      "x\n" + over_bound + over_bound + "\n",
  };
  for (const std::string& text : texts) {
    std::istringstream in(text);
    LineReader streamed(in);
    LineReader in_memory(text);
    std::vector<std::string_view> views;
    const std::vector<std::string> expected = read_all(streamed);
    const std::vector<std::string> got = read_all(in_memory, &views);
    EXPECT_EQ(got, expected) << "text of " << text.size() << " bytes";
    EXPECT_EQ(in_memory.line_number(), streamed.line_number()) << "text of " << text.size() << " bytes";
    for (size_t i = 0; i < views.size(); ++i) EXPECT_EQ(views[i], got[i]);
  }
  EXPECT_GE(LineReader(std::string_view()).lines_kept(), LineFeed::kLinesInFlight);
}

}  // namespace
}  // namespace msgsim::history
