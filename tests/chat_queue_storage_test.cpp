// The queue, storage and push nodes of the messaging system, driven in the simulator. Scripted
// nodes play the chat server (producer, sync client, Route receiver), the connection registry
// and, where a test needs it, the push service; the queue and storage are the real nodes on the
// simulated disk, crashed and restarted as the tests say.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "impl/chat/push.h"
#include "impl/chat/queue.h"
#include "impl/chat/storage.h"
#include "sim/disk.h"
#include "sim/simulator.h"
#include "tests/chat_test_support.h"
#include "tests/sim_test_node.h"

namespace msgsim::chat {
namespace {

using sim::CrashDisk;
using sim::Simulator;
using testing::Script;
using testing::ScriptNode;
using test_support::one_region;
using test_support::decoded;
using test_support::frames_of;

constexpr int64_t kMs = kNanosPerMilli;
constexpr int64_t kS = kNanosPerSecond;

Entry message(const std::string& conv, const std::string& from, const std::string& msg_id, const std::string& to = "") {
  Entry e;
  e.kind = EntryKind::message;
  e.conv = conv;
  e.msg_id = msg_id;
  e.from_user = from;
  e.from_device = from + ".d1";
  e.to = to;
  e.body = Bytes{'c', 'i', 'p', 'h', 'e', 'r'};
  return e;
}

Entry membership(EntryKind kind, const std::string& conv, const std::string& by, const std::string& member,
                 const std::string& op_id) {
  Entry e;
  e.kind = kind;
  e.conv = conv;
  e.msg_id = op_id;
  e.from_user = by;
  e.from_device = by + ".d1";
  e.member = member;
  return e;
}

// The queue and storage for real; chat server, registry and push scripted (or push real).
struct Rig {
  explicit Rig(BugSet bugs = {}, uint32_t partitions = 4, bool real_push = false) : sim(7, one_region()) {
    config.bugs = bugs;
    config.topology.partitions = partitions;
    for (int u = 1; u <= 6; ++u) config.users.push_back(UserPlan{"u" + std::to_string(u), 2, {}});

    chat_id = sim.add_node("chat", 0, [this] { return std::make_unique<ScriptNode>(chat); });
    registry_id = sim.add_node("registry", 0, [this] { return std::make_unique<ScriptNode>(registry); });
    if (real_push) {
      push_id = sim.add_node("push", 0, [this] { return std::make_unique<PushNode>(config); });
    } else {
      push_id = sim.add_node("push", 0, [this] { return std::make_unique<ScriptNode>(push); });
    }
    queue_id = sim.add_node("queue", 0, [this] { return std::make_unique<QueueNode>(config); });
    storage_id = sim.add_node("storage", 0, [this] { return std::make_unique<StorageNode>(config); });
    config.topology.chat_servers = {chat_id};
    config.topology.registries = {registry_id};
    config.topology.push = {push_id};
    config.topology.queues = {queue_id};
    config.topology.storages = {storage_id};

    chat.on_start = [this](Context& ctx) {
      chat_ctx = &ctx;
      to_queue = ctx.connect(queue_id);
      to_storage = ctx.connect(storage_id);
    };
    // The registry answers from `located` (device -> server) unless told to stay silent.
    registry.on_frame = [this](Context& ctx, ConnId conn, const std::string& text) {
      Frame frame = decoded(text);
      const auto* lookup = std::get_if<Lookup>(&frame);
      ASSERT_NE(lookup, nullptr);
      if (!registry_answers) return;
      Located answer{lookup->request_id, {}};
      for (const UserRef& ref : lookup->users) {
        for (const auto& [device, server] : located) {
          if (device.rfind(ref.user + ".", 0) == 0) answer.locations.push_back(Location{ref.user, device, server});
        }
      }
      ctx.send(conn, encode(Frame{answer}));
    };
  }

  void start_all() {
    if (std::getenv("MSGSIM_TEST_LOG") != nullptr) {
      sim.set_trace_sink([](const sim::TraceRecord& r) {
        if (!r.detail.empty()) std::fprintf(stderr, "%ld node%u %s %.*s\n", static_cast<long>(r.time_ns), r.node, r.kind,
                                            static_cast<int>(r.detail.size()), r.detail.data());
      });
    }
    for (NodeId id : {chat_id, registry_id, push_id, queue_id, storage_id}) sim.start(id);
    settle(10 * kMs);
  }
  void settle(int64_t ns = 50 * kMs) { sim.run_until(sim.now_ns() + ns); }

  // The chat server sends a frame now (on its connection to the queue or to storage).
  void chat_send(ConnId conn, Bytes frame) {
    sim.at(sim.now_ns(), [this, conn, frame = std::move(frame)]() mutable { chat_ctx->send(conn, std::move(frame)); });
    sim.run_until(sim.now_ns());
  }
  void produce(const Entry& entry, uint64_t request_id = 0, uint64_t members_digest = 0) {
    chat_send(to_queue, encode(Frame{Produce{request_id == 0 ? next_request++ : request_id, entry, members_digest}}));
  }
  // Produces and settles; returns the answer for `request_id`: "seq:N", "rejected:REASON" or
  // "stale:" and the member list it names, comma-separated.
  std::string produce_and_wait(const Entry& entry, uint64_t members_digest = 0) {
    const uint64_t id = next_request++;
    produce(entry, id, members_digest);
    settle(20 * kMs);
    for (const auto& p : frames_of<Produced>(chat))
      if (p.request_id == id) return "seq:" + std::to_string(p.seq);
    for (const auto& r : frames_of<ProduceRejected>(chat))
      if (r.request_id == id) return "rejected:" + r.reason;
    for (const auto& s : frames_of<ProduceStale>(chat)) {
      if (s.request_id != id) continue;
      std::string out = "stale:";
      for (const std::string& user : decode_member_list(s.members)) out += (out.size() > 6 ? "," : "") + user;
      return out;
    }
    return "no answer";
  }

