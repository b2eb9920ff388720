#include "sim/scenario.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "sim/json_schema.h"
#include "sim/scenario_schema.h"  // generated from scenarios/schema.json

namespace msgsim::sim {

using nlohmann::json;

namespace {

constexpr size_t kSchemaErrorsReportedMax = 5;
constexpr int64_t kNsPerSecond = 1'000'000'000;
constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kNsPerUs = 1'000;

struct FaultKindName {
  FaultKind kind;
  std::string_view name;
};
constexpr FaultKindName kFaultKindNames[] = {
    {FaultKind::crash, "crash"},
    {FaultKind::shutdown, "shutdown"},
    {FaultKind::host_loss, "host-loss"},
    {FaultKind::partition, "partition"},
    {FaultKind::isolate, "isolate"},
    {FaultKind::region_split, "region-split"},
    {FaultKind::latency_spike, "latency-spike"},
    {FaultKind::clock, "clock"},
    {FaultKind::slow, "slow"},
    {FaultKind::disk, "disk"},
};

// ---------------------------------------------------------------------------------------------
// Parsing the text.

// 1-based line and column (in bytes) of the byte at `offset`.
std::pair<size_t, size_t> line_and_column(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  size_t line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return {line, offset - line_start + 1};
}

// The offset of the first bracket that opens nesting level `depth_max + 1`, if any. Brackets
// inside strings do not count. This runs before the parser, so a deeply nested input costs a
// linear scan and no memory.
std::optional<size_t> first_too_deep(std::string_view text, size_t depth_max) {
  size_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > depth_max) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::nullopt;
}

// nlohmann's messages look like "[json.exception.parse_error.101] parse error at line 1,
// column 2: syntax error while parsing value - invalid literal; last read: 'x'". The position
// is reported separately, so keep only the reason, with unprintable bytes replaced.
std::string parse_error_reason(std::string_view what) {
  if (!what.empty() && what.front() == '[') {
    const size_t close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  if (what.starts_with("parse error")) {
    const size_t colon = what.find(": ");
    if (colon != std::string_view::npos) what.remove_prefix(colon + 2);
  }
  std::string reason;
  for (const char c : what.substr(0, 300)) {
    const auto byte = static_cast<unsigned char>(c);
    reason += byte >= 0x20 && byte < 0x7f ? c : '?';
  }
  return reason;
}

// The DOM builder, with the error position kept (nlohmann's out_of_range errors, such as a
// number too large for a double, carry no position in their message), and duplicate keys
// rejected: nlohmann would silently keep the last one, so `"duration_s": 30, "duration_s": 60`
// would mean 60 without a word. The parser tracks where it is (the JSON path) for that message.
class PositionedDomParser : public nlohmann::detail::json_sax_dom_parser<json> {
  using Base = nlohmann::detail::json_sax_dom_parser<json>;

 public:
  explicit PositionedDomParser(json& root) : Base(root, /*allow_exceptions=*/false) {}

  bool null() { return on_value() && Base::null(); }
  bool boolean(bool value) { return on_value() && Base::boolean(value); }
  bool number_integer(json::number_integer_t value) { return on_value() && Base::number_integer(value); }
  bool number_unsigned(json::number_unsigned_t value) { return on_value() && Base::number_unsigned(value); }
  bool number_float(json::number_float_t value, const std::string& text) {
    return on_value() && Base::number_float(value, text);
  }
  bool string(std::string& value) { return on_value() && Base::string(value); }
  bool binary(json::binary_t& value) { return on_value() && Base::binary(value); }
  bool start_object(std::size_t size) {
    if (!on_value()) return false;
    frames_.emplace_back();
    return Base::start_object(size);
  }
  bool end_object() {
    frames_.pop_back();
    return Base::end_object();
  }
  bool start_array(std::size_t size) {
    if (!on_value()) return false;
    frames_.emplace_back();
    frames_.back().is_array = true;
    return Base::start_array(size);
  }
  bool end_array() {
    frames_.pop_back();
    return Base::end_array();
  }
  bool key(std::string& name) {
    Frame& frame = frames_.back();
    if (!frame.keys.insert(name).second) {
      duplicate_path_ = json_path_member(path_of(frames_.size() - 1), name);
      return false;
    }
    frame.key = name;
    return Base::key(name);
  }

  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& error) {
    failed_ = true;
    position_ = position;
    reason_ = parse_error_reason(error.what());
    return false;
  }

  bool failed() const { return failed_; }
  // nlohmann counts the characters read, the bad one included.
  size_t error_offset() const { return position_ > 0 ? position_ - 1 : 0; }
  const std::string& reason() const { return reason_; }
  // The path of a key given twice, if parsing stopped at one.
  const std::optional<std::string>& duplicate_path() const { return duplicate_path_; }

 private:
  struct Frame {
    bool is_array = false;
    size_t next_index = 0;  // arrays: the index of the next element
    std::string key;        // objects: the key of the current member
    std::set<std::string, std::less<>> keys;
  };

  // A value starts: inside an array, it takes the next index.
  bool on_value() {
    if (!frames_.empty() && frames_.back().is_array) ++frames_.back().next_index;
    return true;
  }

  // The path of the container at frames_[depth].
  std::string path_of(size_t depth) const {
    std::string path = "$";
    for (size_t i = 1; i <= depth; ++i) {
      const Frame& parent = frames_[i - 1];
      path = parent.is_array ? json_path_index(path, parent.next_index - 1) : json_path_member(path, parent.key);
    }
    return path;
  }

  std::vector<Frame> frames_;  // depth is bounded by kScenarioJsonDepthMax, checked before parsing
  bool failed_ = false;
  size_t position_ = 0;
  std::string reason_;
  std::optional<std::string> duplicate_path_;
};

Result<json> parse_json(std::string_view text, const std::string& file) {
  auto malformed = [&](size_t offset, const std::string& reason) -> Result<json> {
    const auto [line, column] = line_and_column(text, offset);
    return make_error(ErrorCode::bad_input, file + ":" + std::to_string(line) + ":" + std::to_string(column) +
                                                ": malformed JSON: " + reason);
  };
  if (text.size() > kScenarioBytesMax) {
    return make_error(ErrorCode::bad_input, file + ": $: expected a scenario of at most " +
                                                std::to_string(kScenarioBytesMax) + " bytes, got " +
                                                std::to_string(text.size()));
  }
  if (const auto deep = first_too_deep(text, kScenarioJsonDepthMax)) {
    return malformed(*deep, "nested deeper than " + std::to_string(kScenarioJsonDepthMax) + " levels");
  }
  json root;
  PositionedDomParser parser(root);
  bool ok = false;
  try {
    ok = json::sax_parse(text, &parser, json::input_format_t::json, /*strict=*/true,
                         /*ignore_comments=*/false);
  } catch (const std::exception& error) {
    // The parser reports through parse_error with exceptions off; this is for allocation
    // failures and the like.
    return malformed(0, parse_error_reason(error.what()));
  }
  if (parser.duplicate_path()) {
    return make_error(ErrorCode::bad_input,
                      file + ": " + *parser.duplicate_path() + ": expected each key once in an object, got it again");
  }
  if (!ok || parser.failed()) {
    return malformed(parser.error_offset(), parser.failed() ? parser.reason() : "not a JSON document");
  }
  return root;
}

const JsonSchema& scenario_schema() {
  static const JsonSchema schema = [] {
    json document = json::parse(kScenarioSchemaJson, nullptr, /*allow_exceptions=*/false);
    MSGSIM_ASSERT(!document.is_discarded(), "the embedded scenarios/schema.json is not JSON");
    Result<JsonSchema> compiled = JsonSchema::compile(std::move(document));
    MSGSIM_ASSERT(compiled.ok(), "the embedded scenarios/schema.json: " +
                                     (compiled.ok() ? std::string() : compiled.error().message));
    return std::move(compiled).value();
  }();
  return schema;
}

// ---------------------------------------------------------------------------------------------
// Reading the validated document. The schema has checked the shape already; every reader
// still checks the type it needs, so a gap between the schema and this code is an error
// message, never undefined behaviour.

// A problem found while reading; thrown inside this file only and turned into an Error value by
// load_scenario_text.
struct ScenarioProblem {
  std::string path;
  std::string expected;
  std::string got;
};

[[noreturn]] void problem(std::string path, std::string expected, std::string got) {
  throw ScenarioProblem{std::move(path), std::move(expected), std::move(got)};
}

std::string quote_text(std::string_view text) { return describe_json_value(json(std::string(text))); }

std::string join_quoted(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ", ";
    out += quote_text(names[i]);
  }
  return out;
}

