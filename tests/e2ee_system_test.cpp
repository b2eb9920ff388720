// E2EE in the messaging system: the key service (one-time prekeys handed out once, even across
// a crash; bad signatures refused), the devices' E2EE client (sessions, retransmissions, group
// sender keys against a malicious server), and whole simulated runs (the confidentiality check
// passes with E2EE and fails under the planted bug server-sees-plaintext).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "impl/chat/e2ee_client.h"
#include "impl/chat/key_service.h"
#include "oracle/event.h"
#include "sim/chat_system.h"
#include "sim/disk.h"
#include "sim/randombytes.h"
#include "sim/scenario.h"
#include "sim/simulator.h"
#include "sim/world.h"
#include "tests/chat_test_support.h"
#include "tests/sim_test_node.h"

namespace msgsim::chat {
namespace {

using testing::Script;
using testing::ScriptNode;
using test_support::one_region;
using test_support::decoded;
using test_support::frames_of;

constexpr int64_t kS = kNanosPerSecond;

Bytes bytes_of(const std::string& text) { return Bytes(text.begin(), text.end()); }

// --- The key service ------------------------------------------------------------------------

struct KeyRig {
  KeyRig() : sim(5, one_region()) {
    keys_id = sim.add_node("keys", 0, [this] { return std::make_unique<KeyServiceNode>(config); });
    client_id = sim.add_node("client", 0, [this] { return std::make_unique<ScriptNode>(client); });
    config.topology.key_services = {keys_id};
    client.on_start = [this](Context& ctx) {
      ctx_ = &ctx;
      conn = ctx.connect(keys_id);
    };
    sim.start(keys_id);
    sim.start(client_id);
    sim.run_until(sim.now_ns() + 100 * kNanosPerMilli);
  }
  ChatConfig config;
  sim::Simulator sim;
  Script client;
  Context* ctx_ = nullptr;
  NodeId keys_id = 0, client_id = 0;
  ConnId conn = kNoConn;
};

// Runs `frames` from the scripted client through a timer, then lets the answers arrive.
void exchange(KeyRig& rig, std::vector<Frame> frames) {
  rig.client.on_timer = [&rig, frames](Context& ctx, uint64_t) {
    for (const Frame& f : frames) ctx.send(rig.conn, encode(f));
  };
  rig.ctx_->set_timer(1, 99);
  rig.sim.run_until(rig.sim.now_ns() + 200 * kNanosPerMilli);
}

TEST(KeyService, HandsOutEachOneTimePrekeyOnceEvenAcrossACrash) {
  sim::reseed_randombytes(11);
  KeyRig rig;
  E2eeClient bob("u2", "u2.d1");
  exchange(rig, {bob.initial_publish(1)});
  auto published = frames_of<KeysPublished>(rig.client);
  ASSERT_EQ(published.size(), 1u);
  EXPECT_EQ(published[0].opks_available, E2eeClient::kInitialOneTimePrekeys);

  std::set<uint32_t> handed_out;
  auto fetch = [&](uint64_t id) {
    exchange(rig, {FetchBundles{id, {UserRef{"u2"}}}});
    auto answers = frames_of<Bundles>(rig.client);
    ASSERT_FALSE(answers.empty());
    ASSERT_EQ(answers.back().request_id, id);
    ASSERT_EQ(answers.back().bundles.size(), 1u);
    const DeviceBundle& b = answers.back().bundles[0];
    if (b.has_opk) {
      EXPECT_TRUE(handed_out.insert(b.opk_id).second) << "one-time prekey " << b.opk_id << " handed out twice";
    }
  };
  fetch(10);
  fetch(11);
  // The service crashes losing everything unsynced, and comes back: what it handed out stays used.
  rig.sim.crash(rig.keys_id, sim::CrashDisk::lose_unsynced);
  rig.sim.run_until(rig.sim.now_ns() + 100 * kNanosPerMilli);
  rig.sim.start(rig.keys_id);
  rig.sim.run_until(rig.sim.now_ns() + 100 * kNanosPerMilli);
  rig.conn = rig.ctx_->connect(rig.keys_id);
  for (uint64_t id = 12; id < 12 + E2eeClient::kInitialOneTimePrekeys + 2; ++id) fetch(id);
  EXPECT_EQ(handed_out.size(), E2eeClient::kInitialOneTimePrekeys);
  // Exhausted: the bundle comes without a one-time prekey, and X3DH still works (no DH4).
  auto last = frames_of<Bundles>(rig.client).back().bundles[0];
  EXPECT_FALSE(last.has_opk);
  E2eeClient alice("u1", "u1.d1");
  ASSERT_TRUE(alice.add_bundle(last).ok());
  Result<Bytes> sealed = alice.seal_direct(bytes_of("after the prekeys ran out"), {"u2.d1"});
  ASSERT_TRUE(sealed.ok());
  Result<E2eeClient::Opened> opened = bob.open("dm:u1:u2", "u1.d1", *sealed);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->plaintext, bytes_of("after the prekeys ran out"));
}

TEST(KeyService, ARepublishNeverBringsBackAHandedOutPrekey) {
  sim::reseed_randombytes(18);
  KeyRig rig;
  E2eeClient bob("u2", "u2.d1");
  exchange(rig, {bob.initial_publish(1), FetchBundles{2, {UserRef{"u2"}}}});
  auto first = frames_of<Bundles>(rig.client);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(first[0].bundles.at(0).has_opk);
  const uint32_t taken = first[0].bundles[0].opk_id;
  // The same publish again (a retry after a lost answer): the handed-out key stays gone.
  exchange(rig, {bob.initial_publish(3)});
  auto published = frames_of<KeysPublished>(rig.client);
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published[1].opks_available, E2eeClient::kInitialOneTimePrekeys - 1);
  for (uint64_t id = 4; id < 4 + E2eeClient::kInitialOneTimePrekeys; ++id) {
    exchange(rig, {FetchBundles{id, {UserRef{"u2"}}}});
    const DeviceBundle b = frames_of<Bundles>(rig.client).back().bundles.at(0);  // a copy: the vector is a temporary
    EXPECT_FALSE(b.has_opk && b.opk_id == taken) << "one-time prekey " << taken << " handed out again";
  }
}

