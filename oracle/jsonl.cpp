#include "oracle/jsonl.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <limits>
#include <optional>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "impl/base/assert.h"

namespace msgsim::history {

namespace {

enum class Kind : uint8_t { none, string, number, boolean_true, boolean_false, null, object, array };

// The fields the spec names. Any other key is skipped (after validating its value).
enum Field : uint8_t {
  f_type,
  f_t,
  f_user,
  f_device,
  f_conv,
  f_msg,
  f_body,
  f_to,
  f_expires_at,
  f_view_once,
  f_seq,
  f_from,
  f_reason,
  f_up_to,
  f_reader,
  f_kind,
  f_name,
  f_quiescent,
  f_count,
  f_unknown = 255,
};

constexpr const char* kFieldNames[f_count] = {"type",   "t",      "user",      "device", "conv",
                                          "msg",    "body",   "to",        "expires_at",
                                          "view_once", "seq", "from",      "reason", "up_to",
                                          "reader", "kind",   "name",      "quiescent"};

Field field_of(std::string_view key) {
  // Lengths already match when this is called, so a memcmp decides.
  auto is = [&](Field f) { return std::memcmp(key.data(), kFieldNames[f], key.size()) == 0; };
  switch (key.size()) {
    case 1: return is(f_t) ? f_t : f_unknown;
    case 2: return is(f_to) ? f_to : f_unknown;
    case 3: return is(f_msg) ? f_msg : is(f_seq) ? f_seq : f_unknown;
    case 4:
      for (Field f : {f_type, f_user, f_conv, f_body, f_from, f_kind, f_name})
        if (is(f)) return f;
      return f_unknown;
    case 5: return is(f_up_to) ? f_up_to : f_unknown;
    case 6:
      for (Field f : {f_device, f_reason, f_reader})
        if (is(f)) return f;
      return f_unknown;
    case 9: return is(f_view_once) ? f_view_once : is(f_quiescent) ? f_quiescent : f_unknown;
    case 10: return is(f_expires_at) ? f_expires_at : f_unknown;
    default: return f_unknown;
  }
}

// Where a known field's value lies in the line; strings without their quotes.
// No default member initializers: the parser keeps one per known field per line, and only
// their kinds need clearing (a whole-array zeroing showed up in profiles).
struct Slot {
  Kind kind;
  bool escaped;
  const char* begin;
  const char* end;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

class Parser {
 public:
  Parser(const char* begin, const char* end) : p_(begin), end_(end) {}

  const std::string& error() const { return error_; }

  // The whole line: one object, nothing but whitespace around it.
  bool parse_line(Slot (&slots)[f_count]) {
    skip_ws();
    if (p_ == end_) return fail("empty line");
    if (*p_ != '{') return fail("not a JSON object");
    ++p_;
    skip_ws();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
    } else {
      for (;;) {
        skip_ws();
        if (p_ == end_ || *p_ != '"') return fail("expected a string key");
        Slot key{};
        if (!parse_string(key)) return false;
        Field field;
        if (key.escaped) {
          std::string decoded;
          decode_string(key, decoded);
          field = field_of(decoded);
        } else {
          field = field_of(std::string_view(key.begin, static_cast<size_t>(key.end - key.begin)));
        }
        skip_ws();
        if (p_ == end_ || *p_ != ':') return fail("expected ':' after a key");
        ++p_;
        skip_ws();
        Slot value{};
        if (!parse_value(value, 1)) return false;
        if (field != f_unknown) slots[field] = value;  // a repeated key: the last one wins
        skip_ws();
        if (p_ == end_) return fail("unterminated object");
        if (*p_ == ',') {
          ++p_;
          continue;
        }
        if (*p_ == '}') {
          ++p_;
          break;
        }
        return fail("expected ',' or '}' in an object");
      }
    }
    skip_ws();
    if (p_ != end_) return fail("trailing characters after the object");
    return true;
  }

  // Unescapes a string slot parse_string validated.
  static void decode_string(const Slot& slot, std::string& out) {
    out.clear();
    const char* p = slot.begin;
    while (p < slot.end) {
      if (*p != '\\') {
        const char* run = p;
        while (p < slot.end && *p != '\\') ++p;
        out.append(run, static_cast<size_t>(p - run));
        continue;
      }
      ++p;
      const char c = *p++;
      switch (c) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        default: {  // 'u', validated: a BMP code point or a surrogate pair
          uint32_t cp = read_hex4(p);
          p += 4;
          if (cp >= 0xd800 && cp <= 0xdbff) {
            const uint32_t low = read_hex4(p + 2);
            p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          append_utf8(out, cp);
        }
      }
    }
  }

 private:
  static uint32_t read_hex4(const char* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = v * 16 + static_cast<uint32_t>(hex_value(p[i]));
    return v;
  }

  bool fail(const char* why) {
    error_ = why;
    return false;
  }

  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) ++p_;
  }

  bool parse_value(Slot& slot, int depth) {
    if (p_ == end_) return fail("expected a value");
    switch (*p_) {
      case '"': return parse_string(slot);
      case '{':
      case '[': {
        if (depth >= kJsonDepthMax) return fail("nesting deeper than 64 levels");
        slot.kind = *p_ == '{' ? Kind::object : Kind::array;
        return skip_container(depth);
      }
      case 't': return parse_literal("true", Kind::boolean_true, slot);
      case 'f': return parse_literal("false", Kind::boolean_false, slot);
      case 'n': return parse_literal("null", Kind::null, slot);
      default:
        if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) return parse_number(slot);
        return fail("invalid JSON value");
    }
  }

  template <size_t kSize>
  bool parse_literal(const char (&word)[kSize], Kind kind, Slot& slot) {
    constexpr size_t n = kSize - 1;
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return fail("invalid JSON literal");
    p_ += n;
    slot.kind = kind;
    return true;
  }

  bool skip_container(int depth) {
    const bool is_object = *p_ == '{';
    ++p_;
    skip_ws();
    const char close = is_object ? '}' : ']';
    if (p_ < end_ && *p_ == close) {
      ++p_;
      return true;
    }
    for (;;) {
      skip_ws();
      if (is_object) {
        Slot key{};
        if (p_ == end_ || *p_ != '"') return fail("expected a string key");
        if (!parse_string(key)) return false;
        skip_ws();
        if (p_ == end_ || *p_ != ':') return fail("expected ':' after a key");
        ++p_;
        skip_ws();
      }
      Slot inner{};
      if (!parse_value(inner, depth + 1)) return false;
      skip_ws();
      if (p_ == end_) return fail(is_object ? "unterminated object" : "unterminated array");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == close) {
        ++p_;
        return true;
      }
      return fail(is_object ? "expected ',' or '}' in an object" : "expected ',' or ']' in an array");
    }
  }

  // Validates a string (escapes, UTF-8, no raw control characters) and records its content.
  bool parse_string(Slot& slot) {
    ++p_;  // the opening quote
    slot.kind = Kind::string;
    slot.escaped = false;
    slot.begin = p_;
    for (;;) {
      // The fast path: plain ASCII, eight bytes at a time while no byte is a quote, a
      // backslash, a control character or non-ASCII (the classic SWAR byte tests).
      while (end_ - p_ >= 8) {
        uint64_t word;
        std::memcpy(&word, p_, sizeof word);
        constexpr uint64_t kOnes = 0x0101010101010101ULL;
        constexpr uint64_t kHighs = 0x8080808080808080ULL;
        const uint64_t quote = word ^ (kOnes * '"');
        const uint64_t backslash = word ^ (kOnes * '\\');
        const uint64_t special = ((quote - kOnes) & ~quote) | ((backslash - kOnes) & ~backslash) |
                                 ((word - kOnes * 0x20) & ~word) | word;
        if ((special & kHighs) != 0) break;
        p_ += 8;
      }
      while (p_ < end_) {
        const unsigned char c = static_cast<unsigned char>(*p_);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++p_;
      }
      if (p_ == end_) return fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        slot.end = p_;
        ++p_;
        return true;
      }
      if (c < 0x20) return fail("control character in a string");
      if (c == '\\') {
        slot.escaped = true;
        if (!parse_escape()) return false;
        continue;
      }
      if (!parse_utf8()) return false;
    }
  }

  bool parse_escape() {
    ++p_;  // the backslash
    if (p_ == end_) return fail("unterminated string");
    const char c = *p_++;
    switch (c) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': return true;
      case 'u': {
        uint32_t cp = 0;
        if (!hex4(cp)) return false;
        if (cp >= 0xdc00 && cp <= 0xdfff) return fail("lone low surrogate in a \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return fail("lone high surrogate in a \\u escape");
          p_ += 2;
          uint32_t low = 0;
          if (!hex4(low)) return false;
          if (low < 0xdc00 || low > 0xdfff) return fail("high surrogate not followed by a low one");
        }
        return true;
      }
      default: return fail("invalid escape in a string");
    }
  }

  bool hex4(uint32_t& cp) {
    if (end_ - p_ < 4) return fail("truncated \\u escape");
    for (int i = 0; i < 4; ++i) {
      const int v = hex_value(p_[i]);
      if (v < 0) return fail("invalid hex digit in a \\u escape");
      cp = cp * 16 + static_cast<uint32_t>(v);
    }
    p_ += 4;
    return true;
  }

  // One multi-byte UTF-8 sequence: no overlong forms, no surrogates, nothing past U+10FFFF.
  bool parse_utf8() {
    const auto byte = [&](ptrdiff_t i) { return static_cast<unsigned char>(p_[i]); };
    const unsigned char c = byte(0);
    int length = 0;
    uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      length = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      length = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      length = 4;
      cp = c & 0x07;
    } else {
      return fail("invalid UTF-8 in a string");
    }
    if (end_ - p_ < length) return fail("invalid UTF-8 in a string");
    for (int i = 1; i < length; ++i) {
      if ((byte(i) & 0xc0) != 0x80) return fail("invalid UTF-8 in a string");
      cp = (cp << 6) | (byte(i) & 0x3f);
    }
    if ((length == 3 && cp < 0x800) || (length == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return fail("invalid UTF-8 in a string");
    p_ += length;
    return true;
  }

  bool parse_number(Slot& slot) {
    slot.kind = Kind::number;
    slot.begin = p_;
    if (*p_ == '-') ++p_;
    if (p_ == end_) return fail("invalid number");
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    } else {
      return fail("invalid number");
    }
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return fail("invalid number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return fail("invalid number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    slot.end = p_;
    return true;
  }

  const char* p_;
  const char* end_;
  std::string error_;
};

