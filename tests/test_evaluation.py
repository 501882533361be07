"""evaluation.py: CLAP scorer (tiny random CLAP of laion's classes, built offline), verdict, figures, run files."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import entropy

import evaluation as ev
from model.checkpoints import CheckpointError

SR = 16000
LABELS = ["a dog barking", "a cat meowing", "a duck quacking"]
DOG, CAT, DUCK = LABELS


@pytest.fixture(scope="module")
def clap():
    return ev.tiny_clap()


def tone(freq, seconds=1.0, sr=SR, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seed, seconds=1.0, sr=SR):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# -----------------------------------------------------------------------------
# the scorer

def test_tiny_clap_is_laion_clap_with_real_interface(clap):
    laion_model, _, _ = ev._laion_modules()
    assert isinstance(clap.model, laion_model.CLAP)
    assert clap.model.text_branch_type == "roberta" and not clap.model.training
    assert clap.model.audio_cfg.sample_rate == ev.CLAP_SAMPLE_RATE == 48000
    assert clap.model.audio_cfg.clip_samples == ev.CLAP_SAMPLES
    # tiny inside: far fewer parameters than the ~150M of HTSAT-tiny + roberta-base
    assert sum(p.numel() for p in clap.model.parameters()) < 5_000_000
    audios = [tone(440), tone(2000), noise(0), noise(1)]
    a = clap.audio_embeddings(audios, SR)
    t = clap.text_embeddings(LABELS)
    assert a.shape == (4, 512) and t.shape == (3, 512)
    assert a.dtype == torch.float32 and t.dtype == torch.float32
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    # different audios and labels land on different embeddings; the same audio on the same one
    cos = a @ a.T
    assert cos[0, 1] < 0.9999 and cos[0, 2] < 0.9999 and cos[2, 3] < 0.9999
    assert (t @ t.T)[0, 1] < 0.9999
    torch.testing.assert_close(clap.audio_embeddings(np.stack(audios[:2]), SR), a[:2])


def test_tiny_clap_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    c0 = ev.tiny_clap(seed=0)
    c1 = ev.tiny_clap(seed=1)
    torch.testing.assert_close(torch.rand(3), expected)
    assert ev.tiny_clap(seed=0) is c0   # cached per process
    w0 = c0.model.audio_projection[0].weight
    w1 = c1.model.audio_projection[0].weight
    assert not torch.equal(w0, w1)


def test_prepare_waveforms_matches_laion_front_end():
    waves = ev.prepare_waveforms([tone(440, 10.0), tone(440, 3.0), tone(440, 12.0)], SR)
    assert [tuple(w.shape) for w in waves] == [(480000,)] * 3
    assert all(w.dtype == torch.float32 for w in waves)
    # 16 kHz -> 48 kHz keeps the tone at 440 Hz
    spectrum = np.abs(np.fft.rfft(waves[0].numpy()))
    assert abs(np.argmax(spectrum) * 48000 / 480000 - 440) < 1
    # 3 s: repeated 3 times (9 s), then zeros ('repeatpad'); 12 s: the first 10 s
    assert torch.all(waves[1][9 * 48000 + 100:] == 0) and waves[1][8 * 48000:9 * 48000].abs().max() > 0.4
    torch.testing.assert_close(waves[2], waves[0])
    # int16 quantisation as laion does it: clipped to [-1, 1], multiples of 1/32767
    loud = ev.prepare_waveforms([np.full(48000, 3.0)], 48000)[0]
    assert loud.max() == 1.0
    q = ev.prepare_waveforms([noise(0, sr=48000)], 48000)[0].numpy() * 32767
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)


@pytest.mark.parametrize("bad, match", [
    ([np.zeros((2, 10))], "1-D"), ([np.array([])], "non-empty"), ([np.array([0.0, np.nan])], "NaN"),
    (np.zeros((2, 3, 4)), r"\[B, n\]"), ([], "no audio"),
])
def test_prepare_waveforms_rejects_bad_audio(bad, match):
    with pytest.raises(ValueError, match=match):
        ev.prepare_waveforms(bad, SR)


def test_audio_longer_than_10s_scores_its_first_10s(clap):
    long = np.concatenate([noise(3, 10.0), noise(4, 2.0)])
    a = clap.audio_embeddings([long, long[:10 * SR]], SR)
    torch.testing.assert_close(a[0], a[1])


def test_label_probabilities():
    rng = np.random.default_rng(0)
    text = np.stack([unit(rng.standard_normal(512)) for _ in range(3)])
    audio = np.stack([unit(text[1] + 0.1 * rng.standard_normal(512)), unit(rng.standard_normal(512))])
    p = ev.label_probabilities(audio, text, logit_scale=50.0)
    assert p.shape == (2, 3)
    torch.testing.assert_close(p.sum(dim=-1), torch.ones(2))
    assert p[0].argmax() == 1 and p[0, 1] > 0.9
    # CLAP's zero-shot: softmax of scale * cosine; a smaller scale is flatter
    cos = torch.tensor(audio @ text.T, dtype=torch.float32)
    torch.testing.assert_close(p, torch.softmax(50.0 * cos, dim=-1))
    assert ev.label_probabilities(audio, text, logit_scale=5.0)[0, 1] < p[0, 1]
    with pytest.raises(ValueError, match="embeddings"):
        ev.label_probabilities(audio[:, :10], text)


def test_score_audios(clap):
    audios = {"baseline_original": tone(440), "baseline_edited": noise(0), "manipulated": tone(880)}
    s = ev.score_audios(audios, LABELS, clap, sample_rate=SR)
    assert s["labels"] == LABELS and list(s["probs"]) == list(audios) and list(s["audio_embs"]) == list(audios)
    for name in audios:
        assert len(s["probs"][name]) == 3 and abs(sum(s["probs"][name]) - 1) < 1e-5
        assert s["audio_embs"][name].shape == (512,) and abs(np.linalg.norm(s["audio_embs"][name]) - 1) < 1e-5
    assert s["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)   # the untrained model's initial scale
    with pytest.raises(ValueError, match="distinct"):
        ev.score_audios(audios, [DOG, DOG], clap)


# -----------------------------------------------------------------------------
# the verdict on hand-made tables

E_ORIG, E_EDIT = unit(np.eye(512)[0]), unit(np.eye(512)[1])
PASSING_PROBS = {"baseline_original": [0.40, 0.50, 0.10],
                 "baseline_edited": [0.40, 0.05, 0.55],
                 "manipulated": [0.42, 0.20, 0.38]}
PASSING_EMBS = {"baseline_original": E_ORIG, "baseline_edited": E_EDIT, "manipulated": unit(0.3 * E_ORIG + 0.7 * E_EDIT)}


def run_verdict(probs=None, embs=None, tolerance=0.05):
    return ev.verdict(probs or PASSING_PROBS, embs or PASSING_EMBS, LABELS, CAT, DUCK, [DOG], tolerance)


def test_verdict_all_pass_with_numbers():
    v = run_verdict()
    assert v["passed_all"] and v["n_passed"] == v["n_checks"] == 5
    c = v["checks"]
    assert set(c) == {"added_increased", "removed_decreased", "kept_within_tolerance",
                      "closer_to_edited_clap", "closer_to_edited_kl"}
    assert all(set(x) == {"passed", "numbers", "description"} for x in c.values())
    assert c["added_increased"]["numbers"]["delta"] == pytest.approx(0.28)
    assert c["removed_decreased"]["numbers"]["delta"] == pytest.approx(-0.30)
    assert c["kept_within_tolerance"]["numbers"]["max_abs_delta"] == pytest.approx(0.02)
    to_edit = 1 - float(PASSING_EMBS["manipulated"] @ E_EDIT)
    assert c["closer_to_edited_clap"]["numbers"]["to_edited"] == pytest.approx(to_edit)
    assert c["closer_to_edited_clap"]["numbers"]["edited_to_original"] == pytest.approx(1.0)
    P = {k: np.array(p) for k, p in PASSING_PROBS.items()}
    kl = c["closer_to_edited_kl"]["numbers"]
    assert kl["kl_edited_manipulated"] == pytest.approx(entropy(P["baseline_edited"], P["manipulated"]))
    assert kl["kl_original_manipulated"] == pytest.approx(entropy(P["baseline_original"], P["manipulated"]))
    json.dumps(v)   # plain numbers only: it goes into results.json as is


@pytest.mark.parametrize("check, manipulated_probs, manipulated_emb", [
    ("added_increased", [0.42, 0.48, 0.10], None),       # P(duck) unchanged: not an increase
    ("removed_decreased", [0.30, 0.55, 0.15], None),     # P(cat) went up
    ("kept_within_tolerance", [0.50, 0.20, 0.30], None),  # P(dog) moved 0.10 > 0.05
    ("closer_to_edited_clap", None, unit(0.9 * E_ORIG + 0.1 * E_EDIT)),
    ("closer_to_edited_kl", [0.40, 0.50, 0.10], None),   # exactly the original distribution
])
def test_each_check_fails_in_its_crafted_case(check, manipulated_probs, manipulated_emb):
    probs = dict(PASSING_PROBS, manipulated=manipulated_probs or PASSING_PROBS["manipulated"])
    embs = dict(PASSING_EMBS, manipulated=PASSING_EMBS["manipulated"] if manipulated_emb is None else manipulated_emb)
    v = run_verdict(probs, embs)
    assert v["checks"][check]["passed"] is False
    assert not v["passed_all"] and v["n_passed"] < 5
    assert "FAIL  " + check in ev.format_verdict(v)


def test_kept_tolerance_is_inclusive_and_lists_every_kept_label():
    labels = LABELS + ["wind blowing"]
    probs = {"baseline_original": [0.5, 0.25, 0.125, 0.125], "baseline_edited": [0.5, 0.0, 0.375, 0.125],
             "manipulated": [0.25, 0.125, 0.5, 0.125]}
    v = ev.verdict(probs, PASSING_EMBS, labels, CAT, DUCK, [DOG, "wind blowing"], tolerance=0.25)
    c = v["checks"]["kept_within_tolerance"]
    assert c["passed"] and c["numbers"]["max_abs_delta"] == 0.25
    assert c["numbers"]["delta a dog barking"] == -0.25 and c["numbers"]["delta wind blowing"] == 0.0
    assert not ev.verdict(probs, PASSING_EMBS, labels, CAT, DUCK, [DOG], tolerance=0.2)["checks"][
        "kept_within_tolerance"]["passed"]
    # zeros in a hand-made table keep KL finite
    assert np.isfinite(v["checks"]["closer_to_edited_kl"]["numbers"]["kl_edited_manipulated"])


@pytest.mark.parametrize("removed, added, kept, match", [
    ("a cow mooing", DUCK, [DOG], "a cow mooing"),
    (CAT, "a horse neighing", [DOG], "a horse neighing"),
    (CAT, DUCK, ["a bird singing"], "a bird singing"),
    (CAT, CAT, [DOG], "both"),
    (CAT, DUCK, [CAT], "also the removed"),
])
def test_verdict_rejects_bad_label_roles(removed, added, kept, match):
    with pytest.raises(ValueError, match=match):
        ev.verdict(PASSING_PROBS, PASSING_EMBS, LABELS, removed, added, kept)


def test_verdict_rejects_missing_audio_and_wrong_lengths():
    with pytest.raises(ValueError, match="baseline_edited"):
        ev.verdict({k: v for k, v in PASSING_PROBS.items() if k != "baseline_edited"}, PASSING_EMBS,
                   LABELS, CAT, DUCK, [DOG])
    with pytest.raises(ValueError, match="2 entries for 3 labels"):
        ev.verdict(dict(PASSING_PROBS, manipulated=[0.5, 0.5]), PASSING_EMBS, LABELS, CAT, DUCK, [DOG])


def test_format_verdict_shows_table_numbers_and_pass():
    text = ev.format_verdict(run_verdict())
    assert "5/5 checks passed" in text and "FAIL" not in text
    assert text.count("PASS") == 5
    for label in LABELS:
        assert label in text
    assert "0.3800" in text and "delta 0.2800" in text and "removed" in text and "kept" in text


# -----------------------------------------------------------------------------
# figures and the run folder

def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_figures_are_written(tmp_path):
    ev.plot_label_probabilities(PASSING_PROBS, LABELS, tmp_path / "bars.png")
    assert_png(tmp_path / "bars.png")
    audios = {"baseline_original": tone(440, 2.0), "baseline_edited": noise(0, 2.0), "manipulated": tone(3000, 0.5)}
    ev.plot_spectrograms(audios, SR, tmp_path / "spec.png")
    assert_png(tmp_path / "spec.png")


def test_log_mel_puts_a_tone_in_the_right_band():
    low, high = ev.log_mel(tone(300, 1.0), SR), ev.log_mel(tone(5000, 1.0), SR)
    assert low.shape == (64, 101) and np.isfinite(low).all()
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()
    # equal-area filters: white noise has about the same level in every band
    flat = ev.log_mel(noise(0, 2.0), SR).mean(axis=1)
    assert flat[2:].max() - flat[2:].min() < 3.0


def test_evaluate_run_writes_results_and_never_overwrites(tmp_path, clap, capsys):
    audios = {"baseline_original": tone(440), "baseline_edited": noise(0), "manipulated": tone(660)}
    run_dir = tmp_path / "run"
    res = ev.evaluate_run(audios, LABELS, CAT, DUCK, [DOG], run_dir, clap, sample_rate=SR, tolerance=0.05)
    out = capsys.readouterr().out
    assert "checks passed" in out and "results.json" in out
    for name in ["results.json", "label_probs.png", "spectrograms.png"]:
        assert (run_dir / name).is_file()
    assert_png(run_dir / "label_probs.png")
    assert_png(run_dir / "spectrograms.png")
    text = (run_dir / "results.json").read_text()
    saved = json.loads(text)
    assert saved["labels"] == LABELS and saved["removed_label"] == CAT and saved["added_label"] == DUCK
    assert set(saved["probs"]) == set(ev.AUDIO_NAMES)
    assert all(abs(sum(p) - 1) < 1e-5 for p in saved["probs"].values())
    assert saved["verdict"]["n_checks"] == 5 and isinstance(saved["verdict"]["passed_all"], bool)
    assert saved["verdict"]["probs"] == saved["probs"]
    assert "tiny" in saved["clap"] and saved["sample_rate"] == SR
    assert "audio_embs" not in text and len(text) < 20_000   # no embeddings in the JSON
    assert res["verdict"] == saved["verdict"]
    with pytest.raises(FileExistsError, match="results.json"):
        ev.evaluate_run(audios, LABELS, CAT, DUCK, [DOG], run_dir, clap, sample_rate=SR)
    assert (run_dir / "results.json").read_text() == text


def test_evaluate_run_checks_labels_before_any_work(tmp_path, clap):
    audios = {"baseline_original": tone(440), "baseline_edited": noise(0), "manipulated": tone(660)}
    with pytest.raises(ValueError, match="a goat bleating"):
        ev.evaluate_run(audios, LABELS, "a goat bleating", DUCK, [DOG], tmp_path / "run", clap)
    with pytest.raises(ValueError, match="manipulated"):
        ev.evaluate_run({k: audios[k] for k in ev.AUDIO_NAMES[:2]}, LABELS, CAT, DUCK, [DOG], tmp_path / "run", clap)
    assert not (tmp_path / "run").exists()


# -----------------------------------------------------------------------------
# the real model: missing files, tokenizer guard, checkpoint format

def test_load_clap_without_checkpoint_names_file_and_fix(tmp_path, monkeypatch):
    import model.checkpoints as checkpoints
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path)
    ev._load_clap.cache_clear()
    try:
        with pytest.raises(CheckpointError) as err:
            ev.load_clap("cpu")
    finally:
        ev._load_clap.cache_clear()
    message = str(err.value)
    assert "630k-audioset-best.pt" in message and str(tmp_path) in message
    assert "python -m model.checkpoints clap" in message


def test_tokenizer_guard(tmp_path):
    from transformers import RobertaTokenizer
    from model.aldm import _tiny_tokenizer
    empty = RobertaTokenizer(vocab={"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}, merges=[])
    with pytest.raises(CheckpointError, match="model.checkpoints roberta"):
        ev.check_roberta_tokenizer(empty)
    # a tokenizer saved to a folder and read back (how load_clap reads roberta-base) is whole
    _tiny_tokenizer().save_pretrained(tmp_path)
    reloaded = RobertaTokenizer.from_pretrained(tmp_path)
    assert ev.check_roberta_tokenizer(reloaded, vocab_size=len(reloaded)) is reloaded
    with pytest.raises(CheckpointError, match="embeds 50265"):
        ev.check_roberta_tokenizer(reloaded, vocab_size=50265)


def test_load_clap_weights_rejects_wrong_files(tmp_path, clap):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        ev.load_clap_weights(clap.model, garbage)
    state = {k: v for k, v in clap.model.state_dict().items() if k != "logit_scale_a"}
    state["audio_branch.fusion_model.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "fusion.pt")
    with pytest.raises(CheckpointError, match="logit_scale_a.*fusion_model"):
        ev.load_clap_weights(clap.model, tmp_path / "fusion.pt")


def test_real_architecture_loads_official_key_format(tmp_path):
    """HTSAT-tiny + roberta-base at full size, random weights: keys and shapes as laion's own CLAP builds
    them, and a checkpoint in the released format ('module.' prefix, stale position_ids) loads strictly."""
    laion_model, _, configs = ev._laion_modules()
    cfg = configs["HTSAT-tiny"]
    # laion's own constructor, with a small stand-in text branch (its RoBERTa one needs a download)
    official = laion_model.CLAP(embed_dim=cfg["embed_dim"], audio_cfg=cfg["audio_cfg"], text_cfg=dict(
        context_length=77, vocab_size=1, width=8, heads=1, layers=1, model_type="transformer"))
    official = {k: v.shape for k, v in official.state_dict().items()
                if not k.startswith(("text_branch.", "token_embedding.", "positional_embedding", "ln_final."))}
    model = ev.build_clap_model(ev.ROBERTA_BASE)
    ours = {k: v.shape for k, v in model.state_dict().items()}
    assert {k for k in ours if not k.startswith("text_branch.")} == set(official)
    assert all(ours[k] == official[k] for k in official if k != "text_projection.0.weight")
    assert ours["text_projection.0.weight"] == (512, 768)
    assert ours["text_branch.embeddings.word_embeddings.weight"] == (50265, 768)
    assert 150e6 < sum(p.numel() for p in model.parameters()) < 160e6

    saved = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    saved["module.text_branch.embeddings.position_ids"] = torch.arange(514)[None]
    path = tmp_path / "630k-audioset-best.pt"
    torch.save({"epoch": 45, "state_dict": saved}, path)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    ev.load_clap_weights(model, path)
    path.unlink()
    for key in ["text_branch.encoder.layer.11.output.dense.weight", "audio_branch.layers.2.blocks.5.mlp.fc1.weight",
                "audio_projection.2.bias", "logit_scale_a"]:
        torch.testing.assert_close(model.state_dict()[key], saved["module." + key], rtol=0, atol=0)
    assert model.text_branch.encoder.layer[0].attention.self.query.weight.abs().sum() > 0
