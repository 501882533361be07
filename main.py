"""Edit-aware image-to-audio generation.

Given I_0 (e.g. cat + rocket) and an edited I_1 (astronaut + rocket), make audio that follows the edit:
SAM2 masks of the removed and added objects -> all 257 CLIP tokens of each image -> SVD suppression of the
removed region, SVD boost of the added one -> mix with background and plain CLIP -> global slot of SSV2A's
remixer next to YOLO crops of I_1 -> AudioLDM -> an AudioSet classifier (and CLAP) scores the three audios
over several seeds.

Every mode, one example each:

    python main.py                                      # the example pair in images/: one run folder
    python main.py --SVD_K=8 --ORIGINAL=a.jpg           # override any constant below (--NAME=value)
    python main.py --smoke                              # tiny random models, CPU, no checkpoints: checks the plumbing
    python main.py --sweep SVD_K=1,5,10 SVD_ALPHA=0.1,0.3   # a grid; masks, tokens and detections computed once
    python main.py --AUDIO_INPUT=rec.wav --EDIT_STRENGTH=0.5 --EDIT_METHOD=ddpm-inversion   # step 8: edit a
                                                        # recording of I_0 (EDIT_STRENGTH 0.2-0.8: more edit, less A_0)
    python main.py --manifest images/pairs.csv --reference real_audio/   # many edit pairs, models loaded once;
                                                        # --reference (optional): real audio for the set-level FAD
    accelerate launch --multi_gpu --num_processes 4 main.py --manifest images/pairs.csv   # one process per GPU
    python main.py --resume outputs/<timestamp>_manifest-pairs   # a manifest run again: finished pairs kept,
                                                        # failed / unfinished redone (only --DEVICE may change)
    python main.py --help                               # this text and every constant
    python evaluation.py fad|fd|kl DIR_A DIR_B          # set-level FAD / FD / KL of two folders of audio
    python app.py                                       # the same in the browser (--smoke on a CPU)

Every setting, name, image and checkpoint is checked before the first model runs. Every run writes a new
folder outputs/<timestamp>_<name>/; every file in it is written once, except run.json, which the run rewrites
(atomically) as it goes and when it ends, to say how it ended.
"""
import sys
from pathlib import Path

from audio_io import AUDIO_NAMES, EDIT_AUDIO_NAMES, EDIT_TARGETS, read_audio_input, wav_name
from errors import UserError
from inputs import roles_of, source_names
from runs import Timer, detection_record, recorded_warnings, run_file, save_tensors, write_json
from settings import eval_seeds