  QueueNode& queue() {
    auto* node = dynamic_cast<QueueNode*>(sim.node_object(queue_id));
    EXPECT_NE(node, nullptr);
    return *node;
  }
  StorageNode& storage() {
    auto* node = dynamic_cast<StorageNode*>(sim.node_object(storage_id));
    EXPECT_NE(node, nullptr);
    return *node;
  }

  // Routes of entries the chat server got: "conv#seq" -> the devices targeted.
  std::map<std::string, std::set<std::string>> routed() const {
    std::map<std::string, std::set<std::string>> out;
    for (const Route& route : frames_of<Route>(chat)) {
      if (route.is_receipt) continue;
      auto& devices = out[route.entry.conv + "#" + std::to_string(route.entry.seq)];
      for (const auto& t : route.targets) devices.insert(t.device);
    }
    return out;
  }

  std::vector<SyncResult> sync(const std::string& user, std::vector<Cursor> cursors) {
    const size_t before = frames_of<SyncResult>(chat).size();
    const uint64_t id = next_request++;
    chat_send(to_storage, encode(Frame{SyncQuery{id, user, std::move(cursors)}}));
    settle(20 * kMs);
    std::vector<SyncResult> all = frames_of<SyncResult>(chat);
    std::vector<SyncResult> out(all.begin() + static_cast<std::ptrdiff_t>(before), all.end());
    for (const auto& r : out) EXPECT_EQ(r.request_id, id);
    return out;
  }
  // The (conv, seq) pairs a sync returned, "conv#seq", in order.
  static std::vector<std::string> seqs(const std::vector<SyncResult>& results) {
    std::vector<std::string> out;
    for (const auto& r : results)
      for (const auto& e : r.entries) out.push_back(e.conv + "#" + std::to_string(e.seq));
    return out;
  }

  // The queue node crashes with `disk` and starts again; the rig settles after each step.
  void restart_queue(CrashDisk disk) {
    sim.crash(queue_id, disk);
    settle();
    sim.start(queue_id);
    settle();
  }

  // The chat server's process restarts: it reconnects to the queue and storage.
  void restart_chat() {
    sim.crash(chat_id, CrashDisk::keep_unsynced);
    sim.start(chat_id);
    settle(10 * kMs);
  }

  ChatConfig config;
  Simulator sim;
  Script chat, registry, push;
  NodeId chat_id = kNoNode, registry_id = kNoNode, push_id = kNoNode, queue_id = kNoNode, storage_id = kNoNode;
  Context* chat_ctx = nullptr;
  ConnId to_queue = kNoConn, to_storage = kNoConn;
  uint64_t next_request = 1;
  bool registry_answers = true;
  std::map<std::string, NodeId> located;
};

BugSet with(Bug bug) {
  BugSet bugs;
  bugs.enable(bug);
  return bugs;
}

// --- queue ------------------------------------------------------------------------------------

TEST(Queue, MsgIdFilterNeverForgetsAHashAndSaysMaybeToAllPastItsBound) {
  MsgIdFilter filter;
  EXPECT_FALSE(filter.may_contain(0));
  // Hashes that share low bits collide on slots and probe past each other; 0 is a hash too.
  for (uint64_t i = 0; i < 100'000; ++i) filter.add(i << 20);
  filter.add(7 << 20);  // added twice, counted once
  EXPECT_EQ(filter.size(), 100'000u);
  for (uint64_t i = 0; i < 100'000; ++i) ASSERT_TRUE(filter.may_contain(i << 20)) << i;
  for (uint64_t i = 1; i < 1000; ++i) EXPECT_FALSE(filter.may_contain((i << 20) + 1)) << i;
  EXPECT_FALSE(filter.may_contain(uint64_t{100'000} << 20));
  EXPECT_LE(filter.slot_bytes(), 32 * filter.size());
  EXPECT_FALSE(filter.saturated());
  for (uint64_t i = filter.size(); i <= MsgIdFilter::kHashesMax; ++i) filter.add(~i);
  EXPECT_TRUE(filter.saturated());
  EXPECT_EQ(filter.slot_bytes(), 0u);
  EXPECT_TRUE(filter.may_contain(12345));  // "maybe": SQLite is asked
}

TEST(Queue, AssignsSeqsPerConversationAndAcksEachProduce) {
  Rig rig;
  rig.start_all();
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "seq:2");
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "m2", "u2")), "seq:1");
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u2", "m3", "u1")), "seq:2");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m4")), "seq:3");
  EXPECT_EQ(rig.queue().accepted(), 5u);
  EXPECT_EQ(rig.queue().next_seq("g:a"), 4u);
}

TEST(Queue, ARetryGetsTheFirstAnswerAcceptedOrRejected) {
  Rig rig;
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "seq:2");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "seq:2");  // retried: same seq
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m2")), "rejected:not a member");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u2", "op2")), "seq:3");
  // u2 is a member now, but the retry of its earlier send gets the answer it got then.
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m2")), "rejected:not a member");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m3")), "seq:4");
  EXPECT_EQ(rig.queue().duplicates(), 2u);
}

