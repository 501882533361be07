#!/usr/bin/env bash
# Fetch every checkpoint the project needs into checkpoints/ (and the Hugging Face cache), verifying each.
# Names select a subset: bash checkpoints/download_ckpts.sh sam2 yolo
# ssv2a.pth has no direct URL (Google Drive): the script prints where to get it.
cd "$(dirname "$0")/.." && exec python -m model.checkpoints "$@"
