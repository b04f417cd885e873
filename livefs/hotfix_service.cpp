// The hotfix service: watches, adds, restore, and each change as a new hotfix layer.
#include "livefs/hotfix_service.h"

#include <sys/stat.h>

#include "common/atomic_file.h"
#include "common/log.h"
#include "livefs/sources.h"

namespace livefs::cli {

namespace fs = std::filesystem;

namespace {

std::shared_ptr<spdlog::logger> log() { return livefs::logger("hotfix"); }

// A rebuild writing files for a second is still one change set (one generation): a change
// set goes live once events pause for 10 ms, or after 2 s of a steady stream.
const inotify::DebounceOptions kDebounce{std::chrono::milliseconds(10),
                                         std::chrono::milliseconds(2000)};

fs::path absolute_source(const std::string& given) {
  return fs::absolute(given).lexically_normal();
}

}  // namespace

HotfixService::HotfixService(std::shared_ptr<store::ObjectStore> store,
                             overlay::Generations& generations, fs::path state,
                             std::function<Result<std::string>(const std::string&)> view_path)
    : store_(std::move(store)),
      generations_(generations),
      state_(std::move(state)),
      view_path_(std::move(view_path)),
      set_(std::make_unique<HotfixSet>(*store_)) {}

HotfixService::~HotfixService() { stop(); }

Status HotfixService::save_config_locked() const {
  HotfixConfig config;
  for (const auto& w : set_->watches())
    if (w.error.empty()) config.watches.push_back({w.source, w.at});
  for (const auto& a : set_->adds()) config.adds.push_back({a.source, a.at});
  return write_file_atomic(state_ / "hotfix.json", hotfix_config_text(config));
}

// Journals the hotfix layer as it is now and switches to it. The layer manifest joins
// `batch` (the new contents), so one syncfs makes both durable before the journal record.
Result<overlay::SwitchStats> HotfixService::commit_locked(const std::vector<std::string>& changed,
                                                          store::ObjectStore::Batch& batch,
                                                          Steps* steps) {
  Steps ignored;
  if (steps == nullptr) steps = &ignored;
  if (auto e = generations_.refusal()) return std::unexpected(*e);
  auto tree = set_->build();
  if (!tree) return std::unexpected(tree.error());
  store::ObjectId id;
  if (*tree) {
    auto saved = batch.put_bytes((*tree)->bytes());
    if (!saved) return std::unexpected(saved.error());
    // Made durable by the batch's sync below, or now when the batch has nothing to sync
    // (the same layer as once before, nothing new stored).
    if (auto st = store_->add_tree_root(*saved, batch.pending() == 0); !st)
      return std::unexpected(st.error());
    id = *saved;
  }
  steps->built = std::chrono::steady_clock::now();
  if (auto st = batch.commit(); !st) return std::unexpected(st.error());
  steps->stored = std::chrono::steady_clock::now();
  auto done = generations_.set_hotfix(std::move(*tree), id, changed);
  steps->journalled = std::chrono::steady_clock::now();
  if (!done) return std::unexpected(done.error());
  return done->stats;
}

Status HotfixService::start_loop_locked(uint64_t id, std::unique_ptr<inotify::WatchLoop> loop) {
  auto st = loop->start([this, id](inotify::ChangeSet changes) { on_change(id, changes); },
                        [this, id](const Error& e) { on_error(id, e); });
  if (!st) return st;
  loops_[id] = std::move(loop);
  return {};
}

void HotfixService::retire_locked(uint64_t id) {
  auto it = loops_.find(id);
  if (it == loops_.end()) return;
  retired_.push_back(std::move(it->second));
  loops_.erase(it);
}

Outcome<HotfixService::Watched> HotfixService::watch(const std::string& given_source,
                                                     const std::string& given_at) {
  fs::path source = absolute_source(given_source);
  auto at = view_path_(given_at);
  if (!at) return refused(at.error());
  if (auto st = require_dir(source, "hotfix source"); !st) return refused(st.error());
  std::unique_lock lock(mutex_);
  if (stopped_) return refused(make_error(ESHUTDOWN, "the daemon is stopping"));
  std::optional<uint64_t> replaced;  // a failed watch of the same source and place
  for (const auto& w : set_->watches()) {
    if (w.source != source || w.at != *at) continue;
    if (w.error.empty() || loops_.contains(w.id))
      return refused(make_error(EEXIST, source.string() + " is already watched at /" + *at));
    replaced = w.id;
  }
  // A watch that does not go live leaves no trace (nothing to restore, no loop running).
  auto before = std::make_unique<HotfixSet>(*set_);
  // Watch first, then import: nothing written in between is missed.
  auto loop = inotify::WatchLoop::open(source, kDebounce);
  if (!loop) return refused(with_context(loop.error(), "hotfix watch " + source.string()));
  // The import's objects and the layer naming them are made durable and rooted together.
  store::ObjectStore::Batch batch(*store_);
  auto id = set_->add_watch(source, *at, &batch);
  // A file written while it is imported: again (the loop already follows the source).
  for (int attempt = 0; !id && id.error().code == EAGAIN && attempt < 50; ++attempt)
    id = set_->add_watch(source, *at, &batch);
  if (!id) return refused(id.error());
  if (replaced) set_->drop_watch(*replaced);
  if (auto st = start_loop_locked(*id, std::move(*loop)); !st) {
    set_ = std::move(before);
    return refused(st.error());
  }
  auto stats = commit_locked({*at}, batch);
  if (!stats) {
    retire_locked(*id);
    set_ = std::move(before);
    return failed(stats.error());
  }
  if (auto st = save_config_locked(); !st) return failed(st.error());
  return Watched{source, *at, set_->watches().back().entries.size(), *stats};
}

Outcome<HotfixService::Added> HotfixService::add(const std::string& given_source,
                                                 const std::string& given_at) {
  fs::path source = absolute_source(given_source);
  auto at = view_path_(given_at);
  if (!at) return refused(at.error());
  std::unique_lock lock(mutex_);
  if (stopped_) return refused(make_error(ESHUTDOWN, "the daemon is stopping"));
  // An add that does not go live must not go live with a later change either.
  auto before = std::make_unique<HotfixSet>(*set_);
  store::ObjectStore::Batch batch(*store_);
  if (auto st = set_->add_file(source, *at, batch); !st) return refused(st.error());
  auto stats = commit_locked({*at}, batch);
  if (!stats) {
    set_ = std::move(before);
    return failed(stats.error());
  }
  if (auto st = save_config_locked(); !st) return failed(st.error());
  return Added{source, *at, *stats};
}

Outcome<HotfixService::Reset> HotfixService::reset(const std::optional<std::string>& given) {
  std::optional<std::string> prefix;
  if (given) {
    auto p = view_path_(*given);
    if (!p) return refused(p.error());
    prefix = *p;
  }
  std::unique_lock lock(mutex_);
  if (stopped_) return refused(make_error(ESHUTDOWN, "the daemon is stopping"));
  auto layer = generations_.hotfix_layer();
  if (set_->empty() && !layer) return refused(make_error(ENOENT, "no hotfix to reset"));
  std::vector<std::string> changed;
  if (layer) {
    for (size_t i = 1; i < layer->size(); ++i) {
      std::string p(layer->entry(i).path());
      if (!prefix || under_prefix(p, *prefix)) changed.push_back(p);
    }
  }
  auto removed = set_->remove(prefix);
  for (uint64_t id : removed) retire_locked(id);
  if (changed.empty() && removed.empty())
    return refused(make_error(ENOENT, "no hotfix under /" + prefix.value_or("")));
  store::ObjectStore::Batch batch(*store_);
  auto stats = commit_locked(changed, batch);
  if (!stats) return failed(stats.error());
  if (auto st = save_config_locked(); !st) return failed(st.error());
  return Reset{changed.size(), removed.size(), generations_.live_generation(), *stats};
}

HotfixService::Listing HotfixService::list(bool with_files) const {
  Listing out;
  auto layer = generations_.hotfix_layer();
  std::unique_lock lock(mutex_);
  for (const auto& w : set_->watches())
    out.watches.push_back({w.source, w.at, w.entries.size(), w.changes, w.last_change_ns, w.error});
  for (const auto& a : set_->adds()) out.adds.push_back({a.source, a.at});
  out.layer_entries = layer ? layer->size() : 0;
  if (with_files && layer) {
    for (size_t i = 1; i < layer->size(); ++i) {
      auto e = layer->entry(i);
      if (e.type() != store::EntryType::dir) out.files.emplace_back(e.path());
    }
  }
  return out;
}

// On a watch's own thread.
void HotfixService::on_change(uint64_t id, const inotify::ChangeSet& changes) {
  std::unique_lock lock(mutex_);
  if (stopped_ || !loops_.contains(id)) return;  // reset meanwhile
  if (changes.root_gone) {
    log()->warn("hotfix source of watch {} is gone: its layer is dropped", id);
    set_->fail_watch(id, "the source directory was removed or moved away");
    retire_locked(id);
    store::ObjectStore::Batch batch(*store_);
    if (auto st = commit_locked({}, batch); !st) log()->error("{}", st.error().message());
    (void)save_config_locked();
    return;
  }
  using std::chrono::steady_clock;
  auto locked = steady_clock::now();
  store::ObjectStore::Batch batch(*store_);
  auto changed = set_->apply(id, changes, batch);
  if (!changed) {
    log()->error("watch {}: {}", id, changed.error().message());
    return;
  }
  if (changed->empty()) return;
  auto imported = steady_clock::now();
  Steps steps;
  auto stats = commit_locked(*changed, batch, &steps);
  if (!stats) {
    log()->error("{}", stats.error().message());
    return;
  }
  auto ms = [](steady_clock::time_point a, steady_clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  log()->info(
      "watch {}: {} events, {} paths; {:.1f} ms from the last event: settle {:.1f}, "
      "import {:.1f}, layer {:.1f}, store {:.1f}, journal+switch {:.1f}",
      id, changes.events, changed->size(), ms(changes.last_event, steady_clock::now()),
      ms(changes.last_event, locked), ms(locked, imported), ms(imported, steps.built),
      ms(steps.built, steps.stored), ms(steps.stored, steps.journalled));
}

void HotfixService::on_error(uint64_t id, const Error& e) {
  std::unique_lock lock(mutex_);
  log()->error("watch {}: {}; it no longer follows its source", id, e.message());
  set_->set_error(id, e.message());
  retire_locked(id);
}

void HotfixService::restore(const HotfixConfig& config) {
  std::unique_lock lock(mutex_);
  if (stopped_) return;
  auto layer = generations_.hotfix_layer();
  for (const auto& a : config.adds) {
    // The content added then, not the file as it is now.
    if (layer) {
      if (auto e = layer->find(a.at); e) {
        set_->restore_add(a.source, a.at, e->to_entry());
        continue;
      }
    }
    log()->warn("add at /{} is not in the journalled layer: dropped", a.at);
  }
  std::vector<std::string> changed;
  store::ObjectStore::Batch batch(*store_);  // every watch's import, rooted with the layer
  for (const auto& w : config.watches) {
    auto loop = inotify::WatchLoop::open(w.source, kDebounce);
    auto id = loop ? set_->add_watch(w.source, w.at, &batch)
                   : Result<uint64_t>(std::unexpected(loop.error()));
    // A source being written while it is imported (EAGAIN: a file changed under the
    // import) is imported again: the loop already follows it, so nothing is missed.
    for (int attempt = 0; loop && !id && id.error().code == EAGAIN && attempt < 50; ++attempt)
      id = set_->add_watch(w.source, w.at, &batch);
    if (!id || !start_loop_locked(*id, std::move(*loop))) {
      log()->error("watch {} at /{} not restored: {}", w.source.string(), w.at,
                   id ? "watch failed" : id.error().message());
      continue;
    }
    changed.push_back(w.at);
  }
  auto tree = set_->build();
  bool same = tree && ((!*tree && !layer) || (*tree && layer && (*tree)->id() == layer->id()));
  if (!same) {
    if (auto st = commit_locked(changed, batch); !st) log()->error("{}", st.error().message());
  } else if (auto st = batch.commit(); !st) {
    log()->error("{}", st.error().message());
  }
}

void HotfixService::reap() {
  std::vector<std::unique_ptr<inotify::WatchLoop>> done;
  {
    std::unique_lock lock(mutex_);
    done.swap(retired_);
  }
  done.clear();
}

void HotfixService::stop() {
  std::vector<std::unique_ptr<inotify::WatchLoop>> done;
  {
    std::unique_lock lock(mutex_);
    stopped_ = true;
    for (auto& [id, loop] : loops_) done.push_back(std::move(loop));
    loops_.clear();
    for (auto& l : retired_) done.push_back(std::move(l));
    retired_.clear();
  }
  done.clear();
}

}  // namespace livefs::cli
