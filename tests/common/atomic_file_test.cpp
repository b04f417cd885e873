// Atomic replacement of small state files: each step failing (injected through the Sys
// seam), both kinds of temporary, concurrent writers, and bounded no-follow reads.
#include "common/atomic_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "support/temp_dir.h"

namespace livefs {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::TempDir;
using testing::write_file;

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

UniqueFd open_dir(const fs::path& dir) {
  return UniqueFd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

// Records every call of the seam, and fails the one numbered `fail_at` (from 0) the way a
// failing disk would; `no_tmpfile` plays a file system without O_TMPFILE.
class TracingSys : public Sys {
 public:
  int fail_at = -1;
  bool no_tmpfile = false;
  size_t write_max = SIZE_MAX;
  std::vector<std::string> calls;

  int openat(int dirfd, const char* path, int flags, mode_t mode) override {
    if ((flags & O_TMPFILE) == O_TMPFILE && no_tmpfile) {
      errno = EOPNOTSUPP;
      return -1;
    }
    if (fails((flags & O_TMPFILE) == O_TMPFILE ? "open(O_TMPFILE)"
              : (flags & O_CREAT)              ? "open(O_CREAT)"
                                               : "open",
              EACCES)) {
      return -1;
    }
    return Sys::openat(dirfd, path, flags, mode);
  }
  ssize_t write(int fd, const void* buf, size_t count) override {
    if (fails("write", ENOSPC)) return -1;
    return Sys::write(fd, buf, std::min(count, write_max));
  }
  int fchmod(int fd, mode_t mode) override {
    return fails("fchmod", EPERM) ? -1 : Sys::fchmod(fd, mode);
  }
  int fsync(int fd) override { return fails("fsync", EIO) ? -1 : Sys::fsync(fd); }
  int linkat(int a, const char* b, int c, const char* d, int e) override {
    return fails("linkat", EIO) ? -1 : Sys::linkat(a, b, c, d, e);
  }
  int renameat(int a, const char* b, int c, const char* d) override {
    return fails("renameat", EIO) ? -1 : Sys::renameat(a, b, c, d);
  }

 private:
  bool fails(const char* call, int code) {
    calls.push_back(call);
    if (static_cast<int>(calls.size()) - 1 != fail_at) return false;
    errno = code;
    return true;
  }
};

TEST(AtomicFile, WritesReplacesAndSetsTheModeExactly) {
  TempDir dir;
  auto fd = open_dir(dir.path());
  ASSERT_TRUE(write_file_atomic(fd.get(), "config.json", "first\n"));
  EXPECT_EQ(read_file(dir / "config.json"), "first\n");
  mode_t old_umask = ::umask(077);
  auto st = write_file_atomic(fd.get(), "config.json", "second, longer\n", 0644);
  ::umask(old_umask);
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(read_file(dir / "config.json"), "second, longer\n");
  struct stat s {};
  ASSERT_EQ(::stat((dir / "config.json").c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 07777, 0644u);
  ASSERT_TRUE(write_file_atomic(fd.get(), "config.json", ""));
  EXPECT_EQ(read_file(dir / "config.json"), "");
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"config.json"});
}

TEST(AtomicFile, PathFormAndAnOPathDirectory) {
  TempDir dir;
  ASSERT_TRUE(write_file_atomic(dir / "hotfix.json", "{}\n"));
  EXPECT_EQ(read_file(dir / "hotfix.json"), "{}\n");
  // The directory fsync works from an O_PATH descriptor too.
  UniqueFd path_fd(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(write_file_atomic(path_fd.get(), "hotfix.json", "[]\n"));
  EXPECT_EQ(read_file(dir / "hotfix.json"), "[]\n");
  auto missing = write_file_atomic(dir / "no" / "such", "x");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_NE(missing.error().context.find("no/such"), std::string::npos)
      << missing.error().message();
}

TEST(AtomicFile, ReplacesASymlinkItselfNeverItsTarget) {
  TempDir dir;
  write_file(dir / "secret", "untouched");
  fs::create_directories(dir / "state");
  fs::create_symlink(dir / "secret", dir / "state" / "config.json");
  ASSERT_TRUE(write_file_atomic(dir / "state" / "config.json", "mine"));
  EXPECT_EQ(read_file(dir / "secret"), "untouched");
  EXPECT_FALSE(fs::is_symlink(dir / "state" / "config.json"));
  EXPECT_EQ(read_file(dir / "state" / "config.json"), "mine");
}

TEST(AtomicFile, RefusesWhatIsNotOneFileName) {
  TempDir dir;
  auto fd = open_dir(dir.path());
  for (const char* name : {"", ".", "..", "a/b", "/etc/passwd"}) {
    auto st = write_file_atomic(fd.get(), name, "x");
    ASSERT_FALSE(st) << name;
    EXPECT_EQ(st.error().code, EINVAL) << name;
    auto r = read_file_limited(fd.get(), name, 100);
    ASSERT_FALSE(r) << name;
    EXPECT_EQ(r.error().code, EINVAL) << name;
  }
  EXPECT_TRUE(names_in(dir.path()).empty());
}

TEST(AtomicFile, ShortWritesAreCompleted) {
  TempDir dir;
  auto fd = open_dir(dir.path());
  std::string content(10000, 'q');
  for (bool no_tmpfile : {false, true}) {
    TracingSys sys;
    sys.write_max = 7;
    sys.no_tmpfile = no_tmpfile;
    ASSERT_TRUE(write_file_atomic(fd.get(), "f", content, 0600, sys));
    EXPECT_EQ(read_file(dir / "f"), content);
  }
}

// Every call of a successful replacement, made to fail in turn: before the rename the old
// file stays (or a fallback still gets the new one in whole); the rename failing keeps the
// old file; the directory fsync failing is reported with the new file in place. No
// temporary is ever left behind.
TEST(AtomicFile, FailureAtEachStepLeavesTheOldFileAndNoTemporary) {
  for (bool no_tmpfile : {false, true}) {
    SCOPED_TRACE(no_tmpfile ? "named temporary" : "O_TMPFILE");
    TempDir dir;
    auto fd = open_dir(dir.path());
    const std::string old_content = "old content\n", new_content = "the new content\n";
    TracingSys probe;
    probe.no_tmpfile = no_tmpfile;
    write_file(dir / "state.json", old_content, 0600);
    ASSERT_TRUE(write_file_atomic(fd.get(), "state.json", new_content, 0600, probe));
    const std::vector<std::string> trace = probe.calls;
    auto rename = std::find(trace.begin(), trace.end(), "renameat");
    ASSERT_NE(rename, trace.end());
    const int rename_at = static_cast<int>(rename - trace.begin());
    if (!no_tmpfile) {
      EXPECT_EQ(trace.front(), "open(O_TMPFILE)") << ::testing::PrintToString(trace);
    } else {
      EXPECT_EQ(trace.front(), "open(O_CREAT)") << ::testing::PrintToString(trace);
    }
    int errors = 0;
    for (int k = 0; k < static_cast<int>(trace.size()); ++k) {
      SCOPED_TRACE("failing call " + std::to_string(k) + ", " + trace[k]);
      write_file(dir / "state.json", old_content, 0600);
      TracingSys sys;
      sys.no_tmpfile = no_tmpfile;
      sys.fail_at = k;
      auto st = write_file_atomic(fd.get(), "state.json", new_content, 0600, sys);
      std::string now = read_file(dir / "state.json");
      if (k < rename_at) {
        EXPECT_EQ(now, st ? new_content : old_content);
        // The content's own steps have no fallback.
        if (trace[k] == "write" || trace[k] == "fsync" || trace[k] == "fchmod") {
          EXPECT_FALSE(st);
        }
      } else if (k == rename_at) {
        EXPECT_FALSE(st);
        EXPECT_EQ(now, old_content);
      } else {
        EXPECT_FALSE(st);
        EXPECT_EQ(now, new_content);
      }
      if (!st) {
        ++errors;
        EXPECT_NE(st.error().context.find("replace state.json"), std::string::npos)
            << st.error().message();
      }
      EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"state.json"});
    }
    EXPECT_GE(errors, 5);
  }
}

