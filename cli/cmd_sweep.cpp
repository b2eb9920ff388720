// `msgsim sweep SCENARIO --seeds A..B [--jobs N] [--junit FILE] [--bug NAME]...`: every seed of
// the range, in parallel worker processes; each failing seed with the command that replays it.
//
// Why worker processes forked once per job, not a process per seed: the parent loads and
// validates the scenario once, before forking, and every worker inherits it, so a seed costs one
// run_world call and nothing else (no exec, no re-parse of the scenario, no re-initialisation of
// libsodium). In-process runs in sequence are sound because everything process-wide that a run
// touches is reset at its start (sim/randombytes.h: the Simulator reseeds libsodium's
// generator), so a seed's result does not depend on which worker ran it or what ran before;
// tests/cli_test.cpp checks that digests agree with `msgsim run`. Why processes and not threads:
// libsodium's generator and the simulated disk's VFS are process-wide, and a run that trips an
// assertion aborts, which must cost one seed, not the sweep.
//
// The protocol between parent and worker, over two pipes per worker:
//   parent -> worker: the seed to run, 8 bytes; closing the pipe tells the worker to exit.
//   worker -> parent: one frame per seed, u32 length then the encoded SeedResult.
// Dispatch is one seed at a time to whichever worker is idle, so slow seeds do not hold up a
// pre-assigned share. A worker that dies (abort, signal) is reaped, the seed it held is
// reported as a failure naming the signal, and a fresh worker takes its place.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/run_output.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace msgsim::cli {

namespace {

// A million seeds at a second each is twelve days on one core: a larger range is a typo.
constexpr uint64_t kSeedsPerSweepMax = 1'000'000;
constexpr uint32_t kJobsMax = 1024;
// A result frame: the check names and their details, truncated, stay far below this.
constexpr uint32_t kFrameBytesMax = 1 << 20;
constexpr size_t kCheckDetailBytesMax = 1024;
constexpr size_t kFailedChecksMax = 64;

struct SweepArgs {
  std::string scenario;
  std::string seeds;
  std::optional<uint32_t> jobs;
  std::string junit_file;
  std::vector<std::string> bugs;
  bool stop_at_first_failure = false;
  bool quiet = false;
  std::optional<double> timeout_s;      // per seed; none: a seed may run as long as it takes
  std::optional<uint64_t> crash_seed;  // for tests: the worker running this seed aborts
  std::optional<uint64_t> hang_seed;   // for tests: the worker running this seed never answers
};

struct FailedCheck {
  std::string name;
  std::string detail;
};

// What the parent knows of one seed once it is done.
struct SeedResult {
  uint64_t seed = 0;
  bool done = false;
  bool passed = false;
  double wall_seconds = 0;
  std::string digest_hex;
  std::vector<FailedCheck> failed_checks;
  // Non-empty when the seed has no result because its worker died or overran the timeout:
  // "crashed: the worker died of signal 6 (SIGABRT)", "timed out after 60 s (...)".
  std::string crash;
  bool timed_out = false;
};

struct SeedRange {
  uint64_t first = 0;
  uint64_t last = 0;
  uint64_t count() const { return last - first + 1; }
};

Result<uint64_t> parse_seed(std::string_view text, std::string_view what) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc{} || ptr != end) {
    return make_error(ErrorCode::bad_input, std::string("--seeds: ") + std::string(what) + " \"" + std::string(text) +
                                                "\" is not a seed (a decimal integer in 0..2^64-1)");
  }
  return value;
}

Result<SeedRange> parse_seed_range(const std::string& text) {
  const size_t dots = text.find("..");
  if (dots == std::string::npos) {
    return make_error(ErrorCode::bad_input, "--seeds " + text + ": expected a range FIRST..LAST, e.g. 1..100");
  }
  Result<uint64_t> first = parse_seed(std::string_view(text).substr(0, dots), "the first");
  if (!first.ok()) return first.error();
  Result<uint64_t> last = parse_seed(std::string_view(text).substr(dots + 2), "the last");
  if (!last.ok()) return last.error();
  if (*first > *last) {
    return make_error(ErrorCode::bad_input, "--seeds " + text + ": the first seed is after the last");
  }
  const SeedRange range{*first, *last};
  if (*last - *first >= kSeedsPerSweepMax) {
    return make_error(ErrorCode::bad_input,
                      "--seeds " + text + ": at most " + std::to_string(kSeedsPerSweepMax) + " seeds per sweep");
  }
  return range;
}

