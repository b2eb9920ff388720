// `msgsim live run SCENARIO`: the scenario's chat system over real sockets and real processes
// (live/README.md). The supervisor (this process) starts every server node as its own process
// (`msgsim live node ...`, a hidden helper) on a 127.0.0.1 port, puts a fault proxy
// (live/fault_proxy.h) on every inter-server link, runs the client devices itself on one
// LiveHost, applies the scenario's timeline faults for real, and judges the history with the
// same oracle as `msgsim run`.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "cli/run_output.h"
#include "impl/chat/chat_server.h"
#include "impl/chat/device.h"
#include "impl/chat/key_service.h"
#include "impl/chat/load_balancer.h"
#include "impl/chat/push.h"
#include "impl/chat/queue.h"
#include "impl/chat/registry.h"
#include "impl/chat/storage.h"
#include "live/fault_proxy.h"
#include "live/live_host.h"
#include "oracle/checker.h"
#include "oracle/event.h"
#include "sim/chat_system.h"
#include "sim/e2ee_scan.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::cli {

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using error_code = boost::system::error_code;

constexpr int kListenFd = 3;  // where a node process finds its listening socket
constexpr int64_t kFailStopRestartNs = 1 * kNanosPerSecond;
constexpr int64_t kEndQuietNs = 1500 * kNanosPerMilli;  // no history event this long, all settled: the end
constexpr int64_t kPollNs = 100 * kNanosPerMilli;

const std::set<std::string>& server_roles() {
  static const std::set<std::string> roles = {"lb", "chat", "registry", "queue", "storage", "push", "keys"};
  return roles;
}

std::unique_ptr<Node> make_server_node(const std::string& role, const chat::ChatConfig& config,
                                       chat::BalancerStats& balancer_stats) {
  if (role == "lb") return std::make_unique<chat::LoadBalancerNode>(config, balancer_stats);
  if (role == "chat") return std::make_unique<chat::ChatServerNode>(config);
  if (role == "registry") return std::make_unique<chat::RegistryNode>(config);
  if (role == "queue") return std::make_unique<chat::QueueNode>(config);
  if (role == "storage") return std::make_unique<chat::StorageNode>(config);
  if (role == "push") return std::make_unique<chat::PushNode>(config);
  if (role == "keys") return std::make_unique<chat::KeyServiceNode>(config);
  return nullptr;
}

// Checks what a live run can host: the chat system, with roles the live runtime knows.
Result<sim::Scenario> load_live_scenario(const std::string& path) {
  Result<sim::Scenario> loaded = sim::load_scenario_file(path);
  if (!loaded.ok()) return loaded;
  if (loaded->system != "chat") {
    return make_error(ErrorCode::bad_input, path + ": live runs host the chat system; this scenario runs " + loaded->system);
  }
  for (const sim::NodeSpec& node : loaded->nodes) {
    if (node.role != "device" && !server_roles().count(node.role)) {
      return make_error(ErrorCode::bad_input,
                        path + ": node " + node.name + ": role " + node.role + " is not supported by live runs yet");
    }
  }
  return loaded;
}

// ---------------------------------------------------------------------------------------------
// `msgsim live node`: one server node in this process, until killed, drained or failed.

struct NodeArgs {
  std::string scenario;
  uint64_t seed = 1;
  uint32_t id = 0;
  std::string dir;
  int fd = kListenFd;
  uint64_t incarnation = 0;
  std::string directory_file;
  int64_t drain_ms = 5000;
  bool refuse_websocket_upgrades = false;
};

int run_node(const NodeArgs& args) {
  Result<sim::Scenario> loaded = load_live_scenario(args.scenario);
  if (!loaded.ok()) {
    std::cerr << "msgsim live node: " << loaded.error().message << "\n";
    return kExitBadInput;
  }
  const sim::Scenario& scenario = *loaded;
  if (args.id >= scenario.nodes.size() || scenario.nodes[args.id].role == "device") {
    std::cerr << "msgsim live node: --id " << args.id << " is not a server node of " << args.scenario << "\n";
    return kExitBadInput;
  }
  std::ifstream directory_in(args.directory_file);
  std::stringstream directory_text;
  directory_text << directory_in.rdbuf();
  Result<live::Directory> directory = live::parse_directory(directory_text.str());
  if (!directory_in || !directory.ok()) {
    std::cerr << "msgsim live node: " << args.directory_file << ": "
              << (directory.ok() ? std::string("cannot read") : directory.error().message) << "\n";
    return kExitBadInput;
  }
  const sim::NodeSpec& spec = scenario.nodes[args.id];
  const chat::ChatConfig config = sim::chat_config_for(scenario, args.seed);
  chat::BalancerStats balancer_stats;

  asio::io_context io;
  int exit_code = kExitOk;
  live::LiveHostOptions options;
  options.run_dir = args.dir;
  options.seed = args.seed;
  options.incarnation = args.incarnation;
  options.refuse_websocket_upgrades = args.refuse_websocket_upgrades;
  options.on_exit = [&](NodeId, bool draining) {
    exit_code = draining ? kExitOk : 3;  // 3: fail-stop, the supervisor restarts the node
    io.stop();
  };
  live::LiveHost host(io, options, *directory);
  host.add_node(args.id, spec.name, scenario.regions[spec.region], [&] {
    return make_server_node(spec.role, config, balancer_stats);
  });
  const Status listening = host.listen_on_fd(args.id, args.fd);
  if (!listening.ok()) {
    std::cerr << "msgsim live node: " << listening.error().message << "\n";
    return kExitBadInput;
  }
  asio::signal_set signals(io, SIGTERM, SIGINT);
  std::function<void(error_code, int)> on_signal = [&](error_code ec, int signal) {
    if (ec) return;
    if (signal == SIGTERM) {
      std::cerr << "[" << spec.name << "] SIGTERM: draining for " << args.drain_ms << " ms\n";
      host.drain(args.id, args.drain_ms * kNanosPerMilli);
      signals.async_wait(on_signal);
    } else {
      io.stop();
    }
  };
  signals.async_wait(on_signal);
  host.start(args.id);
  io.run();
  host.shutdown();
  return exit_code;
}

