// The msgsim binary's `sweep` and `replay`, run as a user runs them: a child process, its
// stdout, stderr and exit code. The expectations come from the brief and from `msgsim run`
// (digests), never from output the sweep produced earlier.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <functional>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

extern char** environ;

namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kBinary = MSGSIM_BINARY_DIR "/msgsim";
const std::string kChatSmall = MSGSIM_SOURCE_DIR "/scenarios/chat-small.json";

struct Ran {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A scratch directory per test, removed at the end.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("msgsim_cli_test_" + std::to_string(::getpid()) + "_" + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs argv[0] (a path) with stdout into a pipe and stderr into a file. `on_output` sees the
  // output so far each time more arrives, with the child's pid (to signal it).
  Ran spawn(const std::vector<std::string>& argv,
            const std::function<void(const std::string&, pid_t)>& on_output = {}) {
    const std::string err_path = (dir_ / "stderr.txt").string();
    int out_pipe[2];
    EXPECT_EQ(::pipe(out_pipe), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out_pipe[0]);
    posix_spawn_file_actions_addclose(&actions, out_pipe[1]);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    const int spawned = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out_pipe[1]);
    Ran ran;
    EXPECT_EQ(spawned, 0) << argv[0];
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(out_pipe[0], buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      ran.out.append(buffer, static_cast<size_t>(n));
      if (on_output) on_output(ran.out, pid);
    }
    ::close(out_pipe[0]);
    if (spawned != 0) return ran;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    ran.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    ran.err = read_file(err_path);
    return ran;
  }

  Ran msgsim(std::vector<std::string> args, const std::function<void(const std::string&, pid_t)>& on_output = {}) {
    args.insert(args.begin(), kBinary);
    return spawn(args, on_output);
  }

  std::filesystem::path dir_;
};

// The one line of `text` that starts with `prefix`, without the prefix ("" when none).
std::string line_after(const std::string& text, const std::string& prefix) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
  }
  return "";
}