const json* member(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const json& required_member(const json& object, std::string_view key, const std::string& path) {
  const json* value = member(object, key);
  if (value == nullptr) problem(json_path_member(path, key), "a required field", "nothing");
  return *value;
}

const json& object_at(const json& value, const std::string& path) {
  if (!value.is_object()) problem(path, "an object", describe_json_value(value));
  return value;
}

const json& array_at(const json& value, const std::string& path) {
  if (!value.is_array()) problem(path, "an array", describe_json_value(value));
  return value;
}

std::string string_at(const json& value, const std::string& path) {
  if (!value.is_string()) problem(path, "a string", describe_json_value(value));
  return value.get<std::string>();
}

bool bool_at(const json& value, const std::string& path) {
  if (!value.is_boolean()) problem(path, "true or false", describe_json_value(value));
  return value.get<bool>();
}

double number_at(const json& value, const std::string& path) {
  if (!value.is_number()) problem(path, "a number", describe_json_value(value));
  if (value.is_number_unsigned()) return static_cast<double>(value.get<uint64_t>());
  if (value.is_number_integer()) return static_cast<double>(value.get<int64_t>());
  return value.get<double>();
}

int64_t integer_at(const json& value, const std::string& path, int64_t min, int64_t max) {
  const std::string expected = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  if (value.is_number_unsigned()) {
    const uint64_t x = value.get<uint64_t>();
    if (x > static_cast<uint64_t>(max)) problem(path, expected, describe_json_value(value));
    return static_cast<int64_t>(x);
  }
  if (value.is_number_integer()) {
    const int64_t x = value.get<int64_t>();
    if (x < min || x > max) problem(path, expected, describe_json_value(value));
    return x;
  }
  const double x = number_at(value, path);
  // Doubles are exact integers up to 2^53; bounds used here are far below it.
  if (!(std::trunc(x) == x) || x < static_cast<double>(min) || x > static_cast<double>(max)) {
    problem(path, expected, describe_json_value(value));
  }
  return static_cast<int64_t>(x);
}

uint64_t u64_at(const json& value, const std::string& path) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) return static_cast<uint64_t>(value.get<int64_t>());
  const std::string expected = "an integer from 0 to 18446744073709551615";
  if (!value.is_number_float()) problem(path, expected, describe_json_value(value));
  const double x = value.get<double>();
  if (!(std::trunc(x) == x) || x < 0 || x >= 18446744073709551616.0) problem(path, expected, describe_json_value(value));
  return static_cast<uint64_t>(x);
}