// A validated JSON number as an int64, if it denotes an integer in range (1e3 and 7.0 do).
bool number_to_int64(const Slot& slot, int64_t& out) {
  const char* p = slot.begin;
  const char* end = slot.end;
  bool negative = false;
  if (*p == '-') {
    negative = true;
    ++p;
  }
  char digits[24];
  int n = 0;
  int64_t scale = 0;  // value = digits * 10^scale
  bool nonzero_seen = false;
  auto push_digit = [&](char c) {
    if (c == '0' && !nonzero_seen) return true;  // leading zeros carry nothing
    nonzero_seen = true;
    if (n >= 20) return false;
    digits[n++] = c;
    return true;
  };
  while (p < end && *p >= '0' && *p <= '9') {
    if (!push_digit(*p++)) return false;
  }
  if (p < end && *p == '.') {
    ++p;
    while (p < end && *p >= '0' && *p <= '9') {
      if (nonzero_seen || *p != '0') {
        if (!push_digit(*p)) return false;
      }
      ++p;
      --scale;
    }
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    bool exp_negative = false;
    if (*p == '+' || *p == '-') exp_negative = *p++ == '-';
    int64_t exponent = 0;
    while (p < end) {
      if (exponent < 100000) exponent = exponent * 10 + (*p - '0');
      ++p;
    }
    scale += exp_negative ? -exponent : exponent;
  }
  if (n == 0) {  // the value is zero, whatever the exponent
    out = 0;
    return true;
  }
  // Fractional digits must all be zero; drop them.
  while (scale < 0) {
    if (digits[n - 1] != '0') return false;
    --n;
    ++scale;
    if (n == 0) {
      out = 0;
      return true;
    }
  }
  if (n + scale > 19) return false;
  uint64_t magnitude = 0;
  for (int i = 0; i < n; ++i) magnitude = magnitude * 10 + static_cast<uint64_t>(digits[i] - '0');
  for (int64_t i = 0; i < scale; ++i) magnitude *= 10;
  const uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
  if (magnitude > limit) return false;
  out = negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude);
  return true;
}

Error missing(Field f, EventType type) {
  return make_error(ErrorCode::bad_input, std::string("missing required field \"") + kFieldNames[f] +
                                              "\" for type \"" + to_string(type) + "\"");
}

Error wrong_type(Field f, const char* expected) {
  return make_error(ErrorCode::bad_input,
                    std::string("field \"") + kFieldNames[f] + "\" must be " + expected);
}

// A string field as a view of the line, or of `buffer` when it has escapes to decode.
Status read_string(const Slot (&slots)[f_count], Field f, EventType type, std::string& buffer, std::string_view& out) {
  const Slot& s = slots[f];
  if (s.kind == Kind::none) return missing(f, type);
  if (s.kind != Kind::string) return wrong_type(f, "a string");
  if (s.escaped) {
    Parser::decode_string(s, buffer);
    out = buffer;
  } else {
    out = std::string_view(s.begin, static_cast<size_t>(s.end - s.begin));
  }
  return {};
}

Status read_int(const Slot (&slots)[f_count], Field f, EventType type, int64_t& out) {
  const Slot& s = slots[f];
  if (s.kind == Kind::none) return missing(f, type);
  if (s.kind != Kind::number) return wrong_type(f, "an integer");
  // The fast path: plain digits.
  const char* p = s.begin;
  bool negative = *p == '-';
  if (negative) ++p;
  const size_t n = static_cast<size_t>(s.end - p);
  if (n > 0 && n <= 18) {
    int64_t v = 0;
    bool plain = true;
    for (const char* q = p; q < s.end; ++q) {
      if (*q < '0' || *q > '9') {
        plain = false;
        break;
      }
      v = v * 10 + (*q - '0');
    }
    if (plain) {
      out = negative ? -v : v;
      return {};
    }
  }
  if (!number_to_int64(s, out)) return wrong_type(f, "an integer in the signed 64-bit range");
  return {};
}

Status read_bool(const Slot (&slots)[f_count], Field f, EventType type, bool& out) {
  const Slot& s = slots[f];
  if (s.kind == Kind::none) return missing(f, type);
  if (s.kind == Kind::boolean_true) {
    out = true;
  } else if (s.kind == Kind::boolean_false) {
    out = false;
  } else {
    return wrong_type(f, "true or false");
  }
  return {};
}

bool present(const Slot& s) { return s.kind != Kind::none && s.kind != Kind::null; }


// ---- The fast path ----
// Histories are written by to_jsonl (or by writers like it): one flat object, no whitespace,
// strings of printable ASCII without escapes, integers of at most 18 digits, true/false. Such a
// line is scanned once, left to right, with no per-field bookkeeping beyond a kind per known
// field. The moment a line steps outside that shape (whitespace, an escape, a non-ASCII byte, a
// fraction, null, a nested value, a missing or mistyped field, an unknown type) the fast path
// gives up and the general parser judges the line from the start, so every error message and
// every unusual-but-valid line is exactly as before. What the fast path accepts is valid JSON and
// it reads it exactly as the general parser would (the parser test compares the two).

enum class PlainKind : uint8_t { none, string, integer, boolean_true, boolean_false };

// A string_view without a default constructor, so that a PlainFields costs nothing to create
// (only `kind` is cleared; text and number are read only where kind says they were set).
struct PlainText {
  const char* data;
  size_t size;
  PlainText& operator=(std::string_view v) {
    data = v.data();
    size = v.size();
    return *this;
  }
  operator std::string_view() const { return std::string_view(data, size); }
};

struct PlainFields {
  PlainKind kind[f_count];
  PlainText text[f_count];
  int64_t number[f_count];
};

// The first byte at or after p that is a quote, a backslash, a control character or non-ASCII:
// the closing quote of a plain string, or nullptr when the string is not plain (or the line
// ends first). The line's last byte is '}', so an unterminated string also gives nullptr.
inline const char* scan_plain_string(const char* p, const char* end) {
#if defined(__SSE2__)
  // Sixteen bytes a step: a quote, a backslash, a control byte (unsigned < 0x20) or a byte with
  // the high bit set (negative as a signed char) ends the plain run.
  const __m128i quote16 = _mm_set1_epi8('"');
  const __m128i backslash16 = _mm_set1_epi8('\\');
  const __m128i space16 = _mm_set1_epi8(0x20);
  while (end - p >= 16) {
    const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i special = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(chunk, quote16), _mm_cmpeq_epi8(chunk, backslash16)),
        _mm_cmplt_epi8(chunk, space16));  // signed: catches both < 0x20 and >= 0x80
    const int mask = _mm_movemask_epi8(special);
    if (mask != 0) {
      p += __builtin_ctz(static_cast<unsigned>(mask));
      return *p == '"' ? p : nullptr;
    }
    p += 16;
  }
