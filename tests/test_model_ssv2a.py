"""model/networks.py + model/pipeline.py: our SSV2A against the official layout, the original's outputs and
a serial transcription of the original cycle mix."""
import json
import math
from pathlib import Path

import pytest
import torch

from model import checkpoints as ck
from model.networks import draw, gaussian_noise, l2_normalize, mean_of_draws
from model.pipeline import SSV2A, TINY_SSV2A_CONFIG, CheckpointMismatchError, load_ssv2a, slots_to_clap, tiny_ssv2a

SSV2A_REF = Path(__file__).resolve().parent / "reference" / "ssv2a"
STATES = ("manifold_state", "generator_state", "remixer_state")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models: handing ops to a second thread costs more than the math (20x on a busy 2-core machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def golden():
    return torch.load(SSV2A_REF / "golden_tiny.pt", weights_only=False)


@pytest.fixture(scope="module")
def golden_model(golden):
    model = SSV2A.from_config(golden["config"])
    for name, module in zip(STATES, (model.manifold, model.generator, model.remixer)):
        module.load_state_dict(golden["state_dict"][name], strict=True)
    return model.eval()


def make_slots(n_real, slot=64, clip_dim=768, seed=0):
    """Remix slots [B, slot, clip_dim]: image b has n_real[b] unit vectors (global + crops), zeros after."""
    g = torch.Generator().manual_seed(seed)
    slots = torch.zeros(len(n_real), slot, clip_dim)
    for b, n in enumerate(n_real):
        slots[b, :n] = l2_normalize(torch.randn(n, clip_dim, generator=g))
    return slots


# -----------------------------------------------------------------------------
# a serial transcription of the original cycle mix (wguo86/SSV2A, Pipeline.cycle_mix)


@torch.no_grad()
def serial_cycle_mix(model, slots, its, samples, var_samples, generator=None, shuffle_generator=None,
                     literal=False):
    """The original algorithm, one remix (one styler call, with its slot shuffle) at a time.

    literal=False: draws the same noise tensors in the same order as SSV2A.cycle_mix (each mean of
    var_samples draws as one draw with std / sqrt(var_samples)), so the two must agree to rounding.
    literal=True: averages var_samples separate draws as the original does (same distribution, other
    noise), starts from a best score of 1 like the original: the cost of the original, for the benchmark.
    """
    B, slot, C, V = slots.shape[0], slots.shape[1], model.clap_dim, var_samples

    def gaussian_mean(mu, log_sigma, eps=None):
        if literal:
            return sum(draw(mu, log_sigma, generator) for _ in range(V)) / V
        eps = gaussian_noise(mu.shape, generator) if eps is None else eps
        return mu + torch.exp(0.5 * log_sigma) / math.sqrt(V) * eps

    best_claps = torch.zeros(B, C)
    best_scores = torch.ones(B) if literal else torch.full((B,), math.inf)
    src = gaussian_mean(*model.manifold.clip_encoder(slots))
    for i in range(its + 1):
        src_claps = l2_normalize(gaussian_mean(*model.generator(src)))     # rerun every round, as the original
        src_claps[:, 0] = 0
        if i > 0:
            src[:, 0] = gaussian_mean(*model.manifold.clap_encoder(best_claps))
        eps = None if literal else gaussian_noise((B, samples, C), generator)
        remix_claps = torch.empty(B, samples, C)
        for j in range(samples):
            order = torch.randperm(slot, generator=shuffle_generator)
            mu, log_sigma = model.remixer.styler(src[:, order], slots[:, order])
            remix_claps[:, j] = l2_normalize(gaussian_mean(mu, log_sigma, None if literal else eps[:, j]))
        score = torch.einsum("bmi,bni->bmn", remix_claps, src_claps)
        score = score / (torch.einsum("bmi,bni->bmn", remix_claps.norm(dim=-1, keepdim=True),
                                      src_claps.norm(dim=-1, keepdim=True)) + 1e-6)
        score = torch.std(score, dim=-1)
        for b in range(B):
            j = int(torch.argmin(score[b]))
            if score[b, j] < best_scores[b]:
                best_scores[b] = score[b, j]
                best_claps[b] = remix_claps[b, j]
    return best_claps


# -----------------------------------------------------------------------------
# layout and parity


def test_layout_matches_the_official_checkpoint():
    layout = json.loads((SSV2A_REF / "state_dict_layout.json").read_text())
    config = json.loads((SSV2A_REF / "ssv2a.json").read_text())
    with torch.device("meta"):  # shapes only: no 330 MB of random init
        model = SSV2A.from_config(config)
    total = 0
    for name, module in zip(STATES, (model.manifold, model.generator, model.remixer)):
        ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module.state_dict().items()]
        assert ours == layout[name], name  # same keys, same order, same shapes and dtypes
        total += sum(v.numel() for v in module.state_dict().values())
    assert total == layout["total_parameters"] == 82_318_210