TEST(KeyService, AReplenishAfterTheCountRunsLowAddsFreshPrekeys) {
  sim::reseed_randombytes(19);
  KeyRig rig;
  E2eeClient bob("u2", "u2.d1");
  exchange(rig, {bob.initial_publish(1)});
  std::set<uint32_t> handed_out;
  uint64_t id = 2;
  // First contacts take one-time prekeys until the service holds fewer than kReplenishBelow.
  for (size_t taken = 0; taken + E2eeClient::kReplenishBelow <= E2eeClient::kInitialOneTimePrekeys; ++taken) {
    exchange(rig, {FetchBundles{id++, {UserRef{"u2"}}}});
    const DeviceBundle b = frames_of<Bundles>(rig.client).back().bundles.at(0);  // a copy: the vector is a temporary
    ASSERT_TRUE(b.has_opk);
    EXPECT_TRUE(handed_out.insert(b.opk_id).second);
  }
  const size_t left = E2eeClient::kInitialOneTimePrekeys - handed_out.size();
  ASSERT_LT(left, E2eeClient::kReplenishBelow);
  // The device's count query (a publish with no keys), then the top-up it triggers.
  PublishKeys query;
  query.request_id = id++;
  query.user = "u2";
  query.device = "u2.d1";
  exchange(rig, {query});
  ASSERT_EQ(frames_of<KeysPublished>(rig.client).back().opks_available, left);
  PublishKeys more = bob.replenish(id++);
  ASSERT_EQ(more.opks.size(), E2eeClient::kReplenishBatch);
  exchange(rig, {more});
  EXPECT_EQ(frames_of<KeysPublished>(rig.client).back().opks_available, left + E2eeClient::kReplenishBatch);
  // Every key left is handed out once, the new ones among them, and each opens a first contact.
  for (size_t k = 0; k < left + E2eeClient::kReplenishBatch; ++k) {
    exchange(rig, {FetchBundles{id++, {UserRef{"u2"}}}});
    const DeviceBundle b = frames_of<Bundles>(rig.client).back().bundles.at(0);  // a copy: the vector is a temporary
    ASSERT_TRUE(b.has_opk);
    EXPECT_TRUE(handed_out.insert(b.opk_id).second) << "one-time prekey " << b.opk_id << " handed out twice";
    E2eeClient alice("u" + std::to_string(10 + k), "u" + std::to_string(10 + k) + ".d1");
    ASSERT_TRUE(alice.add_bundle(b).ok());
    Result<Bytes> sealed = alice.seal_direct(bytes_of("first contact"), {"u2.d1"});
    ASSERT_TRUE(sealed.ok());
    Result<E2eeClient::Opened> opened = bob.open("dm:u10:u2", alice.device(), *sealed);
    ASSERT_TRUE(opened.ok()) << "prekey " << b.opk_id << ": " << opened.error().message;
    EXPECT_TRUE(opened->used_one_time_prekey);
  }
  EXPECT_EQ(handed_out.size(), E2eeClient::kInitialOneTimePrekeys + E2eeClient::kReplenishBatch);
}

