// The runtime contract: how every node of the system touches the world.
//
// Everything under impl/ is sans-IO. A node is a plain object whose handlers the runtime calls
// (`on_start`, `on_accept`, `on_connected`, `on_frame`, `on_disconnect`, `on_timer`,
// `on_drain`); the node acts only through the `Context` it is handed: it reads the time from it,
// sends through it, sets timers through it, draws randomness from it. Two runtimes implement
// `Context`: the simulator (sim/, virtual time, one thread, faults) and the live runtime (live/,
// Boost.Asio, real sockets). A node cannot tell which one it runs on.
//
// Call order, which every runtime guarantees and every node may rely on:
//  1. `on_start` is the first call of every incarnation: at first boot and after every restart.
//     Nothing in memory survives a crash: the runtime builds a fresh Node from its factory, and
//     whatever must survive has to be in `db()` and synced (PRAGMA synchronous=FULL) before the
//     node acts on it. Persist before you send: a node must not send an acknowledgement for data
//     that is not yet durable.
//  2. For a connection this node opened with `connect`: `on_connected` once the peer accepted,
//     or `on_disconnect` if it could not be reached. Frames sent before `on_connected` are
//     queued behind the handshake and dropped if it fails.
//  3. For a connection a peer opened: `on_accept` before any `on_frame` of it.
//  4. `on_frame` delivers each frame the peer sent, in order, at most once, while the connection
//     lives. After `on_disconnect(conn)` or this node's own `close(conn)`, nothing more arrives
//     on `conn`, and frames that were in flight are gone.
//  5. `on_timer(tag)` fires once per `set_timer`, unless cancelled first; a timer never fires
//     in a later incarnation.
//  6. `on_drain(deadline)` asks for a graceful shutdown: hand off, tell clients to go
//     elsewhere, then call `ctx.exit()`; at `deadline` the runtime stops the node anyway.
//  No handler is re-entered: a `send` to oneself is not possible, and every effect of a call
//  (frames, timers) reaches handlers only after the current handler returns.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "impl/base/prng.h"

struct sqlite3;

namespace msgsim {

namespace history {
struct Event;  // oracle/event.h: one line of a history (spec/history.md)
}

using NodeId = uint32_t;
inline constexpr NodeId kNoNode = UINT32_MAX;

// A connection handle, as one endpoint sees it. Opaque; never reused within a run.
using ConnId = uint64_t;
inline constexpr ConnId kNoConn = 0;

// A timer handle, for `cancel_timer`. Opaque; never reused within a run.
using TimerId = uint64_t;

using Bytes = std::vector<uint8_t>;
using ByteView = std::span<const uint8_t>;

inline constexpr int64_t kNanosPerMicro = 1'000;
inline constexpr int64_t kNanosPerMilli = 1'000'000;
inline constexpr int64_t kNanosPerSecond = 1'000'000'000;

enum class DisconnectReason : uint8_t {
  closed_by_peer,  // the peer called close(); every frame it sent before was delivered
  reset,           // the peer's process crashed or was stopped (TCP RST)
  timeout,         // the path stayed cut past the connection timeout (no RST came)
  refused,         // connect(): nothing listened at the peer (its process is down)
};

const char* to_string(DisconnectReason reason);

enum class LogLevel : uint8_t { debug, info, warn, error };

class Context {
 public:
  virtual ~Context() = default;

  // This node's own clock, in nanoseconds: monotonic within an incarnation, skewed and drifting
  // when a fault says so. Never the wall clock.
  virtual int64_t now_ns() const = 0;
  virtual NodeId self() const = 0;
  virtual std::string_view region() const = 0;

  // Opens a connection to `peer`; the handle is usable for `send` at once (see call order 2).
  virtual ConnId connect(NodeId peer) = 0;
  virtual void send(ConnId conn, Bytes frame) = 0;
  // Closes this end. The peer gets every frame sent before, then on_disconnect(closed_by_peer).
  virtual void close(ConnId conn) = 0;

  // Fires `on_timer(tag)` after `delay_ns` of this node's clock.
  virtual TimerId set_timer(int64_t delay_ns, uint64_t tag) = 0;
  virtual void cancel_timer(TimerId timer) = 0;

  // This node's random stream: seeded by the runtime, the same on every replay.
  virtual Prng& rng() = 0;

  // This node's SQLite database, opened on first use through the runtime's VFS (the simulated
  // disk in sim/, a real file in live/). It survives restarts; what survives a crash is what
  // was synced.
  virtual sqlite3* db() = 0;

  // A history event observed by a client device (spec/history.md). Server nodes never emit.
  virtual void emit(const history::Event& event) = 0;

  virtual void log(LogLevel level, std::string_view message) = 0;

  // Charges virtual CPU time to this node: the node is busy, and later events wait. No-op live.
  virtual void charge_cpu(int64_t cost_ns) = 0;

  // Called by a draining node when its handoff is complete; the runtime then stops it. Called
  // outside a drain, it is a fail-stop: the node met an error it must not carry on from (a
  // write or an fsync failed), the runtime stops it, and a supervisor restarts it later, when it
  // recovers from its database.
  virtual void exit() = 0;
};

class Node {
 public:
  virtual ~Node() = default;
  virtual void on_start(Context& ctx) = 0;
  virtual void on_accept(Context& ctx, ConnId conn, NodeId peer) = 0;
  virtual void on_connected(Context& ctx, ConnId conn) = 0;
  virtual void on_frame(Context& ctx, ConnId conn, ByteView frame) = 0;
  virtual void on_disconnect(Context& ctx, ConnId conn, DisconnectReason reason) = 0;
  virtual void on_timer(Context& ctx, uint64_t tag) = 0;
  virtual void on_drain(Context& ctx, int64_t deadline_ns) {
    (void)deadline_ns;
    ctx.exit();
  }
  // A one-line description of the node's state, for traces and assertion messages.
  virtual std::string describe() const { return {}; }
};

// Builds a fresh node for each incarnation; whatever it captures must be configuration only.
using NodeFactory = std::function<std::unique_ptr<Node>()>;

inline const char* to_string(DisconnectReason reason) {
  switch (reason) {
    case DisconnectReason::closed_by_peer: return "closed_by_peer";
    case DisconnectReason::reset: return "reset";
    case DisconnectReason::timeout: return "timeout";
    case DisconnectReason::refused: return "refused";
  }
  return "unknown";
}

}  // namespace msgsim
