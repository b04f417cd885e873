// Generations: the journal, the live layers and the ordered, durable-before-visible changes.
#include "overlay/generations.h"

#include "common/log.h"
#include "overlay/compose.h"

namespace livefs::overlay {

namespace {

std::shared_ptr<spdlog::logger> log() { return livefs::logger("generations"); }

}  // namespace

Generations::Generations(std::shared_ptr<store::ObjectStore> store, store::Tree empty_layer,
                         Journal journal)
    : store_(std::move(store)),
      empty_layer_(std::move(empty_layer)),
      journal_(std::move(journal)),
      applied_(empty_layer_) {}

Result<std::unique_ptr<Generations>> Generations::open(std::shared_ptr<store::ObjectStore> store,
                                                       store::Tree empty_layer,
                                                       const Options& options) {
  auto journal = Journal::open(options.journal, options.booted_identity, options.unidentified,
                               Sys::real(), options.earlier_identity);
  if (!journal) return std::unexpected(with_context(journal.error(), "journal"));
  std::unique_ptr<Generations> g(
      new Generations(std::move(store), std::move(empty_layer), std::move(*journal)));
  const JournalState& st = g->journal_.state();
  if (!st.note.empty()) log()->warn("{}", st.note);
  for (const auto& w : st.warnings) log()->warn("{}", w);
  if (st.error) {
    log()->error("{}: serving generation 0", st.error->message());
    return g;
  }
  const Generation& live = g->journal_.live();
  if (live.number != 0) {
    auto layer = store::Tree::load(*g->store_, live.layer);
    if (!layer) {
      g->layer_error_ =
          with_context(layer.error(), "layer of generation " + std::to_string(live.number));
      log()->error("{}: serving generation 0", g->layer_error_->message());
      return g;
    }
    g->applied_ = std::move(*layer);
    g->live_ = live.number;
  }
  if (!st.hotfix_layer.is_zero()) {
    auto hot = store::Tree::load(*g->store_, st.hotfix_layer);
    if (!hot) {
      log()->error("{}: the hotfix layer is not served",
                   with_context(hot.error(), "hotfix layer").message());
    } else {
      g->hotfix_ = std::move(*hot);
    }
  }
  return g;
}

void Generations::set_switch(Switch fn) {
  std::lock_guard lock(mutex_);
  switch_ = std::move(fn);
}

void Generations::set_on_changed(ChangedPaths fn) {
  std::lock_guard lock(mutex_);
  on_changed_ = std::move(fn);
}

Result<store::Tree> Generations::served_locked() const {
  if (!hotfix_) return applied_;
  // The booted manifest is not read by compose_layers (its rules need the lower layer's
  // entries only): the empty layer stands in for it.
  return compose_layers(empty_layer_, applied_, *hotfix_);
}

Result<store::Tree> Generations::served_layer() const {
  std::lock_guard lock(mutex_);
  return served_locked();
}

uint64_t Generations::live_generation() const {
  std::lock_guard lock(mutex_);
  return live_;
}

store::Tree Generations::applied_layer() const {
  std::lock_guard lock(mutex_);
  return applied_;
}

std::optional<store::Tree> Generations::hotfix_layer() const {
  std::lock_guard lock(mutex_);
  return hotfix_;
}

std::optional<Error> Generations::refusal_locked() const {
  if (const auto& e = journal_.state().error) {
    return make_error(
        EBADMSG, "journal is corrupt, serving generation 0 and refusing changes: " + e->context);
  }
  if (layer_error_) return with_context(*layer_error_, "refusing changes");
  return std::nullopt;
}

std::optional<Error> Generations::refusal() const {
  std::lock_guard lock(mutex_);
  return refusal_locked();
}

Result<SwitchStats> Generations::publish_locked(store::Tree applied, uint64_t generation,
                                                std::optional<store::Tree> hotfix) {
  if (!switch_) return fail(EINVAL, "no view to switch yet");
  store::Tree old_applied = std::move(applied_);
  std::optional<store::Tree> old_hotfix = std::move(hotfix_);
  applied_ = std::move(applied);
  hotfix_ = std::move(hotfix);
  auto served = served_locked();
  Result<SwitchStats> stats = served ? switch_(std::move(*served), generation)
                                     : Result<SwitchStats>(std::unexpected(served.error()));
  if (!stats) {
    applied_ = std::move(old_applied);
    hotfix_ = std::move(old_hotfix);
    return stats;
  }
  live_ = generation;
  last_switch_ = *stats;
  log()->info("switched generation {} -> {}: {} paths, {} invalidations, {:.6f}s",
              stats->from_generation, stats->to_generation, stats->changed_paths,
              stats->invalidations, stats->seconds);
  return stats;
}

Result<SwitchStats> Generations::publish_live() {
  std::lock_guard lock(mutex_);
  return publish_locked(applied_, live_, hotfix_);
}

Result<Generations::Changed> Generations::apply(const store::Tree& layer,
                                                const std::vector<std::string>& paths,
                                                const BeforeCommit& before_commit) {
  std::lock_guard lock(mutex_);
  if (auto e = refusal_locked()) return std::unexpected(*e);
  // Durable before visible: the layer object, then the journal record, then the switch.
  auto id = layer.save_rooted(*store_);
  if (!id) return std::unexpected(with_context(id.error(), "save layer"));
  if (before_commit) {
    auto planned = journal_.prepare(JournalOp::apply, *id, {});
    if (!planned) return std::unexpected(planned.error());
    if (auto st = before_commit(planned->generation); !st) return std::unexpected(st.error());
  }
  auto record = journal_.commit(JournalOp::apply, *id, paths);
  if (!record) return std::unexpected(record.error());
  auto stats = publish_locked(layer, record->generation, hotfix_);
  if (!stats) {
    return std::unexpected(with_context(stats.error(), "generation " +
                                                           std::to_string(record->generation) +
                                                           " is journalled but the switch failed"));
  }
  if (on_changed_) on_changed_(paths);
  return Changed{record->generation, *stats, {}};
}

Result<Generations::Changed> Generations::go_back(JournalOp op, std::optional<uint64_t> to) {
  std::lock_guard lock(mutex_);
  if (auto e = refusal_locked()) return std::unexpected(*e);
  if (to && op != JournalOp::rollback) return fail(EINVAL, "a target generation is for rollback");
  auto planned = to ? journal_.prepare_rollback_to(*to) : journal_.prepare(op, {}, {});
  if (!planned) return std::unexpected(planned.error());
  store::Tree layer = empty_layer_;
  if (planned->generation != 0) {
    auto loaded = store::Tree::load(*store_, planned->layer);
    if (!loaded) {
      return std::unexpected(with_context(
          loaded.error(), "layer of generation " + std::to_string(planned->generation)));
    }
    layer = std::move(*loaded);
  }
  // What leaves the view: the generations popped.
  std::vector<std::string> left;
  std::vector<uint64_t> popped;
  for (const auto& g : journal_.state().stack) {
    if (g.number <= planned->generation) continue;
    left.insert(left.end(), g.paths.begin(), g.paths.end());
    popped.insert(popped.begin(), g.number);
  }
  auto record = journal_.commit_prepared(std::move(*planned));
  if (!record) return std::unexpected(record.error());
  auto stats = publish_locked(std::move(layer), record->generation, hotfix_);
  if (!stats) return std::unexpected(stats.error());
  if (on_changed_) on_changed_(left);
  return Changed{record->generation, *stats, std::move(popped)};
}

Result<Generations::Changed> Generations::set_hotfix(std::optional<store::Tree> hotfix,
                                                     const store::ObjectId& id,
                                                     const std::vector<std::string>& changed) {
  std::lock_guard lock(mutex_);
  if (auto e = refusal_locked()) return std::unexpected(*e);
  auto record = journal_.commit(JournalOp::hotfix, id, changed);
  if (!record) return std::unexpected(record.error());
  // Only the live hotfix layer is a durable gc root: an edit loop must not keep every
  // version across restarts. The layer it replaces stays pinned for this process's life: a
  // process may still have one of its files open (an open file keeps its old content), and
  // the kernel then reads its objects.
  if (hotfix_ && hotfix_->id() != id) {
    if (auto st = store_->pin(hotfix_->id()); !st)
      log()->warn("hotfix: {}", st.error().message());
    else if (auto rm = store_->remove_tree_root(hotfix_->id()); !rm)
      log()->warn("hotfix: {}", rm.error().message());
  }
  auto stats = publish_locked(applied_, live_, std::move(hotfix));
  if (!stats) return std::unexpected(stats.error());
  if (on_changed_) on_changed_(changed);
  return Changed{live_, *stats, {}};
}

std::vector<uint64_t> Generations::stack_numbers() const {
  std::lock_guard lock(mutex_);
  std::vector<uint64_t> out;
  for (const auto& g : journal_.state().stack) out.push_back(g.number);
  return out;
}

Generations::Report Generations::report(size_t history_limit) const {
  std::lock_guard lock(mutex_);
  const JournalState& st = journal_.state();
  Report r;
  r.live_generation = live_;
  r.stack = st.stack;
  size_t first = st.history.size() > history_limit ? st.history.size() - history_limit : 0;
  r.history.assign(st.history.begin() + static_cast<std::ptrdiff_t>(first), st.history.end());
  r.history_records = st.history_records;
  r.warnings = st.warnings;
  r.note = st.note;
  r.set_aside = st.set_aside;
  if (st.error) r.journal_error = st.error->message();
  if (layer_error_) r.journal_error = layer_error_->message();
  r.last_switch = last_switch_;
  r.hotfix_entries = hotfix_ ? hotfix_->size() : 0;
  return r;
}

}  // namespace livefs::overlay