// Seconds with millisecond precision, as JUnit has them.
std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f", seconds);
  return text;
}

// The scenario path as a shell word: unchanged when it is made of safe characters only, else in
// single quotes (a quote inside becomes '\'').
std::string shell_quote(const std::string& word) {
  const bool safe = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("_-./+=:,@%", c) != nullptr;
  });
  if (safe) return word;
  std::string out = "'";
  for (const char c : word) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::string replay_command(const SweepArgs& args, uint64_t seed) {
  std::string command = "msgsim run " + shell_quote(args.scenario) + " --seed " + std::to_string(seed);
  for (const std::string& bug : args.bugs) command += " --bug " + shell_quote(bug);
  return command;
}

std::string signal_description(int signal_number) {
  const char* abbrev = sigabbrev_np(signal_number);
  std::string out = "signal " + std::to_string(signal_number);
  if (abbrev != nullptr) out += std::string(" (SIG") + abbrev + ")";
  return out;
}

std::string describe_wait_status(int status) {
  if (WIFSIGNALED(status)) return "the worker died of " + signal_description(WTERMSIG(status));
  if (WIFEXITED(status)) return "the worker exited with status " + std::to_string(WEXITSTATUS(status));
  return "the worker stopped (wait status " + std::to_string(status) + ")";
}

// ---- The result frame: little-endian integers, strings as u32 length + bytes. ----

class FrameWriter {
 public:
  void u8(uint8_t v) { bytes_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    bytes_.append(s);
  }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

class FrameReader {
 public:
  explicit FrameReader(std::string_view bytes) : bytes_(bytes) {}
  bool ok() const { return ok_; }
  uint8_t u8() { return static_cast<uint8_t>(take(1)); }
  uint32_t u32() { return static_cast<uint32_t>(take(4)); }
  uint64_t u64() { return take(8); }
  std::string str() {
    const uint32_t size = u32();
    if (!ok_ || size > bytes_.size() - offset_) {
      ok_ = false;
      return {};
    }
    std::string out(bytes_.substr(offset_, size));
    offset_ += size;
    return out;
  }

 private:
  uint64_t take(size_t width) {
    if (!ok_ || width > bytes_.size() - offset_) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes_[offset_ + i])) << (8 * i);
    offset_ += width;
    return v;
  }
  std::string_view bytes_;
  size_t offset_ = 0;
  bool ok_ = true;
};

std::string encode_result(const SeedResult& r) {
  FrameWriter w;
  w.u64(r.seed);
  w.u8(r.passed ? 1 : 0);
  w.u64(static_cast<uint64_t>(r.wall_seconds * 1e9));
  w.str(r.digest_hex);
  w.u32(static_cast<uint32_t>(r.failed_checks.size()));
  for (const FailedCheck& c : r.failed_checks) {
    w.str(c.name);
    w.str(c.detail);
  }
  return w.bytes();
}

std::optional<SeedResult> decode_result(std::string_view bytes) {
  FrameReader r(bytes);
  SeedResult out;
  out.seed = r.u64();
  out.passed = r.u8() != 0;
  out.wall_seconds = static_cast<double>(r.u64()) / 1e9;
  out.digest_hex = r.str();
  const uint32_t checks = r.u32();
  if (!r.ok() || checks > kFailedChecksMax) return std::nullopt;
  for (uint32_t i = 0; i < checks; ++i) {
    FailedCheck c;
    c.name = r.str();
    c.detail = r.str();
    out.failed_checks.push_back(std::move(c));
  }
  if (!r.ok()) return std::nullopt;
  out.done = true;
  return out;
}

