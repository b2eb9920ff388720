#include "impl/ledger/ledger.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>

#include "impl/base/assert.h"

namespace msgsim::ledger {

// ---------------------------------------------------------------------------------------------
// Codec

namespace {

void put_le(Bytes& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

bool get_le(ByteView in, size_t& pos, int bytes, uint64_t& value) {
  if (in.size() - pos < static_cast<size_t>(bytes)) return false;
  value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(in[pos + i]) << (8 * i);
  pos += static_cast<size_t>(bytes);
  return true;
}

Error bad(const std::string& what) { return make_error(ErrorCode::bad_input, "ledger frame: " + what); }

}  // namespace

Bytes encode(const Message& m) {
  Bytes out;
  out.reserve(11 + m.payload.size());
  out.push_back(static_cast<uint8_t>(m.type));
  switch (m.type) {
    case MessageType::hello: put_le(out, m.client, 4); break;
    case MessageType::welcome:
    case MessageType::ack: put_le(out, m.seq, 8); break;
    case MessageType::append:
      MSGSIM_ASSERT_LE(m.payload.size(), kPayloadMax);
      put_le(out, m.seq, 8);
      put_le(out, m.payload.size(), 2);
      out.insert(out.end(), m.payload.begin(), m.payload.end());
      break;
  }
  return out;
}

Result<Message> decode(ByteView frame) {
  if (frame.empty()) return bad("empty");
  Message m;
  size_t pos = 1;
  uint64_t value = 0;
  switch (frame[0]) {
    case 1:
      m.type = MessageType::hello;
      if (!get_le(frame, pos, 4, value)) return bad("hello truncated");
      m.client = static_cast<uint32_t>(value);
      break;
    case 2:
    case 4:
      m.type = static_cast<MessageType>(frame[0]);
      if (!get_le(frame, pos, 8, m.seq)) return bad("truncated");
      break;
    case 3: {
      m.type = MessageType::append;
      if (!get_le(frame, pos, 8, m.seq)) return bad("append truncated");
      if (!get_le(frame, pos, 2, value)) return bad("append length truncated");
      if (value > kPayloadMax) return make_error(ErrorCode::too_large, "ledger frame: payload over kPayloadMax");
      if (frame.size() - pos < value) return bad("append payload truncated");
      m.payload.assign(frame.begin() + static_cast<std::ptrdiff_t>(pos),
                       frame.begin() + static_cast<std::ptrdiff_t>(pos + value));
      pos += value;
      break;
    }
    default: return bad("unknown type " + std::to_string(frame[0]));
  }
  if (pos != frame.size()) return bad("trailing bytes");
  return m;
}

// ---------------------------------------------------------------------------------------------
// Observer

void ClientReport::saw_ack(uint64_t seq) {
  if (seq <= acked_upto_) return;
  auto it = std::lower_bound(acked_ahead_.begin(), acked_ahead_.end(), seq);
  if (it != acked_ahead_.end() && *it == seq) return;
  acked_++;
  acked_ahead_.insert(it, seq);
  while (!acked_ahead_.empty() && acked_ahead_.front() == acked_upto_ + 1) {
    acked_upto_++;
    acked_ahead_.erase(acked_ahead_.begin());
  }
}

// ---------------------------------------------------------------------------------------------
// Server

namespace {

void exec_or_die(sqlite3* db, const char* sql) {
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
  const std::string message = error != nullptr ? error : "";
  sqlite3_free(error);
  MSGSIM_ASSERT(rc == SQLITE_OK, std::string(sql) + ": " + message);
}

}  // namespace

LedgerServer::~LedgerServer() = default;

void LedgerServer::on_start(Context& ctx) {
  ctx_ = &ctx;
  sqlite3* db = ctx.db();
  exec_or_die(db, "PRAGMA locking_mode=EXCLUSIVE");
  exec_or_die(db, "PRAGMA journal_mode=WAL");
  exec_or_die(db, config_.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF");
  exec_or_die(db,
              "CREATE TABLE IF NOT EXISTS entries (client INTEGER NOT NULL, seq INTEGER NOT NULL, "
              "payload BLOB NOT NULL, PRIMARY KEY (client, seq)) WITHOUT ROWID");
  invariants();
}

void LedgerServer::on_accept(Context&, ConnId, NodeId) {}

uint64_t LedgerServer::stored_upto(uint32_t client) {
  auto cached = stored_upto_.find(client);
  if (cached != stored_upto_.end()) return cached->second;
  // Entries are stored in order per client, so the count is the contiguous prefix; the query
  // checks that instead of trusting it.
  sqlite3_stmt* stmt = nullptr;
  MSGSIM_ASSERT_EQ(sqlite3_prepare_v2(ctx_->db(), "SELECT count(*), coalesce(max(seq), 0) FROM entries WHERE client = ?",
                                      -1, &stmt, nullptr),
                   SQLITE_OK);
  sqlite3_bind_int64(stmt, 1, client);
  MSGSIM_ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  const auto count = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
  const auto max_seq = static_cast<uint64_t>(sqlite3_column_int64(stmt, 1));
  sqlite3_finalize(stmt);
  MSGSIM_ASSERT_EQ(count, max_seq);  // no gaps: a client never appends past what was stored
  stored_upto_[client] = count;
  return count;
}

void LedgerServer::on_frame(Context& ctx, ConnId conn, ByteView frame) {
  Result<Message> decoded = decode(frame);
  if (!decoded.ok()) {
    ctx.log(LogLevel::warn, "closing a connection that sent a bad frame: " + decoded.error().message);
    ctx.close(conn);
    clients_.erase(conn);
    return;
  }
  const Message& m = *decoded;
  if (m.type == MessageType::hello) {
    clients_[conn] = m.client;
    ctx.send(conn, encode(Message{MessageType::welcome, 0, stored_upto(m.client), {}}));
  } else if (m.type == MessageType::append) {
    auto it = clients_.find(conn);
    if (it == clients_.end()) {
      ctx.log(LogLevel::warn, "append before hello; closing");
      ctx.close(conn);
      return;
    }
    const uint64_t stored = stored_upto(it->second);
    if (m.seq > stored + 1) {
      ctx.log(LogLevel::warn, "append with a gap; closing");  // the client resends in order
      ctx.close(conn);
      clients_.erase(it);
      return;
    }
    if (m.seq == stored + 1) {
      sqlite3_stmt* stmt = nullptr;
      MSGSIM_ASSERT_EQ(sqlite3_prepare_v2(ctx.db(), "INSERT OR IGNORE INTO entries VALUES (?, ?, ?)", -1, &stmt, nullptr),
                       SQLITE_OK);
      sqlite3_bind_int64(stmt, 1, it->second);
      sqlite3_bind_int64(stmt, 2, static_cast<int64_t>(m.seq));
      sqlite3_bind_blob(stmt, 3, m.payload.data(), static_cast<int>(m.payload.size()), SQLITE_STATIC);
      const int rc = sqlite3_step(stmt);
      sqlite3_finalize(stmt);
      MSGSIM_ASSERT_EQ(rc, SQLITE_DONE);
      stored_upto_[it->second] = m.seq;
      appends_stored_++;
    }
    // Persist before send: the commit above returned, so the entry is as durable as the
    // synchronous setting makes it. A duplicate is acknowledged again.
    ctx.send(conn, encode(Message{MessageType::ack, 0, m.seq, {}}));
  } else {
    ctx.log(LogLevel::warn, "unexpected frame type from a client; closing");
    ctx.close(conn);
    clients_.erase(conn);
  }
  invariants();
}

void LedgerServer::on_disconnect(Context&, ConnId conn, DisconnectReason) { clients_.erase(conn); }

std::string LedgerServer::describe() const {
  return "ledger-server clients=" + std::to_string(clients_.size()) +
         " stored=" + std::to_string(appends_stored_);
}

void LedgerServer::invariants() const { MSGSIM_ASSERT(ctx_ != nullptr); }

// ---------------------------------------------------------------------------------------------
// Client

void LedgerClient::on_start(Context& ctx) {
  MSGSIM_ASSERT(!config_.servers.empty());
  server_ = config_.servers[mix64(ctx.self()) % config_.servers.size()];
  connect(ctx);
  ctx.set_timer(config_.append_interval_ns, kAppendTick);
  ctx.set_timer(config_.request_timeout_ns / 2, kRetryCheck);
  invariants();
}

void LedgerClient::connect(Context& ctx) {
  MSGSIM_ASSERT_EQ(conn_, kNoConn);
  welcomed_ = false;
  conn_ = ctx.connect(server_);
  ctx.send(conn_, encode(Message{MessageType::hello, ctx.self(), 0, {}}));
}

void LedgerClient::reconnect_later(Context& ctx) {
  // Exponential backoff with full jitter: the reconnect storm after a crash spreads out.
  const int64_t ceiling = std::min(config_.backoff_max_ns,
                                   config_.backoff_initial_ns << std::min<uint32_t>(backoff_attempt_, 20));
  backoff_attempt_++;
  ctx.set_timer(ctx.rng().range(ceiling / 2, ceiling), kReconnect);
}

void LedgerClient::on_accept(Context& ctx, ConnId conn, NodeId) {
  ctx.log(LogLevel::warn, "a ledger client accepts no connections");
  ctx.close(conn);
}

void LedgerClient::on_connected(Context&, ConnId) {}

void LedgerClient::send_append(Context& ctx, uint64_t seq) {
  Message m{MessageType::append, 0, seq, Bytes(config_.payload_bytes, static_cast<uint8_t>(seq))};
  ctx.send(conn_, encode(m));
  unacked_[seq] = ctx.now_ns();
}

void LedgerClient::on_frame(Context& ctx, ConnId conn, ByteView frame) {
  if (conn != conn_) return;
  Result<Message> decoded = decode(frame);
  if (!decoded.ok()) {
    report_.saw_protocol_error();
    return;
  }
  const Message& m = *decoded;
  if (m.type == MessageType::welcome) {
    report_.saw_stored_upto(m.seq);
    welcomed_ = true;
    backoff_attempt_ = 0;
    if (next_seq_ == 0) next_seq_ = m.seq + 1;  // a fresh incarnation continues the ledger
    if (!unacked_.empty() && unacked_.begin()->first > m.seq + 1) {
      // The server lost entries it had stored (the observer has counted it): the missing ones
      // cannot be resent, so the ledger goes on from what the server has.
      unacked_.clear();
      next_seq_ = m.seq + 1;
    }
    // Everything not yet acknowledged is sent again, in order: the server stores in order.
    for (auto it = unacked_.begin(); it != unacked_.end();) {
      if (it->first <= m.seq) {
        report_.saw_ack(it->first);  // stored before the connection broke; as good as acked
        it = unacked_.erase(it);
      } else {
        report_.saw_retry();
        send_append(ctx, it->first);
        ++it;
      }
    }
  } else if (m.type == MessageType::ack) {
    if (unacked_.erase(m.seq) == 0 && m.seq >= next_seq_) {
      report_.saw_protocol_error();  // an ack for an entry never sent
      return;
    }
    report_.saw_ack(m.seq);
  } else {
    report_.saw_protocol_error();
  }
  invariants();
}

void LedgerClient::on_disconnect(Context& ctx, ConnId conn, DisconnectReason) {
  if (conn != conn_) return;
  conn_ = kNoConn;
  welcomed_ = false;
  report_.saw_reconnect();
  reconnect_later(ctx);
}

void LedgerClient::on_timer(Context& ctx, uint64_t tag) {
  switch (tag) {
    case kAppendTick:
      if (config_.appending && welcomed_ && unacked_.size() < config_.in_flight_max) {
        report_.saw_append();
        send_append(ctx, next_seq_++);
      }
      ctx.set_timer(config_.append_interval_ns, kAppendTick);
      break;
    case kReconnect:
      if (conn_ == kNoConn) connect(ctx);
      break;
    case kRetryCheck: {
      // An append unacknowledged past the timeout means the path or the server is in trouble:
      // start over on a new connection, which resends everything unacknowledged.
      const int64_t now = ctx.now_ns();
      bool overdue = false;
      for (const auto& [seq, sent_at] : unacked_) overdue |= now - sent_at > config_.request_timeout_ns;
      if (overdue && conn_ != kNoConn) {
        ctx.close(conn_);
        conn_ = kNoConn;
        welcomed_ = false;
        report_.saw_reconnect();
        reconnect_later(ctx);
      }
      ctx.set_timer(config_.request_timeout_ns / 2, kRetryCheck);
      break;
    }
    default: MSGSIM_UNREACHABLE("unknown ledger client timer");
  }
  invariants();
}

std::string LedgerClient::describe() const {
  return "ledger-client server=" + std::to_string(server_) + " next_seq=" + std::to_string(next_seq_) +
         " unacked=" + std::to_string(unacked_.size()) + " welcomed=" + std::to_string(welcomed_);
}

void LedgerClient::invariants() const {
  MSGSIM_ASSERT_LE(unacked_.size(), config_.in_flight_max);
  MSGSIM_ASSERT(!welcomed_ || conn_ != kNoConn);
  if (!unacked_.empty()) MSGSIM_ASSERT_LT(unacked_.rbegin()->first, next_seq_);
}

}  // namespace msgsim::ledger