// ---------------------------------------------------------------------------------------------
// `msgsim live run`: the supervisor.

struct LiveRunArgs {
  std::string scenario;
  std::optional<uint64_t> seed;
  std::string history_file;
  std::string dir;
  bool keep = false;
  // Conformance mode: the devices against a running deployment (live/README.md "--target").
  std::string target;
  std::string target_keys;
  std::vector<std::string> target_chat;  // "N=ws://HOST:PORT"
  // `live serve`: where to write the --target flags that reach the deployment.
  std::string targets_file;
  // The share of devices that reach servers by HTTP long polling instead of WebSocket.
  double long_poll_share = 0.0;
  // The server processes answer WebSocket upgrades with 403: every device falls back to long
  // polling by itself (LiveHostOptions::websocket_upgrade_failures_max).
  bool refuse_websocket_upgrades = false;
};

// What a live supervisor does: a whole run, the servers only (`live serve`), or the devices
// only against a deployment someone else started (`live run --target`).
enum class SupervisorMode { run, serve, target };

// Where a conformance run's devices dial: every load balancer at --target, the key service at
// --target-keys, chat server N at its --target-chat, and anything else at --target.
struct TargetPlan {
  live::Endpoint balancer, keys;
  std::map<NodeId, live::Endpoint> chat_servers;
  std::string described;  // for the report
};

// `ws://HOST:PORT` given as `flag`, with HOST resolved to an IPv4 address.
Result<live::Endpoint> resolve_target(const std::string& flag, const std::string& url) {
  Result<live::WsUrl> parsed = live::parse_ws_url(url);
  if (!parsed.ok()) return make_error(ErrorCode::bad_input, flag + ": " + parsed.error().message);
  Result<std::string> address = live::resolve_ipv4(parsed->host);
  if (!address.ok()) return make_error(ErrorCode::bad_input, flag + " " + url + ": " + address.error().message);
  live::Endpoint endpoint;
  endpoint.port = parsed->port;
  endpoint.transport = live::Transport::websocket;
  endpoint.address = *address;
  endpoint.host_name = parsed->host;
  if (!live::is_loopback_ipv4(*address)) {
    // A live run stays on 127.0.0.0/8 unless the user names another address themselves.
    std::cerr << "msgsim live run: note: " << flag << " " << url << " is " << *address
              << ", outside 127.0.0.0/8: the devices dial it because you gave it\n";
  }
  return endpoint;
}

Result<TargetPlan> plan_targets(const LiveRunArgs& args, const sim::Scenario& scenario) {
  TargetPlan plan;
  Result<live::Endpoint> balancer = resolve_target("--target", args.target);
  if (!balancer.ok()) return balancer.error();
  plan.balancer = plan.keys = *balancer;
  plan.described = "--target " + args.target;
  if (!args.target_keys.empty()) {
    Result<live::Endpoint> keys = resolve_target("--target-keys", args.target_keys);
    if (!keys.ok()) return keys.error();
    plan.keys = *keys;
    plan.described += " --target-keys " + args.target_keys;
  }
  constexpr size_t kChatTargetsMax = 1024;
  if (args.target_chat.size() > kChatTargetsMax) {
    return make_error(ErrorCode::bad_input, "--target-chat: at most " + std::to_string(kChatTargetsMax) + " of them");
  }
  for (const std::string& entry : args.target_chat) {
    const size_t equals = entry.find('=');
    const std::string number = entry.substr(0, equals);
    if (equals == std::string::npos || number.empty() || number.size() > 9 ||
        number.find_first_not_of("0123456789") != std::string::npos) {
      return make_error(ErrorCode::bad_input,
                        "--target-chat " + entry + ": expected N=ws://HOST:PORT, N the chat server's number");
    }
    Result<live::Endpoint> chat = resolve_target("--target-chat " + number, entry.substr(equals + 1));
    if (!chat.ok()) return chat.error();
    plan.chat_servers[static_cast<NodeId>(std::stoul(number))] = *chat;
    plan.described += " --target-chat " + entry;
  }
  if (scenario.nodes_with_role("lb").empty()) {
    return make_error(ErrorCode::bad_input, scenario.file + ": --target needs a scenario with a load balancer (role lb)");
  }
  return plan;
}

// A listening socket on 127.0.0.1:port (0: any), close-on-exec; -1 on failure.
int open_listener(uint16_t port, uint16_t& bound) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(fd, 1024) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    return -1;
  }
  bound = ntohs(address.sin_port);
  return fd;
}

struct ServerProcess {
  NodeId id = kNoNode;
  std::string name;
  uint16_t port = 0;
  pid_t pid = -1;
  int listen_fd = -1;  // the first start's listening socket, bound before the proxies
  uint64_t incarnation = 0;
  bool expected_down = false;  // killed or drained by a fault: not restarted until it ends
};

// Every process the supervisor started; all are killed when it goes, whatever the path.
class ProcessTable {
 public:
  ~ProcessTable() { kill_all(); }
  std::map<NodeId, ServerProcess> servers;

  void kill_all() {
    for (auto& [id, p] : servers) {
      if (p.listen_fd >= 0) ::close(p.listen_fd);
      p.listen_fd = -1;
      if (p.pid > 0) {
        ::kill(p.pid, SIGKILL);
        ::waitpid(p.pid, nullptr, 0);
        p.pid = -1;
      }
    }
  }
};