TEST(KeyService, RefusesABadSignatureAndStoresNothing) {
  sim::reseed_randombytes(12);
  KeyRig rig;
  E2eeClient mallory("u3", "u3.d1");
  PublishKeys forged = mallory.initial_publish(1);
  forged.spk_sig[5] ^= 1;
  exchange(rig, {forged, FetchBundles{2, {UserRef{"u3"}}}});
  auto failed = frames_of<KeyRequestFailed>(rig.client);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_NE(failed[0].reason.find("bad signed prekey signature"), std::string::npos) << failed[0].reason;
  auto bundles = frames_of<Bundles>(rig.client);
  ASSERT_EQ(bundles.size(), 1u);
  EXPECT_TRUE(bundles[0].bundles.empty());
}

TEST(E2eeClient, RefusesABundleWhoseSignatureDoesNotVerify) {
  sim::reseed_randombytes(13);
  E2eeClient alice("u1", "u1.d1"), bob("u2", "u2.d1");
  PublishKeys keys = bob.initial_publish(1);
  DeviceBundle bundle{"u2", "u2.d1", keys.identity, keys.spk_id, keys.spk, keys.spk_sig, false, 0, {}};
  bundle.spk[0] ^= 0x40;  // a key service that swapped the signed prekey
  Status added = alice.add_bundle(bundle);
  ASSERT_FALSE(added.ok());
  EXPECT_FALSE(alice.has_session("u2.d1"));
}

// --- Sessions and retransmissions ------------------------------------------------------------

// The bundle the key service would hand out, with the client's one-time prekey `opk_index`
// (each initiator must get another one: a used one-time prekey fails, as the spec says).
DeviceBundle bundle_of(const E2eeClient& client, const std::string& user, size_t opk_index = 0) {
  PublishKeys keys = client.initial_publish(1);
  return DeviceBundle{user, client.device(), keys.identity, keys.spk_id, keys.spk, keys.spk_sig,
                      true, keys.opks.at(opk_index).id, keys.opks.at(opk_index).key};
}

