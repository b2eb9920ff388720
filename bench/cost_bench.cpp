// The cost model's measurements (`msgsim calibrate` runs this program and maps each result to
// a kind of work in the cost table; reports/README.md documents the mapping). Each benchmark
// times one unit of a server's work with the project's own code where the work is the
// project's (the wire codec, the SQLite statements' shapes the queue and storage use) and with
// the closest real operation where the simulator abstracts it (a socket read and write per
// frame; an X25519 agreement and an HMAC check for a connection's handshake).
#include <benchmark/benchmark.h>

#include <sodium.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <string>

#include "impl/base/assert.h"
#include "impl/chat/config.h"
#include "impl/chat/protocol.h"

namespace msgsim::chat {
namespace {

constexpr size_t kBodyBytes = 100;  // a short chat message's ciphertext

Entry sample_entry(uint64_t seq) {
  Entry e;
  e.kind = EntryKind::message;
  e.conv = "dm:u1234567:u7654321";
  e.seq = seq;
  e.msg_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
  e.from_user = "u1234567";
  e.from_device = "u1234567/1";
  e.to = "u7654321";
  e.body = Bytes(kBodyBytes, 0x5a);
  return e;
}

Bytes sample_send() {
  Send send;
  send.msg_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
  send.conv = "dm:u1234567:u7654321";
  send.to = "u7654321";
  send.body = Bytes(kBodyBytes, 0x5a);
  return encode_as(send);
}

// One frame through the kernel: a write and a read of a frame-sized buffer on a socket pair.
void BM_CostFrameIo(benchmark::State& state) {
  int fds[2];
  MSGSIM_ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  const Bytes frame = sample_send();
  Bytes in(frame.size());
  for (auto _ : state) {
    benchmark::DoNotOptimize(write(fds[0], frame.data(), frame.size()));
    benchmark::DoNotOptimize(read(fds[1], in.data(), in.size()));
  }
  close(fds[0]);
  close(fds[1]);
}
BENCHMARK(BM_CostFrameIo);

void BM_CostDecode(benchmark::State& state) {
  const Bytes frame = sample_send();
  for (auto _ : state) {
    Result<Frame> decoded = decode(frame);
    benchmark::DoNotOptimize(decoded);
  }
}
BENCHMARK(BM_CostDecode);

// Route a send: pick the partition, look up its leader's connection, encode the Produce.
void BM_CostRoute(benchmark::State& state) {
  ChatTopology topology;
  topology.partitions = 64;
  for (NodeId q = 0; q < 8; ++q) topology.queues.push_back(q);
  std::map<NodeId, uint64_t> connections;
  for (NodeId q = 0; q < 8; ++q) connections[q] = q + 100;
  uint64_t request = 0;
  for (auto _ : state) {
    Entry e = sample_entry(0);
    const NodeId leader = topology.queue_of(topology.partition_of(e.conv));
    benchmark::DoNotOptimize(connections.find(leader));
    Bytes out = encode_as(Produce{++request, std::move(e)});
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_CostRoute);

struct Db {
  sqlite3* db = nullptr;
  Db() {
    MSGSIM_ASSERT(sqlite3_open(":memory:", &db) == SQLITE_OK);
    exec("CREATE TABLE log(partition INTEGER, offset INTEGER, msg_id TEXT, conv TEXT, entry BLOB, "
         "PRIMARY KEY(partition, offset))");
    exec("CREATE UNIQUE INDEX log_msg ON log(msg_id)");
    exec("CREATE TABLE messages(conv TEXT, seq INTEGER, msg_id TEXT UNIQUE, entry BLOB, PRIMARY KEY(conv, seq))");
  }
  ~Db() { sqlite3_close(db); }
  void exec(const char* sql) { MSGSIM_ASSERT(sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK, sql); }
  sqlite3_stmt* prepare(const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    MSGSIM_ASSERT(sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) == SQLITE_OK, sql);
    return stmt;
  }
};

// Append one entry to a partition's log in its own transaction (the queue leader's work before
// it acknowledges; the fsync itself is the disk's time, not CPU).
void append(Db& db, sqlite3_stmt* insert, uint64_t offset, const Bytes& encoded) {
  db.exec("BEGIN");
  const std::string msg_id = "m" + std::to_string(offset);
  sqlite3_bind_int64(insert, 1, 3);
  sqlite3_bind_int64(insert, 2, static_cast<int64_t>(offset));
  sqlite3_bind_text(insert, 3, msg_id.data(), static_cast<int>(msg_id.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(insert, 4, "dm:u1234567:u7654321", -1, SQLITE_STATIC);
  sqlite3_bind_blob(insert, 5, encoded.data(), static_cast<int>(encoded.size()), SQLITE_STATIC);
  MSGSIM_ASSERT(sqlite3_step(insert) == SQLITE_DONE);
  sqlite3_reset(insert);
  db.exec("COMMIT");
}

void BM_CostAppend(benchmark::State& state) {
  Db db;
  sqlite3_stmt* insert = db.prepare("INSERT INTO log VALUES(?, ?, ?, ?, ?)");
  const Bytes encoded = encode_as(Deliver{sample_entry(1)});
  uint64_t offset = 0;
  for (auto _ : state) append(db, insert, ++offset, encoded);
  sqlite3_finalize(insert);
}
BENCHMARK(BM_CostAppend);

// A follower's share per record: decode the leader's frame's record and append it.
void BM_CostReplicate(benchmark::State& state) {
  Db db;
  sqlite3_stmt* insert = db.prepare("INSERT INTO log VALUES(?, ?, ?, ?, ?)");
  const Bytes frame = encode_as(Records{3, {RecordAt{1, sample_entry(1)}}});
  uint64_t offset = 0;
  for (auto _ : state) {
    Result<Frame> decoded = decode(frame);
    benchmark::DoNotOptimize(decoded);
    append(db, insert, ++offset, frame);
  }
  sqlite3_finalize(insert);
}
BENCHMARK(BM_CostReplicate);

// Storage's idempotent write keyed by message id, with the conversation's seq as the key.
void BM_CostStore(benchmark::State& state) {
  Db db;
  sqlite3_stmt* insert = db.prepare("INSERT OR IGNORE INTO messages VALUES(?, ?, ?, ?)");
  const Bytes encoded = encode_as(Deliver{sample_entry(1)});
  uint64_t seq = 0;
  for (auto _ : state) {
    ++seq;
    const std::string msg_id = "m" + std::to_string(seq);
    db.exec("BEGIN");
    sqlite3_bind_text(insert, 1, "dm:u1234567:u7654321", -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 2, static_cast<int64_t>(seq));
    sqlite3_bind_text(insert, 3, msg_id.data(), static_cast<int>(msg_id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_blob(insert, 4, encoded.data(), static_cast<int>(encoded.size()), SQLITE_STATIC);
    MSGSIM_ASSERT(sqlite3_step(insert) == SQLITE_DONE);
    sqlite3_reset(insert);
    db.exec("COMMIT");
  }
  sqlite3_finalize(insert);
}
BENCHMARK(BM_CostStore);

// Fan-out of one stored entry: find the recipients' chat servers (a presence table lookup) and
// encode the Route frame for them.
void BM_CostFanout(benchmark::State& state) {
  std::map<std::pair<std::string, std::string>, uint32_t> presence;
  for (int u = 0; u < 10'000; ++u) presence[{"u" + std::to_string(u), "u" + std::to_string(u) + "/1"}] = u % 64;
  const Entry entry = sample_entry(7);
  for (auto _ : state) {
    Route route;
    const auto it = presence.lower_bound({"u7654", ""});
    route.targets.push_back(DeviceAddress{it->first.first, it->first.second});
    benchmark::DoNotOptimize(it->second);
    route.entry = entry;
    Bytes out = encode_as(std::move(route));
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_CostFanout);

// Push one delivery to a connected device: encode the Deliver (its write is BM_CostFrameIo's).
void BM_CostPush(benchmark::State& state) {
  const Entry entry = sample_entry(7);
  for (auto _ : state) {
    Bytes out = encode_as(Deliver{entry});
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_CostPush);

// Serve a sync: read the entries after a cursor (20 of them) and encode the result.
void BM_CostSync(benchmark::State& state) {
  Db db;
  sqlite3_stmt* insert = db.prepare("INSERT INTO messages VALUES(?, ?, ?, ?)");
  const Bytes encoded = encode_as(Deliver{sample_entry(1)});
  db.exec("BEGIN");
  for (int seq = 1; seq <= 2000; ++seq) {
    const std::string msg_id = "m" + std::to_string(seq);
    sqlite3_bind_text(insert, 1, "dm:u1234567:u7654321", -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 2, seq);
    sqlite3_bind_text(insert, 3, msg_id.data(), static_cast<int>(msg_id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_blob(insert, 4, encoded.data(), static_cast<int>(encoded.size()), SQLITE_STATIC);
    MSGSIM_ASSERT(sqlite3_step(insert) == SQLITE_DONE);
    sqlite3_reset(insert);
  }
  db.exec("COMMIT");
  sqlite3_stmt* select = db.prepare("SELECT entry FROM messages WHERE conv = ? AND seq > ? ORDER BY seq LIMIT 20");
  int64_t cursor = 0;
  for (auto _ : state) {
    cursor = (cursor + 37) % 1900;
    sqlite3_bind_text(select, 1, "dm:u1234567:u7654321", -1, SQLITE_STATIC);
    sqlite3_bind_int64(select, 2, cursor);
    SyncResult result;
    while (sqlite3_step(select) == SQLITE_ROW) {
      Entry e = sample_entry(static_cast<uint64_t>(cursor));
      e.body.assign(static_cast<const uint8_t*>(sqlite3_column_blob(select, 0)),
                    static_cast<const uint8_t*>(sqlite3_column_blob(select, 0)) + sqlite3_column_bytes(select, 0));
      result.entries.push_back(std::move(e));
    }
    sqlite3_reset(select);
    Bytes out = encode_as(std::move(result));
    benchmark::DoNotOptimize(out);
  }
  sqlite3_finalize(select);
  sqlite3_finalize(insert);
}
BENCHMARK(BM_CostSync);

// A connection's handshake on the server: a key agreement (X25519, as a TLS 1.3 handshake
// does), the session token's HMAC check, and the session table insert.
void BM_CostConnect(benchmark::State& state) {
  MSGSIM_ASSERT(sodium_init() >= 0);
  uint8_t server_sk[crypto_scalarmult_BYTES], client_pk[crypto_scalarmult_BYTES], shared[crypto_scalarmult_BYTES];
  randombytes_buf(server_sk, sizeof server_sk);
  uint8_t client_sk[crypto_scalarmult_BYTES];
  randombytes_buf(client_sk, sizeof client_sk);
  crypto_scalarmult_base(client_pk, client_sk);
  uint8_t key[crypto_auth_hmacsha256_KEYBYTES], mac[crypto_auth_hmacsha256_BYTES];
  randombytes_buf(key, sizeof key);
  const std::string token = "u1234567/1:2026-11-28";
  crypto_auth_hmacsha256(mac, reinterpret_cast<const uint8_t*>(token.data()), token.size(), key);
  std::map<uint64_t, std::string> sessions;
  uint64_t next = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(crypto_scalarmult(shared, server_sk, client_pk));
    benchmark::DoNotOptimize(
        crypto_auth_hmacsha256_verify(mac, reinterpret_cast<const uint8_t*>(token.data()), token.size(), key));
    sessions.emplace(next++, token);
    if (sessions.size() > 100'000) sessions.erase(sessions.begin());
  }
}
BENCHMARK(BM_CostConnect);

// A heartbeat: refresh the session's last-seen time and encode the ack.
void BM_CostHeartbeat(benchmark::State& state) {
  std::map<uint64_t, int64_t> last_seen;
  for (uint64_t s = 0; s < 50'000; ++s) last_seen[s] = 0;
  uint64_t s = 0;
  int64_t now = 0;
  for (auto _ : state) {
    s = (s + 7919) % 50'000;
    last_seen[s] = ++now;
    Bytes out = encode_as(HeartbeatAck{});
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_CostHeartbeat);

}  // namespace
}  // namespace msgsim::chat
