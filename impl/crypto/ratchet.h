// The Double Ratchet of spec/e2ee.md for one pair of devices, and the envelope a pairwise
// message travels in.
//
// A Session is a plain struct: the client keeps one per peer device, serialises it into its
// database and restores it after a restart. Every operation that reads bytes from outside
// either succeeds and commits, or fails and leaves the session exactly as it was: decryption
// works on staged values (new chain keys, new skipped keys) and commits them only after the
// AEAD tag verified.
//
// Errors a decrypt can return, by what the caller should do:
// - ErrorCode::not_found: no key is left for this message: it was already decrypted (a
//   retransmission under at-least-once delivery) or its key was dropped. Treat it as a
//   duplicate; `is_duplicate_message(error)` says so.
// - ErrorCode::too_large: the header asks to skip more than kMaxSkip keys in one chain.
// - ErrorCode::bad_input: malformed envelope or header.
// - ErrorCode::crypto_error: tag mismatch, low-order key, wrong identity.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "impl/crypto/primitives.h"

namespace msgsim::crypto {

inline constexpr uint32_t kMaxSkip = 1000;             // per chain step (spec)
inline constexpr size_t kSkippedKeysMax = 2000;        // per session, oldest dropped (spec)
inline constexpr size_t kRatchetHeaderBytes = 40;      // DHs.pub || u32be(PN) || u32be(Ns)
inline constexpr size_t kPrekeyHeaderBytes = 72;       // IK_A.pub || EK.pub || spk_id || opk_id
inline constexpr size_t kAssociatedDataBytes = 64;     // IK_A.pub || IK_B.pub
inline constexpr uint32_t kNoOneTimePrekey = 0xFFFFFFFF;
// Peer ratchet keys remembered (as 8-byte fingerprints) after they were replaced, so that a
// retransmission from one of the last 8 chains is recognised as a duplicate rather than tried as
// a new ratchet key. Older retransmissions fail as crypto_error, still without a state change;
// a fingerprint collision can only turn a forgery's crypto_error into not_found.
inline constexpr size_t kPreviousPeerRatchetKeysMax = 8;
uint64_t ratchet_key_fingerprint(const Key32& ratchet_public);

inline constexpr std::string_view kInfoX3dh = "msgsim.x3dh.v1";
inline constexpr std::string_view kInfoRatchet = "msgsim.ratchet.v1";
inline constexpr std::string_view kInfoMessageKey = "msgsim.msgkey.v1";

inline bool is_duplicate_message(const Error& error) { return error.code == ErrorCode::not_found; }

// KDF_RK and KDF_CK of the spec.
struct RootStep {
  Key32 root_key;
  Key32 chain_key;
};
RootStep kdf_rk(const Key32& root_key, const Key32& dh_out);
struct ChainStep {
  Key32 message_key;
  Key32 next_chain_key;
};
ChainStep kdf_ck(const Key32& chain_key);
// Message key expansion: the AEAD key and nonce of one message (HKDF, 56 bytes).
struct MessageKeys {
  Key32 aead_key;
  std::array<uint8_t, kAeadNonceBytes> nonce;
  ~MessageKeys() {
    wipe(aead_key);
    wipe(nonce);
  }
};
void expand_message_key(const Key32& message_key, MessageKeys& out);

// The 40-byte ratchet header.
struct RatchetHeader {
  Key32 ratchet_public{};
  uint32_t previous_chain_length = 0;  // PN
  uint32_t message_number = 0;         // Ns of the sender when it sent this message
};
void encode_ratchet_header(const RatchetHeader& header, uint8_t* out);
RatchetHeader decode_ratchet_header(const uint8_t* in);

// The X3DH prekey header, carried by the initiator's messages until the first reply arrives.
struct PrekeyHeader {
  Key32 initiator_identity{};  // IK_A.pub (Ed25519)
  Key32 ephemeral_public{};    // EK.pub
  uint32_t signed_prekey_id = 0;
  uint32_t one_time_prekey_id = kNoOneTimePrekey;
};
void encode_prekey_header(const PrekeyHeader& header, uint8_t* out);
PrekeyHeader decode_prekey_header(const uint8_t* in);

struct SkippedMessageKey {
  Key32 ratchet_public;
  uint32_t message_number;
  Key32 message_key;
};

// The Double Ratchet state, named as in the spec.
struct RatchetState {
  X25519KeyPair own_ratchet;              // DHs
  Key32 peer_ratchet_public{};            // DHr
  bool has_peer_ratchet = false;
  Key32 root_key{};                       // RK
  Key32 sending_chain_key{};              // CKs
  bool has_sending_chain = false;
  Key32 receiving_chain_key{};            // CKr
  bool has_receiving_chain = false;
  uint32_t sent_count = 0;                // Ns
  uint32_t received_count = 0;            // Nr
  uint32_t previous_sending_count = 0;    // PN
  std::vector<SkippedMessageKey> skipped; // oldest first, at most kSkippedKeysMax
  std::vector<uint64_t> previous_peer_ratchets;  // fingerprints, newest last, bounded above
};

// The envelope of a pairwise message on the wire (this framing is the client's, not part of the
// interop spec): kind (1 byte: 1 normal, 2 prekey) || [prekey header (72)] || ratchet header
// (40) || AEAD ciphertext with its tag.
inline constexpr uint8_t kEnvelopeNormal = 1;
inline constexpr uint8_t kEnvelopePrekey = 2;

struct ParsedEnvelope {
  bool has_prekey_header = false;
  PrekeyHeader prekey_header;
  ByteSpan ratchet_header;  // 40 bytes, a view into the envelope
  ByteSpan ciphertext;      // tag included, a view into the envelope
};
Result<ParsedEnvelope> parse_envelope(ByteSpan envelope);

class Session {
 public:
  RatchetState ratchet;
  // AD = IK_A.pub || IK_B.pub, fixed by X3DH.
  std::array<uint8_t, kAssociatedDataBytes> associated_data{};
  bool is_initiator = false;
  // The initiator's prekey header, attached to every message until the first reply decrypts.
  bool has_pending_prekey_header = false;
  std::array<uint8_t, kPrekeyHeaderBytes> pending_prekey_header{};

