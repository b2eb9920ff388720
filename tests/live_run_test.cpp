// `msgsim live run` end to end: the supervisor starts every server node of
// scenarios/live-small.json as its own process, SIGKILLs and restarts a chat server and a queue
// replica, partitions a chat server from the queues through the fault proxies, and the history
// passes the oracle. Every process it started is gone afterwards, also when it is interrupted.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/scratch_dir_test_support.h"

namespace {

namespace fs = std::filesystem;

const std::string kBinary = std::string(MSGSIM_BINARY_DIR) + "/msgsim";
const std::string kScenario = std::string(MSGSIM_SOURCE_DIR) + "/scenarios/live-small.json";

// The processes whose command line mentions `needle` (the run dir is on every node's).
std::vector<int> processes_mentioning(const std::string& needle) {
  std::vector<int> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    std::string cmdline = text.str();
    for (char& c : cmdline)
      if (c == '\0') c = ' ';
    if (cmdline.find(needle) != std::string::npos && cmdline.find("live node") != std::string::npos) {
      out.push_back(std::stoi(name));
    }
  }
  return out;
}

// Under this process's scratch directory, which goes when the test process exits.
std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(msgsim::test::scratch_dir("live_run_test")) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Runs a shell command; its exit code (-1 when it did not exit) and what it wrote to stdout.
std::pair<int, std::string> run_stdout(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// The same, with stderr in the output too.
std::pair<int, std::string> run_command(const std::string& command) { return run_stdout(command + " 2>&1"); }

TEST(LiveRun, SmallScenarioWithCrashesAndAPartitionPassesTheOracle) {
  const std::string dir = fresh_dir("live-run");
  const std::string history = dir + "/history.jsonl";
  const std::string command = kBinary + " live run " + kScenario + " --dir " + dir + " --history " + history + " 2>" +
                              dir + "/stderr.txt";
  const auto [code, output] = run_stdout(command);
  ASSERT_NE(code, -1) << output;
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("verdict: PASS"), std::string::npos) << output;
  EXPECT_NE(output.find("fault crash chat-1"), std::string::npos) << output;
  EXPECT_NE(output.find("fault crash queue-2"), std::string::npos) << output;
  EXPECT_NE(output.find("fault partition chat-2 | queue-1,queue-2"), std::string::npos) << output;
  EXPECT_NE(output.find("no-loss: valid"), std::string::npos) << output;
  EXPECT_NE(output.find("no-duplicate: valid"), std::string::npos) << output;
  // E2EE is on (the scenario has a key service, a server process like the others): every body
  // decrypted, and no plaintext in a frame between devices and servers or a server's files.
  EXPECT_NE(output.find("decrypt: valid"), std::string::npos) << output;
  EXPECT_NE(output.find("e2ee-confidentiality: valid"), std::string::npos) << output;
  EXPECT_EQ(output.find("skipped:"), std::string::npos) << output;
  // The history is there, with work in it, and `msgsim check` agrees with the run.
  std::ifstream in(history);
  std::string line;
  size_t sends = 0, delivers = 0;
  while (std::getline(in, line)) {
    sends += line.find("\"type\":\"send\"") != std::string::npos;
    delivers += line.find("\"type\":\"deliver\"") != std::string::npos;
  }
  EXPECT_GT(sends, 20u);
  EXPECT_GT(delivers, sends);
  EXPECT_EQ(std::system((kBinary + " check " + history + " > /dev/null").c_str()), 0);
  EXPECT_TRUE(processes_mentioning(dir).empty());
}

// Half the devices reach the load balancer, the chat servers and the key service by HTTP long
// polling (live/long_poll.h) instead of WebSocket, through the same crashes and partition: the
// chat servers cannot tell, and the history passes the oracle.
TEST(LiveRun, LongPollingDevicesPassTheOracle) {
  const std::string dir = fresh_dir("live-run-long-poll");
  const std::string history = dir + "/history.jsonl";
  const std::string command = kBinary + " live run " + kScenario + " --long-poll-share 0.5 --dir " + dir +
                              " --history " + history + " 2>" + dir + "/stderr.txt";
  const auto [code, output] = run_stdout(command);
  ASSERT_NE(code, -1) << output;
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("verdict: PASS"), std::string::npos) << output;
  EXPECT_NE(output.find("long polling: 8 of 16 devices"), std::string::npos) << output;
  EXPECT_NE(output.find("no-loss: valid"), std::string::npos) << output;
  EXPECT_NE(output.find("no-duplicate: valid"), std::string::npos) << output;
  EXPECT_NE(output.find("e2ee-confidentiality: valid"), std::string::npos) << output;
  // The long-polling devices did their share of the work: many HTTP requests were answered.
  const size_t at = output.find("long polling: ");
  ASSERT_NE(at, std::string::npos);
  const size_t requests = std::stoul(output.substr(output.find(", ", at) + 2));
  EXPECT_GT(requests, 200u) << output;
  EXPECT_EQ(std::system((kBinary + " check " + history + " > /dev/null").c_str()), 0);
  EXPECT_TRUE(processes_mentioning(dir).empty());
}

