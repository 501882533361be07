"""scorers.py: the CLAP scorer (tiny random CLAP of laion's classes, built offline) and the AudioSet classifier."""

import numpy as np
import pytest
import release_formats as rf
import torch

import scorers
from model.checkpoints import CheckpointError

SR = 16000
LABELS = ["a dog barking", "a cat meowing", "a duck quacking"]
DOG, CAT, DUCK = LABELS


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
    laion_model, _, _ = scorers._laion_modules()
    assert isinstance(clap.model, laion_model.CLAP)
    assert clap.model.text_branch_type == "roberta" and not clap.model.training
    assert clap.model.audio_cfg.sample_rate == scorers.CLAP_SAMPLE_RATE == 48000
    assert clap.model.audio_cfg.clip_samples == scorers.CLAP_SAMPLES
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
    c0 = scorers.tiny_clap(seed=0)
    c1 = scorers.tiny_clap(seed=1)
    torch.testing.assert_close(torch.rand(3), expected)
    assert scorers.tiny_clap(seed=0) is c0   # cached per process
    w0 = c0.model.audio_projection[0].weight
    w1 = c1.model.audio_projection[0].weight
    assert not torch.equal(w0, w1)


def test_prepare_waveforms_matches_laion_front_end():
    waves = scorers.prepare_waveforms([tone(440, 10.0), tone(440, 3.0), tone(440, 12.0)], SR)
    assert [tuple(w.shape) for w in waves] == [(480000,)] * 3
    assert all(w.dtype == torch.float32 for w in waves)
    # 16 kHz -> 48 kHz keeps the tone at 440 Hz
    spectrum = np.abs(np.fft.rfft(waves[0].numpy()))
    assert abs(np.argmax(spectrum) * 48000 / 480000 - 440) < 1
    # 3 s: repeated 3 times (9 s), then zeros ('repeatpad'); 12 s: the first 10 s
    assert torch.all(waves[1][9 * 48000 + 100:] == 0) and waves[1][8 * 48000:9 * 48000].abs().max() > 0.4
    torch.testing.assert_close(waves[2], waves[0])
    # int16 quantisation as laion does it: clipped to [-1, 1], multiples of 1/32767
    loud = scorers.prepare_waveforms([np.full(48000, 3.0)], 48000)[0]
    assert loud.max() == 1.0
    q = scorers.prepare_waveforms([noise(0, sr=48000)], 48000)[0].numpy() * 32767
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)


@pytest.mark.parametrize("bad, match", [
    ([np.zeros((2, 10))], "1-D"), ([np.array([])], "non-empty"), ([np.array([0.0, np.nan])], "NaN"),
    (np.zeros((2, 3, 4)), r"\[B, n\]"), ([], "no audio"),
])
def test_prepare_waveforms_rejects_bad_audio(bad, match):
    with pytest.raises(ValueError, match=match):
        scorers.prepare_waveforms(bad, SR)


def test_audio_longer_than_10s_scores_its_first_10s(clap):
    long = np.concatenate([noise(3, 10.0), noise(4, 2.0)])
    a = clap.audio_embeddings([long, long[:10 * SR]], SR)
    torch.testing.assert_close(a[0], a[1])


def test_label_probabilities():
    rng = np.random.default_rng(0)
    text = np.stack([unit(rng.standard_normal(512)) for _ in range(3)])
    audio = np.stack([unit(text[1] + 0.1 * rng.standard_normal(512)), unit(rng.standard_normal(512))])
    p = scorers.label_probabilities(audio, text, logit_scale=50.0)
    assert p.shape == (2, 3)
    torch.testing.assert_close(p.sum(dim=-1), torch.ones(2))
    assert p[0].argmax() == 1 and p[0, 1] > 0.9
    # CLAP's zero-shot: softmax of scale * cosine; a smaller scale is flatter
    cos = torch.tensor(audio @ text.T, dtype=torch.float32)
    torch.testing.assert_close(p, torch.softmax(50.0 * cos, dim=-1))
    assert scorers.label_probabilities(audio, text, logit_scale=5.0)[0, 1] < p[0, 1]
    with pytest.raises(ValueError, match="embeddings"):
        scorers.label_probabilities(audio[:, :10], text)


