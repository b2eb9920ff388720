// XChaCha20-Poly1305-IETF (the AEAD of spec/e2ee.md), byte-exact to libsodium's
// crypto_aead_xchacha20poly1305_ietf_{encrypt,decrypt}: HChaCha20 over the first 16 nonce
// bytes gives a subkey; ChaCha20 (RFC 8439, 96-bit nonce = 4 zero bytes || the last 8 nonce
// bytes) block 0 gives the Poly1305 key, blocks 1.. encrypt; the tag is Poly1305 over
// ad || pad16 || ciphertext || pad16 || le64(ad length) || le64(ciphertext length).
//
// Why not libsodium's: every pairwise and group message pays two of these (encrypt and
// decrypt), and for a short chat message libsodium 1.0.18 spends about 600 ns on each (a
// separate HChaCha20 call, one ChaCha20 call for the Poly1305 key block and another for the
// message, each setting up its state again). Here the key block and the message blocks run
// together as up to four interleaved block computations on 128-bit vectors (GCC vector
// extensions, so the same code compiles on every target), and Poly1305 uses 64-bit limbs.
// tests/crypto_test compares everything with libsodium on random and crafted inputs, and
// tests/fuzz/aead_fuzz does so continuously.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace msgsim::crypto {

// HChaCha20(key, 16-byte input) -> 32-byte subkey.
void hchacha20(const uint8_t* key, const uint8_t* input16, uint8_t* out32);

// XORs `in` with the ChaCha20 keystream (RFC 8439: 96-bit nonce, 32-bit block counter starting
// at `counter`) into `out` (may alias `in` exactly). The counter must not wrap.
void chacha20_ietf_xor(const uint8_t* key, const uint8_t* nonce12, uint32_t counter,
                       std::span<const uint8_t> in, uint8_t* out);

// Poly1305 one-time authenticator of `message` under a 32-byte key (r || s).
void poly1305(const uint8_t* key, std::span<const uint8_t> message, uint8_t* tag16);

// Encrypts `plaintext` into `out` (plaintext.size() + 16 bytes: ciphertext, then the tag).
// `out` may alias `plaintext` exactly (in place).
void xchacha20poly1305_encrypt(const uint8_t* key, const uint8_t* nonce24,
                               std::span<const uint8_t> associated_data,
                               std::span<const uint8_t> plaintext, uint8_t* out);
// Verifies the tag of `ciphertext` (tag included, at least 16 bytes) in constant time and, only
// if it matches, decrypts into `out` (ciphertext.size() - 16 bytes). False on a mismatch, with
// `out` untouched.
bool xchacha20poly1305_decrypt(const uint8_t* key, const uint8_t* nonce24,
                               std::span<const uint8_t> associated_data,
                               std::span<const uint8_t> ciphertext, uint8_t* out);

}  // namespace msgsim::crypto
