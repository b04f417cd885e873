// The seam for the system calls on the durable write paths (the store, the journal, atomic
// file replacement), so that disk-full, EIO and short writes can be injected in tests
// without a special file system. Production code uses Sys::real(); tests subclass Sys and
// override the calls they want to fail.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>

namespace livefs {

class Sys {
 public:
  virtual ~Sys() = default;
  // Each returns what the system call returns and leaves errno as it does.
  virtual int openat(int dirfd, const char* path, int flags, mode_t mode);
  virtual ssize_t read(int fd, void* buf, size_t count);
  virtual ssize_t pread(int fd, void* buf, size_t count, off_t offset);
  virtual ssize_t write(int fd, const void* buf, size_t count);
  virtual ssize_t copy_file_range(int fd_in, off_t* off_in, int fd_out, off_t* off_out, size_t len);
  virtual int fsync(int fd);
  virtual int fdatasync(int fd);
  virtual int ftruncate(int fd, off_t length);
  virtual int syncfs(int fd);
  virtual int fchmod(int fd, mode_t mode);
  virtual int fstat(int fd, struct stat* st);
  virtual int linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
                     int flags);
  virtual int renameat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath);
  virtual int renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
                        unsigned flags);
  virtual int unlinkat(int dirfd, const char* path, int flags);
  virtual int mkdirat(int dirfd, const char* path, mode_t mode);

  // The process-wide real implementation.
  static Sys& real();
};

}  // namespace livefs
