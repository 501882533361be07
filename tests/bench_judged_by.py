"""Benchmark: which AudioSet classes judge each sound source, and why (scorers.resolve_audio_classes's layers).

Each argument is one edit pair, removed:added[:kept[:kept...]]. The sources go through main.py's AUDIO_CLASSES
and EVAL_LABELS and EVAL_CLASS_MIN_SIMILARITY, as a run would, and the layer that decided is printed with its
reason: set in AUDIO_CLASSES (or a proxy), a name match, the nearest names by CLAP's text encoder (the three
nearest with their cosine similarity, and the median over the 527), or CLAP alone. The CLAP-text layer needs
LAION-CLAP's weights (checkpoints/630k-audioset-best.pt and the roberta-base tokenizer); without them it runs on
the tiny random CLAP and says so, and its similarities then mean nothing: use --real where the weights are, to
see the real proposals and to choose the threshold.

    python tests/bench_judged_by.py                                   # the example pair and three more
    python tests/bench_judged_by.py cat:astronaut:rocket dogs:geese:rain --real --device cuda
    python tests/bench_judged_by.py cow:tigers --min-similarity 0.6
"""
import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import main  # noqa: E402
import scorers  # noqa: E402
import verdict  # noqa: E402

PAIRS = ["cat:astronaut:rocket", "dogs:geese:rain", "cow:tigers:birds", "car:horn:siren"]


def bench():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="*", default=PAIRS, help="removed:added[:kept...] (default: %(default)s)")
    parser.add_argument("--real", action="store_true", help="the released CLAP (needs its weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-similarity", type=float, default=main.EVAL_CLASS_MIN_SIMILARITY)
    args = parser.parse_args()
    clap = scorers.load_clap(args.device) if args.real else scorers.tiny_clap()
    if not args.real:
        print("NOTE: the tiny random CLAP: the CLAP-text layer's names and similarities below mean nothing "
              "(--real with the released weights gives the real ones)\n")
    labels = scorers.audioset_labels()
    for pair in args.pairs:
        removed, added, *kept = pair.split(":")
        sources = {"removed": [removed], "added": [added], "kept": kept}
        judged, _ = scorers.resolve_audio_classes([removed, added, *kept], main.AUDIO_CLASSES, labels, clap,
                                                  main.EVAL_LABELS, args.min_similarity)
        print(f"{removed} -> {added}" + (f", kept {', '.join(kept)}" if kept else "") + ":")
        for role, names in sources.items():
            for source in names:
                entry = judged[source]
                print(f"  {verdict.judged_line(role, source, entry)}")
                print(f"      layer: {entry['layer']}; in the tables: {entry['why']!r}")
        print()


if __name__ == "__main__":
    bench()