TEST(AtomicFile, WriteFailureOnARealFullFileSystemKeepsTheOldFile) {
  TempDir tmp;
  // A file system with no room: a small tmpfs, filled up.
  fs::path mnt = tmp / "small";
  fs::create_directories(mnt);
  ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=8k"), 0) << std::strerror(errno);
  struct Unmount {
    fs::path p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  write_file(mnt / "config.json", "old", 0600);
  {
    UniqueFd filler(::open((mnt / "filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    std::string block(4096, 'f');
    while (::write(filler.get(), block.data(), block.size()) > 0) {
    }
  }
  auto st = write_file_atomic(mnt / "config.json", std::string(100000, 'n'));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ENOSPC) << st.error().message();
  EXPECT_EQ(read_file(mnt / "config.json"), "old");
  EXPECT_EQ(names_in(mnt), (std::vector<std::string>{"config.json", "filler"}));
}

// Two writers of one name, and a reader: every read is one whole version. (A fixed
// temporary name fails this: both writers truncate and write the same file.)
TEST(AtomicFile, ConcurrentWritersNeverTearTheFile) {
  TempDir dir;
  auto fd = open_dir(dir.path());
  const size_t size = 256 * 1024;
  ASSERT_TRUE(write_file_atomic(fd.get(), "shared", std::string(size, 'a')));
  std::atomic<int> writers_left{2};
  std::atomic<int> failures{0};
  auto writer = [&](char c) {
    for (int i = 0; i < 100; ++i) {
      std::string content(size, static_cast<char>(c + i % 2));
      if (!write_file_atomic(fd.get(), "shared", content)) ++failures;
    }
    --writers_left;
  };
  std::thread w1(writer, 'b'), w2(writer, 'x');
  int reads = 0;
  while (writers_left.load() > 0 || reads < 10) {
    auto r = read_file_limited(fd.get(), "shared", size);
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_EQ(r->size(), size);
    ASSERT_EQ(r->find_first_not_of(r->front()), std::string::npos) << "a torn version";
    ++reads;
  }
  w1.join();
  w2.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"shared"});
}

TEST(ReadFileLimited, ReadsWithinTheLimit) {
  TempDir dir;
  auto fd = open_dir(dir.path());
  write_file(dir / "f", std::string(100, 'x'));
  auto r = read_file_limited(fd.get(), "f", 100);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, std::string(100, 'x'));
  auto big = read_file_limited(fd.get(), "f", 99);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, EFBIG);
  write_file(dir / "large", std::string(200000, 'y'));
  auto large = read_file_limited(dir / "large", 200000);
  ASSERT_TRUE(large);
  EXPECT_EQ(large->size(), 200000u);
  write_file(dir / "empty", "");
  EXPECT_EQ(*read_file_limited(dir / "empty", 0), "");
}

TEST(ReadFileLimited, MissingIsENOENT) {
  TempDir dir;
  auto r = read_file_limited(dir / "hotfix.json", 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().context.find("hotfix.json"), std::string::npos);
}

TEST(ReadFileLimited, RefusesSymlinksFifosAndDirectories) {
  TempDir dir;
  write_file(dir / "secret", "no");
  fs::create_symlink(dir / "secret", dir / "link");
  auto link = read_file_limited(dir / "link", 100);
  ASSERT_FALSE(link);
  EXPECT_EQ(link.error().code, ELOOP);
  // A FIFO must not block the reader waiting for a writer.
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  auto fifo = read_file_limited(dir / "fifo", 100);
  ASSERT_FALSE(fifo);
  EXPECT_EQ(fifo.error().code, EINVAL);
  fs::create_directories(dir / "sub");
  auto sub = read_file_limited(dir / "sub", 100);
  ASSERT_FALSE(sub);
  EXPECT_EQ(sub.error().code, EINVAL);
}

}  // namespace
}  // namespace livefs