// A time in `unit`s (s, ms, us) as nanoseconds. |value| <= 10^18 ns keeps every sum of a few
// times inside int64. The multiplication and rounding are exact IEEE operations, so the result
// is the same on every machine.
int64_t time_ns_at(const json& value, const std::string& path, int64_t ns_per_unit, std::string_view unit,
                   bool allow_negative = false) {
  const double units = number_at(value, path);
  const double max_units = static_cast<double>(kScenarioTimeMaxNs / ns_per_unit);
  if (!std::isfinite(units) || std::fabs(units) > max_units) {
    problem(path,
            "a time of at most " + format_json_number(json(max_units)) + " " + std::string(unit) +
                " (times are int64 nanoseconds)",
            describe_json_value(value));
  }
  if (!allow_negative && units < 0) problem(path, "a time >= 0", describe_json_value(value));
  return static_cast<int64_t>(std::llround(units * static_cast<double>(ns_per_unit)));
}

// A time that must be > 0 (a period, a timeout, a duration).
int64_t positive_time_ns_at(const json& value, const std::string& path, int64_t ns_per_unit, std::string_view unit) {
  const int64_t ns = time_ns_at(value, path, ns_per_unit, unit);
  if (ns <= 0) problem(path, "a time > 0 (at least 1 ns)", describe_json_value(value));
  return ns;
}

// Reads one validated document into a Scenario.
class ScenarioReader {
 public:
  explicit ScenarioReader(Scenario& out) : out_(out) {}

  void read(const json& root) {
    object_at(root, "$");
    out_.name = string_at(required_member(root, "name", "$"), "$.name");
    if (const json* v = member(root, "description")) out_.description = string_at(*v, "$.description");
    out_.system = string_at(required_member(root, "system", "$"), "$.system");
    roles_ = system_roles(out_.system);
    if (roles_.empty()) problem("$.system", "\"ledger\" or \"chat\"", quote_text(out_.system));
    if (const json* v = member(root, "seed")) out_.seed = u64_at(*v, "$.seed");
    out_.duration_ns = positive_time_ns_at(required_member(root, "duration_s", "$"), "$.duration_s", kNsPerSecond, "s");
    if (const json* v = member(root, "quiescence_s")) {
      out_.quiescence_ns = time_ns_at(*v, "$.quiescence_s", kNsPerSecond, "s");
    }
    if (const json* v = member(root, "liveness_s")) {
      out_.liveness_ns = positive_time_ns_at(*v, "$.liveness_s", kNsPerSecond, "s");
    }
    read_topology(object_at(required_member(root, "topology", "$"), "$.topology"));
    static const json empty_object = json::object();
    const json* network = member(root, "network");
    read_network(network ? object_at(*network, "$.network") : empty_object);
    if (const json* workload = member(root, "workload")) read_workload(object_at(*workload, "$.workload"));
    if (const json* faults = member(root, "faults")) read_faults(array_at(*faults, "$.faults"));
    if (const json* nemesis = member(root, "nemesis")) read_nemesis(object_at(*nemesis, "$.nemesis"));
    if (const json* checks = member(root, "checks")) read_checks(object_at(*checks, "$.checks"));
    if (const json* bugs = member(root, "bugs")) read_bugs(array_at(*bugs, "$.bugs"));
    if (out_.system == "chat") {
      const size_t devices = out_.nodes_with_role("device").size();
      if (devices % out_.chat.devices_per_user != 0) {
        problem("$.workload.chat.devices_per_user",
                "a divisor of the number of device nodes (" + std::to_string(devices) + ")",
                std::to_string(out_.chat.devices_per_user));
      }
    }
  }

 private:
  struct Group {
    std::string name;
    uint32_t first = 0;  // index of NAME-1
    uint32_t count = 0;
  };

  std::optional<uint32_t> region_index(std::string_view name) const {
    for (size_t i = 0; i < out_.regions.size(); ++i) {
      if (out_.regions[i] == name) return static_cast<uint32_t>(i);
    }
    return std::nullopt;
  }

  std::string regions_phrase() const { return "one of the scenario's regions (" + join_quoted(out_.regions) + ")"; }

  uint32_t region_at(const json& value, const std::string& path) const {
    const std::string name = string_at(value, path);
    const auto index = region_index(name);
    if (!index) problem(path, regions_phrase(), quote_text(name));
    return *index;
  }