// ---- Blocking pipe I/O that survives EINTR. ----

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Reads exactly `size` bytes. False on end of file or error (the peer died).
bool read_all(int fd, char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::read(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool write_frame(int fd, const std::string& payload) {
  char header[4];
  const auto size = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) header[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  return write_all(fd, header, 4) && write_all(fd, payload.data(), payload.size());
}

std::optional<std::string> read_frame(int fd) {
  char header[4];
  if (!read_all(fd, header, 4)) return std::nullopt;
  uint32_t size = 0;
  for (int i = 0; i < 4; ++i) size |= static_cast<uint32_t>(static_cast<uint8_t>(header[i])) << (8 * i);
  if (size > kFrameBytesMax) return std::nullopt;
  std::string payload(size, '\0');
  if (!read_all(fd, payload.data(), size)) return std::nullopt;
  return payload;
}

// ---- The worker process. ----

SeedResult run_one_seed(const sim::Scenario& scenario, const chat::BugSet& bugs, uint64_t seed) {
  sim::RunOptions options;
  options.seed = seed;
  options.bugs = bugs;
  const auto wall_start = std::chrono::steady_clock::now();
  const sim::RunReport report = sim::run_world(scenario, options);
  SeedResult result;
  result.seed = seed;
  result.done = true;
  result.passed = report.passed();
  result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  result.digest_hex = report.digest_hex;
  for (const sim::CheckResult& check : report.checks) {
    if (check.passed || result.failed_checks.size() >= kFailedChecksMax) continue;
    result.failed_checks.push_back({check.name, check.detail.substr(0, kCheckDetailBytesMax)});
  }
  return result;
}

[[noreturn]] void worker_main(pid_t parent, int task_fd, int result_fd, const sim::Scenario& scenario,
                              const chat::BugSet& bugs, std::optional<uint64_t> crash_seed,
                              std::optional<uint64_t> hang_seed) {
  // Ctrl-C reaches the whole foreground process group; the parent alone decides what happens,
  // and kills the workers itself.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_DFL);
#ifdef __linux__
  // If the parent dies without cleaning up, its workers must not run on.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(0);  // it died before the line above took effect
#endif
  for (;;) {
    char seed_bytes[8];
    if (!read_all(task_fd, seed_bytes, sizeof seed_bytes)) ::_exit(0);  // the parent is done with us
    uint64_t seed = 0;
    std::memcpy(&seed, seed_bytes, sizeof seed);
    if (crash_seed && *crash_seed == seed) std::abort();
    while (hang_seed && *hang_seed == seed) ::pause();
    const SeedResult result = run_one_seed(scenario, bugs, seed);
    if (!write_frame(result_fd, encode_result(result))) ::_exit(3);
  }
}

// ---- The parent. ----

volatile sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

struct Worker {
  pid_t pid = -1;
  int task_fd = -1;    // the parent writes seeds here
  int result_fd = -1;  // and reads results here
  std::optional<uint64_t> seed_in_flight;
  std::chrono::steady_clock::time_point deadline;  // of the seed in flight, when there is a timeout
  bool timed_out = false;                          // killed for overrunning it
};

class Sweep {
 public:
  Sweep(const SweepArgs& args, const sim::Scenario& scenario, const chat::BugSet& bugs, SeedRange range,
        uint32_t jobs)
      : args_(args), scenario_(scenario), bugs_(bugs), range_(range), jobs_(jobs), results_(range.count()) {
    for (uint64_t i = 0; i < range.count(); ++i) results_[i].seed = range.first + i;
    show_bar_ = !args.quiet && ::isatty(STDOUT_FILENO) == 1;
  }

  // Runs the sweep; returns the exit code.
  int run();

  const std::vector<SeedResult>& results() const { return results_; }
  bool interrupted() const { return interrupted_; }

 private:
  bool start_worker(Worker& worker);
  void stop_worker(Worker& worker, bool kill_it);
  bool dispatch(Worker& worker);
  void collect(Worker& worker);
  void record(SeedResult result);
  void report_failure(const SeedResult& result);
  void show_progress(bool final_update);
  int poll_timeout_ms() const;
  void kill_overdue_workers();
  std::string progress_text() const;

  const SweepArgs& args_;
  const sim::Scenario& scenario_;
  const chat::BugSet& bugs_;
  const SeedRange range_;
  const uint32_t jobs_;
  std::vector<SeedResult> results_;  // index = seed - range.first
  std::vector<Worker> workers_;
  uint64_t next_index_ = 0;  // the next seed to dispatch, as an index
  uint64_t done_ = 0;
  uint64_t failed_ = 0;
  bool stopping_ = false;  // no more dispatching (first failure, or interrupt)
  bool interrupted_ = false;
  bool show_bar_ = false;
  int last_decile_shown_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_bar_ = start_;
  // SIGINT and SIGTERM are blocked while run() works and delivered only inside ppoll(), which
  // waits with `wait_mask_`: a signal that came between the loop's check of g_interrupted and a
  // plain poll() would be noticed only when some worker next reported, and never when the seed in
  // flight hangs. Workers get `mask_before_run_` back.
  sigset_t mask_before_run_{};
  sigset_t wait_mask_{};
};

bool Sweep::start_worker(Worker& worker) {
  int task_pipe[2];
  int result_pipe[2];
  if (::pipe(task_pipe) != 0) return false;
  if (::pipe(result_pipe) != 0) {
    ::close(task_pipe[0]);
    ::close(task_pipe[1]);
    return false;
  }
  std::cout.flush();  // the child must not inherit (and later repeat) buffered output
  std::cerr.flush();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {task_pipe[0], task_pipe[1], result_pipe[0], result_pipe[1]}) ::close(fd);
    return false;
  }
  if (pid == 0) {
    ::sigprocmask(SIG_SETMASK, &mask_before_run_, nullptr);
    // The other workers' pipe ends were inherited too; holding them would keep those workers
    // from ever seeing the end of their task pipe, and the parent from seeing their death.
    for (const Worker& other : workers_) {
      if (other.task_fd >= 0) ::close(other.task_fd);
      if (other.result_fd >= 0) ::close(other.result_fd);
    }
    ::close(task_pipe[1]);
    ::close(result_pipe[0]);
    worker_main(parent, task_pipe[0], result_pipe[1], scenario_, bugs_, args_.crash_seed, args_.hang_seed);
  }
  ::close(task_pipe[0]);
  ::close(result_pipe[1]);
  ::fcntl(task_pipe[1], F_SETFD, FD_CLOEXEC);
  ::fcntl(result_pipe[0], F_SETFD, FD_CLOEXEC);
  worker.pid = pid;
  worker.task_fd = task_pipe[1];
  worker.result_fd = result_pipe[0];
  worker.seed_in_flight.reset();
  worker.timed_out = false;
  return true;
}