# -----------------------------------------------------------------------------
# configuration: every constant can be overridden as --NAME=value (names are case-insensitive)
IMAGE_DIR = "images"                 # folder of ORIGINAL / EDITED when they are bare file names
ORIGINAL = "original.jpg"            # I_0: the image before the edit
EDITED = "edited.jpg"                # I_1: the image after the edit
OUTPUT_DIR = "outputs"               # each run gets its own sub-folder here
RUN_NAME = ""                        # suffix of the run folder; '' = '<removed>-to-<added>'
CONFIG_PATH = "ssv2a.json"           # SSV2A configuration (the release's ssv2a.json)
CHECKPOINT_PATH = "checkpoints/ssv2a.pth"  # SSV2A weights (python -m model.checkpoints ssv2a says where)
CIAP_CHECKPOINT = ""                 # '' = SSV2A's remixer (the plan's); a train_ciap.py ciap.safetensors = CIAP
# The objects: first entry = object to REMOVE (in I_0), second = object to ADD (in I_1). Either SAM2 points
# ({"x": [...], "y": [...], "labels": [...]}: pixels, labels 1 = on the object, 0 = not on it; find them with
# verify_masks.py) or {} to find the object by its name (SAM2 proposals ranked by CLIP; {"text": "..."} words
# the CLIP prompt differently). The names also name the sound sources of the evaluation.
SAM2_PROMPTS = {
    "cat": {"x": [448], "y": [330], "labels": [1]},
    "astronaut": {"x": [410, 370], "y": [130, 460], "labels": [1, 1]},
}
KEPT_SOURCES = ["rocket"]            # sound sources in both images: their scores should stay put
# AudioSet classes of each sound source for the verdict's classifier (exact display names of the 527 in
# model/audioset_labels.csv): the researcher's choice, named 'a proxy' when no listed class carries the name.
# A source not listed is matched by the words of the display names ('dogs' -> 'Dog', 'tigers' -> 'Roaring cats
# (lions, tigers)'), else by the names CLAP's text encoder puts nearest to its CLAP label (at least
# EVAL_CLASS_MIN_SIMILARITY); [] = no AudioSet class: CLAP alone judges it. AudioSet has no rocket and no
# astronaut: a launch sounds like a jet engine, an astronaut on the radio like speech.
AUDIO_CLASSES = {
    "cat": ["Cat", "Meow", "Purr"],
    "astronaut": ["Speech", "Male speech, man speaking", "Female speech, woman speaking", "Narration, monologue"],
    "rocket": ["Jet engine", "Rumble", "Engine"],
}
# CLAP zero-shot label per source name (the second view); a source without an entry gets "the sound of a
# <name>"; extra entries are extra labels to choose from (distractors)
EVAL_LABELS = {"cat": "a cat meowing", "astronaut": "a person talking", "rocket": "a rocket engine roaring"}
EVAL_CLASS_MIN_SIMILARITY = 0.5      # CLAP text cosine an AudioSet name needs to judge an unlisted source, 0.4-0.7
EVAL_TOLERANCE = 0.05                # kept sources may move this much in probability and still pass, 0.0-0.2
EVAL_TOLERANCE_CLAP = 0.015          # the same for CLAP's cosine with a kept source's label, 0.0-0.05
EVAL_SEEDS = 3                       # draws of the three audios (seeds SEED, SEED+1, ...), 3-10; 1 = one draw
EVAL_MIN_EFFECT = 0.01               # effect floor: an up/down change of a probability below it is 'no effect', 0.01
EVAL_MIN_EFFECT_CLAP = 0.003         # effect floor of CLAP's cosines (per-source scores, embedding distances), 0.003
EVAL_MIN_EFFECT_KL = 0.0002          # effect floor of the label-distribution KL, in nats, 0.0002
SVD_K = 5                            # top singular values to modify, 1-15 (must stay below the region's rank)
SVD_ALPHA = 0.3                      # suppression factor for the removed object, 0.1-0.5 (1 = no effect)
SVD_BETA = 1.5                       # boost factor for the added object, 1.1-3.0 (1 = no effect)
MIX_ALPHA = 0.1                      # weight of the suppressed embedding, 0.0-0.3
MIX_BETA = 0.4                       # weight of the boosted embedding, 0.2-0.6
MIX_GAMMA = 0.1                      # weight of the background embedding, 0.0-0.3
MIX_DIRECT = 0.4                     # weight of the plain CLIP embedding of I_1, 0.2-0.6 (weights sum to 1)
MASK_THRESHOLD = 0.5                 # a patch belongs to the object when this fraction is masked, 0.3-0.7
TEXT_PROMPT = "a photo of a {}"      # CLIP wording for objects found by name ({} = the name; "a {}" reads
#                                      "an {}" before a name starting with a vowel: "a photo of an astronaut")
TEXT_MIN_SCORE = 0.3                 # CLIP probability a proposal needs to count as the named object, 0-1
CYCLE_ITS = 64                       # SSV2A cycle-mix rounds, 0-128 (more = closer to the detected sources)
CYCLE_SAMPLES = 64                   # remixes drawn per cycle-mix round, 1-128
VAR_SAMPLES = 64                     # variational draws averaged per sample, 1-128 (more = less random)
PIN_GLOBAL = False                   # ablation: keep slot 0 = E_final in every cycle-mix round (False = original)
DURATION = 10.0                      # seconds of audio, 2.5-20 (AudioLDM was trained on 10 s)
SAMPLER = "ddim"                     # 'ddim' (eta 1, the original's), 'dpmpp-2m', 'dpmpp-2m-sde' (faster)
DDIM_STEPS = 200                     # denoising steps, 50-400 for ddim; each faster sampler has its own default
GUIDANCE = 2.5                       # AudioLDM classifier-free guidance, 1.0-5.0
AUDIO_BATCH = 8                      # audios per AudioLDM call, 1-32 (GPU memory), in whole seeds (see step 7)
SEED = 42                            # first seed: masks-to-audio repeat exactly for the same seed
DEVICE = ""                          # '' = cuda if present, else mps, else cpu; or 'cuda', 'cuda:1', 'cpu'
SMOKE = False                        # tiny random-weight models on the CPU: tests the plumbing, audio is noise
# step 8 (optional), DeltaV2A's half of the problem: edit a recording A_0 that goes with I_0, keeping its timing
AUDIO_INPUT = ""                     # A_0: wav/flac/ogg (mono-mixed, 16 kHz, cut/padded to DURATION); '' = off
EDIT_STRENGTH = 0.5                  # fraction of AudioLDM's schedule re-run from A_0, 0.2-0.8: more edit, less A_0
EDIT_METHOD = "ddpm-inversion"       # 'ddpm-inversion' (edit-friendly, exact), 'ddim-inversion' or 'sdedit'
EDIT_GUIDANCE_SRC = 3.0              # guidance under c_src (inverting A_0, and `reconstructed`), 1.0-5.0 (ZETA: 3)
EDIT_GUIDANCE_TGT = 12.0             # guidance under c_tgt (the edits), 3.0-15.0 (ZETA: 12): higher = a stronger edit
EDIT_DDIM_GUIDANCE_SRC = 1.0         # ddim-inversion's source guidance, 1.0 = unguided (guided DDIM inversion drifts)
# grid for --sweep, e.g. {"SVD_K": [1, 5, 10], "SVD_ALPHA": [0.1, 0.3]}; the command line's --sweep wins
SWEEP = {}
CONFIRM_SEEDS = 10                   # fresh seeds that re-run a sweep's best and default settings, 5-20; 0 = off
# many pairs (--manifest, under accelerate launch on several GPUs)
MANIFEST_WAIT_HOURS = 72.0           # hours a process that is done waits for the others, 24-168
MANIFEST_ADJUSTMENT = "holm"         # per-pair statuses adjusted for the number of pairs: 'holm' or 'bh'


