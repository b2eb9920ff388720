// `msgsim calibrate [-o FILE] [--bench-dir DIR] [--from-json FILE] [--min-time S]`: runs the
// cost benchmarks (bench/cost_bench, found next to msgsim in the build tree unless --bench-dir
// says where) with --benchmark_format=json, maps the results to the cost table
// (reports/cost_model.h, reports/README.md) and writes it as JSON. --from-json maps a saved
// Google Benchmark JSON output instead of running anything.
// Unless --no-disk, it also measures what the live twin (reports/live_twin.h) charges besides
// CPU: this disk's append + fdatasync latency (as live/group_commit syncs a SQLite WAL) and a
// small-frame TCP round trip on 127.0.0.1 (the loopback hop of the live bench), and the one-way
// distribution of that hop to a reader asleep between frames (the bench's processes at its rates).
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include <cstdio>
#include <cstring>
#include <iterator>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "reports/cost_model.h"

namespace msgsim::cli {

namespace {

struct CalibrateArgs {
  std::string out;
  std::string bench_dir;
  std::string from_json;
  double min_time_s = 0.05;
  std::string disk_dir;  // where the fsync bench writes (default: the temporary directory, as live bench)
  uint32_t fsyncs = 200;
  uint32_t idle_exchanges = 1000;
  bool no_disk = false;
};

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// 21 evenly spaced quantiles (0 %, 5 %, ..., 100 %) of the samples.
std::vector<int64_t> quantiles_21(std::vector<int64_t> samples) {
  std::sort(samples.begin(), samples.end());
  std::vector<int64_t> out;
  for (size_t k = 0; k <= 20; ++k) out.push_back(samples[std::min(samples.size() - 1, k * (samples.size() - 1) / 20)]);
  return out;
}

// Writes one WAL frame (a 24-byte header and a 4 KiB page) and fdatasyncs, `count` times, as
// live/group_commit's worker syncs a SQLite WAL after the loop's commits wrote to it. The file is
// written out and synced once first and the frames then overwrite it in a cycle: a WAL in steady
// state restarts from its beginning after each checkpoint instead of growing, so its fdatasync
// writes data only, not the file's new size. (On this machine's disk both take 5-8 ms at the
// median; the distribution is wide, 0.2 to 17 ms.)
Result<std::vector<int64_t>> measure_fsync(const std::string& dir, uint32_t count) {
  const std::string path = dir + "/msgsim-calibrate-fsync-" + std::to_string(getpid()) + ".db-wal";
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(ErrorCode::io_error, path + ": cannot create the fsync bench file");
  constexpr size_t kFrameBytes = 24 + 4096;
  constexpr uint32_t kFramesInFile = 1000;  // SQLite's default checkpoint threshold, in pages
  std::vector<char> frame(kFrameBytes, 'w');
  bool failed = false;
  for (uint32_t i = 0; i < kFramesInFile && !failed; ++i)
    failed = ::write(fd, frame.data(), frame.size()) != static_cast<ssize_t>(frame.size());
  failed = failed || ::fsync(fd) != 0;
  std::vector<int64_t> samples;
  for (uint32_t i = 0; i < count && !failed; ++i) {
    const auto offset = static_cast<off_t>((i % kFramesInFile) * kFrameBytes);
    const int64_t start = steady_ns();
    failed = ::pwrite(fd, frame.data(), frame.size(), offset) != static_cast<ssize_t>(frame.size()) || ::fdatasync(fd) != 0;
    samples.push_back(steady_ns() - start);
  }
  ::close(fd);
  ::unlink(path.c_str());
  if (failed) return make_error(ErrorCode::io_error, path + ": write or fdatasync failed");
  return quantiles_21(std::move(samples));
}

// A TCP connection to itself on 127.0.0.1 (client and accepted ends), TCP_NODELAY as the live
// runtime sets it.
struct LoopbackPair {
  int client = -1, server = -1;
};
Result<LoopbackPair> open_loopback_pair() {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (listener >= 0) ::close(listener);
    return make_error(ErrorCode::io_error, "loopback bench: cannot listen on 127.0.0.1");
  }
  const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0 || ::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(listener);
    if (client >= 0) ::close(client);
    return make_error(ErrorCode::io_error, "loopback bench: cannot connect to 127.0.0.1");
  }
  const int server = ::accept(listener, nullptr, nullptr);
  ::close(listener);
  if (server < 0) {
    ::close(client);
    return make_error(ErrorCode::io_error, "loopback bench: accept failed");
  }
  const int one = 1;
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return LoopbackPair{client, server};
}