TEST(Queue, ARetryInTheSameBatchGetsTheSameSeq) {
  Rig rig;
  rig.start_all();
  // Both arrive within one group-commit window: the second sees the first's uncommitted row.
  rig.produce(message("dm:u1:u2", "u1", "m1", "u2"), 101);
  rig.produce(message("dm:u1:u2", "u1", "m1", "u2"), 102);
  rig.produce(message("dm:u1:u2", "u2", "m2", "u1"), 103);
  rig.settle(20 * kMs);
  std::map<uint64_t, uint64_t> seq_of;
  for (const auto& p : frames_of<Produced>(rig.chat)) seq_of[p.request_id] = p.seq;
  EXPECT_EQ(seq_of, (std::map<uint64_t, uint64_t>{{101, 1}, {102, 1}, {103, 2}}));
  EXPECT_EQ(rig.queue().duplicates(), 1u);
}

TEST(Queue, RetryNewSeqBugGivesARetryASecondSeq) {
  Rig rig(with(Bug::retry_new_seq));
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "seq:2");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "seq:3");
}

TEST(Queue, RejectAfterAppendBugStoresTheRefusedMessage) {
  Rig rig(with(Bug::reject_after_append));
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  // u2 is no member: refused, yet the message took seq 2, so the next one gets seq 3.
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m2")), "rejected:not a member");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m3")), "seq:3");
}

TEST(Queue, MembershipRules) {
  Rig rig;
  rig.start_all();
  // A group is created by its first join, made by the joiner for itself.
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m0")), "rejected:no such group");
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u2", "op0")), "rejected:not a member");
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op2")), "rejected:already a member");
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::leave, "g:a", "u1", "u3", "op3")), "rejected:not a member");
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u3", "u3", "op4")), "rejected:not a member");
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u2", "op5")), "seq:2");
  // Any member may add or remove.
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u2", "u3", "op6")), "seq:3");
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::leave, "g:a", "u3", "u1", "op7")), "seq:4");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "rejected:not a member");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u3", "m2")), "seq:5");  // rejections took no seq
  // 1:1: the sender is one side and `to` the other.
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u3", "m3", "u1")), "rejected:not a member");
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "m4", "u3")), "rejected:not a member");
  EXPECT_EQ(rig.produce_and_wait(message("dm:u2:u1", "u1", "m5", "u2")), "rejected:malformed conversation id");
  EXPECT_EQ(rig.produce_and_wait(membership(EntryKind::join, "dm:u1:u2", "u1", "u3", "op8")), "rejected:not a group");
  EXPECT_EQ(rig.produce_and_wait(message("x:1", "u1", "m6")), "rejected:unknown conversation");
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u2", "m7", "u1")), "seq:1");
  EXPECT_EQ(rig.queue().rejected(), 11u);
}

uint64_t digest_of(const std::vector<std::string>& users) { return members_digest(encode_member_list(users)); }

// The E2EE ordering rule (queue.h): a group message sealed for another member list than the
// group's at its seq is answered ProduceStale with the current list, takes no seq, and is not
// remembered, so the same msg_id sealed again for the right list is appended.
TEST(Queue, AGroupMessageSealedForAnOldMemberListIsAnsweredStale) {
  Rig rig;
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u2", "op2")), "seq:2");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m1"), digest_of({"u1", "u2"})), "seq:3");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u3", "op3")), "seq:4");
  // u2 has not seen u3 join: sealed for u1 and u2 only.
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m2"), digest_of({"u1", "u2"})), "stale:u1,u2,u3");
  EXPECT_EQ(rig.queue().next_seq("g:a"), 5u);
  EXPECT_EQ(rig.queue().stale(), 1u);
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m2"), digest_of({"u1", "u2", "u3"})), "seq:5");
  // A leave: a list that still names the leaver is stale too.
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::leave, "g:a", "u1", "u3", "op4")), "seq:6");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m3"), digest_of({"u1", "u2", "u3"})), "stale:u1,u2");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "m3"), digest_of({"u1", "u2"})), "seq:7");
  // The membership check comes first: a non-member is refused for good whatever it names.
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u3", "m4"), digest_of({"u1", "u2"})), "rejected:not a member");
  // 0 is "not checked" (no E2EE), and 1:1 conversations are never checked.
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m5"), 0), "seq:8");
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "m6", "u2"), 12345), "seq:1");
  // After a restart the digest is computed again from the recovered members.
  rig.restart_queue(CrashDisk::keep_unsynced);
  rig.restart_chat();
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m7"), digest_of({"u1", "u2", "u3"})), "stale:u1,u2");
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u2", "m7"), digest_of({"u1", "u2"})), "seq:9");
}

TEST(Queue, AMalformedFrameClosesTheConnectionWithoutACrash) {
  Rig rig;
  rig.start_all();
  rig.chat_send(rig.to_queue, Bytes{1, 40, 0xff});  // a Produce cut short
  rig.settle();
  EXPECT_EQ(rig.chat.count("disconnect:closed_by_peer"), 1u);
  EXPECT_FALSE(rig.queue().halted());
}

TEST(Queue, ASubscribeToAPartitionLedElsewhereClosesTheConnection) {
  Rig rig(BugSet{}, /*partitions=*/4);
  rig.start_all();
  rig.chat_send(rig.to_queue, encode(Frame{Subscribe{9, 1}}));  // partitions are 0..3
  rig.settle();
  EXPECT_EQ(rig.chat.count("disconnect:closed_by_peer"), 1u);
}