class Supervisor {
 public:
  Supervisor(const sim::Scenario& scenario, uint64_t seed, std::string dir, std::ostream* history_out,
             SupervisorMode mode = SupervisorMode::run, std::optional<TargetPlan> target = std::nullopt)
      : scenario_(scenario), seed_(seed), dir_(std::move(dir)), history_out_(history_out), mode_(mode),
        target_(std::move(target)), config_(sim::chat_config_for(scenario, seed)), hub_(io_, hub_config(seed)),
        signals_(io_, SIGINT, SIGTERM), poll_(io_) {
    MSGSIM_ASSERT_EQ(mode_ == SupervisorMode::target, target_.has_value());
  }

  // Devices that use HTTP long polling (live/long_poll.h) instead of WebSocket: this share of
  // them, spread evenly over the device order (device i when floor((i+1)*share) > floor(i*share)).
  void set_long_poll_share(double share) { long_poll_share_ = share; }
  // Server processes refuse WebSocket upgrades (403), so devices fall back to long polling.
  void set_refuse_websocket_upgrades(bool refuse) { refuse_websocket_upgrades_ = refuse; }

  // `live serve`: every server node as in a run, no devices, no faults, until SIGINT or SIGTERM.
  // Prints (and writes to `targets_file`) the --target flags that reach the deployment.
  int serve(const std::string& targets_file) {
    MSGSIM_ASSERT(mode_ == SupervisorMode::serve);
    if (!start_servers()) return kExitBadInput;
    const std::string flags = target_flags();
    std::cout << "serving " << scenario_.name << ": " << processes_.servers.size()
              << " server processes on 127.0.0.1, run dir " << dir_ << "\n";
    for (const auto& [id, p] : processes_.servers) {
      const std::string& role = scenario_.nodes[id].role;
      if (role == "lb" || role == "chat" || role == "keys") {
        std::cout << "  " << p.name << " (" << role << ", number " << id << ") ws://127.0.0.1:" << p.port << "\n";
      }
    }
    std::cout << "devices reach it with: msgsim live run " << scenario_.file << " " << flags << "\n" << std::flush;
    if (!targets_file.empty()) {
      // Written whole, then renamed: whoever waits for the file never reads half of it.
      const std::string partial = targets_file + ".partial";
      std::ofstream out(partial, std::ios::trunc);
      out << flags << "\n";
      out.close();
      std::error_code ec;
      if (!out) ec = std::make_error_code(std::errc::io_error);
      if (!ec) fs::rename(partial, targets_file, ec);
      if (ec) {
        std::cerr << "msgsim live serve: --targets-file " << targets_file << ": " << ec.message() << "\n";
        return kExitBadInput;
      }
    }
    signals_.async_wait([this](error_code ec, int signal) {
      if (ec) return;
      std::cerr << "msgsim live serve: signal " << signal << ": stopping every process\n";
      io_.stop();
    });
    poll();
    io_.run();
    processes_.kill_all();
    return kExitOk;
  }

  int run() {
    MSGSIM_ASSERT(mode_ != SupervisorMode::serve);
    const auto wall_start = std::chrono::steady_clock::now();
    report_.scenario = scenario_.name;
    report_.seed = seed_;
    report_.digest_hex = "none (a live run is not replayable)";
    if (mode_ == SupervisorMode::run && !start_servers()) return kExitBadInput;
    start_devices();
    schedule_faults();
    signals_.async_wait([this](error_code ec, int signal) {
      if (ec) return;
      std::cerr << "msgsim live run: signal " << signal << ": stopping every process\n";
      interrupted_ = true;
      io_.stop();
    });
    poll();
    io_.run();
    if (interrupted_) {
      devices_->shutdown();
      processes_.kill_all();
      return kExitBadInput;
    }
    const double wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    judge();  // reads the devices' state: before they stop
    devices_->shutdown();
    processes_.kill_all();
    judge_confidentiality();  // the servers' files, once no process writes them
    print_run_report(std::cout, scenario_, report_, RunCost{wall_seconds, -1});
    return report_.passed() ? kExitOk : kExitViolation;
  }

 private:
  static live::FaultProxyHubConfig hub_config(uint64_t seed) {
    live::FaultProxyHubConfig config;
    config.seed = seed;
    return config;
  }

  int64_t now_ns() const { return live::steady_clock_ns() - origin_ns_; }

  // The flags that point `live run --target` at this supervisor's servers.
  std::string target_flags() const {
    std::string out;
    for (const auto& [id, p] : processes_.servers) {
      const std::string& role = scenario_.nodes[id].role;
      const std::string url = "ws://127.0.0.1:" + std::to_string(p.port);
      if (role == "lb" && out.find("--target ") == std::string::npos) out = "--target " + url + out;
      if (role == "keys") out += " --target-keys " + url;
      if (role == "chat") out += " --target-chat " + std::to_string(id) + "=" + url;
    }
    return out;
  }

  std::string region_of(NodeId id) const { return scenario_.regions[scenario_.nodes[id].region]; }
  bool is_server(NodeId id) const { return scenario_.nodes[id].role != "device"; }