TEST(E2eeClient, ARetransmissionOpensAsADuplicateAndTheSessionCarriesOn) {
  sim::reseed_randombytes(14);
  E2eeClient alice("u1", "u1.d1"), bob("u2", "u2.d1");
  ASSERT_TRUE(alice.add_bundle(bundle_of(bob, "u2")).ok());
  std::vector<Bytes> sealed;
  for (int i = 0; i < 4; ++i) sealed.push_back(*alice.seal_direct(bytes_of("m" + std::to_string(i)), {"u2.d1"}));
  // Out of order, then a repeat of each: every message opens once, repeats open as duplicates.
  for (int i : {1, 0, 3, 2}) {
    Result<E2eeClient::Opened> opened = bob.open("dm:u1:u2", "u1.d1", sealed[static_cast<size_t>(i)]);
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_FALSE(opened->duplicate);
    EXPECT_EQ(opened->plaintext, bytes_of("m" + std::to_string(i)));
  }
  for (const Bytes& again : sealed) {
    Result<E2eeClient::Opened> opened = bob.open("dm:u1:u2", "u1.d1", again);
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_TRUE(opened->duplicate);
  }
  // Replies every 10 messages in both directions keep working.
  for (int round = 0; round < 4; ++round) {
    E2eeClient& from = round % 2 ? bob : alice;
    E2eeClient& to = round % 2 ? alice : bob;
    for (int i = 0; i < 10; ++i) {
      const Bytes text = bytes_of("round " + std::to_string(round) + " message " + std::to_string(i));
      Result<Bytes> body = from.seal_direct(text, {to.device()});
      ASSERT_TRUE(body.ok()) << body.error().message;
      Result<E2eeClient::Opened> opened = to.open("dm:u1:u2", from.device(), *body);
      ASSERT_TRUE(opened.ok()) << opened.error().message;
      EXPECT_EQ(opened->plaintext, text);
    }
  }
}

// memory_bytes() counts what a first contact leaves besides the session: the peer's identity
// conversion and the record of its verified signed prekey (identity, id, key, signature).
TEST(E2eeClient, MemoryCountsThePeerIdentityRecords) {
  sim::reseed_randombytes(15);
  E2eeClient alice("u1", "u1.d1"), bob("u2", "u2.d1");
  const size_t before = alice.memory_bytes();
  ASSERT_TRUE(alice.add_bundle(bundle_of(bob, "u2")).ok());
  const size_t records = 2 * sizeof(crypto::Key32) + 2 * sizeof(crypto::Key32) + sizeof(uint32_t) + sizeof(crypto::Signature);
  EXPECT_GE(alice.memory_bytes(), before + sizeof(crypto::Session) + records);
}

TEST(E2eeClient, SimultaneousFirstContactsConverge) {
  sim::reseed_randombytes(15);
  E2eeClient alice("u1", "u1.d1"), bob("u2", "u2.d1");
  ASSERT_TRUE(alice.add_bundle(bundle_of(bob, "u2")).ok());
  PublishKeys alice_keys = alice.initial_publish(1);
  ASSERT_TRUE(bob.add_bundle(DeviceBundle{"u1", "u1.d1", alice_keys.identity, alice_keys.spk_id, alice_keys.spk,
                                          alice_keys.spk_sig, true, alice_keys.opks[1].id, alice_keys.opks[1].key})
                  .ok());
  Result<Bytes> a1 = alice.seal_direct(bytes_of("from alice"), {"u2.d1"});
  Result<Bytes> b1 = bob.seal_direct(bytes_of("from bob"), {"u1.d1"});
  ASSERT_TRUE(a1.ok() && b1.ok());
  ASSERT_TRUE(bob.open("c", "u1.d1", *a1).ok());
  ASSERT_TRUE(alice.open("c", "u2.d1", *b1).ok());
  for (int i = 0; i < 5; ++i) {
    Result<Bytes> a = alice.seal_direct(bytes_of("a" + std::to_string(i)), {"u2.d1"});
    Result<Bytes> b = bob.seal_direct(bytes_of("b" + std::to_string(i)), {"u1.d1"});
    Result<E2eeClient::Opened> at_bob = bob.open("c", "u1.d1", *a);
    Result<E2eeClient::Opened> at_alice = alice.open("c", "u2.d1", *b);
    ASSERT_TRUE(at_bob.ok()) << at_bob.error().message;
    ASSERT_TRUE(at_alice.ok()) << at_alice.error().message;
    EXPECT_EQ(at_bob->plaintext, bytes_of("a" + std::to_string(i)));
  }
}