// Closes the worker's pipes and reaps it; SIGKILLs it first when asked (interrupt). Returns
// after the process is gone.
void Sweep::stop_worker(Worker& worker, bool kill_it) {
  if (worker.pid < 0) return;
  if (kill_it) ::kill(worker.pid, SIGKILL);
  ::close(worker.task_fd);
  ::close(worker.result_fd);
  int status = 0;
  while (::waitpid(worker.pid, &status, 0) < 0 && errno == EINTR) {
  }
  worker.pid = -1;
  worker.task_fd = -1;
  worker.result_fd = -1;
  worker.seed_in_flight.reset();
}

bool Sweep::dispatch(Worker& worker) {
  // A worker killed for a timeout may have answered just before the kill; it gets nothing more.
  if (stopping_ || next_index_ >= range_.count() || worker.timed_out) return false;
  const uint64_t seed = range_.first + next_index_;
  char seed_bytes[8];
  std::memcpy(seed_bytes, &seed, sizeof seed);
  // A worker that died while idle shows up here as a failed write (EPIPE, SIGPIPE is ignored);
  // collect() then sees its end of file and restarts it, and the seed is not lost.
  if (!write_all(worker.task_fd, seed_bytes, sizeof seed_bytes)) return false;
  worker.seed_in_flight = seed;
  if (args_.timeout_s) {
    worker.deadline = std::chrono::steady_clock::now() +
                      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                          std::chrono::duration<double>(*args_.timeout_s));
  }
  ++next_index_;
  return true;
}

