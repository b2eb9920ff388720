// The wire protocols: the field codec (impl/wire/codec.h), the messaging frames
// (impl/chat/protocol.h) and the ledger probe codec (impl/ledger/ledger.h).
//
// Expected bytes come from an encoder written here from docs/protocol.md (LEB128, zigzag, the
// frame header), not from the codec under test, so a codec that drifts from the documented
// layout fails even if its encoder and decoder still agree with each other. The last tests read
// docs/protocol.md itself and compare its type-number table and field lists with the code.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "impl/base/prng.h"
#include "impl/chat/protocol.h"
#include "impl/ledger/ledger.h"
#include "impl/wire/codec.h"

namespace msgsim {
namespace {

using chat::Frame;
using testing::HasSubstr;
using testing::StartsWith;

constexpr size_t kFrameTypes = std::variant_size_v<Frame>;

// ---------------------------------------------------------------------------------------------
// An independent encoder, from the documented layout.

void put_varint(Bytes& out, uint64_t value) {
  do {
    uint8_t byte = value & 0x7f;
    value >>= 7;
    if (value != 0) byte |= 0x80;
    out.push_back(byte);
  } while (value != 0);
}

// Zigzag by cases rather than by the shift-and-xor formula the codec uses: 0, -1, 1, -2, 2 ...
// map to 0, 1, 2, 3, 4 ...
uint64_t zigzag(int64_t x) {
  if (x >= 0) return static_cast<uint64_t>(x) * 2;
  return static_cast<uint64_t>(-(x + 1)) * 2 + 1;
}

template <typename T>
constexpr bool is_text_v = std::is_same_v<T, std::string> || std::is_same_v<T, Bytes>;

template <typename T>
constexpr bool is_scalar_v = std::is_same_v<T, bool> || std::is_enum_v<T> || std::is_integral_v<T>;

// Encodes a message's fields with no bound checks, so tests can build frames that break them.
// `lie_at` (counting the variable-length fields met outside lists, from 0) replaces that
// field's length or count with `lie_length` and leaves its content out.
class TestEncoder {
 public:
  explicit TestEncoder(Bytes& out) : out_(out) {}
  size_t lie_at = SIZE_MAX;
  uint64_t lie_length = 0;

  template <typename T>
  void operator()(const char*, const T& field, wire::Max = wire::Max{0}) {
    if constexpr (std::is_same_v<T, bool>) {
      out_.push_back(field ? 1 : 0);
    } else if constexpr (std::is_enum_v<T>) {
      put_varint(out_, static_cast<uint64_t>(field));
    } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
      put_varint(out_, zigzag(field));
    } else if constexpr (std::is_integral_v<T>) {
      put_varint(out_, field);
    } else {
      const bool lie = depth_ == 0 && variable_fields_++ == lie_at;
      if (lie) {
        put_varint(out_, lie_length);
        return;
      }
      put_varint(out_, field.size());
      if constexpr (is_text_v<T>) {
        out_.insert(out_.end(), field.begin(), field.end());
      } else {
        depth_++;
        for (const auto& item : field) const_cast<typename T::value_type&>(item).fields(*this);
        depth_--;
      }
    }
  }

 private:
  Bytes& out_;
  int depth_ = 0;
  size_t variable_fields_ = 0;
};

template <typename T>
Bytes test_encode(const T& message, size_t lie_at = SIZE_MAX, uint64_t lie_length = 0) {
  Bytes out{1, T::kType};
  TestEncoder encoder(out);
  encoder.lie_at = lie_at;
  encoder.lie_length = lie_length;
  const_cast<T&>(message).fields(encoder);
  return out;
}

Bytes test_encode_frame(const Frame& frame) {
  return std::visit([](const auto& message) { return test_encode(message); }, frame);
}

// ---------------------------------------------------------------------------------------------
// Random frames.

// Caps on the random sizes, below the protocol's bounds: small frames keep the all-prefixes
// check cheap; the large shape reaches every string and body bound.
struct Shape {
  size_t text_cap;
  size_t list_cap;
};
constexpr Shape kSmall{16, 3};
constexpr Shape kLarge{SIZE_MAX, 5};

class RandomFiller {
 public:
  RandomFiller(Prng& rng, Shape shape) : rng_(rng), shape_(shape) {}

  template <typename T>
  void operator()(const char*, T& field, wire::Max bound = wire::Max{0}) {
    if constexpr (std::is_same_v<T, bool>) {
      field = rng_.below(2) == 1;
    } else if constexpr (std::is_enum_v<T>) {
      field = static_cast<T>(rng_.below(static_cast<uint64_t>(T::max_value) + 1));
    } else if constexpr (std::is_integral_v<T>) {
      // Random bit widths, so every varint length from 1 to 10 bytes turns up.
      const uint64_t bits = random_width();
      if constexpr (std::is_signed_v<T>) {
        field = static_cast<T>(rng_.below(2) == 0 ? static_cast<int64_t>(bits) : -static_cast<int64_t>(bits >> 1) - 1);
      } else {
        field = static_cast<T>(bits & std::numeric_limits<T>::max());
      }
    } else if constexpr (is_text_v<T>) {
      field.resize(length(bound.n, shape_.text_cap));
      for (auto& c : field) c = static_cast<typename T::value_type>(rng_.below(256));
    } else {
      field.clear();
      field.resize(length(bound.n, shape_.list_cap));
      for (auto& item : field) item.fields(*this);
    }
  }

 private:
  uint64_t random_width() {
    const uint64_t width = rng_.below(65);
    if (width == 0) return 0;
    return rng_.next_u64() >> (64 - width);
  }
  // Mostly uniform; empty and exactly at the limit an eighth of the time each.
  size_t length(size_t bound, size_t cap) {
    const size_t limit = std::min(bound, cap);
    switch (rng_.below(8)) {
      case 0: return 0;
      case 1: return limit;
      default: return static_cast<size_t>(rng_.below(limit + 1));
    }
  }