  bool start_servers() {
    for (NodeId id = 0; id < scenario_.nodes.size(); ++id) {
      if (!is_server(id)) continue;
      ServerProcess p;
      p.id = id;
      p.name = scenario_.nodes[id].name;
      const int fd = open_listener(0, p.port);
      if (fd < 0) {
        std::cerr << "msgsim live run: cannot listen on 127.0.0.1 for " << p.name << "\n";
        return false;
      }
      // Held until the process starts, so that no proxy is given the same port meanwhile.
      p.listen_fd = fd;
      processes_.servers[id] = p;
    }
    // A proxy on every directed link between servers; each server dials its peers through them.
    for (auto& [from, p] : processes_.servers) {
      live::Directory directory;
      for (auto& [to, q] : processes_.servers) {
        if (from == to) continue;
        Result<uint16_t> proxy = hub_.add_link(from, to, q.port, live::cross_region_delay(region_of(from), region_of(to)),
                                               live::cross_region_delay(region_of(to), region_of(from)));
        if (!proxy.ok()) {
          std::cerr << "msgsim live run: fault proxy " << p.name << " -> " << q.name << ": " << proxy.error().message << "\n";
          return false;
        }
        directory[to] = {*proxy, live::Transport::tcp_frames};
      }
      std::ofstream out(directory_file(from), std::ios::trunc);
      out << live::format_directory(directory);
      if (!out) {
        std::cerr << "msgsim live run: cannot write " << directory_file(from) << "\n";
        return false;
      }
    }
    for (auto& [id, p] : processes_.servers) {
      if (!spawn(p)) return false;
    }
    return true;
  }

  std::string directory_file(NodeId id) const { return dir_ + "/directory-" + std::to_string(id) + ".txt"; }

  int64_t drain_ms() const {
    int64_t ms = 5000;
    for (const sim::FaultSpec& f : scenario_.faults)
      if (f.kind == sim::FaultKind::shutdown) ms = f.drain_ns / kNanosPerMilli;
    return ms;
  }