// A minimal XML well-formedness check, enough for a JUnit file: the declaration, tags that nest
// and match, attribute values quoted, no raw '<' or unknown '&' in text or attributes. Returns
// "" when well-formed, else what is wrong; `testcases` counts <testcase> elements and `names`
// collects their name attributes in order.
std::string check_xml(const std::string& xml, int& testcases, std::vector<std::string>& names) {
  testcases = 0;
  std::vector<std::string> open;
  size_t i = 0;
  auto valid_text = [](std::string_view text) -> bool {
    for (size_t k = 0; k < text.size(); ++k) {
      if (text[k] == '<') return false;
      if (text[k] == '&') {
        const size_t semi = text.find(';', k);
        if (semi == std::string_view::npos) return false;
        static const std::set<std::string> known = {"amp", "lt", "gt", "quot", "apos"};
        const std::string entity(text.substr(k + 1, semi - k - 1));
        const bool numeric = entity.size() > 1 && entity[0] == '#' &&
                             entity.find_first_not_of("0123456789", 1) == std::string::npos;
        if (!numeric && known.count(entity) == 0) return false;
      }
    }
    return true;
  };
  if (xml.rfind("<?xml ", 0) != 0) return "no XML declaration";
  i = xml.find("?>");
  if (i == std::string::npos) return "unterminated declaration";
  i += 2;
  bool root_seen = false;
  while (i < xml.size()) {
    const size_t lt = xml.find('<', i);
    const std::string_view text(xml.data() + i, (lt == std::string::npos ? xml.size() : lt) - i);
    if (!valid_text(text)) return "bad character data near offset " + std::to_string(i);
    if (open.empty() && text.find_first_not_of(" \n\r\t") != std::string_view::npos) return "text outside the root";
    if (lt == std::string::npos) break;
    const size_t gt = xml.find('>', lt);
    if (gt == std::string::npos) return "unterminated tag";
    std::string tag = xml.substr(lt + 1, gt - lt - 1);
    i = gt + 1;
    if (!tag.empty() && tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name) return "closing </" + name + "> does not match";
      open.pop_back();
      continue;
    }
    const bool self_closing = !tag.empty() && tag.back() == '/';
    if (self_closing) tag.pop_back();
    const size_t name_end = tag.find_first_of(" \n\t");
    const std::string name = tag.substr(0, name_end);
    if (name.empty()) return "empty tag name";
    if (open.empty() && root_seen) return "a second root element";
    root_seen = true;
    // Attributes: name="value" pairs.
    std::string rest = name_end == std::string::npos ? "" : tag.substr(name_end);
    static const std::regex attribute(R"re(\s+([A-Za-z_:][-A-Za-z0-9_:.]*)="([^"]*)")re");
    std::smatch m;
    std::string name_attribute;
    while (std::regex_search(rest, m, attribute) && m.position(0) == 0) {
      if (!valid_text(m[2].str())) return "bad attribute value in <" + name + ">";
      if (m[1] == "name") name_attribute = m[2];
      rest = m.suffix();
    }
    if (rest.find_first_not_of(" \n\t") != std::string::npos) return "malformed attributes in <" + name + ">: " + rest;
    if (name == "testcase") {
      ++testcases;
      names.push_back(name_attribute);
    }
    if (!self_closing) open.push_back(name);
  }
  if (!open.empty()) return "<" + open.back() + "> not closed";
  if (!root_seen) return "no root element";
  return "";
}

// The replay command of a sweep's output, split into words by a POSIX shell (it may quote).
std::vector<std::string> shell_words(const std::string& command) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t k = 0; k < command.size(); ++k) {
    const char c = command[k];
    if (c == '\'') {
      const size_t end = command.find('\'', k + 1);
      word += command.substr(k + 1, end - k - 1);
      k = end;
      in_word = true;
    } else if (c == '\\' && k + 1 < command.size()) {
      word += command[++k];
      in_word = true;
    } else if (c == ' ') {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(word);
  return words;
}

TEST_F(CliTest, SweepOfPassingSeedsExitsZeroWithJunitInSeedOrderAndDigestsOfRun) {
  const std::string junit = (dir_ / "sweep.xml").string();
  const Ran sweep = msgsim({"sweep", kChatSmall, "--seeds", "1..4", "--jobs", "2", "--junit", junit});
  EXPECT_EQ(sweep.exit_code, 0) << sweep.out << sweep.err;
  EXPECT_THAT(sweep.out, HasSubstr("sweep: 4 seeds, 4 passed, 0 failed\n"));
  EXPECT_THAT(sweep.out, Not(HasSubstr("FAIL")));
  // Not a terminal: progress comes as lines, the last at 100%.
  EXPECT_THAT(sweep.out, HasSubstr("progress: 4/4 seeds, 0 failed"));

  const std::string xml = read_file(junit);
  int testcases = 0;
  std::vector<std::string> names;
  EXPECT_EQ(check_xml(xml, testcases, names), "") << xml;
  EXPECT_EQ(testcases, 4);
  EXPECT_EQ(names, (std::vector<std::string>{"seed 1", "seed 2", "seed 3", "seed 4"}));
  EXPECT_THAT(xml, HasSubstr("tests=\"4\" failures=\"0\""));

  // A seed's result does not depend on the worker that ran it, nor on the seeds it ran before:
  // the digest in the report is the one a fresh `msgsim run` of that seed prints.
  const Ran run = msgsim({"run", kChatSmall, "--seed", "4"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const std::string digest = line_after(run.out, "trace digest: ");
  ASSERT_EQ(digest.size(), 16u) << run.out;
  const std::regex seed4(R"re(name="seed 4" time="[0-9.]+">\s*<system-out>trace digest: ([0-9a-f]{16})<)re");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(xml, m, seed4)) << xml;
  EXPECT_EQ(m[1].str(), digest);
}

// chat-small with its chat servers crashing and being isolated, drawn from the seed: the
// devices reconnect and some messages reach them twice, which only a device that deduplicates
// shows once.
std::string chat_with_server_faults() {
  std::string text = read_file(kChatSmall);
  const std::string anchor = "\"workload\":";
  const size_t at = text.find(anchor);
  if (at == std::string::npos) return "";
  text.insert(at, R"("nemesis": {"kinds": ["crash", "isolate"], "mean_interval_s": 5, "fault_duration_s": [1, 5],
               "max_concurrent": 1, "targets": "chat"},
  )");
  return text;
}

// `msgsim check FILE` judges a regular file where it is mapped and stdin as a stream: the same
// verdict and output either way; an empty file (it cannot be mapped) is read as a stream, and a
// missing one is bad input.
TEST_F(CliTest, CheckJudgesAMappedFileAndStdinAlike) {
  const std::string history = MSGSIM_SOURCE_DIR "/tests/data/oracle/no_loss_breaks.jsonl";
  const Ran mapped = msgsim({"check", history, "--json"});
  const Ran streamed = spawn({"/bin/sh", "-c", "exec '" + kBinary + "' check - --json < '" + history + "'"});
  EXPECT_EQ(mapped.exit_code, 1) << mapped.err;
  EXPECT_EQ(streamed.exit_code, 1) << streamed.err;
  EXPECT_THAT(mapped.out, HasSubstr("\"no-loss\":{\"valid\":false"));
  EXPECT_EQ(mapped.out, streamed.out);

  const std::string empty = (dir_ / "empty.jsonl").string();
  std::ofstream(empty).close();
  const Ran judged_empty = msgsim({"check", empty});
  EXPECT_EQ(judged_empty.exit_code, 0) << judged_empty.err;

  const Ran missing = msgsim({"check", (dir_ / "missing.jsonl").string()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("cannot open"));
}

// A planted bug is found, named by its check, and its replay command, run exactly as printed
// (the scenario at a path that needs quoting), fails the same way.
TEST_F(CliTest, SweepFindsPlantedBugAndItsReplayCommandFailsToo) {
  const std::filesystem::path scenario = dir_ / "chat faults & 'co'.json";
  const std::string text = chat_with_server_faults();
  ASSERT_FALSE(text.empty());
  std::ofstream(scenario) << text;
  const std::string junit = (dir_ / "bug.xml").string();
  const Ran sweep = msgsim({"sweep", scenario.string(), "--seeds", "1..30", "--jobs", "2", "--bug", "client-no-dedup",
                            "--stop-at-first-failure", "--junit", junit});
  EXPECT_EQ(sweep.exit_code, 1) << sweep.out << sweep.err;
  const std::regex fail_line(R"re(FAIL seed ([0-9]+): ([-a-z.,]+)\n  replay: (msgsim run [^\n]*)\n)re");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(sweep.out, m, fail_line)) << sweep.out;
  const std::string seed = m[1];
  std::vector<std::string> checks;
  std::stringstream names(m[2].str());
  for (std::string name; std::getline(names, name, ',');) checks.push_back(name);
  EXPECT_THAT(checks, ::testing::Contains("no-duplicate")) << m[0];
  const std::string replay = m[3];
  EXPECT_EQ(replay, "msgsim run '" + std::regex_replace(scenario.string(), std::regex("'"), "'\\''") + "' --seed " +
                        seed + " --bug client-no-dedup");
  EXPECT_THAT(sweep.out, ::testing::ContainsRegex("sweep: [0-9]+ seeds, [0-9]+ passed, [1-9][0-9]* failed"));
  // It stopped early: seeds were left over unless the failure came at the very end.
  if (std::stoi(seed) < 29) {
    EXPECT_THAT(sweep.out, HasSubstr("not run: stopped at the first failure")) << sweep.out;
  }

  // The replay command, word for word, with the binary's path for "msgsim".
  std::vector<std::string> words = shell_words(replay);
  ASSERT_GE(words.size(), 2u);
  ASSERT_EQ(words[0], "msgsim");
  words[0] = kBinary;
  EXPECT_EQ(words[2], scenario.string());
  const Ran again = spawn(words);
  EXPECT_EQ(again.exit_code, 1) << again.out << again.err;
  EXPECT_THAT(again.out, HasSubstr("verdict: FAIL"));
  EXPECT_THAT(again.out, ::testing::ContainsRegex("no-duplicate: VIOLATED"));
  // And it is the bug: the same seed without it passes.
  const Ran without = msgsim({"run", scenario.string(), "--seed", seed});
  EXPECT_EQ(without.exit_code, 0) << without.out << without.err;

  // The JUnit file: well-formed although the path has '&' and quotes, one testcase per seed of
  // the range (those not run are skipped), the failure with its checks and replay command.
  const std::string xml = read_file(junit);
  int testcases = 0;
  std::vector<std::string> case_names;
  EXPECT_EQ(check_xml(xml, testcases, case_names), "") << xml;
  EXPECT_EQ(testcases, 30);
  EXPECT_EQ(case_names.front(), "seed 1");
  EXPECT_EQ(case_names.back(), "seed 30");
  EXPECT_THAT(xml, HasSubstr("<failure type=\"check\" message=\""));
  EXPECT_THAT(xml, HasSubstr("replay: msgsim run &apos;"));
  EXPECT_THAT(xml, HasSubstr("chat faults &amp; &apos;\\&apos;&apos;co&apos;\\&apos;&apos;.json&apos; --seed " + seed));
}

// Seeds run in sequence in one worker, or spread over several in whatever order they finish,
// give the same digests: nothing a run leaves behind in a worker process changes the next.
TEST_F(CliTest, SweepDigestsDoNotDependOnWorkerCount) {
  const std::filesystem::path scenario = dir_ / "faults.json";
  const std::string text = chat_with_server_faults();
  ASSERT_FALSE(text.empty());
  std::ofstream(scenario) << text;
  std::vector<std::string> digests[2];
  const char* jobs[2] = {"1", "3"};
  for (int i = 0; i < 2; ++i) {
    const std::string junit = (dir_ / (std::string("jobs") + jobs[i] + ".xml")).string();
    const Ran sweep = msgsim({"sweep", scenario.string(), "--seeds", "11..16", "--jobs", jobs[i], "--quiet", "--junit", junit});
    ASSERT_EQ(sweep.exit_code, 0) << sweep.out << sweep.err;
    const std::string xml = read_file(junit);
    const std::regex digest(R"re(trace digest: ([0-9a-f]{16}))re");
    for (auto it = std::sregex_iterator(xml.begin(), xml.end(), digest); it != std::sregex_iterator(); ++it) {
      digests[i].push_back((*it)[1]);
    }
    EXPECT_EQ(digests[i].size(), 6u) << xml;
  }
  EXPECT_EQ(digests[0], digests[1]);
  std::set<std::string> distinct(digests[0].begin(), digests[0].end());
  EXPECT_EQ(distinct.size(), 6u) << "each seed is a different run";
}

// A worker that dies mid-seed costs that seed only: it is reported with its signal, a new
// worker takes over, and the remaining seeds run.
TEST_F(CliTest, SweepReportsACrashedWorkerAndCarriesOn) {
  const Ran sweep = msgsim({"sweep", kChatSmall, "--seeds", "1..3", "--jobs", "1", "--crash-seed", "2", "--quiet"});
  EXPECT_EQ(sweep.exit_code, 1) << sweep.out << sweep.err;
  EXPECT_THAT(sweep.out, HasSubstr("FAIL seed 2: crashed: the worker died of signal 6 (SIGABRT)\n"
                                   "  replay: msgsim run " + kChatSmall + " --seed 2\n"));
  EXPECT_THAT(sweep.out, HasSubstr("sweep: 3 seeds, 2 passed, 1 failed\n"));
  EXPECT_THAT(sweep.out, Not(HasSubstr("progress:")));  // --quiet
}

// A seed that runs past --timeout-s fails as timed out, its worker is killed and replaced, and
// a crash elsewhere in the same sweep is still told apart. The timeout is the deadline of the
// hung seed, and the passing seeds (under 1 s alone) must finish within it however loaded the
// machine is: at 4 s, seeds 1 and 4 timed out at load 12 on 2 cores (session 9), so 30 s.
TEST_F(CliTest, SweepTimesOutAHungSeedAndCarriesOn) {
  const std::string junit = (dir_ / "timeout.xml").string();
  const Ran sweep = msgsim({"sweep", kChatSmall, "--seeds", "1..4", "--jobs", "2", "--crash-seed", "2", "--hang-seed", "3",
                            "--timeout-s", "30", "--quiet", "--junit", junit});
  EXPECT_EQ(sweep.exit_code, 1) << sweep.out << sweep.err;
  EXPECT_THAT(sweep.out, HasSubstr("FAIL seed 2: crashed: the worker died of signal 6 (SIGABRT)\n"));
  EXPECT_THAT(sweep.out, HasSubstr("FAIL seed 3: timed out after 30 s (the worker was killed)\n"));
  EXPECT_THAT(sweep.out, HasSubstr("sweep: 4 seeds, 2 passed, 2 failed\n"));
  const std::string xml = read_file(junit);
  int testcases = 0;
  std::vector<std::string> names;
  EXPECT_EQ(check_xml(xml, testcases, names), "") << xml;
  EXPECT_EQ(testcases, 4);
  EXPECT_THAT(xml, HasSubstr("<failure type=\"timeout\""));
  EXPECT_THAT(xml, HasSubstr("<failure type=\"crash\""));

  const Ran bad = msgsim({"sweep", kChatSmall, "--seeds", "1..2", "--timeout-s", "0"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--timeout-s 0: expected a number of seconds"));
}

// Ctrl-C: the workers are killed (seed 2 would otherwise never end), the summary says so, the
// JUnit file lists the seeds not run as skipped, and the exit code is 2.
TEST_F(CliTest, SweepInterruptedKillsItsWorkersAndExitsTwo) {
  const std::string junit = (dir_ / "interrupted.xml").string();
  bool signalled = false;
  const Ran sweep = msgsim({"sweep", kChatSmall, "--seeds", "1..3", "--jobs", "1", "--hang-seed", "2", "--junit", junit},
                           [&](const std::string& out, pid_t pid) {
                             // Seed 1 is done, so the sweep is under way and seed 2 hangs.
                             if (!signalled && out.find("progress: 1/3") != std::string::npos) {
                               signalled = true;
                               ::kill(pid, SIGINT);
                             }
                           });
  ASSERT_TRUE(signalled) << sweep.out;
  EXPECT_EQ(sweep.exit_code, 2) << sweep.out << sweep.err;
  EXPECT_THAT(sweep.out, HasSubstr("sweep: 1 seeds, 1 passed, 0 failed (2 of 3 not run: interrupted)\n"));
  const std::string xml = read_file(junit);
  int testcases = 0;
  std::vector<std::string> names;
  EXPECT_EQ(check_xml(xml, testcases, names), "") << xml;
  EXPECT_EQ(testcases, 3);
  EXPECT_THAT(xml, HasSubstr("skipped=\"2\""));
}

TEST_F(CliTest, SweepBadInputExitsTwoWithAMessage) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::string missing = (dir_ / "no-such.json").string();
  const std::vector<Case> cases = {
      {{"sweep", kChatSmall, "--seeds", "5..2"}, "--seeds 5..2: the first seed is after the last"},
      {{"sweep", kChatSmall, "--seeds", "abc"}, "--seeds abc: expected a range FIRST..LAST"},
      {{"sweep", kChatSmall, "--seeds", "1..x"}, "is not a seed"},
      {{"sweep", kChatSmall, "--seeds", "1..3", "--jobs", "0"}, "--jobs 0: expected 1.."},
      {{"sweep", kChatSmall, "--seeds", "1..3", "--bug", "no-such-bug"}, "--bug no-such-bug: no such planted bug"},
      {{"sweep", missing, "--seeds", "1..3"}, missing},
      {{"replay", kChatSmall, "--seed", "1", "--expect-digest", "xyz"}, "--expect-digest xyz: expected 16 hex digits"},
      {{"replay", kChatSmall, "--seed", "1", "--expect-digest", "0123456789abcdefa"}, "expected 16 hex digits"},
      {{"replay", kChatSmall, "--seed", "1", "--bug", "no-such-bug"}, "no such planted bug"},
  };
  for (const Case& c : cases) {
    const Ran ran = msgsim(c.args);
    EXPECT_EQ(ran.exit_code, 2) << c.args[3] << "\n" << ran.out << ran.err;
    EXPECT_THAT(ran.err, HasSubstr(c.message));
    EXPECT_THAT(ran.out, Not(HasSubstr("sweep:"))) << "nothing ran";
  }
}

TEST_F(CliTest, ReplayConfirmsADigestAndCatchesAWrongOne) {
  const Ran run = msgsim({"run", kChatSmall, "--seed", "7"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const std::string digest = line_after(run.out, "trace digest: ");
  ASSERT_EQ(digest.size(), 16u);
  // The speed line gives both factors: per wall second and per CPU second of the process.
  EXPECT_TRUE(std::regex_search(run.out, std::regex(R"re(\nspeed: [0-9][0-9,.]*x real time \([0-9][0-9,.]*x of CPU time\)\n)re")))
      << run.out;

  const Ran twice = msgsim({"replay", kChatSmall, "--seed", "7"});
  EXPECT_EQ(twice.exit_code, 0) << twice.out << twice.err;
  EXPECT_THAT(twice.out, HasSubstr("verdict: PASS\ntrace digest: " + digest + "\n"));
  EXPECT_THAT(twice.out, HasSubstr("replay: digest " + digest + " confirmed\n"));

  std::string upper = digest;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const Ran expected = msgsim({"replay", kChatSmall, "--seed", "7", "--expect-digest", upper});
  EXPECT_EQ(expected.exit_code, 0) << expected.out << expected.err;
  EXPECT_THAT(expected.out, HasSubstr("replay: digest " + digest + " confirmed\n"));

  std::string wrong = digest;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  const Ran mismatch = msgsim({"replay", kChatSmall, "--seed", "7", "--expect-digest", wrong});
  EXPECT_EQ(mismatch.exit_code, 1) << mismatch.out << mismatch.err;
  EXPECT_THAT(mismatch.out, HasSubstr("replay: DIGEST MISMATCH expected " + wrong + " got " + digest + "\n"));
}

// --perfetto on `run` and `replay`: a JSON timeline (its content is tests/perfetto_test's), the
// run's digest unchanged, the bound honoured and said, and an unwritable path refused.
TEST_F(CliTest, PerfettoWritesATimelineOnRunAndReplay) {
  const Ran plain = msgsim({"run", kChatSmall, "--seed", "7"});
  ASSERT_EQ(plain.exit_code, 0) << plain.out << plain.err;
  const std::string digest = line_after(plain.out, "trace digest: ");

  const std::string file = (dir_ / "run.json").string();
  const Ran replay = msgsim({"replay", kChatSmall, "--seed", "7", "--perfetto", file});
  EXPECT_EQ(replay.exit_code, 0) << replay.out << replay.err;
  EXPECT_THAT(replay.out, HasSubstr("replay: digest " + digest + " confirmed\n"));
  const nlohmann::json doc = nlohmann::json::parse(read_file(file), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << file << " is not JSON";
  EXPECT_GT(doc["traceEvents"].size(), 1000u);
  EXPECT_EQ(doc["otherData"]["truncated"], false);

  const std::string cut = (dir_ / "cut.json").string();
  const Ran bounded = msgsim({"run", kChatSmall, "--seed", "7", "--perfetto", cut, "--perfetto-events-max", "100"});
  EXPECT_EQ(bounded.exit_code, 0) << bounded.out << bounded.err;
  EXPECT_EQ(line_after(bounded.out, "trace digest: "), digest);
  const nlohmann::json cut_doc = nlohmann::json::parse(read_file(cut), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(cut_doc.is_discarded());
  EXPECT_EQ(cut_doc["otherData"]["truncated"], true);
  EXPECT_LE(cut_doc["traceEvents"].size(), 103u);

  const Ran refused = msgsim({"run", kChatSmall, "--perfetto", (dir_ / "no" / "such" / "dir.json").string()});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_THAT(refused.err, HasSubstr("--perfetto"));
}

// `live bench --in-flight-max`: a sender with that many sends unacked makes no more. One sender
// at 20,000/s owes 20 sends each 1 ms tick, all within one handler of the load process, before
// any answer can arrive: with a window of 1 at most one of them is made, the rest are counted
// as not sent. The default window is 512.
TEST_F(CliTest, LiveBenchInFlightMaxBoundsASendersWindow) {
  const Ran ran = msgsim({"live", "bench", "--idle", "0", "--rates", "20000", "--pairs", "1", "--rate-duration-s", "0.5",
                          "--in-flight-max", "1", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  const nlohmann::json out = nlohmann::json::parse(ran.out);
  EXPECT_EQ(out["traffic"]["in_flight_max"].get<uint64_t>(), 1u);
  const auto& rate = out["traffic"]["rates"].at(0);
  const uint64_t sent = rate["sent"].get<uint64_t>();
  const uint64_t not_sent = rate["not_sent_in_flight_max"].get<uint64_t>();
  EXPECT_GT(sent, 0u);
  // Every tick owes 20 and makes at most one: at least 19 of 20 owed are not sent.
  EXPECT_GE(not_sent, 19 * sent) << rate.dump();
  EXPECT_EQ(rate["delivered"].get<uint64_t>(), sent);
  const Ran refused = msgsim({"live", "bench", "--idle", "0", "--in-flight-max", "0"});
  EXPECT_EQ(refused.exit_code, 2);
}

// `live bench --queue-linger-us`: the queue's batching delays reach the bench's server process.
// With MSGSIM_BENCH_TRACE the server prints each stage's delay since the send; committed records
// cannot reach the storage before the linger has passed, so the "records" stage's p50 is at
// least the linger given (a lower bound, whatever the machine's load). Without the flags both
// delays are 0 (the help shows the defaults). The storage's commit window holds the records'
// transaction open before the Delivers are decided, so it adds to the latency's lower bound too.
TEST_F(CliTest, LiveBenchQueueLingerDelaysTheRecords) {
  ::setenv("MSGSIM_BENCH_TRACE", "1", 1);
  const Ran ran = msgsim({"live", "bench", "--idle", "0", "--rates", "200", "--pairs", "2", "--rate-duration-s", "1",
                          "--queue-commit-window-us", "0", "--queue-linger-us", "3000", "--storage-commit-window-us", "2000", "--json"});
  ::unsetenv("MSGSIM_BENCH_TRACE");
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  const nlohmann::json out = nlohmann::json::parse(ran.out);
  EXPECT_EQ(out["traffic"]["queue_linger_us"].get<double>(), 3000.0);
  EXPECT_EQ(out["traffic"]["queue_commit_window_us"].get<double>(), 0.0);
  EXPECT_EQ(out["traffic"]["storage_commit_window_us"].get<double>(), 2000.0);
  EXPECT_THAT(out["traffic"]["device_sessions"].get<std::string>(), ::testing::AnyOf("io_uring", "epoll"));
  EXPECT_EQ(out["traffic"]["in_flight_max"].get<uint64_t>(), 512u);
  const auto& rate = out["traffic"]["rates"].at(0);
  EXPECT_GT(rate["sent"].get<uint64_t>(), 0u);
  EXPECT_EQ(rate["delivered"].get<uint64_t>(), rate["sent"].get<uint64_t>());
  EXPECT_GE(rate["latency_p50_us"].get<double>(), 3000.0 + 2000.0);
  // The group commit's fdatasync distribution in the send window (what reports/live_twin draws
  // from): 1,001 evenly spaced quantiles, non-decreasing, the slowest a real duration (an
  // fdatasync takes more than a microsecond on any disk).
  const auto& group_commit = rate["group_commit"];
  const auto& fsync = group_commit["fsync_quantiles_us"];
  ASSERT_EQ(fsync.size(), 1001u) << group_commit.dump();
  for (size_t k = 1; k < fsync.size(); ++k) ASSERT_GE(fsync[k].get<double>(), fsync[k - 1].get<double>()) << k;
  EXPECT_GT(fsync.back().get<double>(), 1.0);
  // The histogram they come from: ascending [lower_us, upper_us, count] buckets.
  uint64_t fsyncs = 0;
  for (const auto& bucket : group_commit["fsync_buckets_us"]) {
    ASSERT_EQ(bucket.size(), 3u);
    EXPECT_LT(bucket[0].get<double>(), bucket[1].get<double>());
    fsyncs += bucket[2].get<uint64_t>();
  }
  EXPECT_GT(fsyncs, 0u);
  // How alike consecutive batches' fdatasyncs were: a second at 200 msg/s makes a few hundred
  // batches in a row (each message's two), enough pairs for their correlation.
  EXPECT_GE(group_commit["fsync_pairs"].get<uint64_t>(), 30u) << group_commit.dump();
  ASSERT_TRUE(group_commit.contains("fsync_lag1_log_correlation")) << group_commit.dump();
  EXPECT_GE(group_commit["fsync_lag1_log_correlation"].get<double>(), -1.0);
  EXPECT_LE(group_commit["fsync_lag1_log_correlation"].get<double>(), 1.0);
  // The send window's commits and the SQLite checkpoints among them (a few per thousand
  // commits: maybe none in one second), their durations a histogram of as many.
  EXPECT_GT(group_commit["commits"].get<uint64_t>(), 0u) << group_commit.dump();
  EXPECT_LE(group_commit["checkpoints"].get<uint64_t>(), group_commit["commits"].get<uint64_t>());
  uint64_t checkpoints = 0;
  for (const auto& bucket : group_commit["checkpoint_buckets_us"]) checkpoints += bucket.at(2).get<uint64_t>();
  EXPECT_EQ(checkpoints, group_commit["checkpoints"].get<uint64_t>());
  EXPECT_GE(group_commit["checkpoint_cpu_us_per_msg"].get<double>(), 0.0);
  // Each event loop's turns in the send window: at least one per delivered message (the
  // Deliver's read, the Send's read), the timed ones' CPU as a histogram (no more than the loop's
  // CPU), and the time waiting for a core (present whatever the load; zero on an idle machine).
  for (const char* name : {"server_loop", "client_loop"}) {
    const auto& loop = rate[name];
    ASSERT_TRUE(loop.is_object()) << name << " " << rate.dump();
    EXPECT_GE(loop["turns_per_msg"].get<double>(), 1.0) << name;
    EXPECT_GE(loop["runqueue_wait_us_per_msg"].get<double>(), 0.0) << name;
    EXPECT_GE(loop["involuntary_switches_per_s"].get<double>(), 0.0) << name;
    uint64_t turns = 0;
    double low_us = 0, high_us = 0;
    for (const auto& bucket : loop["turn_cpu_buckets_us"]) {
      ASSERT_EQ(bucket.size(), 3u);
      EXPECT_LE(bucket[0].get<double>(), bucket[1].get<double>());
      turns += bucket[2].get<uint64_t>();
      low_us += bucket[0].get<double>() * bucket[2].get<double>();
      high_us += bucket[1].get<double>() * bucket[2].get<double>();
    }
    // About one turn in 8 is timed (gaps of 1 to 15 turns); their CPU is part of the loop's.
    const double delivered = rate["delivered"].get<double>();
    const double all_turns = loop["turns_per_msg"].get<double>() * delivered;
    EXPECT_GE(static_cast<double>(turns), all_turns / 16) << name << " " << loop.dump();
    EXPECT_LE(static_cast<double>(turns), all_turns / 4) << name << " " << loop.dump();
    EXPECT_LE(low_us, loop["cpu_us_per_msg"].get<double>() * delivered * 1.05 + 100) << name << " " << loop.dump();
    EXPECT_GT(high_us, 0.0) << name;
  }
  const std::regex records(R"(records ([0-9.]+)/([0-9.]+))");
  int traced = 0;
  for (std::sregex_iterator it(ran.err.begin(), ran.err.end(), records), end; it != end; ++it) {
    ++traced;
    EXPECT_GE(std::stod((*it)[1].str()), 3.0) << it->str();
  }
  EXPECT_GT(traced, 0) << ran.err;
  const Ran help = msgsim({"live", "bench", "--help"});
  EXPECT_THAT(help.out, HasSubstr("--queue-commit-window-us FLOAT:FLOAT in [0 - 1e+06]=0\n"));
  EXPECT_THAT(help.out, HasSubstr("--queue-linger-us FLOAT:FLOAT in [0 - 1e+06]=0\n"));
}

// `live bench --server-loops`: with one loop and with two (the default: the chat server on the
// device loop, the nodes with databases on the store loop, frames handed between them), every
// message sent is acked and delivered once (the load process counts every Deliver by the message
// number in its body: a lost one shows as delivered < sent, a duplicate as `duplicated`). Each loop's figures are reported
// in server_loops (both loops did work: the Send is read on one, committed on the other) and
// server_loop is their sum, which is what `plan --live-json` charges its one-loop twin, saying so;
// a loop count the bench cannot run is refused, by the bench and by the plan.
TEST_F(CliTest, LiveBenchServerLoopsDeliverEveryMessageOnce) {
  for (const uint32_t loops : {1u, 2u}) {
    const Ran ran = msgsim({"live", "bench", "--idle", "0", "--rates", "300", "--pairs", "3", "--rate-duration-s", "1",
                            "--server-loops", std::to_string(loops), "--json"});
    ASSERT_EQ(ran.exit_code, 0) << ran.err;
    const nlohmann::json out = nlohmann::json::parse(ran.out);
    EXPECT_EQ(out["traffic"]["server_loops"].get<uint32_t>(), loops);
    const auto& rate = out["traffic"]["rates"].at(0);
    const uint64_t sent = rate["sent"].get<uint64_t>();
    EXPECT_GT(sent, 0u) << loops;
    EXPECT_EQ(rate["acked"].get<uint64_t>(), sent) << loops;
    EXPECT_EQ(rate["delivered"].get<uint64_t>(), sent) << loops;
    EXPECT_EQ(rate["duplicated"].get<uint64_t>(), 0u) << loops;
    const auto& each = rate["server_loops"];
    ASSERT_EQ(each.size(), loops) << rate.dump();
    double cpu_us = 0, turns = 0;
    for (const auto& loop : each) {
      EXPECT_GE(loop["turns_per_msg"].get<double>(), 1.0) << loop.dump();
      EXPECT_GT(loop["cpu_us_per_msg"].get<double>(), 0.0) << loop.dump();
      cpu_us += loop["cpu_us_per_msg"].get<double>();
      turns += loop["turns_per_msg"].get<double>();
    }
    EXPECT_EQ(each[0]["name"].get<std::string>(), loops == 1 ? "all" : "device");
    if (loops == 2) {
      EXPECT_EQ(each[1]["name"].get<std::string>(), "store");
    }
    EXPECT_NEAR(rate["server_loop"]["cpu_us_per_msg"].get<double>(), cpu_us, 1e-6 * cpu_us);
    EXPECT_NEAR(rate["server_loop"]["turns_per_msg"].get<double>(), turns, 1e-6 * turns);
    EXPECT_EQ(rate["server_loop_cpu_us_per_msg"].get<double>(), rate["server_loop"]["cpu_us_per_msg"].get<double>());
  }
  EXPECT_EQ(msgsim({"live", "bench", "--idle", "0", "--server-loops", "3"}).exit_code, 2);
  const std::string seed = MSGSIM_SOURCE_DIR "/workloads/seed.json";
  const std::string costs = MSGSIM_SOURCE_DIR "/reports/cost_table.json";
  const auto live_json = [&](const std::string& name, const std::string& loops) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << R"({"traffic": {"server_loops": )" << loops
                        << R"(, "rates": [{"offered_per_s": 500, "latency_p50_us": 1000, "latency_p99_us": 2000}]}})";
    return path;
  };
  const Ran two = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", live_json("two.json", "2"), "--out",
                          (dir_ / "p2").string()});
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_THAT(two.out, HasSubstr("The bench ran 2 server loops"));
  const Ran one = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", live_json("one.json", "1"), "--out",
                          (dir_ / "p1").string()});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_THAT(one.out, Not(HasSubstr("server loops")));
  const Ran three = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", live_json("three.json", "3"), "--out",
                            (dir_ / "p3").string()});
  EXPECT_EQ(three.exit_code, 2);
  EXPECT_THAT(three.err, HasSubstr("$.traffic.server_loops"));
}

// `plan --live-json`: the simulated twin of the live bench runs the queue with the batching
// delays the bench reports (traffic.queue_commit_window_us / queue_linger_us) and shows its files
// per group-commit batch next to the measured ones (group_commit.files_per_batch); a malformed
// value is an error naming the field.
TEST_F(CliTest, PlanTwinUsesTheBenchQueueBatchingAndShowsFilesPerBatch) {
  const std::string seed = MSGSIM_SOURCE_DIR "/workloads/seed.json";
  const std::string costs = MSGSIM_SOURCE_DIR "/reports/cost_table.json";
  const Ran ran = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json",
                          MSGSIM_SOURCE_DIR "/tests/data/live_bench_fixture.json", "--out", (dir_ / "report").string()});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  // The fixture predates the reported delays: the ChatTuning defaults it ran with.
  EXPECT_THAT(ran.out, HasSubstr("the queue's commit window 250 us and linger 1000 us and the storage's commit window 0 us"));
  EXPECT_THAT(ran.out, ::testing::ContainsRegex("files per batch, twin / live bench: [0-9.]+ / 1.90 at 500/s, [0-9.]+ / 1.80 at 1000/s"));
  const std::string zero = (dir_ / "zero.json").string();
  std::ofstream(zero) << R"({"traffic": {"queue_commit_window_us": 0, "queue_linger_us": 0, "storage_commit_window_us": -1,)"
                      << R"( "rates": [{"offered_per_s": 500, "latency_p50_us": 1, "latency_p99_us": 2}]}})";
  const Ran zeroed = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", zero, "--out", (dir_ / "r0").string()});
  ASSERT_EQ(zeroed.exit_code, 0) << zeroed.err;
  EXPECT_THAT(zeroed.out, HasSubstr("the queue's commit window 0 us and linger 0 us and the storage's commit window none"));
  EXPECT_THAT(zeroed.out, HasSubstr(" / not measured at 500/s"));
  EXPECT_THAT(zeroed.out, HasSubstr("of CPU per message (the cost table's"));
  // With the bench's measured loop CPU per message, the twin charges that instead.
  const std::string cpu = (dir_ / "cpu.json").string();
  std::ofstream(cpu) << R"({"traffic": {"rates": [{"offered_per_s": 500, "latency_p50_us": 1, "latency_p99_us": 2,)"
                     << R"( "server_loop_cpu_us_per_msg": 123.4}]}})";
  const Ran measured = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", cpu, "--out", (dir_ / "rc").string()});
  ASSERT_EQ(measured.exit_code, 0) << measured.err;
  EXPECT_THAT(measured.out, HasSubstr("event-loop thread (123 us at 500/s; the cost table says"));
  EXPECT_THAT(measured.out, Not(HasSubstr("scaled to the mean fdatasync")));
  const std::string fsync = (dir_ / "fsync.json").string();
  std::ofstream(fsync) << R"({"traffic": {"rates": [{"offered_per_s": 500, "latency_p50_us": 1, "latency_p99_us": 2,)"
                       << R"( "group_commit": {"files_per_batch": 1.2, "fsync_mean_us": 456.7}}]}})";
  const Ran scaled = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", fsync, "--out", (dir_ / "rf").string()});
  ASSERT_EQ(scaled.exit_code, 0) << scaled.err;
  EXPECT_THAT(scaled.out, HasSubstr("scaled to the mean fdatasync the bench's group commit measured during each rate: 457 us at 500/s"));
  const std::string negative = (dir_ / "negative.json").string();
  std::ofstream(negative) << R"({"traffic": {"queue_linger_us": -1, "rates": []}})";
  const Ran refused_linger =
      msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", negative, "--out", (dir_ / "rn").string()});
  EXPECT_EQ(refused_linger.exit_code, 2);
  EXPECT_THAT(refused_linger.err, HasSubstr("$.traffic.queue_linger_us"));
  // Where the bench measured how alike consecutive fdatasyncs were, the twin draws them so.
  const std::string alike = (dir_ / "alike.json").string();
  std::ofstream(alike) << R"({"traffic": {"rates": [{"offered_per_s": 500, "latency_p50_us": 1, "latency_p99_us": 2,)"
                       << R"( "group_commit": {"files_per_batch": 1, "fsync_quantiles_us": [100, 200, 4000],)"
                       << R"( "fsync_lag1_log_correlation": 0.4}}]}})";
  const Ran correlated = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", alike, "--out", (dir_ / "ra").string()});
  ASSERT_EQ(correlated.exit_code, 0) << correlated.err;
  EXPECT_THAT(correlated.out, HasSubstr("p50 200 / p95 4000 / max 4000 us, consecutive ones drawn correlated at 0.40 at 500/s"));
  std::ofstream(alike) << R"({"traffic": {"rates": [{"offered_per_s": 500, "latency_p50_us": 1, "latency_p99_us": 2,)"
                       << R"( "group_commit": {"files_per_batch": 1, "fsync_lag1_log_correlation": 1.5}}]}})";
  const Ran refused_alike = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", alike, "--out", (dir_ / "ra").string()});
  EXPECT_EQ(refused_alike.exit_code, 2);
  EXPECT_THAT(refused_alike.err, HasSubstr("$.traffic.rates[0].group_commit.fsync_lag1_log_correlation"));
  const std::string window = (dir_ / "window.json").string();
  std::ofstream(window) << R"({"traffic": {"storage_commit_window_us": "soon", "rates": []}})";
  const Ran refused_window =
      msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", window, "--out", (dir_ / "rw").string()});
  EXPECT_EQ(refused_window.exit_code, 2);
  EXPECT_THAT(refused_window.err, HasSubstr("$.traffic.storage_commit_window_us"));
  const std::string bad = (dir_ / "bad.json").string();
  std::ofstream(bad) << R"({"traffic": {"rates": [{"offered_per_s": 500, "latency_p50_us": 1, "latency_p99_us": 2,)"
                     << R"( "group_commit": {"files_per_batch": "two"}}]}})";
  const Ran refused = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", bad, "--out", (dir_ / "r2").string()});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("$.traffic.rates[0].group_commit.files_per_batch"), std::string::npos) << refused.err;
}

