// The greedy generation loop of the KV I/O contract, independent of the backend that runs a step.
//
//   prompts -> left_pad -> step(all prompt tokens, empty past) -> argmax --+
//                               ^                                          |
//                               +--- step(1 token, state, mask + [1]) <---+   x max_new_tokens - 1
//
// It mirrors parekit.runtime.generate token for token: left padding with pad_id, a mask over every
// token seen, absolute positions counting real tokens only, done rows fed pad_id.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace parekit_host {

using Prompts = std::vector<std::vector<int64_t>>;

// One step's feeds, row-major: ids/positions [batch, seq], mask [batch, total].
struct StepFeeds {
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t total = 0;
  std::vector<int64_t> ids;
  std::vector<int64_t> mask;
  std::vector<int64_t> positions;
};

// Left-pads prompts (pad_id; mask 0; positions 0, 1, ... over real tokens). Throws Error on an empty prompt.
StepFeeds left_pad(const Prompts& prompts, int64_t pad_id);

// What a backend provides: one decoder step under the contract, the state kept inside.
class Stepper {
 public:
  virtual ~Stepper() = default;
  // Forget the state; the next step starts from the empty past built from the input spec.
  virtual void reset(int64_t batch) = 0;
  // Runs one step and returns the logits of each row's last position, [batch * vocab] floats.
  virtual const std::vector<float>& step(const StepFeeds& feeds) = 0;
  virtual int64_t vocab() const = 0;
  // Seconds the last step's model run took (the backend's run call, not the host's bookkeeping).
  virtual double last_step_s() const = 0;
  // Bytes of the state that would be fed back now (all past* tensors).
  virtual std::size_t state_bytes() const = 0;
};

struct GenerateOptions {
  int max_new_tokens = 16;
  int64_t pad_id = 0;
  std::optional<int64_t> eos_id;
};

struct Generation {
  Prompts tokens;                // new tokens per row (a row stops after its eos_id, included)
  int64_t prompt_tokens = 0;     // real prompt tokens, all rows
  double prefill_s = 0;          // the prefill step's model run
  std::vector<double> decode_s;  // per decode step, the model run
  double decode_wall_s = 0;      // the whole decode loop: feeds, runs, argmax
  std::size_t state_bytes = 0;   // state fed back after the last step

  double prefill_tokens_per_s() const;
  double decode_tokens_per_s() const;       // rows x decode steps / sum(decode_s), as parekit reports it
  double decode_wall_tokens_per_s() const;  // the same over decode_wall_s
  std::string to_json(const std::string& backend) const;
  std::string to_text() const;
};

// Greedy decoding (first maximum wins, as numpy.argmax). Throws Error on bad options or prompts.
Generation generate(Stepper& stepper, const Prompts& prompts, const GenerateOptions& options);

// Parses "1,2,3" into token ids; throws Error naming `what` on anything else.
std::vector<int64_t> parse_ids(const std::string& text, const std::string& what);

}  // namespace parekit_host
