// Small text helpers shared by the line formats livefs reads (the journal, mountinfo, the
// dpkg database, /proc files).
#pragma once

#include <string_view>
#include <vector>

namespace livefs {

// Splits on single spaces; empty fields are kept (two spaces give an empty word).
inline std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  size_t pos = 0;
  while (pos <= line.size()) {
    size_t sp = line.find(' ', pos);
    if (sp == std::string_view::npos) sp = line.size();
    words.push_back(line.substr(pos, sp - pos));
    pos = sp + 1;
  }
  return words;
}

// Takes the next line (without its '\n') off the front of `text`; false when nothing is
// left. A last line without '\n' is a line; a final '\n' does not add an empty one.
inline bool next_line(std::string_view& text, std::string_view& line) {
  if (text.empty()) return false;
  size_t nl = text.find('\n');
  line = text.substr(0, nl);
  text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  return true;
}

}  // namespace livefs
