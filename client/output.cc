#include "client/output.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <iostream>

namespace tuneforge::cli {

int TerminalWidth() {
  winsize ws{};
  return isatty(1) && ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 0;
}

void Print(const std::string& output, const google::protobuf::Message& m,
           const std::string& text, const std::string& name) {
  if (output == "json" || output == "yaml") {
    std::cout << Structured(m, output);
  } else if (output == "name") {
    if (!name.empty()) std::cout << name << "\n";
  } else {
    std::cout << text;
  }
  std::cout << std::flush;
}

}  // namespace tuneforge::cli