#endif
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHighs = 0x8080808080808080ULL;
  while (end - p >= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof word);
    const uint64_t quote = word ^ (kOnes * '"');
    const uint64_t backslash = word ^ (kOnes * '\\');
    // Exact for the lowest flagged byte (borrows only flag bytes above a true hit).
    const uint64_t special =
        (((quote - kOnes) & ~quote) | ((backslash - kOnes) & ~backslash) | ((word - kOnes * 0x20) & ~word) | word) &
        kHighs;
    if (special != 0) {
      p += __builtin_ctzll(special) / 8;
      return *p == '"' ? p : nullptr;
    }
    p += 8;
  }
  for (; p < end; ++p) {
    const unsigned char c = static_cast<unsigned char>(*p);
    if (c == '"') return p;
    if (c == '\\' || c < 0x20 || c >= 0x80) return nullptr;
  }
  return nullptr;
}

// scan_plain_string for a string that is usually 64 bytes long (a body: the simulator writes a
// 64-hex digest): when the 65th byte is a quote, the 64 before it are checked with four loads
// and one branch instead of the loop's five steps with a branch each. The result is exactly
// scan_plain_string's: the closing quote when those 64 bytes are plain, otherwise the loop's.
inline const char* scan_plain_string_of_64(const char* p, const char* end) {
#if defined(__SSE2__)
  if (end - p > 64 && p[64] == '"') {
    const __m128i quote16 = _mm_set1_epi8('"');
    const __m128i backslash16 = _mm_set1_epi8('\\');
    const __m128i space16 = _mm_set1_epi8(0x20);
    const auto special = [&](int offset) {
      const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + offset));
      return _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(chunk, quote16), _mm_cmpeq_epi8(chunk, backslash16)),
                          _mm_cmplt_epi8(chunk, space16));
    };
    const __m128i any = _mm_or_si128(_mm_or_si128(special(0), special(16)), _mm_or_si128(special(32), special(48)));
    if (_mm_movemask_epi8(any) == 0) return p + 64;
  }
#endif
  return scan_plain_string(p, end);
}

// scan_plain_string for an id (a few bytes: "u7426.2", "m74"): the first 16-byte step inline,
// where it nearly always finds the closing quote, the call only for a longer string. The result
// is exactly scan_plain_string's (its loop would go on at p + 16 the same way).
[[gnu::always_inline]] inline const char* scan_plain_string_short(const char* p, const char* end) {
#if defined(__SSE2__)
  if (end - p >= 16) {
    const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i special =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(chunk, _mm_set1_epi8('"')), _mm_cmpeq_epi8(chunk, _mm_set1_epi8('\\'))),
                     _mm_cmplt_epi8(chunk, _mm_set1_epi8(0x20)));
    const int mask = _mm_movemask_epi8(special);
    if (mask != 0) {
      p += __builtin_ctz(static_cast<unsigned>(mask));
      return *p == '"' ? p : nullptr;
    }
    return scan_plain_string(p + 16, end);
  }
#endif
  return scan_plain_string(p, end);
}

inline std::optional<EventType> plain_type(std::string_view name) {
  switch (name.size()) {
    case 3:
      if (name == "ack") return EventType::ack;
      if (name == "end") return EventType::end;
      break;
    case 4:
      if (name == "send") return EventType::send;
      if (name == "read") return EventType::read;
      if (name == "join") return EventType::join;
      if (name == "heal") return EventType::heal;
      break;
    case 5:
      if (name == "leave") return EventType::leave;
      if (name == "fault") return EventType::fault;
      break;
    case 6:
      if (name == "reject") return EventType::reject;
      if (name == "expire") return EventType::expire;
      if (name == "online") return EventType::online;
      break;
    case 7:
      if (name == "deliver") return EventType::deliver;
      if (name == "receipt") return EventType::receipt;
      if (name == "offline") return EventType::offline;
      break;
    case 13:
      if (name == "decrypt_error") return EventType::decrypt_error;
      break;
    default: break;
  }
  return std::nullopt;
}

// The bytes of a key of 1 to 16 bytes as two words (overlapping loads for 4..16 bytes), so a
// key compares with a known name in two integer comparisons. Same size, same words: same bytes.
struct KeyWords {
  uint64_t first;
  uint64_t last;
  bool operator==(const KeyWords&) const = default;
};
constexpr uint64_t little_endian(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}
constexpr KeyWords key_words(const char* p, size_t n) {
  if (n >= 8) return {little_endian(p, 8), little_endian(p + n - 8, 8)};
  if (n >= 4) return {little_endian(p, 4), little_endian(p + n - 4, 4)};
  return {little_endian(p, n), 0};
}
// `bytes` (4 or 8) bytes at p as a little-endian word, as key_words builds them.
[[gnu::always_inline]] inline uint64_t load_word(const char* p, size_t bytes) {
  uint64_t v = 0;
  std::memcpy(&v, p, bytes);
  return v;
}
inline KeyWords load_key_words(const char* p, size_t n) {
  auto load = [](const char* q, size_t bytes) {
    uint64_t v = 0;
    std::memcpy(&v, q, bytes);  // little-endian, as key_words builds them
    return v;
  };
  if (n >= 8) return {load(p, 8), load(p + n - 8, 8)};
  if (n >= 4) return {load(p, 4), load(p + n - 4, 4)};
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return {v, 0};
}
template <size_t kSize>
constexpr KeyWords name_words(const char (&name)[kSize]) {
  return key_words(name, kSize - 1);
}

// field_of for the plain path: whole-word comparisons instead of memcmp calls.
inline Field plain_field_of(const char* key, size_t n) {
  if (n == 0 || n > 10) return f_unknown;
  const KeyWords w = load_key_words(key, n);
  switch (n) {
    case 1: return w == name_words("t") ? f_t : f_unknown;
    case 2: return w == name_words("to") ? f_to : f_unknown;
    case 3: return w == name_words("msg") ? f_msg : w == name_words("seq") ? f_seq : f_unknown;
    case 4:
      if (w == name_words("type")) return f_type;
      if (w == name_words("user")) return f_user;
      if (w == name_words("conv")) return f_conv;
      if (w == name_words("body")) return f_body;
      if (w == name_words("from")) return f_from;
      if (w == name_words("kind")) return f_kind;
      if (w == name_words("name")) return f_name;
      return f_unknown;
    case 5: return w == name_words("up_to") ? f_up_to : f_unknown;
    case 6:
      if (w == name_words("device")) return f_device;
      if (w == name_words("reason")) return f_reason;
      if (w == name_words("reader")) return f_reader;
      return f_unknown;
    case 9:
      if (w == name_words("view_once")) return f_view_once;
      if (w == name_words("quiescent")) return f_quiescent;
      return f_unknown;
    case 10: return w == name_words("expires_at") ? f_expires_at : f_unknown;
    default: return f_unknown;
  }
}

// Scans the line into `fields`; false when it is not of the plain shape.
bool scan_plain_line(std::string_view line, PlainFields& fields) {
  const char* p = line.data();
  const char* const end = p + line.size();
  if (line.size() < 2 || p[0] != '{' || end[-1] != '}') return false;
  ++p;
  for (;;) {
    if (*p != '"') return false;  // also an empty object: the general parser names what is missing
    const char* key = ++p;
    p = scan_plain_string(p, end);
    if (p == nullptr) return false;
    const auto key_size = static_cast<size_t>(p - key);
    ++p;
    if (end - p < 2 || *p != ':') return false;  // a value and a '}' must follow
    ++p;
    const Field field = plain_field_of(key, key_size);
    PlainKind kind;
    const char c = *p;
    if (c == '"') {
      const char* begin = ++p;
      p = scan_plain_string(p, end);
      if (p == nullptr) return false;
      kind = PlainKind::string;
      if (field != f_unknown) fields.text[field] = std::string_view(begin, static_cast<size_t>(p - begin));
      ++p;
    } else if ((c >= '0' && c <= '9') || c == '-') {
      const bool negative = c == '-';
      if (negative) ++p;
      int64_t value = 0;
      if (*p == '0') {
        ++p;
      } else if (*p >= '1' && *p <= '9') {
        const char* digits = p;
        while (*p >= '0' && *p <= '9') value = value * 10 + (*p++ - '0');  // '}' ends the line
        if (p - digits > 18) return false;  // may not fit: the general parser decides
      } else {
        return false;
      }
      kind = PlainKind::integer;
      if (field != f_unknown) fields.number[field] = negative ? -value : value;
    } else if (c == 't' && end - p >= 4 && std::memcmp(p, "true", 4) == 0) {
      p += 4;
      kind = PlainKind::boolean_true;
    } else if (c == 'f' && end - p >= 5 && std::memcmp(p, "false", 5) == 0) {
      p += 5;
      kind = PlainKind::boolean_false;
    } else {
      return false;
    }
    if (field != f_unknown) fields.kind[field] = kind;  // a repeated key: the last one wins
    if (*p == ',') {
      ++p;
      continue;
    }
    return *p == '}' && p + 1 == end;
  }
}