// A `live bench --json` result of one rate, 500 msg/s with the queue's delays 0, written to
// dir/name: its group_commit holds files_per_batch 1, fsync_mean_us 400 and `group_commit_fields`
// (", \"key\": value" each).
std::string write_live_rate(const std::filesystem::path& dir, const std::string& name, const std::string& group_commit_fields) {
  const std::string path = (dir / name).string();
  std::ofstream(path) << R"({"traffic": {"queue_commit_window_us": 0, "queue_linger_us": 0, "rates": [{"offered_per_s": 500,)"
                      << R"( "latency_p50_us": 1000, "latency_p99_us": 2000, "group_commit": {"files_per_batch": 1,)"
                      << R"( "fsync_mean_us": 400)" << group_commit_fields << "}}]}}";
  return path;
}

// The twin's predicted p50 and p99 (ms) in `plan`'s model-against-live table, at 500 msg/s.
std::pair<double, double> predicted_at_500(const std::string& out) {
  const size_t row = out.find("| 500 | ");
  EXPECT_NE(row, std::string::npos) << out;
  if (row == std::string::npos) return {0, 0};
  double p50 = 0, measured_p50 = 0, p99 = 0;
  char error[16];
  EXPECT_EQ(std::sscanf(out.c_str() + row, "| 500 | %lf ms | %lf ms | %15s %% | %lf ms", &p50, &measured_p50, error, &p99), 4) << out;
  return {p50, p99};
}