# -----------------------------------------------------------------------------
# the steps of the research plan (each prints its header and the shapes it produced)


def step1_masks(images, prompts, models, run_dir, cfg):
    """SAM2 masks: M_neg = the removed object in I_0, M_pos = the added object in I_1 ([H, W] float32 {0, 1}).

    Point prompts go to SAM2 directly; a name-only object is found by SAM2's automatic proposals ranked by
    CLIP against its name (mask.segment_by_text). Returns ([M_neg [1, H, W], M_pos [1, H, W]], info per object).
    """
    import torch
    import mask
    from util import safe_name
    print("\n=== STEP 1: SAM2 masks ===")
    masks, infos = [], []
    for image, prompt, role in zip(images, prompts, ("remove", "add")):
        tag = f"M_{'neg' if role == 'remove' else 'pos'} ({role} '{prompt.name}' in {Path(image).name})"
        if prompt.by_text:
            # distractors: the pair's other object and the kept sources (a rocket is not the astronaut)
            others = [p.name for p in prompts if p is not prompt] + list(cfg["KEPT_SOURCES"])   # repeats dropped there
            model, preprocess = models.clip
            options = mask.TINY_PROPOSAL_OPTIONS if models.smoke else {}
            try:
                m, info = mask.segment_by_text(image, prompt.name, text=prompt.text, other_names=others,
                                               predictor=models.sam2, clip_model=model, preprocess=preprocess,
                                               min_score=cfg["TEXT_MIN_SCORE"], union=prompt.union,
                                               prompt_template=cfg["TEXT_PROMPT"], **options)
            except mask.NoMatchError as err:
                raise UserError(str(err)) from err
            print(f"  {tag}: found by name with CLIP prompt {prompt.text!r}: proposal(s) {info['chosen']} of "
                  f"{len(info['candidates'])}, P = {info['score']:.3f}")
        else:
            m = mask.get_mask(image, [p[0] for p in prompt.points], [p[1] for p in prompt.points], prompt.labels,
                              predictor=models.sam2)
            info = {"points": prompt.points, "labels": prompt.labels}
        print(f"  {tag}: {tuple(m.shape)}, {m.mean() * 100:.1f}% of pixels")
        if m.sum() == 0:
            raise UserError(f"SAM2 found nothing for '{prompt.name}' in {image}; check it with "
                            f"python verify_masks.py --image {image} --interactive")
        if run_dir is not None:
            path = run_file(run_dir, f"mask_{role}_{safe_name(prompt.name)}.png")
            title = f"{role} '{prompt.name}' ({Path(image).name})"
            if prompt.by_text:
                mask.save_proposals_figure(image, m, info, path=path, title=title)
            else:
                mask.save_mask_figure(image, m, path=path, points=prompt.points, labels=prompt.labels, title=title)
            print(f"  figure: {path}")
        masks.append(torch.from_numpy(m)[None])   # [1, H, W], the batch the mask functions take
        infos.append({k: v for k, v in info.items() if k != "segmentations"})   # run.json: scores, not pixels
    return masks, infos


def step2_clip_tokens(images, models):
    """All 257 CLIP tokens of I_0 and I_1 -> cls_0, patches_0, cls_1, patches_1."""
    from util import extract_full_clip_tokens
    print("\n=== STEP 2: CLIP tokens ===")
    model, preprocess = models.clip
    tokens = extract_full_clip_tokens(images, model=model, preprocess=preprocess)
    tok = dict(cls_0=tokens[0, 0], patches_0=tokens[0, 1:], cls_1=tokens[1, 0], patches_1=tokens[1, 1:])
    print(f"  tokens {tuple(tokens.shape)} -> " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tok.items()))
    return tok