  void read_topology(const json& topology) {
    const json& regions = array_at(required_member(topology, "regions", "$.topology"), "$.topology.regions");
    if (regions.empty()) problem("$.topology.regions", "at least one region", "an empty array");
    for (size_t i = 0; i < regions.size(); ++i) {
      const std::string path = json_path_index("$.topology.regions", i);
      std::string name = string_at(regions[i], path);
      if (region_index(name)) problem(path, "a region not listed before", quote_text(name) + " again");
      out_.regions.push_back(std::move(name));
    }

    const json& groups = array_at(required_member(topology, "nodes", "$.topology"), "$.topology.nodes");
    if (groups.empty()) problem("$.topology.nodes", "at least one group of nodes", "an empty array");
    std::vector<uint32_t> group_regions;
    std::vector<std::string> group_roles;
    uint64_t total = 0;
    for (size_t i = 0; i < groups.size(); ++i) {
      const std::string path = json_path_index("$.topology.nodes", i);
      const json& group = object_at(groups[i], path);
      Group g;
      g.name = string_at(required_member(group, "name", path), path + ".name");
      if (const auto seen = group_by_name_.find(g.name); seen != group_by_name_.end()) {
        problem(path + ".name", "a group name not used by another group",
                quote_text(g.name) + ", already the name of " + json_path_index("$.topology.nodes", seen->second));
      }
      std::string role = string_at(required_member(group, "role", path), path + ".role");
      if (std::find(roles_.begin(), roles_.end(), role) == roles_.end()) {
        std::vector<std::string> names(roles_.begin(), roles_.end());
        problem(path + ".role", "a role of system " + quote_text(out_.system) + ": " + join_quoted(names), quote_text(role));
      }
      g.count = static_cast<uint32_t>(integer_at(required_member(group, "count", path), path + ".count", 1, kNodesPerGroupMax));
      group_regions.push_back(region_at(required_member(group, "region", path), path + ".region"));
      group_roles.push_back(std::move(role));
      total += g.count;
      if (total > kNodesTotalMax) {
        problem("$.topology.nodes", "at most " + std::to_string(kNodesTotalMax) + " nodes in all",
                "more (" + std::to_string(total) + " by " + path + ")");
      }
      g.first = static_cast<uint32_t>(total - g.count);
      group_by_name_.emplace(g.name, groups_.size());
      groups_.push_back(std::move(g));
    }
    // A group named like another group's node ("server-2" beside "server" with count >= 2)
    // would make selectors ambiguous.
    for (size_t i = 0; i < groups_.size(); ++i) {
      if (const auto owner = node_of_name(groups_[i].name)) {
        const Group& other = groups_[owner->first];
        problem(json_path_index("$.topology.nodes", i) + ".name",
                "a group name unlike the node names of group " + quote_text(other.name) + " (" + other.name + "-1 to " +
                    other.name + "-" + std::to_string(other.count) + ")",
                quote_text(groups_[i].name));
      }
    }
    for (const std::string_view role : roles_) {
      // The key service is optional: a chat scenario without one runs with E2EE off.
      if (role == "keys") continue;
      if (std::find(group_roles.begin(), group_roles.end(), role) == group_roles.end()) {
        problem("$.topology.nodes",
                "at least one group with role " + quote_text(role) + " (system " + quote_text(out_.system) + " needs it)",
                "none");
      }
    }
    out_.nodes.reserve(total);
    for (size_t i = 0; i < groups_.size(); ++i) {
      for (uint32_t n = 1; n <= groups_[i].count; ++n) {
        out_.nodes.push_back(NodeSpec{.name = groups_[i].name + "-" + std::to_string(n),
                                      .group = groups_[i].name,
                                      .role = group_roles[i],
                                      .region = group_regions[i]});
      }
    }
  }

  // If `name` is "GROUP-N" for an existing group and 1 <= N <= its count: (group, N).
  std::optional<std::pair<size_t, uint32_t>> node_of_name(std::string_view name) const {
    const size_t dash = name.rfind('-');
    if (dash == std::string_view::npos || dash + 1 >= name.size()) return std::nullopt;
    const std::string_view digits = name.substr(dash + 1);
    if (digits.size() > 7 || digits[0] == '0') return std::nullopt;  // counts are <= 1,000,000
    uint32_t number = 0;
    for (const char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      number = number * 10 + static_cast<uint32_t>(c - '0');
    }
    const auto group = group_by_name_.find(name.substr(0, dash));
    if (group == group_by_name_.end() || number > groups_[group->second].count) return std::nullopt;
    return std::make_pair(group->second, number);
  }

