"""metrics.py: the Fréchet distance against scipy's matrix square root and closed forms, VGGish's
architecture and front end (a tiny random-weight twin), and `python evaluation.py fad` on folders."""
import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import soundfile as sf
import torch
from conftest import fifo

import metrics
from model.checkpoints import CheckpointError

ROOT = Path(__file__).resolve().parent.parent


def random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T + (1e-3 * np.eye(d) if rank is None else 0)


def scipy_frechet(mu_a, sigma_a, mu_b, sigma_b):
    """The oracle: the textbook formula with scipy.linalg.sqrtm (the general, non-symmetric square root)."""
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * np.real(root)))


@pytest.mark.parametrize("d", [1, 3, 16, 128])
def test_frechet_distance_matches_scipy_sqrtm_on_random_gaussians(d):
    rng = np.random.default_rng(d)
    for _ in range(3):
        mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
        sigma_a, sigma_b = random_spd(rng, d), random_spd(rng, d)
        ours = metrics.frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
        oracle = scipy_frechet(mu_a, sigma_a, mu_b, sigma_b)
        assert ours == pytest.approx(oracle, rel=1e-7, abs=1e-8)
        assert ours == pytest.approx(metrics.frechet_distance(mu_b, sigma_b, mu_a, sigma_a), rel=1e-9)   # symmetric
    assert metrics.frechet_distance(mu_a, sigma_a, mu_a, sigma_a) == pytest.approx(0, abs=1e-8 * d)


def test_frechet_distance_closed_forms():
    # commuting (diagonal) covariances: FD = |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu_a, mu_b = np.zeros(3), np.array([1.0, 2.0, 2.0])
    expected = 9.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert metrics.frechet_distance(mu_a, np.diag(a), mu_b, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # one dimension: (mu_a - mu_b)^2 + (s_a - s_b)^2
    assert metrics.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + 1, rel=1e-12)
    # a rank-deficient covariance (fewer samples than dimensions) stays real and matches scipy
    rng = np.random.default_rng(0)
    low, full = random_spd(rng, 8, rank=3), random_spd(rng, 8)
    assert metrics.frechet_distance(np.zeros(8), low, np.ones(8), full) == pytest.approx(
        scipy_frechet(np.zeros(8), low, np.ones(8), full), rel=1e-6)


def test_fad_of_samples_converges_to_the_distance_of_their_gaussians():
    rng = np.random.default_rng(1)
    d, n = 4, 200_000
    mu_b, sigma_a, sigma_b = np.full(d, 0.5), np.diag([1.0, 2.0, 0.5, 1.0]), np.diag([2.0, 1.0, 0.5, 4.0])
    a = rng.multivariate_normal(np.zeros(d), sigma_a, size=n)
    b = rng.multivariate_normal(mu_b, sigma_b, size=n)
    exact = metrics.frechet_distance(np.zeros(d), sigma_a, mu_b, sigma_b)
    got = metrics.fad(a, b)
    assert got["fad"] == pytest.approx(exact, rel=0.02) and got["caveats"] == []
    assert metrics.fad(a[:3], b[:3])["caveats"]   # 3 samples of 4 dimensions: said, not hidden
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        metrics.gaussian_stats(a[:1])


def test_vggish_architecture_is_the_published_one():
    model = metrics.build_vggish()
    assert sum(p.numel() for p in model.parameters()) == 72_141_184
    assert isinstance(model.embeddings[-1], torch.nn.Identity) and model.embeddings[-2].out_features == 128
    assert not model.postprocess   # no PCA / 8-bit quantisation


