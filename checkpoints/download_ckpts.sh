#!/usr/bin/env bash
# Fetch every checkpoint the project needs into checkpoints/ (and the Hugging Face cache), verifying each.
# Names select a subset: bash checkpoints/download_ckpts.sh sam2 yolo
# ssv2a.pth comes from its authors' Google Drive folder (gdown); when Drive refuses, the script says what Drive
# said and where to get the file by hand.
cd "$(dirname "$0")/.." && exec python -m model.checkpoints "$@"
