// Errors at boundaries: a small Result<T> (GCC 12 has no std::expected). One error code per
// distinct reaction of the caller, as FoundationDB's error_definitions.h has it; the message
// says what and where for the human.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "impl/base/assert.h"

namespace msgsim {

enum class ErrorCode {
  bad_input,        // malformed bytes, JSON, flags: the caller reports it and gives up (exit 2)
  too_large,        // a size bound was exceeded: reject this input, keep the connection/state
  not_found,        // the thing asked for does not exist
  unavailable,      // a transient condition: retry later
  io_error,         // the disk or the network failed underneath
  crypto_error,     // a signature, tag or key did not verify
};

const char* to_string(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::bad_input;
  std::string message;
};

inline Error make_error(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : state_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    MSGSIM_ASSERT(ok(), "Result::value() on an error: " + std::get<1>(state_).message);
    return std::get<0>(state_);
  }
  const T& value() const& {
    MSGSIM_ASSERT(ok(), "Result::value() on an error: " + std::get<1>(state_).message);
    return std::get<0>(state_);
  }
  T&& value() && {
    MSGSIM_ASSERT(ok(), "Result::value() on an error: " + std::get<1>(state_).message);
    return std::get<0>(std::move(state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    MSGSIM_ASSERT(!ok(), "Result::error() on a value");
    return std::get<1>(state_);
  }

 private:
  std::variant<T, Error> state_;
};

// Result<void>: success carries nothing.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    MSGSIM_ASSERT(!ok_, "Result::error() on a value");
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

inline const char* to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::bad_input: return "bad_input";
    case ErrorCode::too_large: return "too_large";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::unavailable: return "unavailable";
    case ErrorCode::io_error: return "io_error";
    case ErrorCode::crypto_error: return "crypto_error";
  }
  return "unknown";
}

}  // namespace msgsim