  bool spawn(ServerProcess& p) {
    uint16_t bound = 0;
    const int fd = p.listen_fd >= 0 ? p.listen_fd : open_listener(p.port, bound);
    p.listen_fd = -1;
    if (fd < 0) {
      std::cerr << "msgsim live run: cannot listen on 127.0.0.1:" << p.port << " for " << p.name << "\n";
      return false;
    }
    std::vector<std::string> argv = {"msgsim", "live", "node",
                                     "--scenario", scenario_.file,
                                     "--seed", std::to_string(seed_),
                                     "--id", std::to_string(p.id),
                                     "--dir", dir_,
                                     "--fd", std::to_string(kListenFd),
                                     "--incarnation", std::to_string(p.incarnation),
                                     "--directory", directory_file(p.id),
                                     "--drain-ms", std::to_string(drain_ms())};
    if (refuse_websocket_upgrades_) argv.push_back("--refuse-websocket-upgrades");
    std::vector<char*> raw;
    for (std::string& s : argv) raw.push_back(s.data());
    raw.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(fd);
      std::cerr << "msgsim live run: fork failed\n";
      return false;
    }
    if (pid == 0) {
      // The child dies with the supervisor, whatever kills it.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      if (fd != kListenFd) {
        ::dup2(fd, kListenFd);  // dup2 clears close-on-exec on the copy
      } else {
        ::fcntl(kListenFd, F_SETFD, 0);
      }
      // Nothing else of the supervisor's (device sockets, proxies) may leak into the node.
      ::syscall(SYS_close_range, kListenFd + 1, ~0U, 0);
      ::execv("/proc/self/exe", raw.data());
      ::_exit(127);
    }
    ::close(fd);
    p.pid = pid;
    p.expected_down = false;
    return true;
  }

  void start_devices() {
    live::Directory directory;
    for (const auto& [id, p] : processes_.servers) {
      const std::string& role = scenario_.nodes[id].role;
      // Devices dial the load balancers, the chat servers and the key service (E2EE keys).
      if (role == "lb" || role == "chat" || role == "keys") {
        live::Endpoint endpoint;
        endpoint.port = p.port;
        endpoint.transport = live::Transport::websocket;
        directory[id] = endpoint;
      }
    }
    live::LiveHostOptions options;
    if (target_) {
      for (NodeId id : config_.topology.load_balancers) directory[id] = target_->balancer;
      for (NodeId id : config_.topology.key_services) directory[id] = target_->keys;
      for (const auto& [number, endpoint] : target_->chat_servers) directory[number] = endpoint;
      // A chat server number the scenario does not name (a third-party load balancer's own).
      options.fallback_endpoint = target_->balancer;
    }
    options.run_dir = dir_;
    options.seed = seed_;
    options.clock_origin_ns = origin_ns_;
    options.history_sink = [this](NodeId, const history::Event& event) {
      history::Event stamped = event;
      stamped.t = now_ns();
      observe(stamped);
    };
    if (e2ee_on()) {
      // The confidentiality check of `msgsim run`, on what this process can see: devices report
      // each plaintext as they write it, and every frame a device sends or receives (all of them
      // to or from a server) is scanned; the servers' database files once at the end.
      config_.plaintext_observer = &scanner_;
      options.frame_observer = [this](NodeId node, ByteView frame) {
        frames_scanned_++;
        if (scanner_.hits() == 0) {
          scanner_.scan(frame, [&] { return "a frame of " + scenario_.nodes[node].name + " (to or from a server)"; });
        }
      };
    }
    uint32_t device_count = 0;
    for (NodeId id = 0; id < scenario_.nodes.size(); ++id) {
      if (is_server(id)) continue;
      const auto below = [&](uint32_t i) { return static_cast<uint64_t>(static_cast<double>(i) * long_poll_share_); };
      if (below(device_count + 1) > below(device_count)) options.long_poll_nodes.insert(id);
      device_count++;
    }
    long_poll_devices_ = options.long_poll_nodes.size();
    devices_ = std::make_unique<live::LiveHost>(io_, options, directory);
    const uint32_t per_user = config_.users.empty() ? 1 : config_.users.front().devices;
    uint32_t device_index = 0;
    for (NodeId id = 0; id < scenario_.nodes.size(); ++id) {
      if (is_server(id)) continue;
      const uint32_t user_index = device_index / per_user, device_number = device_index % per_user + 1;
      device_index++;
      device_ids_.push_back(id);
      devices_->add_node(id, scenario_.nodes[id].name, region_of(id), [this, user_index, device_number] {
        return std::make_unique<chat::DeviceNode>(config_, user_index, device_number);
      });
    }
    for (NodeId id : device_ids_) devices_->start(id);
  }

  void observe(const history::Event& event) {
    if (history_out_ != nullptr) *history_out_ << history::to_jsonl(event);
    checker_.observe(event);
    last_event_ns_ = event.t;
  }

  void note(const std::string& what) {
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "%.3fs ", static_cast<double>(now_ns()) / 1e9);
    report_.faults.push_back(stamp + what);
  }

  void history_fault(bool begins, const std::string& name) {
    history::Event e;
    e.type = begins ? history::EventType::fault : history::EventType::heal;
    e.t = now_ns();
    e.name = name;
    observe(e);
  }

  std::string names(const std::vector<uint32_t>& nodes) const {
    std::string out;
    for (uint32_t n : nodes) out += (out.empty() ? "" : ",") + scenario_.nodes[n].name;
    return out;
  }

  std::vector<NodeId> servers_of(const std::vector<uint32_t>& nodes) const {
    std::vector<NodeId> out;
    for (uint32_t n : nodes)
      if (is_server(n)) out.push_back(n);
    return out;
  }

  void at(int64_t t_ns, std::function<void()> f) {
    auto timer = std::make_shared<asio::steady_timer>(io_);
    timer->expires_after(std::chrono::nanoseconds(std::max<int64_t>(0, t_ns - now_ns())));
    timer->async_wait([timer, f = std::move(f)](error_code ec) {
      if (!ec) f();
    });
  }

  struct Active {
    std::string label;
    std::function<void()> end;
    bool ended = false;
  };

  void schedule_faults() {
    for (const sim::FaultSpec& f : scenario_.faults) {
      // Against --target no server is ours to kill or cut off: said at once, for every fault.
      if (mode_ == SupervisorMode::target) {
        skip(f, "not injectable against --target");
        continue;
      }
      at(f.at_ns, [this, f] { begin(f); });
    }
    at(scenario_.duration_ns, [this] {
      // The quiescence phase: every fault still active heals, the workload stops.
      for (size_t i = 0; i < active_.size(); ++i) end_fault(i);
      config_.workload.sending = false;
      workload_over_ = true;
    });
  }

  void begin(const sim::FaultSpec& f) {
    std::string label = std::string(sim::to_string(f.kind)) + " ";
    std::function<void()> end;
    switch (f.kind) {
      case sim::FaultKind::crash: {
        const std::vector<NodeId> nodes = servers_of(f.nodes);
        if (nodes.empty()) return skip(f, "no server node among its targets");
        label += names(nodes);
        for (NodeId n : nodes) kill_server(n, SIGKILL);
        end = [this, nodes] {
          for (NodeId n : nodes) restart_server(n);
        };
        break;
      }
      case sim::FaultKind::shutdown: {
        const std::vector<NodeId> nodes = servers_of(f.nodes);
        if (nodes.empty()) return skip(f, "no server node among its targets");
        label += names(nodes);
        for (NodeId n : nodes) kill_server(n, SIGTERM);
        end = [this, nodes] {
          for (NodeId n : nodes) restart_server(n);
        };
        break;
      }
      case sim::FaultKind::partition: {
        const std::vector<NodeId> a = servers_of(f.side_a), b = servers_of(f.side_b);
        if (a.empty() || b.empty()) return skip(f, "a side has no server node (devices are not proxied)");
        label += names(a) + " | " + names(b) + (f.one_way ? " one-way" : "");
        const auto id = hub_.partition(a, b, f.one_way);
        end = [this, id] { (void)hub_.heal(id); };
        break;
      }
      case sim::FaultKind::isolate: {
        const std::vector<NodeId> a = servers_of(f.nodes);
        std::vector<NodeId> rest;
        for (const auto& [id, p] : processes_.servers)
          if (!std::binary_search(a.begin(), a.end(), id)) rest.push_back(id);
        if (a.empty() || rest.empty()) return skip(f, "nothing to isolate among the servers");
        label += names(a);
        const auto id = hub_.partition(a, rest, false);
        end = [this, id] { (void)hub_.heal(id); };
        break;
      }
      case sim::FaultKind::region_split: {
        std::vector<NodeId> a, b;
        for (const auto& [id, p] : processes_.servers) {
          const uint32_t r = scenario_.nodes[id].region;
          if (std::binary_search(f.regions_a.begin(), f.regions_a.end(), r)) a.push_back(id);
          if (std::binary_search(f.regions_b.begin(), f.regions_b.end(), r)) b.push_back(id);
        }
        if (a.empty() || b.empty()) return skip(f, "a side has no server node");
        label += names(a) + " | " + names(b);
        const auto id = hub_.partition(a, b, false);
        end = [this, id] { (void)hub_.heal(id); };
        break;
      }
      case sim::FaultKind::latency_spike: {
        const std::vector<NodeId> nodes = servers_of(f.nodes);
        if (nodes.empty()) return skip(f, "no server node among its targets");
        label += names(nodes) + " +" + std::to_string(f.extra_latency_ns / kNanosPerMilli) + "ms";
        for (NodeId n : nodes) (void)hub_.add_latency(n, f.extra_latency_ns);
        end = [this, nodes, extra = f.extra_latency_ns] {
          for (NodeId n : nodes) (void)hub_.add_latency(n, -extra);
        };
        break;
      }
      default:
        return skip(f, "the live runtime cannot inject it yet");
    }
    note("fault " + label);
    history_fault(true, label);
    if (report_.first_fault_ns < 0) report_.first_fault_ns = now_ns();
    const size_t index = active_.size();
    active_.push_back(Active{label, std::move(end), false});
    if (f.end_after_ns && f.at_ns + *f.end_after_ns < scenario_.duration_ns) {
      at(f.at_ns + *f.end_after_ns, [this, index] { end_fault(index); });
    }
  }

  void skip(const sim::FaultSpec& f, const std::string& why) {
    const std::string line = "skipped: " + std::string(sim::to_string(f.kind)) + " at " + f.path + " (" + why + ")";
    std::cout << line << std::endl;
    report_.faults.push_back(line);
  }

  void end_fault(size_t index) {
    Active& a = active_[index];
    if (a.ended) return;
    a.ended = true;
    note("heal " + a.label);
    history_fault(false, a.label);
    a.end();
  }

  void kill_server(NodeId id, int signal) {
    ServerProcess& p = processes_.servers.at(id);
    p.expected_down = true;
    if (p.pid <= 0) return;
    ::kill(p.pid, signal);
    if (signal == SIGKILL) {
      ::waitpid(p.pid, nullptr, 0);
      p.pid = -1;
      report_.stats.crashes++;
    }
  }

  void restart_server(NodeId id) {
    ServerProcess& p = processes_.servers.at(id);
    if (p.pid > 0) {
      // A drain that has not finished by the fault's end: stopped the hard way.
      ::kill(p.pid, SIGKILL);
      ::waitpid(p.pid, nullptr, 0);
      p.pid = -1;
    }
    p.incarnation++;
    if (!spawn(p)) {
      std::cerr << "msgsim live run: cannot restart " << p.name << "\n";
      failed_ = true;
      io_.stop();
      return;
    }
    report_.stats.restarts++;
  }

  // Every 100 ms: reap servers that stopped on their own (restart a fail-stop), and end the run
  // once the quiescence phase has settled or timed out.
  void poll() {
    for (auto& [id, p] : processes_.servers) {
      if (p.pid <= 0) continue;
      int status = 0;
      if (::waitpid(p.pid, &status, WNOHANG) != p.pid) continue;
      p.pid = -1;
      if (p.expected_down) continue;  // drained by a shutdown fault: it comes back at the fault's end
      report_.stats.fail_stops++;
      std::cerr << "msgsim live run: " << p.name << " stopped on its own (status " << status << "); restarting\n";
      const NodeId node = id;
      at(now_ns() + kFailStopRestartNs, [this, node] {
        if (processes_.servers.at(node).pid <= 0 && !processes_.servers.at(node).expected_down) restart_server(node);
      });
    }
    const int64_t now = now_ns();
    if (workload_over_) {
      bool all_settled = true;
      for (NodeId id : device_ids_) {
        auto* device = dynamic_cast<chat::DeviceNode*>(devices_->node(id));
        if (device == nullptr || !device->online() || !device->settled()) all_settled = false;
      }
      if (all_settled && settled_at_ns_ < 0) settled_at_ns_ = now;
      if (!all_settled) settled_at_ns_ = -1;
      const bool quiet = now - last_event_ns_ >= kEndQuietNs && settled_at_ns_ >= 0;
      if (quiet || now >= scenario_.duration_ns + scenario_.quiescence_ns) {
        io_.stop();
        return;
      }
    }
    poll_.expires_after(std::chrono::nanoseconds(kPollNs));
    poll_.async_wait([this](error_code ec) {
      if (!ec) poll();
    });
  }

  bool e2ee_on() const { return config_.workload.e2ee && config_.topology.key_service() != kNoNode; }

  // No message body's plaintext in any server frame the devices saw, nor in a server's
  // database files (the database, its write-ahead log) as the run left them.
  void judge_confidentiality() {
    if (!e2ee_on()) {
      report_.summary.push_back("e2ee: off (no key service in the topology): bodies travel as plaintext");
      return;
    }
    uint64_t files = 0;
    for (const auto& [id, p] : processes_.servers) {
      const std::string& name = p.name;  // a structured binding cannot be captured before clang 16
      for (const char* suffix : {".db", ".db-wal"}) {
        const std::string path = dir_ + "/node-" + std::to_string(id) + suffix;
        std::ifstream in(path, std::ios::binary);
        if (!in) continue;
        const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        files++;
        scanner_.scan(ByteView(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
                      [&] { return "file " + path + " of " + name; });
      }
    }
    const bool clean = scanner_.hits() == 0 && scanner_.tracked() > 0;
    std::string detail;
    if (scanner_.hits() > 0) {
      detail = "a message body's plaintext seen by a server: " + scanner_.first_hit() + " (" +
               std::to_string(scanner_.hits()) + " places)";
    } else if (scanner_.tracked() == 0) {
      detail = "no message body was written, so nothing was judged";
    } else {
      detail = "no plaintext of " + std::to_string(scanner_.tracked()) + " message bodies in " +
               std::to_string(frames_scanned_) + " frames between devices and servers" +
               (target_ ? std::string() : " or " + std::to_string(files) + " server database files") + " (" +
               std::to_string(scanner_.bytes_scanned()) + " bytes scanned" +
               (target_ ? "; the target's files are not ours to read)" : ")");
    }
    report_.checks.push_back({"e2ee-confidentiality", clean, detail});
  }

  void judge() {
    size_t online = 0, settled = 0;
    std::vector<std::string> unsettled;
    for (NodeId id : device_ids_) {
      auto* device = dynamic_cast<chat::DeviceNode*>(devices_->node(id));
      online += device != nullptr && device->online();
      const bool ok = device != nullptr && device->settled();
      settled += ok;
      if (!ok && device != nullptr && unsettled.size() < 5) unsettled.push_back(device->describe());
    }
    const live::LiveHostStats& s = devices_->stats();
    report_.stats.frames_sent = s.frames_sent;
    report_.stats.frames_delivered = s.frames_delivered;
    report_.stats.bytes_delivered = s.bytes_delivered;
    report_.stats.connections_opened = s.connections_opened;
    report_.stats.connections_broken = s.connections_broken;
    report_.stats.timers_fired = s.timers_fired;
    report_.stats.events = checker_.events_observed();
    report_.virtual_ns = now_ns();
    report_.liveness_bound_ns = scenario_.quiescence_ns;
    report_.settled_after_heal_ns = settled_at_ns_ >= 0 ? settled_at_ns_ - scenario_.duration_ns : -1;
    if (target_) {
      report_.summary.push_back("conformance: the devices against a running deployment (" + target_->described +
                                "); no server process started, no fault injected; run dir " + dir_);
    } else {
      report_.summary.push_back("live: " + std::to_string(processes_.servers.size()) + " server processes on 127.0.0.1, " +
                                std::to_string(hub_.link_count()) + " proxied links, devices in the supervisor; run dir " +
                                dir_ + "; frame counts are the devices' side");
    }
    report_.summary.push_back("chat: " + std::to_string(config_.users.size()) + " users, " +
                              std::to_string(device_ids_.size()) + " devices (" + std::to_string(online) + " online, " +
                              std::to_string(settled) + " settled at the end), " + std::to_string(config_.groups.size()) +
                              " groups, " + std::to_string(config_.topology.chat_servers.size()) + " chat servers");
    if (long_poll_devices_ > 0 || s.long_poll_fallbacks > 0) {
      report_.summary.push_back("long polling: " + std::to_string(long_poll_devices_) + " of " +
                                std::to_string(device_ids_.size()) + " devices, " + std::to_string(s.long_poll_requests) +
                                " HTTP requests, " + std::to_string(s.long_poll_retries) + " repeated after a failed connection");
    }
    if (s.long_poll_fallbacks > 0) {
      report_.summary.push_back("long-poll fallback: " + std::to_string(s.long_poll_fallbacks) +
                                " (device, server) pairs switched to long polling after failed WebSocket upgrades");
    }
    for (const std::string& line : unsettled) report_.summary.push_back("  unsettled: " + line);
    report_.checks.push_back({"liveness", settled == device_ids_.size(),
                              settled == device_ids_.size()
                                  ? "every device settled: sends acknowledged, no gap open, receipts sent"
                                  : std::to_string(device_ids_.size() - settled) + " devices still had work in flight at the end"});
    if (failed_) report_.checks.push_back({"supervisor", false, "a server process could not be restarted"});
    const bool quiescent = online == device_ids_.size();
    history::Event end;
    end.type = history::EventType::end;
    end.t = now_ns();
    end.quiescent = quiescent;
    observe(end);
    report_.verdict = checker_.finish();
    for (const history::InvariantResult& r : report_.verdict->invariants) {
      if (!r.judged) continue;
      std::string detail = r.valid ? "holds" : std::to_string(r.count) + " violations";
      if (!r.valid && !r.examples.empty()) detail += "; first: " + r.examples.front().detail;
      report_.checks.push_back({r.name, r.valid, detail});
    }
    report_.checks.push_back({"quiescence", quiescent,
                              quiescent ? "every device online at the end, so no-loss was judged"
                                        : "some devices were offline at the end of the quiescence period"});
  }

  const sim::Scenario& scenario_;
  uint64_t seed_;
  std::string dir_;
  std::ostream* history_out_;
  SupervisorMode mode_;
  std::optional<TargetPlan> target_;
  int64_t origin_ns_ = live::steady_clock_ns();  // the run clock's zero, shared with the devices' host
  chat::ChatConfig config_;
  asio::io_context io_;
  live::FaultProxyHub hub_;
  asio::signal_set signals_;
  asio::steady_timer poll_;
  ProcessTable processes_;
  std::unique_ptr<live::LiveHost> devices_;
  std::vector<NodeId> device_ids_;
  double long_poll_share_ = 0.0;
  bool refuse_websocket_upgrades_ = false;
  size_t long_poll_devices_ = 0;
  history::Checker checker_;
  sim::PlaintextScanner scanner_;
  uint64_t frames_scanned_ = 0;
  sim::RunReport report_;
  std::vector<Active> active_;
  int64_t last_event_ns_ = 0;
  int64_t settled_at_ns_ = -1;
  bool workload_over_ = false;
  bool interrupted_ = false;
  bool failed_ = false;
};

