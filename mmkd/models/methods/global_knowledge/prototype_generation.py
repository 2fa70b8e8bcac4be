"""PGM: prototype generation of the Global-Knowledge method (Tang et al., ECCV 2022).

For every class and FPN level, a few instances are chosen as *prototypes*, jointly in the
student and the teacher feature space: first the least dense instances (outliers) are dropped,
then a greedy matching pursuit picks the instances whose features best reconstruct all
instances of the class in both spaces at once, with a consistency term that asks the student
and teacher reconstruction coefficients to agree.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def density_filter(fs: Tensor, ft: Tensor, bandwidth: float = 0.1,
                   drop_ratio: float = 0.4) -> Tensor:
    """Keep the instances that are dense in both spaces (the released rule).

    Density in one space: ``rho_i = sum_j exp(-((1 - cos_ij) / bandwidth) ** 2)``. An instance
    is kept when its density is **strictly greater** than the value at sorted position
    ``floor(drop_ratio * N)`` (ascending) in *both* spaces.

    When no instance passes in both spaces, all instances are kept; the released code crashes
    there instead (its matching pursuit gets no candidate), so wherever the release produces a
    result this is the same set. It defines small classes: with N = 1 or 2 every density ties,
    nothing is strictly greater, and all instances are kept. Each space keeps at most
    ``N - floor(drop_ratio N) - 1`` instances, so the two sets may miss each other for small N
    (the release crashed on one N = 4 class of the reference draw); without ties they always
    overlap from N = 11 on (drop_ratio 0.4).

    Args:
        fs: (N, Ds) L2-normalised student features.
        ft: (N, Dt) L2-normalised teacher features.

    Returns:
        (N,) bool mask of kept instances.
    """
    n = fs.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=fs.device)
    k = int(drop_ratio * n)
    keep = torch.ones(n, dtype=torch.bool, device=fs.device)
    for f in (fs, ft):
        dist = 1.0 - f @ f.t()
        rho = torch.exp(-(dist / bandwidth) ** 2).sum(1)
        keep &= rho > rho.sort().values[min(k, n - 1)]
    return keep if bool(keep.any()) else torch.ones_like(keep)


def joint_coefficients(a: Tensor, b: Tensor, alpha: float) -> tuple:
    """Closed-form minimiser of ``(ws - a)^2 + (wt - b)^2 + alpha (ws - wt)^2``.

    ``ws = ((1+alpha) a + alpha b) / (1+2 alpha)``, ``wt = ((1+alpha) b + alpha a) / (1+2 alpha)``:
    alpha = 0 gives the independent projections, a large alpha pulls both to ``(a + b) / 2``.
    """
    ws = ((1 + alpha) * a + alpha * b) / (1 + 2 * alpha)
    wt = ((1 + alpha) * b + alpha * a) / (1 + 2 * alpha)
    return ws, wt


def joint_matching_pursuit(fs: Tensor, ft: Tensor, candidates: Tensor, num_prototypes: int,
                           alpha: float = 10.0) -> Tensor:
    """Greedy joint matching pursuit over the candidate instances.

    Residuals start as all instances (``R_s = fs^T``, ``R_t = ft^T``). Each round, for every
    candidate k with unit features ``p_k^s, p_k^t``, the coefficient rows are
    ``a_k = p_k^s^T R_s`` and ``b_k = p_k^t^T R_t``, the joint coefficients come from
    :func:`joint_coefficients`, and the error is
    ``|p_k^s ws_k - R_s|^2 + |p_k^t wt_k - R_t|^2 + alpha |ws_k - wt_k|^2``.
    The best candidate is picked and its reconstruction subtracted from both residuals.
    Candidates may be picked again (as in the original). All candidates are scored at once.

    Args:
        fs: (N, Ds) and ``ft``: (N, Dt) L2-normalised features of all instances of the class.
        candidates: (K,) indices into N of the instances allowed as prototypes.
        num_prototypes: M, the number of rounds.

    Returns:
        (M,) indices into N of the chosen instances (same indices in both spaces).
    """
    rs, rt = fs.t().clone(), ft.t().clone()  # (Ds, N), (Dt, N)
    ps, pt = fs[candidates], ft[candidates]  # (K, Ds), (K, Dt)
    chosen = []
    for _ in range(num_prototypes):
        a, b = ps @ rs, pt @ rt  # (K, N)
        ws, wt = joint_coefficients(a, b, alpha)
        # |p w - R|^2 = |w|^2 - 2 w.a + |R|^2 for a unit p; |R|^2 is the same for every k
        err = ((ws * ws).sum(1) - 2 * (ws * a).sum(1) + (wt * wt).sum(1) - 2 * (wt * b).sum(1)
               + alpha * ((ws - wt) ** 2).sum(1))
        k = int(torch.argmin(err))
        chosen.append(int(candidates[k]))
        rs = rs - ps[k][:, None] * ws[k][None, :]
        rt = rt - pt[k][:, None] * wt[k][None, :]
    return torch.as_tensor(chosen, dtype=torch.long, device=fs.device)


class PrototypeGenerationModule(nn.Module):
    """Holds and generates the prototypes of every (FPN level, class).

    Buffers (saved in checkpoints, so a resumed run has the same prototypes; dropped from the
    exported student):
        proto_s: (L, C, M, Ds) student-space prototypes (raw, un-normalised features).
        proto_t: (L, C, M, Dt) teacher-space prototypes of the same instances.
        proto_valid: (L, C, M) bool, False where a class had no instance at that level.
        num_generated: how many times prototypes were generated.

    Args:
        num_levels, num_classes, student_dim, teacher_dim: buffer sizes.
        num_prototypes: M.
        alpha: teacher/student coefficient consistency weight of the matching pursuit.
        bandwidth, drop_ratio: of the density filter.
    """

    def __init__(self, num_levels: int, num_classes: int, student_dim: int, teacher_dim: int,
                 num_prototypes: int = 10, alpha: float = 10.0, bandwidth: float = 0.1,
                 drop_ratio: float = 0.4) -> None:
        super().__init__()
        self.num_prototypes, self.alpha = int(num_prototypes), float(alpha)
        self.bandwidth, self.drop_ratio = float(bandwidth), float(drop_ratio)
        L, C, M = num_levels, num_classes, self.num_prototypes
        self.register_buffer('proto_s', torch.zeros(L, C, M, student_dim))
        self.register_buffer('proto_t', torch.zeros(L, C, M, teacher_dim))
        self.register_buffer('proto_valid', torch.zeros(L, C, M, dtype=torch.bool))
        self.register_buffer('num_generated', torch.zeros((), dtype=torch.long))

    @property
    def ready(self) -> bool:
        """True once prototypes have been generated at least once."""
        return bool(self.num_generated > 0)

    @torch.no_grad()
    def generate(self, desc_s: Sequence[Tensor], desc_t: Sequence[Tensor],
                 labels: Sequence[Tensor]) -> None:
        """Replace all prototypes with ones generated from instance descriptors.

        Args:
            desc_s: per level, (N_l, Ds) student descriptors of instances.
            desc_t: per level, (N_l, Dt) teacher descriptors of the same instances.
            labels: per level, (N_l,) class labels.
        """
        L, C, M = self.proto_valid.shape
        if len(desc_s) != L:
            raise ValueError(f'expected descriptors for {L} levels, got {len(desc_s)}')
        proto_s = torch.zeros_like(self.proto_s)
        proto_t = torch.zeros_like(self.proto_t)
        valid = torch.zeros_like(self.proto_valid)
        for lvl in range(L):
            fs_all = desc_s[lvl].to(self.proto_s).float()
            ft_all = desc_t[lvl].to(self.proto_t).float()
            lab = labels[lvl].to(self.proto_s.device).long()
            for c in lab.unique().tolist():
                if not 0 <= c < C:
                    continue
                idx = (lab == c).nonzero(as_tuple=True)[0]
                fs, ft = fs_all[idx], ft_all[idx]
                fs_n, ft_n = F.normalize(fs, dim=1), F.normalize(ft, dim=1)
                cand = density_filter(fs_n, ft_n, self.bandwidth, self.drop_ratio)
                pick = joint_matching_pursuit(fs_n, ft_n, cand.nonzero(as_tuple=True)[0], M,
                                              self.alpha)
                proto_s[lvl, c], proto_t[lvl, c] = fs[pick], ft[pick]
                valid[lvl, c] = True
        self.proto_s.copy_(proto_s)
        self.proto_t.copy_(proto_t)
        self.proto_valid.copy_(valid)
        self.num_generated += 1

    def class_similarity(self, g: Tensor, levels: Tensor, labels: Tensor,
                         space: str) -> tuple:
        """Best cosine similarity of each descriptor to the prototypes of its class.

        Args:
            g: (N, D) descriptors in ``space`` ('s' or 't').
            levels: (N,) level index of each descriptor; labels: (N,) class of each.

        Returns:
            ``(sim, has)``: (N,) max cosine (0 where ``has`` is False) and (N,) bool, True
            when the class has prototypes at that level.
        """
        protos = self.proto_s if space == 's' else self.proto_t
        p = protos[levels, labels]  # (N, M, D)
        v = self.proto_valid[levels, labels]  # (N, M)
        cos = torch.einsum('nd,nmd->nm', F.normalize(g.float(), dim=-1),
                           F.normalize(p.float(), dim=-1))
        cos = cos.masked_fill(~v, float('-inf'))
        has = v.any(1)
        sim = torch.where(has, cos.max(1).values, cos.new_zeros(()))
        return sim, has

    def all_similarity(self, g: Tensor, level: int, space: str) -> Tensor:
        """Cosine similarity of each descriptor to every valid prototype of one level.

        Args:
            g: (N, D) descriptors.

        Returns:
            (N, P) with P the number of valid prototypes at ``level`` (all classes).
        """
        protos = self.proto_s if space == 's' else self.proto_t
        p = protos[level][self.proto_valid[level]]  # (P, D)
        return F.normalize(g.float(), dim=-1) @ F.normalize(p.float(), dim=-1).t()


def robustness(pgm: PrototypeGenerationModule, gs: Tensor, gt: Tensor, levels: Tensor,
               labels: Tensor) -> Tensor:
    """RDM robustness ``r = 1 - |max cos(gs, P_s[c]) - max cos(gt, P_t[c])|`` (detached).

    Instances of a class without prototypes at their level get r = 1 (no evidence either way).

    Args:
        gs: (N, Ds) student descriptors; gt: (N, Dt) teacher descriptors.
        levels, labels: (N,) level and class of each instance.

    Returns:
        (N,) robustness, in [-1, 1]; 1 means both spaces agree.
    """
    with torch.no_grad():
        ss, has = pgm.class_similarity(gs.detach(), levels, labels, 's')
        st, _ = pgm.class_similarity(gt.detach(), levels, labels, 't')
        r = 1.0 - (ss - st).abs()
        return torch.where(has, r, torch.ones_like(r))


def gather_descriptors(parts: List[Optional[Tensor]], dim: int, device) -> Tensor:
    """Concatenate optional descriptor chunks into one (N, dim) tensor."""
    parts = [p for p in parts if p is not None and p.numel()]
    return torch.cat(parts) if parts else torch.zeros((0, dim), device=device)
