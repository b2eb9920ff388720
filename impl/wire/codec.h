// The compact binary encoding every msgsim frame uses (docs/protocol.md has the byte layout).
//
// A frame is: version (1 byte) | type (1 byte) | its fields, in declaration order, with no
// padding or tags. Field encodings:
//   unsigned integer  LEB128 varint, at most 10 bytes, no overlong (redundant) final zero byte
//   signed integer    zigzag, then as unsigned
//   bool              one byte, 0 or 1
//   bytes, string     varint length, then the bytes (strings are UTF-8 by convention; the codec
//                     does not check)
//   list              varint count, then each element
// A message struct lists its fields once, in `template <class V> void fields(V& v)`; the
// encoder and the decoder both walk that list, so they cannot disagree. Every string, bytes
// and list field names its maximum, and the decoder rejects anything longer before it
// allocates, so no input can make it allocate more than the frame's own size allows.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "impl/base/result.h"
#include "impl/runtime.h"

namespace msgsim::wire {

inline constexpr uint8_t kWireVersion = 1;
inline constexpr size_t kFrameBytesMax = 1 << 20;  // 1 MiB: a frame larger than this is refused

// A bound on a variable-length field, carried next to it in `fields`.
struct Max {
  size_t n;
};

class Writer {
 public:
  explicit Writer(Bytes& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(v); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<uint8_t>(v) | 0x80);
      v >>= 7;
    }
    out_.push_back(static_cast<uint8_t>(v));
  }
  void bytes(const uint8_t* data, size_t size) {
    varint(size);
    out_.insert(out_.end(), data, data + size);
  }

  // The field visitor: `v(name, field)` or `v(name, field, Max{n})`.
  template <typename T>
  void operator()(const char*, const T& field, Max bound = Max{0}) {
    if constexpr (std::is_same_v<T, bool>) {
      u8(field ? 1 : 0);
    } else if constexpr (std::is_enum_v<T>) {
      varint(static_cast<uint64_t>(field));
    } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
      const auto x = static_cast<int64_t>(field);
      varint((static_cast<uint64_t>(x) << 1) ^ static_cast<uint64_t>(x >> 63));
    } else if constexpr (std::is_integral_v<T>) {
      varint(static_cast<uint64_t>(field));
    } else if constexpr (std::is_same_v<T, std::string>) {
      MSGSIM_ASSERT_LE(field.size(), bound.n);
      bytes(reinterpret_cast<const uint8_t*>(field.data()), field.size());
    } else if constexpr (std::is_same_v<T, Bytes>) {
      MSGSIM_ASSERT_LE(field.size(), bound.n);
      bytes(field.data(), field.size());
    } else {  // a list of records
      MSGSIM_ASSERT_LE(field.size(), bound.n);
      varint(field.size());
      for (const auto& item : field) const_cast<typename T::value_type&>(item).fields(*this);
    }
  }

 private:
  Bytes& out_;
};

class Reader {
 public:
  explicit Reader(ByteView in) : in_(in) {}

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  bool at_end() const { return pos_ == in_.size(); }
  size_t position() const { return pos_; }

  bool u8(uint8_t& v) {
    if (pos_ >= in_.size()) return fail("truncated");
    v = in_[pos_++];
    return true;
  }
  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (pos_ >= in_.size()) return fail("truncated varint");
      const uint8_t byte = in_[pos_++];
      if (shift == 63 && byte > 1) return fail("varint overflows 64 bits");
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        if (byte == 0 && shift > 0) return fail("overlong varint");
        return true;
      }
    }
    return fail("varint longer than 10 bytes");
  }
  bool length(size_t bound, size_t& n) {
    uint64_t v = 0;
    if (!varint(v)) return false;
    if (v > bound) return fail("length " + std::to_string(v) + " over the maximum " + std::to_string(bound));
    if (v > in_.size() - pos_) return fail("length " + std::to_string(v) + " past the end of the frame");
    n = static_cast<size_t>(v);
    return true;
  }

  template <typename T>
  void operator()(const char* name, T& field, Max bound = Max{0}) {
    if (!ok()) return;
    field_ = name;
    if constexpr (std::is_same_v<T, bool>) {
      uint8_t b = 0;
      if (u8(b) && b > 1) fail("bool is " + std::to_string(b));
      field = b == 1;
    } else if constexpr (std::is_enum_v<T>) {
      uint64_t v = 0;
      if (!varint(v)) return;
      if (v > static_cast<uint64_t>(T::max_value)) {
        fail("enum value " + std::to_string(v) + " unknown");
        return;
      }
      field = static_cast<T>(v);
    } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
      uint64_t v = 0;
      if (!varint(v)) return;
      const auto x = static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1));
      if (x < static_cast<int64_t>(std::numeric_limits<T>::min()) || x > static_cast<int64_t>(std::numeric_limits<T>::max())) {
        fail("integer out of range");
        return;
      }
      field = static_cast<T>(x);
    } else if constexpr (std::is_integral_v<T>) {
      uint64_t v = 0;
      if (!varint(v)) return;
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        fail("integer out of range");
        return;
      }
      field = static_cast<T>(v);
    } else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, Bytes>) {
      size_t n = 0;
      if (!length(bound.n, n)) return;
      // From a pointer and a size: one memcpy. Assigning a std::string from the span's uint8_t
      // iterators went through a temporary string and a per-character loop (about 300
      // instructions a field; a message crosses ~75 string fields on its way).
      const uint8_t* data = in_.data() + pos_;
      if constexpr (std::is_same_v<T, std::string>) {
        field.assign(reinterpret_cast<const char*>(data), n);
      } else {
        field.assign(data, data + n);
      }
      pos_ += n;
    } else {  // a list of records
      uint64_t count = 0;
      if (!varint(count)) return;
      if (count > bound.n) {
        fail("count " + std::to_string(count) + " over the maximum " + std::to_string(bound.n));
        return;
      }
      // Each element takes at least one byte, so a count past the remaining bytes is a lie.
      if (count > in_.size() - pos_) {
        fail("count " + std::to_string(count) + " past the end of the frame");
        return;
      }
      field.clear();
      field.resize(static_cast<size_t>(count));
      // An element's error names its place in the list: "cursors[3].conv: ...".
      for (size_t i = 0; i < field.size(); ++i) {
        field[i].fields(*this);
        if (!ok()) {
          error_ = std::string(name) + "[" + std::to_string(i) + "]." + error_;
          return;
        }
      }
      field_ = name;
    }
  }

  bool fail(const std::string& what) {
    if (error_.empty()) error_ = (field_ != nullptr ? std::string(field_) + ": " : std::string()) + what;
    return false;
  }

 private:
  ByteView in_;
  size_t pos_ = 0;
  const char* field_ = nullptr;
  std::string error_;
};

}  // namespace msgsim::wire