  ~Session();
  Session() = default;
  Session(const Session&) = default;
  Session& operator=(const Session&) = default;
  Session(Session&&) = default;
  Session& operator=(Session&&) = default;

  // The peer's Ed25519 identity (the half of AD that is not ours).
  Key32 peer_identity() const;

  // Size of the envelope that encrypt() writes for a plaintext of `plaintext_bytes`.
  size_t envelope_size(size_t plaintext_bytes) const;
  // Encrypts `plaintext` into `envelope` (exactly envelope_size(plaintext.size()) bytes). The
  // plaintext may live inside `envelope` at the ciphertext offset (in-place encryption):
  // envelope_size - plaintext.size() - 16 bytes from the start.
  Status encrypt(ByteSpan plaintext, MutableByteSpan envelope);
  // Low level, for callers that frame messages themselves (and the transcripts): writes the
  // 40-byte header and the ciphertext (plaintext.size() + 16 bytes).
  Status encrypt_parts(ByteSpan plaintext, MutableByteSpan header_out,
                       MutableByteSpan ciphertext_out);

  // Decrypts an envelope into `plaintext_out` (at least ciphertext size - 16 bytes); returns
  // the plaintext size. A prekey envelope for this existing session is decrypted with the
  // session (it never resets it); its identity must be the peer's.
  Result<size_t> decrypt(ByteSpan envelope, MutableByteSpan plaintext_out);
  Result<size_t> decrypt_parts(ByteSpan header, ByteSpan ciphertext,
                               MutableByteSpan plaintext_out);

  // Byte serialisation for the client's database. deserialize() checks every bound and
  // returns bad_input for any malformed blob.
  Bytes serialize() const;
  static Result<Session> deserialize(ByteSpan blob);
};

// Session set-up from an X3DH shared secret (x3dh.h does the key agreement).
// Init, A: DHs = new pair, DHr = SPK_B.pub, RK, CKs = KDF_RK(SK, DH(DHs.sk, DHr)).
Result<Session> make_initiator_session(const Key32& shared_secret, const Key32& initiator_identity,
                                       const Key32& responder_identity,
                                       const Key32& responder_signed_prekey,
                                       const PrekeyHeader& prekey_header);
// Same, with the ratchet pair given (transcripts and tests draw it themselves).
Result<Session> make_initiator_session_with(const Key32& shared_secret,
                                            const Key32& initiator_identity,
                                            const Key32& responder_identity,
                                            const Key32& responder_signed_prekey,
                                            const PrekeyHeader& prekey_header,
                                            const X25519KeyPair& ratchet_pair);
// Init, B: DHs = SPK_B pair, RK = SK, the rest none.
Session make_responder_session(const Key32& shared_secret, const Key32& initiator_identity,
                               const Key32& responder_identity,
                               const X25519KeyPair& signed_prekey);

}  // namespace msgsim::crypto
