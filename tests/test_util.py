"""Tests for util.py: parity with a prior implementation, CLIP-view mask alignment, SVD traps, mixing, CLIP tokens.

Oracles: tests/reference/util_golden.pt (someone else's implementation of the plan), openai-clip's own
preprocess transform and encode_image. Models are random-weight openai-clip CLIPs, nothing is downloaded.
"""
import functools
import json
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE_DIR
from PIL import Image

import util

GOLDEN = torch.load(REFERENCE_DIR / "util_golden.pt", weights_only=True)
TOL = 1e-5


# -----------------------------------------------------------------------------
# parity with the prior implementation (util_golden.pt)

def golden_masks(case):
    return util.downsample_mask_to_patch_weights(case["mask"].float(), 16, case["threshold"])[0]


def golden_svd(case):
    return util.svd_manipulate_embeddings(case["cls"].float(), case["patches"].float(), case["mask"], k=case["k"],
                                          mode=case["mode"], alpha=case["alpha"], beta=case["beta"])


def golden_combine(case):
    weights_sum_to_one = abs(case["alpha"] + case["beta"] + case["gamma"] - 1) < 0.01
    if weights_sum_to_one:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return util.combine_manipulated_embeddings(case["suppress"], case["boost"], case["bg"],
                                                       case["alpha"], case["beta"], case["gamma"])
    with pytest.warns(UserWarning, match="sum to"):
        return util.combine_manipulated_embeddings(case["suppress"], case["boost"], case["bg"],
                                                   case["alpha"], case["beta"], case["gamma"])


GOLDEN_FUNCS = {"masks": golden_masks, "svd": golden_svd, "combine": golden_combine}
GOLDEN_CASES = [(name, i) for name in GOLDEN_FUNCS for i in range(len(GOLDEN[name]))]


@functools.lru_cache(maxsize=None)
def golden_output(name, i):
    """Computed once, shared by the per-case tests and the summary (the 2-core CI box is slow)."""
    return GOLDEN_FUNCS[name](GOLDEN[name][i])


@pytest.mark.parametrize("name,i", GOLDEN_CASES, ids=[f"{n}-{i}" for n, i in GOLDEN_CASES])
def test_golden_parity(name, i):
    case = GOLDEN[name][i]
    out = golden_output(name, i)
    assert out.shape == case["out"].shape and out.dtype == torch.float32
    assert (out - case["out"]).abs().max().item() <= TOL


def test_golden_parity_summary(capsys):
    lines = []
    for name in GOLDEN_FUNCS:
        diffs = [(golden_output(name, i) - case["out"]).abs().max().item() for i, case in enumerate(GOLDEN[name])]
        lines.append(f"util_golden {name:8s}: {len(diffs)} cases, max abs diff {max(diffs):.3e}")
        assert max(diffs) <= TOL
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# -----------------------------------------------------------------------------
# the plan's downsample_mask_to_patch_weights

