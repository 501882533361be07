"""mask.py against sam2's own SAM2ImagePredictor, with a tiny random-weight SAM2 built on purpose."""
import numpy as np
import pytest
import torch
from PIL import Image

import mask
from model import checkpoints as ck
from util import load_image_rgb

W, H = 80, 56   # non-square, so a swapped x/y or H/W shows up


@pytest.fixture(scope="module")
def seg():
    return mask.tiny_sam2_predictor(seed=0)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60, size=(H, W, 3), dtype=np.uint8)
    pixels[10:40, 20:50] = (220, 180, 40)       # an "object" on a dark background
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(pixels).save(path)
    return path


def direct(seg, image_path, coords, labels, multimask_output):
    """sam2's predictor called by hand, as its README does."""
    predictor = seg.predictor
    predictor.set_image(np.array(load_image_rgb(image_path)))
    with torch.no_grad():
        return predictor.predict(point_coords=np.asarray(coords), point_labels=np.asarray(labels),
                                 multimask_output=multimask_output)


def test_get_mask_equals_direct_sam2_call(seg, image_path):
    m = mask.get_mask(image_path, 10, 10, 1, predictor=seg)
    masks, _, _ = direct(seg, image_path, [[10, 10]], [1], multimask_output=False)
    assert m.dtype == np.float32 and m.shape == (H, W)
    assert set(np.unique(m)) == {0.0, 1.0}   # random weights, but this point gives a partial mask
    np.testing.assert_array_equal(m, masks[0].astype(np.float32))


def test_several_points_with_negative_labels_equal_direct_call(seg, image_path):
    xs, ys, labels = [65, 26, 36], [44, 6, 16], [1, 1, 0]
    m = mask.get_mask(image_path, xs, ys, labels, predictor=seg)
    masks, _, _ = direct(seg, image_path, np.stack([xs, ys], 1), labels, multimask_output=False)
    assert m.shape == (H, W) and 0 < m.mean() < 1
    np.testing.assert_array_equal(m, masks[0])
    # the negative label reaches SAM2: as a positive point it gives another mask
    assert not np.array_equal(m, mask.get_mask(image_path, xs, ys, 1, predictor=seg))
    # a scalar label is broadcast to every point
    np.testing.assert_array_equal(mask.get_mask(image_path, xs[:2], ys[:2], 1, predictor=seg),
                                  mask.get_mask(image_path, xs[:2], ys[:2], [1, 1], predictor=seg))


def test_get_masks_keeps_best_scoring_of_three(seg, image_path):
    pil = load_image_rgb(image_path).transpose(Image.FLIP_LEFT_RIGHT)
    got = mask.get_masks([image_path, pil], 10, 10, [1], predictor=seg)
    assert len(got) == 2
    masks, scores, _ = direct(seg, image_path, [[10, 10]], [1], multimask_output=True)
    assert masks.shape == (3, H, W)
    # otherwise "take the first" would pass too
    assert np.argmax(scores) != 0 and not np.array_equal(masks[0], masks[np.argmax(scores)])
    assert got[0].dtype == np.float32 and got[0].shape == (H, W)
    np.testing.assert_array_equal(got[0], masks[np.argmax(scores)])
    # the second image went through set_image itself (a PIL image), not the first one's encoding
    seg.predictor.set_image(np.array(pil))
    masks, scores, _ = seg.predictor.predict(np.array([[10, 10]]), np.array([1]), multimask_output=True)
    np.testing.assert_array_equal(got[1], masks[np.argmax(scores)])


def test_get_masks_per_image_points(seg, image_path):
    got = mask.get_masks([image_path, image_path], [30, [30, 5]], [20, [20, 50]], [1, [1, 0]], predictor=seg)
    masks, scores, _ = direct(seg, image_path, [[30, 20], [5, 50]], [1, 0], multimask_output=True)
    np.testing.assert_array_equal(got[1], masks[np.argmax(scores)])
    with pytest.raises(ValueError, match="one per image"):
        mask.get_masks([image_path, image_path], [30], [20], 1, predictor=seg)


def test_predict_reuses_the_encoding(seg, image_path):
    seg.set_image(image_path)
    assert seg.image_size == (W, H)
    embedding = seg.predictor.get_image_embedding()
    for x, y in [(10, 10), (60, 40)]:
        masks, scores = seg.predict([[x, y]], [1])
        assert masks.shape == (1, H, W) and scores.shape == (1,)
    assert seg.predictor.get_image_embedding() is embedding   # no re-encode per click