TEST(E2eeClient, APrekeyMessageNamingThePreviousSignedPrekeyStillOpens) {
  sim::reseed_randombytes(19);
  E2eeClient alice("u1", "u1.d1"), bob("u2", "u2.d1"), carol("u3", "u3.d1");
  ASSERT_TRUE(alice.add_bundle(bundle_of(bob, "u2", 0)).ok());
  ASSERT_TRUE(carol.add_bundle(bundle_of(bob, "u2", 1)).ok());
  const PublishKeys rotated = bob.rotate_signed_prekey(1);
  EXPECT_EQ(rotated.spk_id, 2u);
  EXPECT_TRUE(rotated.opks.empty());
  Result<Bytes> body = alice.seal_direct(bytes_of("sent before the rotation"), {"u2.d1"});
  ASSERT_TRUE(body.ok());
  Result<E2eeClient::Opened> opened = bob.open("dm:u1:u2", "u1.d1", *body);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->plaintext, bytes_of("sent before the rotation"));
  // Two rotations later the key is deleted: a prekey message naming it fails, cleanly.
  (void)bob.rotate_signed_prekey(2);
  Result<Bytes> late = carol.seal_direct(bytes_of("far too late"), {"u2.d1"});
  ASSERT_TRUE(late.ok());
  EXPECT_FALSE(bob.open("dm:u2:u3", "u3.d1", *late).ok());
}

// --- Groups against a malicious server ---------------------------------------------------------

bool contains(const Bytes& haystack, const Bytes& needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
}

// A server that keeps sending a removed member's device the group's messages: the device opens
// nothing sent after the removal, while the remaining members do.
TEST(E2eeGroups, ARemovedMemberDecryptsNothingSentAfterItsRemoval) {
  sim::reseed_randombytes(16);
  E2eeClient admin("u1", "u1.d1"), bob("u2", "u2.d1"), carol("u3", "u3.d1");
  std::map<E2eeClient*, size_t> opks_used;
  for (E2eeClient* a : {&admin, &bob, &carol}) {
    for (E2eeClient* b : {&admin, &bob, &carol}) {
      if (a != b) {
        ASSERT_TRUE(a->add_bundle(bundle_of(*b, b->device().substr(0, 2), opks_used[b]++)).ok());
      }
    }
  }
  const std::string group = "g:1";
  std::vector<std::string> everyone = {"u1.d1", "u2.d1", "u3.d1"};
  // Before the removal: everyone reads everything.
  for (int i = 0; i < 3; ++i) {
    const Bytes text = bytes_of("before " + std::to_string(i));
    Result<Bytes> body = admin.seal_group(group, text, everyone);
    ASSERT_TRUE(body.ok()) << body.error().message;
    for (E2eeClient* member : {&bob, &carol}) {
      Result<E2eeClient::Opened> opened = member->open(group, "u1.d1", *body);
      ASSERT_TRUE(opened.ok()) << opened.error().message;
      EXPECT_EQ(opened->plaintext, text);
    }
  }
  // Bob also sends, so carol holds bob's key too.
  Result<Bytes> from_bob = bob.seal_group(group, bytes_of("bob before"), everyone);
  ASSERT_TRUE(from_bob.ok());
  ASSERT_TRUE(carol.open(group, "u2.d1", *from_bob).ok());
  ASSERT_TRUE(admin.open(group, "u2.d1", *from_bob).ok());

  // Carol is removed: the others process the leave (forget her key, rotate theirs).
  for (E2eeClient* member : {&admin, &bob}) {
    member->forget_group_sender(group, "u3.d1");
    member->rotate_group_key(group);
  }
  const std::vector<std::string> remaining = {"u1.d1", "u2.d1"};
  for (int i = 0; i < 5; ++i) {
    E2eeClient& sender = i % 2 ? bob : admin;
    E2eeClient& other = i % 2 ? admin : bob;
    const Bytes text = bytes_of("after the removal, secret number " + std::to_string(i));
    Result<Bytes> body = sender.seal_group(group, text, remaining);
    ASSERT_TRUE(body.ok()) << body.error().message;
    EXPECT_FALSE(contains(*body, text));
    Result<E2eeClient::Opened> at_member = other.open(group, sender.device(), *body);
    ASSERT_TRUE(at_member.ok()) << at_member.error().message;
    EXPECT_EQ(at_member->plaintext, text);
    // The malicious server hands carol the same body: she gets an error, never the text.
    Result<E2eeClient::Opened> at_carol = carol.open(group, sender.device(), *body);
    EXPECT_FALSE(at_carol.ok()) << "the removed member decrypted message " << i;
  }
}