// The worker's result pipe is readable: a result, or its end of file (the worker died).
void Sweep::collect(Worker& worker) {
  std::optional<std::string> frame = read_frame(worker.result_fd);
  std::optional<SeedResult> result;
  if (frame) result = decode_result(*frame);
  if (result && worker.seed_in_flight == result->seed) {
    worker.seed_in_flight.reset();
    record(std::move(*result));
    return;
  }
  // The worker is gone, or spoke nonsense: reap it, charge its seed, start a fresh one.
  const std::optional<uint64_t> seed = worker.seed_in_flight;
  ::close(worker.task_fd);
  ::close(worker.result_fd);
  if (!frame) {
    // End of file: the process is exiting; wait for it to learn why.
  } else {
    ::kill(worker.pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(worker.pid, &status, 0) < 0 && errno == EINTR) {
  }
  worker.pid = -1;
  worker.task_fd = -1;
  worker.result_fd = -1;
  worker.seed_in_flight.reset();
  if (seed) {
    SeedResult crashed;
    crashed.seed = *seed;
    crashed.done = true;
    crashed.passed = false;
    if (worker.timed_out) {
      char limit[32];
      std::snprintf(limit, sizeof limit, "%g", *args_.timeout_s);
      crashed.crash = std::string("timed out after ") + limit + " s (the worker was killed)";
      crashed.timed_out = true;
      crashed.wall_seconds = *args_.timeout_s;
    } else if (frame) {
      crashed.crash = "crashed: the worker sent a malformed result";
    } else {
      crashed.crash = "crashed: " + describe_wait_status(status);
    }
    record(std::move(crashed));
  }
  if (!stopping_ && next_index_ < range_.count()) {
    if (!start_worker(worker)) {
      std::cerr << "msgsim sweep: could not start a replacement worker: " << std::strerror(errno) << "\n";
    }
  }
}

void Sweep::record(SeedResult result) {
  MSGSIM_ASSERT(result.seed >= range_.first && result.seed <= range_.last);
  SeedResult& slot = results_[result.seed - range_.first];
  MSGSIM_ASSERT(!slot.done, "seed " + std::to_string(result.seed) + " reported twice");
  slot = std::move(result);
  ++done_;
  if (!slot.passed) {
    ++failed_;
    report_failure(slot);
    if (args_.stop_at_first_failure) stopping_ = true;
  }
  show_progress(false);
}

void Sweep::report_failure(const SeedResult& result) {
  if (show_bar_) std::cout << "\r\033[K";  // the progress bar is redrawn after
  std::cout << "FAIL seed " << result.seed << ": ";
  if (!result.crash.empty()) {
    std::cout << result.crash;
  } else {
    for (size_t i = 0; i < result.failed_checks.size(); ++i) {
      std::cout << (i ? "," : "") << result.failed_checks[i].name;
    }
  }
  std::cout << "\n  replay: " << replay_command(args_, result.seed) << "\n";
  std::cout.flush();
}

std::string Sweep::progress_text() const {
  const uint64_t total = range_.count();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  char text[256];
  if (done_ > 0 && rate > 0 && done_ < total) {
    std::snprintf(text, sizeof text, "%llu/%llu seeds, %llu failed, %.2f seeds/s, ETA %.0fs",
                  static_cast<unsigned long long>(done_), static_cast<unsigned long long>(total),
                  static_cast<unsigned long long>(failed_), rate, static_cast<double>(total - done_) / rate);
  } else {
    std::snprintf(text, sizeof text, "%llu/%llu seeds, %llu failed, %.2f seeds/s",
                  static_cast<unsigned long long>(done_), static_cast<unsigned long long>(total),
                  static_cast<unsigned long long>(failed_), rate);
  }
  return text;
}

void Sweep::show_progress(bool final_update) {
  if (args_.quiet) return;
  const uint64_t total = range_.count();
  if (show_bar_) {
    // Redraw on every result, and on the poll tick at most a few times a second.
    const auto now = std::chrono::steady_clock::now();
    if (!final_update && now - last_bar_ < std::chrono::milliseconds(100) && done_ < total) return;
    last_bar_ = now;
    constexpr uint64_t kBarWidth = 30;
    const uint64_t filled = total ? done_ * kBarWidth / total : kBarWidth;
    std::cout << "\r\033[K[" << std::string(filled, '#') << std::string(kBarWidth - filled, ' ') << "] "
              << progress_text();
    if (final_update) std::cout << "\n";
    std::cout.flush();
    return;
  }
  // Not a terminal: a line at each tenth of the way (a log file does not want a bar).
  const int decile = static_cast<int>(done_ * 10 / total);
  if (final_update || decile <= last_decile_shown_) return;
  last_decile_shown_ = decile;
  std::cout << "progress: " << progress_text() << "\n";
  std::cout.flush();
}

// How long the main loop may wait for a result: until the nearest deadline of a seed in flight,
// and at most half a second when a progress bar wants redrawing; else indefinitely.
int Sweep::poll_timeout_ms() const {
  int64_t wait_ms = show_bar_ ? 500 : -1;
  if (!args_.timeout_s) return static_cast<int>(wait_ms);
  const auto now = std::chrono::steady_clock::now();
  for (const Worker& worker : workers_) {
    if (worker.pid < 0 || !worker.seed_in_flight || worker.timed_out) continue;
    const int64_t left_ms =
        std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(worker.deadline - now).count() + 1);
    if (wait_ms < 0 || left_ms < wait_ms) wait_ms = left_ms;
  }
  return static_cast<int>(std::min<int64_t>(wait_ms, 60'000));
}

// A seed past its deadline: its worker is killed; the end of file that follows makes collect()
// report the seed as timed out and start a replacement.
void Sweep::kill_overdue_workers() {
  if (!args_.timeout_s) return;
  const auto now = std::chrono::steady_clock::now();
  for (Worker& worker : workers_) {
    if (worker.pid < 0 || !worker.seed_in_flight || worker.timed_out || now < worker.deadline) continue;
    worker.timed_out = true;
    ::kill(worker.pid, SIGKILL);
  }
}

int Sweep::run() {
  struct sigaction interrupt_action {};
  interrupt_action.sa_handler = on_interrupt;
  sigemptyset(&interrupt_action.sa_mask);
  interrupt_action.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR and the loop notices
  struct sigaction old_int {}, old_term {}, old_pipe {};
  ::sigaction(SIGINT, &interrupt_action, &old_int);
  ::sigaction(SIGTERM, &interrupt_action, &old_term);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGPIPE, &ignore, &old_pipe);  // a dead worker's pipe is an error value, not a signal
  sigset_t interrupts;
  sigemptyset(&interrupts);
  sigaddset(&interrupts, SIGINT);
  sigaddset(&interrupts, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &interrupts, &mask_before_run_);
  wait_mask_ = mask_before_run_;
  sigdelset(&wait_mask_, SIGINT);
  sigdelset(&wait_mask_, SIGTERM);

  workers_.resize(jobs_);
  for (Worker& worker : workers_) {
    if (!start_worker(worker)) {
      std::cerr << "msgsim sweep: could not start a worker: " << std::strerror(errno) << "\n";
      break;
    }
  }
  std::vector<pollfd> polled;
  std::vector<Worker*> polled_workers;
  for (;;) {
    if (g_interrupted) {
      interrupted_ = true;
      stopping_ = true;
      break;
    }
    // Keep every idle worker busy.
    for (Worker& worker : workers_) {
      if (worker.pid >= 0 && !worker.seed_in_flight) dispatch(worker);
    }
    polled.clear();
    polled_workers.clear();
    for (Worker& worker : workers_) {
      if (worker.pid < 0) continue;
      // An idle worker is polled too: its end of file says it died, and it is replaced.
      polled.push_back(pollfd{worker.result_fd, POLLIN, 0});
      polled_workers.push_back(&worker);
    }
    const bool in_flight = std::any_of(workers_.begin(), workers_.end(),
                                       [](const Worker& w) { return w.pid >= 0 && w.seed_in_flight; });
    if (!in_flight) {
      if (stopping_ || next_index_ >= range_.count()) break;  // all done
      if (polled.empty()) {
        std::cerr << "msgsim sweep: no worker could be started; giving up\n";
        interrupted_ = true;
        break;
      }
    }
    const int timeout_ms = poll_timeout_ms();
    const timespec timeout{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1'000'000};
    const int ready = ::ppoll(polled.data(), polled.size(), timeout_ms < 0 ? nullptr : &timeout, &wait_mask_);
    if (ready < 0) {
      if (errno == EINTR) continue;
      std::cerr << "msgsim sweep: poll: " << std::strerror(errno) << "\n";
      interrupted_ = true;
      break;
    }
    if (ready == 0) {
      kill_overdue_workers();
      show_progress(false);
      continue;
    }
    for (size_t i = 0; i < polled.size(); ++i) {
      if (polled[i].revents & (POLLIN | POLLHUP | POLLERR)) collect(*polled_workers[i]);
    }
  }
  // Done, stopped or interrupted: close every task pipe (a worker between seeds exits at once)
  // and reap the workers; on an interrupt they are killed mid-seed.
  for (Worker& worker : workers_) stop_worker(worker, interrupted_);
  // Unblocked while our handler is still in place: an interrupt that came after the loop ended
  // is only recorded, not the default action's exit.
  ::sigprocmask(SIG_SETMASK, &mask_before_run_, nullptr);
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  show_progress(true);

  const uint64_t passed = done_ - failed_;
  std::cout << "sweep: " << done_ << " seeds, " << passed << " passed, " << failed_ << " failed";
  if (done_ < range_.count()) {
    std::cout << " (" << range_.count() - done_ << " of " << range_.count() << " not run: "
              << (interrupted_ ? "interrupted" : "stopped at the first failure") << ")";
  }
  std::cout << "\n";
  std::cout.flush();
  if (interrupted_) return kExitBadInput;
  return failed_ > 0 ? kExitViolation : kExitOk;
}

// ---- JUnit XML ----

// Text for XML content and attribute values. XML 1.0 cannot carry most control characters even
// escaped; they become U+FFFD.
std::string xml_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      case '\n': out += "&#10;"; break;
      case '\t': out += "&#9;"; break;
      case '\r': out += "&#13;"; break;
      default:
        if (u < 0x20 || u == 0x7f) out += "\xEF\xBF\xBD";
        else out += c;
    }
  }
  return out;
}

