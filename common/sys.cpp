// The real system calls behind the Sys seam.
#include "common/sys.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

namespace livefs {

int Sys::openat(int dirfd, const char* path, int flags, mode_t mode) {
  return ::openat(dirfd, path, flags | O_CLOEXEC, mode);
}
ssize_t Sys::read(int fd, void* buf, size_t count) { return ::read(fd, buf, count); }
ssize_t Sys::pread(int fd, void* buf, size_t count, off_t offset) {
  return ::pread(fd, buf, count, offset);
}
ssize_t Sys::write(int fd, const void* buf, size_t count) { return ::write(fd, buf, count); }
ssize_t Sys::copy_file_range(int fd_in, off_t* off_in, int fd_out, off_t* off_out, size_t len) {
  return ::copy_file_range(fd_in, off_in, fd_out, off_out, len, 0);
}
int Sys::fsync(int fd) { return ::fsync(fd); }
int Sys::fdatasync(int fd) { return ::fdatasync(fd); }
int Sys::ftruncate(int fd, off_t length) { return ::ftruncate(fd, length); }
int Sys::syncfs(int fd) { return ::syncfs(fd); }
int Sys::fchmod(int fd, mode_t mode) { return ::fchmod(fd, mode); }
int Sys::fstat(int fd, struct stat* st) { return ::fstat(fd, st); }
int Sys::linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags) {
  return ::linkat(olddirfd, oldpath, newdirfd, newpath, flags);
}
int Sys::renameat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath) {
  return ::renameat(olddirfd, oldpath, newdirfd, newpath);
}
int Sys::renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
                   unsigned flags) {
  return ::renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}
int Sys::unlinkat(int dirfd, const char* path, int flags) { return ::unlinkat(dirfd, path, flags); }
int Sys::mkdirat(int dirfd, const char* path, mode_t mode) { return ::mkdirat(dirfd, path, mode); }

Sys& Sys::real() {
  static Sys sys;
  return sys;
}

}  // namespace livefs
