"""min_p, top-k and top-p for EAD rows, at the row's effective temperature.

vLLM applies these after its temperature division (runner V1: temperature,
then argmax-invariant processors such as min_p, then top-k/top-p; runner V2:
temperature, min_p, top-k/top-p), so whether a token survives top-p or min_p
depends on the temperature. An EAD row is sampled at ``T * tau_t``; its masks
are computed on ``logits / (T * tau_t)`` exactly as vLLM would compute them
there, and then written back as ``-inf`` into the *unscaled* logits that the
fused kernel reads. The kernel divides by the same temperature itself, so a
row's kept tokens carry the same bits whether or not it has a mask, and its
sampled distribution (and log-prob) is the one vLLM's pipeline defines,
renormalised over the kept tokens.
"""

from __future__ import annotations

import torch

from ead_vllm.vllm_ext.seams import v1_stock_sampling


def apply_top_k_top_p(
    logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None
) -> torch.Tensor:
    """vLLM's own top-k/top-p mask (its ``apply_top_k_top_p``, through the seam)."""
    return v1_stock_sampling.apply_top_k_top_p()(logits, k, p)


# top-p looks at this many of a row's largest entries, in turn; a row that none
# decides (their mass stays below top_p) takes vLLM's full sort. On [256, 151936]
# fp32 on the project's 2-core x86 CPU machine (docs/sampling.md): topk 256 ~50 ms,
# topk 4096 ~200 ms, a full sort ~1,800 ms.
TOP_P_CANDIDATES = (256, 4096)


