#include "sim/json_schema.h"

#include <charconv>
#include <cmath>
#include <set>

namespace msgsim::sim {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Rendering values and paths.

std::string format_json_number(const json& number) {
  if (number.is_number_unsigned()) return std::to_string(number.get<uint64_t>());
  if (number.is_number_integer()) return std::to_string(number.get<int64_t>());
  if (!number.is_number_float()) return "?";
  const double value = number.get<double>();
  // Integral values people write as 1e9 read best as 1000000000; beyond 2^53 the digits
  // would be noise, so those keep the exponent form.
  if (std::isfinite(value) && std::trunc(value) == value && std::fabs(value) < 9007199254740992.0) {
    return std::to_string(static_cast<int64_t>(value));
  }
  char buffer[64];
  const auto [end, error] = std::to_chars(buffer, buffer + sizeof buffer, value);
  if (error != std::errc{}) return "?";
  return std::string(buffer, end);
}

namespace {

constexpr size_t kQuotedBytesMax = 60;

std::string quote_string(const std::string& text) {
  std::string cut = text;
  bool truncated = false;
  if (cut.size() > kQuotedBytesMax) {
    size_t end = kQuotedBytesMax;
    // Back off to a UTF-8 character boundary so the excerpt stays valid text.
    while (end > 0 && (static_cast<unsigned char>(cut[end]) & 0xC0) == 0x80) --end;
    cut.resize(end);
    truncated = true;
  }
  std::string out = json(cut).dump(-1, ' ', false, json::error_handler_t::replace);
  if (truncated) out += "...";
  return out;
}

const char* type_phrase(std::string_view type) {
  if (type == "object") return "an object";
  if (type == "array") return "an array";
  if (type == "string") return "a string";
  if (type == "number") return "a number";
  if (type == "integer") return "an integer";
  if (type == "boolean") return "true or false";
  if (type == "null") return "null";
  return nullptr;
}

bool is_integral(const json& value) {
  if (value.is_number_integer()) return true;  // signed and unsigned alike
  if (!value.is_number_float()) return false;
  const double x = value.get<double>();
  return std::isfinite(x) && std::trunc(x) == x;
}

bool has_type(const json& value, std::string_view type) {
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  if (type == "string") return value.is_string();
  if (type == "number") return value.is_number();
  if (type == "integer") return is_integral(value);
  if (type == "boolean") return value.is_boolean();
  if (type == "null") return value.is_null();
  return false;
}

double as_double(const json& number) {
  if (number.is_number_unsigned()) return static_cast<double>(number.get<uint64_t>());
  if (number.is_number_integer()) return static_cast<double>(number.get<int64_t>());
  return number.get<double>();
}

size_t utf8_length(const std::string& text) {
  size_t count = 0;
  for (const char c : text) count += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return count;
}

bool is_plain_identifier(std::string_view key) {
  if (key.empty()) return false;
  for (size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

}  // namespace

std::string describe_json_value(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return value.get<bool>() ? "true" : "false";
    case json::value_t::string: return quote_string(value.get_ref<const std::string&>());
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return format_json_number(value);
    case json::value_t::object:
      return value.empty() ? "an empty object" : "an object";
    case json::value_t::array:
      if (value.empty()) return "an empty array";
      return "an array of " + std::to_string(value.size()) + (value.size() == 1 ? " item" : " items");
    default: return "a value of an unexpected kind";
  }
}

std::string json_path_member(const std::string& path, std::string_view key) {
  if (is_plain_identifier(key)) return path + "." + std::string(key);
  return path + "[" + quote_string(std::string(key)) + "]";
}

std::string json_path_index(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

// ---------------------------------------------------------------------------------------------
// Patterns.

namespace {

using Accepts = uint64_t[4];

void accept_byte(Accepts& set, unsigned char c) { set[c >> 6] |= uint64_t{1} << (c & 63); }
void accept_range(Accepts& set, unsigned char lo, unsigned char hi) {
  for (unsigned c = lo; c <= hi; ++c) accept_byte(set, static_cast<unsigned char>(c));
}
bool accepts_byte(const uint64_t* set, unsigned char c) { return (set[c >> 6] >> (c & 63)) & 1; }

// \d \w \s and their negations; false if `letter` names no class.
bool accept_class_escape(Accepts& set, char letter) {
  Accepts plain = {0, 0, 0, 0};
  switch (letter) {
    case 'd': case 'D': accept_range(plain, '0', '9'); break;
    case 'w': case 'W':
      accept_range(plain, 'a', 'z');
      accept_range(plain, 'A', 'Z');
      accept_range(plain, '0', '9');
      accept_byte(plain, '_');
      break;
    case 's': case 'S':
      for (const char c : std::string_view(" \t\n\r\f\v")) accept_byte(plain, static_cast<unsigned char>(c));
      break;
    default: return false;
  }
  const bool negate = letter == 'D' || letter == 'W' || letter == 'S';
  for (int i = 0; i < 4; ++i) set[i] |= negate ? ~plain[i] : plain[i];
  return true;
}

bool is_syntax_char(char c) {
  return std::string_view("^$\\.*+?()[]{}|/-").find(c) != std::string_view::npos;
}

}  // namespace

Result<SimplePattern> SimplePattern::compile(std::string_view pattern) {
  auto fail = [&](const std::string& why) -> Result<SimplePattern> {
    return make_error(ErrorCode::bad_input, "pattern " + quote_string(std::string(pattern)) + ": " + why);
  };
  SimplePattern out;
  size_t i = 0;
  if (i < pattern.size() && pattern[i] == '^') {
    out.anchored_start_ = true;
    ++i;
  }
  while (i < pattern.size()) {
    const char c = pattern[i];
    if (c == '$') {
      if (i + 1 != pattern.size()) return fail("$ is supported only at the end");
      out.anchored_end_ = true;
      break;
    }
    Atom atom{{0, 0, 0, 0}, Atom::Repeat::once};
    if (c == '[') {
      ++i;
      bool negate = false;
      if (i < pattern.size() && pattern[i] == '^') {
        negate = true;
        ++i;
      }
      bool first = true;
      bool closed = false;
      while (i < pattern.size()) {
        char lo = pattern[i];
        if (lo == ']' && !first) {
          closed = true;
          ++i;
          break;
        }
        first = false;
        if (lo == '\\') {
          if (i + 1 >= pattern.size()) return fail("a class ends in a lone backslash");
          const char escaped = pattern[i + 1];
          i += 2;
          if (accept_class_escape(atom.accepts, escaped)) continue;
          if (!is_syntax_char(escaped)) return fail(std::string("unsupported escape \\") + escaped);
          lo = escaped;
        } else {
          ++i;
        }
        if (i + 1 < pattern.size() && pattern[i] == '-' && pattern[i + 1] != ']') {
          char hi = pattern[i + 1];
          i += 2;
          if (hi == '\\') {
            if (i >= pattern.size() || !is_syntax_char(pattern[i])) return fail("unsupported range end");
            hi = pattern[i++];
          }
          if (static_cast<unsigned char>(hi) < static_cast<unsigned char>(lo)) return fail("a range runs backwards");
          accept_range(atom.accepts, static_cast<unsigned char>(lo), static_cast<unsigned char>(hi));
        } else {
          accept_byte(atom.accepts, static_cast<unsigned char>(lo));
        }
      }
      if (!closed) return fail("a character class is not closed");
      if (negate) {
        for (uint64_t& word : atom.accepts) word = ~word;
      }
    } else if (c == '\\') {
      if (i + 1 >= pattern.size()) return fail("it ends in a lone backslash");
      const char escaped = pattern[i + 1];
      i += 2;
      if (!accept_class_escape(atom.accepts, escaped)) {
        if (!is_syntax_char(escaped)) return fail(std::string("unsupported escape \\") + escaped);
        accept_byte(atom.accepts, static_cast<unsigned char>(escaped));
      }
    } else if (c == '.') {
      accept_range(atom.accepts, 0, 255);
      atom.accepts[0] &= ~((uint64_t{1} << '\n') | (uint64_t{1} << '\r'));
      ++i;
    } else if (std::string_view("()|{}*+?").find(c) != std::string_view::npos) {
      return fail(std::string("unsupported syntax at '") + c + "' (no groups, alternation or counted repeats)");
    } else {
      accept_byte(atom.accepts, static_cast<unsigned char>(c));
      ++i;
    }
    if (i < pattern.size() && (pattern[i] == '*' || pattern[i] == '+' || pattern[i] == '?')) {
      const char quantifier = pattern[i++];
      if (i < pattern.size() && std::string_view("*+?{").find(pattern[i]) != std::string_view::npos) {
        return fail("lazy or stacked quantifiers are not supported");
      }
      if (quantifier == '+') {
        out.atoms_.push_back(atom);  // X+ is X X*
        atom.repeat = Atom::Repeat::any;
      } else {
        atom.repeat = quantifier == '*' ? Atom::Repeat::any : Atom::Repeat::optional;
      }
    }
    out.atoms_.push_back(atom);
  }
  return out;
}

bool SimplePattern::search(std::string_view text) const {
  const size_t m = atoms_.size();
  // Thompson simulation: state i means "atoms before i have matched". Epsilon moves only go
  // forward (past an optional or starred atom), so one forward pass closes a state set.
  std::vector<char> current(m + 1, 0), next(m + 1, 0);
  auto close = [&](std::vector<char>& states) {
    for (size_t i = 0; i < m; ++i) {
      if (states[i] && atoms_[i].repeat != Atom::Repeat::once) states[i + 1] = 1;
    }
  };
  current[0] = 1;
  close(current);
  if (!anchored_end_ && current[m]) return true;
  for (const char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    std::fill(next.begin(), next.end(), 0);
    for (size_t i = 0; i < m; ++i) {
      if (!current[i] || !accepts_byte(atoms_[i].accepts, byte)) continue;
      if (atoms_[i].repeat == Atom::Repeat::any) {
        next[i] = 1;
      } else {
        next[i + 1] = 1;
      }
    }
    if (!anchored_start_) next[0] = 1;  // a match may also start at the next byte
    close(next);
    if (!anchored_end_ && next[m]) return true;
    current.swap(next);
  }
  return current[m] != 0;
}

// ---------------------------------------------------------------------------------------------
// Compiling (checking) a schema.

namespace {

const std::set<std::string, std::less<>>& supported_keywords() {
  static const std::set<std::string, std::less<>> keywords = {
      "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
      "minLength", "maxLength", "pattern", "minItems", "maxItems", "items", "uniqueItems",
      "required", "properties", "additionalProperties", "allOf", "if", "then", "else", "$ref",
      "$defs",
      // Annotations: no effect on validation.
      "$schema", "$id", "$comment", "title", "description", "default", "examples"};
  return keywords;
}

const json* resolve_ref(const json& root, const std::string& ref) {
  constexpr std::string_view prefix = "#/$defs/";
  if (ref.rfind(prefix, 0) != 0) return nullptr;
  const auto defs = root.find("$defs");
  if (defs == root.end() || !defs->is_object()) return nullptr;
  const auto target = defs->find(ref.substr(prefix.size()));
  if (target == defs->end()) return nullptr;
  return &*target;
}

Status check_schema(const json& root, const json& schema, const std::string& where) {
  auto fail = [&](const std::string& why) -> Status {
    return make_error(ErrorCode::bad_input, "schema " + where + ": " + why);
  };
  if (schema.is_boolean()) return {};
  if (!schema.is_object()) return fail("expected a schema object or boolean");
  for (const auto& [key, value] : schema.items()) {
    const std::string at = json_path_member(where, key);
    if (!supported_keywords().contains(key)) return fail("unsupported keyword \"" + key + "\"");
    if (key == "type") {
      const json types = value.is_array() ? value : json::array({value});
      for (const json& type : types) {
        if (!type.is_string() || !type_phrase(type.get_ref<const std::string&>())) return fail("bad type");
      }
    } else if (key == "enum") {
      if (!value.is_array() || value.empty()) return fail("enum must be a non-empty array");
    } else if (key == "minimum" || key == "maximum" || key == "exclusiveMinimum" || key == "exclusiveMaximum") {
      if (!value.is_number()) return fail(key + " must be a number");
    } else if (key == "minLength" || key == "maxLength" || key == "minItems" || key == "maxItems") {
      if (!value.is_number_unsigned()) return fail(key + " must be a non-negative integer");
    } else if (key == "uniqueItems") {
      if (!value.is_boolean()) return fail("uniqueItems must be true or false");
    } else if (key == "pattern") {
      if (!value.is_string()) return fail("pattern must be a string");
      const auto pattern = SimplePattern::compile(value.get_ref<const std::string&>());
      if (!pattern.ok()) return fail(pattern.error().message);
    } else if (key == "required") {
      if (!value.is_array()) return fail("required must be an array");
      for (const json& name : value) {
        if (!name.is_string()) return fail("required must list strings");
      }
    } else if (key == "properties" || key == "$defs") {
      if (!value.is_object()) return fail(key + " must be an object");
      for (const auto& [name, sub] : value.items()) {
        if (Status s = check_schema(root, sub, json_path_member(at, name)); !s.ok()) return s;
      }
    } else if (key == "items" || key == "additionalProperties" || key == "if" || key == "then" || key == "else") {
      if (Status s = check_schema(root, value, at); !s.ok()) return s;
    } else if (key == "allOf") {
      if (!value.is_array() || value.empty()) return fail("allOf must be a non-empty array");
      for (size_t i = 0; i < value.size(); ++i) {
        if (Status s = check_schema(root, value[i], json_path_index(at, i)); !s.ok()) return s;
      }
    } else if (key == "$ref") {
      if (!value.is_string() || !resolve_ref(root, value.get<std::string>())) {
        return fail("$ref must name an entry of #/$defs");
      }
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Validating.

class Validator {
 public:
  // errors == nullptr: silent (for "if"): stop at the first failure, record nothing.
  Validator(const json& root, std::vector<SchemaError>* errors, size_t errors_max)
      : root_(root), errors_(errors), errors_max_(errors_max) {}

  bool validate(const json& value, const json& schema, const std::string& path) {
    if (schema.is_boolean()) {
      if (schema.get<bool>()) return true;
      return report(path, "nothing here", describe_json_value(value));
    }
    bool valid = true;
    if (const auto ref = schema.find("$ref"); ref != schema.end()) {
      const json* target = resolve_ref(root_, ref->get<std::string>());
      MSGSIM_ASSERT(target != nullptr, "schema $ref checked by compile()");
      valid &= validate(value, *target, path);
      if (stop()) return false;
    }
    if (const auto type = schema.find("type"); type != schema.end()) {
      if (!type_matches(value, *type)) {
        // Nothing else about a value of the wrong type is worth saying.
        return report(path, type_expectation(*type), describe_json_value(value));
      }
    }
    if (const auto options = schema.find("enum"); options != schema.end()) {
      bool found = false;
      for (const json& option : *options) found |= option == value;
      if (!found) valid &= report(path, enum_expectation(*options), describe_json_value(value));
    }
    if (const auto constant = schema.find("const"); constant != schema.end()) {
      if (*constant != value) valid &= report(path, describe_json_value(*constant), describe_json_value(value));
    }
    if (stop()) return false;
    if (value.is_number()) valid &= validate_number(value, schema, path);
    if (value.is_string()) valid &= validate_string(value, schema, path);
    if (value.is_array()) valid &= validate_array(value, schema, path);
    if (value.is_object()) valid &= validate_object(value, schema, path);
    if (stop()) return false;
    if (const auto all = schema.find("allOf"); all != schema.end()) {
      for (const json& sub : *all) {
        valid &= validate(value, sub, path);
        if (stop()) return false;
      }
    }
    if (const auto condition = schema.find("if"); condition != schema.end()) {
      Validator silent(root_, nullptr, 0);
      const bool holds = silent.validate(value, *condition, path);
      const auto branch = schema.find(holds ? "then" : "else");
      if (branch != schema.end()) valid &= validate(value, *branch, path);
    }
    return valid && !failed_silently_;
  }

 private:
  bool stop() const {
    if (errors_ == nullptr) return failed_silently_;
    return errors_->size() >= errors_max_;
  }

  // Records a violation; returns false so callers can write `valid &= report(...)`.
  bool report(const std::string& path, std::string expected, std::string got) {
    if (errors_ == nullptr) {
      failed_silently_ = true;
    } else if (errors_->size() < errors_max_) {
      errors_->push_back(SchemaError{path, std::move(expected), std::move(got)});
    }
    return false;
  }

  static bool type_matches(const json& value, const json& type) {
    if (type.is_string()) return has_type(value, type.get_ref<const std::string&>());
    for (const json& one : type) {
      if (has_type(value, one.get_ref<const std::string&>())) return true;
    }
    return false;
  }

  static std::string type_expectation(const json& type) {
    if (type.is_string()) return type_phrase(type.get_ref<const std::string&>());
    std::string out;
    for (size_t i = 0; i < type.size(); ++i) {
      if (i > 0) out += i + 1 == type.size() ? " or " : ", ";
      out += type_phrase(type[i].get_ref<const std::string&>());
    }
    return out;
  }

  static std::string enum_expectation(const json& options) {
    if (options.size() == 1) return describe_json_value(options[0]);
    std::string out = "one of ";
    for (size_t i = 0; i < options.size(); ++i) {
      if (i > 0) out += ", ";
      out += describe_json_value(options[i]);
    }
    return out;
  }

  bool validate_number(const json& value, const json& schema, const std::string& path) {
    const double x = as_double(value);
    bool valid = true;
    auto bound = [&](const char* keyword, const char* relation, auto holds) {
      const auto limit = schema.find(keyword);
      if (limit == schema.end() || holds(x, as_double(*limit))) return;
      valid &= report(path, std::string("a number ") + relation + " " + format_json_number(*limit),
                      describe_json_value(value));
    };
    // !(a < b) rather than a >= b, so a NaN (which the parser never produces) would fail too.
    bound("minimum", ">=", [](double a, double b) { return !(a < b); });
    bound("exclusiveMinimum", ">", [](double a, double b) { return a > b; });
    bound("maximum", "<=", [](double a, double b) { return !(a > b); });
    bound("exclusiveMaximum", "<", [](double a, double b) { return a < b; });
    return valid;
  }

  bool validate_string(const json& value, const json& schema, const std::string& path) {
    const auto& text = value.get_ref<const std::string&>();
    bool valid = true;
    const size_t length = utf8_length(text);
    if (const auto min = schema.find("minLength"); min != schema.end() && length < min->get<uint64_t>()) {
      valid &= report(path, "a string of at least " + std::to_string(min->get<uint64_t>()) + " characters",
                      describe_json_value(value));
    }
    if (const auto max = schema.find("maxLength"); max != schema.end() && length > max->get<uint64_t>()) {
      valid &= report(path, "a string of at most " + std::to_string(max->get<uint64_t>()) + " characters",
                      "one of " + std::to_string(length));
      return valid;  // no pattern matching over an oversized string
    }
    if (const auto pattern = schema.find("pattern"); pattern != schema.end()) {
      const auto compiled = SimplePattern::compile(pattern->get_ref<const std::string&>());
      MSGSIM_ASSERT(compiled.ok(), "schema pattern checked by compile()");
      if (!compiled->search(text)) {
        valid &= report(path, "a string matching " + pattern->get<std::string>(), describe_json_value(value));
      }
    }
    return valid;
  }

  bool validate_array(const json& value, const json& schema, const std::string& path) {
    bool valid = true;
    const size_t size = value.size();
    if (const auto min = schema.find("minItems"); min != schema.end() && size < min->get<uint64_t>()) {
      const uint64_t n = min->get<uint64_t>();
      valid &= report(path, "an array of at least " + std::to_string(n) + (n == 1 ? " item" : " items"),
                      describe_json_value(value));
    }
    if (const auto max = schema.find("maxItems"); max != schema.end() && size > max->get<uint64_t>()) {
      const uint64_t n = max->get<uint64_t>();
      // The items are not looked at: the bound is what keeps the work per input small.
      return report(path, "an array of at most " + std::to_string(n) + (n == 1 ? " item" : " items"),
                    describe_json_value(value));
    }
    if (const auto items = schema.find("items"); items != schema.end()) {
      for (size_t i = 0; i < size; ++i) {
        valid &= validate(value[i], *items, json_path_index(path, i));
        if (stop()) return false;
      }
    }
    if (const auto unique = schema.find("uniqueItems"); unique != schema.end() && unique->get<bool>()) {
      // Quadratic, but only arrays within their schema's maxItems get here.
      for (size_t i = 1; i < size; ++i) {
        for (size_t j = 0; j < i; ++j) {
          if (value[i] == value[j]) {
            valid &= report(json_path_index(path, i), "unique items",
                            "a repeat of " + json_path_index(path, j) + " (" + describe_json_value(value[i]) + ")");
            break;
          }
        }
        if (stop()) return false;
      }
    }
    return valid;
  }

  bool validate_object(const json& value, const json& schema, const std::string& path) {
    bool valid = true;
    const auto properties = schema.find("properties");
    if (const auto required = schema.find("required"); required != schema.end()) {
      for (const json& name : *required) {
        const auto& key = name.get_ref<const std::string&>();
        if (value.contains(key)) continue;
        std::string expected = "a required field";
        if (properties != schema.end() && properties->contains(key)) {
          expected = describe_schema((*properties)[key]) + " (a required field)";
        }
        valid &= report(json_path_member(path, key), expected, "nothing");
        if (stop()) return false;
      }
    }
    const auto additional = schema.find("additionalProperties");
    for (const auto& [key, member] : value.items()) {
      const std::string member_path = json_path_member(path, key);
      if (properties != schema.end() && properties->contains(key)) {
        valid &= validate(member, (*properties)[key], member_path);
      } else if (additional != schema.end()) {
        if (additional->is_boolean() && !additional->get<bool>()) {
          valid &= report(member_path, known_fields(properties, schema.end()), "an unknown field");
        } else {
          valid &= validate(member, *additional, member_path);
        }
      }
      if (stop()) return false;
    }
    return valid;
  }

  static std::string known_fields(json::const_iterator properties, json::const_iterator none) {
    if (properties == none || properties->empty()) return "no fields here";
    std::string out = "one of the fields ";
    bool first = true;
    for (const auto& [name, sub] : properties->items()) {
      if (name == "$schema") continue;  // allowed, but not worth advertising
      if (!first) out += ", ";
      out += name;
      first = false;
    }
    return out;
  }

  // A short phrase for what a schema accepts, for "missing field" messages.
  std::string describe_schema(const json& schema) const {
    if (!schema.is_object()) return "a value";
    if (const auto ref = schema.find("$ref"); ref != schema.end()) {
      const json* target = resolve_ref(root_, ref->get<std::string>());
      if (target != nullptr) return describe_schema(*target);
    }
    if (const auto type = schema.find("type"); type != schema.end()) {
      std::string out = type_expectation(*type);
      if (const auto min = schema.find("exclusiveMinimum"); min != schema.end()) {
        out += " > " + format_json_number(*min);
      } else if (const auto min2 = schema.find("minimum"); min2 != schema.end()) {
        out += " >= " + format_json_number(*min2);
      }
      return out;
    }
    if (const auto options = schema.find("enum"); options != schema.end()) return enum_expectation(*options);
    return "a value";
  }

  const json& root_;
  std::vector<SchemaError>* errors_;
  size_t errors_max_;
  bool failed_silently_ = false;
};

}  // namespace

Result<JsonSchema> JsonSchema::compile(json schema) {
  if (Status s = check_schema(schema, schema, "$"); !s.ok()) return s.error();
  return JsonSchema(std::move(schema));
}

std::vector<SchemaError> JsonSchema::validate(const json& instance, size_t errors_max) const {
  std::vector<SchemaError> errors;
  if (errors_max == 0) return errors;
  Validator validator(schema_, &errors, errors_max);
  validator.validate(instance, schema_, "$");
  return errors;
}

}  // namespace msgsim::sim