def test_point_outside_image_names_the_size(seg, image_path):
    for x, y in [(W, 10), (10, H), (-1, 10), (10, float("nan"))]:
        with pytest.raises(ValueError, match=f"{W} x {H}") as err:
            mask.get_mask(image_path, x, y, predictor=seg)
        assert "verify_masks.py" in str(err.value) and "scene.png" in str(err.value)
    with pytest.raises(ValueError, match=f"{W} x {H}"):
        mask.get_masks([image_path], 10, 500, predictor=seg)
    seg.set_image(image_path)   # the interactive path: set once, then a click off the image
    with pytest.raises(ValueError, match=f"x={W + 5}.* {W} x {H}"):
        seg.predict([[W + 5, 1]], [1])


def test_bad_labels_and_lengths(seg, image_path):
    with pytest.raises(ValueError, match="1 .*or 0"):
        mask.get_mask(image_path, 30, 20, 2, predictor=seg)
    with pytest.raises(ValueError, match="1 .*or 0"):
        mask.get_mask(image_path, [30, 40], [20, 20], [1, -1], predictor=seg)
    with pytest.raises(ValueError, match="label"):
        mask.get_mask(image_path, [30, 40], [20, 20], [1, 0, 1], predictor=seg)
    with pytest.raises(ValueError, match="same length"):
        mask.get_mask(image_path, [30, 40], [20], 1, predictor=seg)
    with pytest.raises(ValueError, match="at least one"):
        mask.get_mask(image_path, [], [], 1, predictor=seg)


def test_predict_before_set_image_says_what_to_do(seg):
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    fresh = mask.PointSegmenter(SAM2ImagePredictor(seg.predictor.model))
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict([[1, 1]], [1])


def test_real_loader_without_checkpoint_raises_and_builds_nothing(tmp_path, monkeypatch):
    import sam2.build_sam
    built = []
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", tmp_path)
    # record every build_sam2 call: with no checkpoint there must be none (it would give random weights)
    monkeypatch.setattr(sam2.build_sam, "build_sam2", lambda *a, **k: built.append((a, k)))
    mask._load_sam2.cache_clear()
    with pytest.raises(ck.CheckpointError, match="sam2.1_hiera_large.pt"):
        mask.load_sam2_predictor(device="cpu")
    assert built == []
    assert mask._load_sam2.cache_info().currsize == 0   # a failure is not cached: a later call retries


def test_real_loader_never_builds_from_a_path_that_is_gone(tmp_path, monkeypatch):
    import sam2.build_sam
    built = []
    # the registry verified a file that has disappeared since: build_sam2 must still not be reached
    monkeypatch.setattr(ck, "checkpoint_path", lambda name, **kw: tmp_path / "sam2.1_hiera_large.pt")
    monkeypatch.setattr(sam2.build_sam, "build_sam2", lambda *a, **k: built.append((a, k)))
    mask._load_sam2.cache_clear()
    with pytest.raises(ck.CheckpointError, match="sam2.1_hiera_large.pt"):
        mask.load_sam2_predictor(device="cpu")
    assert built == []


def test_tiny_predictor_is_cached_and_seeded(seg):
    assert mask.tiny_sam2_predictor() is seg
    assert mask.tiny_sam2_predictor(seed=0, device="cpu") is seg
    rebuilt = mask._tiny_sam2.__wrapped__(0, "cpu")       # bypass the cache: same seed, same weights
    ref = seg.predictor.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in rebuilt.predictor.model.state_dict().items())
    other = mask._tiny_sam2.__wrapped__(1, "cpu").predictor.model.state_dict()
    assert not all(torch.equal(v, ref[k]) for k, v in other.items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bfloat16 autocast path)")
def test_cuda_autocast_gives_float32_binary_mask(image_path):
    seg = mask.tiny_sam2_predictor(seed=0, device="cuda")
    m = mask.get_mask(image_path, 30, 20, predictor=seg)
    assert m.dtype == np.float32 and m.shape == (H, W) and set(np.unique(m)) <= {0.0, 1.0}


# -----------------------------------------------------------------------------
# save_mask_figure