int run_live(const LiveRunArgs& args, SupervisorMode mode) {
  const char* command = mode == SupervisorMode::serve ? "msgsim live serve" : "msgsim live run";
  Result<sim::Scenario> loaded = load_live_scenario(args.scenario);
  if (!loaded.ok()) {
    std::cerr << command << ": " << loaded.error().message << "\n";
    return kExitBadInput;
  }
  sim::Scenario scenario = *loaded;
  std::optional<TargetPlan> target;
  if (mode == SupervisorMode::target) {
    Result<TargetPlan> plan = plan_targets(args, scenario);
    if (!plan.ok()) {
      std::cerr << command << ": " << plan.error().message << "\n";
      return kExitBadInput;
    }
    target = std::move(*plan);
  }
  // Node processes load the scenario again: give them a path that works from anywhere.
  scenario.file = fs::absolute(scenario.file).string();
  std::string dir = args.dir;
  const bool temporary = dir.empty();
  if (temporary) {
    char pattern[] = "/tmp/msgsim-live-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) {
      std::cerr << command << ": cannot create a run directory under /tmp\n";
      return kExitBadInput;
    }
    dir = pattern;
  } else {
    std::error_code ec;
    fs::create_directories(dir, ec);
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      // A fresh run: databases of an earlier run in the same directory would be recovered.
      if (entry.path().filename().string().rfind("node-", 0) == 0) fs::remove(entry.path(), ec);
    }
    if (ec) {
      std::cerr << command << ": --dir " << dir << ": " << ec.message() << "\n";
      return kExitBadInput;
    }
  }
  dir = fs::absolute(dir).string();
  std::ofstream history_out;
  if (!args.history_file.empty()) {
    history_out.open(args.history_file, std::ios::binary | std::ios::trunc);
    if (!history_out) {
      std::cerr << "msgsim live run: --history " << args.history_file << ": cannot open for writing\n";
      return kExitBadInput;
    }
  }
  int code;
  {
    Supervisor supervisor(scenario, args.seed.value_or(scenario.seed), dir,
                          history_out.is_open() ? &history_out : nullptr, mode, std::move(target));
    supervisor.set_long_poll_share(args.long_poll_share);
    supervisor.set_refuse_websocket_upgrades(args.refuse_websocket_upgrades);
    code = mode == SupervisorMode::serve ? supervisor.serve(args.targets_file) : supervisor.run();
  }
  if (history_out.is_open()) {
    history_out.flush();
    if (!history_out) {
      std::cerr << "msgsim live run: --history " << args.history_file << ": write failed\n";
      code = kExitBadInput;
    }
  }
  if (temporary && !args.keep) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  } else {
    std::cout << "run dir: " << dir << "\n";
  }
  return code;
}

}  // namespace