def blob_mask(h, w, seed):
    """A few random ellipses: an object-like binary mask [h, w] uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    for _ in range(3):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.08, 0.4) * h, rng.uniform(0.08, 0.4) * w
        m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return m.astype(np.uint8)


def test_downsample_known_pattern_and_threshold_is_inclusive():
    mask = np.zeros((224, 224), np.float32)
    mask[:, :7] = 1                                    # exactly half of every patch in column 0
    mask[28:56, 112:] = 1                              # patch rows 2-3, columns 8-15 fully
    weights = util.downsample_mask_to_patch_weights(mask)
    expected = torch.zeros(16, 16)
    expected[:, 0] = 1                                 # coverage 0.5 >= 0.5
    expected[2:4, 8:] = 1
    assert weights.shape == (1, 256) and weights.dtype == torch.float32
    assert torch.equal(weights[0], expected.flatten())
    assert util.downsample_mask_to_patch_weights(mask, threshold=0.51)[0].reshape(16, 16)[:, 0].sum() == 0


def test_downsample_accepts_numpy_tensor_dtypes_and_batches():
    mask = blob_mask(300, 200, seed=1)
    ref = util.downsample_mask_to_patch_weights(mask.astype(np.float32))
    for variant in [mask, mask.astype(bool), mask.astype(np.int64), torch.from_numpy(mask),
                    torch.from_numpy(mask).bool(), torch.from_numpy(mask).half(), mask[::-1].copy()[::-1]]:
        assert torch.equal(util.downsample_mask_to_patch_weights(variant), ref)
    other = blob_mask(300, 200, seed=2)
    batch = util.downsample_mask_to_patch_weights(np.stack([mask, other]))
    assert batch.shape == (2, 256)
    assert torch.equal(batch[0], ref[0]) and torch.equal(batch[1], util.downsample_mask_to_patch_weights(other)[0])


@pytest.mark.parametrize("bad,err,match", [
    (np.zeros(10), ValueError, r"\[H, W\] or \[B, H, W\]"),
    (np.zeros((1, 1, 4, 4)), ValueError, r"\[H, W\] or \[B, H, W\]"),
    (np.zeros((0, 5)), ValueError, "empty"),
    (np.full((8, 8), 255, np.uint8), ValueError, r"\[0, 1\]"),
    (np.full((8, 8), np.nan), ValueError, "NaN"),
    ([[0, 1], [1, 0]], TypeError, "numpy array or a torch tensor"),
])
def test_mask_functions_reject_bad_masks(bad, err, match):
    for func in (util.downsample_mask_to_patch_weights, util.mask_to_patch_weights, util.align_mask_to_clip_view):
        with pytest.raises(err, match=match):
            func(bad)


def test_bad_threshold_raises():
    with pytest.raises(ValueError, match="threshold"):
        util.mask_to_patch_weights(np.ones((20, 20)), threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        util.downsample_mask_to_patch_weights(np.ones((20, 20)), threshold=0)


# -----------------------------------------------------------------------------
# alignment with CLIP's view (resize short side + centre crop)

def clip_view_of_mask_image(mask, eight_bit=False):
    """Oracle: the mask image through openai-clip's own preprocess transforms, colour steps left out.

    By default the mask is a float ('F') PIL image and only CLIP's Resize, CenterCrop and ToTensor act on it;
    _convert_image_to_rgb and Normalize are the colour steps. eight_bit=True instead sends a 0/255 RGB image
    through everything but Normalize: exactly what CLIP does to an image, 8-bit rounding included.
    """
    import clip
    transforms = clip.clip._transform(util.CLIP_RESOLUTION).transforms
    assert [type(t).__name__ for t in transforms] == ["Resize", "CenterCrop", "function", "ToTensor", "Normalize"]
    if eight_bit:
        x = Image.fromarray(mask.astype(np.uint8) * 255, "L")
        steps = transforms[:-1]
    else:
        x = Image.fromarray(mask.astype(np.float32), "F")
        steps = [transforms[0], transforms[1], transforms[3]]
    for t in steps:
        x = t(x)
    return x[0].clamp(0, 1)                            # [224, 224]


def oracle_coverage(mask, eight_bit=False):
    return F.avg_pool2d(clip_view_of_mask_image(mask, eight_bit)[None, None], 14, 14).flatten()


@pytest.mark.parametrize("shape", [(150, 200), (300, 180), (480, 640), (97, 333), (700, 260), (1000, 1500)])
def test_aligned_weights_match_clip_preprocess(shape):
    mask = blob_mask(*shape, seed=shape[0])
    view = util.align_mask_to_clip_view(mask)
    assert view.shape == (1, 224, 224) and view.min() >= 0 and view.max() <= 1
    assert (view[0] - clip_view_of_mask_image(mask)).abs().max() < 1e-4      # PIL's vs torch's bicubic kernel
    coverage = util.mask_to_patch_weights(mask, threshold=None)[0]
    expected = oracle_coverage(mask)
    assert (coverage - expected).abs().max() < 1e-5
    for threshold in (0.4, 0.5, 0.6):
        assert torch.equal(util.mask_to_patch_weights(mask, threshold, fallback=False)[0],
                           (expected >= threshold - util.COVERAGE_TOL).float())
    # an 8-bit mask image, preprocessed exactly as CLIP treats photos, only adds rounding
    assert (coverage - oracle_coverage(mask, eight_bit=True)).abs().max() < 5e-3


def test_aligned_equals_plan_on_square_images():
    # No resampling at 224x224: the two must agree bit for bit.
    mask = blob_mask(224, 224, seed=3)
    assert torch.equal(util.mask_to_patch_weights(mask, fallback=False), util.downsample_mask_to_patch_weights(mask))
    # Patch-aligned shapes at 2x: every patch is far from the threshold, so both agree everywhere.
    mask = np.zeros((448, 448), np.uint8)
    mask[56:224, 84:392] = 1
    assert torch.equal(util.mask_to_patch_weights(mask, fallback=False), util.downsample_mask_to_patch_weights(mask))
    # Resampled square masks: same geometry, only the kernel differs (CLIP's antialiased bicubic vs the plan's
    # bilinear), so the weights agree except on patches within a hair of the threshold.
    for size, seed in [(100, 4), (300, 5), (512, 6), (1024, 7)]:
        mask = blob_mask(size, size, seed)
        coverage = util.mask_to_patch_weights(mask, threshold=None)[0]
        clear = (coverage - 0.5).abs() > 0.03
        aligned = util.mask_to_patch_weights(mask, fallback=False)[0]
        plan = util.downsample_mask_to_patch_weights(mask)[0]
        assert clear.sum() > 200
        assert torch.equal(aligned[clear], plan[clear])


def test_plan_resize_misplaces_mask_on_wide_image():
    # 224x448 image: CLIP keeps columns 112..335. The object fills columns 112..223, the left half of CLIP's view.
    mask = np.zeros((224, 448), np.uint8)
    mask[:, 112:224] = 1
    aligned = util.mask_to_patch_weights(mask)[0].reshape(16, 16)
    plan = util.downsample_mask_to_patch_weights(mask)[0].reshape(16, 16)
    assert torch.equal(aligned[:, :8], torch.ones(16, 8)) and aligned[:, 8:].sum() == 0
    assert torch.equal(plan[:, 4:8], torch.ones(16, 4)) and plan[:, :4].sum() == 0   # squashed to half the width
    assert not torch.equal(aligned, plan)
    assert torch.equal(aligned.flatten(), (oracle_coverage(mask) >= 0.5).float())


def test_mask_outside_clip_crop_warns_and_svd_says_what_to_do():
    mask = np.zeros((224, 672), np.uint8)
    mask[50:150, 20:200] = 1                           # CLIP sees columns 224..447 only
    with pytest.warns(UserWarning, match="outside the centre"):
        weights = util.mask_to_patch_weights(mask)
    assert weights.sum() == 0
    tokens = torch.randn(257, 768)
    with pytest.raises(ValueError, match="verify_masks.py"):
        util.svd_manipulate_embeddings(tokens[0], tokens[1:], weights[0])


def test_small_mask_falls_back_to_most_covered_patches():
    mask = np.zeros((224, 224), np.uint8)
    mask[30:35, 65:75] = 1                             # 5x5 pixels in each of patches (2, 4) and (2, 5)
    with pytest.warns(UserWarning, match="most-covered"):
        weights = util.mask_to_patch_weights(mask)[0]
    assert torch.nonzero(weights).flatten().tolist() == [2 * 16 + 4, 2 * 16 + 5]
    assert torch.allclose(weights[[36, 37]], torch.tensor([25 / 196, 25 / 196]), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert util.mask_to_patch_weights(mask, fallback=False).sum() == 0
        assert util.mask_to_patch_weights(np.zeros((224, 224)), fallback=True).sum() == 0   # empty stays empty

    # the SVD step selects those patches through its own fallback and reports it
    tokens = F.normalize(torch.randn(257, 768), dim=-1)
    with pytest.warns(UserWarning) as record:
        emb, info = util.svd_manipulate_embeddings(tokens[0], tokens[1:], weights, k=1, return_info=True)
    assert any("most-covered" in str(r.message) for r in record)
    assert info["fallback"] and info["patch_indices"] == [36, 37] and info["n_rows"] == 3
    assert torch.isclose(emb.norm(), torch.tensor(1.0))


# -----------------------------------------------------------------------------
# SVD manipulation

@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(257, 768, generator=g), dim=-1)


def soft_region(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(256)
    idx = torch.randperm(256, generator=g)[:n]
    w[idx] = 0.55 + 0.45 * torch.rand(n, generator=g)  # soft weights, all selected (> 0.5)
    w[torch.randperm(256, generator=g)[:20]] *= 0.5    # some drop to <= 0.5 and leave the region
    return w


def plain_weighted_mean(cls, patches, w):
    sel = w > 0.5
    X = torch.cat([cls[None], patches[sel]])
    weights = torch.cat([torch.ones(1), w[sel]])
    return F.normalize((weights[:, None] * X).sum(0) / weights.sum(), dim=0)


@pytest.mark.parametrize("mode", ["suppress", "boost"])
def test_unit_scale_reproduces_plain_weighted_mean(tokens, mode):
    w = soft_region()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb, info = util.svd_manipulate_embeddings(tokens[0], tokens[1:], w, k=5, mode=mode, alpha=1.0, beta=1.0,
                                                   return_info=True)
    assert (emb - plain_weighted_mean(tokens[0], tokens[1:], w)).abs().max() <= TOL
    assert info["no_op"] and not info["fallback"] and info["n_patches"] == int((w > 0.5).sum())


@pytest.mark.parametrize("mode,factor", [("suppress", 0.1), ("boost", 3.0)])
def test_manipulation_moves_embedding_along_top_singular_direction(tokens, mode, factor):
    w = soft_region()
    emb, info = util.svd_manipulate_embeddings(tokens[0], tokens[1:], w, k=3, mode=mode, alpha=factor,
                                               beta=factor, return_info=True)
    plain = plain_weighted_mean(tokens[0], tokens[1:], w)
    X = torch.cat([tokens[0][None], tokens[1:][w > 0.5]])
    v1 = torch.linalg.svd(X, full_matrices=False)[2][0]
    # scaling the top-k values by < 1 (> 1) strictly shrinks (grows) the share of the top direction
    if mode == "suppress":
        assert (emb @ v1).abs() < (plain @ v1).abs() - 1e-3
    else:
        assert (emb @ v1).abs() > (plain @ v1).abs() + 1e-3
    assert torch.isclose(emb.norm(), torch.tensor(1.0)) and emb.shape == (768,)
    assert info["k_effective"] == 3 and not info["no_op"] and 0 < info["topk_energy"] < 1
    json.dumps(info)                                   # goes into run.json as is


def test_rank_trap_warns_and_changes_nothing(tokens):
    w = torch.zeros(256)
    w[[10, 11, 12]] = 1.0                              # 1 + 3 rows: at most 4 singular values
    with pytest.warns(UserWarning, match=r"k=10 .* 4 non-zero singular values.*changes nothing"):
        emb, info = util.svd_manipulate_embeddings(tokens[0], tokens[1:], w, k=10, mode="boost", beta=2.0,
                                                   return_info=True)
    assert (emb - plain_weighted_mean(tokens[0], tokens[1:], w)).abs().max() <= TOL
    assert info["k_requested"] == 10 and info["k_effective"] == 4 and info["n_rows"] == 4 and info["no_op"]
    # one value below the rank, the manipulation is back
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb3 = util.svd_manipulate_embeddings(tokens[0], tokens[1:], w, k=3, mode="boost", beta=2.0)
    assert (emb3 - emb).abs().max() > 1e-3


def test_rank_trap_counts_numerical_rank(tokens):
    # duplicated patches: 6 rows but rank 2, so k=2 already scales everything there is
    patches = tokens[1:].clone()
    patches[:5] = tokens[1]
    w = torch.zeros(256)
    w[:5] = 1.0
    with pytest.warns(UserWarning, match="changes nothing"):
        _, info = util.svd_manipulate_embeddings(tokens[0], patches, w, k=2, return_info=True)
    assert info["rank"] == 2 and info["n_rows"] == 6 and info["no_op"]


def test_empty_region_raises_with_verify_masks_hint(tokens):
    with pytest.raises(ValueError, match=r"python verify_masks.py --image"):
        util.svd_manipulate_embeddings(tokens[0], tokens[1:], torch.zeros(256))


def test_svd_half_precision_in_half_out(tokens):
    w = soft_region()
    emb16 = util.svd_manipulate_embeddings(tokens[0].half(), tokens[1:].half(), w, k=5)
    emb32 = util.svd_manipulate_embeddings(tokens[0].half().float(), tokens[1:].half().float(), w, k=5)
    assert emb16.dtype == torch.float16 and (emb16.float() - emb32).abs().max() < 1e-3


def test_svd_accepts_batched_patch_weights_and_numpy(tokens):
    w = soft_region()
    ref = util.svd_manipulate_embeddings(tokens[0], tokens[1:], w, k=5)
    assert torch.equal(util.svd_manipulate_embeddings(tokens[0], tokens[1:], w[None], k=5), ref)
    assert torch.equal(util.svd_manipulate_embeddings(tokens[0], tokens[1:], w.numpy(), k=5), ref)


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="amplify"), r"'suppress', 'boost'"),
    (dict(k=0), "positive integer"),
    (dict(k=2.5), "positive integer"),
    (dict(mode="suppress", alpha=-0.1), "alpha"),
    (dict(mode="boost", beta=float("nan")), "beta"),
])
def test_svd_bad_arguments(tokens, kwargs, match):
    with pytest.raises(ValueError, match=match):
        util.svd_manipulate_embeddings(tokens[0], tokens[1:], soft_region(), **kwargs)


@pytest.mark.parametrize("cls_shape,patch_shape,w_shape,match", [
    ((1, 768), (256, 768), (256,), r"cls_token \[D\]"),
    ((768,), (256, 512), (256,), r"patch_tokens \[P, D\]"),
    ((768,), (256, 768), (255,), "255 entries"),
    ((768,), (256, 768), (2, 256), r"\[P\] or \[1, P\]"),
])
def test_svd_wrong_shapes(cls_shape, patch_shape, w_shape, match):
    with pytest.raises(ValueError, match=match):
        util.svd_manipulate_embeddings(torch.randn(cls_shape), torch.randn(patch_shape), torch.ones(w_shape))


def test_svd_rejects_nan_tokens(tokens):
    patches = tokens[1:].clone()
    patches[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        util.svd_manipulate_embeddings(tokens[0], patches, soft_region())


def test_full_suppression_of_every_value_raises(tokens):
    w = torch.zeros(256)
    w[:2] = 1.0
    with pytest.raises(ValueError, match="zero norm"):
        util.svd_manipulate_embeddings(tokens[0], tokens[1:], w, k=5, alpha=0.0)


# -----------------------------------------------------------------------------
# background and mixing

def test_background_embedding(tokens):
    patches_1 = tokens[1:]
    m_neg, m_pos = torch.zeros(256), torch.zeros(256)
    m_neg[:100], m_pos[50:150] = 1.0, 1.0
    m_pos[200] = 0.13                                  # a fallback soft weight: the patch is mostly background
    emb_bg = util.background_embedding(patches_1, m_neg[None], m_pos)
    expected = F.normalize(patches_1[150:].mean(0), dim=0)
    assert (emb_bg - expected).abs().max() <= TOL and emb_bg.shape == (768,)


def test_background_missing_warns_and_mix_still_works(tokens):
    m_neg, m_pos = torch.zeros(256), torch.zeros(256)
    m_neg[:128], m_pos[128:] = 1.0, 1.0
    with pytest.warns(UserWarning, match="no background patch"):
        emb_bg = util.background_embedding(tokens[1:], m_neg, m_pos)
    assert torch.equal(emb_bg, torch.zeros(768))
    normal, boost, suppress = tokens[0], tokens[1], tokens[2]
    mixed = util.mix_embeddings(normal, boost, suppress, emb_bg)
    assert (mixed - F.normalize(0.4 * normal + 0.4 * boost + 0.1 * suppress, dim=0)).abs().max() <= TOL
    with pytest.raises(ValueError, match="gamma=1"):       # nothing but the missing background
        util.combine_manipulated_embeddings(suppress, boost, emb_bg, alpha=0.0, beta=0.0, gamma=1.0)


def test_mix_embeddings_formula_and_warnings(tokens):
    normal, boost, suppress, bg = tokens[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed = util.mix_embeddings(normal, boost, suppress, bg)
        util.mix_embeddings(normal, boost, suppress, bg, 0.4, 0.4, 0.1, 0.105)   # within the 0.01 tolerance
    expected = 0.4 * normal + 0.4 * boost + 0.1 * suppress + 0.1 * bg
    assert (mixed - expected / expected.norm()).abs().max() <= TOL
    with pytest.warns(UserWarning, match=r"sum to 1.5, not 1 \(w_direct=0.9"):
        util.mix_embeddings(normal, boost, suppress, bg, w_direct=0.9)
    # combine is the same mix without the plain CLIP embedding
    assert torch.equal(util.combine_manipulated_embeddings(suppress, boost, bg),
                       util.mix_embeddings(torch.zeros(768), boost, suppress, bg, 0.0, 0.5, 0.2, 0.3))


def test_each_mixing_weight_scales_its_own_embedding(tokens):
    """The pipeline's step 6 argument order: a weight of 1 alone gives back exactly its embedding."""
    normal, boost, suppress, bg = tokens[:4]
    names = ["w_direct", "w_boost", "w_suppress", "w_bg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, emb in zip(names, (normal, boost, suppress, bg)):
            weights = {n: float(n == name) for n in names}
            assert (util.mix_embeddings(normal, boost, suppress, bg, **weights) - F.normalize(emb, dim=0)).abs().max() <= TOL
    # scaling every weight alike changes nothing (the result is L2-normalised)
    a = util.mix_embeddings(normal, boost, suppress, bg, 0.4, 0.4, 0.1, 0.1)
    with pytest.warns(UserWarning, match="sum to 2"):
        b = util.mix_embeddings(normal, boost, suppress, bg, 0.8, 0.8, 0.2, 0.2)
    assert (a - b).abs().max() <= TOL


def test_mix_embeddings_errors(tokens):
    normal, boost, suppress, bg = tokens[:4]
    bad = boost.clone()
    bad[7] = float("nan")
    with pytest.raises(ValueError, match="boost contains NaN"):
        util.mix_embeddings(normal, bad, suppress, bg)
    bad[7] = float("inf")
    with pytest.raises(ValueError, match="bg contains NaN or Inf"):
        util.mix_embeddings(normal, boost, suppress, bad)
    with pytest.raises(ValueError, match=r"~0 norm .*w_direct=0.5, w_boost=0.5"):
        util.mix_embeddings(normal, -normal, suppress, bg, 0.5, 0.5, 0.0, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        util.mix_embeddings(normal, boost, suppress, bg[:100])
    with pytest.raises(ValueError, match="w_bg must be a finite number"):
        util.mix_embeddings(normal, boost, suppress, bg, w_bg=float("nan"))


# -----------------------------------------------------------------------------
# CLIP tokens

@pytest.fixture(scope="module")
def tiny():
    return util.tiny_clip(seed=0)


def sample_images():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (180, 260, 4), dtype=np.uint8)
    return [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)),
            Image.fromarray(rgba, "RGBA"),
            Image.fromarray(rng.integers(0, 256, (300, 200), dtype=np.uint8), "L")]


