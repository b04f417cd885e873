// Small text helpers shared by the line formats livefs reads (the journal, mountinfo).
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

}  // namespace livefs