def step3_patch_weights(M_neg, M_pos, threshold, names=("removed", "added")):
    """Masks on CLIP's 16x16 patch grid, aligned with CLIP's resize + centre crop: m_neg, m_pos [1, 256]."""
    from util import mask_to_patch_weights
    print("\n=== STEP 3: masks -> CLIP patch grid ===")
    m_neg = mask_to_patch_weights(M_neg, threshold=threshold)
    m_pos = mask_to_patch_weights(M_pos, threshold=threshold)
    for m, name in ((m_neg, names[0]), (m_pos, names[1])):
        if m.sum() == 0:
            raise UserError(f"the mask of '{name}' lies entirely outside the centre square that CLIP sees of its "
                            "image: no CLIP patch holds the object. Crop the image so the object is inside it")
    print(f"  m_neg {tuple(m_neg.shape)}: {int((m_neg > 0).sum())} patches; "
          f"m_pos {tuple(m_pos.shape)}: {int((m_pos > 0).sum())} patches (threshold {threshold})")
    return m_neg, m_pos


def step4_background(patches_1, m_neg, m_pos):
    """E_bg: mean of I_1's patches outside both masks, L2-normalised [768]."""
    from util import background_embedding, unit_norm_report
    print("\n=== STEP 4: background embedding ===")
    emb_bg = background_embedding(patches_1, m_neg[0], m_pos[0])
    n_bg = int((((1 - m_neg[0]) * (1 - m_pos[0])) > 0.5).sum())
    print(f"  {n_bg} background patches -> {unit_norm_report(emb_bg=emb_bg)}")
    return emb_bg


def step5_svd(tok, m_neg, m_pos, cfg):
    """emb_suppress (removed object, top-K singular values x SVD_ALPHA), emb_boost (added object, x SVD_BETA)."""
    from util import svd_manipulate_embeddings, unit_norm_report
    print("\n=== STEP 5: SVD manipulation ===")
    emb_suppress, info_suppress = svd_manipulate_embeddings(
        tok["cls_0"], tok["patches_0"], m_neg[0], k=cfg["SVD_K"], mode="suppress", alpha=cfg["SVD_ALPHA"],
        return_info=True)
    emb_boost, info_boost = svd_manipulate_embeddings(
        tok["cls_1"], tok["patches_1"], m_pos[0], k=cfg["SVD_K"], mode="boost", beta=cfg["SVD_BETA"],
        return_info=True)
    for name, info in (("suppress", info_suppress), ("boost", info_boost)):
        print(f"  {name}: [CLS; {info['n_patches']} patches] -> k={info['k_effective']} of rank {info['rank']} "
              f"x{info['scale']:g} (top-k energy {info['topk_energy']:.1%})" + ("  NO-OP" if info["no_op"] else ""))
    print("  " + unit_norm_report(emb_suppress=emb_suppress, emb_boost=emb_boost))
    return emb_suppress, emb_boost, {"suppress": info_suppress, "boost": info_boost}


def step6_mix(normal_clip, emb_boost, emb_suppress, emb_bg, cfg):
    """E_final = MIX_DIRECT*normal + MIX_BETA*boost + MIX_ALPHA*suppress + MIX_GAMMA*bg, L2-normalised [768]."""
    import torch.nn.functional as F
    from util import mix_embeddings, unit_norm_report
    print("\n=== STEP 6: mix ===")
    emb_final = mix_embeddings(normal_clip, emb_boost, emb_suppress, emb_bg, w_direct=cfg["MIX_DIRECT"],
                               w_boost=cfg["MIX_BETA"], w_suppress=cfg["MIX_ALPHA"], w_bg=cfg["MIX_GAMMA"])
    cos = float(F.cosine_similarity(emb_final, normal_clip, dim=0))
    print(f"  {unit_norm_report(emb_final=emb_final)}; cosine to plain CLIP of I_1: {cos:.4f}")
    return emb_final