def min_p_mask_(scaled: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf, in place, the entries whose probability is below ``min_p`` x the row's top one.

    ``scaled`` [N, V] fp32 logits already divided by the temperature; ``min_p``
    [N] fp32 (0 leaves a row unchanged). vLLM's definition (V1
    ``MinPLogitsProcessor`` and V2 ``apply_min_p``): keep token i iff
    ``p_i >= min_p * max_j p_j`` with ``p = softmax(scaled)``.
    """
    probs = torch.softmax(scaled, dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True).mul_(min_p.to(probs.dtype).unsqueeze(1))
    return scaled.masked_fill_(probs < threshold, float("-inf"))


def mask_ead_rows_(
    logits: torch.Tensor,
    rows: torch.Tensor,
    *,
    taus: torch.Tensor,
    base_temperature: torch.Tensor,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    min_p: torch.Tensor | None,
) -> None:
    """Apply min_p, then top-k/top-p, to ``logits[rows]`` in place, at ``T * tau_t``.

    ``logits`` [N, V] fp32 (processed, unscaled) rows of EAD requests; ``rows``
    [M] int64, the rows that set a mask; ``taus`` [N] fp32 the N rows' ``tau_t``
    and ``base_temperature`` [N] fp32 their ``T``, so the effective temperature is
    the one the kernel will use; ``top_k`` [M] integer (V or 0 = off), ``top_p`` [M] fp32 (1 = off),
    ``min_p`` [M] fp32 (0 = off), each optional, already for ``rows``. The
    removed tokens become -inf; the kept entries are untouched (not scaled).
    One temporary [M, V] tensor (the scaled copy) is used.
    """
    temperature = base_temperature[rows] * taus[rows]
    masked = logits[rows]
    scaled = masked / temperature.to(masked.dtype).unsqueeze(1)
    if min_p is not None:
        min_p_mask_(scaled, min_p)
    scaled = top_k_top_p_mask_(scaled, top_k, top_p)
    logits[rows] = masked.masked_fill_(torch.isneginf(scaled), float("-inf"))


def top_k_top_p_mask_(
    scaled: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None
) -> torch.Tensor:
    """vLLM's top-k then top-p masks on ``scaled`` [N, V] fp32, without sorting whole rows.

    The kept set is vLLM's (``apply_top_k_top_p``): top-k keeps every entry
    >= the k-th largest (ties included); top-p then drops, in ascending order,
    the entries whose cumulative probability (over the top-k survivors) is
    <= 1 - top_p, keeping at least the largest, i.e. keeps an entry iff the
    mass strictly above it is < top_p. vLLM sorts every row for this (the
    dominant cost of top-p on CPU). Here a row is decided from its largest
    entries (``torch.topk``, ``TOP_P_CANDIDATES`` sizes in turn) and one
    log-sum-exp as soon as they hold at least ``top_p`` of the mass: then
    nothing outside them can be kept. Rows no candidate set decides, and rows
    whose top-k reaches past the largest set, take vLLM's own function. Kept
    sets can differ from vLLM's only where a cumulative mass equals top_p to
    within float rounding, or among tied entries. Returns ``scaled``, masked
    in place (-inf).
    """
    if top_p is None:
        return apply_top_k_top_p(scaled, top_k, None)
    off = (top_p >= 1.0).nonzero().squeeze(1)
    if len(off):
        # a row's own top_p = 1 means no top-p (whatever its neighbours ask)
        if top_k is not None:
            scaled[off] = apply_top_k_top_p(scaled[off], top_k[off], None)
        on = (top_p < 1.0).nonzero().squeeze(1)
        if len(on):
            scaled[on] = top_k_top_p_mask_(
                scaled[on],
                None if top_k is None else top_k[on],
                top_p[on],
            )
        return scaled
    n, vocab = scaled.shape
    k = torch.full((n,), vocab, dtype=torch.long, device=scaled.device)
    if top_k is not None:
        k = top_k.to(torch.long).clamp(1, vocab)
    has_k = k < vocab
    # normaliser of rows without top-k: the whole row's (one pass)
    log_z_row = torch.logsumexp(scaled, dim=-1)
    # c candidates hold at most c * p_max of the mass (exact bound): a row is
    # tried only with a set that can decide it, and flat rows go straight to
    # the sort without any topk pass
    p_max = torch.exp(scaled.amax(dim=-1) - log_z_row)
    sizes = [min(c, vocab) for c in TOP_P_CANDIDATES]

    def decidable(rows: torch.Tensor, cand: int) -> torch.Tensor:
        if cand == vocab:
            return torch.ones(len(rows), dtype=torch.bool, device=scaled.device)
        return (has_k[rows] & (k[rows] <= cand)) | (cand * p_max[rows] >= top_p[rows])

    everything = torch.arange(n, device=scaled.device)
    maybe = decidable(everything, sizes[-1])
    if not maybe.any():  # every row flat: vLLM's sort, in place, no gather
        return apply_top_k_top_p(scaled, top_k, top_p)
    to_sort = [everything[~maybe]]
    todo = everything[maybe]
    for i, cand in enumerate(sizes):
        if not len(todo):
            break
        now = decidable(todo, cand)
        rows, later = todo[now], todo[~now]
        if len(rows):
            done, mass, smallest = _mask_from_candidates_(
                scaled, rows, cand, k[rows], has_k[rows], log_z_row[rows], top_p[rows]
            )
            retry = ~done
            if i + 1 < len(sizes):
                # the next set adds at most (size - cand) entries no likelier
                # than the smallest candidate: rows it cannot reach are sorted
                reach = mass + (sizes[i + 1] - cand) * smallest
                hopeless = retry & ~has_k[rows] & (reach < top_p[rows])
                to_sort.append(rows[hopeless])
                retry &= ~hopeless
            later = torch.cat([later, rows[retry]])
        todo = later
    to_sort.append(todo)
    sort_rows = torch.cat(to_sort)
    if len(sort_rows):
        scaled[sort_rows] = apply_top_k_top_p(
            scaled[sort_rows],
            None if top_k is None else top_k[sort_rows],
            top_p[sort_rows],
        )
    return scaled


def _mask_from_candidates_(
    scaled: torch.Tensor,
    rows: torch.Tensor,
    cand: int,
    k: torch.Tensor,
    has_k: torch.Tensor,
    log_z_row: torch.Tensor,
    top_p: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask the rows ``rows`` of ``scaled`` that their ``cand`` largest entries decide.

    Returns [len(rows)] bool: which rows were decided (and written), and per
    row the probability mass of the candidates and the smallest candidate's
    probability (fp32).
    """
    vocab = scaled.shape[1]
    vals, idx = scaled[rows].topk(cand, dim=-1)  # descending
    kth = vals.gather(1, (k.clamp(max=cand) - 1).unsqueeze(1))
    in_k = ~has_k.unsqueeze(1) | (vals >= kth)
    # ties of the k-th value may run past the candidates: not decided here
    k_decided = ~has_k | ((k <= cand) & ((vals[:, -1] < kth[:, 0]) | (cand == vocab)))
    kept_vals = torch.where(in_k, vals, float("-inf"))
    # normaliser: over the top-k survivors (all among the candidates) or the whole row
    log_z = torch.where(has_k, torch.logsumexp(kept_vals, dim=-1), log_z_row)
    probs = torch.exp(kept_vals - log_z.unsqueeze(1))
    above = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each candidate
    keep = in_k & (above < top_p.to(probs.dtype).unsqueeze(1))
    keep[:, 0] = True  # vLLM keeps at least the largest entry
    mass = probs.sum(dim=-1)
    covered = has_k | (mass >= top_p) | (cand == vocab)
    decided = k_decided & covered
    fast = decided.nonzero().squeeze(1)
    if len(fast):
        out = torch.full(
            (len(fast), vocab), float("-inf"), dtype=scaled.dtype, device=scaled.device
        )
        out.scatter_(
            1,
            idx[fast],
            torch.where(keep, vals, float("-inf"))[fast],
        )
        scaled[rows[fast]] = out
    return decided, mass, probs[:, -1]
