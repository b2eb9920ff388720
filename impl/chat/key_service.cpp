#include "impl/chat/key_service.h"

#include <sqlite3.h>

#include <algorithm>

#include "impl/chat/entry_store.h"
#include "impl/crypto/x3dh.h"

namespace msgsim::chat {

namespace {

bool is_key(const Bytes& bytes) { return bytes.size() == kKeyBytes; }

}  // namespace

void KeyServiceNode::on_start(Context& ctx) {
  db_ = open_entry_database(ctx);
  const Status schema = sql::exec(db_,
                                  "CREATE TABLE IF NOT EXISTS device_keys (user TEXT NOT NULL, device TEXT NOT NULL,"
                                  " identity BLOB NOT NULL, spk_id INTEGER NOT NULL, spk BLOB NOT NULL,"
                                  " spk_sig BLOB NOT NULL, opk_high INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user, device));"
                                  "CREATE TABLE IF NOT EXISTS one_time_keys (user TEXT NOT NULL, device TEXT NOT NULL,"
                                  " id INTEGER NOT NULL, key BLOB NOT NULL, PRIMARY KEY (user, device, id));");
  MSGSIM_ASSERT(schema.ok(), schema.ok() ? std::string() : schema.error().message);
  // Recover: memory is a cache of the database, rebuilt at every start.
  sql::Statement devices = must_prepare(db_, "SELECT user, device, identity, spk_id, spk, spk_sig, opk_high FROM device_keys");
  for (Result<bool> row = devices.step(); row.ok() && *row; row = devices.step()) {
    const ByteView identity = devices.column_blob(2), spk = devices.column_blob(4), sig = devices.column_blob(5);
    if (identity.size() != kKeyBytes || spk.size() != kKeyBytes || sig.size() != kSignatureBytes) {
      // stored only after on_publish checked the sizes; a row of other sizes is not ours
      ctx.log(LogLevel::warn, "keys: skipped the keys of " + std::string(devices.column_text(1)) + ", of the wrong sizes");
      continue;
    }
    DeviceKeysRecord& record = records_[DeviceKey(devices.column_text(0), devices.column_text(1))];
    std::copy(identity.begin(), identity.end(), record.identity.begin());
    record.spk_id = static_cast<uint32_t>(devices.column_int64(3));
    std::copy(spk.begin(), spk.end(), record.spk.begin());
    std::copy(sig.begin(), sig.end(), record.spk_sig.begin());
    record.opk_high = static_cast<uint32_t>(devices.column_int64(6));
    devices_++;
  }
  sql::Statement opks = must_prepare(db_, "SELECT user, device, id, key FROM one_time_keys ORDER BY user, device, id");
  for (Result<bool> row = opks.step(); row.ok() && *row; row = opks.step()) {
    const auto device = records_.find(DeviceKey(opks.column_text(0), opks.column_text(1)));
    if (device == records_.end()) continue;
    const ByteView key = opks.column_blob(3);
    if (key.size() != kKeyBytes) {  // stored only after is_key(); a row of another size is not ours
      ctx.log(LogLevel::warn, "keys: skipped a one-time prekey of " + std::to_string(key.size()) + " bytes");
      continue;
    }
    DeviceKeysRecord::OneTimePrekeyRecord& stored = device->second.opks.emplace_back();
    stored.id = static_cast<uint32_t>(opks.column_int64(2));
    std::copy(key.begin(), key.end(), stored.key.begin());
  }
  ctx.log(LogLevel::info, "keys: started with " + std::to_string(devices_) + " devices");
  invariants();
}

void KeyServiceNode::on_frame(Context& ctx, ConnId conn, ByteView bytes) {
  if (halted_) return;  // fail-stop: answers nothing, so nothing wrong
  Result<Frame> decoded = decode(bytes);
  if (!decoded.ok()) {
    ctx.log(LogLevel::warn, "keys: closing a connection that sent a bad frame: " + decoded.error().message);
    ctx.close(conn);
    return;
  }
  if (const auto* publish = std::get_if<PublishKeys>(&*decoded)) {
    on_publish(ctx, conn, *publish);
  } else if (const auto* fetch = std::get_if<FetchBundles>(&*decoded)) {
    on_fetch(ctx, conn, *fetch);
  } else {
    ctx.log(LogLevel::warn, std::string("keys: unexpected ") + frame_name(*decoded) + "; closing");
    ctx.close(conn);
  }
  invariants();
}

void KeyServiceNode::fail(Context& ctx, ConnId conn, uint64_t request_id, const std::string& reason) {
  ctx.send(conn, encode_as(KeyRequestFailed{request_id, reason.substr(0, kReasonMax)}));
}

void KeyServiceNode::halt(Context& ctx, const std::string& what) {
  ctx.log(LogLevel::error, "keys: halting: " + what + ": " + sqlite3_errmsg(db_));
  (void)sql::exec(db_, "ROLLBACK");  // best effort: the node stops either way
  halted_ = true;
}

void KeyServiceNode::on_publish(Context& ctx, ConnId conn, const PublishKeys& publish) {
  const bool query_only = publish.identity.empty() && publish.opks.empty();
  const DeviceKey key(publish.user, publish.device);
  const auto found = records_.find(key);
  DeviceKeysRecord* existing = found == records_.end() ? nullptr : &found->second;
  if (query_only) {
    if (existing == nullptr) return fail(ctx, conn, publish.request_id, "PublishKeys: no keys for " + publish.device);
    ctx.send(conn, encode_as(KeysPublished{publish.request_id, static_cast<uint32_t>(existing->opks.size())}));
    return;
  }
  // Identity and signed prekey: required the first time, optional afterwards (a device that
  // only adds one-time prekeys sends none).
  const bool new_identity = !publish.identity.empty();
  if (new_identity) {
    if (!is_key(publish.identity) || !is_key(publish.spk) || publish.spk_sig.size() != kSignatureBytes) {
      return fail(ctx, conn, publish.request_id, "PublishKeys: identity, spk or spk_sig of the wrong size");
    }
    crypto::Key32 identity, spk;
    crypto::Signature signature;
    std::copy(publish.identity.begin(), publish.identity.end(), identity.begin());
    std::copy(publish.spk.begin(), publish.spk.end(), spk.begin());
    std::copy(publish.spk_sig.begin(), publish.spk_sig.end(), signature.begin());
    if (!crypto::verify(identity, crypto::signed_prekey_message(publish.spk_id, spk), signature)) {
      return fail(ctx, conn, publish.request_id, "PublishKeys: bad signed prekey signature from " + publish.device);
    }
  } else if (existing == nullptr) {
    return fail(ctx, conn, publish.request_id, "PublishKeys: one-time prekeys for " + publish.device + ", which has no identity");
  }
  for (const OneTimeKey& opk : publish.opks) {
    if (!is_key(opk.key)) return fail(ctx, conn, publish.request_id, "PublishKeys: a one-time prekey of the wrong size");
  }
  if (existing == nullptr && devices_ >= kDevicesMax) {
    return fail(ctx, conn, publish.request_id, "PublishKeys: the key service is full");
  }
  // A new identity replaces the device's keys: its old one-time prekeys belong to a key pair
  // the device no longer has.
  const bool identity_changed = new_identity && (existing == nullptr ||
                                          !std::equal(existing->identity.begin(), existing->identity.end(),
                                                      publish.identity.begin(), publish.identity.end()));

  // Persist first, then change memory, then answer.
  bool ok = sql::exec(db_, "BEGIN IMMEDIATE").ok();
  if (ok && new_identity) {
    sql::Statement upsert = must_prepare(
        db_, "INSERT OR REPLACE INTO device_keys (user, device, identity, spk_id, spk, spk_sig) VALUES (?, ?, ?, ?, ?, ?)");
    ok = upsert.bind(1, publish.user).ok() && upsert.bind(2, publish.device).ok() &&
         upsert.bind_blob(3, publish.identity).ok() && upsert.bind(4, static_cast<int64_t>(publish.spk_id)).ok() &&
         upsert.bind_blob(5, publish.spk).ok() && upsert.bind_blob(6, publish.spk_sig).ok() && upsert.step().ok();
  }
  if (ok && identity_changed) {
    sql::Statement clear = must_prepare(db_, "DELETE FROM one_time_keys WHERE user = ? AND device = ?");
    ok = clear.bind(1, publish.user).ok() && clear.bind(2, publish.device).ok() && clear.step().ok();
  }
  const bool fresh = identity_changed || existing == nullptr;
  const size_t held = fresh ? 0 : existing->opks.size();
  uint32_t high = fresh ? 0 : existing->opk_high;
  size_t room = kOneTimePrekeysPerDeviceMax - std::min(held, kOneTimePrekeysPerDeviceMax);
  std::vector<const OneTimeKey*> storing;
  for (const OneTimeKey& opk : publish.opks) {
    if (room == 0) break;
    if (opk.id <= high) continue;  // published before, maybe handed out since
    storing.push_back(&opk);
    high = opk.id;
    room--;
  }
  if (ok && !storing.empty()) {
    sql::Statement insert = must_prepare(db_, "INSERT OR IGNORE INTO one_time_keys (user, device, id, key) VALUES (?, ?, ?, ?)");
    for (size_t i = 0; ok && i < storing.size(); ++i) {
      ok = insert.reset().ok() && insert.bind(1, publish.user).ok() && insert.bind(2, publish.device).ok() &&
           insert.bind(3, static_cast<int64_t>(storing[i]->id)).ok() && insert.bind_blob(4, storing[i]->key).ok() &&
           insert.step().ok();
    }
    sql::Statement mark = must_prepare(db_, "UPDATE device_keys SET opk_high = ? WHERE user = ? AND device = ?");
    ok = ok && mark.bind(1, static_cast<int64_t>(high)).ok() && mark.bind(2, publish.user).ok() &&
         mark.bind(3, publish.device).ok() && mark.step().ok();
  }
  if (!ok || !sql::exec(db_, "COMMIT").ok()) return halt(ctx, "storing the keys of " + publish.device);

  DeviceKeysRecord& record = existing != nullptr ? *existing : records_[key];
  if (existing == nullptr) devices_++;
  if (new_identity) {  // sizes checked above
    std::copy(publish.identity.begin(), publish.identity.end(), record.identity.begin());
    record.spk_id = publish.spk_id;
    std::copy(publish.spk.begin(), publish.spk.end(), record.spk.begin());
    std::copy(publish.spk_sig.begin(), publish.spk_sig.end(), record.spk_sig.begin());
  }
  if (identity_changed) {
    record.opks.clear();
    record.opk_high = 0;
  }
  for (const OneTimeKey* opk : storing) {
    DeviceKeysRecord::OneTimePrekeyRecord& stored = record.opks.emplace_back();
    stored.id = opk->id;
    std::copy(opk->key.begin(), opk->key.end(), stored.key.begin());  // is_key() checked above
  }
  if (!storing.empty()) record.opk_high = high;
  ctx.send(conn, encode_as(KeysPublished{publish.request_id, static_cast<uint32_t>(record.opks.size())}));
}

void KeyServiceNode::on_fetch(Context& ctx, ConnId conn, const FetchBundles& fetch) {
  Bundles answer;
  answer.request_id = fetch.request_id;
  std::vector<std::pair<DeviceKeysRecord*, size_t>> taking;  // (record, index in answer)
  for (const UserRef& ref : fetch.users) {
    for (auto it = records_.lower_bound(DeviceKey(ref.user, std::string())); it != records_.end() && it->first.first == ref.user;
         ++it) {
      if (answer.bundles.size() >= kBundlesPerFrameMax) break;
      DeviceKeysRecord& record = it->second;
      DeviceBundle bundle{ref.user,
                          it->first.second,
                          Bytes(record.identity.begin(), record.identity.end()),
                          record.spk_id,
                          Bytes(record.spk.begin(), record.spk.end()),
                          Bytes(record.spk_sig.begin(), record.spk_sig.end()),
                          false,
                          0,
                          {}};
      if (!record.opks.empty()) {
        bundle.has_opk = true;
        bundle.opk_id = record.opks.front().id;
        bundle.opk.assign(record.opks.front().key.begin(), record.opks.front().key.end());
        taking.emplace_back(&record, answer.bundles.size());
      }
      answer.bundles.push_back(std::move(bundle));
    }
  }
  // Each one-time prekey handed out is deleted, durably, before the answer leaves.
  if (!taking.empty()) {
    bool ok = sql::exec(db_, "BEGIN IMMEDIATE").ok();
    sql::Statement remove = must_prepare(db_, "DELETE FROM one_time_keys WHERE user = ? AND device = ? AND id = ?");
    for (const auto& [record, index] : taking) {
      const DeviceBundle& bundle = answer.bundles[index];
      ok = ok && remove.reset().ok() && remove.bind(1, bundle.user).ok() && remove.bind(2, bundle.device).ok() &&
           remove.bind(3, static_cast<int64_t>(bundle.opk_id)).ok() && remove.step().ok();
    }
    if (!ok || !sql::exec(db_, "COMMIT").ok()) return halt(ctx, "handing out one-time prekeys");
    for (const auto& [record, index] : taking) record->opks.erase(record->opks.begin());
    opks_handed_out_ += taking.size();
  }
  bundles_served_ += answer.bundles.size();
  ctx.send(conn, encode_as(answer));
}

std::string KeyServiceNode::describe() const {
  return "keys devices=" + std::to_string(devices_) + " bundles=" + std::to_string(bundles_served_) +
         " opks_handed_out=" + std::to_string(opks_handed_out_) + (halted_ ? " HALTED" : "");
}

void KeyServiceNode::invariants() const {
  (void)config_;
  // O(1): a per-device walk would cost O(devices) per frame at scale; the per-device bound is
  // kept where one-time prekeys are added (on_publish's `room`).
  MSGSIM_ASSERT_LE(devices_, kDevicesMax);
}

}  // namespace msgsim::chat