def test_clap_scores_of_a_run(clap):
    audio = np.stack([[tone(440), noise(0), tone(880)]])
    s = scorers.score_run(audio, ["dog", "cat", "duck"], scorers.tiny_ast(), clap, {}, {"dog": DOG, "cat": CAT, "duck": DUCK}, SR)
    assert s["clap_labels"] == LABELS and s["clap_probs"].shape == (1, 3, 3) and s["clap_embs"].shape == (1, 3, 512)
    np.testing.assert_allclose(s["clap_probs"].sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(s["clap_embs"], axis=-1), 1, atol=1e-5)
    assert s["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)   # the untrained model's initial scale
    with pytest.raises(ValueError, match="distinct"):
        scorers.score_run(audio, ["dog", "cat"], scorers.tiny_ast(), clap, {}, {"dog": DOG, "cat": DOG}, SR)


# -----------------------------------------------------------------------------
# the AudioSet classifier

def test_tiny_ast_is_transformers_ast_with_the_real_interface(ast_model):
    from transformers import ASTFeatureExtractor, ASTForAudioClassification
    assert isinstance(ast_model.model, ASTForAudioClassification) and not ast_model.model.training
    assert isinstance(ast_model.feature_extractor, ASTFeatureExtractor)
    fe = ast_model.feature_extractor
    # the checkpoint's preprocessor_config.json: 16 kHz (AudioLDM's rate), 128 mel bins, 1024 frames
    assert (fe.sampling_rate, fe.num_mel_bins, fe.max_length) == (16000, 128, 1024)
    assert ast_model.labels == list(scorers.audioset_labels()) and len(ast_model.labels) == 527
    assert ast_model.labels[0] == "Speech" and ast_model.labels[81] == "Cat" and ast_model.labels[526] == "Field recording"


def test_classifier_scores_match_transformers_audio_classification_pipeline(ast_model):
    """Our scoring path against transformers' own pipeline on the same tiny model and waveforms."""
    from transformers import pipeline
    waves = [tone(440, 3.0), noise(1, 10.0), tone(2500, 12.0)]
    ours = ast_model.class_probabilities(waves, SR)
    classify = pipeline("audio-classification", model=ast_model.model, feature_extractor=ast_model.feature_extractor,
                        device="cpu")
    worst = 0.0
    for i, w in enumerate(waves):
        ref = {r["label"]: r["score"] for r in classify(w, top_k=None, function_to_apply="sigmoid")}
        got = dict(zip(ast_model.labels, ours[i]))
        worst = max(worst, max(abs(got[k] - v) for k, v in ref.items()))
    print(f"AST scores vs transformers pipeline: max abs diff {worst:.2e}")
    assert worst < 1e-5
    # independent probabilities, not a softmax: they do not sum to 1
    assert abs(ours[0].sum() - 1) > 1
    # a different sample rate is resampled to the model's 16 kHz first
    at_48k = ast_model.class_probabilities([np.repeat(waves[0], 3)], 48000)
    np.testing.assert_allclose(at_48k[0], ours[0], atol=0.02)


def test_audio_classes_are_checked_and_a_proxy_is_named():
    labels = scorers.audioset_labels()
    judged, notes = scorers.resolve_audio_classes(
        ["cat", "astronaut", "dog", "rocket"],
        {"cat": ["Cat", "Meow"], "astronaut": ["Speech"], "dog": ["Bark"], "rocket": []}, labels)
    assert {s: j["classes"] for s, j in judged.items()} == {"cat": ["Cat", "Meow"], "astronaut": ["Speech"],
                                                            "dog": ["Bark"], "rocket": []}
    assert {s: j["layer"] for s, j in judged.items()} == {"cat": "AUDIO_CLASSES", "astronaut": "AUDIO_CLASSES",
                                                          "dog": "AUDIO_CLASSES", "rocket": "CLAP alone"}
    # a proxy: none of the chosen classes carries the source's name (the example's astronaut judged as speech)
    assert judged["cat"]["why"] == "set in AUDIO_CLASSES"
    assert judged["astronaut"]["why"] == "set in AUDIO_CLASSES: a proxy"
    assert "no AudioSet class is named 'astronaut'" in judged["astronaut"]["detail"]
    assert judged["dog"]["why"] == "set in AUDIO_CLASSES: a proxy" and "'Dog', which is not listed" in judged["dog"]["detail"]
    assert judged["rocket"]["why"] == "CLAP alone: [] in AUDIO_CLASSES"
    assert len(notes) == 1 and "'rocket' -> no AudioSet class" in notes[0]   # the researcher's own choices are no news
    with pytest.raises(ValueError, match=r"'Meows' \(close: 'Meow'") as err:
        scorers.resolve_audio_classes(["cat"], {"cat": ["Cat", "Meows"]}, labels)
    assert "audioset_labels.csv" in str(err.value)
    with pytest.raises(ValueError, match=r"'cat' \(close: 'Cat'"):
        scorers.resolve_audio_classes(["cat"], {"cat": ["cat"]}, labels)
    with pytest.raises(ValueError, match="list of AudioSet class names"):
        scorers.resolve_audio_classes(["cat"], {"cat": "Cat"}, labels)


@pytest.mark.parametrize("source, classes, place", [
    ("tigers", ["Roaring cats (lions, tigers)"], "a part in the parentheses"),      # a word in parentheses, plural as written
    ("lion", ["Roaring cats (lions, tigers)"], "a part in the parentheses"),        # singular of a plural there
    ("geese", ["Goose"], "the whole name"),                                 # an irregular plural
    ("dogs", ["Dog"], "the whole name"),                  # not the wild canids of 'Canidae, dogs, wolves'
    ("dog", ["Dog"], "the whole name"),                   # nor 'Whimper (dog)': the best place found counts
    ("siren", ["Siren"], "the whole name"),               # not 'Police car (siren)', which comes first in the list
    ("wolves", ["Canidae, dogs, wolves"], "a later comma part"),
    ("rooster", ["Chicken, rooster"], "a later comma part"),
    ("cattle", ["Cattle, bovinae"], "the first comma part"),
    ("church bells", ["Church bell"], "the whole name"),  # the last word of a phrase in the singular
    ("Car", ["Car"], "the whole name"),                   # never 'Carnatic music', which holds the letters
    ("cow", [], None), ("horn", [], None), ("astronaut", [], None),   # no AudioSet name holds these words
])
def test_the_name_layer_matches_the_words_of_audioset_names(source, classes, place):
    assert scorers.name_match(source, scorers.audioset_labels()) == (classes, place)
    judged, notes = scorers.resolve_audio_classes([source], {}, scorers.audioset_labels())
    assert judged[source]["classes"] == classes
    assert judged[source]["layer"] == ("name match" if classes else "CLAP alone")
    assert notes and (classes[0] if classes else "no AudioSet class") in notes[0]


def controlled(similarities, dim=16):
    """A query embedding and class embeddings whose cosines with it are exactly `similarities`."""
    q = np.eye(dim)[0]
    classes = [s * q + np.sqrt(1 - s * s) * np.eye(dim)[i + 1] for i, s in enumerate(similarities)]
    return q, np.stack(classes)


@pytest.mark.parametrize("threshold, used", [(0.5, ["A", "B", "C"]), (0.6, ["A", "B"]), (0.7, ["A", "B"]),
                                             (0.71, ["A"]), (0.95, [])])
def test_the_clap_text_layer_uses_the_nearest_names_above_the_threshold(threshold, used):
    names = ["E", "B", "A", "D", "C"]
    q, classes = controlled([0.10, 0.70, 0.90, 0.45, 0.55])
    entry = scorers.clap_text_layer("the sound of a thing", q, classes, names, threshold)
    assert entry["proposed"] == [["A", 0.9], ["B", 0.7], ["C", 0.55]]   # nearest first, the three nearest
    assert entry["classes"] == used
    if used:
        assert entry["layer"] == "nearest by CLAP text" and entry["why"] == "nearest by CLAP text 0.90"
    else:
        assert entry["layer"] == "CLAP alone" and entry["why"] == "CLAP alone: nearest class 0.90 < 0.95"
        assert "EVAL_CLASS_MIN_SIMILARITY=0.95" in entry["detail"] and "'A' 0.90" in entry["detail"]


def test_the_clap_text_layer_reads_clap_s_text_encoder(clap):
    """The real path with the tiny CLAP: the proposals are the cosines of its own text embeddings of the source's
    label and of the 527 names; the threshold between the nearest two flips which are used."""
    labels = list(scorers.audioset_labels())
    text = "a car horn honking"
    q = clap.text_embeddings([text])[0].double().numpy()
    names = clap.text_embeddings(labels).double().numpy()
    sims = names @ q / np.linalg.norm(names, axis=1) / np.linalg.norm(q)
    top = np.argsort(-sims)[:3]
    judge = lambda thr, labels_=None: scorers.resolve_audio_classes(   # noqa: E731
        ["horn"], {}, labels, clap, {"horn": text} if labels_ is None else labels_, thr)[0]["horn"]
    entry = judge(float(sims[top[1]]) - 1e-9)
    assert [n for n, _ in entry["proposed"]] == [labels[i] for i in top]
    assert [s for _, s in entry["proposed"]] == pytest.approx(sims[top], abs=1e-4)
    assert entry["classes"] == [labels[top[0]], labels[top[1]]] and entry["layer"] == "nearest by CLAP text"
    assert judge(float(sims[top[0]]) + 1e-6)["classes"] == []
    # without an EVAL_LABELS entry the label is CLAP's default wording of the name
    assert "'the sound of a horn'" in judge(0.0, {})["detail"]


def test_clap_scores_no_other_source_can_move(ast_model, clap):
    """A source's CLAP score is the cosine with its own label: the other sources and the distractor labels of the
    run do not enter it (CLAP's softmax over the closed list would move it with every label added)."""
    audio = three_audios(n_seeds=2)
    full = scorers.score_run(audio, ["cat", "duck", "dog"], ast_model, clap, {}, {"cat": CAT, "duck": DUCK, "dog": DOG}, SR)
    alone = scorers.score_run(audio, ["cat"], ast_model, clap, {}, {"cat": CAT}, SR)
    more = scorers.score_run(audio, ["cat", "duck"], ast_model, clap, {},
                             {"cat": CAT, "duck": "a goose honking", "x": "thunder", "y": "a violin"}, SR)
    np.testing.assert_array_equal(full["clap"]["cat"], alone["clap"]["cat"])
    np.testing.assert_array_equal(full["clap"]["cat"], more["clap"]["cat"])
    assert not np.allclose(full["clap_probs"][..., 1], alone["clap_probs"][..., 0])   # the softmax would have moved
    # and it is that cosine, computed here from the two embeddings
    text = clap.text_embeddings([CAT])[0].double().numpy()
    embs = full["clap_embs"]
    expected = embs @ text / np.linalg.norm(embs, axis=-1) / np.linalg.norm(text)
    np.testing.assert_allclose(full["clap"]["cat"], expected, atol=1e-6)


def test_raising_the_added_source_leaves_the_kept_one_alone():
    """The property the verdict's kept check needs: audio that moves toward the added label (and away from an
    unrelated direction) keeps its cosine with the kept label, while the softmax over the run's labels would
    hand the kept source a fall of probability exactly when the method works."""
    kept, added = np.eye(8)[0], np.eye(8)[1]
    text = np.stack([kept, added])
    before = unit(0.4 * kept + 0.1 * added + np.sqrt(1 - 0.17) * np.eye(8)[2])
    after = unit(0.4 * kept + 0.6 * added + np.sqrt(1 - 0.52) * np.eye(8)[2])
    cos = scorers.source_cosines(np.stack([before, after]), text).numpy()
    assert cos[1, 1] > cos[0, 1] + 0.4                       # the added source went up
    assert cos[1, 0] == pytest.approx(cos[0, 0], abs=1e-12)   # the kept one did not move
    p = scorers.label_probabilities(np.stack([before, after]), text).numpy()
    assert p[1, 0] < p[0, 0] - 0.5                           # the closed-list softmax says it fell


def test_a_source_score_is_the_max_over_its_classes():
    labels = ["A", "B", "C"]
    probs = np.array([[0.1, 0.7, 0.2], [0.9, 0.0, 0.3]])
    got = scorers.source_scores(probs, {"x": ["A", "C"], "y": ["B"], "z": []}, labels)
    np.testing.assert_array_equal(got["x"], [0.2, 0.9])
    np.testing.assert_array_equal(got["y"], [0.7, 0.0])
    assert "z" not in got


def three_audios(n_seeds=3, seconds=1.0):
    return np.stack([[tone(440 + 100 * s, seconds), noise(s, seconds), tone(660 + 50 * s, seconds)]
                     for s in range(n_seeds)])


def test_score_run_scores_every_seed_and_audio_with_both_scorers(ast_model, clap):
    audio = three_audios()
    s = scorers.score_run(audio, ["cat", "duck", "dog", "rocket"], ast_model, clap, {"cat": ["Cat", "Meow"], "rocket": []},
                     {"cat": CAT, "duck": DUCK}, SR)
    assert set(s["classifier"]) == {"cat", "duck", "dog"} and s["classes"]["rocket"] == []
    assert all(v.shape == (3, 3) for v in s["classifier"].values())
    assert s["clap_probs"].shape == (3, 3, 4) and s["clap_embs"].shape == (3, 3, 512)
    assert s["clap_labels"] == [CAT, DUCK, "the sound of a dog", "the sound of a rocket"]
    np.testing.assert_allclose(s["clap_probs"].sum(-1), 1, atol=1e-6)
    assert set(s["clap"]) == {"cat", "duck", "dog", "rocket"} and all(v.shape == (3, 3) for v in s["clap"].values())
    assert s["judged_by"]["dog"]["layer"] == "name match" and s["judged_by"]["rocket"]["layer"] == "CLAP alone"
    # the classifier path equals scoring each waveform on its own
    alone = ast_model.class_probabilities([audio[1, 2]], SR)[0]
    cat = ast_model.labels.index("Cat"), ast_model.labels.index("Meow")
    assert s["classifier"]["cat"][1, 2] == pytest.approx(max(alone[cat[0]], alone[cat[1]]), abs=1e-6)



# -----------------------------------------------------------------------------
# the real model: missing files, tokenizer guard, checkpoint format

def test_load_clap_without_checkpoint_names_file_and_fix(tmp_path, monkeypatch):
    import model.checkpoints as checkpoints
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path)
    scorers._load_clap.cache_clear()
    try:
        with pytest.raises(CheckpointError) as err:
            scorers.load_clap("cpu")
    finally:
        scorers._load_clap.cache_clear()
    message = str(err.value)
    assert "630k-audioset-best.pt" in message and str(tmp_path) in message
    assert "python -m model.checkpoints clap" in message


