// Stacking layers: the daemon serves two layers over the booted tree (the applied layer and,
// on top, a hotfix layer of a developer's files), while a View takes one. compose_layers
// folds the two into one layer that resolves the same way.
#pragma once

#include "common/error.h"
#include "store/tree.h"

namespace livefs::overlay {

// One layer equivalent to `upper` stacked on `lower` (both layers over `booted`): for every
// path, resolve_merged(booted, result, p) equals resolving p first through `upper` and,
// where upper has nothing to say, through lower then booted.
//
// `upper` holds only directories and non-directories (no whiteouts, no opaque directories:
// a hotfix layer adds and replaces, it never removes; EINVAL otherwise). Its directories
// merge with what is below (non-opaque). Its root entry is ignored (lower's is kept).
//
// Per path P of upper:
//  - a non-directory replaces whatever lower has at P, and lower's entries below P;
//  - a directory over a lower directory keeps lower's entry (attributes, opaque flag), so
//    the view stays what lower showed there, plus upper's entries inside;
//  - a directory over a lower whiteout or non-directory takes its place, opaque: what the
//    booted tree has below P stays hidden;
//  - a directory where lower has nothing is added structural (non-opaque: it merges with a
//    booted directory if one is visible there, and the view keeps showing that directory's
//    attributes).
// Costs O(|lower| + |upper|) plus the sort of Tree::build; `booted` is never read (the
// rules above only need lower's entries), it is a parameter for the contract.
Result<store::Tree> compose_layers(const store::Tree& booted, const store::Tree& lower,
                                   const store::Tree& upper);

}  // namespace livefs::overlay
