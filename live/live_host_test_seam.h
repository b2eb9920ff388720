// A seam for tests of LiveHost's WebSocket session without sockets: the very session class that
// serves accepted device connections over TCP (live_host.cpp's BasicWsConn), run over
// beast::test::stream, whose fail_count makes its n-th operation fail. Production code never
// calls it; it changes nothing of what LiveHost does on real sockets.
#pragma once

#include <boost/beast/_experimental/test/stream.hpp>
#include <memory>

#include "live/live_host.h"

namespace msgsim::live {

struct LiveHostTestSeam {
  // Hands `stream` to node `id` of `host` as an accepted connection whose first byte is yet to
  // be read: the session reads the HTTP upgrade from it, as one the Sniffer handed over would.
  // The session is owned as a real one is (by its pending operations and the node's table); the
  // weak reference lets a test see that it is freed once it ends.
  static std::weak_ptr<void> accept_websocket(LiveHost& host, NodeId id, boost::beast::test::stream stream);
};

}  // namespace msgsim::live