@torch.no_grad()
def test_cls_token_equals_encode_image(tiny):
    model, preprocess = tiny
    images = sample_images()
    tokens = util.extract_full_clip_tokens(images, model=model, preprocess=preprocess)
    assert tokens.shape == (3, 257, 768) and tokens.dtype == torch.float32
    assert (tokens.norm(dim=-1) - 1).abs().max() <= TOL
    batch = torch.stack([preprocess(util.load_image_rgb(im)) for im in images])
    expected = F.normalize(model.encode_image(batch).float(), dim=-1)
    assert (tokens[:, 0] - expected).abs().max() <= TOL
    assert torch.equal(util.clip_image_embeddings(images, model=model, preprocess=preprocess), tokens[:, 0])
    # batching does not change the result
    in_pieces = util.extract_full_clip_tokens(images, batch_size=2, model=model, preprocess=preprocess)
    assert (in_pieces - tokens).abs().max() <= TOL
    # tokens 1..256 are the patches in row-major order: changing only patch (row 2, column 5) of a 224x224
    # image moves token 1 + 2 * 16 + 5 the most, which is what the mask alignment relies on
    flat = np.full((224, 224, 3), 128, np.uint8)
    poked = flat.copy()
    poked[28:42, 70:84] = 255
    t = util.extract_full_clip_tokens([Image.fromarray(flat), Image.fromarray(poked)], model=model,
                                      preprocess=preprocess)
    assert (t[1] - t[0]).norm(dim=-1).argmax().item() == 1 + 2 * 16 + 5


