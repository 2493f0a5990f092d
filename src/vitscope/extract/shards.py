"""Sharded extraction: one dataset split over K independent jobs, merged into one dump
bit-identical to the unsharded one (docs/dumps.md#sharding).

- :func:`shard_range`: shard k of K extracts a contiguous range of the *fed order*
  (:func:`vitscope.extract.run.image_order`: the index order, or the seeded permutation
  when Gram matrices are recorded), cut at whole batches of ``extract.batch_size``. Each
  shard's batches are then exactly the unsharded run's batches (same images, same shapes:
  the same floats per image), and the CKA minibatches (consecutive runs of the fed order,
  ``cka_batch_size`` divides ``batch_size``) are the whole dataset's partition.
- :class:`TreeSum`: every float64 sum over images is kept per batch (a *group*: the batch's
  images added in order) and the groups are added in a fixed binary tree over the group
  index (a node is the sum of an aligned run of 2^l groups). A shard keeps the complete
  nodes of its range; the merge pushes every shard's nodes in order and gets the very tree,
  so the very additions, of the unsharded run, whatever the shard boundaries (at batches).
- :func:`vitscope.extract.merge.merge`: the shard files -> the dump.
"""

from __future__ import annotations

import h5py
import numpy as np
import torch

from ..errors import ConfigError
from ..io import dumps

#: root attributes of a shard file that the merged dump does not carry
SHARD_ATTRS = ("shard", "shards", "shard_start", "shard_stop")
#: root attributes measured on the first batch of each shard; the merged dump has shard 1's, the
#: first batch of the fed order: the unsharded run's (other attributes must agree between shards)
FIRST_BATCH_ATTRS = ("parity_max_abs_diff", *dumps.PRECISION_ERRORS, "precision_error_images")
#: where a shard file keeps the fed-order positions of its images and its sums' tree nodes
POSITIONS = "shard/positions"
SUMS = "shard/sums"


def shard_range(n: int, batch: int, shard: int, shards: int) -> tuple[int, int]:
    """Fed-order positions [start, stop) of shard ``shard`` (1-indexed) of ``shards`` over
    ``n`` images: whole batches of ``batch`` images, as even as batches allow (the last shard
    ends with the short batch)."""
    batches = -(-n // batch)
    if not 1 <= shard <= shards:
        raise ConfigError(f"shard {shard} of {shards}: shards are numbered 1 to {shards}")
    if shards > batches:
        raise ConfigError(
            f"{shards} shards of {n} images: a shard holds whole batches of extract.batch_size = {batch} "
            f"images, so at most {batches} shards; lower datasets.<name>.shards"
        )
    first, last = (shard - 1) * batches // shards, shard * batches // shards
    return first * batch, min(last * batch, n)


class TreeSum:
    """A sum over groups (batches) in a fixed order, independent of where shards cut.

    Group g's value is pushed as the leaf (level 0, start g); two adjacent nodes of level
    l whose left one starts at a multiple of 2^(l+1) become their sum (level l + 1): a
    binary tree over the group index. :meth:`total` adds the nodes left standing left to
    right. The nodes a shard keeps, pushed in order into another TreeSum, give the tree
    of all the groups together: the same additions in the same order.
    """

    def __init__(self) -> None:
        #: (level, first group, value), left to right
        self.nodes: list[tuple[int, int, torch.Tensor]] = []

    def push(self, start: int, value: torch.Tensor, level: int = 0) -> None:
        """Add the node of ``2**level`` groups from group ``start`` (after every node before it)."""
        if self.nodes:
            last_level, last_start, _ = self.nodes[-1]
            if last_start + (1 << last_level) != start:
                raise ValueError(f"node at group {start} does not follow the node at groups {last_start}+")
        self.nodes.append((level, start, value))
        while len(self.nodes) >= 2:
            (la, sa, a), (lb, sb, b) = self.nodes[-2:]
            if la != lb or sa % (2 << la):
                break
            self.nodes[-2:] = [(la + 1, sa, a + b)]

    def copy(self) -> TreeSum:
        other = TreeSum()
        other.nodes = list(self.nodes)
        return other

    def total(self, empty: torch.Tensor) -> torch.Tensor:
        """The sum: the standing nodes added left to right (``empty`` when there is none)."""
        if not self.nodes:
            return empty
        total = self.nodes[0][2]
        for _, _, value in self.nodes[1:]:
            total = total + value
        return total

    def write(self, handle: h5py.File, name: str) -> None:
        """Store the nodes under ``{SUMS}/{name}``: ``levels``, ``starts`` and ``values`` (nodes, ...)."""
        group = f"{SUMS}/{name}"
        levels = np.array([n[0] for n in self.nodes], dtype=np.int64)
        starts = np.array([n[1] for n in self.nodes], dtype=np.int64)
        values = torch.stack([n[2] for n in self.nodes]).cpu().numpy()
        for key, array in (("levels", levels), ("starts", starts), ("values", values)):
            dumps.create_dataset(handle, f"{group}/{key}", array.shape, array.dtype, data=array)

    def read(self, handle: h5py.File, name: str) -> None:
        """Push the nodes a shard stored with :meth:`write` (after those pushed before)."""
        group = handle[f"{SUMS}/{name}"]
        values = torch.from_numpy(group["values"][...])
        levels, starts = group["levels"][...].tolist(), group["starts"][...].tolist()
        for level, start, value in zip(levels, starts, values, strict=True):
            self.push(int(start), value, int(level))