// `plan --live-json` with the bench's own fdatasync distribution (group_commit.fsync_quantiles_us,
// evenly spaced quantiles): the twin draws from it instead of the calibrated one scaled to the
// mean, so a tail the bench measured (here its slowest 1-2 % of fsyncs, up to 40 ms) reaches the predicted p99
// but hardly the p50; a malformed array is an error naming the field.
TEST_F(CliTest, PlanTwinDrawsFromTheBenchFsyncDistribution) {
  const std::string seed = MSGSIM_SOURCE_DIR "/workloads/seed.json";
  const std::string costs = MSGSIM_SOURCE_DIR "/reports/cost_table.json";
  const auto write_rate = [&](const std::string& name, const std::string& fields) { return write_live_rate(dir_, name, fields); };
  // 101 quantiles: 98 % of fsyncs 100-198 us, the 99th percentile 20 ms, the slowest 40 ms.
  std::string tail = R"(, "fsync_quantiles_us": [)";
  for (int k = 0; k <= 100; ++k) tail += (k ? ", " : "") + std::to_string(k < 99 ? 100 + k : k == 99 ? 20000 : 40000);
  tail += "]";
  const Ran scaled = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", write_rate("mean.json", ""), "--out",
                             (dir_ / "rm").string()});
  ASSERT_EQ(scaled.exit_code, 0) << scaled.err;
  EXPECT_THAT(scaled.out, Not(HasSubstr("drawn from that instead")));
  const Ran drawn = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", write_rate("tail.json", tail), "--out",
                            (dir_ / "rt").string()});
  ASSERT_EQ(drawn.exit_code, 0) << drawn.err;
  EXPECT_THAT(drawn.out, HasSubstr("drawn from that instead: p50 150 / p95 195 / max 40000 us at 500/s"));
  const auto [scaled_p50, scaled_p99] = predicted_at_500(scaled.out);
  const auto [drawn_p50, drawn_p99] = predicted_at_500(drawn.out);
  EXPECT_GT(drawn_p99, 10.0) << drawn.out;     // the fsyncs of up to 40 ms hold the slowest 1 %
  EXPECT_LT(scaled_p99, 5.0) << scaled.out;    // a 400 us mean with the calibrated shape has no such tail
  EXPECT_LT(drawn_p50, scaled_p50 + 1.0) << drawn.out;
  const Ran refused = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json",
                              write_rate("bad.json", R"(, "fsync_quantiles_us": [100, 50])"), "--out", (dir_ / "rb").string()});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_THAT(refused.err, HasSubstr("$.traffic.rates[0].group_commit.fsync_quantiles_us[1]"));
  // The histogram itself (group_commit.fsync_buckets_us) wins over the quantiles: one 40 ms
  // fsync among 10,000 is its own 0.01 %, too rare to hold the slowest 1 % of messages.
  const std::string buckets = tail + R"(, "fsync_buckets_us": [[100, 200, 9999], [40000, 41000, 1]])";
  const Ran histogram = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", write_rate("buckets.json", buckets),
                                "--out", (dir_ / "rh").string()});
  ASSERT_EQ(histogram.exit_code, 0) << histogram.err;
  EXPECT_THAT(histogram.out, HasSubstr("drawn from that instead: p50 150 / p95 195 / max 41000 us at 500/s"));
  EXPECT_LT(predicted_at_500(histogram.out).second, 5.0) << histogram.out;
  const Ran refused_buckets = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json",
                                      write_rate("bad_buckets.json", R"(, "fsync_buckets_us": [[100, 200, 5], [150, 300, 1]])"),
                                      "--out", (dir_ / "rbb").string()});
  EXPECT_EQ(refused_buckets.exit_code, 2);
  EXPECT_THAT(refused_buckets.err, HasSubstr("$.traffic.rates[0].group_commit.fsync_buckets_us[1]"));
}