// Produces `count` messages of one 1:1 conversation, one at a time, and returns the seqs acked.
std::vector<uint64_t> produce_many(Rig& rig, const std::string& prefix, int count) {
  const size_t before = frames_of<Produced>(rig.chat).size();
  for (int i = 0; i < count; ++i) rig.produce(message("dm:u1:u2", "u1", prefix + std::to_string(i), "u2"));
  rig.settle(100 * kMs);
  std::vector<uint64_t> seqs;
  const auto produced = frames_of<Produced>(rig.chat);
  for (size_t i = before; i < produced.size(); ++i) seqs.push_back(produced[i].seq);
  return seqs;
}

class QueueCrash : public ::testing::TestWithParam<CrashDisk> {};

TEST_P(QueueCrash, KeepsEveryAckedRecordAndSeqsContinue) {
  Rig rig;
  rig.start_all();
  const std::vector<uint64_t> acked = produce_many(rig, "a", 50);
  ASSERT_EQ(acked.size(), 50u);
  EXPECT_EQ(acked.back(), 50u);
  rig.restart_queue(GetParam());
  EXPECT_EQ(rig.queue().next_seq("dm:u1:u2"), 51u);
  // The chat server reconnects, retries one acked send, then sends a new one.
  rig.restart_chat();
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "a7", "u2")), "seq:8");
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "b0", "u2")), "seq:51");
  // Every acked record is in the log, once: storage got them all.
  rig.settle(15 * kS);
  const auto entries = Rig::seqs(rig.sync("u1", {}));
  ASSERT_EQ(entries.size(), 51u);
  for (size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i], "dm:u1:u2#" + std::to_string(i + 1));
}

TEST(Queue, NextSeqsWrittenLazilyAreReplayedFromTheLogAfterACrash) {
  Rig rig;
  rig.start_all();
  // One batch per produce: past kSeqsEveryBatches batches the next seqs went to disk once, and
  // the records after that are only in the log.
  const int count = static_cast<int>(QueueNode::kSeqsEveryBatches) + 20;
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  for (int i = 0; i < count; ++i) {
    const Entry entry = i % 2 == 0 ? message("dm:u1:u2", "u1", "m" + std::to_string(i), "u2")
                                   : message("g:a", "u1", "m" + std::to_string(i));
    ASSERT_EQ(rig.produce_and_wait(entry), "seq:" + std::to_string(i / 2 + (i % 2 == 0 ? 1 : 2)));
  }
  rig.restart_queue(CrashDisk::lose_unsynced);
  EXPECT_EQ(rig.queue().next_seq("dm:u1:u2"), uint64_t(count / 2 + 1));
  EXPECT_EQ(rig.queue().next_seq("g:a"), uint64_t(count / 2 + 2));
  rig.restart_chat();
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "m0", "u2")), "seq:1");  // a retry
  EXPECT_EQ(rig.produce_and_wait(message("g:a", "u1", "n0")), "seq:" + std::to_string(count / 2 + 2));
}

// ci-nemesis seed 60: a restart replayed a quiet conversation's next seq from the log but did not
// write it, and the next lazy write moved `seqs_cover` past that record anyway; the second restart
// read the stale row (here: none) and gave the conversation's next message a seq already acked.
TEST(Queue, NextSeqsReplayedByOneRestartSurviveTheNext) {
  Rig rig;
  rig.start_all();
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "quiet" + std::to_string(i), "u2")), "seq:" + std::to_string(i + 1));
  rig.restart_queue(CrashDisk::lose_unsynced);
  ASSERT_EQ(rig.queue().next_seq("dm:u1:u2"), 11u);
  // Another conversation alone keeps the queue busy past kSeqsEveryBatches batches, so the next
  // seqs and their cover are written at least once while dm:u1:u2 says nothing.
  rig.restart_chat();
  const int busy = static_cast<int>(QueueNode::kSeqsEveryBatches) + 1;
  for (int i = 0; i < busy; ++i)
    ASSERT_EQ(rig.produce_and_wait(message("dm:u3:u4", "u3", "busy" + std::to_string(i), "u4")), "seq:" + std::to_string(i + 1));
  rig.restart_queue(CrashDisk::lose_unsynced);
  EXPECT_EQ(rig.queue().next_seq("dm:u1:u2"), 11u);
  EXPECT_EQ(rig.queue().next_seq("dm:u3:u4"), uint64_t(busy + 1));
  rig.restart_chat();
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "after", "u2")), "seq:11");
}

INSTANTIATE_TEST_SUITE_P(DiskModes, QueueCrash, ::testing::Values(CrashDisk::lose_unsynced, CrashDisk::torn));

TEST(Queue, AckBeforeDurableBugLosesAckedRecordsInACrash) {
  Rig rig(with(Bug::ack_before_durable));
  rig.start_all();
  const std::vector<uint64_t> acked = produce_many(rig, "a", 50);
  ASSERT_EQ(acked.size(), 50u);
  rig.restart_queue(CrashDisk::lose_unsynced);
  // Acked seqs are gone: the next message would reuse one of them.
  EXPECT_LT(rig.queue().next_seq("dm:u1:u2"), 51u);
}

