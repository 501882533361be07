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


def test_tiny_cnn14_runs_the_library_forward():
    scorer = metrics.tiny_cnn14()
    rng = np.random.default_rng(0)
    emb, probs = scorer(rng.standard_normal(16000), 16000)   # resampled to 32 kHz first
    assert emb.shape == (16,) and probs.shape == (527,) and ((probs > 0) & (probs < 1)).all()
    emb2, probs2 = scorer(rng.standard_normal(32000), 32000)
    assert not np.allclose(probs, probs2)


def test_a_wrong_panns_file_is_refused(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save(metrics.tiny_cnn14().model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="is not a PANNs release checkpoint"):
        metrics.read_cnn14(plain)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": metrics.tiny_cnn14().model.state_dict(), "iteration": 0}, wrapped)
    with pytest.raises(CheckpointError, match="does not fit PANNs CNN14 .*mis-shaped"):
        metrics.read_cnn14(wrapped)


def test_kl_divergence_matches_scipy_entropy():
    import scipy.stats
    rng = np.random.default_rng(2)
    p, q = rng.uniform(0.01, 1, 527), rng.uniform(0.01, 1, 527)
    assert metrics.kl_divergence(p, q) == pytest.approx(scipy.stats.entropy(p, q), rel=1e-10)
    assert metrics.kl_divergence(p, p) == pytest.approx(0, abs=1e-12)


def test_fd_and_kl_cli_on_folders(tmp_path):
    tones, noise = write_set(tmp_path / "tones", "tone"), write_set(tmp_path / "noise", "noise")
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "evaluation.py"), *a, "--smoke"],   # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True, timeout=300)
    fd = run("fd", str(tones), str(noise))
    assert fd.returncode == 0, fd.stderr
    assert "FD with tiny random-weight CNN14" in fd.stdout and "(3 / 3 clips)" in fd.stdout
    kl = run("kl", str(tones), str(noise))   # clip0.wav .. clip2.wav in both: paired by name
    assert kl.returncode == 0 and "over 3 paired clips" in kl.stdout
    other = tmp_path / "other"
    other.mkdir()
    (noise / "clip0.wav").rename(other / "x.wav")
    unpaired = run("kl", str(tones), str(other))
    assert unpaired.returncode == 2 and "share no file names" in unpaired.stderr


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
        monkeypatch.setattr(metrics, loader, lambda *a: pytest.fail("a model loaded before the files were checked"))
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