// `plan --live-json` with the SQLite checkpoints the bench measured on its server loop
// (group_commit.commits, checkpoints, checkpoint_buckets_us): a twin commit checkpoints as often
// and stalls the loop as long, so 1 % of commits stalling 3 ms reach the predicted p99 but hardly
// the p50; the three fields come together and agree, or the input is refused naming the field.
TEST_F(CliTest, PlanTwinStallsForTheBenchCheckpoints) {
  const std::string seed = MSGSIM_SOURCE_DIR "/workloads/seed.json";
  const std::string costs = MSGSIM_SOURCE_DIR "/reports/cost_table.json";
  const auto write_rate = [&](const std::string& name, const std::string& fields) { return write_live_rate(dir_, name, fields); };
  const auto plan = [&](const std::string& json, const std::string& out) {
    return msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", json, "--out", (dir_ / out).string()});
  };
  const Ran none = plan(write_rate("none.json", ""), "rn");
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_THAT(none.out, Not(HasSubstr("SQLite's checkpoints")));
  const Ran stalled = plan(write_rate("stalls.json", R"(, "commits": 1000, "checkpoints": 10, "checkpoint_cpu_us_per_msg": 2,)"
                                                     R"( "checkpoint_buckets_us": [[3000, 3000, 10]])"),
                           "rs");
  ASSERT_EQ(stalled.exit_code, 0) << stalled.err;
  EXPECT_THAT(stalled.out, HasSubstr("(10.0 per 1,000 commits, p50 3.00 / max 3.00 ms, 2.0 us of loop CPU a message at 500/s)"));
  const auto [none_p50, none_p99] = predicted_at_500(none.out);
  const auto [stalled_p50, stalled_p99] = predicted_at_500(stalled.out);
  EXPECT_GT(stalled_p99, none_p99 + 1.0) << stalled.out;
  EXPECT_LT(stalled_p50, none_p50 + 0.3) << stalled.out;
  // What the stalls cost: the twin's p99 with the checkpoints off the loop, against the one shown.
  const std::string what_if = "the twin's p99 would be ";
  const size_t at = stalled.out.find(what_if);
  ASSERT_NE(at, std::string::npos) << stalled.out;
  double off_loop_p99 = 0, shown_p99 = 0;
  ASSERT_EQ(std::sscanf(stalled.out.c_str() + at + what_if.size(), "%lf instead of %lf ms at 500/s", &off_loop_p99, &shown_p99), 2);
  EXPECT_DOUBLE_EQ(shown_p99, stalled_p99);
  EXPECT_LT(off_loop_p99, stalled_p99 - 1.0) << stalled.out;
  for (const auto& [name, fields, field] :
       {std::tuple<const char*, const char*, const char*>{"more.json", R"(, "commits": 5, "checkpoints": 6, "checkpoint_buckets_us": [[1, 2, 6]])",
                                                         "group_commit.checkpoints: 6 is more than the 5 commits"},
        {"count.json", R"(, "commits": 50, "checkpoints": 6, "checkpoint_buckets_us": [[1, 2, 5]])",
         "group_commit.checkpoint_buckets_us: holds 5 checkpoints, checkpoints says 6"},
        {"alone.json", R"(, "checkpoints": 6)", "group_commit.commits: expected an integer"},
        {"nobuckets.json", R"(, "commits": 50, "checkpoints": 6)", "group_commit.checkpoint_buckets_us: expected with commits"}}) {
    const Ran refused = plan(write_rate(name, fields), std::string("r") + name);
    EXPECT_EQ(refused.exit_code, 2) << name;
    EXPECT_THAT(refused.err, HasSubstr(std::string("$.traffic.rates[0].") + field)) << name;
  }
}

