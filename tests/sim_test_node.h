// A scriptable node for simulator tests: it records every handler call with the node's local
// time, and runs test-supplied reactions. Only tests use it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "impl/runtime.h"

namespace msgsim::testing {

struct Observed {
  std::string what;  // start, accept, connected, frame, disconnect:<reason>, timer, drain
  int64_t local_ns;
  ConnId conn = kNoConn;
  std::string data;  // the frame as text, or the timer tag
};

struct Script {
  std::vector<Observed> log;
  std::function<void(Context&)> on_start;
  std::function<void(Context&, ConnId, const std::string&)> on_frame;
  std::function<void(Context&, ConnId)> on_connected;
  std::function<void(Context&, ConnId, NodeId)> on_accept;
  std::function<void(Context&, uint64_t)> on_timer;
  bool exit_on_drain = true;
  int incarnations = 0;

  std::vector<std::string> frames() const {
    std::vector<std::string> out;
    for (const auto& o : log)
      if (o.what == "frame") out.push_back(o.data);
    return out;
  }
  const Observed* find(const std::string& what) const {
    for (const auto& o : log)
      if (o.what == what) return &o;
    return nullptr;
  }
  size_t count(const std::string& what) const {
    size_t n = 0;
    for (const auto& o : log) n += o.what == what;
    return n;
  }
};

class ScriptNode final : public Node {
 public:
  explicit ScriptNode(Script& script) : s_(script) { s_.incarnations++; }
  void on_start(Context& ctx) override {
    s_.log.push_back({"start", ctx.now_ns(), kNoConn, {}});
    if (s_.on_start) s_.on_start(ctx);
  }
  void on_accept(Context& ctx, ConnId conn, NodeId peer) override {
    s_.log.push_back({"accept", ctx.now_ns(), conn, {}});
    if (s_.on_accept) s_.on_accept(ctx, conn, peer);
  }
  void on_connected(Context& ctx, ConnId conn) override {
    s_.log.push_back({"connected", ctx.now_ns(), conn, {}});
    if (s_.on_connected) s_.on_connected(ctx, conn);
  }
  void on_frame(Context& ctx, ConnId conn, ByteView frame) override {
    std::string text(frame.begin(), frame.end());
    s_.log.push_back({"frame", ctx.now_ns(), conn, text});
    if (s_.on_frame) s_.on_frame(ctx, conn, text);
  }
  void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) override {
    s_.log.push_back({std::string("disconnect:") + to_string(reason), ctx.now_ns(), conn, {}});
  }
  void on_timer(Context& ctx, uint64_t tag) override {
    s_.log.push_back({"timer", ctx.now_ns(), kNoConn, std::to_string(tag)});
    if (s_.on_timer) s_.on_timer(ctx, tag);
  }
  void on_drain(Context& ctx, int64_t) override {
    s_.log.push_back({"drain", ctx.now_ns(), kNoConn, {}});
    if (s_.exit_on_drain) ctx.exit();
  }

 private:
  Script& s_;
};

inline Bytes text_frame(const std::string& text) { return Bytes(text.begin(), text.end()); }

}  // namespace msgsim::testing
