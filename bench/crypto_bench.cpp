// Per-message costs of the E2EE library (spec/e2ee.md), against the bars of msgsim issue 5:
// ratchet encrypt+decrypt without a DH step <= 3 us, with one <= 120 us; sender-key
// encrypt+sign+verify+decrypt <= 60 us; X3DH <= 200 us. Buffers are allocated once outside
// the timed loops, as the message path will use them (encrypt into / decrypt from spans).
#include <benchmark/benchmark.h>

#include <optional>

#include "impl/crypto/ed25519_verify.h"
#include "impl/crypto/ratchet.h"
#include "impl/crypto/sender_key.h"
#include "impl/crypto/x25519.h"
#include "impl/crypto/x3dh.h"
#include "sim/randombytes.h"

namespace msgsim::crypto {
namespace {

constexpr size_t kPlaintextBytes = 100;  // a typical short chat message

struct Pair {
  PrekeyStore bob_store;
  Session alice;
  Session bob;
};

Pair establish() {
  sim::reseed_randombytes(1);
  Pair pair;
  pair.bob_store = make_prekey_store(1, 1);
  IdentityKeyPair alice_id = generate_identity();
  pair.alice = std::move(*initiate_session(
      alice_id, pair.bob_store.bundle(pair.bob_store.one_time_prekeys[0].id)));
  const Bytes plaintext(kPlaintextBytes, 'x');
  Bytes envelope(pair.alice.envelope_size(plaintext.size()));
  MSGSIM_ASSERT(pair.alice.encrypt(plaintext, envelope).ok());
  Bytes out(envelope.size());
  auto accepted = accept_prekey_message(pair.bob_store, envelope, out);
  MSGSIM_ASSERT(accepted.ok());
  pair.bob = std::move(accepted->session);
  // One reply, so that alice's messages no longer carry the prekey header.
  Bytes reply(pair.bob.envelope_size(plaintext.size()));
  MSGSIM_ASSERT(pair.bob.encrypt(plaintext, reply).ok());
  MSGSIM_ASSERT(pair.alice.decrypt(reply, out).ok());
  return pair;
}

// One message one way per iteration: the chain advances, no DH step.
void BM_RatchetNoDhStep(benchmark::State& state) {
  Pair pair = establish();
  const Bytes plaintext(kPlaintextBytes, 'x');
  Bytes envelope(pair.alice.envelope_size(plaintext.size()));
  Bytes out(envelope.size());
  for (auto _ : state) {
    auto sealed = pair.alice.encrypt(plaintext, envelope);
    auto opened = pair.bob.decrypt(envelope, out);
    benchmark::DoNotOptimize(sealed.ok() && opened.ok());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RatchetNoDhStep);

// Directions alternate every message: each decryption is a DH ratchet step (DH for the
// receiving chain, a new ratchet pair, DH for the sending chain).
void BM_RatchetWithDhStep(benchmark::State& state) {
  Pair pair = establish();
  const Bytes plaintext(kPlaintextBytes, 'x');
  Bytes envelope(pair.alice.envelope_size(plaintext.size()));
  Bytes out(envelope.size());
  bool alice_sends = true;
  for (auto _ : state) {
    Session& sender = alice_sends ? pair.alice : pair.bob;
    Session& receiver = alice_sends ? pair.bob : pair.alice;
    auto sealed = sender.encrypt(plaintext, envelope);
    auto opened = receiver.decrypt(envelope, out);
    benchmark::DoNotOptimize(sealed.ok() && opened.ok());
    alice_sends = !alice_sends;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RatchetWithDhStep);

// A group message: encrypt + sign by the sender, verify + decrypt by one receiver.
void BM_SenderKeyRoundTrip(benchmark::State& state) {
  sim::reseed_randombytes(2);
  OwnSenderKey own = std::move(*create_sender_key("group-bench", 1));
  PeerSenderKey peer = std::move(*parse_distribution_message(distribution_message(own)));
  const Bytes plaintext(kPlaintextBytes, 'x');
  Bytes wire(sender_key_wire_size(own.group_id, plaintext.size()));
  Bytes out(wire.size());
  for (auto _ : state) {
    auto sealed = sender_key_encrypt(own, plaintext, wire);
    auto opened = sender_key_decrypt(peer, wire, out);
    benchmark::DoNotOptimize(sealed.ok() && opened.ok());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SenderKeyRoundTrip);

// The receiver's side of a group message alone: Ed25519 verification of a 140-byte message
// under a chain's key, ours with the key's cached table (ed25519_verify.h) and libsodium's.
void BM_Ed25519VerifyCachedKey(benchmark::State& state) {
  sim::reseed_randombytes(5);
  const Ed25519KeyPair pair = generate_ed25519_key_pair();
  const Bytes message(140, 'm');
  const Signature signature = sign(pair.secret, message);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ed25519_verify_cached(pair.public_key, message, signature));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Ed25519VerifyCachedKey);

void BM_Ed25519VerifyLibsodium(benchmark::State& state) {
  sim::reseed_randombytes(5);
  const Ed25519KeyPair pair = generate_ed25519_key_pair();
  const Bytes message(140, 'm');
  const Signature signature = sign(pair.secret, message);
  for (auto _ : state) benchmark::DoNotOptimize(verify(pair.public_key, message, signature));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Ed25519VerifyLibsodium);

// X3DH's first contact checks: spk_sig under the identity key and the key's X25519 form with
// the subgroup check, ours on one doubling chain against libsodium's two calls.
void BM_Ed25519VerifyAndConvert(benchmark::State& state) {
  sim::reseed_randombytes(6);
  const Ed25519KeyPair pair = generate_ed25519_key_pair();
  const Bytes message(49, 's');
  const Signature signature = sign(pair.secret, message);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ed25519_verify_and_convert(pair.public_key, message, signature));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Ed25519VerifyAndConvert);

void BM_Ed25519VerifyAndConvertLibsodium(benchmark::State& state) {
  sim::reseed_randombytes(6);
  const Ed25519KeyPair pair = generate_ed25519_key_pair();
  const Bytes message(49, 's');
  const Signature signature = sign(pair.secret, message);
  Key32 x25519;
  for (auto _ : state) {
    benchmark::DoNotOptimize(verify(pair.public_key, message, signature));
    benchmark::DoNotOptimize(
        crypto_sign_ed25519_pk_to_curve25519(x25519.data(), pair.public_key.data()));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Ed25519VerifyAndConvertLibsodium);

// Variable-base X25519 (the DHs of X3DH and of the ratchet's DH step): our four-lane IFMA
// ladder (impl/crypto/x25519.h) with one job and with four, against libsodium's
// crypto_scalarmult (same bytes). Items are X25519 operations.
void run_vector_ladder(benchmark::State& state, size_t lanes) {
  if (!x25519_vector_ladder_available()) {
    state.SkipWithError("this CPU has no AVX-512 IFMA");
    return;
  }
  sim::reseed_randombytes(6);
  std::array<Key32, kX25519Lanes> secrets, points;
  std::array<X25519Job, kX25519Lanes> jobs;
  for (size_t i = 0; i < kX25519Lanes; ++i) {
    randombytes_buf(secrets[i].data(), secrets[i].size());
    points[i] = generate_x25519_key_pair().public_key;
    jobs[i].scalar = &secrets[i];
    jobs[i].u = &points[i];
  }
  for (auto _ : state) {
    x25519_jobs_on_vector_ladder(std::span<X25519Job>(jobs.data(), lanes));
    for (size_t i = 0; i < lanes; ++i) secrets[i][0] ^= jobs[i].shared[1];  // fresh scalars
    benchmark::DoNotOptimize(jobs[0].ok);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(lanes));
}
void BM_X25519VectorLadder1(benchmark::State& state) { run_vector_ladder(state, 1); }
BENCHMARK(BM_X25519VectorLadder1);
void BM_X25519VectorLadder2(benchmark::State& state) { run_vector_ladder(state, 2); }
BENCHMARK(BM_X25519VectorLadder2);
void BM_X25519VectorLadder4(benchmark::State& state) { run_vector_ladder(state, 4); }
BENCHMARK(BM_X25519VectorLadder4);

void BM_X25519Libsodium(benchmark::State& state) {
  sim::reseed_randombytes(6);
  const X25519KeyPair peer = generate_x25519_key_pair();
  Key32 secret;
  randombytes_buf(secret.data(), secret.size());
  Key32 shared;
  for (auto _ : state) {
    benchmark::DoNotOptimize(crypto_scalarmult(shared.data(), secret.data(), peer.public_key.data()));
    secret[0] ^= shared[1];
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_X25519Libsodium);

// The initiator's X3DH: verify spk_sig, make EK, DH1..DH4, HKDF to SK.
// A first contact: the peer's identity was never met, by this client or by any other on the
// thread (x3dh.cpp keeps a per-thread memo of conversions and verified signed prekeys below the
// clients' own caches), so every iteration meets a fresh peer, made outside the timing.
void BM_X3dh(benchmark::State& state) {
  sim::reseed_randombytes(3);
  const IdentityKeyPair alice = generate_identity();
  for (auto _ : state) {
    state.PauseTiming();
    PrekeyStore bob = make_prekey_store(1, 1);
    const PrekeyBundle bundle = bob.bundle(bob.one_time_prekeys[0].id);
    state.ResumeTiming();
    X25519KeyPair ephemeral = generate_x25519_key_pair();
    auto shared = x3dh_initiator_secret(alice, bundle, ephemeral);
    benchmark::DoNotOptimize(shared.ok());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_X3dh);

// The same through a PeerIdentityCache (a peer device met before): its identity is already
// converted to the X25519 form, which saves crypto_sign_ed25519_pk_to_curve25519's subgroup
// check, and the bundle's signed prekey was verified before, which saves the Ed25519 verify.
void BM_X3dhKnownIdentity(benchmark::State& state) {
  sim::reseed_randombytes(3);
  PrekeyStore bob = make_prekey_store(1, 1);
  const PrekeyBundle bundle = bob.bundle(bob.one_time_prekeys[0].id);
  const IdentityKeyPair alice = generate_identity();
  PeerIdentityCache identities;
  for (auto _ : state) {
    X25519KeyPair ephemeral = generate_x25519_key_pair();
    auto shared = x3dh_initiator_secret(alice, bundle, ephemeral, &identities);
    benchmark::DoNotOptimize(shared.ok());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_X3dhKnownIdentity);

// The responder's X3DH from a prekey header: DH1..DH4, HKDF to SK.
void BM_X3dhResponder(benchmark::State& state) {
  sim::reseed_randombytes(4);
  PrekeyStore bob = make_prekey_store(1, 1);
  const IdentityKeyPair alice = generate_identity();
  const X25519KeyPair ephemeral = generate_x25519_key_pair();
  const PrekeyHeader header{alice.signing.public_key, ephemeral.public_key, bob.signed_prekey.id,
                            bob.one_time_prekeys[0].id};
  for (auto _ : state) {
    auto shared = x3dh_responder_secret(bob.identity, bob.signed_prekey.pair,
                                        &bob.one_time_prekeys[0].pair, header);
    benchmark::DoNotOptimize(shared.ok());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_X3dhResponder);

// A whole first contact: initiate_session (X3DH + ratchet init) and accept_prekey_message
// (X3DH + first decryption with its DH step) between two identities never met before (fresh
// each time, made outside the timing: see BM_X3dh on the per-thread memo).
void BM_FirstContactBothSides(benchmark::State& state) {
  sim::reseed_randombytes(5);
  const Bytes plaintext(kPlaintextBytes, 'x');
  Bytes envelope;
  Bytes out;
  for (auto _ : state) {
    state.PauseTiming();
    const IdentityKeyPair alice = generate_identity();
    PrekeyStore bob = make_prekey_store(1, 1);
    const PrekeyBundle bundle = bob.bundle(bob.one_time_prekeys.front().id);
    state.ResumeTiming();
    auto session = initiate_session(alice, bundle);
    envelope.resize(session->envelope_size(plaintext.size()));
    auto sealed = session->encrypt(plaintext, envelope);
    out.resize(envelope.size());
    auto accepted = accept_prekey_message(bob, envelope, out);
    benchmark::DoNotOptimize(sealed.ok() && accepted.ok());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FirstContactBothSides);

// One AEAD sealing of a short chat message as the ratchet does it (100 bytes, AD = the 64-byte
// identities plus the 40-byte header): our XChaCha20-Poly1305 and libsodium's, which it
// replaced (same bytes; tests/crypto_test compares them).
void BM_AeadSeal100(benchmark::State& state) {
  sim::reseed_randombytes(6);  // initialises libsodium (its CPU-specific code) like the others
  const Key32 key{1};
  const std::array<uint8_t, kAeadNonceBytes> nonce{2};
  const Bytes ad(kAssociatedDataBytes + kRatchetHeaderBytes, 3);
  const Bytes plaintext(kPlaintextBytes, 'x');
  Bytes out(plaintext.size() + kAeadTagBytes);
  for (auto _ : state) {
    aead_encrypt(key, nonce, ad, plaintext, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AeadSeal100);

void BM_AeadSeal100Libsodium(benchmark::State& state) {
  sim::reseed_randombytes(6);
  const Key32 key{1};
  const std::array<uint8_t, kAeadNonceBytes> nonce{2};
  const Bytes ad(kAssociatedDataBytes + kRatchetHeaderBytes, 3);
  const Bytes plaintext(kPlaintextBytes, 'x');
  Bytes out(plaintext.size() + kAeadTagBytes);
  for (auto _ : state) {
    unsigned long long written = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out.data(), &written, plaintext.data(),
                                               plaintext.size(), ad.data(), ad.size(), nullptr,
                                               nonce.data(), key.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AeadSeal100Libsodium);

}  // namespace
}  // namespace msgsim::crypto