// `plan --live-json` with the event loops' turns the bench measured (server_loop, client_loop):
// the twin draws each stage's CPU as turns of that shape, so a rare long turn (here 1 % of the
// server's turns take 3 ms, so about one message in 10 meets one) reaches the predicted p99 while the mean per message, and so the p50,
// hardly moves; the note says what it drew from; a malformed loop is an error naming the field.
TEST_F(CliTest, PlanTwinDrawsTheLoopsTurns) {
  const std::string seed = MSGSIM_SOURCE_DIR "/workloads/seed.json";
  const std::string costs = MSGSIM_SOURCE_DIR "/reports/cost_table.json";
  const auto write_rate = [&](const std::string& name, const std::string& loops) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << R"({"traffic": {"queue_commit_window_us": 0, "queue_linger_us": 0, "rates": [{"offered_per_s": 500,)"
                        << R"( "latency_p50_us": 1000, "latency_p99_us": 2000, "server_loop_cpu_us_per_msg": 200,)"
                        << R"( "group_commit": {"files_per_batch": 1, "fsync_buckets_us": [[100, 110, 1000]]})" << loops << "}]}}";
    return path;
  };
  const Ran mean = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", write_rate("mean.json", ""), "--out",
                           (dir_ / "lm").string()});
  ASSERT_EQ(mean.exit_code, 0) << mean.err;
  EXPECT_THAT(mean.out, HasSubstr("Loaders' CPU is not charged"));
  // 10 turns a message; 99 % of turns 5-6 us, 1 % 3 ms: the mean turn ~35 us, scaled to 20 us
  // so that 10 of them make the measured 200 us (a long turn ~1.7 ms, in ~10 % of messages).
  const std::string server = R"(, "server_loop": {"cpu_us_per_msg": 200, "turns_per_msg": 10,)"
                             R"( "turn_cpu_buckets_us": [[5, 6, 9900], [3000, 3001, 100]]})";
  const Ran drawn = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", write_rate("turns.json", server), "--out",
                            (dir_ / "lt").string()});
  ASSERT_EQ(drawn.exit_code, 0) << drawn.err;
  EXPECT_THAT(drawn.out, HasSubstr("server 10.0 turns a message, turn p50 5.5 / p99 "));
  EXPECT_THAT(drawn.out, HasSubstr(" / max 3001 us at 500/s"));
  const auto [mean_p50, mean_p99] = predicted_at_500(mean.out);
  const auto [drawn_p50, drawn_p99] = predicted_at_500(drawn.out);
  EXPECT_GT(drawn_p99, mean_p99 + 0.5) << drawn.out << mean.out;
  EXPECT_LT(drawn_p50, mean_p50 + 0.2) << drawn.out << mean.out;
  // The client loop adds its own CPU in front of each latency sample.
  const std::string client = server + R"(, "client_loop": {"cpu_us_per_msg": 300, "turns_per_msg": 3,)"
                                      R"( "turn_cpu_buckets_us": [[100, 101, 3000]]})";
  const Ran both = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", write_rate("both.json", client), "--out",
                           (dir_ / "lb").string()});
  ASSERT_EQ(both.exit_code, 0) << both.err;
  EXPECT_THAT(both.out, HasSubstr("client 3.0 turns a message"));
  // The loops' preemptions: 400 involuntary switches a second and 200 us a message waiting for a
  // core at 500 msg/s: spells of 250 us; a tail the loops' own turns do not have.
  const std::string preempted = R"(, "server_loop": {"cpu_us_per_msg": 200, "turns_per_msg": 20,)"
                                R"( "turn_cpu_buckets_us": [[9, 11, 1000]], "runqueue_wait_us_per_msg": 200,)"
                                R"( "involuntary_switches_per_s": 400})";
  const Ran spells = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json", write_rate("spells.json", preempted),
                             "--out", (dir_ / "ls").string()});
  ASSERT_EQ(spells.exit_code, 0) << spells.err;
  EXPECT_THAT(spells.out, HasSubstr("preempted 400 times a second for 250 us on average"));
  const Ran steady = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json",
                             write_rate("steady.json", R"(, "server_loop": {"cpu_us_per_msg": 200, "turns_per_msg": 20,)"
                                                       R"( "turn_cpu_buckets_us": [[9, 11, 1000]]})"),
                             "--out", (dir_ / "lst").string()});
  ASSERT_EQ(steady.exit_code, 0) << steady.err;
  EXPECT_GT(predicted_at_500(spells.out).second, predicted_at_500(steady.out).second + 0.2) << spells.out << steady.out;
  const Ran refused_switches = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json",
                                       write_rate("bad_switches.json", R"(, "server_loop": {"cpu_us_per_msg": 200, "turns_per_msg": 2,)"
                                                                       R"( "turn_cpu_buckets_us": [[9, 11, 1]], "involuntary_switches_per_s": "x"})"),
                                       "--out", (dir_ / "lrs").string()});
  EXPECT_EQ(refused_switches.exit_code, 2);
  EXPECT_THAT(refused_switches.err, HasSubstr("$.traffic.rates[0].server_loop.involuntary_switches_per_s"));
  EXPECT_GT(predicted_at_500(both.out).first, drawn_p50 + 0.1) << both.out;
  const Ran refused = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json",
                              write_rate("bad.json", R"(, "server_loop": {"cpu_us_per_msg": 200, "turns_per_msg": -1,)"
                                                     R"( "turn_cpu_buckets_us": []})"),
                              "--out", (dir_ / "lr").string()});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_THAT(refused.err, HasSubstr("$.traffic.rates[0].server_loop.turns_per_msg"));
  const Ran refused_buckets = msgsim({"plan", seed, "--cost-table", costs, "--small", "--live-json",
                                      write_rate("bad_turns.json", R"(, "client_loop": {"cpu_us_per_msg": 200, "turns_per_msg": 2,)"
                                                                   R"( "turn_cpu_buckets_us": [[5, 4, 1]]})"),
                                      "--out", (dir_ / "lrb").string()});
  EXPECT_EQ(refused_buckets.exit_code, 2);
  EXPECT_THAT(refused_buckets.err, HasSubstr("$.traffic.rates[0].client_loop.turn_cpu_buckets_us[0]"));
}

