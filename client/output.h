// How every command prints what the server answered: as text for people,
// as JSON or YAML for programs, or (-o name) as bare resource names for
// scripts; and the terminal width the text tables are fitted to.
#ifndef TUNEFORGE_CLIENT_OUTPUT_H_
#define TUNEFORGE_CLIENT_OUTPUT_H_

#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "client/format.h"

namespace tuneforge::cli {

// Columns of the terminal standard output is, or 0 (no limit) when piped.
int TerminalWidth();

// Prints `m` as `output` says: text ("text"), JSON/YAML, or just `name`.
void Print(const std::string& output, const google::protobuf::Message& m,
           const std::string& text, const std::string& name = "");

// Prints a page of resources: a table of `row(item)` under `columns`, or
// (-o name) their names, or the whole response `resp` as JSON/YAML.
template <typename Items, typename Row>
void PrintList(const std::string& output, const google::protobuf::Message& resp,
               const Items& items, Row row, const std::vector<std::string>& columns) {
  std::vector<std::vector<std::string>> rows;
  std::string names;
  for (const auto& item : items) {
    rows.push_back(row(item));
    names += (names.empty() ? "" : "\n") + item.name();
  }
  Print(output, resp, Table(columns, rows, TerminalWidth()), names);
}

}  // namespace tuneforge::cli

#endif  // TUNEFORGE_CLIENT_OUTPUT_H_