def test_save_mask_figure_panels_stars_and_overlay(image_path, tmp_path):
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt
    figures_before = plt.get_fignums()
    m = np.zeros((H, W), dtype=np.float32)
    m[10:40, 20:50] = 1
    path = tmp_path / "sub" / "fig.png"
    fig = mask.save_mask_figure(image_path, m, path, points=[[30, 20], [5, 50], [60, 10]], labels=[1, 0, 1],
                                title="cat")
    assert path.is_file() and Image.open(path).format == "PNG"
    assert plt.get_fignums() == figures_before   # object API: nothing registered with pyplot
    image_ax, mask_ax, overlay_ax = fig.axes
    assert fig._suptitle.get_text() == "cat"
    # stars: green for label 1, red for label 0, at the given (x, y)
    stars = {tuple(np.round(c.get_facecolor()[0][:3], 3)): c.get_offsets().tolist() for c in image_ax.collections}
    assert stars == {tuple(np.round(mcolors.to_rgb("limegreen"), 3)): [[30, 20], [60, 10]],
                     tuple(np.round(mcolors.to_rgb("red"), 3)): [[5, 50]]}
    np.testing.assert_array_equal(mask_ax.images[0].get_array(), m > 0.5)
    rgb = np.asarray(load_image_rgb(image_path), dtype=np.float32) / 255
    overlay = np.asarray(overlay_ax.images[0].get_array())
    np.testing.assert_allclose(overlay[m == 0], rgb[m == 0])          # untouched off the mask
    assert np.all(overlay[m == 1][:, 0] > rgb[m == 1][:, 0] - 1e-6)   # tinted red on it
    assert not np.allclose(overlay[m == 1], rgb[m == 1])


def test_save_mask_figure_without_points_and_from_pil(image_path):
    fig = mask.save_mask_figure(load_image_rgb(image_path), np.ones((H, W), dtype=bool))
    assert len(fig.axes) == 3 and len(fig.axes[0].collections) == 0
    assert "100.0%" in fig.axes[1].get_title()


def test_save_mask_figure_never_overwrites(image_path, tmp_path):
    path = tmp_path / "fig.png"
    path.write_bytes(b"earlier result")
    with pytest.raises(FileExistsError, match="fig.png"):
        mask.save_mask_figure(image_path, np.zeros((H, W)), path)
    assert path.read_bytes() == b"earlier result"


def test_save_mask_figure_size_mismatch_names_both(image_path, tmp_path):
    with pytest.raises(ValueError, match=f"{H} x {W}.*{W} x {H}"):   # a transposed mask
        mask.save_mask_figure(image_path, np.zeros((W, H)), tmp_path / "a.png")
    with pytest.raises(ValueError, match=f"{W} x {H}"):
        mask.save_mask_figure(image_path, np.zeros((1, H, W)))
    assert not (tmp_path / "a.png").exists()
    with pytest.raises(ValueError, match="1 .*or 0"):
        mask.save_mask_figure(image_path, np.zeros((H, W)), points=[[1, 1]], labels=[2])


# -----------------------------------------------------------------------------
# points in the file's pixels on big images