def test_paths_and_pil_images_give_the_same_tokens(tiny, tmp_path):
    model, preprocess = tiny
    images = sample_images()[:2]
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"im{i}.png")
        im.save(paths[-1])
    from_pil = util.extract_full_clip_tokens(images, model=model, preprocess=preprocess)
    from_paths = util.extract_full_clip_tokens([str(p) for p in paths], model=model, preprocess=preprocess)
    assert torch.equal(from_pil, from_paths)
    single = util.extract_full_clip_tokens(paths[0], model=model, preprocess=preprocess)
    assert single.shape == (1, 257, 768) and torch.equal(single[0], from_pil[0])


def test_clip_input_errors(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="no images"):
        util.extract_full_clip_tokens([], model=model, preprocess=tiny[1])
    with pytest.raises(ValueError, match="preprocess"):
        util.extract_full_clip_tokens(sample_images()[:1], model=model)


@torch.no_grad()
def test_vit_l14_hyperparameters_give_257_tokens_of_768():
    from clip.model import CLIP
    # The real ViT-L/14 architecture with random weights. Built on the meta device and only the image tower
    # materialised: the text tower (~125M parameters) is never used here and would only cost time and memory.
    with torch.device("meta"):
        model = CLIP(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
                     context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12,
                     transformer_layers=12)
    model.visual.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    for name, p in model.visual.named_parameters():
        if name.startswith("ln") or ".ln_" in name:
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        else:
            p.normal_(0, 0.02, generator=g)
    assert model.visual.transformer.layers == 24 and model.visual.conv1.out_channels == 1024
    # one image: a ViT-L forward pass costs ~80 GFLOP, and batching is covered by the tiny model above
    tokens = util.extract_full_clip_tokens(sample_images()[:1], model=model.eval(), preprocess=util.tiny_clip()[1])
    assert tokens.shape == (1, 257, 768)
    assert torch.isfinite(tokens).all() and (tokens.norm(dim=-1) - 1).abs().max() <= TOL
    del model