// Retention with one copy (queue.h "Retention"): the floor is the consumer's committed end and
// the HW. Each produce 1 ms apart is its own batch, so 600 of them pass kSeqsEveryBatches.
TEST(Queue, RetentionDeletesWhatStorageHoldsAndARestartRecovers) {
  Rig rig;
  rig.start_all();
  for (int i = 0; i < 600; ++i) {
    rig.produce(message("dm:u1:u2", "u1", "a" + std::to_string(i), "u2"));
    rig.settle(1 * kMs);
  }
  rig.settle(1500 * kMs);  // storage's OffsetCommit arrives
  const uint32_t partition = rig.config.topology.partition_of("dm:u1:u2");
  ASSERT_EQ(rig.storage().last_offset(partition), 600u);
  EXPECT_EQ(rig.queue().log_start(partition), 1u);  // deletion waits for a batch
  ASSERT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "b0", "u2")), "seq:601");
  const uint64_t start = rig.queue().log_start(partition);
  EXPECT_GT(start, 1u);
  EXPECT_LE(start, 600u);
  rig.restart_queue(CrashDisk::lose_unsynced);
  rig.restart_chat();  // its connection to the queue broke
  EXPECT_EQ(rig.queue().log_start(partition), start);
  EXPECT_EQ(rig.queue().next_offset(partition), 602u);
  EXPECT_EQ(rig.queue().next_seq("dm:u1:u2"), 602u);
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "a7", "u2")), "seq:8");  // dedup stays
  rig.settle(3 * kS);  // storage reconnects with backoff
  EXPECT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "b1", "u2")), "seq:602");
  rig.settle(100 * kMs);
  EXPECT_EQ(rig.storage().last_offset(partition), 602u);
  EXPECT_EQ(Rig::seqs(rig.sync("u2", {})).size(), 602u);  // storage keeps every entry
}

TEST(Queue, CatchUpPagesTheLogAndThenStreamsNewRecords) {
  Rig rig(BugSet{}, /*partitions=*/1);
  rig.start_all();
  ASSERT_EQ(produce_many(rig, "a", 1200).size(), 1200u);
  // A second subscriber (the chat script, standing in for a storage node) from offset 100.
  rig.chat_send(rig.to_queue, encode(Frame{Subscribe{0, 100}}));
  rig.settle(100 * kMs);
  ASSERT_EQ(produce_many(rig, "b", 10).size(), 10u);
  std::vector<uint64_t> offsets;
  for (const Records& records : frames_of<Records>(rig.chat)) {
    EXPECT_EQ(records.partition, 0u);
    EXPECT_LE(records.records.size(), kEntriesPerFrameMax);
    for (const auto& r : records.records) offsets.push_back(r.offset);
  }
  ASSERT_EQ(offsets.size(), 1111u);  // 100..1210
  for (size_t i = 0; i < offsets.size(); ++i) EXPECT_EQ(offsets[i], 100 + i);
}

// --- storage ----------------------------------------------------------------------------------

TEST(Storage, StoresAndFansOutToLocatedDevicesAndPushesTheRest) {
  Rig rig(BugSet{}, 4, /*real_push=*/true);
  rig.located["u1.d1"] = rig.chat_id;
  rig.located["u2.d2"] = rig.chat_id;
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "m1", "u2")), "seq:1");
  rig.settle(100 * kMs);
  EXPECT_EQ(rig.storage().stored(), 1u);
  const auto routed = rig.routed();
  ASSERT_EQ(routed.count("dm:u1:u2#1"), 1u);
  EXPECT_EQ(routed.at("dm:u1:u2#1"), (std::set<std::string>{"u1.d1", "u2.d2"}));
  auto* push = dynamic_cast<PushNode*>(rig.sim.node_object(rig.push_id));
  ASSERT_NE(push, nullptr);
  EXPECT_EQ(push->notifications(), 2u);  // u1.d2 and u2.d1
  EXPECT_EQ(push->notifications_for("u2.d1"), 1u);
  EXPECT_EQ(push->notifications_for("u1.d1"), 0u);
}

TEST(Storage, FanOutFollowsMembershipAtEachSeq) {
  Rig rig;
  for (int u = 1; u <= 4; ++u) rig.located["u" + std::to_string(u) + ".d1"] = 0;
  for (auto& [device, server] : rig.located) server = rig.chat_id;
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u2", "op2")), "seq:2");
  ASSERT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "seq:3");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u3", "op3")), "seq:4");
  ASSERT_EQ(rig.produce_and_wait(message("g:a", "u2", "m2")), "seq:5");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::leave, "g:a", "u1", "u2", "op4")), "seq:6");
  ASSERT_EQ(rig.produce_and_wait(message("g:a", "u3", "m3")), "seq:7");
  rig.settle(100 * kMs);
  const auto routed = rig.routed();
  using S = std::set<std::string>;
  EXPECT_EQ(routed.at("g:a#1"), (S{"u1.d1"}));
  EXPECT_EQ(routed.at("g:a#2"), (S{"u1.d1", "u2.d1"}));  // a join reaches the joiner
  EXPECT_EQ(routed.at("g:a#3"), (S{"u1.d1", "u2.d1"}));
  EXPECT_EQ(routed.at("g:a#4"), (S{"u1.d1", "u2.d1", "u3.d1"}));
  EXPECT_EQ(routed.at("g:a#5"), (S{"u1.d1", "u2.d1", "u3.d1"}));
  EXPECT_EQ(routed.at("g:a#6"), (S{"u1.d1", "u2.d1", "u3.d1"}));  // a leave reaches the leaver
  EXPECT_EQ(routed.at("g:a#7"), (S{"u1.d1", "u3.d1"}));
  EXPECT_EQ(routed.size(), 7u);
}

