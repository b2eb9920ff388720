// A scratch directory of this test process, for files the code under test writes (LiveHost's
// node-<id>.db, the group commit's databases).
//
// ctest runs every GoogleTest case as its own process, two or more at a time, so a fixed path
// such as ::testing::TempDir() itself is shared by tests running side by side, and what one run
// leaves there is read by the next. The directory is named by the binary and the process id,
// emptied when first asked for, and removed when the process exits.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace msgsim::test {

// The directory path ends with '/'.
inline const std::string& scratch_dir(const std::string& binary_name) {
  struct Scratch {
    std::filesystem::path path;
    explicit Scratch(std::filesystem::path p) : path(std::move(p)) {
      std::filesystem::remove_all(path);
      std::filesystem::create_directories(path);
    }
    ~Scratch() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const Scratch scratch(std::filesystem::path(::testing::TempDir()) /
                               (binary_name + "-" + std::to_string(::getpid())));
  static const std::string with_slash = scratch.path.string() + "/";
  return with_slash;
}

}  // namespace msgsim::test