OUTPUTS = ["clip_encoder_mu", "clip_encoder_log_sigma", "clap_encoder_mu", "clap_encoder_log_sigma",
           "generator_mu", "generator_log_sigma", "styler_mu", "styler_log_sigma",
           "fold_clips_mean", "fold_claps_mean", "fold2claps_mean", "remix_sample_mean"]


def test_golden_parity_with_the_original_modules(golden, golden_model):
    m, x = golden_model, golden["inputs"]
    with torch.no_grad():
        ours = dict(zip(OUTPUTS, [*m.manifold.clip_encoder(x["clip"]), *m.manifold.clap_encoder(x["clap"]),
                                  *m.generator(x["fold"]), *m.remixer.styler(x["src"], x["src_clips"])]))
    ours["fold_clips_mean"] = m.fold_clips(x["clip"], mean_only=True)
    ours["fold_claps_mean"] = m.fold_claps(x["clap"], mean_only=True)
    ours["fold2claps_mean"] = m.generate_claps(x["fold"], mean_only=True)
    ours["remix_sample_mean"] = m.remix_sample(x["src"], x["src_clips"], mean_only=True)
    assert set(golden["outputs"]) == set(OUTPUTS)
    diffs = {k: (ours[k] - golden["outputs"][k]).abs().max().item() for k in OUTPUTS}
    for k, d in diffs.items():
        print(f"golden {k:24s} max abs diff {d:.3g}")
    assert all(d <= 1e-5 for d in diffs.values()), diffs


def test_styler_ignores_the_slot_order(golden_model, golden):
    # the fact the batched cycle mix relies on: no positional embedding, attention summed over tokens
    src, clips = golden["inputs"]["src"], golden["inputs"]["src_clips"]
    order = torch.randperm(src.shape[1], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = golden_model.remixer.styler(src, clips)
        b = golden_model.remixer.styler(src[:, order], clips[:, order])
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=1e-6)


def test_tiny_model_keeps_the_real_interface():
    model = tiny_ssv2a(seed=0)
    assert (model.clip_dim, model.clap_dim, model.slot) == (768, 512, 64) == (
        TINY_SSV2A_CONFIG["clip_dim"], TINY_SSV2A_CONFIG["clap_dim"], TINY_SSV2A_CONFIG["remixer"]["slot"])
    assert not model.training
    same, other = tiny_ssv2a(seed=0).state_dict(), tiny_ssv2a(seed=1).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())
    assert not torch.equal(model.remixer.styler.in_proj.weight, other["remixer.styler.in_proj.weight"])
    claps = model.clips_to_claps(make_slots([3])[0, :3], generator=torch.Generator().manual_seed(0))
    assert claps.shape == (3, 512) and torch.allclose(claps.norm(dim=-1), torch.ones(3))


# -----------------------------------------------------------------------------
# strict loading


@pytest.fixture
def saved_tiny(tmp_path):
    model = tiny_ssv2a(seed=3)
    config_path = tmp_path / "tiny.json"
    config_path.write_text(json.dumps(model.config))
    ckpt_path = tmp_path / "tiny.pth"
    model.save_checkpoint(ckpt_path, timestamp="2024-01-01")
    return model, config_path, ckpt_path


def test_official_format_round_trip(saved_tiny):
    model, config_path, ckpt_path = saved_tiny
    state = torch.load(ckpt_path, weights_only=True)
    assert set(state) == {"timestamp", *STATES}
    loaded = load_ssv2a(config_path, ckpt_path, device="cpu")
    assert load_ssv2a(config_path, ckpt_path, device="cpu") is loaded  # cached per process
    assert not loaded.training and loaded.timestamp == "2024-01-01"
    ours = loaded.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())


def _edit_missing(sd):
    del sd["remixer_state"]["styler.out_mu.bias"]
    return "styler.out_mu.bias"