  Prng& rng_;
  Shape shape_;
};

template <size_t I>
Frame random_frame_at(Prng& rng, Shape shape) {
  std::variant_alternative_t<I, Frame> message;
  RandomFiller filler(rng, shape);
  message.fields(filler);
  return Frame{std::in_place_index<I>, std::move(message)};
}

template <size_t... I>
Frame random_frame_dispatch(size_t index, Prng& rng, Shape shape, std::index_sequence<I...>) {
  using Maker = Frame (*)(Prng&, Shape);
  constexpr Maker makers[] = {&random_frame_at<I>...};
  return makers[index](rng, shape);
}

Frame random_frame(size_t index, Prng& rng, Shape shape) {
  return random_frame_dispatch(index, rng, shape, std::make_index_sequence<kFrameTypes>{});
}

uint8_t frame_type(const Frame& frame) {
  return std::visit([](const auto& message) { return std::decay_t<decltype(message)>::kType; }, frame);
}

std::string decode_error(const Bytes& bytes) {
  const Result<Frame> decoded = chat::decode(bytes);
  if (decoded.ok()) return "(decoded as " + std::string(chat::frame_name(*decoded)) + ")";
  return decoded.error().message;
}

// ---------------------------------------------------------------------------------------------
// Varints, zigzag and the scalar field rules.

Result<uint64_t> read_one_varint(const Bytes& bytes) {
  wire::Reader reader(bytes);
  uint64_t value = 0;
  if (!reader.varint(value)) return make_error(ErrorCode::bad_input, reader.error());
  if (!reader.at_end()) return make_error(ErrorCode::bad_input, "bytes after the varint");
  return value;
}

Bytes write_one_varint(uint64_t value) {
  Bytes out;
  wire::Writer(out).varint(value);
  return out;
}

TEST(DecodeThrough, ReadsTheFieldsUpToTheNamedOneAndNoFurther) {
  chat::Produce produce;
  produce.request_id = 77;
  produce.entry.conv = "dm:u1:u2";
  produce.entry.seq = 0;
  produce.entry.msg_id = "m-1";
  produce.entry.body = Bytes(300, 0xab);
  produce.members_digest = 9;
  Bytes frame = chat::encode_as(produce);

  chat::Produce prefix;
  ASSERT_TRUE(chat::decode_through(frame, "msg_id", prefix));
  EXPECT_EQ(prefix.request_id, 77u);
  EXPECT_EQ(prefix.entry.conv, "dm:u1:u2");
  EXPECT_EQ(prefix.entry.msg_id, "m-1");
  EXPECT_TRUE(prefix.entry.body.empty()) << "a field after msg_id was read";
  EXPECT_EQ(prefix.members_digest, 0u);

  // Another frame type, a bad header, or a field name the frame never reaches: false.
  chat::Produced produced;
  EXPECT_FALSE(chat::decode_through(frame, "request_id", produced));
  chat::Produce again;
  EXPECT_FALSE(chat::decode_through(frame, "no_such_field", again));
  Bytes wrong_version = frame;
  wrong_version[0] ^= 0xff;
  EXPECT_FALSE(chat::decode_through(wrong_version, "msg_id", again));
  // Cut inside msg_id: false; cut after it (inside the body): the prefix still decodes, as
  // decode() would refuse the whole frame.
  for (size_t cut = 2; cut < frame.size(); ++cut) {
    chat::Produce part;
    const bool through = chat::decode_through(ByteView(frame).first(cut), "msg_id", part);
    EXPECT_FALSE(chat::decode(ByteView(frame).first(cut)).ok()) << cut;
    if (through) {
      EXPECT_EQ(part.entry.msg_id, "m-1") << cut;
    }
  }
  // version, type | request_id 77 | kind | conv (length, 8) | seq 0 | msg_id (length, 3)
  const size_t msg_id_end = 2 + 1 + 1 + 1 + 8 + 1 + 1 + 3;
  EXPECT_TRUE(chat::decode_through(ByteView(frame).first(msg_id_end), "msg_id", again));
  EXPECT_FALSE(chat::decode_through(ByteView(frame).first(msg_id_end - 1), "msg_id", again));
}

TEST(Varint, EdgeValuesRoundTripInTheDocumentedBytes) {
  const std::pair<uint64_t, Bytes> cases[] = {
      {0, {0x00}},
      {1, {0x01}},
      {127, {0x7f}},
      {128, {0x80, 0x01}},
      {300, {0xac, 0x02}},
      {16383, {0xff, 0x7f}},
      {16384, {0x80, 0x80, 0x01}},
      {uint64_t{1} << 63, {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
      {UINT64_MAX, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
  };
  for (const auto& [value, bytes] : cases) {
    EXPECT_EQ(write_one_varint(value), bytes) << value;
    const Result<uint64_t> read = read_one_varint(bytes);
    ASSERT_TRUE(read.ok()) << value << ": " << read.error().message;
    EXPECT_EQ(*read, value);
  }
}

TEST(Varint, EveryPowerOfTwoNeighbourRoundTrips) {
  for (int bit = 0; bit < 64; ++bit) {
    for (int64_t delta : {-1, 0, 1}) {
      const uint64_t value = (uint64_t{1} << bit) + static_cast<uint64_t>(delta);
      Bytes expected;
      put_varint(expected, value);
      EXPECT_EQ(write_one_varint(value), expected) << value;
      const Result<uint64_t> read = read_one_varint(expected);
      ASSERT_TRUE(read.ok()) << value;
      EXPECT_EQ(*read, value);
    }
  }
}

TEST(Varint, OverlongEncodingsAreRejected) {
  // Each is a redundant spelling of a value that has a shorter one.
  const Bytes overlong[] = {
      {0x80, 0x00},                                                  // 0 in two bytes
      {0xff, 0x00},                                                  // 127 in two bytes
      {0x80, 0x81, 0x00},                                            // 128 in three bytes
      {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00},  // 0 in ten bytes
  };
  for (const Bytes& bytes : overlong) {
    const Result<uint64_t> read = read_one_varint(bytes);
    ASSERT_FALSE(read.ok());
    EXPECT_THAT(read.error().message, HasSubstr("overlong"));
  }
}

TEST(Varint, ElevenBytesAndTenthBytePastOneAreRejected) {
  Bytes eleven(10, 0xff);
  eleven.push_back(0x01);
  EXPECT_FALSE(read_one_varint(eleven).ok());
  Bytes eleven_zeros(10, 0x80);
  eleven_zeros.push_back(0x00);
  EXPECT_FALSE(read_one_varint(eleven_zeros).ok());
  // Ten bytes whose last carries bits above 2^64.
  for (uint8_t last : {0x02, 0x7f}) {
    Bytes too_wide(9, 0xff);
    too_wide.push_back(last);
    const Result<uint64_t> read = read_one_varint(too_wide);
    ASSERT_FALSE(read.ok()) << int{last};
    EXPECT_THAT(read.error().message, HasSubstr("64 bits"));
  }
}

TEST(Varint, TruncationIsRejected) {
  const Bytes truncated[] = {{}, {0x80}, {0xff, 0xff}, Bytes(9, 0xff)};
  for (const Bytes& bytes : truncated) {
    const Result<uint64_t> read = read_one_varint(bytes);
    ASSERT_FALSE(read.ok()) << bytes.size();
    EXPECT_THAT(read.error().message, HasSubstr("truncated"));
  }
}

// A record with one signed field, to drive the visitor directly.
struct Signed {
  int64_t value = 0;
  template <class V> void fields(V& v) { v("value", value); }
};

TEST(Zigzag, ExtremesAndSmallValues) {
  EXPECT_EQ(zigzag(INT64_MIN), UINT64_MAX);
  EXPECT_EQ(zigzag(INT64_MAX), UINT64_MAX - 1);
  for (int64_t x : {int64_t{0}, int64_t{-1}, int64_t{1}, int64_t{-2}, int64_t{63}, int64_t{-64}, int64_t{64},
                    INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1}) {
    Signed in{x};
    Bytes bytes;
    wire::Writer writer(bytes);
    in.fields(writer);
    Bytes expected;
    put_varint(expected, zigzag(x));
    EXPECT_EQ(bytes, expected) << x;
    Signed out;
    wire::Reader reader(bytes);
    out.fields(reader);
    ASSERT_TRUE(reader.ok()) << x << ": " << reader.error();
    EXPECT_TRUE(reader.at_end());
    EXPECT_EQ(out.value, x);
  }
  // Through a frame, too.
  for (int64_t x : {INT64_MIN, INT64_MAX}) {
    chat::Send send;
    send.expires_at_ns = x;
    const Result<Frame> decoded = chat::decode(chat::encode_as(send));
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    EXPECT_EQ(std::get<chat::Send>(*decoded).expires_at_ns, x);
  }
}

TEST(Fields, BoolBytesOtherThanZeroAndOneAreRejected) {
  for (int b = 0; b < 256; ++b) {
    const Bytes bytes{1, chat::RouteReply::kType, static_cast<uint8_t>(b), 7};
    const Result<Frame> decoded = chat::decode(bytes);
    if (b <= 1) {
      ASSERT_TRUE(decoded.ok()) << decoded.error().message;
      EXPECT_EQ(std::get<chat::RouteReply>(*decoded).ok, b == 1);
      EXPECT_EQ(std::get<chat::RouteReply>(*decoded).server, 7u);
    } else {
      ASSERT_FALSE(decoded.ok()) << b;
      EXPECT_EQ(decoded.error().code, ErrorCode::bad_input);
      EXPECT_EQ(decoded.error().message, "RouteReply.ok: bool is " + std::to_string(b));
    }
  }
}

TEST(Fields, EnumsPastTheirLastValueAreRejected) {
  // GroupOp.kind and Deliver's entry kind are EntryKind (max 2), ReceiptSend.kind ReceiptKind
  // (max 1), Health.status HealthStatus (max 1).
  chat::GroupOp op;
  chat::Deliver deliver;
  chat::ReceiptSend receipt;
  chat::Health health;
  struct Case {
    Bytes bytes;
    std::string prefix;
  };
  std::vector<Case> cases;
  for (uint64_t value : {uint64_t{3}, uint64_t{255}, uint64_t{300}, UINT64_MAX}) {
    // GroupOp: op_id "", conv "", kind, member "".
    Bytes group{1, chat::GroupOp::kType, 0, 0};
    put_varint(group, value);
    group.push_back(0);
    cases.push_back({group, "GroupOp.kind: enum value " + std::to_string(value) + " unknown"});
    // Deliver: the entry's kind comes first.
    Bytes entry{1, chat::Deliver::kType};
    put_varint(entry, value);
    Bytes rest = test_encode(deliver);
    entry.insert(entry.end(), rest.begin() + 3, rest.end());  // the default entry minus its kind byte
    cases.push_back({entry, "Deliver.kind: enum value " + std::to_string(value) + " unknown"});
  }
  for (uint64_t value : {uint64_t{2}, uint64_t{128}}) {
    Bytes receipt_bytes{1, chat::ReceiptSend::kType, 0};
    put_varint(receipt_bytes, value);
    receipt_bytes.push_back(0);
    cases.push_back({receipt_bytes, "ReceiptSend.kind: enum value " + std::to_string(value) + " unknown"});
    Bytes health_bytes{1, chat::Health::kType};
    put_varint(health_bytes, value);
    health_bytes.push_back(0);
    cases.push_back({health_bytes, "Health.status: enum value " + std::to_string(value) + " unknown"});
  }
  for (const Case& c : cases) {
    const Result<Frame> decoded = chat::decode(c.bytes);
    ASSERT_FALSE(decoded.ok()) << c.prefix;
    EXPECT_EQ(decoded.error().code, ErrorCode::bad_input);
    EXPECT_EQ(decoded.error().message, c.prefix);
  }
  // The last defined values still decode.
  op.kind = chat::EntryKind::leave;
  receipt.kind = chat::ReceiptKind::read;
  health.status = chat::HealthStatus::draining;
  for (const Frame& frame : {Frame{op}, Frame{receipt}, Frame{health}}) {
    const Result<Frame> decoded = chat::decode(test_encode_frame(frame));
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    EXPECT_EQ(chat::encode(*decoded), chat::encode(frame));
  }
}

TEST(Fields, UnsignedValuesPastTheFieldWidthAreRejected) {
  // Welcome.server is 32 bits.
  Bytes fits{1, chat::Welcome::kType};
  put_varint(fits, UINT32_MAX);
  const Result<Frame> decoded = chat::decode(fits);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(std::get<chat::Welcome>(*decoded).server, UINT32_MAX);
  for (uint64_t value : {uint64_t{UINT32_MAX} + 1, UINT64_MAX}) {
    Bytes bytes{1, chat::Welcome::kType};
    put_varint(bytes, value);
    EXPECT_EQ(decode_error(bytes), "Welcome.server: integer out of range");
  }
}

// ---------------------------------------------------------------------------------------------
// Bounds: every variable-length field of every frame, one over its maximum and one whose
// length runs past the end of the frame.

// The name and bound of each variable-length field met outside lists, in wire order.
struct VariableField {
  std::string name;
  size_t bound;
  bool is_list;
};
class VariableFieldLister {
 public:
  std::vector<VariableField> found;
  template <typename T>
  void operator()(const char* name, T&, wire::Max bound = wire::Max{0}) {
    if constexpr (!is_scalar_v<T>) found.push_back({name, bound.n, !is_text_v<T>});
  }
};

// Fills the `target`-th variable-length field with one more element than its bound allows.
class OverBoundFiller {
 public:
  explicit OverBoundFiller(size_t target) : target_(target) {}
  template <typename T>
  void operator()(const char*, T& field, wire::Max bound = wire::Max{0}) {
    if constexpr (!is_scalar_v<T>) {
      if (seen_++ != target_) return;
      if constexpr (is_text_v<T>) {
        field.assign(bound.n + 1, 'x');
      } else {
        field.resize(bound.n + 1);
      }
    }
  }

 private:
  size_t target_;
  size_t seen_ = 0;
};

template <size_t I>
size_t check_bounds_of() {
  using T = std::variant_alternative_t<I, Frame>;
  const std::string frame = chat::frame_name(Frame{T{}});
  VariableFieldLister lister;
  T{}.fields(lister);
  for (size_t k = 0; k < lister.found.size(); ++k) {
    const VariableField& field = lister.found[k];
    const std::string where = frame + "." + field.name + ": ";
    const std::string unit = field.is_list ? "count " : "length ";
    SCOPED_TRACE(where);

    // One element over, with every element present.
    T over_bound;
    OverBoundFiller over(k);
    over_bound.fields(over);
    const Bytes over_bytes = test_encode(over_bound);
    EXPECT_LE(over_bytes.size(), wire::kFrameBytesMax);
    EXPECT_EQ(decode_error(over_bytes),
              where + unit + std::to_string(field.bound + 1) + " over the maximum " + std::to_string(field.bound));

    // A length within the bound that claims more bytes than the frame has left.
    const Bytes overrun = test_encode(T{}, k, field.bound);
    EXPECT_EQ(decode_error(overrun), where + unit + std::to_string(field.bound) + " past the end of the frame");

    // A huge claim is refused before anything is allocated for it.
    const Bytes huge = test_encode(T{}, k, UINT64_MAX);
    EXPECT_THAT(decode_error(huge), StartsWith(where + unit + std::to_string(UINT64_MAX) + " over the maximum"));
  }
  return lister.found.size();
}

template <size_t... I>
size_t check_all_bounds(std::index_sequence<I...>) {
  return (check_bounds_of<I>() + ...);
}

TEST(Bounds, EveryVariableLengthFieldOfEveryFrame) {
  // The count guards against a lister that silently finds nothing to check.
  const size_t checked = check_all_bounds(std::make_index_sequence<kFrameTypes>{});
  RecordProperty("variable_length_fields", static_cast<int>(checked));
  EXPECT_GE(checked, 60u);
}

TEST(Bounds, ExactlyAtEachBoundDecodes) {
  chat::Send send;
  send.msg_id.assign(chat::kIdMax, 'm');
  send.conv.assign(chat::kIdMax, 'c');
  send.to.assign(chat::kIdMax, 't');
  send.body.assign(chat::kBodyMax, 0xab);
  chat::SendReject reject;
  reject.reason.assign(chat::kReasonMax, 'r');
  chat::SyncRequest sync;
  sync.cursors.resize(chat::kCursorsMax);
  chat::Located located;
  located.locations.resize(chat::kTargetsMax);
  chat::Lookup lookup;
  lookup.users.resize(chat::kUsersPerLookupMax);
  chat::Records records;
  records.records.resize(chat::kEntriesPerFrameMax);
  chat::SyncResult result;
  result.entries.resize(chat::kEntriesPerFrameMax);
  chat::Route route;
  route.targets.resize(chat::kTargetsMax);
  for (const Frame& frame : {Frame{send}, Frame{reject}, Frame{sync}, Frame{located}, Frame{lookup}, Frame{records},
                             Frame{result}, Frame{route}}) {
    const Bytes bytes = chat::encode(frame);
    EXPECT_EQ(bytes, test_encode_frame(frame));
    const Result<Frame> decoded = chat::decode(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    EXPECT_EQ(chat::encode(*decoded), bytes);
  }
  // Inside a list the element's own bounds hold too.
  chat::SyncRequest long_conv;
  long_conv.cursors.resize(2);
  long_conv.cursors[1].conv.assign(chat::kIdMax + 1, 'c');
  EXPECT_THAT(decode_error(test_encode(long_conv)), StartsWith("SyncRequest.cursors[1].conv: length 65 over the maximum 64"));
}

// ---------------------------------------------------------------------------------------------
// Frames: the property test and the header rules.

void check_round_trip(const Frame& frame, Prng& rng, bool every_prefix) {
  const std::string name = chat::frame_name(frame);
  const Bytes bytes = chat::encode(frame);
  ASSERT_EQ(bytes, test_encode_frame(frame)) << name << ": the codec differs from the documented layout";
  const Result<Frame> decoded = chat::decode(bytes);
  ASSERT_TRUE(decoded.ok()) << name << ": " << decoded.error().message;
  ASSERT_EQ(decoded->index(), frame.index());
  ASSERT_EQ(chat::encode(*decoded), bytes) << name;

  // Every strict prefix fails, with an error that names the frame once the header is there.
  std::vector<size_t> prefixes;
  if (every_prefix) {
    for (size_t n = 0; n < bytes.size(); ++n) prefixes.push_back(n);
  } else {
    for (size_t n = 0; n < std::min<size_t>(bytes.size(), 64); ++n) prefixes.push_back(n);
    for (size_t n = bytes.size() - std::min<size_t>(bytes.size(), 64); n < bytes.size(); ++n) prefixes.push_back(n);
    for (int i = 0; i < 64; ++i) prefixes.push_back(static_cast<size_t>(rng.below(bytes.size())));
  }
  for (size_t n : prefixes) {
    const Result<Frame> cut = chat::decode(ByteView(bytes).first(n));
    ASSERT_FALSE(cut.ok()) << name << " cut to " << n << " of " << bytes.size() << " bytes decoded";
    EXPECT_EQ(cut.error().code, ErrorCode::bad_input);
    if (n >= 2) {
      ASSERT_THAT(cut.error().message, StartsWith(name + ".")) << n;
    }
  }

  Bytes trailing = bytes;
  trailing.push_back(static_cast<uint8_t>(rng.below(256)));
  const Result<Frame> extra = chat::decode(trailing);
  ASSERT_FALSE(extra.ok()) << name << " with a trailing byte decoded";
  EXPECT_EQ(extra.error().message, name + ": trailing bytes after the last field");
}

TEST(Frames, RandomInstancesOfEveryTypeRoundTrip) {
  Prng root(20261128);
  for (size_t index = 0; index < kFrameTypes; ++index) {
    Prng rng = root.split(index);
    for (int i = 0; i < 150; ++i) {
      check_round_trip(random_frame(index, rng, kSmall), rng, true);
      if (testing::Test::HasFatalFailure()) return;
    }
    for (int i = 0; i < 6; ++i) {
      check_round_trip(random_frame(index, rng, kLarge), rng, false);
      if (testing::Test::HasFatalFailure()) return;
    }
  }
}

// A small in-test fuzzer, so the GCC build checks what fuzz_chat_frame checks: corrupted valid
// frames never crash the decoder, and whatever still decodes is canonical (it re-encodes to
// exactly the bytes it came from).
TEST(Frames, CorruptedFramesFailOrDecodeCanonically) {
  Prng rng(31337);
  size_t decoded_count = 0;
  for (int i = 0; i < 20000; ++i) {
    Bytes bytes = chat::encode(random_frame(rng.below(kFrameTypes), rng, kSmall));
    const uint64_t edits = 1 + rng.below(3);
    for (uint64_t e = 0; e < edits; ++e) {
      const size_t at = static_cast<size_t>(rng.below(bytes.size()));
      switch (rng.below(4)) {
        case 0: bytes[at] = static_cast<uint8_t>(rng.below(256)); break;
        case 1: bytes[at] ^= static_cast<uint8_t>(1u << rng.below(8)); break;
        case 2: bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(rng.below(256))); break;
        default:
          if (bytes.size() > 1) bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(at));
          break;
      }
    }
    const Result<Frame> decoded = chat::decode(bytes);
    if (!decoded.ok()) {
      EXPECT_EQ(decoded.error().code, ErrorCode::bad_input);
      continue;
    }
    decoded_count++;
    ASSERT_EQ(chat::encode(*decoded), bytes) << chat::frame_name(*decoded) << " decoded from non-canonical bytes";
  }
  // Some corruptions (a changed string byte, say) leave a valid frame; the check above needs them.
  EXPECT_GT(decoded_count, 1000u);
}

TEST(Frames, WrongVersionIsRejected) {
  Prng rng(5);
  for (size_t index = 0; index < kFrameTypes; ++index) {
    Bytes bytes = chat::encode(random_frame(index, rng, kSmall));
    for (int version : {0, 2, 127, 255}) {
      bytes[0] = static_cast<uint8_t>(version);
      const Result<Frame> decoded = chat::decode(bytes);
      ASSERT_FALSE(decoded.ok());
      EXPECT_EQ(decoded.error().code, ErrorCode::bad_input);
      EXPECT_EQ(decoded.error().message, "frame version " + std::to_string(version) + ", expected 1");
    }
  }
}

TEST(Frames, UnknownTypesAreRejectedAndKnownOnesDispatch) {
  std::set<int> known;
  Prng rng(6);
  for (size_t index = 0; index < kFrameTypes; ++index) {
    const Frame frame = random_frame(index, rng, kSmall);
    known.insert(frame_type(frame));
    const Result<Frame> decoded = chat::decode(chat::encode(frame));
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->index(), index);
  }
  EXPECT_EQ(known.size(), kFrameTypes);  // no two frames share a number
  for (int type = 0; type < 256; ++type) {
    if (known.count(type) != 0) continue;
    const Result<Frame> decoded = chat::decode(Bytes{1, static_cast<uint8_t>(type), 0, 0, 0});
    ASSERT_FALSE(decoded.ok()) << type;
    EXPECT_EQ(decoded.error().message, "unknown frame type " + std::to_string(type));
  }
}

TEST(Frames, SizeLimit) {
  EXPECT_EQ(decode_error({}), "frame shorter than its 2-byte header");
  EXPECT_EQ(decode_error({1}), "frame shorter than its 2-byte header");

  // A valid SyncResult of exactly kFrameBytesMax bytes decodes; one more byte is too_large
  // before anything else is looked at.
  chat::SyncResult result;
  result.entries.resize(16);
  for (auto& entry : result.entries) entry.body.assign(chat::kBodyMax - 100, 0x5a);
  size_t size = chat::encode_as(result).size();
  ASSERT_LT(size, wire::kFrameBytesMax);
  // Grow the last bodies until the frame is exactly the maximum (length varints stay 3 bytes).
  for (auto it = result.entries.rbegin(); it != result.entries.rend() && size < wire::kFrameBytesMax; ++it) {
    const size_t grow = std::min(wire::kFrameBytesMax - size, chat::kBodyMax - it->body.size());
    it->body.resize(it->body.size() + grow, 0x5a);
    size = chat::encode_as(result).size();
  }
  const Bytes exact = chat::encode_as(result);
  ASSERT_EQ(exact.size(), wire::kFrameBytesMax);
  const Result<Frame> decoded = chat::decode(exact);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  EXPECT_EQ(chat::encode(*decoded), exact);

  Bytes over = exact;
  over.push_back(0);
  const Result<Frame> too_large = chat::decode(over);
  ASSERT_FALSE(too_large.ok());
  EXPECT_EQ(too_large.error().code, ErrorCode::too_large);
  EXPECT_EQ(too_large.error().message, "frame of 1048577 bytes over the maximum 1048576");
  // Whatever the header says.
  over[0] = 9;
  over[1] = 250;
  EXPECT_EQ(chat::decode(over).error().code, ErrorCode::too_large);
}

// ---------------------------------------------------------------------------------------------
// docs/protocol.md against the code.

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trim(std::string s) {
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && space(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t start = 0;
  while (start < s.size() && space(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

std::vector<std::string> split_fields(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    item = trim(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

struct DocFrame {
  std::string name;
  std::vector<std::string> fields;  // lists end in "[]", as the doc writes them
};

// The rows of the "## Type numbers" table: `| 12 | Send {msg_id, conv, ...} | direction |`.
std::map<int, DocFrame> parse_type_table(const std::string& doc, std::vector<std::string>& problems) {
  std::map<int, DocFrame> rows;
  const size_t section = doc.find("\n## Type numbers\n");
  if (section == std::string::npos) {
    problems.push_back("no \"## Type numbers\" section");
    return rows;
  }
  const size_t end = doc.find("\n## ", section + 1);
  std::stringstream lines(doc.substr(section, end == std::string::npos ? std::string::npos : end - section));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("| ", 0) != 0) continue;
    std::vector<std::string> cells;
    std::stringstream cell_stream(line.substr(1));
    std::string cell;
    while (std::getline(cell_stream, cell, '|')) cells.push_back(trim(cell));
    if (cells.size() < 2 || cells[0].empty() || !std::all_of(cells[0].begin(), cells[0].end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    const int type = std::stoi(cells[0]);
    const size_t open = cells[1].find('{');
    const size_t close = cells[1].rfind('}');
    if (open == std::string::npos || close == std::string::npos || close < open) {
      problems.push_back("row " + cells[0] + " has no {fields}: " + line);
      continue;
    }
    DocFrame row{trim(cells[1].substr(0, open)), split_fields(cells[1].substr(open + 1, close - open - 1))};
    if (!rows.emplace(type, row).second) problems.push_back("type " + cells[0] + " appears twice");
  }
  return rows;
}

// The field names a record's `fields` visits, lists marked "[]" as in the doc.
class FieldNameLister {
 public:
  std::vector<std::string> names;
  template <typename T>
  void operator()(const char* name, T&, wire::Max = wire::Max{0}) {
    names.push_back(std::string(name) + (is_scalar_v<T> || is_text_v<T> ? "" : "[]"));
  }
};

template <typename T>
std::vector<std::string> code_fields() {
  FieldNameLister lister;
  T{}.fields(lister);
  return lister.names;
}

template <size_t... I>
std::map<int, std::pair<std::string, std::vector<std::string>>> code_frames(std::index_sequence<I...>) {
  std::map<int, std::pair<std::string, std::vector<std::string>>> frames;
  ((frames[std::variant_alternative_t<I, Frame>::kType] = {chat::frame_name(Frame{std::variant_alternative_t<I, Frame>{}}),
                                                            code_fields<std::variant_alternative_t<I, Frame>>()}),
   ...);
  return frames;
}

TEST(ProtocolDoc, TypeTableMatchesTheCode) {
  const std::string doc = read_text(MSGSIM_SOURCE_DIR "/docs/protocol.md");
  ASSERT_FALSE(doc.empty()) << "docs/protocol.md is missing";
  std::vector<std::string> problems;
  const std::map<int, DocFrame> rows = parse_type_table(doc, problems);
  EXPECT_THAT(problems, testing::IsEmpty());

  // The Entry record, written out below the table: "`Entry` = {kind (0 message, ...), conv, ...}".
  const size_t entry_at = doc.find("`Entry` = {");
  ASSERT_NE(entry_at, std::string::npos) << "the doc no longer spells out Entry";
  const size_t entry_end = doc.find('}', entry_at);
  std::string entry_text = doc.substr(entry_at + 11, entry_end - entry_at - 11);
  std::replace(entry_text.begin(), entry_text.end(), '\n', ' ');
  // Parenthesised notes (the kind's values) are not fields; count the kinds they list.
  size_t kinds_listed = 0;
  for (size_t open = entry_text.find('('); open != std::string::npos; open = entry_text.find('(')) {
    const size_t close = entry_text.find(')', open);
    ASSERT_NE(close, std::string::npos);
    kinds_listed = split_fields(entry_text.substr(open + 1, close - open - 1)).size();
    entry_text.erase(open, close - open + 1);
  }
  const std::vector<std::string> doc_entry = split_fields(entry_text);
  EXPECT_EQ(doc_entry, code_fields<chat::Entry>()) << "docs/protocol.md's Entry differs from chat::Entry";
  EXPECT_EQ(kinds_listed, static_cast<size_t>(chat::EntryKind::max_value) + 1);

  // The codec writes a nested record's fields inline, so the doc's `entry` and `receipt` stand
  // for the fields of Entry and of ReceiptNotice.
  const auto receipt_row = rows.find(chat::ReceiptNotice::kType);
  ASSERT_NE(receipt_row, rows.end());
  const auto expand = [&](const std::vector<std::string>& fields) {
    std::vector<std::string> out;
    for (const std::string& field : fields) {
      const std::vector<std::string>* nested = field == "entry"     ? &doc_entry
                                               : field == "receipt" ? &receipt_row->second.fields
                                                                    : nullptr;
      if (nested != nullptr) {
        out.insert(out.end(), nested->begin(), nested->end());
      } else {
        out.push_back(field);
      }
    }
    return out;
  };

  const auto frames = code_frames(std::make_index_sequence<kFrameTypes>{});
  for (const auto& [type, frame] : frames) {
    const auto row = rows.find(type);
    if (row == rows.end()) {
      ADD_FAILURE() << "docs/protocol.md has no row for type " << type << " (" << frame.first << ")";
      continue;
    }
    EXPECT_EQ(row->second.name, frame.first) << "type " << type;
    EXPECT_EQ(expand(row->second.fields), frame.second) << "fields of " << frame.first << " (type " << type << ")";
  }
  for (const auto& [type, row] : rows) {
    EXPECT_EQ(frames.count(type), 1u) << "docs/protocol.md lists type " << type << " (" << row.name
                                      << ") that the code does not have";
  }

  // The constants the prose quotes.
  EXPECT_THAT(doc, HasSubstr("version (1 byte, = " + std::to_string(wire::kWireVersion) + ")"));
  EXPECT_EQ(wire::kFrameBytesMax, size_t{1} << 20);
  EXPECT_THAT(doc, HasSubstr("A frame is at most 1 MiB"));
  EXPECT_THAT(doc, HasSubstr("ids " + std::to_string(chat::kIdMax) + " bytes"));
  EXPECT_EQ(chat::kBodyMax, size_t{64} * 1024);
  EXPECT_THAT(doc, HasSubstr("body 64 KiB"));
  EXPECT_THAT(doc, HasSubstr("a reason " + std::to_string(chat::kReasonMax) + " bytes"));
}

// ---------------------------------------------------------------------------------------------
// The fuzzers' seed corpora: one valid encoding per frame type, committed as binary files.
// MSGSIM_WRITE_FUZZ_CORPUS=1 (re)writes them; every run checks that each file decodes and that
// together they cover every type.

const std::filesystem::path kCorpusDir = MSGSIM_SOURCE_DIR "/tests/fuzz/corpus";

bool writing_corpus() {
  const char* flag = std::getenv("MSGSIM_WRITE_FUZZ_CORPUS");
  return flag != nullptr && std::string(flag) == "1";
}

void write_file(const std::filesystem::path& path, const Bytes& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::pair<std::string, Bytes>> read_corpus(const std::filesystem::path& dir) {
  std::vector<std::pair<std::string, Bytes>> files;
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string text = read_text(entry.path());
    files.emplace_back(entry.path().filename().string(), Bytes(text.begin(), text.end()));
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(FuzzCorpus, ChatFrameSeedsCoverEveryType) {
  const std::filesystem::path dir = kCorpusDir / "chat_frame";
  if (writing_corpus()) {
    Prng rng(1);
    for (size_t index = 0; index < kFrameTypes; ++index) {
      // The longest of a few draws, so list frames carry elements.
      Frame frame = random_frame(index, rng, Shape{8, 2});
      for (int draw = 0; draw < 8; ++draw) {
        Frame other = random_frame(index, rng, Shape{8, 2});
        if (chat::encode(other).size() > chat::encode(frame).size()) frame = std::move(other);
      }
      write_file(dir / (std::to_string(frame_type(frame)) + "-" + chat::frame_name(frame)), chat::encode(frame));
    }
  }
  std::set<int> types;
  for (const auto& [name, bytes] : read_corpus(dir)) {
    const Result<Frame> decoded = chat::decode(bytes);
    ASSERT_TRUE(decoded.ok()) << name << ": " << decoded.error().message;
    EXPECT_EQ(chat::encode(*decoded), bytes) << name;
    types.insert(frame_type(*decoded));
  }
  EXPECT_EQ(types.size(), kFrameTypes) << "tests/fuzz/corpus/chat_frame misses a frame type";
}

// ---------------------------------------------------------------------------------------------
// The ledger probe codec: hello = 0x01 | u32 client; welcome = 0x02 | u64 stored_upto;
// append = 0x03 | u64 seq | u16 length | payload; ack = 0x04 | u64 seq; little-endian.

void put_le(Bytes& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

Bytes ledger_layout(const ledger::Message& m) {
  Bytes out{static_cast<uint8_t>(m.type)};
  switch (m.type) {
    case ledger::MessageType::hello: put_le(out, m.client, 4); break;
    case ledger::MessageType::welcome:
    case ledger::MessageType::ack: put_le(out, m.seq, 8); break;
    case ledger::MessageType::append:
      put_le(out, m.seq, 8);
      put_le(out, m.payload.size(), 2);
      out.insert(out.end(), m.payload.begin(), m.payload.end());
      break;
  }
  return out;
}

ledger::Message random_ledger_message(Prng& rng) {
  ledger::Message m;
  m.type = static_cast<ledger::MessageType>(1 + rng.below(4));
  const uint64_t width = rng.below(65);
  const uint64_t value = width == 0 ? 0 : rng.next_u64() >> (64 - width);
  if (m.type == ledger::MessageType::hello) {
    m.client = static_cast<uint32_t>(value);
  } else {
    m.seq = value;
  }
  if (m.type == ledger::MessageType::append) {
    const uint64_t pick = rng.below(8);
    m.payload.resize(pick == 0 ? 0 : pick == 1 ? ledger::kPayloadMax : rng.below(ledger::kPayloadMax + 1));
    rng.fill(m.payload);
  }
  return m;
}

TEST(LedgerCodec, LayoutAndRoundTrip) {
  const ledger::Message hello{ledger::MessageType::hello, 0x01020304, 0, {}};
  EXPECT_EQ(ledger::encode(hello), (Bytes{1, 4, 3, 2, 1}));
  const ledger::Message append{ledger::MessageType::append, 0, 0x0102030405060708ULL, {0xaa, 0xbb}};
  EXPECT_EQ(ledger::encode(append), (Bytes{3, 8, 7, 6, 5, 4, 3, 2, 1, 2, 0, 0xaa, 0xbb}));

  Prng rng(77);
  for (int i = 0; i < 2000; ++i) {
    const ledger::Message m = random_ledger_message(rng);
    const Bytes bytes = ledger::encode(m);
    ASSERT_EQ(bytes, ledger_layout(m));
    const Result<ledger::Message> decoded = ledger::decode(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    EXPECT_EQ(decoded->type, m.type);
    EXPECT_EQ(decoded->client, m.client);
    EXPECT_EQ(decoded->seq, m.seq);
    EXPECT_EQ(decoded->payload, m.payload);
    EXPECT_EQ(ledger::encode(*decoded), bytes);

    for (size_t n = 0; n < bytes.size(); ++n) {
      const Result<ledger::Message> cut = ledger::decode(ByteView(bytes).first(n));
      ASSERT_FALSE(cut.ok()) << "cut to " << n << " of " << bytes.size();
      EXPECT_EQ(cut.error().code, ErrorCode::bad_input);
      EXPECT_THAT(cut.error().message, StartsWith("ledger frame: "));
    }
    Bytes trailing = bytes;
    trailing.push_back(0);
    const Result<ledger::Message> extra = ledger::decode(trailing);
    ASSERT_FALSE(extra.ok());
    EXPECT_EQ(extra.error().message, "ledger frame: trailing bytes");
  }
}

TEST(LedgerCodec, MalformedFramesAreRejected) {
  for (int type = 0; type < 256; ++type) {
    if (type >= 1 && type <= 4) continue;
    const Result<ledger::Message> decoded = ledger::decode(Bytes{static_cast<uint8_t>(type), 0, 0, 0, 0, 0, 0, 0, 0});
    ASSERT_FALSE(decoded.ok());
    EXPECT_EQ(decoded.error().message, "ledger frame: unknown type " + std::to_string(type));
  }
  EXPECT_EQ(ledger::decode(Bytes{}).error().message, "ledger frame: empty");

  // A payload length over kPayloadMax is refused as too large, even with the bytes present.
  Bytes over{3};
  put_le(over, 1, 8);
  put_le(over, ledger::kPayloadMax + 1, 2);
  over.resize(over.size() + ledger::kPayloadMax + 1, 0x11);
  EXPECT_EQ(ledger::decode(over).error().code, ErrorCode::too_large);
  Bytes max_length{3};
  put_le(max_length, 1, 8);
  put_le(max_length, 0xffff, 2);
  EXPECT_EQ(ledger::decode(max_length).error().code, ErrorCode::too_large);

  // A length within the bound that claims more than the frame holds.
  Bytes short_payload{3};
  put_le(short_payload, 1, 8);
  put_le(short_payload, 10, 2);
  short_payload.resize(short_payload.size() + 9, 0x22);
  const Result<ledger::Message> truncated = ledger::decode(short_payload);
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.error().code, ErrorCode::bad_input);
  EXPECT_EQ(truncated.error().message, "ledger frame: append payload truncated");

  // kPayloadMax exactly is fine.
  Bytes at_max{3};
  put_le(at_max, 1, 8);
  put_le(at_max, ledger::kPayloadMax, 2);
  at_max.resize(at_max.size() + ledger::kPayloadMax, 0x33);
  ASSERT_TRUE(ledger::decode(at_max).ok());
}

TEST(FuzzCorpus, LedgerFrameSeedsCoverEveryType) {
  const std::filesystem::path dir = kCorpusDir / "ledger_frame";
  if (writing_corpus()) {
    const ledger::Message seeds[] = {
        {ledger::MessageType::hello, 17, 0, {}},
        {ledger::MessageType::welcome, 0, 41, {}},
        {ledger::MessageType::append, 0, 42, Bytes(32, 42)},
        {ledger::MessageType::ack, 0, 42, {}},
    };
    const char* names[] = {"1-hello", "2-welcome", "3-append", "4-ack"};
    for (size_t i = 0; i < std::size(seeds); ++i) write_file(dir / names[i], ledger::encode(seeds[i]));
  }
  std::set<int> types;
  for (const auto& [name, bytes] : read_corpus(dir)) {
    const Result<ledger::Message> decoded = ledger::decode(bytes);
    ASSERT_TRUE(decoded.ok()) << name << ": " << decoded.error().message;
    EXPECT_EQ(ledger::encode(*decoded), bytes) << name;
    types.insert(static_cast<int>(decoded->type));
  }
  EXPECT_EQ(types, (std::set<int>{1, 2, 3, 4})) << "tests/fuzz/corpus/ledger_frame misses a message type";
}

}  // namespace
}  // namespace msgsim
