"""Attention metrics (docs/protocols.md#attention-analyses), on torch tensors of any device.

Notation: N images, L blocks, H heads, P prefix tokens (CLS first, then any
registers), G = gh * gw spatial tokens, T = P + G. Attention ``attn`` is
post-softmax, rows summing to 1, with shape (..., T, T).

Grid units: token (row, col) sits at (col, row) / (max(gh, gw) - 1), which is
the study's (col, row) / (g - 1) on a square grid and keeps distances
isotropic on a non-square one. Multiply by (max(gh, gw) - 1) * patch for pixels.
"""

from __future__ import annotations

import torch

Grid = tuple[int, int]


def spatial_mass(attn: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """(..., T, T) -> (..., G): each spatial query's attention mass on the spatial keys."""
    return attn[..., prefix:, prefix:].sum(dim=-1)


def valid_queries(attn: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """(..., T, T) -> (..., G) bool: spatial queries whose spatial mass is at least the
    smallest normal number of ``attn``'s dtype (1.2e-38 in float32), the rows every
    spatial-attention mean uses. The others are zero-mass rows (docs/attention.md):
    mass 0 (all of it on prefix keys, e.g. a float32 softmax with a CLS logit ~200
    above the rest) or subnormal, where underflow has already destroyed the
    distribution (a subnormal value carries fewer than 23 significant bits)."""
    if prefix == 0:
        return torch.ones(attn.shape[:-2] + (attn.shape[-1],), dtype=torch.bool, device=attn.device)
    return spatial_mass(attn, prefix) >= torch.finfo(attn.dtype).tiny


def spatial_attention(attn: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """(..., T, T) -> (..., G, G): drop prefix queries and keys, renormalise rows.

    Zero-mass rule (docs/attention.md): a zero-mass row (:func:`valid_queries`) has
    no spatial distribution; it is returned as zeros, never 0/0 = NaN.
    """
    spatial = attn[..., prefix:, prefix:]
    if prefix == 0:
        return spatial
    ok = valid_queries(attn, prefix)[..., None]
    return torch.where(ok, spatial / torch.where(ok, spatial.sum(dim=-1, keepdim=True), 1), 0)


def token_coordinates(grid: Grid, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """(G, 2) coordinates (x = col, y = row) of the spatial tokens in grid units."""
    gh, gw = grid
    scale = max(max(gh, gw) - 1, 1)
    rows = torch.arange(gh, dtype=dtype, device=device).repeat_interleave(gw)
    cols = torch.arange(gw, dtype=dtype, device=device).repeat(gh)
    return torch.stack([cols, rows], dim=-1) / scale


def distance_matrix(grid: Grid, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """(G, G) Euclidean distances between spatial tokens, in grid units."""
    xy = token_coordinates(grid, dtype, device)
    # explicit differences: torch.cdist's matrix-product path is off by ~1e-8 for G > 25
    return torch.linalg.vector_norm(xy[:, None, :] - xy[None, :, :], dim=-1)


def attention_distance(attn: torch.Tensor, grid: Grid, prefix: int = 1) -> torch.Tensor:
    """Mean attended distance per head (Raghu et al.; ViT paper).

    attn: (..., T, T). Returns (...,) in grid units: for every spatial query
    the attention-weighted distance to the spatial keys (prefix tokens dropped,
    rows renormalised), averaged over the queries with positive spatial mass
    (zero-mass rows are left out, docs/attention.md); NaN only where no query has
    any. Computed in float64.
    """
    valid = valid_queries(attn, prefix)  # in the input's precision
    attn = attn.to(torch.float64)
    spatial = torch.where(valid[..., None], spatial_attention(attn, prefix), 0)
    dist = distance_matrix(grid, device=attn.device)
    return (spatial * dist).sum(dim=-1).sum(dim=-1) / valid.sum(dim=-1)


def canvas_index(grid: Grid, device=None) -> torch.Tensor:
    """(G * G,) flat index into the (2gh-1) x (2gw-1) aligned canvas.

    Entry q * G + k is where key k lands when query q is put at the centre
    (gh-1, gw-1): key (r, c) of query (i, j) goes to (r - i + gh - 1, c - j + gw - 1).
    """
    gh, gw = grid
    rows = torch.arange(gh, device=device).repeat_interleave(gw)
    cols = torch.arange(gw, device=device).repeat(gh)
    dr = rows[None, :] - rows[:, None] + gh - 1
    dc = cols[None, :] - cols[:, None] + gw - 1
    return (dr * (2 * gw - 1) + dc).reshape(-1)


def align(spatial: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(..., G, G) query-by-key maps -> (..., 2gh-1, 2gw-1), summed over queries.

    Each query's key map is shifted so the query sits at the canvas centre;
    the shifted maps are added. Linear, so it applies to sums over images.
    """
    gh, gw = grid
    g = gh * gw
    lead = spatial.shape[:-2]
    flat = spatial.reshape(-1, g * g)
    out = flat.new_zeros(flat.shape[0], (2 * gh - 1) * (2 * gw - 1))
    index = canvas_index(grid, device=spatial.device).expand(flat.shape[0], -1)
    out.scatter_add_(1, index, flat)
    return out.reshape(*lead, 2 * gh - 1, 2 * gw - 1)


def aligned_attention(attn: torch.Tensor, grid: Grid, prefix: int = 1) -> torch.Tensor:
    """Aligned aggregated attention map of each (image, head): (..., T, T) -> (..., 2gh-1, 2gw-1).

    Prefix tokens dropped, rows renormalised, each query's map centred on the
    query, averaged over the queries with positive spatial mass (all G of them
    unless some are zero-mass rows, docs/attention.md; NaN only where none is)
    (float64). Averaging this over images gives the study's AAAM, divided by
    images x queries as the protocol says.
    """
    valid = valid_queries(attn, prefix)  # in the input's precision
    attn = attn.to(torch.float64)
    spatial = torch.where(valid[..., None], spatial_attention(attn, prefix), 0)
    used = valid.sum(dim=-1)
    return align(spatial, grid) / used[..., None, None]


def center_of_mass(aligned: torch.Tensor) -> torch.Tensor:
    """(..., 2gh-1, 2gw-1) -> (..., 2) centre of mass (cx, cy) relative to the query.

    The map is normalised to sum 1. Canvas cell (row, col) sits at
    ((col - (gw-1)), (row - (gh-1))) / (max(gh, gw) - 1): on a square grid this is
    the protocol's v = 2 idx / (2g - 2) - 1 in [-1, 1] (one token = 1 / (g - 1)), and
    on a non-square grid the same isotropic grid units as :func:`attention_distance`.
    """
    h, w = aligned.shape[-2:]
    scale = max((max(h, w) - 1) / 2, 1.0)
    mass = aligned / aligned.sum(dim=(-2, -1), keepdim=True)
    ys = (torch.arange(h, dtype=mass.dtype, device=mass.device) - (h - 1) / 2) / scale
    xs = (torch.arange(w, dtype=mass.dtype, device=mass.device) - (w - 1) / 2) / scale
    cx = (mass.sum(dim=-2) * xs).sum(dim=-1)
    cy = (mass.sum(dim=-1) * ys).sum(dim=-1)
    return torch.stack([cx, cy], dim=-1)


def offset(aligned: torch.Tensor) -> torch.Tensor:
    """(..., 2gh-1, 2gw-1) -> (...,) distance of the centre of mass from the query."""
    return torch.linalg.vector_norm(center_of_mass(aligned), dim=-1)


def cls_map(cls_row: torch.Tensor, grid: Grid, prefix: int = 1, renormalize: bool = False) -> torch.Tensor:
    """CLS query's attention row (..., T) -> spatial map (..., gh, gw).

    With ``renormalize`` the spatial keys are rescaled to sum 1 (prefix keys
    removed); otherwise the raw probabilities are kept.
    """
    spatial = cls_row[..., prefix:]
    if renormalize:
        spatial = spatial / spatial.sum(dim=-1, keepdim=True)
    return spatial.reshape(*cls_row.shape[:-1], *grid)


# ------------------------------------------------------------ dump summaries


def averaged_maps(
    cls_sum: torch.Tensor,
    spatial_query_sum: torch.Tensor,
    count: int,
    queries: int,
    grid: Grid,
    prefix: int = 1,
    zero_mass_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Averaged maps over images from a dump's sums.

    cls_sum: (L, H, T); spatial_query_sum: (L, H, G); zero_mass_rows: (L, H) rows
    left out of the spatial sums (``attention/zero_mass_rows``; None: none). Returns
    the averaged CLS map over spatial keys (L, H, gh, gw) (raw probabilities, so prefix
    keys' share is what is missing from 1) and the averaged spatial-query map
    (L, H, gh, gw) (prefix keys removed, rows renormalised, divided by the rows
    used, :func:`rows_used`; sums to 1).
    """
    cls = cls_map(cls_sum / count, grid, prefix)
    used = rows_used(count, queries, zero_mass_rows, spatial_query_sum.shape[:-1])
    spatial = (spatial_query_sum / used[..., None]).reshape(*spatial_query_sum.shape[:-1], *grid)
    return cls, spatial


def rows_used(
    count: int, queries: int, zero_mass_rows: torch.Tensor | None, shape: tuple[int, ...] | torch.Size
) -> torch.Tensor:
    """(L, H) float64 number of spatial rows in a dump's sums: images x queries minus the
    zero-mass rows (docs/attention.md). A head with no row left has NaN (0/0) in the
    means that divide by this, the only case the rule cannot fill."""
    total = torch.full(tuple(shape), float(count * queries), dtype=torch.float64)
    if zero_mass_rows is not None:
        total = total - zero_mass_rows.to(torch.float64)
    return total


def distance_summary(distance: torch.Tensor, grid: Grid, patch: int) -> list[dict[str, float | int]]:
    """Per-(block, head) mean and std over images of the attention distance.

    distance: (N, L, H) in grid units. Rows carry 1-indexed ``block`` and
    ``head``, the distance in grid units and in pixels ((max(g) - 1) * patch), and
    ``images``, the images averaged: an image whose every spatial query of that
    head is a zero-mass row has no distance (NaN in the dump) and is left out.
    """
    distance = distance.to(torch.float64)
    finite = torch.isfinite(distance)
    images = finite.sum(dim=0)
    mean = torch.where(finite, distance, 0).sum(dim=0) / images
    std = (torch.where(finite, distance - mean, 0) ** 2).sum(dim=0).div(images).sqrt()
    to_px = (max(grid) - 1) * patch
    rows = []
    for b in range(mean.shape[0]):
        for h in range(mean.shape[1]):
            rows.append(
                {
                    "block": b + 1,
                    "head": h + 1,
                    "distance_grid": float(mean[b, h]),
                    "distance_px": float(mean[b, h]) * to_px,
                    "std_grid": float(std[b, h]),
                    "std_px": float(std[b, h]) * to_px,
                    "images": int(images[b, h]),
                }
            )
    return rows