void add_live_command(CLI::App& app, Outcome& outcome) {
  CLI::App* live = app.add_subcommand("live", "real sockets, real processes, real faults");
  live->require_subcommand(1);

  auto run_args = std::make_shared<LiveRunArgs>();
  CLI::App* run = live->add_subcommand("run", "run a chat scenario over real processes and sockets on 127.0.0.1");
  run->add_option("scenario", run_args->scenario, "the scenario file (JSON)")->required();
  run->add_option("--seed", run_args->seed, "the run's seed (default: the scenario's)");
  run->add_option("--history", run_args->history_file, "write the devices' history (spec/history.md) to this file");
  run->add_option("--dir", run_args->dir, "the run directory (databases, directories); default a temporary one");
  run->add_flag("--keep", run_args->keep, "keep the temporary run directory");
  CLI::Option* target = run->add_option(
      "--target", run_args->target,
      "conformance mode: drive the devices against a running deployment whose load balancer is at ws://HOST:PORT "
      "(no server started, no fault injected)");
  run->add_option("--target-keys", run_args->target_keys, "with --target: the key service's ws://HOST:PORT (default: --target)")
      ->needs(target);
  run->add_option("--target-chat", run_args->target_chat,
                  "with --target: N=ws://HOST:PORT, where chat server number N (as the load balancer names it) is "
                  "dialled (default: --target); repeatable")
      ->needs(target);
  run->add_option("--long-poll-share", run_args->long_poll_share,
                  "the share of devices (0..1) that reach servers by HTTP long polling instead of WebSocket")
      ->check(CLI::Range(0.0, 1.0));
  run->add_flag("--refuse-websocket-upgrades", run_args->refuse_websocket_upgrades,
                "the server processes answer every WebSocket upgrade with 403, so the devices fall back to HTTP "
                "long polling by themselves");
  run->callback([run_args, target, &outcome] {
    outcome.exit_code = run_live(*run_args, target->count() > 0 ? SupervisorMode::target : SupervisorMode::run);
  });

  auto serve_args = std::make_shared<LiveRunArgs>();
  CLI::App* serve = live->add_subcommand(
      "serve", "start a scenario's server nodes as in `live run` (no devices, no faults) until SIGINT/SIGTERM, "
               "for `live run --target`");
  serve->add_option("scenario", serve_args->scenario, "the scenario file (JSON)")->required();
  serve->add_option("--seed", serve_args->seed, "the seed (default: the scenario's); give `live run --target` the same");
  serve->add_option("--dir", serve_args->dir, "the run directory (databases, directories); default a temporary one");
  serve->add_flag("--keep", serve_args->keep, "keep the temporary run directory");
  serve->add_option("--targets-file", serve_args->targets_file,
                    "write the --target flags that reach the deployment to this file once it listens");
  serve->add_flag("--refuse-websocket-upgrades", serve_args->refuse_websocket_upgrades,
                  "the server processes answer every WebSocket upgrade with 403 (devices must fall back to HTTP long polling)");
  serve->callback([serve_args, &outcome] { outcome.exit_code = run_live(*serve_args, SupervisorMode::serve); });

  auto node_args = std::make_shared<NodeArgs>();
  CLI::App* node = live->add_subcommand("node", "(internal) one server node process of a live run");
  node->group("");  // hidden: the supervisor starts it
  node->add_option("--scenario", node_args->scenario)->required();
  node->add_option("--seed", node_args->seed);
  node->add_option("--id", node_args->id)->required();
  node->add_option("--dir", node_args->dir)->required();
  node->add_option("--fd", node_args->fd);
  node->add_option("--incarnation", node_args->incarnation);
  node->add_option("--directory", node_args->directory_file)->required();
  node->add_option("--drain-ms", node_args->drain_ms);
  node->add_flag("--refuse-websocket-upgrades", node_args->refuse_websocket_upgrades);
  node->callback([node_args, &outcome] { outcome.exit_code = run_node(*node_args); });
}

}  // namespace msgsim::cli
