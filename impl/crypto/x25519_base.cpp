#include "impl/crypto/x25519_base.h"

#include <sodium.h>

#include "impl/base/assert.h"
#include "impl/crypto/field25519.h"

namespace msgsim::crypto {

using namespace field;

std::array<uint8_t, 32> montgomery_u_of_edwards_y(const std::array<uint8_t, 32>& encoded_point) {
  const Fe y = fe_from_bytes(encoded_point.data());
  const Fe one = {{1, 0, 0, 0, 0}};
  return fe_to_bytes(fe_mul(fe_add(one, y), fe_invert(fe_sub(one, y))));
}

std::array<uint8_t, 32> x25519_base_via_edwards(const std::array<uint8_t, 32>& secret) {
  std::array<uint8_t, 32> clamped = secret;
  clamped[0] &= 248;
  clamped[31] &= 127;
  clamped[31] |= 64;
  std::array<uint8_t, 32> point;
  // A clamped scalar is a nonzero multiple of 8 below 2^255 and never a multiple of the group
  // order, so [s]B is never the identity and libsodium never refuses it.
  MSGSIM_ASSERT(crypto_scalarmult_ed25519_base_noclamp(point.data(), clamped.data()) == 0);
  sodium_memzero(clamped.data(), clamped.size());
  return montgomery_u_of_edwards_y(point);
}

}  // namespace msgsim::crypto