def test_points_are_in_the_files_pixels_on_an_image_read_smaller(seg, tmp_path):
    import util
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, size=(600, 1000, 3), dtype=np.uint8)
    Image.fromarray(small).resize((5000, 3000), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    scaled = tmp_path / "scaled.png"
    util.load_image_rgb(tmp_path / "big.png").save(scaled)            # what every model sees: 2048 x 1229
    assert Image.open(scaled).size == (2048, 1229)
    m_big = mask.get_mask(tmp_path / "big.png", [2500, 1000], [1500, 500], [1, 0], predictor=seg)
    factor = 2048 / 5000
    m_scaled = mask.get_mask(scaled, [2500 * factor, 1000 * factor], [1500 * factor, 500 * factor], [1, 0], predictor=seg)
    assert m_big.shape == (1229, 2048) and np.array_equal(m_big, m_scaled)
    with pytest.raises(ValueError, match="5000 x 3000"):
        mask.get_mask(tmp_path / "big.png", 4000, 3100, predictor=seg)   # inside the working image, not the file


# -----------------------------------------------------------------------------
# masks from a name: SAM2 proposals, CLIP scores

@pytest.fixture(scope="module")
def tiny_clip():
    import util
    return util.tiny_clip()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Three coloured boxes on grey, and one SAM2-style proposal record per box."""
    pixels = np.full((120, 200, 3), 128, np.uint8)
    boxes = [(10, 10, 60, 50), (80, 20, 150, 100), (160, 60, 195, 115)]   # x0, y0, x1, y1
    for (x0, y0, x1, y1), colour in zip(boxes, [(220, 30, 30), (30, 200, 40), (40, 60, 230)]):
        pixels[y0:y1, x0:x1] = colour
    path = tmp_path_factory.mktemp("scene") / "boxes.png"
    Image.fromarray(pixels).save(path)
    records = []
    for x0, y0, x1, y1 in boxes:
        seg = np.zeros((120, 200), bool)
        seg[y0:y1, x0:x1] = True
        records.append({"segmentation": seg, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(seg.sum()),
                        "predicted_iou": 0.9, "stability_score": 0.95, "point_coords": [[x0, y0]]})
    return path, records


def test_proposals_are_sams_automatic_mask_generator_on_the_shared_encoding(seg, image_path):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    options = dict(mask.TINY_PROPOSAL_OPTIONS, points_per_side=6, box_nms_thresh=0.99)
    encodes = []
    hook = seg.predictor.model.image_encoder.register_forward_hook(lambda *a: encodes.append(1))
    try:
        seg.set_image(image_path)
        seg.predict([[30, 20]], [1])                             # a point prompt on the image ...
        ours = mask.propose_masks(image_path, seg, **options)    # ... and proposals reuse its encoding
    finally:
        hook.remove()
    assert len(encodes) == 1
    # sam2's generator called as its README does, on the same model and image
    with torch.no_grad():
        theirs = SAM2AutomaticMaskGenerator(seg.predictor.model, **{**mask.PROPOSAL_OPTIONS, **options}).generate(
            np.array(load_image_rgb(image_path)))
    key = lambda r: (-r["predicted_iou"] * r["stability_score"], r["bbox"])   # noqa: E731
    ours, theirs = sorted(ours, key=key), sorted(theirs, key=key)
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert np.array_equal(a["segmentation"], b["segmentation"]) and a["bbox"] == b["bbox"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"]) and a["area"] == b["area"]


NEUTRAL = (123, 117, 104)   # CLIP's mean colour, 255 * (0.48145466, 0.4578275, 0.40821073) rounded


def record(seg):
    """A SAM2-style proposal record of a boolean mask (bbox XYWH of the mask's extent)."""
    ys, xs = np.nonzero(seg)
    return {"segmentation": seg, "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                          int(ys.max() - ys.min() + 1)],
            "area": int(seg.sum()), "predicted_iou": 0.9, "stability_score": 0.95, "point_coords": [[0, 0]]}


@pytest.fixture(scope="module")
def sprawl_scene(tmp_path_factory):
    """A two-coloured object on plain ground. SAM2 splits it into its top and bottom halves, and proposes the
    ground around it: a frame whose box holds the whole object while its mask holds none of it."""
    pixels = np.empty((120, 200, 3), np.uint8)
    pixels[:] = NEUTRAL
    pixels[30:60, 70:130] = (220, 30, 30)
    pixels[60:90, 70:130] = (30, 60, 230)
    path = tmp_path_factory.mktemp("sprawl") / "sprawl.png"
    Image.fromarray(pixels).save(path)
    top, bottom, frame = (np.zeros((120, 200), bool) for _ in range(3))
    top[30:60, 70:130] = True
    bottom[60:90, 70:130] = True
    frame[26:94, 66:134] = True
    frame[30:90, 70:130] = False
    return path, pixels, [record(frame), record(top), record(bottom)]


def masked_crop(path, seg):
    """What CLIP should see of a proposal, computed with PIL: the mask's pixels on CLIP's mean colour, cut to the
    mask's box, centred on a square of that colour."""
    image = Image.open(path).convert("RGB")
    cut = Image.composite(image, Image.new("RGB", image.size, NEUTRAL), Image.fromarray(seg.astype(np.uint8) * 255))
    cut = cut.crop(Image.fromarray(seg.astype(np.uint8)).getbbox())
    side = max(cut.size)
    square = Image.new("RGB", (side, side), NEUTRAL)
    square.paste(cut, ((side - cut.width) // 2, (side - cut.height) // 2))
    return square


@pytest.mark.parametrize("which", ["scene", "sprawl_scene"])
def test_clip_scores_are_openai_clips_zero_shot_on_the_masked_crops(which, request, tiny_clip):
    import clip
    path, records = request.getfixturevalue(which)[0], request.getfixturevalue(which)[-1]
    model, preprocess = tiny_clip
    prompts = ["a photo of a red box", "a photo of a green box", "a photo of the background"]
    crops = mask.proposal_crops(path, records)
    expected_crops = [masked_crop(path, r["segmentation"]) for r in records]
    assert [c.size for c in crops] == [c.size for c in expected_crops]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(crops, expected_crops))
    ours = mask.score_proposals(crops, prompts, model, preprocess)
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(c) for c in expected_crops]))
        text = model.encode_text(clip.tokenize(prompts))
        image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
        expected = (model.logit_scale.exp() * image @ text.T).softmax(dim=-1)
    diff = float((ours - expected).abs().max())
    print(f"proposal scores vs openai-clip encode_image/encode_text on masked crops: max abs diff {diff:.1e}")
    assert ours.shape == (len(records), 3) and diff < 1e-5