  void read_network(const json& network) {
    if (const json* v = member(network, "connection_timeout_ms")) {
      out_.connection_timeout_ns = positive_time_ns_at(*v, "$.network.connection_timeout_ms", kNsPerMs, "ms");
    }
    LinkLatency intra{kIntraRegionOneWayDefaultNs, kIntraRegionJitterMeanDefaultNs};
    if (const json* v = member(network, "intra_region_one_way_us")) {
      intra.base_ns = time_ns_at(*v, "$.network.intra_region_one_way_us", kNsPerUs, "us");
    }
    if (const json* v = member(network, "intra_region_jitter_us")) {
      intra.jitter_mean_ns = time_ns_at(*v, "$.network.intra_region_jitter_us", kNsPerUs, "us");
    }
    const size_t region_count = out_.regions.size();
    std::vector<std::vector<std::optional<LinkLatency>>> matrix(
        region_count, std::vector<std::optional<LinkLatency>>(region_count));
    std::map<std::pair<uint32_t, uint32_t>, std::string> override_path;
    if (const json* overrides = member(network, "latency")) {
      array_at(*overrides, "$.network.latency");
      for (size_t i = 0; i < overrides->size(); ++i) {
        const std::string path = json_path_index("$.network.latency", i);
        const json& entry = object_at((*overrides)[i], path);
        const json& between = array_at(required_member(entry, "between", path), path + ".between");
        if (between.size() != 2) problem(path + ".between", "two regions", describe_json_value(between));
        const uint32_t a = region_at(between[0], path + ".between[0]");
        const uint32_t b = region_at(between[1], path + ".between[1]");
        if (a == b) {
          problem(path + ".between", "two different regions (intra-region latency is intra_region_one_way_us)",
                  quote_text(out_.regions[a]) + " twice");
        }
        const auto key = std::minmax(a, b);
        if (const auto seen = override_path.find(key); seen != override_path.end()) {
          problem(path, "one entry per pair of regions",
                  "a second entry for " + out_.regions[a] + " and " + out_.regions[b] + " (the first is " +
                      seen->second + ")");
        }
        override_path.emplace(key, path);
        LinkLatency link{};
        link.base_ns = time_ns_at(required_member(entry, "one_way_ms", path), path + ".one_way_ms", kNsPerMs, "ms");
        // Without a jitter figure, keep the built-in model's ratio: base 0.45 R, mean R / 60.
        link.jitter_mean_ns = link.base_ns / 27;
        if (const json* v = member(entry, "jitter_ms")) link.jitter_mean_ns = time_ns_at(*v, path + ".jitter_ms", kNsPerMs, "ms");
        matrix[a][b] = link;
        matrix[b][a] = link;
      }
    }
    out_.latency.assign(region_count, std::vector<LinkLatency>(region_count, intra));
    for (uint32_t a = 0; a < region_count; ++a) {
      for (uint32_t b = a + 1; b < region_count; ++b) {
        std::optional<LinkLatency> link = matrix[a][b];
        if (!link) link = builtin_latency(out_.regions[a], out_.regions[b]);
        if (!link) {
          const std::string& custom = is_builtin_region(out_.regions[a]) ? out_.regions[b] : out_.regions[a];
          problem("$.network.latency",
                  "an entry {\"between\": [" + quote_text(out_.regions[a]) + ", " + quote_text(out_.regions[b]) +
                      "], \"one_way_ms\": ...} (" + quote_text(custom) + " is not a built-in region, so it has no default latency)",
                  "none");
        }
        out_.latency[a][b] = *link;
        out_.latency[b][a] = *link;
      }
    }
  }

  void read_bugs(const json& bugs) {
    if (out_.system != "chat") problem("$.bugs", "no planted bugs (they are in the chat system)", "some");
    for (size_t i = 0; i < bugs.size(); ++i) out_.bugs.push_back(string_at(bugs[i], json_path_index("$.bugs", i)));
  }