def test_a_wrong_vggish_file_is_refused_with_its_keys(tmp_path):
    path = tmp_path / "vggish-10086976.pth"
    torch.save(metrics.tiny_vggish().model.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit torchvggish's VGGish: .*mis-shaped"):
        metrics.read_vggish(path)


def test_tiny_vggish_embeds_through_the_published_front_end():
    embedder = metrics.tiny_vggish()
    t = np.arange(32000 * 3) / 32000
    emb = embedder.embed(np.sin(2 * np.pi * 440 * t), 32000)   # resampled to 16 kHz by VGGish's front end
    assert emb.shape == (3, 128) and np.isfinite(emb).all()
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1)
    np.testing.assert_allclose(embedder.embed(stereo, 32000), emb)
    assert embedder.embed(np.zeros(1000), 16000).shape == (0, 128)   # shorter than one 0.96 s example


def write_set(folder, kind, n=3, seconds=2.0, rate=16000, seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(n):
        wave = np.sin(2 * np.pi * (300 + 100 * i) * t) if kind == "tone" else rng.standard_normal(len(t))
        sf.write(folder / f"clip{i}.wav", (0.3 * wave).astype(np.float32), rate)
    return folder


def test_fad_cli_on_two_folders(tmp_path):
    tones, noise = write_set(tmp_path / "tones", "tone"), write_set(tmp_path / "noise", "noise")
    tones2 = write_set(tmp_path / "tones2", "tone")
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "evaluation.py"), "fad", *a, "--smoke"],   # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = run(str(tones), str(noise))
    assert out.returncode == 0, out.stderr
    assert "FAD with tiny random-weight VGGish" in out.stdout and "(6 / 6 embeddings)" in out.stdout
    figure = float(out.stdout.split("noise")[1].split()[0])
    same = run(str(tones), str(tones2))
    assert float(same.stdout.split("tones2")[1].split()[0]) == pytest.approx(0, abs=1e-4)   # printed to 4 places
    assert figure > 1e-3
    missing = run(str(tones), str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a folder of audio files" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_fad_cli_usage():
    assert metrics.main(["fad"]) == 2 and metrics.main(["fad", "a", "b", "--bogus"]) == 2


def test_panns_models_import_without_the_package_init():
    # panns_inference/__init__ runs wget for a label CSV at import: our import must not run it
    code = ("import sys, metrics; m = metrics._panns_models(); "
            "print(m.Cnn14.__name__, 'panns_inference' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "HOME": "/nonexistent-home"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Cnn14", "False"] and "wget" not in out.stderr


def test_cnn14_variants_are_audioldm_evals_front_ends():
    """16 kHz audio goes to the CNN14 PANNs trained at 16 kHz: window 512, hop 160, 64 mels 50-8000 Hz (the 32 kHz
    release's front end differs only in those filters, so the wrong file does not load)."""
    import librosa
    big16 = metrics.build_cnn14("16k")
    assert sum(p.numel() for p in big16.parameters()) == 81_033_231   # the 32 kHz one: 81,837,071
    tiny16, tiny32 = (metrics.tiny_cnn14(variant=v).model.state_dict() for v in ("16k", "32k"))   # real front ends
    differ = {k for k, v in tiny16.items() if v.shape != tiny32[k].shape}
    assert differ == {"spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                      "logmel_extractor.melW"}
    stft = big16.spectrogram_extractor.stft.conv_real
    assert tuple(stft.weight.shape) == (257, 1, 512) and stft.stride == (160,)   # window 512, hop 160
    mel = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=50, fmax=8000).T
    np.testing.assert_allclose(big16.logmel_extractor.melW.detach().numpy(), mel, rtol=0, atol=1e-6)
    assert metrics.CNN14_DEFAULT == "16k" and "Cnn14_16k_mAP=0.438.pth" in metrics.cnn14_name("16k")


def test_tiny_cnn14_reads_a_file_as_audioldm_eval_and_returns_logits():
    scorer = metrics.tiny_cnn14()
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(16000) + 0.3                      # 1 s with a DC offset, at the model's own rate
    prepared = scorer.prepare(wave, 16000)
    assert prepared.shape == (32000,) and np.all(prepared[16000:] == 0)   # zero-padded to 2 s
    np.testing.assert_allclose(prepared[:16000], wave - wave.mean(), atol=1e-12)
    assert scorer.prepare(rng.standard_normal(64000), 32000).shape == (32000,)   # 2 s at 32 kHz -> 16 kHz
    emb, logits = scorer(wave, 16000)
    assert emb.shape == (16,) and logits.shape == (527,)
    with torch.no_grad():   # the logits are those whose sigmoid the library's forward returns
        probs = scorer.model(torch.as_tensor(prepared, dtype=torch.float32)[None])["clipwise_output"][0].double()
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), probs.numpy(), rtol=1e-6, atol=1e-7)
    assert (logits < 0).any() and (logits > 0).any()   # logits, not probabilities
    assert not np.allclose(logits, scorer(rng.standard_normal(32000), 32000)[1])


