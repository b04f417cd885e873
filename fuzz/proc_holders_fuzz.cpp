// The /proc reader of the holder scan, host::find_holders (by device and inode), over a
// made-up /proc whose one process has the input's maps, comm, cgroup, exe link, fd links,
// fdinfo and mountinfo.
//
// The input is in fuzz_support.h's split_files format:
//   ==> maps <==       /proc/PID/maps (input without headers is taken as maps)
//   ==> comm <==       /proc/PID/comm
//   ==> cgroup <==     /proc/PID/cgroup
//   ==> exe <==        the exe link's target (one line)
//   ==> fd/3 <==       an fd link's target (one line)
//   ==> fdinfo/3 <==   /proc/PID/fdinfo/3 ("mnt_id:" and "ino:" lines)
//   ==> mountinfo <==  /proc/PID/mountinfo (mount ids to devices for find_holders)
// The files the scan looks for are devices and inodes that the seeds (fuzz/corpus/proc_holders)
// name.
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "host/holders.h"

namespace fs = std::filesystem;

namespace {

// What find_holders looks for: devices and inodes a seed's maps, fdinfo and mountinfo name.
const livefs::host::HolderQuery kIdQuery = {
    .files = {{.dev = makedev(0, 0x63), .ino = 1234, .path = "usr/lib/libold.so.1"},
              {.dev = makedev(0, 99), .ino = 5678, .path = "usr/bin/tool"},
              {.dev = makedev(0xfe, 0), .ino = 247498, .path = "usr/bin/head"},
              {.dev = makedev(0xfe, 0), .ino = 5678, .path = "usr/lib/libold.so.1"}}};

fs::path g_proc;  // this process's made-up /proc
pid_t g_pid = 0;  // the one process in it

void write_file(const fs::path& path, std::string_view content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  ::close(fd);
}

// A link target from an input file: its first line, as symlink(2) can store it.
std::string link_target(std::string_view content) {
  content = content.substr(0, content.find('\n'));
  content = content.substr(0, content.find('\0'));
  return std::string(content.substr(0, 4000));
}

std::string trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

std::string unit_of(std::string_view cgroup) { return livefs::host::unit_from_cgroup(cgroup); }

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  // The made-up /proc is private to this process.
  // On tmpfs when there is one: ext4 makes each rewrite of a truncated file wait (several ms:
  // a tenth of the speed).
  std::string proc = fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
  proc += "/livefs-fuzz-proc-XXXXXX";
  FUZZ_CHECK(::mkdtemp(proc.data()) != nullptr);
  g_proc = proc;
  g_pid = ::getpid() == 4242 ? 4243 : 4242;  // never this process: the scan skips itself
  fs::create_directories(g_proc / std::to_string(g_pid) / "fd");
  fs::create_directories(g_proc / std::to_string(g_pid) / "fdinfo");
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_proc, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto files =
      livefs::fuzz::split_files(std::string_view(reinterpret_cast<const char*>(data), size));
  if (auto bare = files.extract(""); !bare.empty() && !files.contains("maps"))
    files.emplace("maps", std::move(bare.mapped()));

  fs::path pid_dir = g_proc / std::to_string(g_pid);
  std::string maps = files["maps"], comm = files["comm"], cgroup = files["cgroup"];
  write_file(pid_dir / "maps", maps);
  write_file(pid_dir / "comm", comm);
  write_file(pid_dir / "cgroup", cgroup);
  std::vector<fs::path> links;
  for (const auto& [name, content] : files) {
    fs::path link;
    if (name == "exe") {
      link = pid_dir / "exe";
    } else if (name.starts_with("fd/") && name.size() > 3 &&
               name.find_first_of("/\0", 3, 2) == std::string::npos && name != "fd/." &&
               name != "fd/..") {
      link = pid_dir / name;
    } else {
      continue;
    }
    std::string target = link_target(content);
    if (target.empty() || ::symlink(target.c_str(), link.c_str()) != 0) continue;
    links.push_back(link);
  }

  // fdinfo files, and the mount table find_holders reads for mount ids it does not know.
  std::vector<fs::path> infos;
  std::string mountinfo = files["mountinfo"];
  write_file(pid_dir / "mountinfo", mountinfo);
  for (const auto& [name, content] : files) {
    // A name the file system cannot hold (longer than NAME_MAX) is no fdinfo file either.
    if (!name.starts_with("fdinfo/") || name.size() <= 7 || name.size() - 7 > NAME_MAX ||
        name.find_first_of("/\0", 7, 2) != std::string::npos || name == "fdinfo/." ||
        name == "fdinfo/..")
      continue;
    infos.push_back(pid_dir / name);
    write_file(infos.back(), content);
  }

  auto by_id = livefs::host::find_holders(kIdQuery, g_proc);
  for (const fs::path& link : links) ::unlink(link.c_str());
  for (const fs::path& info : infos) ::unlink(info.c_str());

  // find_holders: only the query's paths, each (path, how) once, a mapping only where a maps
  // line names a file of the query, a descriptor only where its fdinfo and link exist.
  FUZZ_CHECK(by_id.has_value());
  std::vector<std::pair<dev_t, ino_t>> mapped_ids;
  {
    std::string_view rest = maps;
    while (!rest.empty()) {
      size_t nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
      dev_t dev = 0;
      ino_t ino = 0;
      if (livefs::host::parse_maps_line(line, &dev, &ino)) mapped_ids.emplace_back(dev, ino);
    }
  }
  for (size_t i = 0; i < by_id->size(); ++i) {
    const livefs::host::Holder& h = (*by_id)[i];
    FUZZ_CHECK(h.pid == g_pid);
    FUZZ_CHECK(h.command == trim(comm));
    FUZZ_CHECK(h.unit == unit_of(cgroup));
    FUZZ_CHECK(std::any_of(kIdQuery.files.begin(), kIdQuery.files.end(),
                           [&](const auto& f) { return f.path == h.path; }));
    if (h.how == "mapped") {
      FUZZ_CHECK(std::any_of(kIdQuery.files.begin(), kIdQuery.files.end(), [&](const auto& f) {
        return f.path == h.path && std::find(mapped_ids.begin(), mapped_ids.end(),
                                             std::pair(f.dev, f.ino)) != mapped_ids.end();
      }));
    } else if (h.how.starts_with("fd ")) {
      std::string fd = h.how.substr(3);
      FUZZ_CHECK(files.contains("fdinfo/" + fd) && files.contains("fd/" + fd));
    } else {
      FUZZ_CHECK(h.how == "exe");
    }
    for (size_t j = 0; j < i; ++j) {
      const livefs::host::Holder& o = (*by_id)[j];
      FUZZ_CHECK(!(o.path == h.path && o.how == h.how));
      FUZZ_CHECK(o.pid <= h.pid);
    }
  }
  // The parsers on raw input: no crash, and an fdinfo without the lines gives the defaults.
  livefs::host::FdInfo info = livefs::host::parse_fdinfo(maps);
  if (maps.find("mnt_id:") == std::string::npos) FUZZ_CHECK(info.mnt_id == -1);
  if (maps.find("ino:") == std::string::npos) FUZZ_CHECK(info.ino == 0);

  return 0;
}