TEST(Storage, LeaveOneLateBugFansTheNextEntryOutToTheLeaver) {
  Rig rig(with(Bug::leave_one_late));
  for (int u = 1; u <= 2; ++u) rig.located["u" + std::to_string(u) + ".d1"] = 0;
  for (auto& [device, server] : rig.located) server = rig.chat_id;
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u2", "op2")), "seq:2");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::leave, "g:a", "u1", "u2", "op3")), "seq:3");
  ASSERT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "seq:4");
  ASSERT_EQ(rig.produce_and_wait(message("g:a", "u1", "m2")), "seq:5");
  rig.settle(100 * kMs);
  const auto routed = rig.routed();
  EXPECT_EQ(routed.at("g:a#4"), (std::set<std::string>{"u1.d1", "u2.d1"}));
  EXPECT_EQ(routed.at("g:a#5"), (std::set<std::string>{"u1.d1"}));
  EXPECT_EQ(Rig::seqs(rig.sync("u2", {})), (std::vector<std::string>{"g:a#2", "g:a#3", "g:a#4"}));
}

TEST(Storage, BadFramesCloseTheConnectionAndNothingElse) {
  Rig rig;
  rig.start_all();
  rig.chat_send(rig.to_storage, Bytes{1, 50, 7, 200});  // a SyncQuery whose user runs past the end
  rig.settle();
  EXPECT_EQ(rig.chat.count("disconnect:closed_by_peer"), 1u);
  EXPECT_FALSE(rig.storage().halted());
  rig.restart_chat();
  // It goes on storing.
  ASSERT_EQ(produce_many(rig, "a", 3).size(), 3u);
  EXPECT_EQ(rig.storage().stored(), 3u);
}

TEST(Storage, LookupsTheRegistryNeverAnswersTimeOut) {
  Rig rig;
  rig.registry_answers = false;
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "m1", "u2")), "seq:1");
  rig.settle(100 * kMs);
  EXPECT_EQ(rig.storage().pending_lookups(), 1u);
  rig.settle(rig.config.tuning.server_request_timeout_ns + 100 * kMs);
  EXPECT_EQ(rig.storage().pending_lookups(), 0u);
  EXPECT_EQ(rig.storage().lookups_timed_out(), 1u);
  EXPECT_EQ(rig.storage().routes_sent(), 0u);
  EXPECT_EQ(rig.push.count("frame"), 0u);  // dropped, not pushed: devices catch up by sync
}

TEST(Storage, ResumesFromItsOffsetAfterACrash) {
  Rig rig;
  rig.start_all();
  ASSERT_EQ(produce_many(rig, "a", 30).size(), 30u);
  rig.settle(100 * kMs);
  const uint32_t partition = rig.config.topology.partition_of("dm:u1:u2");
  EXPECT_EQ(rig.storage().last_offset(partition), 30u);
  rig.sim.crash(rig.storage_id, CrashDisk::lose_unsynced);
  ASSERT_EQ(produce_many(rig, "b", 20).size(), 20u);  // stored by the queue while storage is down
  rig.sim.start(rig.storage_id);
  rig.settle(200 * kMs);
  rig.restart_chat();
  EXPECT_EQ(rig.storage().last_offset(partition), 50u);
  EXPECT_EQ(rig.storage().stored(), 20u);  // this incarnation stored only what it lacked
  const auto entries = Rig::seqs(rig.sync("u2", {}));
  ASSERT_EQ(entries.size(), 50u);
  for (size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i], "dm:u1:u2#" + std::to_string(i + 1));
}

TEST(Storage, ReconnectsToARestartedQueueAndResubscribes) {
  Rig rig;
  rig.start_all();
  ASSERT_EQ(produce_many(rig, "a", 5).size(), 5u);
  rig.sim.crash(rig.queue_id, CrashDisk::lose_unsynced);
  rig.settle(3 * kS);  // storage retries with backoff while the queue is down
  rig.sim.start(rig.queue_id);
  rig.restart_chat();
  rig.settle(10 * kS);
  ASSERT_EQ(produce_many(rig, "b", 5).size(), 5u);
  rig.settle(100 * kMs);
  EXPECT_EQ(rig.storage().last_offset(rig.config.topology.partition_of("dm:u1:u2")), 10u);
  EXPECT_EQ(Rig::seqs(rig.sync("u1", {})).size(), 10u);
}

TEST(Storage, SyncReturnsWhatTheUserMaySeeAfterItsCursors) {
  Rig rig;
  rig.start_all();
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u1", "op1")), "seq:1");
  ASSERT_EQ(rig.produce_and_wait(message("g:a", "u1", "m1")), "seq:2");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::join, "g:a", "u1", "u3", "op2")), "seq:3");
  ASSERT_EQ(rig.produce_and_wait(message("g:a", "u1", "m2")), "seq:4");
  ASSERT_EQ(rig.produce_and_wait(membership(EntryKind::leave, "g:a", "u1", "u3", "op3")), "seq:5");
  ASSERT_EQ(rig.produce_and_wait(message("g:a", "u1", "m3")), "seq:6");
  ASSERT_EQ(rig.produce_and_wait(message("dm:u1:u3", "u3", "m4", "u1")), "seq:1");
  ASSERT_EQ(rig.produce_and_wait(message("dm:u1:u2", "u1", "m5", "u2")), "seq:1");
  rig.settle(100 * kMs);

  using V = std::vector<std::string>;
  // u3 sees its own join, what came while it was in, its own leave; nothing before or after.
  auto u3 = rig.sync("u3", {});
  ASSERT_EQ(u3.size(), 1u);
  EXPECT_TRUE(u3.back().done);
  const std::vector<std::string> u3_seqs = Rig::seqs(u3);
  const std::set<std::string> got(u3_seqs.begin(), u3_seqs.end());
  EXPECT_EQ(got, (std::set<std::string>{"g:a#3", "g:a#4", "g:a#5", "dm:u1:u3#1"}));
  // Cursors: only what comes after; a conversation not named starts from 0.
  const V u1 = Rig::seqs(rig.sync("u1", {{"g:a", 4}, {"dm:u1:u3", 1}}));
  EXPECT_EQ(std::set<std::string>(u1.begin(), u1.end()), (std::set<std::string>{"g:a#5", "g:a#6", "dm:u1:u2#1"}));
  // Nothing to send: still one frame, done.
  auto none = rig.sync("u5", {});
  ASSERT_EQ(none.size(), 1u);
  EXPECT_TRUE(none[0].done);
  EXPECT_TRUE(none[0].entries.empty());
}