def _edit_unexpected(sd):
    sd["generator_state"]["model.9.weight"] = torch.zeros(3)
    return "model.9.weight"


def _edit_shape(sd):
    sd["manifold_state"]["clap_encoder.out_sigma.weight"] = torch.zeros(7, 64)
    return "clap_encoder.out_sigma.weight"


@pytest.mark.parametrize("edit", [_edit_missing, _edit_unexpected, _edit_shape])
def test_mismatched_checkpoint_names_the_key_and_both_files(saved_tiny, edit):
    _, config_path, ckpt_path = saved_tiny
    state = torch.load(ckpt_path, weights_only=True)
    key = edit(state)
    bad = ckpt_path.with_name(f"bad_{edit.__name__}.pth")
    torch.save(state, bad)
    with pytest.raises(CheckpointMismatchError) as err:
        load_ssv2a(config_path, bad, device="cpu")
    assert isinstance(err.value, ValueError) and isinstance(err.value, ck.CheckpointError)
    msg = str(err.value)
    assert key in msg and str(bad.resolve()) in msg and str(config_path.resolve()) in msg and "disagree" in msg


def test_many_mismatches_are_summarised(saved_tiny):
    _, config_path, ckpt_path = saved_tiny
    state = torch.load(ckpt_path, weights_only=True)
    state["remixer_state"] = {k: v for k, v in state["remixer_state"].items() if "esa" not in k}
    torch.save(state, ckpt_path)
    with pytest.raises(CheckpointMismatchError, match=r"10 missing key\(s\).*\(10 in all\)"):
        SSV2A.from_config(config_path).load_checkpoint(ckpt_path)