constexpr size_t kLoopbackFrameBytes = 100;
bool read_full(int fd, char* data, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, data + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// The median round trip of a 100-byte frame over TCP on 127.0.0.1 (an echo thread), back to back:
// both ends hot, the reader woken while it has hardly gone idle.
Result<int64_t> measure_loopback_rtt(uint32_t rounds) {
  Result<LoopbackPair> pair = open_loopback_pair();
  if (!pair.ok()) return pair.error();
  const int client = pair->client, server = pair->server;
  std::thread echo([&] {
    char buffer[kLoopbackFrameBytes];
    while (read_full(server, buffer, kLoopbackFrameBytes) &&
           ::write(server, buffer, kLoopbackFrameBytes) == static_cast<ssize_t>(kLoopbackFrameBytes)) {
    }
  });
  std::vector<int64_t> samples;
  char buffer[kLoopbackFrameBytes] = {};
  bool failed = false;
  for (uint32_t i = 0; i < rounds && !failed; ++i) {
    const int64_t start = steady_ns();
    failed = ::write(client, buffer, kLoopbackFrameBytes) != static_cast<ssize_t>(kLoopbackFrameBytes) ||
             !read_full(client, buffer, kLoopbackFrameBytes);
    samples.push_back(steady_ns() - start);
  }
  ::shutdown(client, SHUT_RDWR);
  ::close(client);
  echo.join();
  ::close(server);
  if (failed) return make_error(ErrorCode::io_error, "loopback bench: a round trip failed");
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

// The one-way time of a 100-byte frame over TCP on 127.0.0.1 to a reader that was asleep in a
// blocking read, as the live bench's processes sleep in epoll between messages at 250-2,000
// msg/s: the writer sleeps a gap first (0.5, 1, 2, 4 ms in turn, the bench's spacing between a
// process's messages at those rates), stamps the frame with the steady clock and writes; the
// echo thread reads the stamp, records now - stamp and echoes; the writer, asleep in its read
// meanwhile, records the way back the same way. The back-to-back round trip above has neither
// wake-up from idle (vCPU halt, IPI, the host's scheduling), whose tail is the point here. Both
// directions' samples, as `steps` + 1 evenly spaced quantiles.
Result<std::vector<int64_t>> measure_idle_hops(uint32_t exchanges, size_t steps) {
  Result<LoopbackPair> pair = open_loopback_pair();
  if (!pair.ok()) return pair.error();
  const int client = pair->client, server = pair->server;
  std::vector<int64_t> there, back;
  there.reserve(exchanges);
  back.reserve(exchanges);
  std::thread echo([&] {
    char buffer[kLoopbackFrameBytes];
    while (read_full(server, buffer, kLoopbackFrameBytes)) {
      int64_t stamp = 0;
      const int64_t now = steady_ns();
      std::memcpy(&stamp, buffer, sizeof stamp);
      there.push_back(now - stamp);
      const int64_t reply = steady_ns();
      std::memcpy(buffer, &reply, sizeof reply);
      if (::write(server, buffer, kLoopbackFrameBytes) != static_cast<ssize_t>(kLoopbackFrameBytes)) return;
    }
  });
  constexpr int64_t kGapsNs[] = {500'000, 1'000'000, 2'000'000, 4'000'000};
  char buffer[kLoopbackFrameBytes] = {};
  bool failed = false;
  for (uint32_t i = 0; i < exchanges && !failed; ++i) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(kGapsNs[i % std::size(kGapsNs)]));
    const int64_t stamp = steady_ns();
    std::memcpy(buffer, &stamp, sizeof stamp);
    failed = ::write(client, buffer, kLoopbackFrameBytes) != static_cast<ssize_t>(kLoopbackFrameBytes) ||
             !read_full(client, buffer, kLoopbackFrameBytes);
    if (failed) break;
    int64_t reply = 0;
    std::memcpy(&reply, buffer, sizeof reply);
    back.push_back(steady_ns() - reply);
  }
  ::shutdown(client, SHUT_RDWR);
  ::close(client);
  echo.join();
  ::close(server);
  if (failed || there.empty()) return make_error(ErrorCode::io_error, "loopback bench: an idle exchange failed");
  std::vector<int64_t> samples = std::move(there);
  samples.insert(samples.end(), back.begin(), back.end());
  std::sort(samples.begin(), samples.end());
  std::vector<int64_t> out;
  out.reserve(steps + 1);
  for (size_t k = 0; k <= steps; ++k) out.push_back(samples[k * (samples.size() - 1) / steps]);
  return out;
}

std::string executable_dir() {
  std::error_code error;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::string(".") : exe.parent_path().string();
}

// "model name" from /proc/cpuinfo, the online CPUs and the kernel: what the table was measured on.
std::string describe_machine() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  struct utsname u {};
  uname(&u);
  return model + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs online, " + u.sysname + " " + u.release;
}