Result<void> write_junit(const std::string& path, const SweepArgs& args, const sim::Scenario& scenario,
                         const Sweep& sweep, double wall_seconds) {
  uint64_t failures = 0;
  uint64_t skipped = 0;
  for (const SeedResult& r : sweep.results()) {
    if (!r.done) ++skipped;
    else if (!r.passed) ++failures;
  }
  std::ostringstream xml;
  const std::string suite = "msgsim sweep " + scenario.name;
  xml << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  xml << "<testsuite name=\"" << xml_escape(suite) << "\" tests=\"" << sweep.results().size() << "\" failures=\""
      << failures << "\" errors=\"0\" skipped=\"" << skipped << "\" time=\"" << seconds_text(wall_seconds) << "\">\n";
  const std::string classname = xml_escape("msgsim.sweep." + scenario.name);
  // results() is indexed by seed, so the file lists seeds in order whatever order they ended in.
  for (const SeedResult& r : sweep.results()) {
    xml << "  <testcase classname=\"" << classname << "\" name=\"seed " << r.seed << "\" time=\""
        << seconds_text(r.wall_seconds) << "\"";
    if (r.done && r.passed) {
      xml << ">\n    <system-out>trace digest: " << xml_escape(r.digest_hex) << "</system-out>\n  </testcase>\n";
      continue;
    }
    xml << ">\n";
    if (!r.done) {
      xml << "    <skipped message=\""
          << (sweep.interrupted() ? "not run: the sweep was interrupted"
                                  : "not run: the sweep stopped at the first failure")
          << "\"/>\n";
    } else if (!r.crash.empty()) {
      xml << "    <failure type=\"" << (r.timed_out ? "timeout" : "crash") << "\" message=\"" << xml_escape(r.crash)
          << "\">" << xml_escape(r.crash + "\nreplay: " + replay_command(args, r.seed)) << "</failure>\n";
    } else {
      std::string names;
      std::string body;
      for (const FailedCheck& c : r.failed_checks) {
        names += (names.empty() ? "" : ",") + c.name;
        body += c.name + ": " + c.detail + "\n";
      }
      body += "replay: " + replay_command(args, r.seed);
      xml << "    <failure type=\"check\" message=\"" << xml_escape(names) << "\">" << xml_escape(body)
          << "</failure>\n";
      xml << "    <system-out>trace digest: " << xml_escape(r.digest_hex) << "</system-out>\n";
    }
    xml << "  </testcase>\n";
  }
  xml << "</testsuite>\n";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << xml.str();
  out.flush();
  if (!out) return make_error(ErrorCode::io_error, "--junit " + path + ": write failed");
  return {};
}