@pytest.mark.parametrize("content", ["list", "dict_without_states", "truncated", "garbage"])
def test_unreadable_checkpoint_names_the_file(saved_tiny, content):
    _, config_path, ckpt_path = saved_tiny
    bad = ckpt_path.with_name(f"{content}.pth")
    if content == "list":
        torch.save([1, 2, 3], bad)
    elif content == "dict_without_states":
        torch.save({"timestamp": "x", "model": {}}, bad)
    elif content == "truncated":
        data = ckpt_path.read_bytes()
        bad.write_bytes(data[:len(data) // 2])
    else:
        bad.write_bytes(b"not a torch file at all" * 10)
    with pytest.raises(ck.CheckpointError) as err:
        load_ssv2a(config_path, bad, device="cpu")
    assert str(bad.resolve()) in str(err.value)


def test_missing_checkpoint_file(saved_tiny, tmp_path, monkeypatch):
    _, config_path, _ = saved_tiny
    with pytest.raises((ck.CheckpointError, FileNotFoundError), match="nowhere.pth"):
        load_ssv2a(config_path, tmp_path / "nowhere.pth", device="cpu")
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", tmp_path / "empty")  # the registry's default path
    with pytest.raises(ck.CheckpointError, match="ssv2a.pth"):
        load_ssv2a(config_path, device="cpu")
    with pytest.raises(FileNotFoundError, match="no_config.json"):
        load_ssv2a(tmp_path / "no_config.json", tmp_path / "x.pth", device="cpu")


# -----------------------------------------------------------------------------
# sampling


def test_draw_and_fold_use_the_given_generator(golden_model, golden):
    mu, log_sigma = torch.randn(5, 7), torch.randn(5, 7)
    eps = torch.randn(5, 7, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(draw(mu, log_sigma, torch.Generator().manual_seed(4)), mu + torch.exp(0.5 * log_sigma) * eps)
    assert torch.allclose(mean_of_draws(mu, log_sigma, 9, torch.Generator().manual_seed(4)),
                          mu + torch.exp(0.5 * log_sigma) / 3 * eps)
    clip = golden["inputs"]["clip"]
    mu, log_sigma = golden_model.manifold.clip_encoder(clip)
    folds = golden_model.fold_clips(clip, var_samples=4, generator=torch.Generator().manual_seed(4))
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(folds, mu + torch.exp(0.5 * log_sigma) / 2 * eps, atol=1e-6)
    g = torch.Generator().manual_seed(5)
    a, b = golden_model.fold_clips(clip, generator=g), golden_model.fold_clips(clip, generator=g)
    assert not torch.allclose(a, b)  # fresh noise each call


def test_one_reduced_draw_has_the_distribution_of_averaged_draws():
    g = torch.Generator().manual_seed(0)
    mu, log_sigma = torch.randn(6), torch.randn(6)
    n, v = 20000, 16
    averaged = torch.stack([draw(mu.expand(n, 6), log_sigma.expand(n, 6), g) for _ in range(v)]).mean(0)
    single = mean_of_draws(mu.expand(n, 6), log_sigma.expand(n, 6), v, g)
    std = torch.exp(0.5 * log_sigma) / math.sqrt(v)
    se = std / math.sqrt(n)
    for sample in (averaged, single):
        assert ((sample.mean(0) - mu).abs() < 5 * se).all()
        assert ((sample.std(0) / std - 1).abs() < 0.04).all()
    assert ((averaged.mean(0) - single.mean(0)).abs() < 5 * math.sqrt(2) * se).all()


# -----------------------------------------------------------------------------
# cycle mix


def test_batched_cycle_mix_equals_the_serial_transcription():
    model = tiny_ssv2a(seed=0)
    slots = make_slots([1, 4, 9], seed=1)  # different numbers of real slots, zero padding after
    kw = dict(its=3, samples=6, var_samples=4)
    batched = model.cycle_mix(slots, generator=torch.Generator().manual_seed(7), **kw)
    serial = serial_cycle_mix(model, slots, generator=torch.Generator().manual_seed(7),
                              shuffle_generator=torch.Generator().manual_seed(8), **kw)
    print(f"cycle_mix batched vs serial max abs diff {(batched - serial).abs().max().item():.3g}")
    assert batched.shape == (3, 512)
    assert torch.allclose(batched, serial, atol=1e-5)
    assert torch.allclose(batched.norm(dim=-1), torch.ones(3))
    other = model.cycle_mix(slots, generator=torch.Generator().manual_seed(9), **kw)
    assert not torch.allclose(batched, other)  # the noise matters, so the equality above means something


def test_cycle_mix_takes_the_clap_width_from_the_config(golden_model):
    slots = make_slots([3, 1], slot=8, clip_dim=16)
    kw = dict(its=2, samples=5, var_samples=3)
    batched = golden_model.cycle_mix(slots, generator=torch.Generator().manual_seed(0), **kw)
    serial = serial_cycle_mix(golden_model, slots, generator=torch.Generator().manual_seed(0),
                              shuffle_generator=torch.Generator().manual_seed(1), **kw)
    assert batched.shape == (2, 12)
    assert torch.allclose(batched, serial, atol=1e-5)


def test_cycle_mix_output_distribution_matches_the_original_sampling():
    # the original averages var_samples draws and calls the styler once per remix; we draw once, batched.
    # Statistic: cosine of the output to the noise-free remix (a wrong noise level moves it by >50 sigma)
    model = tiny_ssv2a(seed=2)
    slots = make_slots([4], seed=3)
    reference = model.remix_slots(slots, mean_only=True)[0]
    kw = dict(its=1, samples=4, var_samples=4)
    n = 150
    ours = torch.stack([model.cycle_mix(slots, generator=torch.Generator().manual_seed(s), **kw)[0]
                        for s in range(n)])
    original = torch.stack([serial_cycle_mix(model, slots, generator=torch.Generator().manual_seed(10_000 + s),
                                             shuffle_generator=torch.Generator().manual_seed(s), literal=True,
                                             **kw)[0] for s in range(n)])
    a, b = ours @ reference, original @ reference
    assert a.std() > 0.005  # the outputs really vary from seed to seed
    assert abs(a.mean() - b.mean()) < 4 * torch.sqrt((a.var() + b.var()) / n)
    assert abs(a.std() / b.std() - 1) < 0.3
    z = (ours.mean(0) - original.mean(0)) / torch.sqrt((ours.var(0) + original.var(0)) / n)
    assert z.abs().max() < 5  # every one of the 512 components


def _noise_free(model):
    # log_sigma = -60 everywhere: std e^-30, so every draw is its mean and the result is deterministic
    for head in (model.manifold.clip_encoder.out_sigma, model.manifold.clap_encoder.out_sigma,
                 model.generator.out_sigma, model.remixer.styler.out_sigma):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, -60.0)
    return model


def test_padding_slots_count_and_images_do_not_mix():
    model = _noise_free(tiny_ssv2a(seed=4))
    slots = make_slots([1, 2, 5, 64], seed=5)  # 1 = no detections: the global slot alone
    kw = dict(its=2, samples=3, var_samples=2)
    together = model.cycle_mix(slots, **kw)
    alone = torch.cat([model.cycle_mix(slots[b:b + 1], **kw) for b in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)
    # like the original, padding slots are folded too (to the encoders' bias-only code), not masked out
    folds = model.fold_clips(slots, mean_only=True)
    first_round = model.remix_sample(folds, slots, mean_only=True)
    assert torch.allclose(model.cycle_mix(slots, its=0, samples=2, var_samples=2), first_round, atol=1e-5)
    masked = model.remix_sample(folds * (slots.abs().sum(-1, keepdim=True) > 0), slots, mean_only=True)
    assert not torch.allclose(first_round[:3], masked[:3], atol=1e-3)


def test_cycle_mix_rejects_bad_input():
    model = tiny_ssv2a()
    with pytest.raises(ValueError, match=r"\[B, 64, 768\]"):
        model.cycle_mix(torch.zeros(1, 10, 768))
    with pytest.raises(ValueError, match="samples"):
        model.cycle_mix(make_slots([2]), samples=0)
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.cycle_mix(make_slots([2]), its=0)


def test_slots_to_clap_runs_cycle_mix_with_a_passed_model():
    model = tiny_ssv2a()
    slots = make_slots([3, 1])
    a = slots_to_clap(slots, model=model, its=2, samples=4, var_samples=8, generator=torch.Generator().manual_seed(0))
    b = model.cycle_mix(slots, its=2, samples=4, var_samples=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    torch.manual_seed(11)  # generator=None: torch's global CPU RNG
    c = slots_to_clap(slots, model=model, its=2, samples=4, var_samples=8)
    torch.manual_seed(11)
    assert torch.equal(c, slots_to_clap(slots, model=model, its=2, samples=4, var_samples=8))


# -----------------------------------------------------------------------------
# PIN_GLOBAL: how far a manipulated slot 0 reaches into cycle_mix

def _slot0_codes_per_round(model, slots, pin, its=6):
    """The manifold code the styler reads for slot 0 in each cycle-mix round (a hook on the styler)."""
    codes = []
    hook = model.remixer.styler.register_forward_hook(lambda m, args, out: codes.append(args[0][:, 0].clone()))
    try:
        out = model.cycle_mix(slots, its=its, samples=4, var_samples=8, generator=torch.Generator().manual_seed(3),
                              pin_global=pin)
    finally:
        hook.remove()
    return out, codes


def test_pinned_slot_0_conditions_every_round_the_original_only_round_0():
    """Two slot-0 embeddings (E_final and another) next to the same crops: the rounds whose remix reads a
    slot-0 code that depends on which one it was. Pinned: every round. The original algorithm: round 0
    only, once the remix's own feedback no longer carries slot 0 (a constant CLAP encoder, set here)."""
    model = tiny_ssv2a(seed=2)
    for p in model.manifold.clap_encoder.parameters():   # fold(best remix) no longer depends on slot 0
        p.data.zero_()
    slots_a, slots_b = make_slots([4], seed=5), make_slots([4], seed=5)
    slots_b[0, 0] = torch.nn.functional.normalize(torch.randn(768, generator=torch.Generator().manual_seed(9)), dim=0)
    for pin, expected in [(True, 7), (False, 1)]:
        (_, a), (_, b) = _slot0_codes_per_round(model, slots_a, pin), _slot0_codes_per_round(model, slots_b, pin)
        differ = [not torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b)]
        assert len(differ) == 7 and sum(differ) == expected, (pin, differ)


def test_pin_global_keeps_e_finals_own_code_and_changes_nothing_at_round_0():
    model = tiny_ssv2a(seed=2)
    slots = make_slots([3], seed=6)
    pinned, pinned_codes = _slot0_codes_per_round(model, slots, pin=True)
    original, original_codes = _slot0_codes_per_round(model, slots, pin=False)
    # round 0 is the same either way: slot 0's own CLIP fold
    assert torch.equal(pinned_codes[0], original_codes[0])
    assert all(torch.equal(c, pinned_codes[0]) for c in pinned_codes)           # pinned: never replaced
    assert not any(torch.allclose(c, original_codes[0]) for c in original_codes[1:])   # original: the best remix
    assert torch.equal(model.cycle_mix(slots, its=0, samples=4, var_samples=8, generator=torch.Generator().manual_seed(3),
                                       pin_global=True),
                       model.cycle_mix(slots, its=0, samples=4, var_samples=8, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(pinned, original)