def manipulated_embedding(tok, M_neg, M_pos, cfg, prompts, timer=None):
    """Steps 3-6 for one setting: E_final and what it is made of (m_neg, m_pos, emb_bg, emb_suppress, emb_boost,
    emb_final, and 'svd': what step 5 did). main_pipeline calls it once; a sweep once per setting."""
    timer = timer or Timer()
    with timer("step3_patch_weights"):
        m_neg, m_pos = step3_patch_weights(M_neg, M_pos, cfg["MASK_THRESHOLD"], (prompts[0].name, prompts[1].name))
    with timer("step4_background"):
        emb_bg = step4_background(tok["patches_1"], m_neg, m_pos)
    with timer("step5_svd"):
        emb_suppress, emb_boost, svd_info = step5_svd(tok, m_neg, m_pos, cfg)
    with timer("step6_mix"):
        emb_final = step6_mix(tok["cls_1"], emb_boost, emb_suppress, emb_bg, cfg)
    return dict(m_neg=m_neg, m_pos=m_pos, emb_bg=emb_bg, emb_suppress=emb_suppress, emb_boost=emb_boost,
                emb_final=emb_final, svd=svd_info)


def detect_sources(images, tok, models):
    """YOLO on I_0 and I_1 -> SSV2A remix slots [2, 64, 768], slot 0 = each image's CLS from step 2."""
    import torch
    from model.detect import image_remix_slots
    model, preprocess = models.clip
    # the CLS tokens are the plain CLIP embeddings SSV2A puts in slot 0: no second CLIP pass over the images
    global_embs = torch.stack([tok["cls_0"], tok["cls_1"]])
    slots, detections = image_remix_slots(images, yolo=models.yolo, clip_model=model, preprocess=preprocess,
                                          detector_cfg=models.ssv2a.config["detector"], global_embs=global_embs,
                                          slot=models.ssv2a.slot, device=models.device)
    return slots, detections