// ---- The canonical path ----
// Most histories are written by to_jsonl itself, whose lines have each type's fields in one
// fixed order. Such a line is read against that order: the bytes between two values (`,"key":`)
// are compared with the expected ones as two whole words, string values end at the quote found
// by scan_plain_string, and no key is looked up. The first byte that differs from the expected
// shape sends the line to scan_plain_line, which reads it from the start as before, so this path
// only has to be right on the lines it accepts: it fills PlainFields exactly as scan_plain_line
// would for them (the parser test and the fuzz target hold the result to the general parser).

enum class CanonValue : uint8_t { string, integer, boolean };

// `,"key":` as two possibly overlapping words (5 to 16 bytes).
struct CanonKey {
  uint64_t first;
  uint64_t last;
  uint8_t size;
};

constexpr CanonKey canon_key(const char* name) {
  char text[16] = {};
  size_t n = 0;
  text[n++] = ',';
  text[n++] = '"';
  for (size_t i = 0; name[i] != '\0'; ++i) text[n++] = name[i];
  text[n++] = '"';
  text[n++] = ':';
  const KeyWords w = key_words(text, n);
  return CanonKey{w.first, w.last, static_cast<uint8_t>(n)};
}

struct CanonField {
  Field field;
  CanonValue value;
  bool optional;  // to_jsonl writes it only when set
  CanonKey key;
};

constexpr CanonField canon(Field field, CanonValue value, bool optional = false) {
  return CanonField{field, value, optional, canon_key(kFieldNames[field])};
}

constexpr CanonValue kStr = CanonValue::string;
constexpr CanonValue kInt = CanonValue::integer;
constexpr CanonValue kBool = CanonValue::boolean;

// to_jsonl's order for each type (after "type"), indexed by EventType.
constexpr size_t kCanonFieldsMax = 9;
struct CanonShape {
  uint8_t count;
  CanonField fields[kCanonFieldsMax];
};
constexpr CanonShape kCanonShapes[kEventTypeCount] = {
    /* send */ {9, {canon(f_t, kInt), canon(f_user, kStr), canon(f_device, kStr), canon(f_conv, kStr),
                    canon(f_msg, kStr), canon(f_body, kStr), canon(f_to, kStr, true),
                    canon(f_expires_at, kInt, true), canon(f_view_once, kBool, true)}},
    /* ack */ {5, {canon(f_t, kInt), canon(f_device, kStr), canon(f_conv, kStr), canon(f_msg, kStr), canon(f_seq, kInt)}},
    /* reject */
    {5, {canon(f_t, kInt), canon(f_device, kStr), canon(f_conv, kStr), canon(f_msg, kStr), canon(f_reason, kStr)}},
    /* deliver */
    {8, {canon(f_t, kInt), canon(f_user, kStr), canon(f_device, kStr), canon(f_conv, kStr), canon(f_msg, kStr),
         canon(f_seq, kInt), canon(f_from, kStr), canon(f_body, kStr)}},
    /* read */ {5, {canon(f_t, kInt), canon(f_user, kStr), canon(f_device, kStr), canon(f_conv, kStr), canon(f_up_to, kInt)}},
    /* receipt */
    {6, {canon(f_t, kInt), canon(f_device, kStr), canon(f_conv, kStr), canon(f_reader, kStr), canon(f_kind, kStr),
         canon(f_up_to, kInt)}},
    /* join */ {4, {canon(f_t, kInt), canon(f_conv, kStr), canon(f_user, kStr), canon(f_seq, kInt)}},
    /* leave */ {4, {canon(f_t, kInt), canon(f_conv, kStr), canon(f_user, kStr), canon(f_seq, kInt)}},
    /* expire */ {3, {canon(f_t, kInt), canon(f_device, kStr), canon(f_msg, kStr)}},
    /* decrypt_error */
    {5, {canon(f_t, kInt), canon(f_device, kStr), canon(f_conv, kStr), canon(f_msg, kStr), canon(f_reason, kStr)}},
    /* online */ {3, {canon(f_t, kInt), canon(f_user, kStr), canon(f_device, kStr)}},
    /* offline */ {3, {canon(f_t, kInt), canon(f_user, kStr), canon(f_device, kStr)}},
    /* fault */ {2, {canon(f_t, kInt), canon(f_name, kStr)}},
    /* heal */ {2, {canon(f_t, kInt), canon(f_name, kStr)}},
    /* end */ {2, {canon(f_t, kInt), canon(f_quiescent, kBool)}},
};
static_assert(static_cast<int>(EventType::end) == kEventTypeCount - 1, "kCanonShapes is indexed by EventType");