def test_a_wrong_panns_file_is_refused(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save(metrics.tiny_cnn14().model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="is not a PANNs release checkpoint"):
        metrics.read_cnn14(plain)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": metrics.tiny_cnn14().model.state_dict(), "iteration": 0}, wrapped)
    with pytest.raises(CheckpointError, match="does not fit PANNs CNN14 at 16k .*mis-shaped"):
        metrics.read_cnn14(wrapped)


def test_the_32k_release_is_refused_where_the_16k_one_belongs(tmp_path, monkeypatch):
    """Both load through the one weights-only reader; the 32 kHz file's front-end filters do not fit the 16 kHz
    model (shown with tiny twins of the two releases, whose front ends are the real ones)."""
    monkeypatch.setattr(metrics, "build_cnn14", lambda variant="16k": metrics.tiny_cnn14(variant=variant).model)
    for variant in ("16k", "32k"):
        torch.save({"model": metrics.tiny_cnn14(seed=3, variant=variant).model.state_dict(), "iteration": 1},
                   tmp_path / f"{variant}.pth")
    loaded = metrics.read_cnn14(tmp_path / "16k.pth", "16k")
    assert torch.equal(loaded.fc_audioset.weight, metrics.tiny_cnn14(seed=3, variant="16k").model.fc_audioset.weight)
    assert "fit PANNs CNN14 at 32k" in metrics.verify_cnn14_file(tmp_path / "32k.pth")
    with pytest.raises(CheckpointError, match=r"at 16k .*Cnn14_16k_mAP=0.438.pth.*conv_real.weight \(513, 1, 10"):
        metrics.read_cnn14(tmp_path / "32k.pth", "16k")


# -----------------------------------------------------------------------------
# KL: audioldm_eval's two definitions on fixed logits, against independent computations


def fixed_logits():
    """Two sets of 3 clips x 527 logits: ordinary values, and saturated ones (|logit| 40) where a naive sigmoid
    or softmax in float32 would lose the small probabilities."""
    rng = np.random.default_rng(7)
    ref, gen = 3 * rng.standard_normal((3, 527)), 3 * rng.standard_normal((3, 527))
    ref[2, :5], gen[2, :5] = [40, -40, 40, -40, 0], [-40, 40, 40, 0, -40]
    return ref, gen


def torch_kl(ref, gen, squash):
    """audioldm_eval's formulation, written with torch.nn.functional.kl_div: reduction 'sum' over classes and
    files, divided by the number of files (input = log(q_gen + 1e-6), target = p_ref), in float64."""
    r, g = torch.from_numpy(ref), torch.from_numpy(gen)
    p, q = (r.softmax(dim=1), g.softmax(dim=1)) if squash == "softmax" else (r.sigmoid(), g.sigmoid())
    return float(torch.nn.functional.kl_div((q + 1e-6).log(), p, reduction="sum") / len(r))


def scipy_kl(ref, gen, squash):
    """The same sums with scipy: rel_entr(p, q + 1e-6) = p log(p / (q + 1e-6)), softmax / expit from scipy.special."""
    from scipy.special import expit, rel_entr, softmax
    p, q = (softmax(ref, axis=1), softmax(gen, axis=1)) if squash == "softmax" else (expit(ref), expit(gen))
    return float(rel_entr(p, q + 1e-6).sum(axis=1).mean())


@pytest.mark.parametrize("squash", ["softmax", "sigmoid"])
def test_kl_matches_torch_kl_div_and_scipy_on_fixed_logits(squash):
    ref, gen = fixed_logits()
    ours = {"softmax": metrics.kl_softmax, "sigmoid": metrics.kl_sigmoid}[squash](ref, gen)
    assert ours.shape == (3,)
    assert float(ours.mean()) == pytest.approx(torch_kl(ref, gen, squash), rel=1e-12, abs=1e-12)
    assert float(ours.mean()) == pytest.approx(scipy_kl(ref, gen, squash), rel=1e-12, abs=1e-12)
    assert float(metrics.kl_softmax(ref[0], gen[0]) if squash == "softmax" else
                 metrics.kl_sigmoid(ref[0], gen[0])) == pytest.approx(float(ours[0]), rel=1e-15)   # one clip
    paired = metrics.paired_kl(dict(enumerate(ref)), dict(enumerate(gen)))
    assert paired[squash]["mean"] == pytest.approx(float(ours.mean()), rel=1e-15)
    assert paired[squash]["definition"] == metrics.KL_DEFINITIONS[squash] and paired["n"] == 3


def test_the_two_kls_are_the_definitions_they_name():
    """softmax: a divergence (about 0 for equal logits, a shift of every logit changes nothing); sigmoid: each
    class on its own, not renormalised (a shift changes it, and it differs from the renormalised sigmoid KL)."""
    ref, gen = fixed_logits()
    assert -527e-6 <= metrics.kl_softmax(ref[0], ref[0]) < 0   # only the 1e-6 inside the log: about -527 x 1e-6
    assert metrics.kl_softmax(ref[0], gen[0] + 5.0) == pytest.approx(metrics.kl_softmax(ref[0], gen[0]), rel=1e-6)
    assert metrics.kl_sigmoid(ref[0], gen[0] + 5.0) != pytest.approx(metrics.kl_sigmoid(ref[0], gen[0]), rel=1e-3)
    sig = lambda x: 1 / (1 + np.exp(-x))   # noqa: E731
    renormalised = metrics.kl_divergence(sig(ref[0]), sig(gen[0]))
    assert abs(metrics.kl_sigmoid(ref[0], gen[0]) - renormalised) > 1.0
    assert np.isfinite(metrics.kl_sigmoid(ref, gen)).all() and np.isfinite(metrics.kl_softmax(ref, gen)).all()


def test_kl_pairs_files_by_their_key_never_by_list_order():
    ref, gen = fixed_logits()
    by_key = metrics.paired_kl({"a": ref[0], "b": ref[1], "c": ref[2]}, {"c": gen[2], "a": gen[0], "x": gen[1]})
    assert by_key["n"] == 2 and by_key["unpaired"] == {"reference only": 1, "generated only": 1}
    expected = (metrics.kl_softmax(ref[0], gen[0]) + metrics.kl_softmax(ref[2], gen[2])) / 2
    assert by_key["softmax"]["mean"] == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError, match="share no file keys"):
        metrics.paired_kl({"a": ref[0]}, {"b": gen[0]})


