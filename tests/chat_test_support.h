// Helpers shared by the chat node tests that drive nodes in a small simulated world with
// scripted peers (tests/sim_test_node.h): the network they run on and the frames a script got.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "impl/chat/protocol.h"
#include "sim/simulator.h"
#include "tests/sim_test_node.h"

namespace msgsim::chat::test_support {

// One region, sub-millisecond one-way latency, a 5 s connection timeout.
inline sim::NetworkConfig one_region() {
  sim::NetworkConfig net;
  net.regions = {"here"};
  net.base_ns = {{400'000}};
  net.jitter_mean_ns = {{100'000}};
  net.connection_timeout_ns = 5 * kNanosPerSecond;
  return net;
}

// A frame a script received, decoded; a frame that does not decode fails the test.
inline Frame decoded(const std::string& text) {
  Result<Frame> frame = decode(ByteView(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  EXPECT_TRUE(frame.ok()) << (frame.ok() ? "" : frame.error().message);
  return frame.ok() ? *frame : Frame{};
}

// Every frame of type T a script received, in order.
template <typename T>
std::vector<T> frames_of(const testing::Script& script) {
  std::vector<T> out;
  for (const std::string& text : script.frames()) {
    Frame frame = decoded(text);
    if (auto* f = std::get_if<T>(&frame)) out.push_back(std::move(*f));
  }
  return out;
}

}  // namespace msgsim::chat::test_support