int sweep(const SweepArgs& args) {
  Result<SeedRange> range = parse_seed_range(args.seeds);
  if (!range.ok()) {
    std::cerr << "msgsim sweep: " << range.error().message << "\n";
    return kExitBadInput;
  }
  // The CPUs this process may run on (a container or taskset may allow fewer than the machine has).
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t allowed;
  if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0) cpus = CPU_COUNT(&allowed);
  if (cpus < 1) cpus = 1;
  const uint32_t jobs_asked = args.jobs.value_or(static_cast<uint32_t>(std::min<long>(cpus, kJobsMax)));
  if (jobs_asked == 0 || jobs_asked > kJobsMax) {
    std::cerr << "msgsim sweep: --jobs " << jobs_asked << ": expected 1.." << kJobsMax << "\n";
    return kExitBadInput;
  }
  constexpr double kTimeoutSecondsMax = 1e6;
  if (args.timeout_s && !(*args.timeout_s > 0 && *args.timeout_s <= kTimeoutSecondsMax)) {
    std::cerr << "msgsim sweep: --timeout-s " << *args.timeout_s << ": expected a number of seconds in (0, "
              << kTimeoutSecondsMax << "]\n";
    return kExitBadInput;
  }
  // Loaded once here, before any fork: a bad scenario is reported once, and every worker
  // inherits the parsed result.
  Result<sim::Scenario> loaded = sim::load_scenario_file(args.scenario);
  if (!loaded.ok()) {
    std::cerr << "msgsim sweep: " << loaded.error().message << "\n";
    return kExitBadInput;
  }
  const sim::Scenario& scenario = *loaded;
  Result<chat::BugSet> bugs = parse_bugs(args.bugs, scenario);
  if (!bugs.ok()) {
    std::cerr << "msgsim sweep: " << bugs.error().message << "\n";
    return kExitBadInput;
  }
  if (!args.junit_file.empty()) {
    // Find out now, not after an hour of seeds, that the report cannot be written.
    std::ofstream probe(args.junit_file, std::ios::binary | std::ios::app);
    if (!probe) {
      std::cerr << "msgsim sweep: --junit " << args.junit_file << ": cannot open for writing\n";
      return kExitBadInput;
    }
  }
  const uint32_t jobs = static_cast<uint32_t>(std::min<uint64_t>(jobs_asked, range->count()));
  if (!args.quiet) {
    std::cout << "sweep: " << scenario.name << " seeds " << range->first << ".." << range->last << " ("
              << range->count() << "), " << jobs << (jobs == 1 ? " worker" : " workers") << "\n";
  }
  g_interrupted = 0;
  const auto wall_start = std::chrono::steady_clock::now();
  Sweep sweep(args, scenario, *bugs, *range, jobs);
  const int exit_code = sweep.run();
  const double wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  if (!args.junit_file.empty()) {
    Result<void> written = write_junit(args.junit_file, args, scenario, sweep, wall_seconds);
    if (!written.ok()) {
      std::cerr << "msgsim sweep: " << written.error().message << "\n";
      return kExitBadInput;
    }
  }
  return exit_code;
}

}  // namespace

