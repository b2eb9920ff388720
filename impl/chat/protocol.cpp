#include "impl/chat/protocol.h"

#include <algorithm>
#include <array>

#include "impl/base/hash.h"

namespace msgsim::chat {

namespace {

template <typename T>
struct FrameNames;
#define MSGSIM_FRAME_NAME(T) \
  template <>                \
  struct FrameNames<T> {     \
    static constexpr const char* name = #T; \
  };
MSGSIM_FRAME_NAME(RouteRequest) MSGSIM_FRAME_NAME(RouteReply) MSGSIM_FRAME_NAME(Hello) MSGSIM_FRAME_NAME(Welcome)
MSGSIM_FRAME_NAME(Send) MSGSIM_FRAME_NAME(GroupOp) MSGSIM_FRAME_NAME(SendAck) MSGSIM_FRAME_NAME(SendReject)
MSGSIM_FRAME_NAME(Deliver) MSGSIM_FRAME_NAME(SyncRequest) MSGSIM_FRAME_NAME(SyncDone) MSGSIM_FRAME_NAME(ReceiptSend)
MSGSIM_FRAME_NAME(ReceiptNotice) MSGSIM_FRAME_NAME(Heartbeat) MSGSIM_FRAME_NAME(HeartbeatAck) MSGSIM_FRAME_NAME(Drain)
MSGSIM_FRAME_NAME(Register) MSGSIM_FRAME_NAME(Unregister) MSGSIM_FRAME_NAME(Lookup) MSGSIM_FRAME_NAME(Located)
MSGSIM_FRAME_NAME(Produce) MSGSIM_FRAME_NAME(Produced) MSGSIM_FRAME_NAME(ProduceRejected) MSGSIM_FRAME_NAME(Subscribe)
MSGSIM_FRAME_NAME(Records) MSGSIM_FRAME_NAME(SyncQuery) MSGSIM_FRAME_NAME(SyncResult) MSGSIM_FRAME_NAME(ReceiptUpdate)
MSGSIM_FRAME_NAME(Route) MSGSIM_FRAME_NAME(Notify) MSGSIM_FRAME_NAME(HealthCheck) MSGSIM_FRAME_NAME(Health)
MSGSIM_FRAME_NAME(PublishKeys) MSGSIM_FRAME_NAME(KeysPublished) MSGSIM_FRAME_NAME(FetchBundles)
MSGSIM_FRAME_NAME(Bundles) MSGSIM_FRAME_NAME(KeyRequestFailed)
MSGSIM_FRAME_NAME(Replicate) MSGSIM_FRAME_NAME(ReplicaAck) MSGSIM_FRAME_NAME(QueueHeartbeat)
MSGSIM_FRAME_NAME(PartitionStates) MSGSIM_FRAME_NAME(AlterIsr) MSGSIM_FRAME_NAME(NotLeader)
MSGSIM_FRAME_NAME(SendStale) MSGSIM_FRAME_NAME(ProduceStale) MSGSIM_FRAME_NAME(OffsetCommit)
MSGSIM_FRAME_NAME(ControllerVote) MSGSIM_FRAME_NAME(ControllerVoteAck) MSGSIM_FRAME_NAME(ControllerSync)
MSGSIM_FRAME_NAME(ControllerSyncAck)
#undef MSGSIM_FRAME_NAME

// type byte -> decoder of that alternative, built once from the variant's alternatives.
using Decoder = Result<Frame> (*)(wire::Reader&);

template <typename T>
Result<Frame> decode_one(wire::Reader& reader) {
  T message;
  message.fields(reader);
  if (!reader.ok()) {
    return make_error(ErrorCode::bad_input, std::string(FrameNames<T>::name) + "." + reader.error());
  }
  // Not the last field's fault, so the error names only the frame.
  if (!reader.at_end()) {
    return make_error(ErrorCode::bad_input, std::string(FrameNames<T>::name) + ": trailing bytes after the last field");
  }
  return Frame{std::move(message)};
}

template <size_t... I>
constexpr std::array<Decoder, 256> make_decoders(std::index_sequence<I...>) {
  std::array<Decoder, 256> table{};
  ((table[std::variant_alternative_t<I, Frame>::kType] = &decode_one<std::variant_alternative_t<I, Frame>>), ...);
  return table;
}

constexpr std::array<Decoder, 256> kDecoders = make_decoders(std::make_index_sequence<std::variant_size_v<Frame>>{});

template <size_t... I>
constexpr std::array<const char*, 256> make_type_names(std::index_sequence<I...>) {
  std::array<const char*, 256> table{};
  ((table[std::variant_alternative_t<I, Frame>::kType] = FrameNames<std::variant_alternative_t<I, Frame>>::name), ...);
  return table;
}

constexpr std::array<const char*, 256> kTypeNames = make_type_names(std::make_index_sequence<std::variant_size_v<Frame>>{});

// Every type number is used once.
template <size_t... I>
constexpr bool type_numbers_unique(std::index_sequence<I...>) {
  constexpr uint8_t types[] = {std::variant_alternative_t<I, Frame>::kType...};
  for (size_t a = 0; a < sizeof...(I); ++a)
    for (size_t b = a + 1; b < sizeof...(I); ++b)
      if (types[a] == types[b]) return false;
  return true;
}
static_assert(type_numbers_unique(std::make_index_sequence<std::variant_size_v<Frame>>{}));

}  // namespace

Bytes encode(const Frame& frame) {
  Bytes out;
  out.reserve(64);
  out.push_back(wire::kWireVersion);
  std::visit(
      [&out](const auto& message) {
        using T = std::decay_t<decltype(message)>;
        out.push_back(T::kType);
        wire::Writer writer(out);
        const_cast<T&>(message).fields(writer);
      },
      frame);
  MSGSIM_ASSERT_LE(out.size(), wire::kFrameBytesMax);
  return out;
}

Result<Frame> decode(ByteView bytes) {
  if (bytes.size() > wire::kFrameBytesMax) {
    return make_error(ErrorCode::too_large, "frame of " + std::to_string(bytes.size()) + " bytes over the maximum " +
                                                std::to_string(wire::kFrameBytesMax));
  }
  if (bytes.size() < 2) return make_error(ErrorCode::bad_input, "frame shorter than its 2-byte header");
  if (bytes[0] != wire::kWireVersion) {
    return make_error(ErrorCode::bad_input, "frame version " + std::to_string(bytes[0]) + ", expected " +
                                                std::to_string(wire::kWireVersion));
  }
  const Decoder decoder = kDecoders[bytes[1]];
  if (decoder == nullptr) return make_error(ErrorCode::bad_input, "unknown frame type " + std::to_string(bytes[1]));
  wire::Reader reader(bytes.subspan(2));
  return decoder(reader);
}

const char* frame_type_name(ByteView bytes) {
  if (bytes.size() < 2 || bytes[0] != wire::kWireVersion || kTypeNames[bytes[1]] == nullptr) return "unknown";
  return kTypeNames[bytes[1]];
}

std::vector<std::string> decode_member_list(ByteView list) {
  std::vector<std::string> users;
  std::string_view rest(reinterpret_cast<const char*>(list.data()), list.size());
  while (!rest.empty()) {
    const size_t end = std::min(rest.find('\n'), rest.size());
    if (end > 0 && end <= kIdMax) users.emplace_back(rest.substr(0, end));
    rest.remove_prefix(std::min(end + 1, rest.size()));
  }
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  return users;
}

uint64_t members_digest(ByteView member_list) {
  const uint64_t digest = hash_bytes(member_list, /*seed=*/0x6d656d62657273);  // "members"
  return digest == 0 ? 1 : digest;
}

const char* frame_name(const Frame& frame) {
  return std::visit([](const auto& message) { return FrameNames<std::decay_t<decltype(message)>>::name; }, frame);
}

}  // namespace msgsim::chat
