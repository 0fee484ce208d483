// Command-line flag parsing for ghostserve-client's subcommands. absl::flags
// is global state shared by the whole binary, while each subcommand here has
// its own flag set, so parsing is done by hand.
#ifndef GHOSTSERVE_CLIENT_FLAGS_H_
#define GHOSTSERVE_CLIENT_FLAGS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ghostserve::client {

// One subcommand's flags. Declare each flag with a pointer to where its value
// goes (the pointer must outlive Parse), then call Parse once. Accepts
// "--name value", "--name=value", switches ("--json"), "-h"/"--help", and
// "--" to end flags; everything else that does not start with "-" is a
// positional argument, wherever it appears. Not thread-safe.
class FlagSet {
 public:
  void String(const std::string& name, std::string* out);
  // Integer in [min, max].
  void Int(const std::string& name, int64_t min, int64_t max, int64_t* out);
  // Finite number in [min, max].
  void Double(const std::string& name, double min, double max, double* out);
  // A switch: present means true. "--name=true|false" is also accepted.
  void Bool(const std::string& name, bool* out);

  // Fills the declared outputs and returns the positional arguments.
  // InvalidArgument names the flag for an unknown flag, a missing value or a
  // value that does not parse or is out of range. Outputs of flags that are
  // absent keep their values, so initialise them to the defaults.
  absl::StatusOr<std::vector<std::string>> Parse(const std::vector<std::string>& args);

  // True when Parse saw -h or --help.
  bool help() const { return help_; }

 private:
  struct Flag {
    bool takes_value;
    std::function<absl::Status(const std::string& value)> set;
  };
  std::map<std::string, Flag> flags_;
  bool help_ = false;
};

}  // namespace ghostserve::client

#endif  // GHOSTSERVE_CLIENT_FLAGS_H_