  void read_chat_workload(const json& chat) {
    const std::string base = "$.workload.chat";
    if (out_.system != "chat") problem(base, "a workload for system " + quote_text(out_.system), "one for \"chat\"");
    object_at(chat, base);
    ChatWorkloadSpec& c = out_.chat;
    auto count = [&](const char* key, uint32_t& field, int64_t min, int64_t max) {
      if (const json* v = member(chat, key)) field = static_cast<uint32_t>(integer_at(*v, base + "." + key, min, max));
    };
    auto share = [&](const char* key, double& field) {
      if (const json* v = member(chat, key)) {
        const double x = number_at(*v, base + "." + key);
        if (!(x >= 0.0 && x <= 1.0)) problem(base + "." + key, "a share from 0 to 1", describe_json_value(*v));
        field = x;
      }
    };
    count("devices_per_user", c.devices_per_user, 1, 16);
    count("contacts_per_user", c.contacts_per_user, 0, 1000);
    count("groups", c.groups, 0, 1'000'000);
    count("group_size", c.group_size, 2, 10'000);
    count("membership_changes", c.membership_changes, 0, 64);
    count("partitions", c.partitions, 1, 4096);
    count("replication_factor", c.replication_factor, 1, 16);
    count("turn_messages", c.turn_messages, 0, 1'000'000);
    if (const json* v = member(chat, "send_interval_ms")) {
      c.send_interval_mean_ns = positive_time_ns_at(*v, base + ".send_interval_ms", kNsPerMs, "ms");
    }
    if (const json* v = member(chat, "body_bytes")) {
      const std::string path = base + ".body_bytes";
      const json& pair = array_at(*v, path);
      if (pair.size() != 2) problem(path, "[min, max]", describe_json_value(*v));
      c.body_bytes_min = static_cast<uint32_t>(integer_at(pair[0], json_path_index(path, 0), 1, 65536));
      c.body_bytes_max = static_cast<uint32_t>(integer_at(pair[1], json_path_index(path, 1), 1, 65536));
      if (c.body_bytes_min > c.body_bytes_max) problem(path, "min <= max", describe_json_value(*v));
    }
    share("group_share", c.group_share);
    share("disappearing_share", c.disappearing_share);
    share("read_share", c.read_share);
    if (const json* v = member(chat, "disappearing_ttl_s")) {
      c.disappearing_ttl_ns = positive_time_ns_at(*v, base + ".disappearing_ttl_s", kNsPerSecond, "s");
    }
  }

  void read_workload(const json& workload) {
    if (const json* chat = member(workload, "chat")) read_chat_workload(*chat);
    const json* ledger = member(workload, "ledger");
    if (ledger == nullptr) return;
    if (out_.system != "ledger") problem("$.workload.ledger", "a workload for system " + quote_text(out_.system), "one for \"ledger\"");
    object_at(*ledger, "$.workload.ledger");
    if (const json* v = member(*ledger, "append_interval_ms")) {
      out_.ledger.append_interval_ns = positive_time_ns_at(*v, "$.workload.ledger.append_interval_ms", kNsPerMs, "ms");
    }
    if (const json* v = member(*ledger, "request_timeout_ms")) {
      out_.ledger.request_timeout_ns = positive_time_ns_at(*v, "$.workload.ledger.request_timeout_ms", kNsPerMs, "ms");
    }
    if (const json* v = member(*ledger, "synchronous")) {
      const std::string mode = string_at(*v, "$.workload.ledger.synchronous");
      if (mode != "full" && mode != "off") problem("$.workload.ledger.synchronous", "one of \"full\", \"off\"", quote_text(mode));
      out_.ledger.synchronous_full = mode == "full";
    }
  }

  // Selectors: "NAME-N" (a node), "NAME" (a group), "region:NAME", "*", or an array of these
  // (their union). The result is sorted and unique; a term that matches nothing is an error.
  std::vector<uint32_t> selector_at(const json& selector, const std::string& path) const {
    std::vector<uint32_t> out;
    if (selector.is_array()) {
      if (selector.empty()) problem(path, "at least one selector", "an empty array");
      for (size_t i = 0; i < selector.size(); ++i) {
        const std::string item_path = json_path_index(path, i);
        add_selector_term(string_at(selector[i], item_path), item_path, out);
      }
    } else if (selector.is_string()) {
      add_selector_term(selector.get<std::string>(), path, out);
    } else {
      problem(path, "a selector (a string or an array of strings)", describe_json_value(selector));
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  void add_selector_term(const std::string& term, const std::string& path, std::vector<uint32_t>& out) const {
    const size_t before = out.size();
    if (term == "*") {
      for (uint32_t i = 0; i < out_.nodes.size(); ++i) out.push_back(i);
    } else if (term.starts_with("region:")) {
      const auto region = region_index(std::string_view(term).substr(7));
      if (!region) problem(path, "\"region:NAME\" with NAME " + regions_phrase(), quote_text(term));
      for (uint32_t i = 0; i < out_.nodes.size(); ++i) {
        if (out_.nodes[i].region == *region) out.push_back(i);
      }
      if (out.size() == before) problem(path, "a selector that matches at least one node", quote_text(term) + ", a region with no nodes");
    } else if (const auto group = group_by_name_.find(term); group != group_by_name_.end()) {
      const Group& g = groups_[group->second];
      for (uint32_t n = 0; n < g.count; ++n) out.push_back(g.first + n);
    } else if (const auto node = node_of_name(term)) {
      out.push_back(groups_[node->first].first + node->second - 1);
    } else if (const size_t dash = term.rfind('-'); dash != std::string::npos && group_by_name_.contains(term.substr(0, dash))) {
      // "server-4" when the group has 3 nodes, or "server-01": say which names exist.
      const Group& g = groups_[group_by_name_.find(term.substr(0, dash))->second];
      problem(path, "a node of group " + quote_text(g.name) + " (" + g.name + "-1 to " + g.name + "-" + std::to_string(g.count) + ")",
              quote_text(term));
    } else {
      problem(path, "a node name (like \"" + groups_.front().name + "-1\"), a group name, \"region:NAME\" or \"*\"",
              quote_text(term));
    }
  }

  void read_faults(const json& faults) {
    for (size_t i = 0; i < faults.size(); ++i) {
      const std::string path = json_path_index("$.faults", i);
      out_.faults.push_back(read_fault(object_at(faults[i], path), path));
    }
    std::stable_sort(out_.faults.begin(), out_.faults.end(),
                     [](const FaultSpec& a, const FaultSpec& b) { return a.at_ns < b.at_ns; });
  }

  FaultSpec read_fault(const json& fault, const std::string& path) const {
    FaultSpec spec;
    spec.path = path;
    const std::string kind_name = string_at(required_member(fault, "kind", path), path + ".kind");
    const auto kind = fault_kind_from_string(kind_name);
    if (!kind) problem(path + ".kind", "a fault kind", quote_text(kind_name));
    spec.kind = *kind;
    spec.at_ns = time_ns_at(required_member(fault, "at_s", path), path + ".at_s", kNsPerSecond, "s");
    if (spec.at_ns >= out_.duration_ns) {
      problem(path + ".at_s",
              "a time before duration_s (" + format_json_number(json(static_cast<double>(out_.duration_ns) / 1e9)) + " s)",
              describe_json_value(required_member(fault, "at_s", path)));
    }
    const char* end_field = nullptr;
    switch (spec.kind) {
      case FaultKind::crash:
      case FaultKind::shutdown: end_field = "restart_after_s"; break;
      case FaultKind::host_loss: end_field = "replace_after_s"; break;
      case FaultKind::partition:
      case FaultKind::isolate:
      case FaultKind::region_split: end_field = "heal_after_s"; break;
      case FaultKind::latency_spike:
      case FaultKind::clock:
      case FaultKind::slow:
      case FaultKind::disk: end_field = "duration_s"; break;
    }
    if (const json* v = member(fault, end_field)) {
      spec.end_after_ns = positive_time_ns_at(*v, path + "." + end_field, kNsPerSecond, "s");
    }
    if (spec.kind != FaultKind::partition && spec.kind != FaultKind::region_split) {
      spec.nodes = selector_at(required_member(fault, "nodes", path), path + ".nodes");
    }
    switch (spec.kind) {
      case FaultKind::crash:
        if (const json* v = member(fault, "disk")) {
          const std::string mode = string_at(*v, path + ".disk");
          if (mode == "keep-unsynced") {
            spec.disk = CrashDiskMode::keep_unsynced;
          } else if (mode == "lose-unsynced") {
            spec.disk = CrashDiskMode::lose_unsynced;
          } else if (mode == "torn") {
            spec.disk = CrashDiskMode::torn;
          } else {
            problem(path + ".disk", "one of \"keep-unsynced\", \"lose-unsynced\", \"torn\"", quote_text(mode));
          }
        }
        break;
      case FaultKind::shutdown:
        if (const json* v = member(fault, "drain_s")) spec.drain_ns = time_ns_at(*v, path + ".drain_s", kNsPerSecond, "s");
        break;
      case FaultKind::partition: read_partition(fault, path, spec); break;
      case FaultKind::region_split: read_region_split(fault, path, spec); break;
      case FaultKind::latency_spike:
        spec.extra_latency_ns = positive_time_ns_at(required_member(fault, "extra_ms", path), path + ".extra_ms", kNsPerMs, "ms");
        break;
      case FaultKind::clock:
        if (const json* v = member(fault, "skew_ms")) {
          spec.skew_ns = time_ns_at(*v, path + ".skew_ms", kNsPerMs, "ms", /*allow_negative=*/true);
        }
        if (const json* v = member(fault, "drift_ppm")) {
          spec.drift_ppm = static_cast<int32_t>(integer_at(*v, path + ".drift_ppm", -100'000, 100'000));
        }
        break;
      case FaultKind::slow:
        spec.slow_factor = static_cast<uint32_t>(integer_at(required_member(fault, "factor", path), path + ".factor", 2, 1'000'000));
        break;
      case FaultKind::disk: {
        const std::string mode = string_at(required_member(fault, "fault", path), path + ".fault");
        if (mode == "fsync-fail") {
          spec.disk_fault = DiskFaultKind::fsync_fail;
        } else if (mode == "full") {
          spec.disk_fault = DiskFaultKind::full;
        } else {
          problem(path + ".fault", "one of \"fsync-fail\", \"full\"", quote_text(mode));
        }
        break;
      }
      case FaultKind::host_loss:
      case FaultKind::isolate: break;
    }
    return spec;
  }

  void read_partition(const json& fault, const std::string& path, FaultSpec& spec) const {
    const json& sides = array_at(required_member(fault, "sides", path), path + ".sides");
    if (sides.size() != 2) problem(path + ".sides", "two sides", describe_json_value(sides));
    spec.side_a = selector_at(sides[0], path + ".sides[0]");
    spec.side_b = selector_at(sides[1], path + ".sides[1]");
    std::vector<uint32_t> common;
    std::set_intersection(spec.side_a.begin(), spec.side_a.end(), spec.side_b.begin(), spec.side_b.end(),
                          std::back_inserter(common));
    if (!common.empty()) {
      problem(path + ".sides", "two sides with no node in common",
              quote_text(out_.nodes[common.front()].name) + " on both sides" +
                  (common.size() > 1 ? " (and " + std::to_string(common.size() - 1) + " more)" : ""));
    }
    if (const json* v = member(fault, "one_way")) spec.one_way = bool_at(*v, path + ".one_way");
  }

  void read_region_split(const json& fault, const std::string& path, FaultSpec& spec) const {
    const json& groups = array_at(required_member(fault, "regions", path), path + ".regions");
    if (groups.size() != 2) problem(path + ".regions", "two groups of regions", describe_json_value(groups));
    std::vector<uint32_t>* sides[2] = {&spec.regions_a, &spec.regions_b};
    for (size_t side = 0; side < 2; ++side) {
      const std::string side_path = json_path_index(path + ".regions", side);
      const json& names = array_at(groups[side], side_path);
      if (names.empty()) problem(side_path, "at least one region", "an empty array");
      for (size_t i = 0; i < names.size(); ++i) sides[side]->push_back(region_at(names[i], json_path_index(side_path, i)));
      std::sort(sides[side]->begin(), sides[side]->end());
      sides[side]->erase(std::unique(sides[side]->begin(), sides[side]->end()), sides[side]->end());
    }
    std::vector<uint32_t> common;
    std::set_intersection(spec.regions_a.begin(), spec.regions_a.end(), spec.regions_b.begin(), spec.regions_b.end(),
                          std::back_inserter(common));
    if (!common.empty()) {
      problem(path + ".regions", "two groups of regions with none in common", quote_text(out_.regions[common.front()]) + " in both");
    }
  }

  void read_nemesis(const json& nemesis) {
    NemesisSpec spec;
    const json& kinds = array_at(required_member(nemesis, "kinds", "$.nemesis"), "$.nemesis.kinds");
    if (kinds.empty()) problem("$.nemesis.kinds", "at least one fault kind", "an empty array");
    for (size_t i = 0; i < kinds.size(); ++i) {
      const std::string path = json_path_index("$.nemesis.kinds", i);
      const std::string name = string_at(kinds[i], path);
      const auto kind = fault_kind_from_string(name);
      if (!kind) problem(path, "a fault kind", quote_text(name));
      if (std::find(spec.kinds.begin(), spec.kinds.end(), *kind) != spec.kinds.end()) {
        problem(path, "each kind once", quote_text(name) + " again");
      }
      spec.kinds.push_back(*kind);
    }
    spec.mean_interval_ns = positive_time_ns_at(required_member(nemesis, "mean_interval_s", "$.nemesis"),
                                                "$.nemesis.mean_interval_s", kNsPerSecond, "s");
    if (const json* range = member(nemesis, "fault_duration_s")) {
      array_at(*range, "$.nemesis.fault_duration_s");
      if (range->size() != 2) problem("$.nemesis.fault_duration_s", "[min, max]", describe_json_value(*range));
      spec.duration_min_ns = positive_time_ns_at((*range)[0], "$.nemesis.fault_duration_s[0]", kNsPerSecond, "s");
      spec.duration_max_ns = positive_time_ns_at((*range)[1], "$.nemesis.fault_duration_s[1]", kNsPerSecond, "s");
      if (spec.duration_min_ns > spec.duration_max_ns) {
        problem("$.nemesis.fault_duration_s", "[min, max] with min <= max",
                "[" + describe_json_value((*range)[0]) + ", " + describe_json_value((*range)[1]) + "]");
      }
    }
    if (const json* v = member(nemesis, "max_concurrent")) {
      spec.max_concurrent = static_cast<uint32_t>(integer_at(*v, "$.nemesis.max_concurrent", 1, 1000));
    }
    if (const json* v = member(nemesis, "targets")) {
      spec.targets = selector_at(*v, "$.nemesis.targets");
    } else {
      spec.targets = selector_at(json("*"), "$.nemesis.targets");
    }
    if (const json* v = member(nemesis, "swarm")) spec.swarm = bool_at(*v, "$.nemesis.swarm");
    out_.nemesis = std::move(spec);
  }

  void read_checks(const json& checks) {
    if (const json* v = member(checks, "latency_p99_ms")) {
      out_.latency_p99_bound_ns = positive_time_ns_at(*v, "$.checks.latency_p99_ms", kNsPerMs, "ms");
    }
  }

  Scenario& out_;
  std::vector<std::string_view> roles_;
  std::vector<Group> groups_;
  std::map<std::string, size_t, std::less<>> group_by_name_;  // name -> index in groups_
};

}  // namespace

std::string_view to_string(FaultKind kind) {
  for (const FaultKindName& entry : kFaultKindNames) {
    if (entry.kind == kind) return entry.name;
  }
  MSGSIM_UNREACHABLE("a FaultKind without a name");
}

std::optional<FaultKind> fault_kind_from_string(std::string_view text) {
  for (const FaultKindName& entry : kFaultKindNames) {
    if (entry.name == text) return entry.kind;
  }
  return std::nullopt;
}

std::vector<std::string_view> system_roles(std::string_view system) {
  if (system == "ledger") return {"ledger-server", "ledger-client"};
  if (system == "chat") return {"lb", "chat", "registry", "queue", "storage", "push", "device", "keys"};
  return {};
}

std::vector<uint32_t> Scenario::nodes_with_role(std::string_view role) const {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].role == role) out.push_back(i);
  }
  return out;
}