def test_tokenizer_guard(tmp_path):
    from transformers import RobertaTokenizer

    from model.aldm import _tiny_tokenizer
    empty = RobertaTokenizer(vocab={"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}, merges=[])
    with pytest.raises(CheckpointError, match="model.checkpoints roberta"):
        scorers.check_roberta_tokenizer(empty)
    # a tokenizer saved to a folder and read back (how load_clap reads roberta-base) is whole
    _tiny_tokenizer().save_pretrained(tmp_path)
    reloaded = RobertaTokenizer.from_pretrained(tmp_path)
    assert scorers.check_roberta_tokenizer(reloaded, vocab_size=len(reloaded)) is reloaded
    with pytest.raises(CheckpointError, match="embeds 50265"):
        scorers.check_roberta_tokenizer(reloaded, vocab_size=50265)


def test_load_clap_weights_rejects_wrong_files(tmp_path, clap):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="(?s)not a readable PyTorch checkpoint.*delete it"):
        scorers.load_clap_weights(clap.model, garbage)
    state = {k: v for k, v in clap.model.state_dict().items() if k != "logit_scale_a"}
    state["audio_branch.fusion_model.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "fusion.pt")
    with pytest.raises(CheckpointError, match="logit_scale_a.*fusion_model"):
        scorers.load_clap_weights(clap.model, tmp_path / "fusion.pt")


def test_clap_training_checkpoint_loads_weights_only_and_nothing_else_does(tmp_path, clap, capsys):
    """Issue 9.1: the release's numpy.float64 learning rate must not stop a weights-only load."""
    path = tmp_path / "630k-audioset-best.pt"
    saved = {k: v.clone() for k, v in clap.model.state_dict().items()}
    torch.save(rf.clap_training_checkpoint(saved), path)   # LAION-CLAP's release format (tests/release_formats.py)
    # the format the issue describes: plain weights_only=True refuses it because of the numpy scalar
    with pytest.raises(Exception, match="numpy.core.multiarray.scalar"):
        torch.load(path, weights_only=True)
    model = scorers.tiny_clap.__wrapped__(seed=5).model
    scorers.load_clap_weights(model, path)
    got = model.state_dict()
    assert all(torch.equal(got[k], clap.model.state_dict()[k]) for k in got)
    assert "ignored top-level entries epoch, name, optimizer" in capsys.readouterr().out

    # still weights-only: a pickled function in the optimizer state is refused with its name, and never runs
    marker = tmp_path / "ran"
    evil = rf.clap_training_checkpoint(saved)
    evil["optimizer"]["param_groups"][0]["lr"] = rf.RunsCode(marker)
    torch.save(evil, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"unsupported global posix\.system") as err:
        scorers.load_clap_weights(model, tmp_path / "evil.pt")
    assert not marker.exists() and "truncated" not in str(err.value)


def test_real_architecture_loads_official_key_format(tmp_path):
    """HTSAT-tiny + roberta-base at full size, random weights: keys and shapes as laion's own CLAP builds
    them, and a checkpoint in the released format ('module.' prefix, stale position_ids) loads strictly."""
    laion_model, _, configs = scorers._laion_modules()
    cfg = configs["HTSAT-tiny"]
    # laion's own constructor, with a small stand-in text branch (its RoBERTa one needs a download)
    official = laion_model.CLAP(embed_dim=cfg["embed_dim"], audio_cfg=cfg["audio_cfg"], text_cfg=dict(
        context_length=77, vocab_size=1, width=8, heads=1, layers=1, model_type="transformer"))
    official = {k: v.shape for k, v in official.state_dict().items()
                if not k.startswith(("text_branch.", "token_embedding.", "positional_embedding", "ln_final."))}
    model = scorers.build_clap_model(scorers.ROBERTA_BASE)
    ours = {k: v.shape for k, v in model.state_dict().items()}
    assert {k for k in ours if not k.startswith("text_branch.")} == set(official)
    assert all(ours[k] == official[k] for k in official if k != "text_projection.0.weight")
    assert ours["text_projection.0.weight"] == (512, 768)
    assert ours["text_branch.embeddings.word_embeddings.weight"] == (50265, 768)
    assert 150e6 < sum(p.numel() for p in model.parameters()) < 160e6

    saved = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "630k-audioset-best.pt"
    torch.save(rf.clap_training_checkpoint(saved), path)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    scorers.load_clap_weights(model, path)
    path.unlink()
    for key in ["text_branch.encoder.layer.11.output.dense.weight", "audio_branch.layers.2.blocks.5.mlp.fc1.weight",
                "audio_projection.2.bias", "logit_scale_a"]:
        torch.testing.assert_close(model.state_dict()[key], saved[key], rtol=0, atol=0)
    assert model.text_branch.encoder.layer[0].attention.self.query.weight.abs().sum() > 0