def test_tiny_clip_is_seeded():
    a, b, c = util.tiny_clip(seed=0)[0], util.tiny_clip(seed=0)[0], util.tiny_clip(seed=1)[0]
    assert torch.equal(a.visual.proj, b.visual.proj) and not torch.equal(a.visual.proj, c.visual.proj)
    assert a.visual.proj.shape == (64, 768)


# -----------------------------------------------------------------------------
# images and devices

@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(np.zeros((30, 40, 4), np.uint8), "RGBA"),
    lambda: Image.fromarray(np.zeros((30, 40, 2), np.uint8), "LA"),
    lambda: Image.fromarray(np.full((30, 40), 77, np.uint8), "L"),
    lambda: _palette(transparent=False),
    lambda: _palette(transparent=True),
], ids=["RGBA", "LA", "L", "P", "P+transparency"])
def test_load_image_rgb_modes(make, tmp_path):
    img = make()
    for source in (img, _saved(img, tmp_path / "im.png")):
        rgb = util.load_image_rgb(source)
        assert rgb.mode == "RGB" and rgb.size == (40, 30) and np.asarray(rgb).dtype == np.uint8
        pixels = np.asarray(rgb)
        if img.mode in ("RGBA", "LA") or "transparency" in img.info:
            assert (pixels == 255).all()                   # fully transparent -> composited on white
        else:
            assert (pixels == 77).all()