TEST(Storage, SyncOffByOneBugSkipsTheEntryAfterEachCursor) {
  Rig rig(with(Bug::sync_off_by_one));
  rig.start_all();
  ASSERT_EQ(produce_many(rig, "a", 5).size(), 5u);
  rig.settle(100 * kMs);
  EXPECT_EQ(Rig::seqs(rig.sync("u2", {{"dm:u1:u2", 2}})), (std::vector<std::string>{"dm:u1:u2#4", "dm:u1:u2#5"}));
}

TEST(Storage, SyncPagesPastTheFrameLimit) {
  Rig rig;
  rig.start_all();
  ASSERT_EQ(produce_many(rig, "a", 1100).size(), 1100u);
  rig.settle(200 * kMs);
  EXPECT_EQ(rig.storage().stored(), 1100u);
  const auto results = rig.sync("u1", {{"dm:u1:u2", 50}});
  ASSERT_EQ(results.size(), 3u);  // 512 + 512 + 26
  EXPECT_FALSE(results[0].done);
  EXPECT_FALSE(results[1].done);
  EXPECT_TRUE(results[2].done);
  const auto entries = Rig::seqs(results);
  ASSERT_EQ(entries.size(), 1050u);
  for (size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i], "dm:u1:u2#" + std::to_string(51 + i));
}

TEST(Storage, ReceiptsOnlyRiseAndReachTheOtherMembers) {
  Rig rig;
  rig.located["u1.d1"] = 0;
  rig.located["u2.d1"] = 0;
  rig.located["u2.d2"] = 0;
  for (auto& [device, server] : rig.located) server = rig.chat_id;
  rig.start_all();
  ASSERT_EQ(produce_many(rig, "a", 10).size(), 10u);
  rig.settle(100 * kMs);
  auto receipt = [&rig](uint64_t up_to) {
    rig.chat_send(rig.to_storage, encode(Frame{ReceiptUpdate{"dm:u1:u2", "u2", ReceiptKind::read, up_to}}));
    rig.settle(50 * kMs);
  };
  receipt(5);
  receipt(3);  // lower: nothing
  receipt(5);  // the same: nothing
  receipt(8);
  std::vector<uint64_t> noticed;
  for (const Route& route : frames_of<Route>(rig.chat)) {
    if (!route.is_receipt) continue;
    ASSERT_EQ(route.targets.size(), 1u);
    EXPECT_EQ(route.targets[0].device, "u1.d1");  // the reader's own devices are not told
    EXPECT_EQ(route.receipt.reader, "u2");
    noticed.push_back(route.receipt.up_to);
  }
  EXPECT_EQ(noticed, (std::vector<uint64_t>{5, 8}));
  // Durable: a restarted storage still knows 8.
  rig.sim.crash(rig.storage_id, CrashDisk::lose_unsynced);
  rig.sim.start(rig.storage_id);
  rig.settle(100 * kMs);
  rig.restart_chat();
  const size_t before = frames_of<Route>(rig.chat).size();
  receipt(8);
  EXPECT_EQ(frames_of<Route>(rig.chat).size(), before);
}

// Many producers' worth of traffic through queue, storage and fan-out; prints the wall-clock
// rate (the simulator's per-message cost of these two nodes, disk model included).
// Four 1:1 conversations, each of another partition of the rig's four.
std::vector<std::string> convs_of_distinct_partitions(const Rig& rig) {
  std::vector<std::string> out;
  std::set<uint32_t> partitions;
  for (int a = 1; a <= 6 && out.size() < 4; ++a) {
    for (int b = a + 1; b <= 6 && out.size() < 4; ++b) {
      const std::string conv = "dm:u" + std::to_string(a) + ":u" + std::to_string(b);
      if (partitions.insert(rig.config.topology.partition_of(conv)).second) out.push_back(conv);
    }
  }
  EXPECT_EQ(out.size(), 4u);
  return out;
}
void produce_one_each(Rig& rig, const std::vector<std::string>& convs, const std::string& prefix) {
  for (size_t i = 0; i < convs.size(); ++i) {
    const std::string& conv = convs[i];
    rig.produce(message(conv, conv.substr(3, 2), prefix + std::to_string(i), conv.substr(6, 2)));
  }
}

