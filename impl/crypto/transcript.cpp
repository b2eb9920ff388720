#include "impl/crypto/transcript.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <vector>

#include "impl/base/assert.h"
#include "impl/base/prng.h"
#include "impl/crypto/ratchet.h"
#include "impl/crypto/sender_key.h"
#include "impl/crypto/x3dh.h"

namespace msgsim::crypto {
namespace {

using Json = nlohmann::ordered_json;

std::string hex(ByteSpan bytes) { return to_hex(bytes); }

Bytes make_plaintext(Prng& shape, const std::string& label) {
  Bytes plaintext(label.begin(), label.end());
  // A random tail of 0..40 bytes, so lengths differ between seeds and messages.
  const size_t tail = shape.below(41);
  for (size_t i = 0; i < tail; ++i) plaintext.push_back(static_cast<uint8_t>(shape.below(256)));
  return plaintext;
}

struct PairwiseMessage {
  bool from_alice = true;
  Key32 dh_secret{};
  std::optional<std::array<uint8_t, kPrekeyHeaderBytes>> prekey_header;
  std::array<uint8_t, kRatchetHeaderBytes> header{};
  Bytes ciphertext;
  Bytes plaintext;
  Bytes envelope;
};

class PairwiseScript {
 public:
  explicit PairwiseScript(Prng shape) : shape_(shape) {}

  Json run() {
    Json out;
    IdentityKeyPair alice = generate_identity();
    const uint32_t signed_prekey_id = static_cast<uint32_t>(1 + shape_.below(1000000));
    PrekeyStore bob = make_prekey_store(signed_prekey_id, 0);
    bob.next_one_time_prekey_id = static_cast<uint32_t>(1 + shape_.below(1000000));
    MSGSIM_ASSERT_EQ(bob.generate_one_time_prekeys(1), size_t{1});
    const OneTimePrekey opk = bob.one_time_prekeys.front();
    const PrekeyBundle bundle = bob.bundle(opk.id);

    X25519KeyPair ephemeral = generate_x25519_key_pair();
    auto shared = x3dh_initiator_secret(alice, bundle, ephemeral);
    MSGSIM_ASSERT(shared.ok(), "X3DH on a fresh bundle failed");
    const PrekeyHeader prekey{alice.signing.public_key, ephemeral.public_key, bundle.signed_prekey_id,
                              opk.id};
    auto alice_session = make_initiator_session(*shared, alice.signing.public_key, bundle.identity,
                                                bundle.signed_prekey, prekey);
    MSGSIM_ASSERT(alice_session.ok());
    alice_ = std::move(*alice_session);

    out["version"] = 1;
    out["alice"] = {{"ik_sk", hex(alice.signing.secret)}, {"ik_pk", hex(alice.signing.public_key)}};
    out["bob"] = {{"ik_sk", hex(bob.identity.signing.secret)},
                  {"ik_pk", hex(bob.identity.signing.public_key)},
                  {"spk_id", bob.signed_prekey.id},
                  {"spk_sk", hex(bob.signed_prekey.pair.secret)},
                  {"spk_pk", hex(bob.signed_prekey.pair.public_key)},
                  {"spk_sig", hex(bob.signed_prekey.signature)},
                  {"opk_id", opk.id},
                  {"opk_sk", hex(opk.pair.secret)},
                  {"opk_pk", hex(opk.pair.public_key)}};
    out["x3dh"] = {{"ek_sk", hex(ephemeral.secret)},
                   {"ek_pk", hex(ephemeral.public_key)},
                   {"sk", hex(*shared)},
                   {"ad", hex(alice_.associated_data)}};

    // Rounds alternate senders; each new sender's first message carries a new ratchet key,
    // so every round after the first is a DH ratchet step.
    const int rounds = 4 + static_cast<int>(shape_.below(3));
    for (int round = 0; round < rounds; ++round) {
      const bool alice_sends = round % 2 == 0;
      const size_t count = (round == 0 ? 2 : 1) + shape_.below(3);
      for (size_t i = 0; i < count; ++i) send(alice_sends);
      // The first round (at least two messages) always holds one back, so every transcript
      // has a late delivery.
      deliver(/*to_alice=*/!alice_sends, bob, round == 0 ? HoldBack::always : HoldBack::sometimes);
    }
    // Whatever was held back arrives late, after later DH steps.
    deliver(/*to_alice=*/false, bob, HoldBack::never);
    deliver(/*to_alice=*/true, bob, HoldBack::never);

    Json messages = Json::array();
    for (const auto& m : messages_) {
      messages.push_back({{"from", m.from_alice ? "alice" : "bob"},
                          {"dh_sk", hex(m.dh_secret)},
                          {"prekey_header", m.prekey_header ? Json(hex(*m.prekey_header)) : Json()},
                          {"header", hex(m.header)},
                          {"ciphertext", hex(m.ciphertext)},
                          {"plaintext", hex(m.plaintext)}});
    }
    out["messages"] = std::move(messages);
    out["delivery_order"] = delivery_order_;
    wipe(ephemeral.secret);
    wipe(*shared);
    return out;
  }

