// `livefs store import|verify|stats|gc` and `livefs diff OLD NEW`: the object store and
// manifests from the command line.
#include <sys/stat.h>

#include <chrono>
#include <memory>
#include <optional>

#include "livefs/cli_output.h"
#include "livefs/commands.h"
#include "store/diff.h"
#include "store/import.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::cli {
namespace {

using nlohmann::json;

// A tree named on the command line: a directory (scanned, nothing stored) or a tree id.
Result<store::Tree> resolve_tree(const std::string& arg, const store::ObjectStore* store) {
  struct stat st;
  if (::stat(arg.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    auto scanned =
        store::import_directory(arg, nullptr, {.store_objects = false, .progress = true});
    if (!scanned) return std::unexpected(scanned.error());
    return std::move(scanned->tree);
  }
  auto id = store::ObjectId::parse_hex(arg);
  if (!id) return fail(ENOENT, "diff(" + arg + "): neither a directory nor a tree id");
  if (store == nullptr) return fail(EINVAL, "diff(" + arg + "): a tree id needs --store");
  return store::Tree::load(*store, *id);
}

char change_letter(store::ChangeKind kind) {
  switch (kind) {
    case store::ChangeKind::added:
      return 'A';
    case store::ChangeKind::removed:
      return 'D';
    case store::ChangeKind::modified:
      return 'M';
    case store::ChangeKind::metadata:
      return 'm';
    case store::ChangeKind::type_changed:
      return 'T';
  }
  return '?';
}

}  // namespace

void register_store_commands(CLI::App& app, int& status) {
  auto* group = app.add_subcommand("store", "The content-addressed object store");
  group->require_subcommand(1);

  {
    struct Args {
      std::string store, dir;
      bool link = false;
    };
    auto a = std::make_shared<Args>();
    auto* cmd = group->add_subcommand("import", "Import a directory tree; prints its tree id");
    cmd->add_option("--store", a->store, "Store directory")->required();
    cmd->add_flag("--link", a->link,
                  "Hard-link files into the store (same file system, immutable source)");
    cmd->add_option("TREE_DIR", a->dir, "Directory to import")->required();
    cmd->callback([a, &status] {
      auto store = store::ObjectStore::open(a->store);
      if (!store) return void(status = report(store.error()));
      auto result = store::import_directory(a->dir, &*store, {.link = a->link, .progress = true});
      if (!result) return void(status = report(result.error()));
      // result->lock keeps a gc off the new objects until the tree is rooted.
      auto id = result->tree.save_rooted(*store);
      if (!id) return void(status = report(id.error()));
      std::puts(id->hex().c_str());
    });
  }

  {
    auto dir = std::make_shared<std::string>();
    auto* cmd = group->add_subcommand("verify", "Rehash every object; report each mismatch");
    cmd->add_option("--store", *dir, "Store directory")->required();
    cmd->callback([dir, &status] {
      auto store = store::ObjectStore::open(*dir);
      if (!store) return void(status = report(store.error()));
      auto rep = store->verify();
      if (!rep) return void(status = report(rep.error()));
      for (const auto& p : rep->problems)
        std::fprintf(stderr, "livefs: verify: %s: %s\n", p.path.c_str(), p.reason.c_str());
      std::printf("%llu objects checked, %zu problems\n",
                  static_cast<unsigned long long>(rep->checked), rep->problems.size());
      status = rep->ok() ? kExitOk : kExitError;
    });
  }

  {
    auto dir = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    auto* cmd = group->add_subcommand("stats", "Objects, bytes and trees in the store");
    cmd->add_option("--store", *dir, "Store directory")->required();
    cmd->add_flag("--json", *as_json, "JSON output");
    cmd->callback([dir, as_json, &status] {
      auto store = store::ObjectStore::open(*dir);
      if (!store) return void(status = report(store.error()));
      auto s = store->stats();
      if (!s) return void(status = report(s.error()));
      if (*as_json)
        print_json({{"objects", s->objects}, {"bytes", s->bytes}, {"trees", s->trees}});
      else
        std::printf("objects: %llu\nbytes: %llu\ntrees: %llu\n",
                    static_cast<unsigned long long>(s->objects),
                    static_cast<unsigned long long>(s->bytes),
                    static_cast<unsigned long long>(s->trees));
    });
  }

  {
    struct Args {
      std::string store;
      bool json = false;
      double wait = 30;
    };
    auto a = std::make_shared<Args>();
    auto* cmd = group->add_subcommand(
        "gc",
        "Remove objects that no stored or pinned tree references (and stale temporary files)");
    cmd->add_option("--store", a->store, "Store directory")->required();
    cmd->add_flag("--json", a->json, "JSON output");
    cmd->add_option("--wait", a->wait,
                    "Seconds to wait for imports and a running daemon's writes to finish "
                    "(then fail with EBUSY)")
        ->check(CLI::NonNegativeNumber);
    cmd->callback([a, &status] {
      auto store = store::ObjectStore::open(a->store);
      if (!store) return void(status = report(store.error()));
      store::GcOptions options;
      options.lock_wait = std::chrono::milliseconds(static_cast<int64_t>(a->wait * 1000));
      options.on_wait = [&] {
        std::fprintf(stderr,
                     "livefs: store gc: waiting up to %gs for writers (an import, a running "
                     "daemon) to finish\n",
                     a->wait);
      };
      auto rep = store->gc(options);
      if (!rep) return void(status = report(rep.error()));
      for (const auto& d : rep->dangling)
        std::fprintf(stderr, "livefs: warning: gc: %s %s: %s (nothing is kept for it)\n",
                     d.pinned ? "pinned tree" : "tree root", d.tree.hex().c_str(),
                     d.reason.c_str());
      if (a->json) {
        json dangling = json::array();
        for (const auto& d : rep->dangling)
          dangling.push_back({{"tree", d.tree.hex()}, {"pinned", d.pinned}, {"reason", d.reason}});
        print_json({{"kept", rep->kept},
                    {"removed", rep->removed},
                    {"bytes_freed", rep->bytes_freed},
                    {"roots", rep->roots},
                    {"pinned", rep->pinned},
                    {"stale_pins", rep->stale_pins},
                    {"dangling", dangling}});
      } else {
        std::printf("kept %llu, removed %llu objects (%llu bytes)\n",
                    static_cast<unsigned long long>(rep->kept),
                    static_cast<unsigned long long>(rep->removed),
                    static_cast<unsigned long long>(rep->bytes_freed));
      }
    });
  }

  {
    struct Args {
      std::string store, old_tree, new_tree;
      bool json = false;
    };
    auto a = std::make_shared<Args>();
    auto* cmd = app.add_subcommand("diff", "What changed between two trees");
    cmd->add_option("--store", a->store, "Store directory (to name trees by id)");
    cmd->add_option("OLD", a->old_tree, "Directory or tree id")->required();
    cmd->add_option("NEW", a->new_tree, "Directory or tree id")->required();
    cmd->add_flag("--json", a->json, "JSON output");
    cmd->callback([a, &status] {
      std::optional<store::ObjectStore> store;
      if (!a->store.empty()) {
        auto opened = store::ObjectStore::open(a->store);
        if (!opened) return void(status = report(opened.error()));
        store.emplace(std::move(*opened));
      }
      auto old_tree = resolve_tree(a->old_tree, store ? &*store : nullptr);
      if (!old_tree) return void(status = report(old_tree.error()));
      auto new_tree = resolve_tree(a->new_tree, store ? &*store : nullptr);
      if (!new_tree) return void(status = report(new_tree.error()));
      auto changes = store::diff(*old_tree, *new_tree);
      if (a->json) {
        json out = json::array();
        for (const auto& c : changes)
          out.push_back({{"path", c.path}, {"kind", store::change_name(c.kind)}});
        print_json(out);
      } else {
        for (const auto& c : changes) std::printf("%c %s\n", change_letter(c.kind), c.path.c_str());
      }
    });
  }
}

}  // namespace livefs::cli