// Storage's group commit (storage.h): the Records of four partitions that arrive within the
// window are one transaction, so the storage's disk sees one sync where a commit per frame made
// four; nothing fans out before that commit.
TEST(Storage, RecordsOfManyPartitionsWithinTheWindowShareOneCommit) {
  std::vector<uint64_t> syncs;
  for (const int64_t window_ns : {int64_t{-1}, 50 * kMs}) {
    SCOPED_TRACE("storage_commit_window_ns " + std::to_string(window_ns));
    Rig rig;
    rig.config.tuning.storage_commit_window_ns = window_ns;
    for (int u = 1; u <= 6; ++u) rig.located["u" + std::to_string(u) + ".d1"] = 0;
    for (auto& [device, server] : rig.located) server = rig.chat_id;
    rig.start_all();
    const std::vector<std::string> convs = convs_of_distinct_partitions(rig);
    const uint64_t syncs_before = rig.sim.disk().storage(rig.storage_id).counters().syncs;
    produce_one_each(rig, convs, "m");
    rig.settle(20 * kMs);  // the queue has committed and sent the four frames
    ASSERT_EQ(frames_of<Produced>(rig.chat).size(), 4u);
    if (window_ns > 0) {
      EXPECT_EQ(rig.storage().stored(), 0u);
      EXPECT_TRUE(rig.routed().empty()) << "an entry fanned out before the commit that made it durable";
    }
    rig.settle(100 * kMs);
    EXPECT_EQ(rig.storage().stored(), 4u);
    EXPECT_EQ(rig.routed().size(), 4u);
    syncs.push_back(rig.sim.disk().storage(rig.storage_id).counters().syncs - syncs_before);
  }
  // Besides the commits, both runs sync the log's header once as it starts.
  ASSERT_EQ(syncs.size(), 2u);
  EXPECT_EQ(syncs[0] - syncs[1], 3u) << "a commit per frame: " << syncs[0] << " syncs; one per window: " << syncs[1];
}

// A sync inside the window commits the open batch first and serves what it stored; a crash
// inside the window loses only the uncommitted batch, which the storage fetches again from the
// queue after its restart.
TEST(Storage, TheOpenBatchCommitsBeforeASyncAndACrashInsideItLosesNothingAcked) {
  Rig rig;
  rig.config.tuning.storage_commit_window_ns = 50 * kMs;
  rig.start_all();
  const std::vector<std::string> convs = convs_of_distinct_partitions(rig);
  produce_one_each(rig, convs, "a");
  rig.settle(20 * kMs);
  ASSERT_EQ(rig.storage().stored(), 0u);
  const std::vector<std::string> seen = Rig::seqs(rig.sync("u1", {}));
  size_t of_u1 = 0;
  for (const std::string& conv : convs) of_u1 += conv.find("u1:") != std::string::npos ? 1 : 0;
  EXPECT_EQ(seen.size(), of_u1);
  EXPECT_EQ(rig.storage().stored(), 4u);
  rig.settle(60 * kMs);  // the first batch's timer, which outlived its early commit, has fired

  produce_one_each(rig, convs, "b");
  rig.settle(20 * kMs);
  rig.sim.crash(rig.storage_id, CrashDisk::lose_unsynced);
  rig.sim.start(rig.storage_id);
  rig.settle(200 * kMs);
  rig.restart_chat();
  for (const std::string& conv : convs) EXPECT_EQ(rig.storage().last_offset(rig.config.topology.partition_of(conv)), 2u) << conv;
  EXPECT_EQ(rig.storage().stored(), 4u);  // this incarnation stored the second four
  const std::vector<std::string> all = Rig::seqs(rig.sync(convs[0].substr(3, 2), {}));
  EXPECT_EQ(std::count(all.begin(), all.end(), convs[0] + "#2"), 1);
}

TEST(Storage, ThroughputOfQueueAndStorage) {
  Rig rig(BugSet{}, /*partitions=*/16);
  for (int u = 1; u <= 6; ++u) rig.located["u" + std::to_string(u) + ".d1"] = 0;
  for (auto& [device, server] : rig.located) server = rig.chat_id;
  rig.start_all();
  constexpr int kMessages = 20'000;
  const std::vector<std::string> convs = {"dm:u1:u2", "dm:u3:u4", "dm:u5:u6", "dm:u1:u3", "dm:u2:u4", "dm:u1:u6"};
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kMessages; ++i) {
    const std::string& conv = convs[static_cast<size_t>(i) % convs.size()];
    const std::string from = conv.substr(3, 2);
    const std::string to = conv.substr(6, 2);
    rig.produce(message(conv, from, "t" + std::to_string(i), to));
    if (i % 100 == 99) rig.settle(1 * kMs);  // 100 messages per millisecond: 100,000 per second
  }
  rig.settle(1 * kS);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(rig.queue().accepted(), static_cast<uint64_t>(kMessages));
  EXPECT_EQ(rig.storage().stored(), static_cast<uint64_t>(kMessages));
  EXPECT_EQ(rig.routed().size(), static_cast<size_t>(kMessages));
  std::printf("queue+storage+fan-out: %d messages in %.3f s wall: %.0f messages/s\n", kMessages, seconds,
              kMessages / seconds);
}

TEST(Storage, SameSeedSameDigest) {
  auto run = [] {
    Rig rig;
    rig.located["u1.d1"] = rig.chat_id;
    rig.start_all();
    produce_many(rig, "a", 100);
    rig.sim.crash(rig.queue_id, CrashDisk::torn);
    rig.settle(2 * kS);
    rig.sim.start(rig.queue_id);
    rig.settle(10 * kS);
    return rig.sim.digest_hex();
  };
  EXPECT_EQ(run(), run());
}

}  // namespace
}  // namespace msgsim::chat
