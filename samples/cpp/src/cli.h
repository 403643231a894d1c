// A small command-line parser shared by the two host programs: `prog COMMAND MODEL [--opt VALUE | --flag]...`.
#pragma once

#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "parekit_host/common.h"
#include "parekit_host/decode.h"

namespace parekit_host {

class Args {
 public:
  // `options` take a value (repeatable ones collect every value), `flags` do not. Throws Error on an
  // unknown option, a missing value, or a missing COMMAND / MODEL.
  Args(int argc, char** argv, const std::set<std::string>& options, const std::set<std::string>& flags) {
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg.rfind("--", 0) != 0) {
        positional.push_back(arg);
      } else if (flags.count(arg)) {
        flags_.insert(arg);
      } else if (options.count(arg)) {
        if (i + 1 >= argc) throw Error("option " + arg + " needs a value");
        values_[arg].push_back(argv[++i]);
      } else {
        throw Error("unknown option " + arg);
      }
    }
    if (positional.size() != 2) throw Error("expected COMMAND MODEL, got " + std::to_string(positional.size()) + " positional arguments");
    command = positional[0];
    model = positional[1];
  }

  std::string command, model;

  bool flag(const std::string& name) const { return flags_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second.back();
  }
  std::vector<std::string> all(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
  }
  long long integer(const std::string& name, long long fallback) const {
    const std::string text = get(name);
    if (text.empty()) return fallback;
    std::size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != text.size()) throw Error("option " + name + ": '" + text + "' is not an integer");
    return value;
  }
  // Every --ids value as one row of token ids.
  Prompts prompts() const {
    Prompts rows;
    for (const auto& text : all("--ids")) rows.push_back(parse_ids(text, "--ids"));
    if (rows.empty()) throw Error("no --ids given: pass token ids as --ids 1,2,3 (repeat for more rows)");
    return rows;
  }
  GenerateOptions generate_options() const {
    GenerateOptions o;
    const long long n = integer("--max-new-tokens", 16);
    if (n < 1 || n > 1000000) throw Error("--max-new-tokens must be in [1, 1000000], got " + std::to_string(n));
    o.max_new_tokens = static_cast<int>(n);
    o.pad_id = integer("--pad-id", 0);
    if (!get("--eos-id").empty()) o.eos_id = integer("--eos-id", 0);
    return o;
  }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::set<std::string> flags_;
};

}  // namespace parekit_host