def test_crops_show_the_mask_not_its_box(scene, sprawl_scene):
    path, records = scene
    crops = mask.proposal_crops(path, records)
    # the boxes, padded to a square so CLIP's centre crop keeps all of them
    assert [c.size for c in crops] == [(50, 50), (80, 80), (55, 55)]
    assert np.asarray(crops[0])[25, 25].tolist() == [220, 30, 30]
    assert np.asarray(crops[0])[2, 25].tolist() == list(NEUTRAL)   # padding above the 50 x 40 box
    path, pixels, (frame, top, _) = sprawl_scene
    frame_crop, top_crop = (np.asarray(c) for c in mask.proposal_crops(path, [frame, top]))
    assert frame_crop.shape == (68, 68, 3) and (frame_crop == NEUTRAL).all()   # no trace of the object inside it
    assert top_crop.shape == (60, 60, 3) and (top_crop[15:45] == (220, 30, 30)).all()
    assert (top_crop[:15] == NEUTRAL).all() and (top_crop[45:] == NEUTRAL).all()
    with pytest.raises(ValueError, match="the image is 200 x 120"):
        mask.proposal_crops(path, [record(np.ones((10, 10), bool))])


def test_a_sprawling_proposal_is_judged_on_its_mask_not_its_box(sprawl_scene, tiny_clip, monkeypatch):
    """The ground around an object: its box holds the whole object, its mask none of it. Scored on its box it
    looks more like the object than either half of the object does (bbox scoring picks it); on its mask it is
    plain ground."""
    import util
    path, pixels, records = sprawl_scene
    model, preprocess = tiny_clip
    model.logit_scale.data.fill_(np.log(100.0))
    x, y, w, h = records[0]["bbox"]
    assert x <= 70 and y <= 30 and x + w >= 130 and y + h >= 90 and not records[0]["segmentation"][30:90, 70:130].any()
    # the object's prompt embeds as the whole object on its ground, the background prompt as the bare ground
    whole = Image.fromarray(pixels[26:94, 66:134])
    ground = Image.new("RGB", whole.size, NEUTRAL)
    thing, bare = util.clip_image_embeddings([whole, ground], model=model, preprocess=preprocess)

    def text_embeddings(prompts, clip_model):
        rng = torch.Generator().manual_seed(0)
        return torch.stack([thing if p == "a photo of a thing" else bare if p == "a photo of the background"
                            else torch.nn.functional.normalize(torch.randn(thing.shape[0], generator=rng), dim=0)
                            for p in prompts])
    monkeypatch.setattr(mask, "text_embeddings", text_embeddings)
    m, info = mask.segment_by_text(path, "thing", other_names=["other"], clip_model=model, preprocess=preprocess,
                                   proposals=records, min_score=0.5)
    p = {c["index"]: c["p_object"] for c in info["candidates"]}
    print(f"P(thing): frame {p[0]:.3f}, top half {p[1]:.3f}, bottom half {p[2]:.3f}")
    assert info["chosen"] in ([1], [2]) and p[0] < 0.5 < max(p[1], p[2])
    assert not (m.astype(bool) & records[0]["segmentation"]).any()
    assert info["candidates"][-1]["index"] == 0 and info["candidates"][-1]["best_prompt"] == "a photo of the background"