// Every server refuses WebSocket upgrades (403): each device falls back to long polling by itself
// (no --long-poll-share) and the run still passes the oracle.
TEST(LiveRun, DevicesFallBackToLongPollingWhenUpgradesAreRefused) {
  const std::string dir = fresh_dir("live-run-fallback");
  const std::string history = dir + "/history.jsonl";
  const std::string command = kBinary + " live run " + kScenario + " --refuse-websocket-upgrades --dir " + dir +
                              " --history " + history + " 2>" + dir + "/stderr.txt";
  const auto [code, output] = run_stdout(command);
  ASSERT_NE(code, -1) << output;
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("verdict: PASS"), std::string::npos) << output;
  EXPECT_NE(output.find("long polling: 0 of 16 devices"), std::string::npos) << output;
  EXPECT_NE(output.find("no-loss: valid"), std::string::npos) << output;
  EXPECT_NE(output.find("e2ee-confidentiality: valid"), std::string::npos) << output;
  // Every device dialled at least the load balancer and fell back there.
  const size_t at = output.find("long-poll fallback: ");
  ASSERT_NE(at, std::string::npos) << output;
  EXPECT_GE(std::stoul(output.substr(at + std::string("long-poll fallback: ").size())), 16u) << output;
  EXPECT_EQ(std::system((kBinary + " check " + history + " > /dev/null").c_str()), 0);
  EXPECT_TRUE(processes_mentioning(dir).empty());
}

// live-small.json's server nodes: lb, 2 chat, registry, 2 queue, storage, push, keys.
constexpr size_t kServerProcesses = 9;

TEST(LiveRun, InterruptedRunLeavesNoProcessBehind) {
  const std::string dir = fresh_dir("live-interrupt");
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen((dir + "/stderr.txt").c_str(), "w", stderr);
    ::execl(kBinary.c_str(), "msgsim", "live", "run", kScenario.c_str(), "--dir", dir.c_str(), nullptr);
    ::_exit(127);
  }
  // Wait until the node processes are up, then interrupt the supervisor as Ctrl-C would. The
  // deadlines here are generous because nine processes start on a 2-core machine that may be
  // running the rest of the suite; they bound a hang, they do not measure start-up time.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (processes_mentioning(dir).size() < kServerProcesses && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(processes_mentioning(dir).size(), kServerProcesses);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_TRUE(processes_mentioning(dir).empty());

  // A supervisor killed outright takes its children with it (PR_SET_PDEATHSIG).
  const pid_t hard = ::fork();
  ASSERT_GE(hard, 0);
  if (hard == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen((dir + "/stderr-kill.txt").c_str(), "w", stderr);
    ::execl(kBinary.c_str(), "msgsim", "live", "run", kScenario.c_str(), "--dir", dir.c_str(), nullptr);
    ::_exit(127);
  }
  const auto deadline2 = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (processes_mentioning(dir).size() < kServerProcesses && std::chrono::steady_clock::now() < deadline2) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(hard, SIGKILL);
  ASSERT_EQ(::waitpid(hard, &status, 0), hard);
  const auto deadline3 = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!processes_mentioning(dir).empty() && std::chrono::steady_clock::now() < deadline3) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(processes_mentioning(dir).empty());
}