 private:
  void send(bool from_alice) {
    Session& session = from_alice ? alice_ : *bob_;
    PairwiseMessage m;
    m.from_alice = from_alice;
    m.plaintext = make_plaintext(shape_, "message " + std::to_string(messages_.size()) + " from " +
                                             (from_alice ? "alice" : "bob"));
    m.dh_secret = session.ratchet.own_ratchet.secret;
    if (session.has_pending_prekey_header) m.prekey_header = session.pending_prekey_header;
    m.envelope.resize(session.envelope_size(m.plaintext.size()));
    auto status = session.encrypt(m.plaintext, m.envelope);
    MSGSIM_ASSERT(status.ok(), status.ok() ? "" : status.error().message);
    auto parsed = parse_envelope(m.envelope);
    MSGSIM_ASSERT(parsed.ok());
    std::copy(parsed->ratchet_header.begin(), parsed->ratchet_header.end(), m.header.begin());
    m.ciphertext.assign(parsed->ciphertext.begin(), parsed->ciphertext.end());
    (from_alice ? in_flight_to_bob_ : in_flight_to_alice_).push_back(messages_.size());
    messages_.push_back(std::move(m));
  }

  // Delivers the receiver's in-flight messages in a shuffled order. When allowed, one message
  // other than the newest may be held back for a later, late delivery; the newest always
  // arrives, so the receiver learns the sender's newest ratchet key and can reply.
  enum class HoldBack { never, sometimes, always };
  void deliver(bool to_alice, PrekeyStore& bob_store, HoldBack hold_back_mode) {
    std::vector<size_t>& in_flight = to_alice ? in_flight_to_alice_ : in_flight_to_bob_;
    if (in_flight.empty()) return;
    std::vector<size_t> held;
    const bool hold_back = hold_back_mode == HoldBack::always ||
                           (hold_back_mode == HoldBack::sometimes && shape_.below(3) != 0);
    if (hold_back && in_flight.size() >= 2) {
      const size_t pick = shape_.below(in_flight.size() - 1);  // never the newest
      held.push_back(in_flight[pick]);
      in_flight.erase(in_flight.begin() + static_cast<ptrdiff_t>(pick));
    }
    shape_.shuffle(std::span<size_t>(in_flight));
    for (size_t index : in_flight) receive(to_alice, index, bob_store);
    in_flight = held;
  }

  void receive(bool to_alice, size_t index, PrekeyStore& bob_store) {
    const PairwiseMessage& m = messages_[index];
    Bytes plaintext(m.envelope.size());
    size_t size = 0;
    if (!to_alice && !bob_) {
      auto accepted = accept_prekey_message(bob_store, m.envelope, plaintext);
      MSGSIM_ASSERT(accepted.ok(), accepted.ok() ? "" : accepted.error().message);
      size = accepted->plaintext_size;
      bob_ = std::move(accepted->session);
    } else {
      Session& session = to_alice ? alice_ : *bob_;
      auto opened = session.decrypt(m.envelope, plaintext);
      MSGSIM_ASSERT(opened.ok(), opened.ok() ? "" : opened.error().message);
      size = *opened;
    }
    plaintext.resize(size);
    MSGSIM_ASSERT(plaintext == m.plaintext, "transcript message decrypted to other bytes");
    delivery_order_.push_back(index);
  }

  Prng shape_;
  Session alice_;
  std::optional<Session> bob_;
  std::vector<PairwiseMessage> messages_;
  std::vector<size_t> in_flight_to_bob_;
  std::vector<size_t> in_flight_to_alice_;
  std::vector<size_t> delivery_order_;
};

// The group part: alice, bob and carol exchange sender-key messages, carol is removed, and the
// remaining members rotate before their next messages and distribute to each other only.
class GroupScript {
 public:
  GroupScript(Prng shape, uint64_t seed)
      : shape_(shape), group_id_("group-" + std::to_string(seed)) {}