def test_name_prompts_take_an_before_a_vowel():
    assert mask.name_prompt("astronaut") == "a photo of an astronaut"
    assert mask.name_prompt("cat") == "a photo of a cat"
    assert mask.name_prompt("Owl", "A {} in the wild") == "An Owl in the wild"
    assert mask.name_prompt("elephant", "a photo of the {}") == "a photo of the elephant"
    assert mask.name_prompt("apple", "data {}") == "data apple"        # only the article 'a', not a word ending in a
    assert mask.name_prompt("", "a photo of a {}") == "a photo of a "


def planted(records, targets, model, preprocess, path):
    """Text embeddings that make CLIP pick records[targets]: the object's prompt embeds as those crops do
    (their normalised sum), the next prompts as each other crop does, the rest at random."""
    import util
    crop_embs = util.clip_image_embeddings(mask.proposal_crops(path, records), model=model, preprocess=preprocess)
    obj = torch.nn.functional.normalize(crop_embs[targets].sum(0), dim=0)
    others = [crop_embs[i] for i in range(len(records)) if i not in targets]

    def text_embeddings(prompts, clip_model):
        rest = torch.nn.functional.normalize(torch.randn(len(prompts) - 1 - len(others), crop_embs.shape[1],
                                                         generator=torch.Generator().manual_seed(0)), dim=-1)
        return torch.cat([obj[None], torch.stack(others), rest])
    return text_embeddings


@pytest.mark.parametrize("target", [0, 1, 2])
def test_the_planted_proposal_is_the_mask_used(scene, tiny_clip, monkeypatch, target):
    path, records = scene
    model, preprocess = tiny_clip
    model.logit_scale.data.fill_(np.log(100.0))   # ViT-L/14's trained scale, so the softmax can be decisive
    monkeypatch.setattr(mask, "text_embeddings", planted(records, [target], model, preprocess, path))
    m, info = mask.segment_by_text(path, "thing", other_names=["other"], clip_model=model, preprocess=preprocess,
                                   proposals=records, min_score=0.5)
    assert info["chosen"] == [target] and info["candidates"][0]["index"] == target
    assert np.array_equal(m.astype(bool), records[target]["segmentation"])
    assert info["score"] > 0.5 and info["prompts"][0] == "a photo of a thing"
    assert "a photo of an other" in info["prompts"]
    assert [c["p_object"] for c in info["candidates"]] == sorted((c["p_object"] for c in info["candidates"]), reverse=True)


def test_no_good_proposal_is_a_clear_error_never_a_silent_mask(scene, tiny_clip):
    path, records = scene
    model, preprocess = tiny_clip
    with pytest.raises(mask.NoMatchError, match=r"no SAM2 proposal in boxes.png looks like 'duck'.*verify_masks.py") as err:
        mask.segment_by_text(path, "duck", clip_model=model, preprocess=preprocess, proposals=records, min_score=0.99)
    assert "below TEXT_MIN_SCORE=0.99" in str(err.value) and "{'text'" in str(err.value)
    with pytest.raises(mask.NoMatchError, match="SAM2 proposed no mask"):
        mask.segment_by_text(path, "duck", clip_model=model, preprocess=preprocess, proposals=[])


def test_union_joins_every_proposal_clip_takes_for_the_object(scene, tiny_clip, monkeypatch):
    path, records = scene
    model, preprocess = tiny_clip
    model.logit_scale.data.fill_(np.log(100.0))
    monkeypatch.setattr(mask, "text_embeddings", planted(records, [0, 2], model, preprocess, path))   # two parts
    m, info = mask.segment_by_text(path, "thing", clip_model=model, preprocess=preprocess, proposals=records,
                                   min_score=0.3, union=True)
    assert sorted(info["chosen"]) == [0, 2] and info["union"]
    assert np.array_equal(m.astype(bool), records[0]["segmentation"] | records[2]["segmentation"])


def test_proposals_figure_ranks_the_candidates(scene, tiny_clip, tmp_path):
    path, records = scene
    model, preprocess = tiny_clip
    m, info = mask.segment_by_text(path, "thing", clip_model=model, preprocess=preprocess, proposals=records,
                                   min_score=0.0)
    mask.save_proposals_figure(path, m, info, path=tmp_path / "p.png", title="t")
    data = (tmp_path / "p.png").read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 5000
    with pytest.raises(FileExistsError):
        mask.save_proposals_figure(path, m, info, path=tmp_path / "p.png")