int calibrate(const CalibrateArgs& args) {
  std::string json_text;
  std::string label;
  if (!args.from_json.empty()) {
    std::ifstream in(args.from_json, std::ios::binary);
    if (!in) {
      std::cerr << "msgsim calibrate: --from-json " << args.from_json << ": cannot open\n";
      return kExitBadInput;
    }
    std::stringstream text;
    text << in.rdbuf();
    json_text = text.str();
    label = args.from_json;
  } else {
    const std::string dir = args.bench_dir.empty() ? executable_dir() + "/bench" : args.bench_dir;
    const std::string bench = dir + "/cost_bench";
    if (access(bench.c_str(), X_OK) != 0) {
      std::cerr << "msgsim calibrate: " << bench
                << " not found or not executable (build the cost_bench target, or pass --bench-dir)\n";
      return kExitBadInput;
    }
    const std::string command = bench + " --benchmark_format=json --benchmark_min_time=" + std::to_string(args.min_time_s) +
                                " 2>/dev/null";
    std::cerr << "msgsim calibrate: running " << command << "\n";
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) {
      std::cerr << "msgsim calibrate: cannot run " << bench << "\n";
      return kExitBadInput;
    }
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) json_text.append(buffer, n);
    if (pclose(pipe) != 0) {
      std::cerr << "msgsim calibrate: " << bench << " failed\n";
      return kExitBadInput;
    }
    label = bench;
  }
  std::map<std::string, double> results;
  Status read = reports::read_benchmark_json(json_text, label, results);
  if (!read.ok()) {
    std::cerr << "msgsim calibrate: " << read.error().message << "\n";
    return kExitBadInput;
  }
  Result<reports::CostTable> table = reports::cost_table_from_benchmarks(results, describe_machine());
  if (!table.ok()) {
    std::cerr << "msgsim calibrate: " << table.error().message << "\n";
    return kExitBadInput;
  }
  if (!args.no_disk) {
    std::error_code error;
    const std::string dir = args.disk_dir.empty() ? std::filesystem::temp_directory_path(error).string() : args.disk_dir;
    Result<std::vector<int64_t>> fsync = measure_fsync(dir, args.fsyncs);
    Result<int64_t> rtt = measure_loopback_rtt(2000);
    // 1,000 exchanges (about 2 s of gaps), 2,000 one-way samples; 1,001 quantiles give every two
    // samples a step of their own, so a lone outlier keeps its own weight instead of spreading the
    // top 0.5 % evenly up to it.
    Result<std::vector<int64_t>> hops = measure_idle_hops(args.idle_exchanges, 1000);
    if (!fsync.ok() || !rtt.ok() || !hops.ok()) {
      std::cerr << "msgsim calibrate: "
                << (!fsync.ok() ? fsync.error().message : !rtt.ok() ? rtt.error().message : hops.error().message)
                << " (or pass --no-disk)\n";
      return kExitBadInput;
    }
    table->fsync_quantiles_ns = *fsync;
    table->loopback_rtt_ns = *rtt;
    table->idle_hop_quantiles_ns = *hops;
    const auto& h = *hops;
    std::cerr << "msgsim calibrate: fsync in " << dir << ": p50 " << (*fsync)[10] / 1000 << " us, p95 " << (*fsync)[19] / 1000
              << " us, max " << (*fsync)[20] / 1000 << " us; loopback round trip " << *rtt / 1000
              << " us; one-way hop to an idle reader: p50 " << h[500] / 1000 << " us, p99 " << h[990] / 1000 << " us, max "
              << h[1000] / 1000 << " us\n";
  }
  const std::string json = reports::cost_table_json(*table);
  if (args.out.empty()) {
    std::cout << json;
  } else {
    std::ofstream out(args.out, std::ios::binary | std::ios::trunc);
    if (!out || !(out << json)) {
      std::cerr << "msgsim calibrate: -o " << args.out << ": cannot write\n";
      return kExitBadInput;
    }
    std::cerr << "msgsim calibrate: wrote " << args.out << "\n";
  }
  return kExitOk;
}

}  // namespace

void add_calibrate_command(CLI::App& app, Outcome& outcome) {
  auto args = std::make_shared<CalibrateArgs>();
  CLI::App* cmd = app.add_subcommand("calibrate", "run the cost benchmarks and write the cost table (JSON)");
  cmd->add_option("-o,--out", args->out, "write the table here (default: standard output)");
  cmd->add_option("--bench-dir", args->bench_dir, "where cost_bench is (default: bench/ next to msgsim)");
  cmd->add_option("--from-json", args->from_json, "map this saved Google Benchmark JSON instead of running");
  cmd->add_option("--min-time", args->min_time_s, "seconds per benchmark (default 0.05)")->check(CLI::Range(0.001, 60.0));
  cmd->add_option("--disk-dir", args->disk_dir, "directory for the fsync bench (default: the temporary directory, where live bench writes)");
  cmd->add_option("--fsyncs", args->fsyncs, "appends + fdatasyncs measured (default 200)")->check(CLI::Range(2u, 100000u));
  cmd->add_option("--idle-exchanges", args->idle_exchanges, "loopback exchanges after an idle gap measured (default 1000)")
      ->check(CLI::Range(2u, 100000u));
  cmd->add_flag("--no-disk", args->no_disk, "skip the fsync and loopback measurements");
  cmd->callback([args, &outcome] { outcome.exit_code = calibrate(*args); });
}

}  // namespace msgsim::cli