// The digit run at p (which starts with a digit) as a number, 8 digits a step while 8 bytes
// remain: a byte is a digit when its high nibble is 3 and adding 6 keeps it so. Returns the
// byte after the run, or nullptr when the run has more than 18 digits (it may not fit: the
// general parser decides). The line's last byte is '}', so a run always ends inside it.
constexpr uint64_t kDigitOnes = 0x0101010101010101ULL;
// Bits set in each byte of `word` that is not a digit: exact for the lowest such byte (adding 6
// carries into the next byte only from a byte of 0xFA or more, which is not a digit itself).
[[gnu::always_inline]] inline uint64_t not_digit_bytes(uint64_t word) {
  return ((word & (kDigitOnes * 0xF0)) ^ (kDigitOnes * 0x30)) |
         (((word + kDigitOnes * 0x06) & (kDigitOnes * 0xF0)) ^ (kDigitOnes * 0x30));
}
// The value of the `digits` (1 to 8) digits in the low bytes of `word`: moved to the top bytes
// (zeros below are leading zeros), then summed in pairs, fours and eights. Bytes above the run
// may be anything: subtracting '0' borrows only upward, and they are shifted out.
[[gnu::always_inline]] inline uint64_t digits_value(uint64_t word, size_t digits) {
  uint64_t v = (word - kDigitOnes * 0x30) << (8 * (8 - digits));
  v = ((v & 0x0F0F0F0F0F0F0F0FULL) * 2561) >> 8;
  v = ((v & 0x00FF00FF00FF00FFULL) * 6553601) >> 16;
  return ((v & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32;
}
constexpr uint64_t kPow10[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};
// read_digits's general case, out of line: its loop needs registers that the common case (a
// run of up to 15 digits with 16 bytes to read) would otherwise save and restore on every call.
[[gnu::noinline]] const char* read_digits_loop(const char* p, const char* end, int64_t& out) {
  uint64_t value = 0;
  size_t total = 0;
  while (end - p >= 8) {
    const uint64_t word = load_word(p, 8);
    const uint64_t not_digit = not_digit_bytes(word);
    const size_t digits = not_digit == 0 ? 8 : static_cast<size_t>(__builtin_ctzll(not_digit)) / 8;
    if (digits > 0) {
      total += digits;
      if (total > 18) return nullptr;
      value = value * kPow10[digits] + digits_value(word, digits);
      p += digits;
    }
    if (digits < 8) {
      out = static_cast<int64_t>(value);
      return p;
    }
  }
  while (*p >= '0' && *p <= '9') {
    if (++total > 18) return nullptr;
    value = value * 10 + static_cast<uint64_t>(*p++ - '0');
  }
  out = static_cast<int64_t>(value);
  return p;
}
[[gnu::always_inline]] inline const char* read_digits(const char* p, const char* end, int64_t& out) {
  // Runs of up to 15 digits (every time and seq of a simulated history) in one or two words,
  // without the loop's per-step bookkeeping; the same values as the loop.
  if (end - p >= 16) {
    const uint64_t first = load_word(p, 8);
    const uint64_t first_not_digit = not_digit_bytes(first);
    if (first_not_digit != 0) {
      const size_t digits = static_cast<size_t>(__builtin_ctzll(first_not_digit)) / 8;  // >= 1
      out = static_cast<int64_t>(digits_value(first, digits));
      return p + digits;
    }
    const uint64_t second = load_word(p + 8, 8);
    const uint64_t second_not_digit = not_digit_bytes(second);
    if (second_not_digit != 0) {
      const size_t digits = static_cast<size_t>(__builtin_ctzll(second_not_digit)) / 8;
      const uint64_t high = digits_value(first, 8);
      out = static_cast<int64_t>(digits == 0 ? high : high * kPow10[digits] + digits_value(second, digits));
      return p + 8 + digits;
    }
  }
  return read_digits_loop(p, end, out);
}

// Whether `key` is at p; the caller has checked that key.size bytes are there.
[[gnu::always_inline]] inline bool at_canon_key(const char* p, const CanonKey& key) {
  if (key.size >= 8) return load_word(p, 8) == key.first && load_word(p + key.size - 8, 8) == key.last;
  return load_word(p, 4) == key.first && load_word(p + key.size - 4, 4) == key.last;
}

// The start every canonical line shares: {"type":" and at least a type, its quote and '}'.
// Returns the type and sets `name` to its text and `p` to the byte after its closing quote;
// nothing when the line does not start so.
inline std::optional<EventType> scan_canonical_type(std::string_view line, std::string_view& name, const char*& p) {
  const char* const end = line.data() + line.size();
  static constexpr char kTypeKey[] = "{\"type\":\"";
  constexpr size_t kTypeKeySize = sizeof kTypeKey - 1;
  if (line.size() < kTypeKeySize + 3 || load_word(line.data(), 8) != little_endian(kTypeKey, 8) ||
      line[8] != '"' || end[-1] != '}')
    return std::nullopt;
  const char* const first = line.data() + kTypeKeySize;
  const char* const quote = scan_plain_string(first, end);
  if (quote == nullptr) return std::nullopt;
  name = std::string_view(first, static_cast<size_t>(quote - first));
  p = quote + 1;
  return plain_type(name);
}

// An integer value of a canonical line (scan_canonical_line, read_canon_field,
// read_straight_from): '-'?, then 0 or up to 18 digits without a leading 0. Returns the byte
// after it, or nullptr.
[[gnu::always_inline]] inline const char* read_canon_int(const char* p, const char* end, int64_t& out) {
  const bool negative = *p == '-';
  if (negative) ++p;
  int64_t value = 0;
  if (*p == '0') {
    ++p;
  } else if (*p >= '1' && *p <= '9') {
    p = read_digits(p, end, value);
    if (p == nullptr) return nullptr;
  } else {
    return nullptr;
  }
  out = negative ? -value : value;
  return p;
}

// Reads a line of to_jsonl's shape into `fields` and its type into `type`; false at the first
// byte that is not of that shape (then `fields` is in no particular state).
bool scan_canonical_line(std::string_view line, PlainFields& fields, EventType& type) {
  const char* const end = line.data() + line.size();
  const char* p = nullptr;
  std::string_view name;
  const std::optional<EventType> parsed_type = scan_canonical_type(line, name, p);
  if (!parsed_type) return false;
  type = *parsed_type;
  fields.kind[f_type] = PlainKind::string;
  fields.text[f_type] = name;
  const CanonShape& shape = kCanonShapes[static_cast<size_t>(type)];
  for (size_t i = 0; i < shape.count; ++i) {
    const CanonField& f = shape.fields[i];
    // The key, at least one byte of value, and the final '}'.
    if (end - p < f.key.size + 2 || !at_canon_key(p, f.key)) {
      if (f.optional) continue;
      return false;
    }
    p += f.key.size;
    switch (f.value) {
      case CanonValue::string: {
        if (*p != '"') return false;
        const char* begin = ++p;
        p = scan_plain_string(p, end);
        if (p == nullptr) return false;
        fields.text[f.field] = std::string_view(begin, static_cast<size_t>(p - begin));
        fields.kind[f.field] = PlainKind::string;
        ++p;
        break;
      }
      case CanonValue::integer: {
        // As scan_plain_line reads integers.
        int64_t value = 0;
        p = read_canon_int(p, end, value);
        if (p == nullptr) return false;
        fields.number[f.field] = value;
        fields.kind[f.field] = PlainKind::integer;
        break;
      }
      case CanonValue::boolean:
        if (end - p >= 4 && std::memcmp(p, "true", 4) == 0) {
          p += 4;
          fields.kind[f.field] = PlainKind::boolean_true;
        } else if (end - p >= 5 && std::memcmp(p, "false", 5) == 0) {
          p += 5;
          fields.kind[f.field] = PlainKind::boolean_false;
        } else {
          return false;
        }
        break;
    }
  }
  return p + 1 == end;  // end[-1] is '}'
}

// The plain-shaped line as an event; false (and `out` in no particular state) when the line is
// not plain or its fields do not make a valid event, for the general parser to explain.
bool parse_plain_line(std::string_view line, EventView& out) {
  PlainFields f;
  std::memset(f.kind, 0, sizeof f.kind);
  std::optional<EventType> type;
  EventType canonical_type = EventType::send;
  if (scan_canonical_line(line, f, canonical_type)) {
    type = canonical_type;
  } else {
    std::memset(f.kind, 0, sizeof f.kind);
    if (!scan_plain_line(line, f)) return false;
    if (f.kind[f_type] != PlainKind::string || f.kind[f_t] != PlainKind::integer) return false;
    type = plain_type(f.text[f_type]);
    if (!type) return false;
  }
  auto is = [&](Field field, PlainKind kind) { return f.kind[field] == kind; };
  auto strings = [&](std::initializer_list<Field> list) {
    for (const Field field : list)
      if (!is(field, PlainKind::string)) return false;
    return true;
  };
  out = EventView{};
  out.type = *type;
  out.t = f.number[f_t];
  switch (*type) {
    case EventType::send:
      if (!strings({f_user, f_device, f_conv, f_msg, f_body})) return false;
      if (is(f_to, PlainKind::string)) {
        out.to = f.text[f_to];
      } else if (!is(f_to, PlainKind::none)) {
        return false;
      }
      if (is(f_expires_at, PlainKind::integer)) {
        out.expires_at = f.number[f_expires_at];
      } else if (!is(f_expires_at, PlainKind::none)) {
        return false;
      }
      if (is(f_view_once, PlainKind::boolean_true)) {
        out.view_once = true;
      } else if (!is(f_view_once, PlainKind::boolean_false) && !is(f_view_once, PlainKind::none)) {
        return false;
      }
      break;
    case EventType::ack:
      if (!strings({f_device, f_conv, f_msg}) || !is(f_seq, PlainKind::integer)) return false;
      out.seq = f.number[f_seq];
      break;
    case EventType::reject:
    case EventType::decrypt_error:
      if (!strings({f_device, f_conv, f_msg, f_reason})) return false;
      out.reason = f.text[f_reason];
      break;
    case EventType::deliver:
      if (!strings({f_user, f_device, f_conv, f_msg, f_from, f_body}) || !is(f_seq, PlainKind::integer)) return false;
      out.seq = f.number[f_seq];
      out.from = f.text[f_from];
      break;
    case EventType::read:
      if (!strings({f_user, f_device, f_conv}) || !is(f_up_to, PlainKind::integer)) return false;
      out.up_to = f.number[f_up_to];
      break;
    case EventType::receipt:
      if (!strings({f_device, f_conv, f_reader, f_kind}) || !is(f_up_to, PlainKind::integer)) return false;
      if (std::string_view(f.text[f_kind]) == "delivered") {
        out.kind = ReceiptKind::delivered;
      } else if (std::string_view(f.text[f_kind]) == "read") {
        out.kind = ReceiptKind::read;
      } else {
        return false;
      }
      out.reader = f.text[f_reader];
      out.up_to = f.number[f_up_to];
      break;
    case EventType::join:
    case EventType::leave:
      if (!strings({f_conv, f_user}) || !is(f_seq, PlainKind::integer)) return false;
      out.seq = f.number[f_seq];
      break;
    case EventType::expire:
      if (!strings({f_device, f_msg})) return false;
      break;
    case EventType::online:
    case EventType::offline:
      if (!strings({f_user, f_device})) return false;
      break;
    case EventType::fault:
    case EventType::heal:
      if (!strings({f_name})) return false;
      out.name = f.text[f_name];
      break;
    case EventType::end:
      if (is(f_quiescent, PlainKind::boolean_true)) {
        out.quiescent = true;
      } else if (!is(f_quiescent, PlainKind::boolean_false)) {
        return false;
      }
      break;
  }
  // The fields each type reads, checked present above; the others stay empty as the general
  // parser leaves them.
  switch (*type) {
    case EventType::send:
      out.body = f.text[f_body];
      [[fallthrough]];
    case EventType::read:
      out.user = f.text[f_user];
      out.device = f.text[f_device];
      out.conv = f.text[f_conv];
      if (*type == EventType::send) out.msg = f.text[f_msg];
      break;
    case EventType::deliver:
      out.body = f.text[f_body];
      out.user = f.text[f_user];
      out.device = f.text[f_device];
      out.conv = f.text[f_conv];
      out.msg = f.text[f_msg];
      break;
    case EventType::ack:
    case EventType::reject:
    case EventType::decrypt_error:
      out.device = f.text[f_device];
      out.conv = f.text[f_conv];
      out.msg = f.text[f_msg];
      break;
    case EventType::receipt:
      out.device = f.text[f_device];
      out.conv = f.text[f_conv];
      break;
    case EventType::join:
    case EventType::leave:
      out.conv = f.text[f_conv];
      out.user = f.text[f_user];
      break;
    case EventType::expire:
      out.device = f.text[f_device];
      out.msg = f.text[f_msg];
      break;
    case EventType::online:
    case EventType::offline:
      out.user = f.text[f_user];
      out.device = f.text[f_device];
      break;
    case EventType::fault:
    case EventType::heal:
    case EventType::end:
      break;
  }
  return true;
}

// ---- The compiled canonical path ----
// The same reading of to_jsonl's shapes as scan_canonical_line, with each type's field list
// unrolled at compile time: every key is compared with constants, every value read by code for
// its kind and stored straight into the EventView member it fills, so there is no table walk,
// no PlainFields in between and no second pass to check and copy the fields. It accepts exactly
// the lines scan_canonical_line accepts and that parse_plain_line then turns into an event (the
// canonical shapes carry every required field with its kind, so only a receipt's kind is left
// to check), and fills the same event; any other line returns false for parse_plain_line.

template <Field kField>
bool store_canon_string(EventView& out, std::string_view v) {
  if constexpr (kField == f_user) out.user = v;
  else if constexpr (kField == f_device) out.device = v;
  else if constexpr (kField == f_conv) out.conv = v;
  else if constexpr (kField == f_msg) out.msg = v;
  else if constexpr (kField == f_body) out.body = v;
  else if constexpr (kField == f_to) out.to = v;
  else if constexpr (kField == f_from) out.from = v;
  else if constexpr (kField == f_reason) out.reason = v;
  else if constexpr (kField == f_reader) out.reader = v;
  else if constexpr (kField == f_name) out.name = v;
  else if constexpr (kField == f_kind) {
    if (v == "delivered") {
      out.kind = ReceiptKind::delivered;
    } else if (v == "read") {
      out.kind = ReceiptKind::read;
    } else {
      return false;
    }
  } else {
    static_assert(kField == f_user, "not a string field of a canonical shape");
  }
  return true;
}

template <Field kField>
void store_canon_integer(EventView& out, int64_t v) {
  if constexpr (kField == f_t) out.t = v;
  else if constexpr (kField == f_seq) out.seq = v;
  else if constexpr (kField == f_up_to) out.up_to = v;
  else if constexpr (kField == f_expires_at) out.expires_at = v;
  else static_assert(kField == f_t, "not an integer field of a canonical shape");
}

template <Field kField>
void store_canon_boolean(EventView& out, bool v) {
  if constexpr (kField == f_view_once) out.view_once = v;
  else if constexpr (kField == f_quiescent) out.quiescent = v;
  else static_assert(kField == f_view_once, "not a boolean field of a canonical shape");
}

// A boolean value of a canonical line (read_canon_field, read_straight_from): `true` or
// `false`, stored as kField's value. Returns the byte after it, or nullptr. Each branch stores
// a constant, as the two readers did before they shared this.
template <Field kField>
[[gnu::always_inline]] inline const char* read_canon_boolean(const char* p, const char* end, EventView& out) {
  if (end - p >= 4 && std::memcmp(p, "true", 4) == 0) {
    store_canon_boolean<kField>(out, true);
    return p + 4;
  }
  if (end - p >= 5 && std::memcmp(p, "false", 5) == 0) {
    store_canon_boolean<kField>(out, false);
    return p + 5;
  }
  return nullptr;
}

// Field kIndex of type kType's shape at p: true when read (or when optional and absent).
template <size_t kType, size_t kIndex>
inline bool read_canon_field(const char*& p, const char* end, EventView& out) {
  static constexpr CanonField f = kCanonShapes[kType].fields[kIndex];
  if (end - p < f.key.size + 2 || !at_canon_key(p, f.key)) return f.optional;
  p += f.key.size;
  if constexpr (f.value == CanonValue::string) {
    if (*p != '"') return false;
    const char* begin = ++p;
    if constexpr (f.field == f_body) {
      p = scan_plain_string_of_64(p, end);
    } else {
      p = scan_plain_string_short(p, end);
    }
    if (p == nullptr) return false;
    if (!store_canon_string<f.field>(out, std::string_view(begin, static_cast<size_t>(p - begin)))) return false;
    ++p;
  } else if constexpr (f.value == CanonValue::integer) {
    int64_t value = 0;
    const char* after = read_canon_int(p, end, value);
    if (after == nullptr) return false;
    p = after;
    store_canon_integer<f.field>(out, value);
  } else {
    const char* after = read_canon_boolean<f.field>(p, end, out);
    if (after == nullptr) return false;
    p = after;
  }
  return true;
}

template <size_t kType>
inline bool read_canon_shape(const char*& p, const char* end, EventView& out) {
  return [&]<size_t... kIndex>(std::index_sequence<kIndex...>) {
    return (read_canon_field<kType, kIndex>(p, end, out) && ...);
  }(std::make_index_sequence<kCanonShapes[kType].count>{});
}

// Whether type kType's shape sets `field` on every line it reads (a field it does not name, or
// names as optional, keeps what the view had).
template <size_t kType>
constexpr bool canon_shape_always_sets(Field field) {
  for (size_t i = 0; i < kCanonShapes[kType].count; ++i) {
    if (kCanonShapes[kType].fields[i].field == field && !kCanonShapes[kType].fields[i].optional) return true;
  }
  return false;
}

// The view's slot is reused line after line: resets exactly the members that reading kType's
// shape may leave unset, which is `out = EventView{}` without the ~50 instructions of writing
// the whole 240-byte view (and reading a temporary) on every line.
// A view's defaults, known at compile time: a reset below stores constants (a `const EventView
// fresh{}` in the function was built on the stack on every line, ~35 instructions).
constexpr EventView kFreshView{};

template <size_t kType>
inline void reset_outside_canon_shape(EventView& out) {
  static_assert(sizeof(EventView) == 240, "a member was added to EventView: reset it here");
  constexpr const EventView& fresh = kFreshView;
  if constexpr (!canon_shape_always_sets<kType>(f_t)) out.t = fresh.t;
  if constexpr (!canon_shape_always_sets<kType>(f_user)) out.user = fresh.user;
  if constexpr (!canon_shape_always_sets<kType>(f_device)) out.device = fresh.device;
  if constexpr (!canon_shape_always_sets<kType>(f_conv)) out.conv = fresh.conv;
  if constexpr (!canon_shape_always_sets<kType>(f_msg)) out.msg = fresh.msg;
  if constexpr (!canon_shape_always_sets<kType>(f_body)) out.body = fresh.body;
  if constexpr (!canon_shape_always_sets<kType>(f_to)) out.to = fresh.to;
  if constexpr (!canon_shape_always_sets<kType>(f_expires_at)) out.expires_at = fresh.expires_at;
  if constexpr (!canon_shape_always_sets<kType>(f_view_once)) out.view_once = fresh.view_once;
  if constexpr (!canon_shape_always_sets<kType>(f_seq)) out.seq = fresh.seq;
  if constexpr (!canon_shape_always_sets<kType>(f_from)) out.from = fresh.from;
  if constexpr (!canon_shape_always_sets<kType>(f_reason)) out.reason = fresh.reason;
  if constexpr (!canon_shape_always_sets<kType>(f_up_to)) out.up_to = fresh.up_to;
  if constexpr (!canon_shape_always_sets<kType>(f_reader)) out.reader = fresh.reader;
  if constexpr (!canon_shape_always_sets<kType>(f_kind)) out.kind = fresh.kind;
  if constexpr (!canon_shape_always_sets<kType>(f_name)) out.name = fresh.name;
  if constexpr (!canon_shape_always_sets<kType>(f_quiescent)) out.quiescent = fresh.quiescent;
}

template <size_t kType>
inline bool read_canon_line(const char*& p, const char* end, EventView& out) {
  reset_outside_canon_shape<kType>(out);
  return read_canon_shape<kType>(p, end, out);
}

// ---- Lines read straight through ----
// Most lines are of a few types (deliver over half, then send, ack, expire, online). Such a line
// is read here without the per-field steps of read_canon_shape: each value is followed by one
// fixed run of bytes up to the next value (a string's closing quote, `,"key":`, the next string's
// opening quote: `","device":"`), compared as two words, every step inline with its run a
// template constant. An optional field (a send's to, expires_at, view_once) is read when its run
// is there and skipped when it is not. It accepts only lines that read_canon_line accepts for
// the type and fills the same members (the same digit reader, the same string scans, the same
// reset); any other line returns false and goes the general canonical way from the start, so an
// unusual line reads, and fails, exactly as before.

// A run of 5 to 16 fixed bytes as two overlapping words (8 bytes each from 8 bytes on, else 4).
struct FixedRun {
  KeyWords words;
  uint8_t size;
};
// The bytes between a value and the value of field `next`: the closing quote when the value
// before is a string, `,"key":`, and the opening quote when `next` is a string.
constexpr FixedRun straight_run(bool after_string, const CanonField& next) {
  char text[16] = {};
  size_t n = 0;
  if (after_string) text[n++] = '"';
  text[n++] = ',';
  text[n++] = '"';
  for (const char* c = kFieldNames[next.field]; *c != '\0'; ++c) text[n++] = *c;
  text[n++] = '"';
  text[n++] = ':';
  if (next.value == CanonValue::string) text[n++] = '"';
  return FixedRun{key_words(text, n), static_cast<uint8_t>(n)};
}
// Whether `run` is at p with at least one byte after it (so the line's last byte, '}', is
// never part of a run or a value read as one).
[[gnu::always_inline]] inline bool at_fixed_run(const char* p, const char* end, const FixedRun& run) {
  if (end - p <= run.size) return false;
  if (run.size >= 8) return load_word(p, 8) == run.words.first && load_word(p + run.size - 8, 8) == run.words.last;
  return load_word(p, 4) == run.words.first && load_word(p + run.size - 4, 4) == run.words.last;
}

// Fields kIndex.. of type kType's shape, from p: the closing quote of the string value before
// (kAfterString) or the byte after the integer or boolean value before. The line's last byte,
// '}', is the caller's to check.
template <size_t kType, size_t kIndex, bool kAfterString>
[[gnu::always_inline]] inline bool read_straight_from(const char* p, const char* end, EventView& out) {
  if constexpr (kIndex == kCanonShapes[kType].count) {
    return p + (kAfterString ? 2 : 1) == end;
  } else {
    static constexpr CanonField f = kCanonShapes[kType].fields[kIndex];
    static constexpr FixedRun kRun = straight_run(kAfterString, f);
    if (!at_fixed_run(p, end, kRun)) {
      if constexpr (f.optional) {
        return read_straight_from<kType, kIndex + 1, kAfterString>(p, end, out);
      } else {
        return false;
      }
    }
    p += kRun.size;
    if constexpr (f.value == CanonValue::string) {
      const char* quote = nullptr;
      if constexpr (f.field == f_body) {
        quote = scan_plain_string_of_64(p, end);
      } else {
        quote = scan_plain_string_short(p, end);
      }
      if (quote == nullptr || !store_canon_string<f.field>(out, std::string_view(p, static_cast<size_t>(quote - p))))
        return false;
      return read_straight_from<kType, kIndex + 1, true>(quote, end, out);
    } else if constexpr (f.value == CanonValue::integer) {
      int64_t value = 0;
      p = read_canon_int(p, end, value);
      if (p == nullptr) return false;
      store_canon_integer<f.field>(out, value);
      return read_straight_from<kType, kIndex + 1, false>(p, end, out);
    } else {
      p = read_canon_boolean<f.field>(p, end, out);
      if (p == nullptr) return false;
      return read_straight_from<kType, kIndex + 1, false>(p, end, out);
    }
  }
}

// `p` is the byte after the closing quote of the type's name.
template <EventType kType>
bool read_straight(const char* p, const char* end, EventView& out) {
  constexpr size_t kShape = static_cast<size_t>(kType);
  reset_outside_canon_shape<kShape>(out);
  out.type = kType;
  return read_straight_from<kShape, 0, false>(p, end, out);
}

// The 8 bytes from the type name's opening quote on, for the types read straight through.
constexpr uint64_t type_word(const char (&text)[9]) { return little_endian(text, 8); }

bool parse_canonical_line(std::string_view line, EventView& out) {
  const char* const end = line.data() + line.size();
  // `{"type":"`, the type's name (its first 7 bytes are in the second word), and more than the
  // shortest of these types' names and '}'.
  static constexpr uint64_t kTypeKey = little_endian("{\"type\":", 8);
  if (line.size() >= 18 && load_word(line.data(), 8) == kTypeKey && end[-1] == '}') {
    const char* const b = line.data();
    bool read = false;
    switch (load_word(b + 8, 8)) {
      case type_word("\"deliver"): read = b[16] == '"' && read_straight<EventType::deliver>(b + 17, end, out); break;
      case type_word("\"send\",\""): read = read_straight<EventType::send>(b + 14, end, out); break;
      case type_word("\"ack\",\"t"): read = read_straight<EventType::ack>(b + 13, end, out); break;
      case type_word("\"expire\""): read = read_straight<EventType::expire>(b + 16, end, out); break;
      case type_word("\"online\""): read = read_straight<EventType::online>(b + 16, end, out); break;
      case type_word("\"offline"): read = b[16] == '"' && read_straight<EventType::offline>(b + 17, end, out); break;
      case type_word("\"read\",\""): read = read_straight<EventType::read>(b + 14, end, out); break;
      case type_word("\"join\",\""): read = read_straight<EventType::join>(b + 14, end, out); break;
      case type_word("\"leave\","): read = read_straight<EventType::leave>(b + 15, end, out); break;
      case type_word("\"receipt"): read = b[16] == '"' && read_straight<EventType::receipt>(b + 17, end, out); break;
      case type_word("\"reject\""): read = read_straight<EventType::reject>(b + 16, end, out); break;
      case type_word("\"fault\","): read = read_straight<EventType::fault>(b + 15, end, out); break;
      case type_word("\"heal\",\""): read = read_straight<EventType::heal>(b + 14, end, out); break;
      case type_word("\"end\",\"t"): read = read_straight<EventType::end>(b + 13, end, out); break;
      default: break;
    }
    if (read) return true;
  }
  const char* p = nullptr;
  std::string_view name;
  const std::optional<EventType> type = scan_canonical_type(line, name, p);
  if (!type) return false;
  out.type = *type;
  bool read = false;
  switch (*type) {
    case EventType::send: read = read_canon_line<0>(p, end, out); break;
    case EventType::ack: read = read_canon_line<1>(p, end, out); break;
    case EventType::reject: read = read_canon_line<2>(p, end, out); break;
    case EventType::deliver: read = read_canon_line<3>(p, end, out); break;
    case EventType::read: read = read_canon_line<4>(p, end, out); break;
    case EventType::receipt: read = read_canon_line<5>(p, end, out); break;
    case EventType::join: read = read_canon_line<6>(p, end, out); break;
    case EventType::leave: read = read_canon_line<7>(p, end, out); break;
    case EventType::expire: read = read_canon_line<8>(p, end, out); break;
    case EventType::decrypt_error: read = read_canon_line<9>(p, end, out); break;
    case EventType::online: read = read_canon_line<10>(p, end, out); break;
    case EventType::offline: read = read_canon_line<11>(p, end, out); break;
    case EventType::fault: read = read_canon_line<12>(p, end, out); break;
    case EventType::heal: read = read_canon_line<13>(p, end, out); break;
    case EventType::end: read = read_canon_line<14>(p, end, out); break;
  }
  return read && p + 1 == end;  // end[-1] is '}'
}

}  // namespace

static_assert(f_count <= 18, "EventParser keeps one decode buffer per field");

Status EventParser::parse(std::string_view line, EventView& out) {
  if (parse_canonical_line(line, out)) return {};
  if (parse_plain_line(line, out)) return {};
  return parse_general(line, out);
}

Status EventParser::parse_general(std::string_view line, EventView& out) {
  Slot slots[f_count];
  for (Slot& slot : slots) slot.kind = Kind::none;
  Parser parser(line.data(), line.data() + line.size());
  if (!parser.parse_line(slots)) return make_error(ErrorCode::bad_input, parser.error());

  const Slot& type_slot = slots[f_type];
  if (type_slot.kind == Kind::none) return make_error(ErrorCode::bad_input, "missing required field \"type\"");
  if (type_slot.kind != Kind::string) return wrong_type(f_type, "a string");
  std::string_view type_name;
  if (type_slot.escaped) {
    Parser::decode_string(type_slot, decoded_[f_type]);
    type_name = decoded_[f_type];
  } else {
    type_name = std::string_view(type_slot.begin, static_cast<size_t>(type_slot.end - type_slot.begin));
  }
  const std::optional<EventType> type = event_type_from_string(type_name);
  if (!type) {
    const std::string shown =
        type_name.size() > 40 ? std::string(type_name.substr(0, 40)) + "..." : std::string(type_name);
    return make_error(ErrorCode::bad_input, "unknown type \"" + shown + "\"");
  }
  // Fields this type does not use go back to their defaults, so a reused view carries nothing
  // over from the previous line.
  out = EventView{};
  out.type = *type;

#define MSGSIM_READ(kind, field, member)                                \
  do {                                                                  \
    Status status = read_##kind(slots, field, out.type, out.member);    \
    if (!status.ok()) return status;                                    \
  } while (0)
#define MSGSIM_READ_STRING(field, member)                                                \
  do {                                                                                   \
    Status status = read_string(slots, field, out.type, decoded_[field], out.member);    \
    if (!status.ok()) return status;                                                     \
  } while (0)

  MSGSIM_READ(int, f_t, t);
  switch (out.type) {
    case EventType::send:
      MSGSIM_READ_STRING(f_user, user);
      MSGSIM_READ_STRING(f_device, device);
      MSGSIM_READ_STRING(f_conv, conv);
      MSGSIM_READ_STRING(f_msg, msg);
      MSGSIM_READ_STRING(f_body, body);
      if (present(slots[f_to])) {
        std::string_view to;
        Status status = read_string(slots, f_to, out.type, decoded_[f_to], to);
        if (!status.ok()) return status;
        out.to = to;
      }
      if (present(slots[f_expires_at])) {
        int64_t expires_at = 0;
        Status status = read_int(slots, f_expires_at, out.type, expires_at);
        if (!status.ok()) return status;
        out.expires_at = expires_at;
      }
      if (present(slots[f_view_once])) MSGSIM_READ(bool, f_view_once, view_once);
      break;
    case EventType::ack:
      MSGSIM_READ_STRING(f_device, device);
      MSGSIM_READ_STRING(f_conv, conv);
      MSGSIM_READ_STRING(f_msg, msg);
      MSGSIM_READ(int, f_seq, seq);
      break;
    case EventType::reject:
    case EventType::decrypt_error:
      MSGSIM_READ_STRING(f_device, device);
      MSGSIM_READ_STRING(f_conv, conv);
      MSGSIM_READ_STRING(f_msg, msg);
      MSGSIM_READ_STRING(f_reason, reason);
      break;
    case EventType::deliver:
      MSGSIM_READ_STRING(f_user, user);
      MSGSIM_READ_STRING(f_device, device);
      MSGSIM_READ_STRING(f_conv, conv);
      MSGSIM_READ_STRING(f_msg, msg);
      MSGSIM_READ(int, f_seq, seq);
      MSGSIM_READ_STRING(f_from, from);
      MSGSIM_READ_STRING(f_body, body);
      break;
    case EventType::read:
      MSGSIM_READ_STRING(f_user, user);
      MSGSIM_READ_STRING(f_device, device);
      MSGSIM_READ_STRING(f_conv, conv);
      MSGSIM_READ(int, f_up_to, up_to);
      break;
    case EventType::receipt: {
      MSGSIM_READ_STRING(f_device, device);
      MSGSIM_READ_STRING(f_conv, conv);
      MSGSIM_READ_STRING(f_reader, reader);
      std::string_view kind;
      Status status = read_string(slots, f_kind, out.type, decoded_[f_kind], kind);
      if (!status.ok()) return status;
      if (kind == "delivered") {
        out.kind = ReceiptKind::delivered;
      } else if (kind == "read") {
        out.kind = ReceiptKind::read;
      } else {
        return make_error(ErrorCode::bad_input, "field \"kind\" must be \"delivered\" or \"read\"");
      }
      MSGSIM_READ(int, f_up_to, up_to);
      break;
    }
    case EventType::join:
    case EventType::leave:
      MSGSIM_READ_STRING(f_conv, conv);
      MSGSIM_READ_STRING(f_user, user);
      MSGSIM_READ(int, f_seq, seq);
      break;
    case EventType::expire:
      MSGSIM_READ_STRING(f_device, device);
      MSGSIM_READ_STRING(f_msg, msg);
      break;
    case EventType::online:
    case EventType::offline:
      MSGSIM_READ_STRING(f_user, user);
      MSGSIM_READ_STRING(f_device, device);
      break;
    case EventType::fault:
    case EventType::heal:
      MSGSIM_READ_STRING(f_name, name);
      break;
    case EventType::end:
      MSGSIM_READ(bool, f_quiescent, quiescent);
      break;
  }
#undef MSGSIM_READ_STRING
#undef MSGSIM_READ
  return {};
}

Status parse_event_line(std::string_view line, Event& out) {
  EventParser parser;
  EventView view;
  Status status = parser.parse(line, view);
  if (!status.ok()) return status;
  // Field by field, so a reused Event keeps its strings' capacity.
  out.type = view.type;
  out.t = view.t;
  out.user = view.user;
  out.device = view.device;
  out.conv = view.conv;
  out.msg = view.msg;
  out.body = view.body;
  if (view.to) {
    out.to = std::string(*view.to);
  } else {
    out.to.reset();
  }
  out.expires_at = view.expires_at;
  out.view_once = view.view_once;
  out.seq = view.seq;
  out.from = view.from;
  out.reason = view.reason;
  out.up_to = view.up_to;
  out.reader = view.reader;
  out.kind = view.kind;
  out.name = view.name;
  out.quiescent = view.quiescent;
  return {};
}

namespace {
// The buffer starts small and doubles up to twice the longest line allowed.
constexpr size_t kBufferBytesInitial = size_t{64} * 1024;
constexpr size_t kBufferBytesMax = 2 * kLineBytesMax + 2;
}  // namespace

LineReader::LineReader(std::istream& in, size_t lines_kept) : in_(&in), lines_kept_(lines_kept) {
  buffer_.resize(kBufferBytesInitial);
  data_ = buffer_.data();
}

// The whole input is already in the "buffer": refill() finds eof_ set and next() cuts lines out
// of the text with the same code, so the lines and the too-long errors are those of a stream.
LineReader::LineReader(std::string_view text)
    : lines_kept_(std::numeric_limits<size_t>::max()),
      data_(text.data() != nullptr ? text.data() : ""),  // memchr must not see a null pointer
      end_(text.size()),
      eof_(true) {}

Result<MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(ErrorCode::io_error, "cannot open " + path);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    ::close(fd);
    return make_error(ErrorCode::io_error, path + ": not a non-empty regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (data == MAP_FAILED) return make_error(ErrorCode::io_error, "cannot map " + path);
  // Read front to back once: let the kernel read ahead in large steps.
  ::madvise(data, size, MADV_SEQUENTIAL);
  return MappedFile(data, size);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

void LineReader::release_retired() {
  size_t freed = 0;
  while (freed < retired_.size() && retired_[freed].last_line + lines_kept_ < line_number_) ++freed;
  if (freed == 0) return;
  if (spare_.empty()) spare_ = std::move(retired_[freed - 1].bytes);
  retired_.erase(retired_.begin(), retired_.begin() + static_cast<std::ptrdiff_t>(freed));
}

bool LineReader::refill() {
  if (eof_) return false;
  if (lines_kept_ > 0 && begin_ > 0) {
    // The bytes before begin_ belong to lines that may still be in use: the unconsumed tail
    // moves to a fresh buffer of the same size and this one is retired until its last line is
    // lines_kept_ lines behind. (A buffer is retired only after a line was returned from it, so
    // at most lines_kept_ + 1 are retired at once.)
    const size_t pending = end_ - begin_;
    std::string fresh = std::move(spare_);
    spare_.clear();
    fresh.resize(buffer_.size());
    if (pending > 0) std::memcpy(fresh.data(), buffer_.data() + begin_, pending);
    MSGSIM_ASSERT(retired_.size() < kRetiredMax, "LineReader: too many buffers in use");
    retired_.push_back(Retired{std::move(buffer_), line_number_});
    buffer_ = std::move(fresh);
    data_ = buffer_.data();
    begin_ = 0;
    end_ = pending;
  } else if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buffer_.size()) {
    if (buffer_.size() >= kBufferBytesMax) return true;
    buffer_.resize(std::min(buffer_.size() * 2, kBufferBytesMax));
  }
  data_ = buffer_.data();
  in_->read(buffer_.data() + end_, static_cast<std::streamsize>(buffer_.size() - end_));
  const size_t got = static_cast<size_t>(in_->gcount());
  end_ += got;
  if (got == 0 || !*in_) eof_ = true;
  return got > 0;
}

Result<bool> LineReader::next(std::string_view& line) {
  size_t scanned = begin_;
  for (;;) {
    const void* newline = std::memchr(data_ + scanned, '\n', end_ - scanned);
    if (newline != nullptr) {
      const size_t at = static_cast<size_t>(static_cast<const char*>(newline) - data_);
      ++line_number_;
      if (at - begin_ > kLineBytesMax) {
        return make_error(ErrorCode::bad_input, "line " + std::to_string(line_number_) +
                                                    ": longer than " + std::to_string(kLineBytesMax) + " bytes");
      }
      line = std::string_view(data_ + begin_, at - begin_);
      begin_ = at + 1;
      if (!retired_.empty()) release_retired();
      return true;
    }
    if (end_ - begin_ > kLineBytesMax) {
      ++line_number_;
      return make_error(ErrorCode::bad_input, "line " + std::to_string(line_number_) + ": longer than " +
                                                  std::to_string(kLineBytesMax) + " bytes");
    }
    const size_t pending = end_ - begin_;
    const bool more = refill();
    scanned = begin_ + pending;  // refill may have moved the unconsumed bytes to the front
    if (!more) {
      if (begin_ == end_) return false;
      // The last line has no '\n'.
      ++line_number_;
      line = std::string_view(data_ + begin_, end_ - begin_);
      begin_ = end_;
      return true;
    }
  }
}

}  // namespace msgsim::history
