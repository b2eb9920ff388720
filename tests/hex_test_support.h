// Test vectors are written in hex (RFC 5869, RFC 7748, RFC 8032, ...): one decoder for every test.
#pragma once

#include <gtest/gtest.h>

#include <string_view>

#include "impl/crypto/primitives.h"

namespace msgsim::test {

// Decodes a hex string of even length; a bad vector is a test failure naming it, not a crash.
inline crypto::Bytes from_hex(std::string_view hex) {
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  crypto::Bytes out;
  EXPECT_EQ(hex.size() % 2, 0u) << "odd-length hex vector: " << hex;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    const int high = nibble(hex[i]);
    const int low = nibble(hex[i + 1]);
    EXPECT_TRUE(high >= 0 && low >= 0) << "bad hex at offset " << i << " of vector: " << hex;
    out.push_back(static_cast<uint8_t>(((high < 0 ? 0 : high) << 4) | (low < 0 ? 0 : low)));
  }
  return out;
}

}  // namespace msgsim::test