def step7_audio(images, tok, emb_finals, models, cfg, sources=None, seeds=None, progress=None):
    """Hybrid SSV2A: baselines (I_0, I_1 as SSV2A hears them) and I_1's slots with slot 0 = E_final, per seed.

    emb_finals: [n, 768] manipulated embeddings (one per setting). seeds: the seeds to draw every row with
    (default eval_seeds(cfg)). Returns (audio numpy [S, 2 + n, samples], claps [S, 2 + n, 512],
    slots [2 + n, 64, 768], detections). Rows 0 and 1 are the baselines; a row of seed s draws its cycle-mix
    and AudioLDM noise from s alone, so the rows of one seed differ only by their slots. progress: main_pipeline's
    callback, told ('audio', k, n) before each batch (the batch starts with seed k of n).
    With CIAP_CHECKPOINT (the CIAP back end) the rows are CLIP(I_0), CLIP(I_1) and each E_final, [2 + n, 768] in
    place of the slots, each mapped by the trained head into CLAP's space and drawn as above; no YOLO, no
    remixer, so `sources` is ignored and the detections are empty.
    """
    import numpy as np
    import torch
    from settings import audio_steps
    seeds = eval_seeds(cfg) if seeds is None else list(seeds)
    steps = audio_steps(cfg)
    if cfg["CIAP_CHECKPOINT"]:
        from model.ciap import clips_to_audio, describe
        print("\n=== STEP 7: audio via CIAP (CLIP -> trained head -> CLAP space -> AudioLDM; no YOLO, no remixer) ===")
        # the CLS tokens are CLIP's image embeddings, what the head was trained on (util.clip_image_embeddings)
        slots = torch.cat([torch.stack([tok["cls_0"], tok["cls_1"]]), emb_finals.to(tok["cls_0"])])
        detections = [[], []]
        print(f"  {describe(models.ciap.info)}\n  rows {tuple(slots.shape)} = CLIP(I_0), CLIP(I_1), "
              f"{len(emb_finals)} E_final; YOLO detection is not used by this back end")

        def draw(rows, row_seeds):
            return clips_to_audio(rows, models.ciap, models.aldm, duration=cfg["DURATION"], steps=steps,
                                  guidance=cfg["GUIDANCE"], seed=row_seeds, sampler=cfg["SAMPLER"])
    else:
        from model.pipeline import slots_to_audio
        print("\n=== STEP 7: audio via hybrid SSV2A (YOLO -> slots -> cycle_mix -> AudioLDM) ===")
        slots_base, detections = sources if sources is not None else detect_sources(images, tok, models)
        slots_manip = slots_base[1:2].repeat(len(emb_finals), 1, 1)
        slots_manip[:, 0] = emb_finals.to(slots_manip)   # plan step 8.2: our embedding is the global context
        slots = torch.cat([slots_base, slots_manip])
        print(f"  slots {tuple(slots.shape)}: rows = baseline_original, baseline_edited, {len(emb_finals)} "
              f"manipulated; object slots filled per image: {[min(len(d), slots.shape[1] - 1) for d in detections]} of "
              f"{slots.shape[1] - 1}" + ("; slot 0 pinned" if cfg["PIN_GLOBAL"] else ""))

        def draw(rows, row_seeds):
            return slots_to_audio(rows, models.ssv2a, models.aldm, its=cfg["CYCLE_ITS"], samples=cfg["CYCLE_SAMPLES"],
                                  var_samples=cfg["VAR_SAMPLES"], duration=cfg["DURATION"], steps=steps,
                                  guidance=cfg["GUIDANCE"], seed=row_seeds,
                                  pin_global=cfg["PIN_GLOBAL"], sampler=cfg["SAMPLER"])
    # a row whose slots equal an earlier row's bit for bit (the method switched off: E_final is the plain CLIP
    # of I_1) is drawn once and copied, so the two audios are identical rather than apart by float arithmetic
    same_as = [next(j for j in range(r + 1) if torch.equal(slots[j], slots[r])) for r in range(len(slots))]
    drawn = sorted(set(same_as))
    rows = [(s, r) for s in seeds for r in drawn]
    print(f"  {len(seeds)} seed(s) {seeds}; {cfg['SAMPLER']} x {steps} steps")
    audio, claps = [], []
    # whole seeds per AudioLDM call: the rows of one seed share a batch, so the manipulated and baseline rows
    # they are compared with go through the same batched arithmetic
    batch = len(drawn) * max(1, int(cfg["AUDIO_BATCH"]) // len(drawn))
    if len(drawn) > cfg["AUDIO_BATCH"]:
        print(f"  note: a seed's {len(drawn)} rows go in one AudioLDM call, more than AUDIO_BATCH={cfg['AUDIO_BATCH']}")
    if len(drawn) < len(slots):
        print(f"  rows {[r for r in range(len(slots)) if same_as[r] != r]} have the same slots as rows "
              f"{[same_as[r] for r in range(len(slots)) if same_as[r] != r]}: drawn once, copied")
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        if progress is not None:
            progress("audio", seeds.index(chunk[0][0]) + 1, len(seeds))
        a, c = draw(slots[[r for _, r in chunk]], [s for s, _ in chunk])
        audio.append(a)
        claps.append(c)
        if len(rows) > batch:
            print(f"  audio {min(start + batch, len(rows))}/{len(rows)}")
    column = [drawn.index(j) for j in same_as]
    audio = np.concatenate(audio).reshape(len(seeds), len(drawn), -1)[:, column]
    claps = torch.cat(claps).reshape(len(seeds), len(drawn), -1)[:, column]
    print(f"  CLAP-space embeddings {tuple(claps.shape)} -> audio {audio.shape} at {models.sample_rate} Hz")
    return audio, claps, slots, detections


# -----------------------------------------------------------------------------
# step 8 (optional): edit a recording A_0 the user already has (DeltaV2A's task, training-free; model/edit.py)


def step8_edit(cfg, models, run_dir, claps, seeds, prompts, strength=None, manip_row=2, suffix=""):
    """A_0 inverted under c_src (baseline_original's remix CLAP), then regenerated three ways from the same noise:
    under c_src ('reconstructed': A_0's own round trip, what the edits are judged against), under c_tgt (the
    manipulated row's: 'edited') and under baseline_edited's ('edited_plain': the edit by plain I_1), per seed.
    Writes audio_input.wav, reconstructed*.wav, edited*.wav and edited_plain*.wav (wav_name's seed naming,
    `suffix` before it in sweeps), a spectrogram figure and edit_results*.json; returns the dict written there
    (plus the audio under '_audio'). Edit success and preservation are judged against `reconstructed` first and
    against the raw A_0 second (that comparison also holds the VAE, vocoder and inversion round trip)."""
    import numpy as np
    import evaluation
    import scorers
    import verdict
    from model import edit
    from model.aldm import save_wav
    from settings import edit_guidance
    strength = cfg["EDIT_STRENGTH"] if strength is None else strength
    sr, steps = models.sample_rate, int(cfg["DDIM_STEPS"])
    g_src, g_tgt = edit_guidance(cfg)
    print(f"\n=== STEP 8: edit {cfg['AUDIO_INPUT']} ({cfg['EDIT_METHOD']}, strength {strength:g} of {steps} DDIM "
          f"steps, guidance {g_src:g} under c_src, {g_tgt:g} under c_tgt) ===")
    wave, _ = read_audio_input(cfg["AUDIO_INPUT"], cfg["DURATION"], sr)
    n = int(round(cfg["DURATION"] * sr))
    a0 = edit.audioldm_waveform(wave, n).astype(np.float32)   # normalised and padded as AudioLDM's loader does
    if not (run_dir / "audio_input.wav").exists():
        save_wav(run_file(run_dir, "audio_input.wav"), a0, sr)
    batch = max(1, int(cfg["AUDIO_BATCH"]) // 3)   # three rows regenerate from each inversion
    out = []
    for start in range(0, len(seeds), batch):
        rows = slice(start, start + batch)
        out.append(edit.edit_audio(models.aldm, np.repeat(a0[None], len(seeds[rows]), 0), claps[rows, 0],
                                   [claps[rows, manip_row], claps[rows, 1]], cfg["DURATION"], strength, steps,
                                   g_src, g_tgt, seeds[rows], cfg["EDIT_METHOD"]))
    out = np.concatenate(out, axis=1)   # [3, S, n]: reconstructed, edited, edited_plain
    for s, seed in enumerate(seeds):
        for k, name in enumerate(EDIT_AUDIO_NAMES[1:]):
            save_wav(run_file(run_dir, wav_name(name + suffix, seed, seeds[0])), out[k, s], sr)
    audio = np.concatenate([np.repeat(a0[None, None], len(seeds), 0), out.transpose(1, 0, 2)], axis=1)  # [S, 4, n]
    evaluation.plot_spectrograms({"A_0 (audio_input)": a0, **{name: out[k, 0] for k, name in
                                                               enumerate(EDIT_AUDIO_NAMES[1:])}},
                                 sr, run_file(run_dir, f"edit_spectrograms{suffix}.png"))
    roles = roles_of(cfg, prompts)
    scores = scorers.score_run(audio, source_names(cfg, prompts), models.ast, models.clap, cfg["AUDIO_CLASSES"],
                               cfg["EVAL_LABELS"], sr, class_min_similarity=cfg["EVAL_CLASS_MIN_SIMILARITY"])
    row = {name: r for r, name in enumerate(EDIT_AUDIO_NAMES)}
    floors = {k: v for k, v in verdict.floors_of(cfg).items() if k != "kl_min_effect"}   # no KL check here

    def judged_against(base):
        success = {n: verdict.compare_rows(scores, roles, row[base], row[n], names=(
                       "A_0" if base == "audio_input" else base, n), **floors) for n in EDIT_TARGETS}
        kept = evaluation.preservation(audio, sr, clap_embs=scores["clap_embs"], base=row[base])
        return success, {EDIT_AUDIO_NAMES[r]: v for r, v in kept.items() if EDIT_AUDIO_NAMES[r] != "audio_input"}

    success, kept = judged_against("reconstructed")
    raw_success, raw_kept = judged_against("audio_input")
    result = {"audio_input": str(cfg["AUDIO_INPUT"]), "method": cfg["EDIT_METHOD"], "strength": strength,
              "steps": steps, "guidance": {"source": g_src, "target": g_tgt}, "seeds": list(seeds),
              "rows": list(EDIT_AUDIO_NAMES), "judged_against": "reconstructed",
              "conditioning": {"c_src": "baseline_original's remix CLAP",
                               "reconstructed": "c_src with the source guidance and the same noise",
                               "edited": "c_tgt = the manipulated row's", "edited_plain": "baseline_edited's"},
              "edit_success": success, "preservation": kept,
              "target": {n: verdict.edit_target(c) for n, c in success.items()},
              "raw": {"judged_against": "audio_input", "edit_success": raw_success, "preservation": raw_kept,
                      "target": {n: verdict.edit_target(c) for n, c in raw_success.items()}}}
    write_json(run_file(run_dir, f"edit_results{suffix}.json"), result)
    print(evaluation.format_edit_preservation(result))
    for name in EDIT_TARGETS:
        for base, comparison in (("reconstructed", success[name]), ("A_0", raw_success[name])):
            print(f"  {name} vs {base}: " + ", ".join(f"{check} {c['status']} ({c['mean']:+.4f})" for check, c in
                                                      comparison["classifier"]["checks"].items()))
    print(f"  figure: {run_dir / f'edit_spectrograms{suffix}.png'}; results: {run_dir / f'edit_results{suffix}.json'}")
    return {**result, "_audio": audio}


def edit_summary(result):
    """The fields of an edit result that run.json keeps (no audio, no per-seed arrays)."""
    def means(kept):
        return {row: {m: v["mean"] for m, v in figures.items()} for row, figures in kept.items()}
    return {k: result[k] for k in ("audio_input", "method", "strength", "steps", "guidance", "judged_against",
                                   "target")} | {
        "preservation_means": means(result["preservation"]),
        "raw": {"target": result["raw"]["target"], "preservation_means": means(result["raw"]["preservation"])}}


# -----------------------------------------------------------------------------
# the pipeline


def main_pipeline(cfg, models, run_dir, images, prompts, record, progress=None):
    """Steps 1-7 of the plan, then the evaluation; writes everything into run_dir and fields into record.

    progress: optional callback(step, k=None, n=None), told 'masks', 'tokens', 'SVD', ('audio', seed k, of n)
    and 'evaluation' (the wavs are written by then) as the run reaches them; it may raise RunCancelled.
    """
    import torch
    import evaluation
    import verdict
    from model.aldm import save_wav
    from util import set_seed
    step = progress or (lambda name, k=None, n=None: None)
    timer, caught = Timer(), record.data.setdefault("warnings", [])
    seeds = eval_seeds(cfg)
    set_seed(cfg["SEED"])
    with recorded_warnings(caught):
        step("masks")
        with timer("step1_masks"):
            (M_neg, M_pos), mask_info = step1_masks(images, prompts, models, run_dir, cfg)
        record.update(masks=dict(zip(("removed", "added"), mask_info)), timings_s=timer.seconds)
        step("tokens")
        with timer("step2_clip_tokens"):
            tok = step2_clip_tokens(images, models)
        step("SVD")
        emb = manipulated_embedding(tok, M_neg, M_pos, cfg, prompts, timer)
        record.update(svd=emb["svd"], timings_s=timer.seconds)
        with timer("step7_audio"):
            audio, claps, slots, detections = step7_audio(images, tok, emb["emb_final"][None], models, cfg,
                                                          seeds=seeds, progress=progress)

        sr = models.sample_rate
        wavs = []
        for s, seed in enumerate(seeds):
            for r, name in enumerate(AUDIO_NAMES):
                wavs.append(save_wav(run_file(run_dir, wav_name(name, seed, seeds[0])), audio[s, r], sr).name)
        reach = evaluation.e_final_reach(claps)
        save_tensors({**tok, "M_neg": M_neg.bool(), "M_pos": M_pos.bool(),
                      **{k: emb[k] for k in ("m_neg", "m_pos", "emb_bg", "emb_suppress", "emb_boost", "emb_final")},
                      "slots": slots, "claps": claps, "seeds": torch.tensor(seeds),
                      "audio": torch.from_numpy(audio),   # float [seeds, rows, samples]: the wavs before 16-bit
                      "audio_rows": list(AUDIO_NAMES),
                      "boxes": [torch.tensor([d.box for d in dets], dtype=torch.float64).reshape(-1, 4)
                                for dets in detections]},
                     run_dir / "embeddings.pt")
        record.update(detections=detection_record(detections), audio_seconds=cfg["DURATION"], sample_rate=sr,
                      seeds=seeds, wavs=wavs, e_final_reach=reach, timings_s=timer.seconds)
        print(f"\n  E_final's reach (CLAP-space conditioning, cosine distance, mean over seeds): to baseline_edited "
              f"{reach['mean_to_baseline_edited']:.4f}, to baseline_original {reach['mean_to_baseline_original']:.4f}")

        step("evaluation")
        print(f"\n=== Evaluation: AudioSet classifier and CLAP over {len(seeds)} seed(s) ===")
        with timer("evaluation"):
            results = evaluate(audio, seeds, cfg, prompts, models, run_dir, extra={"e_final_reach": reach})
        if cfg["AUDIO_INPUT"]:
            with timer("step8_edit"):
                edit_result = step8_edit(cfg, models, run_dir, claps, seeds, prompts)
            record.update(edit=edit_summary(edit_result), timings_s=timer.seconds)
    record.update(timings_s=timer.seconds, verdict=verdict.headline_record(results))
    return results


def evaluate(audio, seeds, cfg, prompts, models, run_dir, extra=None):
    """Plan step 9 on the three audios of every seed: scores, the verdict, figures, results.json."""
    import evaluation
    import verdict
    return evaluation.evaluate_run(audio, seeds, roles_of(cfg, prompts), run_dir, models.ast, models.clap,
                                   class_map=cfg["AUDIO_CLASSES"], clap_labels=cfg["EVAL_LABELS"],
                                   sample_rate=models.sample_rate, extra=extra,
                                   class_min_similarity=cfg["EVAL_CLASS_MIN_SIMILARITY"], **verdict.floors_of(cfg))

# -----------------------------------------------------------------------------


def main(argv=None):
    """The command line (cli.py): check everything, load the models, then run, sweep or run a manifest."""
    import cli
    return cli.main(sys.argv[1:] if argv is None else argv, plan=sys.modules[__name__])


if __name__ == "__main__":
    sys.exit(main())
