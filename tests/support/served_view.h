// A view of a booted directory (with a layer) mounted and served in this process until
// destroyed: for tests that need a real mount and nothing else of a fixture.
#pragma once

#include <fcntl.h>
#include <sys/mount.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "overlay/filesystem.h"
#include "overlay/view.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::testing {

class ServedView {
 public:
  ServedView(const std::filesystem::path& booted, std::shared_ptr<const store::ObjectStore> store,
             store::Tree layer, const std::filesystem::path& mnt)
      : mnt_(mnt) {
    UniqueFd fd(::open(booted.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    auto view = overlay::View::create(std::move(fd), std::move(store), std::move(layer), 0);
    auto mounted = overlay::Filesystem::mount({.mountpoint = mnt}, view);
    if (!mounted) {
      error_ = mounted.error().message();
      return;
    }
    fs_ = std::move(*mounted);
    server_ = std::thread([this] { (void)fs_->serve(); });
  }
  // Detaches the mount and waits until its last user lets go.
  ~ServedView() {
    if (fs_) {
      fs_->stop();
      if (server_.joinable()) server_.join();
      fs_.reset();
    }
    ::umount2(mnt_.c_str(), MNT_DETACH);
  }
  ServedView(const ServedView&) = delete;
  ServedView& operator=(const ServedView&) = delete;

  bool ok() const { return fs_ != nullptr; }
  const std::string& error() const { return error_; }
  overlay::Filesystem& fs() { return *fs_; }

 private:
  std::filesystem::path mnt_;
  std::unique_ptr<overlay::Filesystem> fs_;
  std::thread server_;
  std::string error_;
};

}  // namespace livefs::testing