void add_sweep_command(CLI::App& app, Outcome& outcome) {
  auto args = std::make_shared<SweepArgs>();
  CLI::App* cmd = app.add_subcommand(
      "sweep", "run every seed of a range in parallel worker processes; each failure with its replay command");
  cmd->add_option("scenario", args->scenario, "the scenario file (JSON)")->required();
  cmd->add_option("--seeds", args->seeds, "the seeds to run, an inclusive range FIRST..LAST (e.g. 1..100)")
      ->required();
  cmd->add_option("--jobs,-j", args->jobs, "worker processes (default: the number of CPUs)");
  cmd->add_option("--junit", args->junit_file, "write a JUnit XML report (one testcase per seed) to this file");
  cmd->add_option("--bug", args->bugs, "switch on a planted bug (see `msgsim bugs`); repeatable");
  cmd->add_flag("--stop-at-first-failure", args->stop_at_first_failure,
                "dispatch no more seeds once one has failed (the seeds under way finish)");
  cmd->add_option("--timeout-s", args->timeout_s,
                  "a seed still running after this many seconds fails as timed out and its worker is replaced "
                  "(default: no limit)");
  cmd->add_flag("--quiet,-q", args->quiet, "no progress output: only failures and the summary");
  // For tests of the crash path: the worker that is given this seed aborts, as a failed
  // assertion would. Hidden from --help.
  cmd->add_option("--crash-seed", args->crash_seed, "")->group("");
  // Likewise for the timeout: the worker given this seed never answers.
  cmd->add_option("--hang-seed", args->hang_seed, "")->group("");
  cmd->callback([args, &outcome] { outcome.exit_code = sweep(*args); });
}

}  // namespace msgsim::cli