// Conformance mode against a deployment of our own system: `live serve` starts the servers of
// live-small.json (and nothing else), `live run --target` drives the devices against them with
// the flags serve printed, skips every fault, and the history passes the oracle.
TEST(LiveConformance, DevicesAgainstARunningDeploymentPassTheOracle) {
  const std::string dir = fresh_dir("live-conformance");
  const std::string targets = dir + "/targets.txt";
  const pid_t server = ::fork();
  ASSERT_GE(server, 0);
  if (server == 0) {
    std::freopen((dir + "/serve-stdout.txt").c_str(), "w", stdout);
    std::freopen((dir + "/serve-stderr.txt").c_str(), "w", stderr);
    ::execl(kBinary.c_str(), "msgsim", "live", "serve", kScenario.c_str(), "--dir", (dir + "/servers").c_str(),
            "--targets-file", targets.c_str(), nullptr);
    ::_exit(127);
  }
  // Whatever fails below, the deployment goes (its node processes die with it).
  struct KillAtExit {
    pid_t pid;
    ~KillAtExit() {
      if (pid <= 0) return;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } guard{server};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(targets) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string flags;
  std::getline(std::ifstream(targets), flags);
  ASSERT_NE(flags.find("--target ws://127.0.0.1:"), std::string::npos) << flags;
  ASSERT_NE(flags.find("--target-keys ws://127.0.0.1:"), std::string::npos) << flags;
  ASSERT_NE(flags.find("--target-chat 2=ws://127.0.0.1:"), std::string::npos) << flags;
  // The targets file names every server's port; a node process can still be seen a moment
  // later than that on a loaded machine (it was 8 of 9 once), so wait for all of them.
  const auto all_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (processes_mentioning(dir + "/servers").size() < kServerProcesses && std::chrono::steady_clock::now() < all_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(processes_mentioning(dir + "/servers").size(), kServerProcesses);

  const std::string history = dir + "/history.jsonl";
  const auto [code, output] = run_command(kBinary + " live run " + kScenario + " " + flags + " --dir " + dir +
                                          "/devices --history " + history);
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("verdict: PASS"), std::string::npos) << output;
  EXPECT_NE(output.find("skipped: crash at $.faults[0] (not injectable against --target)"), std::string::npos) << output;
  EXPECT_NE(output.find("skipped: crash at $.faults[1] (not injectable against --target)"), std::string::npos) << output;
  EXPECT_NE(output.find("skipped: partition at $.faults[2] (not injectable against --target)"), std::string::npos)
      << output;
  EXPECT_EQ(output.find("fault crash"), std::string::npos) << output;
  EXPECT_NE(output.find("conformance: the devices against a running deployment"), std::string::npos) << output;
  EXPECT_NE(output.find("no-loss: valid"), std::string::npos) << output;
  EXPECT_NE(output.find("decrypt: valid"), std::string::npos) << output;
  EXPECT_NE(output.find("e2ee-confidentiality: valid"), std::string::npos) << output;
  // The conformance run started no server of its own; the deployment's are still there.
  EXPECT_EQ(processes_mentioning(dir + "/devices").size(), 0u);
  EXPECT_EQ(processes_mentioning(dir + "/servers").size(), kServerProcesses);
  EXPECT_EQ(std::system((kBinary + " check " + history + " > /dev/null").c_str()), 0);
  // Work went through the deployment: sends acknowledged and delivered, every device online.
  std::ifstream in(history);
  std::string line;
  size_t acks = 0, delivers = 0, online = 0;
  while (std::getline(in, line)) {
    acks += line.find("\"type\":\"ack\"") != std::string::npos;
    delivers += line.find("\"type\":\"deliver\"") != std::string::npos;
    online += line.find("\"type\":\"online\"") != std::string::npos;
  }
  EXPECT_GT(acks, 20u);
  EXPECT_GT(delivers, acks);
  EXPECT_GE(online, 16u);

  ::kill(server, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(server, &status, 0), server);
  guard.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(processes_mentioning(dir + "/servers").empty());
}

TEST(LiveConformance, ABadTargetIsAnErrorNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--target http://127.0.0.1:80", "--target: \"http://127.0.0.1:80\" is not a ws://HOST:PORT URL"},
      {"--target ws://127.0.0.1", "--target: \"ws://127.0.0.1\" is not a ws://HOST:PORT URL: the port is missing"},
      {"--target ws://127.0.0.1:99999", "the port must be a number from 1 to 65535"},
      {"--target ws://127.0.0.1:1 --target-keys wss://127.0.0.1:2", "--target-keys: \"wss://127.0.0.1:2\""},
      {"--target ws://127.0.0.1:1 --target-chat two=ws://127.0.0.1:2", "--target-chat two=ws://127.0.0.1:2: expected"},
      {"--target ws://127.0.0.1:1 --target-chat 2=ws://127.0.0.1", "--target-chat 2: \"ws://127.0.0.1\""},
      {"--target-keys ws://127.0.0.1:2", "--target-keys requires --target"},
  };
  for (const auto& [flags, message] : cases) {
    const auto [code, output] = run_command(kBinary + " live run " + kScenario + " " + flags);
    EXPECT_EQ(code, 2) << flags << ": " << output;
    EXPECT_NE(output.find(message), std::string::npos) << flags << ": " << output;
  }
}

}  // namespace
