"""Global Knowledge PGM: density filter, joint matching pursuit, alpha, robustness."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmkd.models.methods.global_knowledge import (PrototypeGenerationModule, density_filter,
                                                  joint_coefficients, joint_matching_pursuit,
                                                  robustness)


def clusters(num_centers=3, per=20, dim=16, noise=0.05, seed=0):
    """Instances around orthogonal centres, and a random rotation of them as 'teacher'."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0][:num_centers]
    lab = torch.arange(num_centers).repeat_interleave(per)
    fs = centers[lab] + noise * torch.randn(len(lab), dim, generator=g)
    rot = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    ft = fs @ rot
    return fs, ft, lab


def test_matching_pursuit_recovers_planted_prototypes():
    fs, ft, lab = clusters()
    fs_n, ft_n = F.normalize(fs, dim=1), F.normalize(ft, dim=1)
    pick = joint_matching_pursuit(fs_n, ft_n, torch.arange(len(fs)), 3, alpha=10.0)
    assert sorted(lab[pick].tolist()) == [0, 1, 2]  # one prototype per planted centre


def test_matching_pursuit_respects_candidates():
    fs, ft, lab = clusters()
    fs_n, ft_n = F.normalize(fs, dim=1), F.normalize(ft, dim=1)
    cand = (lab != 1).nonzero(as_tuple=True)[0]
    pick = joint_matching_pursuit(fs_n, ft_n, cand, 4, alpha=10.0)
    assert set(lab[pick].tolist()) <= {0, 2}


def test_density_filter_drops_planted_outliers():
    fs, ft, _ = clusters(num_centers=1, per=30, noise=0.02)
    g = torch.Generator().manual_seed(1)
    out_s, out_t = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    fs_all = F.normalize(torch.cat([fs, out_s]), dim=1)
    ft_all = F.normalize(torch.cat([ft, out_t]), dim=1)
    keep = density_filter(fs_all, ft_all, bandwidth=0.1, drop_ratio=0.4)
    assert not keep[30:].any()  # every planted outlier dropped
    assert keep[:30].sum() >= 30 - int(0.4 * 34)  # ~60 % of all instances kept
    # an outlier only in the teacher space is dropped too (intersection of both spaces)
    ft_all2 = ft_all.clone()
    ft_all2[0] = F.normalize(torch.randn(16, generator=g), dim=0)
    assert not density_filter(fs_all, ft_all2)[0]
    assert density_filter(fs_all[:1], ft_all[:1]).tolist() == [True]  # single instance kept


def test_joint_coefficients_follow_the_formula():
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])
    ws, wt = joint_coefficients(a, b, 0.0)
    assert torch.equal(ws, a) and torch.equal(wt, b)  # alpha 0: independent projections
    ws, wt = joint_coefficients(a, b, 1e6)
    torch.testing.assert_close(ws, (a + b) / 2, atol=1e-5, rtol=0)
    torch.testing.assert_close(wt, (a + b) / 2, atol=1e-5, rtol=0)
    alpha = 10.0
    ws, wt = joint_coefficients(a, b, alpha)
    torch.testing.assert_close(ws, ((1 + alpha) * a + alpha * b) / (1 + 2 * alpha))

    def objective(x, y):
        return (x - a) ** 2 + (y - b) ** 2 + alpha * (x - y) ** 2

    best = objective(ws, wt)
    for dx, dy in ((1e-2, 0), (0, 1e-2), (-1e-2, 1e-2)):
        assert (objective(ws + dx, wt + dy) > best).all()  # it is the minimiser


def test_alpha_prefers_prototypes_consistent_in_both_spaces():
    # For a unit candidate, the pursuit's first pick minimises -sum(a^2 + b^2) when alpha = 0
    # and -sum((a + b)^2) / 2 when alpha is large (a, b: cosines to all instances).
    # Group A (24 instances) is tight in the student space but scattered in the teacher space;
    # group B (10 instances) is tight in both. alpha = 0 picks from A (24 > 2 * 10),
    # a large alpha from B (about 24 / 2 < 4 * 10 / 2).
    g = torch.Generator().manual_seed(0)
    d = 64
    e = torch.eye(d)
    fa_s = e[0] + 0.01 * torch.randn(24, d, generator=g)
    fa_t = torch.randn(24, d, generator=g)
    fb_s = e[1] + 0.01 * torch.randn(10, d, generator=g)
    fb_t = e[2] + 0.01 * torch.randn(10, d, generator=g)
    fs = F.normalize(torch.cat([fa_s, fb_s]), dim=1)
    ft = F.normalize(torch.cat([fa_t, fb_t]), dim=1)
    cand = torch.arange(34)
    assert int(joint_matching_pursuit(fs, ft, cand, 1, alpha=0.0)[0]) < 24
    assert int(joint_matching_pursuit(fs, ft, cand, 1, alpha=1000.0)[0]) >= 24


