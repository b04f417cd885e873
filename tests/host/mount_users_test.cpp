// find_mount and parse_mountinfo on written tables; processes_using_mount on a real view that
// nobody serves any more (a stat through it would never return), with processes that use it
// by a working directory, a root directory, an open file and a mapping, and one that does not.
#include "host/mount_users.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <thread>

#include "overlay/filesystem.h"
#include "support/entries.h"
#include "support/temp_dir.h"

namespace livefs::host {
namespace {

using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

TEST(Mountinfo, ParsesEscapesOptionalFieldsAndSuperOptions) {
  auto mounts = parse_mountinfo(
      "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
      "90 27 0:52 / /tmp/a\\040b\\011c\\012d\\134e ro,nosuid,nodev - fuse.livefs livefs "
      "rw,user_id=0,group_id=0,allow_other\n"
      "garbage line\n"
      "91 27 x:y / /bad rw - ext4 /dev/x rw\n"
      "92 27 0:53 / /no-dash rw\n");
  ASSERT_EQ(mounts.size(), 2u);
  EXPECT_EQ(mounts[0].id, 27);
  EXPECT_EQ(mounts[0].parent_id, 1);
  EXPECT_EQ(mounts[0].dev, makedev(254, 0));
  EXPECT_EQ(mounts[0].mount_point, "/");
  EXPECT_EQ(mounts[0].fstype, "ext4");
  EXPECT_EQ(mounts[1].mount_point, "/tmp/a b\tc\nd\\e");
  EXPECT_EQ(mounts[1].dev, makedev(0, 52));
  EXPECT_EQ(mounts[1].options, "ro,nosuid,nodev");
  EXPECT_EQ(mounts[1].fstype, "fuse.livefs");
  EXPECT_EQ(mounts[1].super_options, "rw,user_id=0,group_id=0,allow_other");
}

TEST(Mountinfo, FindMountTakesTheTopOfStackedMounts) {
  TempDir tmp;
  write_file(tmp / "mountinfo",
             "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
             "40 27 0:60 / /usr rw - fuse.livefs livefs rw\n"  // over the root's /usr
             "41 40 0:61 / /usr rw - fuse.livefs livefs rw\n"  // over mount 40
             "42 27 0:62 / /usr/local rw - tmpfs tmpfs rw\n");
  auto top = find_mount("/usr", tmp / "mountinfo");
  ASSERT_TRUE(top) << top.error().message();
  EXPECT_EQ(top->id, 41);
  EXPECT_EQ(top->dev, makedev(0, 61));
  EXPECT_EQ(find_mount("/usr/", tmp / "mountinfo").value().id, 41);
  EXPECT_EQ(find_mount("/", tmp / "mountinfo").value().id, 27);
  auto none = find_mount("/var", tmp / "mountinfo");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ENOENT);
  EXPECT_FALSE(find_mount("/usr", tmp / "missing"));
}

// A child that uses the view in one way, says so on `ready`, then waits until the parent
// closes its end of `release`.
pid_t start_user(const std::function<bool()>& use, const int ready[2], const int release[2]) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  close(release[1]);
  char c = use() ? 'r' : 'x';
  if (write(ready[1], &c, 1) != 1) _exit(2);
  (void)read(release[0], &c, 1);
  _exit(0);
}

TEST(ProcessesUsingMount, FindsEveryKindOfUseWithoutAskingTheMount) {
  TempDir tmp;
  fs::path booted = tmp / "booted", mnt = tmp / "mnt";
  write_file(booted / "dir/file", std::string(1 << 16, 'f'));
  fs::create_directories(mnt);
  UniqueFd booted_fd(::open(booted.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(booted_fd);
  auto view = overlay::View::create(std::move(booted_fd), nullptr, *store::Tree::build({}), 0);
  auto mounted = overlay::Filesystem::mount({.mountpoint = mnt}, view);
  ASSERT_TRUE(mounted) << mounted.error().message();
  std::unique_ptr<overlay::Filesystem> fs = std::move(*mounted);
  std::thread server([&] { (void)fs->serve(); });
  auto mount = find_mount(fs->mountpoint());
  ASSERT_TRUE(mount) << mount.error().message();
  EXPECT_EQ(mount->fstype, "fuse.livefs");

  int ready[2], release[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(release, O_CLOEXEC), 0);
  std::string file = (mnt / "dir/file").string();
  std::string outside = tmp.path().string();
  std::vector<pid_t> users = {
      start_user([&] { return chdir((mnt / "dir").c_str()) == 0; }, ready, release),
      start_user(
          [&] {
            int keep = open(outside.c_str(), O_PATH | O_DIRECTORY);
            return chroot(mnt.c_str()) == 0 && fchdir(keep) == 0;  // root in, cwd out
          },
          ready, release),
      start_user([&] { return open(file.c_str(), O_RDONLY) >= 0; }, ready, release),
      start_user(
          [&] {
            int fd = open(file.c_str(), O_RDONLY);
            bool mapped =
                fd >= 0 && mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED;
            close(fd);
            return mapped;
          },
          ready, release),
  };
  pid_t bystander = start_user([&] { return chdir(outside.c_str()) == 0; }, ready, release);
  for (size_t i = 0; i < users.size() + 1; ++i) {
    char c = 0;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    ASSERT_EQ(c, 'r') << "a child could not set up its use of the view";
  }

  // A switch that changes "dir" and the root: the kernel's attributes of both are stale now,
  // so a stat of a user's cwd or root would be a request.
  ASSERT_TRUE(fs->switch_to(fs->current()->with_layer(
      livefs::testing::build_tree({livefs::testing::file("dir/added", "a")}), 1)));
  // Nobody serves the view from here on (the connection lives until `fs` is destroyed):
  // anything that asked it would wait forever. The scan runs in a child with an alarm, so a
  // scan that asks fails instead of hanging.
  fs->abort();
  server.join();
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  pid_t scanner = fork();
  if (scanner == 0) {
    alarm(60);
    auto found = processes_using_mount(mount->id, mount->dev);
    if (!found) _exit(1);
    for (pid_t p : *found) (void)!write(out[1], &p, sizeof p);
    _exit(0);
  }
  close(out[1]);
  std::vector<pid_t> found;
  pid_t p;
  while (read(out[0], &p, sizeof p) == sizeof p) found.push_back(p);
  close(out[0]);
  int status = 0;
  ASSERT_EQ(waitpid(scanner, &status, 0), scanner);
  fs.reset();  // ends the connection: the children's last requests fail instead of waiting
  close(release[1]);
  for (pid_t u : users) waitpid(u, nullptr, 0);
  waitpid(bystander, nullptr, 0);

  ASSERT_TRUE(WIFEXITED(status)) << "the scan asked the unserved mount (signal " << WTERMSIG(status)
                                 << ")";
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(std::ranges::is_sorted(found));
  for (size_t i = 0; i < users.size(); ++i)
    EXPECT_TRUE(std::ranges::binary_search(found, users[i])) << "user " << i << " not found";
  EXPECT_FALSE(std::ranges::binary_search(found, bystander));
  EXPECT_FALSE(std::ranges::binary_search(found, getpid()));
  ::umount2(mnt.c_str(), MNT_DETACH);
}

}  // namespace
}  // namespace livefs::host
