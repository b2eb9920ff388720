// The messaging system (impl/chat) as a SystemUnderTest: its topology from the scenario's
// roles, its users, contacts and groups drawn from the seed, its devices' histories judged by
// the oracle.
#pragma once

#include <memory>

#include "sim/world.h"

namespace msgsim::sim {

std::unique_ptr<SystemUnderTest> make_chat_system(const Scenario& scenario, const RunOptions& options);

// The users, contacts and groups of a chat scenario for a seed (exposed for tests).
chat::ChatConfig chat_config_for(const Scenario& scenario, uint64_t seed);

}  // namespace msgsim::sim
