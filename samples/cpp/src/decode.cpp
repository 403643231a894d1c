#include "parekit_host/decode.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "parekit_host/common.h"

namespace parekit_host {

StepFeeds left_pad(const Prompts& prompts, int64_t pad_id) {
  if (prompts.empty()) throw Error("no prompts: give at least one row of token ids");
  std::size_t length = 0;
  for (std::size_t row = 0; row < prompts.size(); ++row) {
    if (prompts[row].empty()) throw Error("prompt " + std::to_string(row) + " is empty: every prompt needs a token");
    length = std::max(length, prompts[row].size());
  }
  StepFeeds f;
  f.batch = static_cast<int64_t>(prompts.size());
  f.seq = f.total = static_cast<int64_t>(length);
  f.ids.assign(prompts.size() * length, pad_id);
  f.mask.assign(prompts.size() * length, 0);
  f.positions.assign(prompts.size() * length, 0);
  for (std::size_t row = 0; row < prompts.size(); ++row) {
    const std::size_t pad = length - prompts[row].size();
    for (std::size_t i = 0; i < prompts[row].size(); ++i) {
      f.ids[row * length + pad + i] = prompts[row][i];
      f.mask[row * length + pad + i] = 1;
      f.positions[row * length + pad + i] = static_cast<int64_t>(i);
    }
  }
  return f;
}

double Generation::prefill_tokens_per_s() const {
  return prefill_s > 0 ? static_cast<double>(prompt_tokens) / prefill_s : 0.0;
}

double Generation::decode_tokens_per_s() const {
  const double total = std::accumulate(decode_s.begin(), decode_s.end(), 0.0);
  return total > 0 ? static_cast<double>(decode_s.size() * tokens.size()) / total : 0.0;
}

double Generation::decode_wall_tokens_per_s() const {
  return decode_wall_s > 0 ? static_cast<double>(decode_s.size() * tokens.size()) / decode_wall_s : 0.0;
}

static std::string ids_json(const std::vector<int64_t>& ids) {
  std::string out = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) out += (i ? "," : "") + std::to_string(ids[i]);
  return out + "]";
}

static std::string number(double value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", value);
  return buf;
}

std::string Generation::to_json(const std::string& backend) const {
  std::string rows = "[";
  for (std::size_t r = 0; r < tokens.size(); ++r) rows += (r ? "," : "") + ids_json(tokens[r]);
  rows += "]";
  const double decode_total = std::accumulate(decode_s.begin(), decode_s.end(), 0.0);
  return "{\"backend\":\"" + backend + "\",\"tokens\":" + rows + ",\"prompt_tokens\":" + std::to_string(prompt_tokens) +
         ",\"prefill_s\":" + number(prefill_s) + ",\"decode_steps\":" + std::to_string(decode_s.size()) +
         ",\"decode_s\":" + number(decode_total) + ",\"decode_wall_s\":" + number(decode_wall_s) +
         ",\"prefill_tokens_per_s\":" + number(prefill_tokens_per_s()) +
         ",\"decode_tokens_per_s\":" + number(decode_tokens_per_s()) +
         ",\"decode_wall_tokens_per_s\":" + number(decode_wall_tokens_per_s()) +
         ",\"state_bytes\":" + std::to_string(state_bytes) + "}";
}

std::string Generation::to_text() const {
  std::ostringstream out;
  for (std::size_t r = 0; r < tokens.size(); ++r) {
    out << "row " << r << ":";
    for (int64_t t : tokens[r]) out << ' ' << t;
    out << '\n';
  }
  out << "prefill: " << prompt_tokens << " tokens, " << number(prefill_tokens_per_s()) << " tokens/s\n";
  out << "decode: " << decode_s.size() * tokens.size() << " tokens, " << number(decode_tokens_per_s())
      << " tokens/s (model runs), " << number(decode_wall_tokens_per_s()) << " tokens/s (loop)\n";
  return out.str();
}

static int64_t argmax(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = i;
  }
  return best;
}

Generation generate(Stepper& stepper, const Prompts& prompts, const GenerateOptions& options) {
  if (options.max_new_tokens < 1) {
    throw Error("max_new_tokens must be >= 1, got " + std::to_string(options.max_new_tokens));
  }
  StepFeeds feeds = left_pad(prompts, options.pad_id);
  const int64_t batch = feeds.batch;
  const int64_t vocab = stepper.vocab();
  stepper.reset(batch);
  const std::vector<float>* logits = &stepper.step(feeds);
  Generation g;
  g.tokens.resize(static_cast<std::size_t>(batch));
  g.prompt_tokens = std::accumulate(feeds.mask.begin(), feeds.mask.end(), int64_t{0});
  g.prefill_s = stepper.last_step_s();
  std::vector<int64_t> next_pos(static_cast<std::size_t>(batch));
  for (int64_t r = 0; r < batch; ++r) next_pos[r] = feeds.positions[r * feeds.seq + feeds.seq - 1] + 1;
  std::vector<char> done(static_cast<std::size_t>(batch), 0);
  std::vector<int64_t> chosen(static_cast<std::size_t>(batch));
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < options.max_new_tokens; ++step) {
    if (static_cast<int64_t>(logits->size()) != batch * vocab) {
      throw Error("the backend returned " + std::to_string(logits->size()) + " logits, expected batch x vocab");
    }
    bool all_done = true;
    for (int64_t r = 0; r < batch; ++r) {
      chosen[r] = argmax(logits->data() + r * vocab, vocab);
      if (!done[r]) {
        g.tokens[r].push_back(chosen[r]);
        done[r] = options.eos_id && chosen[r] == *options.eos_id;
      }
      all_done = all_done && done[r];
    }
    if (all_done || step == options.max_new_tokens - 1) break;
    // Next feeds: one token per row; the mask grows by one column of ones (rows stay aligned).
    std::vector<int64_t> mask(static_cast<std::size_t>(batch * (feeds.total + 1)));
    for (int64_t r = 0; r < batch; ++r) {
      std::copy_n(feeds.mask.begin() + r * feeds.total, feeds.total, mask.begin() + r * (feeds.total + 1));
      mask[r * (feeds.total + 1) + feeds.total] = 1;
    }
    feeds.mask = std::move(mask);
    feeds.total += 1;
    feeds.seq = 1;
    feeds.ids.assign(static_cast<std::size_t>(batch), 0);
    for (int64_t r = 0; r < batch; ++r) feeds.ids[r] = done[r] ? options.pad_id : chosen[r];
    feeds.positions = next_pos;
    logits = &stepper.step(feeds);
    g.decode_s.push_back(stepper.last_step_s());
    for (auto& p : next_pos) ++p;
  }
  g.decode_wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  g.state_bytes = stepper.state_bytes();
  return g;
}

std::vector<int64_t> parse_ids(const std::string& text, const std::string& what) {
  std::vector<int64_t> ids;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    std::size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size()) {
      throw Error(what + ": '" + text + "' is not a comma-separated list of integers");
    }
    ids.push_back(static_cast<int64_t>(value));
    pos = comma + 1;
  }
  return ids;
}

}  // namespace parekit_host