def test_a_manifests_kl_pairs_the_same_pair_and_seed(tmp_path):
    """A finished pair that lacks one wav must not shift the others: files pair by '<pair>/seed<N>'."""
    import json
    rng = np.random.default_rng(3)
    run = tmp_path / "run"
    for pair, wavs in {"pair001_cat-to-dog": ["baseline_edited.wav", "manipulated.wav", "manipulated_seed43.wav"],
                       "pair002_cow-to-owl": ["baseline_edited.wav", "baseline_edited_seed43.wav", "manipulated.wav",
                                              "manipulated_seed43.wav"]}.items():
        (run / pair).mkdir(parents=True)
        (run / pair / "run.json").write_text(json.dumps({"status": "finished", "seeds": [42, 43], "wavs": wavs}))
        for wav in wavs:
            sf.write(run / pair / wav, 0.3 * rng.standard_normal(8000).astype(np.float32), 16000)
    sets = metrics.manifest_sets(run)
    assert sorted(sets["manipulated"]) == ["pair001_cat-to-dog/seed42", "pair001_cat-to-dog/seed43",
                                           "pair002_cow-to-owl/seed42", "pair002_cow-to-owl/seed43"]
    assert sorted(sets["baseline_edited"]) == ["pair001_cat-to-dog/seed42", "pair002_cow-to-owl/seed42",
                                               "pair002_cow-to-owl/seed43"]
    scorer = metrics.tiny_cnn14(seed=1)
    result = metrics.manifest_panns(run, scorer)
    kl = result["kl"]["KL(baseline_edited || manipulated)"]
    assert kl["n"] == 3 and kl["unpaired"] == {"reference only": 0, "generated only": 1}
    logits = {k: scorer(*sf.read(f))[1] for k, f in sets["manipulated"].items()}
    ref = {k: scorer(*sf.read(f))[1] for k, f in sets["baseline_edited"].items()}
    expected = np.mean([metrics.kl_softmax(ref[k], logits[k]) for k in ref])
    assert kl["softmax"]["mean"] == pytest.approx(float(expected), rel=1e-9)