def _palette(transparent):
    img = Image.fromarray(np.zeros((30, 40), np.uint8), "P")
    img.putpalette([77, 77, 77] * 256)
    if transparent:
        img.info["transparency"] = 0
    return img


def _saved(img, path):
    img.save(path)
    return path


def test_load_image_rgb_16_bit(tmp_path):
    values = np.array([[0, 65535, 32768, 1000]] * 3, np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = util.load_image_rgb(tmp_path / "deep.png")
    assert rgb.mode == "RGB" and rgb.size == (4, 3)
    assert np.asarray(rgb)[0, :, 0].tolist() == [0, 255, 128, 4]     # scaled to 8 bit, not clipped


def test_load_image_rgb_applies_exif_rotation(tmp_path):
    img = Image.fromarray(np.zeros((30, 40, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6                                   # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert util.load_image_rgb(tmp_path / "rot.jpg").size == (30, 40)


def test_load_image_rgb_errors(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        util.load_image_rgb(missing)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        util.load_image_rgb(not_image)
    with pytest.raises(TypeError):
        util.load_image_rgb(np.zeros((4, 4, 3)))


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (no pixel data): what PIL's open reads before decoding."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_big_images_are_read_at_the_working_size_with_points_in_file_pixels(tmp_path):
    # 6000 x 3000: JPEG decoded at 1/2 by libjpeg, then resized to 2048 x 1024; the size users see stays 6000
    rng = np.random.default_rng(0)
    small = (rng.random((30, 60, 3)) * 255).astype(np.uint8)
    big = Image.fromarray(small).resize((6000, 3000), Image.Resampling.NEAREST)
    big.save(tmp_path / "big.jpg", quality=90)
    rgb, original = util.open_image(tmp_path / "big.jpg")
    assert original == (6000, 3000) and rgb.size == (2048, 1024) == util.working_size(original)
    assert util.image_size(tmp_path / "big.jpg") == (6000, 3000)
    info = util.inspect_image(tmp_path / "big.jpg")
    assert info["size"] == (6000, 3000) and info["working_size"] == (2048, 1024)
    assert any("every model reads it at 2048 x 1024" in w for w in info["warnings"])
    # the same picture as a model reads it: close to resizing the file ourselves
    direct = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB").resize((2048, 1024), Image.Resampling.LANCZOS))
    assert np.abs(np.asarray(rgb).astype(int) - direct.astype(int)).mean() < 3
    # small images are untouched
    Image.fromarray(small).save(tmp_path / "small.png")
    assert util.open_image(tmp_path / "small.png")[0].size == (60, 30)


def test_images_that_cannot_be_opened_safely_are_clear_errors(tmp_path):
    bomb = _png_header_only(tmp_path / "huge.png", 14000, 14000)
    with pytest.raises(ValueError, match=r"huge.png is 14000 x 14000 pixels \(196 MP\): more than PIL decodes safely"):
        util.inspect_image(bomb)
    with pytest.raises(ValueError, match="decompression bombs"):
        util.load_image_rgb(bomb)
    Image.new("RGB", (20000, 2)).save(tmp_path / "strip.png")
    with pytest.raises(ValueError, match=r"strip.png is 20000 x 2 pixels: each side needs at least 32 px"):
        util.inspect_image(tmp_path / "strip.png")
    Image.new("RGB", (2000, 100)).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match="aspect ratio of 20:1"):
        util.inspect_image(tmp_path / "wide.png")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "strip.png").read_bytes()[:40])
    with pytest.raises(ValueError, match="cut.jpg"):
        util.inspect_image(tmp_path / "cut.jpg")


def test_transparent_and_wide_images_are_warned_about(tmp_path):
    Image.new("RGBA", (64, 64), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    notes = util.inspect_image(tmp_path / "clear.png")["warnings"]
    assert any("fully transparent" in n and "plain white" in n for n in notes)
    assert (np.asarray(util.load_image_rgb(tmp_path / "clear.png")) == 255).all()
    half = np.zeros((64, 64, 4), np.uint8)
    half[:, :32, 3] = 255
    Image.fromarray(half, "RGBA").save(tmp_path / "half.png")
    assert not util.inspect_image(tmp_path / "half.png")["warnings"]
    Image.new("RGB", (300, 100)).save(tmp_path / "wide.png")
    assert any("CLIP sees only its centre (100-200 x 0-100 px)" in n
               for n in util.inspect_image(tmp_path / "wide.png")["warnings"])
    assert util.clip_view_box((300, 100)) == (100, 0, 200, 100)


@pytest.mark.parametrize("text, expected", [
    ("cat", "cat"), ("sea lion", "sea-lion"), ("a/../../../x", "a-x"), ("/etc/passwd", "etc-passwd"),
    ("..", None), ("../..", None), (".hidden", "hidden"), ("C:\\Windows\\system32", "C-Windows-system32"),
    ("Kätzchen", "Katzchen"), ("猫", None), ("a\x00b\nc", "a-b-c"), ("SVD_K-1_MIX_BETA-0.3", "SVD_K-1_MIX_BETA-0.3"),
    ("x" * 300, None),
])
def test_safe_name_never_leaves_its_folder(text, expected, tmp_path):
    name = util.safe_name(text)
    if expected is not None:
        assert name == expected
    assert name and len(name) <= 40 and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name) and ".." not in name
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    if text in ("猫", "..", "x" * 300):
        assert name != util.safe_name(text + "!")    # nothing-left and over-long names keep a hash of the original


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_get_device_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        util.get_device("cuda")
    assert util.get_device("cpu") == torch.device("cpu")
    assert util.get_device().type in ("cpu", "mps")


@pytest.mark.parametrize("device, says", [("meta", "cannot run the models here"), ("gpu", "is not a device name"),
                                          ("xpu", "cannot run the models here")])
def test_get_device_refuses_devices_it_cannot_run_on(device, says):
    with pytest.raises(RuntimeError, match=says):
        util.get_device(device)
    if not torch.backends.mps.is_available():
        with pytest.raises(RuntimeError, match="MPS .* is not available"):
            util.get_device("mps")


def test_new_file_appears_only_when_complete_and_never_replaces(tmp_path):
    import errno
    path = tmp_path / "figure.png"
    with pytest.raises(OSError) as err:
        with util.new_file(path) as f:
            f.write(b"\x89PNG half a figure")
            raise OSError(errno.ENOSPC, "No space left on device")   # the disk filled up mid-write
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)   # names the file it was writing
    assert list(tmp_path.iterdir()) == []            # no cut file under the name, no part file either
    with util.new_file(path) as f:
        f.write(b"whole")
    assert path.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["figure.png"]
    with pytest.raises(FileExistsError):
        with util.new_file(path) as f:
            f.write(b"other")
    assert path.read_bytes() == b"whole"


def test_a_truncated_jpeg_fails_the_pre_check(tmp_path):
    from conftest import ROOT
    data = (ROOT / "images" / "original.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 3])
    with pytest.raises(ValueError, match="cut.jpg.*truncated or damaged"):
        util.inspect_image(tmp_path / "cut.jpg")
    assert util.inspect_image(ROOT / "images" / "original.jpg")["size"] == (672, 672)