// The device's rule, without being told of the leave: a key that reached a device outside the
// member list it now seals for is replaced (as after a SendStale that leaves a member out), so
// the removed member cannot open what follows, and the remaining members get the new key.
TEST(E2eeGroups, SealingForAListWithoutAMemberTheKeyReachedMakesANewKey) {
  sim::reseed_randombytes(18);
  E2eeClient admin("u1", "u1.d1"), bob("u2", "u2.d1"), carol("u3", "u3.d1");
  size_t opk = 0;
  for (E2eeClient* other : {&bob, &carol}) {
    ASSERT_TRUE(admin.add_bundle(bundle_of(*other, other->device().substr(0, 2), opk++)).ok());
    ASSERT_TRUE(other->add_bundle(bundle_of(admin, "u1", opk++)).ok());
  }
  Result<Bytes> before = admin.seal_group("g:3", bytes_of("all three"), {"u1.d1", "u2.d1", "u3.d1"});
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(carol.open("g:3", "u1.d1", *before).ok());
  ASSERT_TRUE(bob.open("g:3", "u1.d1", *before).ok());
  admin.note_own_echo("g:3", *before);
  // Sealed for the same list again: the key stays, and no distribution is needed.
  Result<Bytes> again = admin.seal_group("g:3", bytes_of("still three"), {"u1.d1", "u2.d1", "u3.d1"});
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(carol.open("g:3", "u1.d1", *again).ok());
  ASSERT_TRUE(bob.open("g:3", "u1.d1", *again).ok());
  EXPECT_EQ((*again)[2], 0);
  EXPECT_EQ((*again)[3], 0);
  // Carol is gone from the list: a new key, distributed to bob only.
  const Bytes secret = bytes_of("without carol");
  Result<Bytes> after = admin.seal_group("g:3", secret, {"u1.d1", "u2.d1"});
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(carol.open("g:3", "u1.d1", *after).ok()) << "the removed member opened a message sealed without her";
  Result<E2eeClient::Opened> at_bob = bob.open("g:3", "u1.d1", *after);
  ASSERT_TRUE(at_bob.ok()) << at_bob.error().message;
  EXPECT_EQ(at_bob->plaintext, secret);
}

// A member who joins gets the sender's current key with the next message, not older messages.
TEST(E2eeGroups, AJoiningMemberReadsFromItsJoinOn) {
  sim::reseed_randombytes(17);
  E2eeClient admin("u1", "u1.d1"), dave("u4", "u4.d1");
  ASSERT_TRUE(admin.add_bundle(bundle_of(dave, "u4")).ok());
  ASSERT_TRUE(dave.add_bundle(bundle_of(admin, "u1")).ok());
  Result<Bytes> before = admin.seal_group("g:2", bytes_of("before dave"), {"u1.d1"});
  ASSERT_TRUE(before.ok());
  Result<Bytes> after = admin.seal_group("g:2", bytes_of("welcome dave"), {"u1.d1", "u4.d1"});
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(dave.open("g:2", "u1.d1", *before).ok());
  Result<E2eeClient::Opened> opened = dave.open("g:2", "u1.d1", *after);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->plaintext, bytes_of("welcome dave"));
}

// --- Whole runs -----------------------------------------------------------------------------------

sim::Scenario small_scenario() {
  Result<sim::Scenario> loaded = sim::load_scenario_file(std::string(MSGSIM_SOURCE_DIR) + "/scenarios/chat-small.json");
  EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.error().message);
  sim::Scenario scenario = *loaded;
  scenario.duration_ns = 20 * kS;
  scenario.quiescence_ns = 15 * kS;
  return scenario;
}