std::string_view scenario_schema_text() { return kScenarioSchemaJson; }

Result<Scenario> load_scenario_text(std::string_view text, const std::string& file_label) {
  Result<json> document = parse_json(text, file_label);
  if (!document.ok()) return document.error();

  const std::vector<SchemaError> violations = scenario_schema().validate(*document, kSchemaErrorsReportedMax);
  if (!violations.empty()) {
    std::string message;
    for (const SchemaError& violation : violations) {
      if (!message.empty()) message += "\n";
      message += file_label + ": " + violation.path + ": expected " + violation.expected + ", got " + violation.got;
    }
    return make_error(ErrorCode::bad_input, std::move(message));
  }

  Scenario scenario;
  scenario.file = file_label;
  try {
    ScenarioReader(scenario).read(*document);
  } catch (const ScenarioProblem& p) {
    return make_error(ErrorCode::bad_input, file_label + ": " + p.path + ": expected " + p.expected + ", got " + p.got);
  } catch (const std::exception& error) {
    // Every reader checks types before it reads, so this is a bug in the loader; it still must
    // not take the process down on a user's file.
    return make_error(ErrorCode::bad_input, file_label + ": $: internal error while reading the scenario: " +
                                                parse_error_reason(error.what()));
  }
  return scenario;
}

Result<Scenario> load_scenario_file(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return make_error(ErrorCode::bad_input, path + ": expected a readable scenario file, got " + std::strerror(errno));
  }
  std::string text;
  char buffer[65536];
  bool read_failed = false;
  int read_errno = 0;
  while (text.size() <= kScenarioBytesMax) {
    const size_t n = std::fread(buffer, 1, sizeof buffer, file);
    text.append(buffer, n);
    if (n < sizeof buffer) {
      if (std::ferror(file)) {
        read_failed = true;
        read_errno = errno;
      }
      break;
    }
  }
  std::fclose(file);
  if (read_failed) {
    return make_error(ErrorCode::bad_input, path + ": expected a readable scenario file, got " + std::strerror(read_errno));
  }
  if (text.size() > kScenarioBytesMax) {
    return make_error(ErrorCode::bad_input, path + ": expected a scenario file of at most " +
                                                std::to_string(kScenarioBytesMax) + " bytes, got a larger one");
  }
  return load_scenario_text(text, path);
}

}  // namespace msgsim::sim
