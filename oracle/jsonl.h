// The JSON Lines side of histories: a hand-written parser for one event line (nlohmann_json is
// an order of magnitude too slow for the oracle's 5 million events per second) and a streaming
// line reader. The parser accepts any valid JSON object (whitespace, escapes, unknown fields of
// any type, nested values, numbers with fractions and exponents) and rejects anything that is
// not valid JSON, naming the reason; the caller adds the line number.
#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/result.h"
#include "oracle/event.h"

namespace msgsim::history {

// Bounds on what one line may hold; beyond them the line is bad input.
inline constexpr size_t kLineBytesMax = size_t{1} << 20;
inline constexpr int kJsonDepthMax = 64;

// Appends `text` as a JSON string literal (quotes, escapes for '"', '\\' and control bytes).
void append_json_string(std::string& out, std::string_view text);

// Parses one line (without its '\n') into `out`, overwriting the fields the line's type uses
// and resetting the others. On bad input returns an error whose message is the reason only.
Status parse_event_line(std::string_view line, Event& out);

// The same parser without copies: `out`'s strings view the line, except strings written with
// escapes, which are decoded into this parser's buffers. The views stay valid until the next
// parse or until the line's bytes go away, whichever is first.
class EventParser {
 public:
  Status parse(std::string_view line, EventView& out);
  // The general parser alone, without the fast path for plainly written lines that parse()
  // tries first: parse() must agree with it on every line (the tests and the fuzz target
  // compare them).
  Status parse_general(std::string_view line, EventView& out);
  // The same over a copy of the line that this parser keeps, so the views stay valid after the
  // reader moves on (until this parser's next parse): a caller can parse one line ahead.
  Status parse_copy(std::string_view line, EventView& out) {
    line_.assign(line.data(), line.size());
    return parse(line_, out);
  }

 private:
  std::string line_;
  // One buffer per string field (indexed like the parser's field table), so that two escaped
  // fields of one line do not share storage.
  static constexpr size_t kStringFieldsMax = 18;
  std::string decoded_[kStringFieldsMax];
};

// A regular file's bytes mapped read-only, so that a history is judged where the kernel keeps
// it, without reading it through a buffer (LineReader(text)). The bytes must not shrink while
// mapped (a file truncated underneath gives SIGBUS, as for any mapping).
class MappedFile {
 public:
  // Not a regular file (a pipe, a terminal), an empty one, or a failed open or mmap: an error,
  // and the caller reads the file as a stream instead.
  static Result<MappedFile> open(const std::string& path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
  std::string_view bytes() const { return {static_cast<const char*>(data_), size_}; }

 private:
  MappedFile(void* data, size_t size) : data_(data), size_(size) {}
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Splits an istream into lines without copying each one: reads blocks into a bounded buffer.
// Or splits bytes already in memory (a mapped file, a string) with no buffer at all.
class LineReader {
 public:
  // A line `next` returns stays valid until `lines_kept` more lines have been returned (0: until
  // the next call). With lines_kept > 0 the reader does not move bytes to make room: it goes on
  // in a fresh buffer and frees a full one once its last line is that far behind, so a
  // pipeline can keep views of the lines in flight without copying them.
  explicit LineReader(std::istream& in, size_t lines_kept = 0);
  // Lines straight out of `text`, which must outlive the reader: every line stays valid as long
  // as `text` does (lines_kept() is the largest size_t), and no byte is copied. The same lines
  // and errors as a stream of the same bytes.
  explicit LineReader(std::string_view text);
  // Sets `line` (valid until the next call) and returns true, or returns false at the end of the
  // input; a line longer than kLineBytesMax is an error.
  Result<bool> next(std::string_view& line);
  // 1-based number of the line `next` returned last.
  uint64_t line_number() const { return line_number_; }
  size_t lines_kept() const { return lines_kept_; }

 private:
  bool refill();
  // Frees the retired buffers whose lines may no longer be in use.
  void release_retired();

  // A full buffer that still holds lines in use: valid until line last_line + lines_kept_.
  struct Retired {
    std::string bytes;
    uint64_t last_line;
  };
  static constexpr size_t kRetiredMax = 64;  // beyond this the oldest is kept anyway (see refill)

  std::istream* in_ = nullptr;  // null when reading from memory
  size_t lines_kept_ = 0;
  std::vector<Retired> retired_;
  std::string spare_;  // a freed buffer, reused by the next refill
  std::string buffer_;
  // The bytes lines are cut from: buffer_'s, or the text given to the memory constructor.
  const char* data_ = nullptr;
  size_t begin_ = 0;  // first unconsumed byte
  size_t end_ = 0;    // one past the last valid byte
  bool eof_ = false;
  uint64_t line_number_ = 0;
};

}  // namespace msgsim::history
