"""Grouping the windows a detector accepts into boxes, exactly as OpenCV does, without its quadratic cost.

OpenCV groups the windows a detector accepts with cv::partition, which compares every pair: on
crafted content (a tiled eye, 100k accepted windows in 1600x1600) that alone took 27 s. group()
gives the same boxes, scores and order, comparing only windows of near sizes in nearby cells.
"""

from __future__ import annotations

import math

import numpy as np

# What detectMultiScale uses by default: the similarity of two windows is cv::SimilarRects(GROUP_EPS).
GROUP_EPS = 0.2


def group(rects, threshold: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cv::groupRectangles(rects, threshold, 0.2) as cascades use it (score: windows in the group),
    or with `weights` HOGDescriptor::groupRectangles (score: the best weight in the group)."""
    rects = np.asarray(rects, np.int64).reshape(-1, 4)
    if threshold <= 0 or len(rects) == 0:
        return rects, (np.ones(len(rects), np.int64) if weights is None else np.asarray(weights, np.float64))
    labels = _partition(rects)
    classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=classes)
    sums = np.stack([np.bincount(labels, weights=rects[:, k], minlength=classes) for k in range(4)], axis=1)
    if weights is None:  # averaged in single precision, as cv::groupRectangles does
        mean = sums.astype(np.float32) * (np.float32(1) / counts.astype(np.float32))[:, None]
        scores = counts
    else:
        mean = sums * (1.0 / counts)[:, None]
        scores = np.full(classes, -np.inf)
        np.maximum.at(scores, labels, np.asarray(weights, np.float64))
    mean = np.rint(mean).astype(np.int64)  # cvRound: halves to even
    kept = np.flatnonzero(counts > threshold)
    kept = kept[~_nested(mean[kept], counts[kept])]
    return mean[kept], scores[kept]


def _nested(rects: np.ndarray, counts: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Groups inside another group (grown by 20%) that has more windows: OpenCV drops them."""
    grow_x, grow_y = np.rint(rects[:, 2] * GROUP_EPS), np.rint(rects[:, 3] * GROUP_EPS)
    nested = np.zeros(len(rects), bool)
    for start in range(0, len(rects), chunk):
        r, n = rects[start:start + chunk, None], counts[start:start + chunk, None]
        inside = ((r[..., 0] >= rects[:, 0] - grow_x) & (r[..., 1] >= rects[:, 1] - grow_y)
                  & (r[..., 0] + r[..., 2] <= rects[:, 0] + rects[:, 2] + grow_x)
                  & (r[..., 1] + r[..., 3] <= rects[:, 1] + rects[:, 3] + grow_y)
                  & ((counts > np.maximum(3, n)) | (n < 3)))
        np.fill_diagonal(inside[:, start:], False)
        nested[start:start + chunk] = inside.any(axis=1)
    return nested


def _partition(rects: np.ndarray) -> np.ndarray:
    """cv::partition with cv::SimilarRects(0.2): the connected groups of similar rectangles,
    numbered in the order of their first member."""
    parent = np.arange(len(rects))
    sizes, level = np.unique(rects[:, 2:], axis=0, return_inverse=True)
    order = np.argsort(level.ravel(), kind="stable")
    bounds = np.searchsorted(level.ravel()[order], np.arange(len(sizes) + 1))
    for a, (wa, ha) in enumerate(sizes.tolist()):
        for b in range(a, len(sizes)):
            wb, hb = sizes[b].tolist()
            if wb - wa > GROUP_EPS * (wa + ha) + 1:  # sizes ascend in width: no later one is similar either
                break
            delta = GROUP_EPS * (min(wa, wb) + min(ha, hb)) * 0.5  # as SimilarRects computes it
            if wb - wa <= 2 * delta and abs(hb - ha) <= 2 * delta:
                pairs = _similar_pairs(rects, order[bounds[a]:bounds[a + 1]], order[bounds[b]:bounds[b + 1]], delta)
                parent = _union(parent, *pairs)
    return np.unique(_roots(parent), return_inverse=True)[1].ravel()


def _similar_pairs(rects: np.ndarray, a: np.ndarray, b: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i in a, j in b) whose four edges are each within delta: only windows in neighbouring
    cells of side floor(delta) + 1 can be, so only those are compared."""
    cell = math.floor(delta) + 1
    cells_a, cells_b = rects[a, :2] // cell, rects[b, :2] // cell
    low = np.minimum(cells_a.min(axis=0), cells_b.min(axis=0)) - 1
    span = int(max(cells_a[:, 1].max(), cells_b[:, 1].max()) - low[1]) + 3
    keys_b = (cells_b[:, 0] - low[0]) * span + cells_b[:, 1] - low[1]
    order = np.argsort(keys_b, kind="stable")
    keys_b, b = keys_b[order], b[order]
    found_i, found_j = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            keys = (cells_a[:, 0] + dx - low[0]) * span + cells_a[:, 1] + dy - low[1]
            first = np.searchsorted(keys_b, keys, "left")
            count = np.searchsorted(keys_b, keys, "right") - first
            if not count.any():
                continue
            i = np.repeat(a, count)
            j = b[np.repeat(first - (np.cumsum(count) - count), count) + np.arange(count.sum())]
            r1, r2 = rects[i], rects[j]
            near = ((np.abs(r1[:, 0] - r2[:, 0]) <= delta) & (np.abs(r1[:, 1] - r2[:, 1]) <= delta)
                    & (np.abs(r1[:, 0] + r1[:, 2] - r2[:, 0] - r2[:, 2]) <= delta)
                    & (np.abs(r1[:, 1] + r1[:, 3] - r2[:, 1] - r2[:, 3]) <= delta))
            found_i.append(i[near])
            found_j.append(j[near])
    return np.concatenate(found_i), np.concatenate(found_j)


def _union(parent: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Joins the trees of i and j pairwise; a root always hangs below a smaller index, so
    each tree's root is its first member."""
    while len(i):
        parent = _roots(parent)
        root_i, root_j = parent[i], parent[j]
        apart = root_i != root_j
        i, j, root_i, root_j = i[apart], j[apart], root_i[apart], root_j[apart]
        np.minimum.at(parent, np.maximum(root_i, root_j), np.minimum(root_i, root_j))
    return parent


def _roots(parent: np.ndarray) -> np.ndarray:
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand
