// A validator for the subset of JSON Schema (draft 2020-12) that scenarios/schema.json uses.
//
// Supported keywords: type, enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
// minLength, maxLength, pattern, minItems, maxItems, items, uniqueItems, required, properties,
// additionalProperties, allOf, if/then/else and $ref to "#/$defs/NAME"; annotations ($schema,
// $id, $comment, title, description, default, examples) are ignored. compile() rejects any
// other keyword, so a constraint added to the schema is never silently skipped. Patterns may
// use literals, escapes, ".", character classes, the quantifiers ? * + and the anchors ^ $
// (no groups or alternation); they are matched by NFA simulation in linear time.
//
// Validation visits the instance only where the schema leads (the schema is not recursive), so
// its depth is bounded by the schema's, whatever the input.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "impl/base/result.h"

namespace msgsim::sim {

// One failed constraint: where (a JSON path like $.faults[2].at_s), what the schema expected,
// and what the instance had.
struct SchemaError {
  std::string path;
  std::string expected;
  std::string got;
};

class JsonSchema {
 public:
  // Checks that `schema` uses only supported keywords, that every $ref resolves and that every
  // pattern compiles. The error names the schema path of the first problem.
  static Result<JsonSchema> compile(nlohmann::json schema);

  // The first `errors_max` violations, in a deterministic order (object members in sorted key
  // order); empty if `instance` is valid.
  std::vector<SchemaError> validate(const nlohmann::json& instance, size_t errors_max) const;

  const nlohmann::json& document() const { return schema_; }

 private:
  explicit JsonSchema(nlohmann::json schema) : schema_(std::move(schema)) {}
  nlohmann::json schema_;
};

// Human-readable renderings for error messages, bounded in length whatever the value.
// A value: strings quoted (cut after 60 bytes), numbers as written, "an object", "an array of
// 3 items"; never a recursive dump, so deep values are safe.
std::string describe_json_value(const nlohmann::json& value);
// A number as a person writes it: integers without a decimal point, else the shortest form
// that reads back exactly.
std::string format_json_number(const nlohmann::json& number);
// path + ".key", or path + "[\"key\"]" when key is not a plain identifier.
std::string json_path_member(const std::string& path, std::string_view key);
std::string json_path_index(const std::string& path, size_t index);

// A compiled pattern of the supported regular-expression subset, for reuse outside schemas.
class SimplePattern {
 public:
  static Result<SimplePattern> compile(std::string_view pattern);
  // ECMA-262 `test` semantics as JSON Schema uses them: true if the pattern matches anywhere in
  // `text`, unless anchored.
  bool search(std::string_view text) const;

 private:
  struct Atom {
    uint64_t accepts[4];  // a 256-bit set of bytes
    enum class Repeat : uint8_t { once, optional, any } repeat;
  };
  std::vector<Atom> atoms_;
  bool anchored_start_ = false;
  bool anchored_end_ = false;
};

}  // namespace msgsim::sim