def test_generate_fills_buffers_and_handles_empty_and_tiny_classes():
    fs, ft, lab = clusters(num_centers=2, per=10, dim=8)
    pgm = PrototypeGenerationModule(num_levels=2, num_classes=4, student_dim=8, teacher_dim=8,
                                    num_prototypes=3)
    assert not pgm.ready
    lab = lab.clone()
    lab[0] = 2  # class 2 has a single instance; class 3 none
    pgm.generate([fs, fs[:0]], [ft, ft[:0]], [lab, lab[:0]])
    assert pgm.ready and int(pgm.num_generated) == 1
    assert pgm.proto_valid[0, :3].all() and not pgm.proto_valid[0, 3].any()
    assert not pgm.proto_valid[1].any()  # level with no instances
    torch.testing.assert_close(pgm.proto_s[0, 2, 0], fs[0])  # raw, un-normalised feature
    state = pgm.state_dict()
    assert {'proto_s', 'proto_t', 'proto_valid', 'num_generated'} <= set(state)


def test_robustness_is_one_when_spaces_agree_and_drops_when_they_disagree():
    fs, ft, lab = clusters(num_centers=2, per=10, dim=8)
    pgm = PrototypeGenerationModule(1, 2, 8, 8, num_prototypes=2)
    pgm.generate([fs], [ft], [lab])
    lv = torch.zeros(len(fs), dtype=torch.long)
    r = robustness(pgm, fs, ft, lv, lab)  # teacher = rotated student: same cosines
    torch.testing.assert_close(r, torch.ones_like(r), atol=1e-5, rtol=0)
    bad_t = ft.clone()
    bad_t[:3] = -bad_t[:3]  # teacher disagrees for three instances
    r2 = robustness(pgm, fs, bad_t, lv, lab)
    assert (r2[:3] < 0.5).all() and torch.allclose(r2[3:], torch.ones(len(fs) - 3), atol=1e-5)
    # hand value: r = 1 - |max cos_s - max cos_t|
    p_s = F.normalize(pgm.proto_s[0, lab[0]], dim=1)
    p_t = F.normalize(pgm.proto_t[0, lab[0]], dim=1)
    want = 1 - abs((F.normalize(fs[0], dim=0) @ p_s.t()).max()
                   - (F.normalize(bad_t[0], dim=0) @ p_t.t()).max())
    assert r2[0].item() == pytest.approx(want.item(), abs=1e-5)
    # a class without prototypes gets r = 1
    r3 = robustness(PrototypeGenerationModule(1, 2, 8, 8), fs, bad_t, lv, lab)
    assert torch.equal(r3, torch.ones_like(r3))


def _densities(f, bandwidth=0.1):
    """rho_i = sum_j exp(-((1 - cos_ij) / bw)^2), written out with Python floats."""
    rows = [[float(x) for x in r] for r in F.normalize(f, dim=1)]
    rho = []
    for a in rows:
        rho.append(sum(math.exp(-((1 - sum(x * y for x, y in zip(a, b))) / bandwidth) ** 2)
                       for b in rows))
    return rho


def test_density_filter_keeps_densities_strictly_above_the_quantile_value():
    g = torch.Generator().manual_seed(3)
    for n in (5, 9, 17):
        fs = torch.randn(n, 4, generator=g) + 2.0 * torch.randn(1, 4, generator=g)
        ft = torch.randn(n, 6, generator=g) + 2.0 * torch.randn(1, 6, generator=g)
        k = int(0.4 * n)
        want = []
        rs, rt = _densities(fs), _densities(ft)
        for i in range(n):
            want.append(rs[i] > sorted(rs)[k] and rt[i] > sorted(rt)[k])
        if not any(want):
            want = [True] * n
        got = density_filter(F.normalize(fs, dim=1), F.normalize(ft, dim=1), 0.1, 0.4)
        assert got.tolist() == want, n


def test_density_filter_small_classes_are_defined():
    e = torch.eye(4)
    assert density_filter(e[:0], e[:0]).tolist() == []
    assert density_filter(e[:1], e[:1]).tolist() == [True]  # the release crashes at N = 1
    assert density_filter(e[:2], e[:2]).tolist() == [True, True]  # ties: all kept
    # N = 4: the student keeps {0, 1} (a close pair), the teacher {2, 3}: no instance passes in
    # both spaces (the release crashes), so all four are kept
    near = F.normalize(torch.tensor([1.0, 0.01, 0.0, 0.0]), dim=0)
    fs = torch.stack([e[0], near, e[2], e[3]])
    ft = torch.stack([e[0], e[1], e[2], F.normalize(e[2] + 0.01 * e[3], dim=0)])
    assert density_filter(fs, fs).tolist() == [True, True, False, False]
    assert density_filter(ft, ft).tolist() == [False, False, True, True]
    assert density_filter(fs, ft).tolist() == [True] * 4