def test_fd_of_the_sets_is_scipys_on_the_clip_embeddings(tmp_path):
    """FD through panns_figures against the textbook formula (scipy.linalg.sqrtm) on embeddings made by calling
    the network directly; the definition travels with the figure."""
    a, b = write_set(tmp_path / "a", "tone", n=4), write_set(tmp_path / "b", "noise", n=4)
    scorer = metrics.tiny_cnn14(seed=2)
    result = metrics.panns_figures({"a": metrics.keyed_files(a), "b": metrics.keyed_files(b)}, scorer)
    emb = []
    for folder in (a, b):
        rows = []
        for f in sorted(folder.iterdir()):
            wave, rate = sf.read(f)
            with torch.no_grad():
                x = torch.as_tensor(scorer.prepare(wave, rate), dtype=torch.float32)[None]
                rows.append(scorer.model(x)["embedding"][0].double().numpy())
        emb.append(np.stack(rows))
    oracle = scipy_frechet(emb[0].mean(0), np.cov(emb[0], rowvar=False), emb[1].mean(0), np.cov(emb[1], rowvar=False))
    figure = result["fd"]["a vs b"]
    assert figure["fd"] == pytest.approx(oracle, rel=1e-8, abs=1e-15) and figure["definition"] == metrics.FD_DEFINITION
    assert result["variant"] == "16k" and result["model"].startswith("tiny random-weight CNN14 at 16k")


def test_kl_divergence_matches_scipy_entropy():
    import scipy.stats
    rng = np.random.default_rng(2)
    p, q = rng.uniform(0.01, 1, 527), rng.uniform(0.01, 1, 527)
    assert metrics.kl_divergence(p, q) == pytest.approx(scipy.stats.entropy(p, q), rel=1e-10)
    assert metrics.kl_divergence(p, p) == pytest.approx(0, abs=1e-12)