// `msgsim shrink`: a planted bug's failing seed becomes a small scenario file that fails on its
// own under `msgsim run` (no --bug, no --seed: both are inside).
TEST_F(CliTest, ShrinkWritesASmallScenarioThatFailsOnItsOwn) {
  const std::string faulty = MSGSIM_SOURCE_DIR "/scenarios/chat-faulty.json";
  const Ran original = msgsim({"run", faulty, "--seed", "1", "--bug", "leave-one-late"});
  ASSERT_EQ(original.exit_code, 1) << original.out << original.err;
  // With E2EE the leaver cannot open what reaches it late: a decrypt error, not a shown message.
  ASSERT_THAT(original.out, HasSubstr("decrypt: VIOLATED"));

  const std::string out = (dir_ / "shrunk.json").string();
  const Ran shrunk = msgsim({"shrink", faulty, "--seed", "1", "--bug", "leave-one-late", "--check", "decrypt",
                             "--max-runs", "60", "-o", out});
  ASSERT_EQ(shrunk.exit_code, 0) << shrunk.out << shrunk.err;
  EXPECT_THAT(shrunk.out, HasSubstr("run 1: fails "));
  EXPECT_THAT(shrunk.out, HasSubstr("fails:  decrypt\n"));
  const std::string after = line_after(shrunk.out, "after:  ");
  std::smatch sizes;
  ASSERT_TRUE(std::regex_search(after, sizes, std::regex("^([0-9]+) faults, ([0-9]+) clients"))) << after;
  EXPECT_LE(std::stoi(sizes[1]), 3);
  EXPECT_LE(std::stoi(sizes[2]), 10);

  const Ran alone = msgsim({"run", out});
  EXPECT_EQ(alone.exit_code, 1) << alone.out << alone.err;
  EXPECT_THAT(alone.out, HasSubstr("decrypt: VIOLATED"));
  EXPECT_THAT(alone.out, HasSubstr(", seed 1\n"));
  EXPECT_THAT(read_file(out), HasSubstr("\"leave-one-late\""));

  const Ran passing = msgsim({"shrink", faulty, "--seed", "1", "-o", out});
  EXPECT_EQ(passing.exit_code, 2);
  EXPECT_THAT(passing.err, HasSubstr("passes every check: there is no failure to shrink"));
}

}  // namespace
