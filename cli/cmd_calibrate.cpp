// `msgsim calibrate [-o FILE] [--bench-dir DIR] [--from-json FILE] [--min-time S]`: runs the
// cost benchmarks (bench/cost_bench, found next to msgsim in the build tree unless --bench-dir
// says where) with --benchmark_format=json, maps the results to the cost table
// (reports/cost_model.h, reports/README.md) and writes it as JSON. --from-json maps a saved
// Google Benchmark JSON output instead of running anything.
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
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
};

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
  cmd->callback([args, &outcome] { outcome.exit_code = calibrate(*args); });
}

}  // namespace msgsim::cli