def test_fd_and_kl_cli_on_folders(tmp_path, capsys):
    tones, noise = write_set(tmp_path / "tones", "tone"), write_set(tmp_path / "noise", "noise")
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "evaluation.py"), *a, "--smoke"],   # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True, timeout=300)
    fd = run("fd", str(tones), str(noise))
    assert fd.returncode == 0, fd.stderr
    assert "FD with tiny random-weight CNN14 at 16k" in fd.stdout and "(3 / 3 clips)" in fd.stdout
    assert metrics.FD_DEFINITION in fd.stdout
    kl = run("kl", str(tones), str(noise))   # clip0.wav .. clip2.wav in both: paired by name
    assert kl.returncode == 0 and kl.stdout.count("over 3 paired clips") == 2, kl.stdout
    assert all(text in kl.stdout for text in metrics.KL_DEFINITIONS.values())
    assert metrics.main(["fd", str(tones), str(noise), "--smoke", "--cnn14=32k"]) == 0
    assert "FD with tiny random-weight CNN14 at 32k" in capsys.readouterr().out
    assert metrics.main(["fd", str(tones), str(noise), "--smoke", "--cnn14=44k"]) == 2
    assert "--cnn14=44k is not one of 16k, 32k" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (noise / "clip0.wav").rename(other / "x.wav")
    unpaired = run("kl", str(tones), str(other))
    assert unpaired.returncode == 2 and "share no file keys" in unpaired.stderr


# -----------------------------------------------------------------------------
# files that are not audio: named, never opened when they are not regular files (issue 25)

BAD_FILES = {   # name in the folder -> (make it, what the message says)
    "text.wav": (lambda p: p.write_text("not audio at all"),
                 "is not audio that soundfile reads (Format not recognised"),
    "zero.wav": (lambda p: p.symlink_to("/dev/zero"), "is a character device, not a regular file"),
    "loop.wav": (lambda p: p.symlink_to(p), "is a symbolic link that loops"),
    "fifo.wav": (None, "is a FIFO (named pipe), not a regular file"),
}


@pytest.mark.parametrize("what", ["fad", "fd", "kl"])
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_wav_that_is_not_audio_stops_with_its_name_before_any_model(name, what, tmp_path, capsys, monkeypatch):
    tones, tones2 = write_set(tmp_path / "tones", "tone"), write_set(tmp_path / "tones2", "tone")
    make, says = BAD_FILES[name]
    for loader in ("tiny_vggish", "tiny_cnn14", "load_vggish", "load_cnn14"):   # checked before any model loads
        monkeypatch.setattr(metrics, loader, lambda *a, **k: pytest.fail("a model loaded before the files were checked"))
    with fifo(tones / name) if make is None else contextlib.nullcontext():
        if make is not None:
            make(tones / name)
        assert metrics.main([what, str(tones), str(tones2), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert f"{tones / name} {says}" in err and "stopped, because a set-level figure uses every file" in err, err
    assert "Traceback" not in err


def test_sub_folders_are_searched_and_the_reader_never_opens_a_fifo(tmp_path):
    tones = write_set(tmp_path / "tones", "tone")
    (tones / "more.wav").mkdir()   # a folder with an audio name is searched, not read
    write_set(tones / "more.wav" / "deeper", "tone", n=1)
    assert [p.relative_to(tones).as_posix() for p in metrics.wav_files(tones)] == [
        "clip0.wav", "clip1.wav", "clip2.wav", "more.wav/deeper/clip0.wav"]
    with fifo(tmp_path / "pipe.wav") as pipe:
        with pytest.raises(ValueError, match="pipe.wav is a FIFO"):
            metrics._read(pipe)
        with pytest.raises(ValueError, match="pipe.wav is a FIFO"):
            metrics.reference_files([tones, pipe])
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(ValueError, match="text.wav: reading its samples failed \\(Format not recognised\\)"):
        metrics._read(tmp_path / "text.wav")
    (tmp_path / "cut.wav").write_bytes((tones / "clip0.wav").read_bytes()[:60])   # a header and 8 samples
    with pytest.raises(ValueError, match="cut.wav: VGGish cannot embed it \\(8 samples at 16000 Hz"):
        metrics.set_embeddings([tmp_path / "cut.wav"], metrics.tiny_vggish())