  Json run() {
    const std::vector<std::string> names = {"alice", "bob", "carol"};
    for (const auto& name : names) members_.emplace_back(name, GroupKeys(group_id_, name, names));

    // Everyone sends once, so each remaining member has a key that the removal must rotate.
    for (const auto& name : names) send(name, nullptr);
    const size_t more_sends = 1 + shape_.below(3);
    for (size_t i = 0; i < more_sends; ++i) send(names[shape_.below(names.size())], nullptr);

    // carol is removed: each remaining member forgets carol's key and rotates.
    const std::string removed = "carol";
    for (auto& [name, keys] : members_) {
      if (name == removed) continue;
      MSGSIM_ASSERT(keys.remove_member(removed).ok());
    }
    removed_.push_back(removed);
    send("alice", &removed);
    send("bob", &removed);
    const size_t later_sends = 1 + shape_.below(3);
    for (size_t i = 0; i < later_sends; ++i) send(shape_.below(2) == 0 ? "alice" : "bob", nullptr);

    Json out;
    out["group_id"] = group_id_;
    out["messages"] = std::move(records_);
    return out;
  }

 private:
  GroupKeys& keys_of(const std::string& name) {
    for (auto& [member, keys] : members_) {
      if (member == name) return keys;
    }
    MSGSIM_UNREACHABLE("unknown group member " + name);
  }

  bool is_removed(const std::string& name) const {
    return std::find(removed_.begin(), removed_.end(), name) != removed_.end();
  }

  void send(const std::string& sender, const std::string* after_removal_of) {
    GroupKeys& keys = keys_of(sender);
    auto distribution = keys.prepare_send();
    MSGSIM_ASSERT(distribution.ok());
    MSGSIM_ASSERT_EQ(distribution->has_value(), after_removal_of != nullptr || !has_sent(sender));
    if (*distribution) {
      // Distribution to the current members only (over the pairwise sessions in a client).
      for (const auto& recipient : (*distribution)->recipients) {
        MSGSIM_ASSERT(!is_removed(recipient), "a rotated key went to a removed member");
        MSGSIM_ASSERT(keys_of(recipient).accept_distribution(sender, (*distribution)->message).ok());
      }
    }
    OwnSenderKey& own = keys.own_key();
    Json record;
    record["sender"] = sender;
    record["key_id"] = own.key_id;
    record["iteration"] = own.iteration;
    record["ck"] = hex(own.chain_key);
    record["sg_sk"] = hex(own.signing.secret);
    record["sg_pk"] = hex(own.signing.public_key);
    const Bytes plaintext = make_plaintext(
        shape_, "group message " + std::to_string(records_.size()) + " from " + sender);
    Bytes wire(sender_key_wire_size(group_id_, plaintext.size()));
    MSGSIM_ASSERT(sender_key_encrypt(own, plaintext, wire).ok());
    record["wire"] = hex(wire);
    record["plaintext"] = hex(plaintext);
    record["after_removal_of"] = after_removal_of ? Json(*after_removal_of) : Json();
    records_.push_back(std::move(record));
    senders_.push_back(sender);

    for (auto& [member, member_keys] : members_) {
      if (member == sender) continue;
      Bytes opened(wire.size());
      auto size = member_keys.decrypt(sender, wire, opened);
      if (is_removed(member)) {
        // A removed member keeps only the sender's old key, which cannot open the new one.
        MSGSIM_ASSERT(!size.ok(), "a removed member decrypted a message sent after its removal");
        continue;
      }
      MSGSIM_ASSERT(size.ok(), size.ok() ? "" : size.error().message);
      opened.resize(*size);
      MSGSIM_ASSERT(opened == plaintext, "group message decrypted to other bytes");
    }
  }

  bool has_sent(const std::string& name) const {
    return std::find(senders_.begin(), senders_.end(), name) != senders_.end();
  }

  Prng shape_;
  std::string group_id_;
  std::vector<std::pair<std::string, GroupKeys>> members_;
  std::vector<std::string> removed_;
  std::vector<std::string> senders_;
  Json records_ = Json::array();
};

}  // namespace

std::string make_transcript_json(uint64_t seed) {
  const Prng shape(seed);
  Json out = PairwiseScript(shape.split("pairwise")).run();
  out["group"] = GroupScript(shape.split("group"), seed).run();
  return out.dump();
}

}  // namespace msgsim::crypto
