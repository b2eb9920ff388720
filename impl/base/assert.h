// Always-on assertions in the TigerBeetle style: a broken internal invariant stops the
// process with a message naming the condition, the values involved and the place. Bad input
// from outside is never asserted on; it is returned as an error value (base/result.h).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace msgsim::detail {

[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line,
                                     const std::string& detail) {
  std::fprintf(stderr, "%s:%d: assertion failed: %s%s%s\n", file, line, expr,
               detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

template <typename T>
std::string show_value(const T& value) {
  if constexpr (requires(std::ostream& os, const T& v) { os << v; }) {
    std::ostringstream out;
    if constexpr (std::is_same_v<T, unsigned char> || std::is_same_v<T, signed char> ||
                  std::is_same_v<T, char>) {
      out << static_cast<int>(value);
    } else {
      out << value;
    }
    return out.str();
  } else {
    return "<unprintable>";
  }
}

template <typename A, typename B>
[[noreturn]] void assert_cmp_fail(const char* expr, const char* file, int line, const A& a,
                                  const B& b) {
  assert_fail(expr, file, line, "left = " + show_value(a) + ", right = " + show_value(b));
}

}  // namespace msgsim::detail

// MSGSIM_ASSERT(cond) or MSGSIM_ASSERT(cond, "why")
#define MSGSIM_ASSERT(cond, ...)                                                         \
  do {                                                                                   \
    if (!(cond)) [[unlikely]]                                                            \
      ::msgsim::detail::assert_fail(#cond, __FILE__, __LINE__, std::string{__VA_ARGS__}); \
  } while (0)

#define MSGSIM_ASSERT_CMP_(a, op, b)                                                     \
  do {                                                                                   \
    const auto& msgsim_a_ = (a);                                                         \
    const auto& msgsim_b_ = (b);                                                         \
    if (!(msgsim_a_ op msgsim_b_)) [[unlikely]]                                          \
      ::msgsim::detail::assert_cmp_fail(#a " " #op " " #b, __FILE__, __LINE__, msgsim_a_, \
                                        msgsim_b_);                                      \
  } while (0)

#define MSGSIM_ASSERT_EQ(a, b) MSGSIM_ASSERT_CMP_(a, ==, b)
#define MSGSIM_ASSERT_NE(a, b) MSGSIM_ASSERT_CMP_(a, !=, b)
#define MSGSIM_ASSERT_LT(a, b) MSGSIM_ASSERT_CMP_(a, <, b)
#define MSGSIM_ASSERT_LE(a, b) MSGSIM_ASSERT_CMP_(a, <=, b)
#define MSGSIM_ASSERT_GT(a, b) MSGSIM_ASSERT_CMP_(a, >, b)
#define MSGSIM_ASSERT_GE(a, b) MSGSIM_ASSERT_CMP_(a, >=, b)

#define MSGSIM_UNREACHABLE(why) ::msgsim::detail::assert_fail("unreachable", __FILE__, __LINE__, why)