const sim::CheckResult* check_named(const sim::RunReport& report, const std::string& name) {
  for (const sim::CheckResult& c : report.checks)
    if (c.name == name) return &c;
  return nullptr;
}

TEST(E2eeRun, EveryCheckPassesWithE2eeAndTheRunReplays) {
  const sim::Scenario scenario = small_scenario();
  sim::RunOptions options;
  options.seed = 3;
  const sim::RunReport first = sim::run_world(scenario, options);
  const sim::CheckResult* confidentiality = check_named(first, "e2ee-confidentiality");
  ASSERT_NE(confidentiality, nullptr);
  EXPECT_TRUE(confidentiality->passed) << confidentiality->detail;
  for (const sim::CheckResult& c : first.checks) EXPECT_TRUE(c.passed) << c.name << ": " << c.detail;
  ASSERT_TRUE(first.verdict.has_value());
  EXPECT_TRUE(first.verdict->valid);
  const sim::RunReport second = sim::run_world(scenario, options);
  EXPECT_EQ(first.digest_hex, second.digest_hex);
}

// workload.chat.turn_messages: every 1:1 conversation alternates direction every N messages,
// starting with the user whose name sorts first, and the run still passes and replays.
TEST(E2eeRun, TurnsAlternateEachConversationEveryTurnMessages) {
  sim::Scenario scenario = small_scenario();
  scenario.chat.groups = 0;
  scenario.chat.disappearing_share = 0;
  scenario.chat.send_interval_mean_ns = kS / 5;
  scenario.chat.turn_messages = 3;
  sim::RunOptions options;
  options.seed = 4;
  std::ostringstream history;
  options.history_out = &history;
  const sim::RunReport first = sim::run_world(scenario, options);
  for (const sim::CheckResult& c : first.checks) EXPECT_TRUE(c.passed) << c.name << ": " << c.detail;

  std::map<std::string, std::vector<std::string>> senders;  // conversation -> user of each send
  std::istringstream lines(history.str());
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json e = nlohmann::json::parse(line);
    if (e.value("type", "") == "send") senders[e.at("conv").get<std::string>()].push_back(e.at("user"));
  }
  ASSERT_GE(senders.size(), 10u);
  size_t turns = 0;
  for (const auto& [conv, users] : senders) {
    ASSERT_FALSE(users.empty());
    // "dm:<a>:<b>" with a < b: a starts.
    EXPECT_EQ(users.front(), conv.substr(3, conv.find(':', 3) - 3)) << conv;
    size_t run = 0;
    for (size_t i = 0; i < users.size(); ++i) {
      run = i > 0 && users[i] == users[i - 1] ? run + 1 : 1;
      const bool run_ends = i + 1 == users.size() || users[i + 1] != users[i];
      if (run_ends && i + 1 < users.size()) {
        EXPECT_EQ(run, 3u) << conv << ": a turn of " << run << " messages ending at send " << i;
        ++turns;
      }
      EXPECT_LE(run, 3u) << conv;
    }
  }
  EXPECT_GE(turns, 100u);
  std::ostringstream again;
  options.history_out = &again;
  EXPECT_EQ(first.digest_hex, sim::run_world(scenario, options).digest_hex);
}

TEST(E2eeRun, ThePlantedBugServerSeesPlaintextFailsTheConfidentialityCheck) {
  const sim::Scenario scenario = small_scenario();
  sim::RunOptions options;
  options.seed = 3;
  options.bugs.enable(Bug::server_sees_plaintext);
  const sim::RunReport report = sim::run_world(scenario, options);
  const sim::CheckResult* confidentiality = check_named(report, "e2ee-confidentiality");
  ASSERT_NE(confidentiality, nullptr);
  EXPECT_FALSE(confidentiality->passed);
  EXPECT_FALSE(report.passed());
}

}  // namespace
}  // namespace msgsim::chat
