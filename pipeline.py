"""
The whole InstructGPT pipeline on the embedded synthetic world, one stage after another:

    world -> base models (two sizes; the first trains the tokenizer) -> SFT -> comparisons -> reward model
          -> PPO, PPO-ptx (and PPO at beta = 0) -> evaluation report
    and beside PPO, from SFT and the same comparisons: DPO (no reward model) -> the same report

    python pipeline.py               # the default run (~12 min on an idle 2-core CPU)
    python pipeline.py --quick       # the same stages, tiny settings (under a minute on 2 cores): smoke test, first contact
    python pipeline.py --redo=ppo    # rerun one stage (and everything after it)
    python pipeline.py --out=runs/a  # another output folder
    python pipeline.py --seed=1      # another world AND other training seeds -> out/seed1/
    python pipeline.py --world=facts # World v1, the contrast: a world of facts RL does not teach -> out/facts/
    python pipeline.py --help        # every option (PipelineConfig), with its default

GPT-2 and your own data (or public data, converted by `python -m public_data.convert`):

    python pipeline.py --preset=gpt2 --init=path/to/gpt2_dir --sft_data=alpaca_sft.jsonl \
        --comparisons=hh_rm.jsonl [--ptx_data=text.txt] [--heldout=text.txt] [--nproc=N] [--out=out/gpt2]

    split (public_data.split: RM train/val, PPO and evaluation prompts) -> SFT from the GPT-2
    directory -> reward model -> DPO, PPO (and PPO-ptx with --ptx_data) -> evaluation by the RM

presets/gpt2.json holds that recipe's settings; --quick adds presets/gpt2_quick.json (tiny,
for a test or a CPU). --nproc=N runs SFT, RM, DPO and PPO under `torchrun --nproc_per_node=N`.

Each stage is one of the flat scripts, run as a subprocess with the arguments below, so
anything the pipeline does you can do by hand. A stage that finished is not redone (its
stamp is in <out>/.done/); an interrupted stage is resumed (--resume=True). The quick
preset is data: presets/quick.json holds its overrides.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from common import die, parse_config

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class PipelineConfig:
    quick: bool = False  # the same stages with tiny settings (presets/quick.json): a smoke test, a first contact
    seed: int = 0  # picks the world (its KB, prompts, labelers' draws) and, as 1337 + seed, every training seed
    out: str = ""  # output folder; "" = out/ (out/gpt2/), then /facts, /quick, /seedN as the options say
    redo: str = ""  # rerun this stage and every stage after it, from scratch ("" = none)
    world: str = "v2"  # "v2" (the default) or "facts" (World v1, the contrast: a world of facts RL does not teach)
    preset: str = "world"  # "world" (the synthetic world) or "gpt2" (a GPT-2 directory and your own data)
    init: str = ""  # --preset=gpt2: the Hugging Face GPT-2 directory SFT starts from (required)
    sft_data: str = ""  # --preset=gpt2: demonstrations {prompt, response} for SFT (required)
    comparisons: str = ""  # --preset=gpt2: ranked comparisons, split into RM/DPO data and PPO/eval prompts (required)
    ptx_data: str = ""  # --preset=gpt2: pretraining text for SFT's ptx term and PPO-ptx ("" = no PPO-ptx)
    heldout: str = ""  # --preset=gpt2: held-out pretraining text, for the alignment tax ("" = none)
    nproc: int = 1  # --preset=gpt2: run SFT, RM, DPO and PPO under torchrun --nproc_per_node=N


GPT2_FIELDS = ("init", "sft_data", "comparisons", "ptx_data", "heldout", "nproc")  # --preset=gpt2's own options


def stages(out, world, seed=0, world_name="v2"):
    """(name, command, resumable) in order. Paths are relative to the repo root. `seed` picks
    the world (its KB, prompts, labelers' draws) and, as 1337 + seed, every training seed;
    world_name is "v2" (the default) or "facts" (World v1, the contrast)."""
    py = [sys.executable]
    # World v2 has half of v1's facts in half the text: 600 pretraining steps see each fact as
    # often as v1's 900 did (and leave the time to the later stages)
    steps = ["--max_iters=600"] if world_name == "v2" else []
    plan = [
        ("world", py + ["-m", "data.world", "build", f"--out={world}", f"--seed={seed}", f"--world={world_name}"],
         False),
        # the base model trains the tokenizer too (-> out/tokenizer.tiktoken); the large one reuses it
        ("base", py + ["pretrain.py", "--size=small", "--vocab_size=1024", f"--out={out}/base.pt",
                       f"--data={world}/corpus_train.txt", f"--heldout={world}/corpus_heldout.txt",
                       f"--probes={world}/probes.jsonl"] + steps, True),
        ("base_large", py + ["pretrain.py", "--size=large", f"--tokenizer={out}/tokenizer.tiktoken",
                             f"--out={out}/base_large.pt", f"--data={world}/corpus_train.txt",
                             f"--heldout={world}/corpus_heldout.txt", f"--probes={world}/probes.jsonl"] + steps, True),
        ("sft", py + ["sft.py", f"--init={out}/base.pt", f"--data={world}/sft.jsonl", f"--out={out}/sft.pt",
                      f"--heldout={world}/corpus_heldout.txt", f"--ptx_data={world}/corpus_train.txt"], True),
        ("collect", py + ["collect.py", f"--policy={out}/sft.pt", f"--base={out}/base.pt",
                          f"--prompts={world}/rm_prompts.jsonl", f"--out_dir={out}"], False),
        ("reward", py + ["reward.py", f"--init={out}/sft.pt", f"--data={out}/comparisons.jsonl",
                         f"--val={out}/comparisons_val.jsonl", f"--val_heldout={out}/comparisons_val_heldout.jsonl",
                         f"--demos={world}/sft.jsonl", f"--out={out}/rm.pt"], True),
        ("dpo", py + ["dpo.py", f"--policy={out}/sft.pt", f"--data={out}/comparisons.jsonl",
                      f"--val={out}/comparisons_val.jsonl", f"--out={out}/dpo.pt"], True),
        ("ppo", py + ["ppo.py", f"--policy={out}/sft.pt", f"--rm={out}/rm.pt", f"--prompts={world}/ppo_prompts.jsonl",
                      f"--out={out}/ppo.pt"], True),
        ("ppo_ptx", py + ["ppo.py", f"--policy={out}/sft.pt", f"--rm={out}/rm.pt",
                          f"--prompts={world}/ppo_prompts.jsonl", f"--ptx_data={world}/corpus_train.txt",
                          "--ptx_coef=1.0", f"--out={out}/ppo_ptx.pt"], True),
        ("ppo_beta0", py + ["ppo.py", f"--policy={out}/sft.pt", f"--rm={out}/rm.pt",
                            f"--prompts={world}/ppo_prompts.jsonl", "--kl_coef=0.0", "--lr=6e-4", "--iters=20", f"--out={out}/ppo_beta0.pt"],
         True),
        # ORACLE diagnostic: PPO-ptx with the gold judge as its reward (ppo.py deviation 6). It shows
        # what RL can reach on this world with a perfect reward; no other stage reads it.
        ("ppo_oracle", py + ["ppo.py", f"--policy={out}/sft.pt", f"--rm={out}/rm.pt", "--reward=gold",
                             f"--prompts={world}/ppo_prompts.jsonl", f"--ptx_data={world}/corpus_train.txt",
                             "--ptx_coef=1.0", f"--out={out}/ppo_oracle.pt"], True),
        ("evaluate", py + ["evaluate.py",
                           f"--models=base_large={out}/base_large.pt,base={out}/base.pt,prompted={out}/base.pt,"
                           f"sft={out}/sft.pt,sft_greedy={out}/sft.pt@0,ppo={out}/ppo.pt,ppo_ptx={out}/ppo_ptx.pt,"
                           f"dpo={out}/dpo.pt,ppo_oracle={out}/ppo_oracle.pt",
                           f"--prompts={world}/eval_prompts.jsonl", f"--heldout_corpus={world}/corpus_heldout.txt",
                           f"--probes={world}/probes.jsonl", f"--fewshot={world}/fewshot.txt",
                           f"--ppo_logs={out}/ppo_log.jsonl,{out}/ppo_ptx_log.jsonl,{out}/ppo_beta0_log.jsonl,"
                           f"{out}/ppo_oracle_log.jsonl",
                           f"--rm={out}/rm.pt",
                           f"--out_dir={out}"], False),
    ]
    # every stage but the world takes --seed
    return [(n, cmd + ([f"--seed={1337 + seed}"] if n != "world" else []), r) for n, cmd, r in plan]


def gpt2_stages(out, cfg):
    """The pipeline on a Hugging Face GPT-2 directory and your own files (a checked PipelineConfig:
    init, sft_data, comparisons, ptx_data, heldout, nproc, seed). No world, no simulated labelers:
    the comparisons are the labels, and the trained reward model is the judge of the evaluation."""
    py, seed = [sys.executable], cfg.seed
    train = py + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}"]
                  if cfg.nproc > 1 else [])
    ptx, held = cfg.ptx_data, cfg.heldout
    plan = [
        ("split", py + ["-m", "public_data.split", cfg.comparisons, out, f"--seed={seed}"], False),
        ("sft", train + ["sft.py", f"--init={cfg.init}", f"--data={cfg.sft_data}", f"--out={out}/sft.pt",
                         f"--heldout={held}", f"--ptx_data={ptx}", f"--seed={1337 + seed}"], True),
        ("reward", train + ["reward.py", f"--init={out}/sft.pt", f"--data={out}/comparisons_train.jsonl",
                            f"--val={out}/comparisons_val.jsonl", "--val_heldout=", f"--demos={cfg.sft_data}",
                            f"--out={out}/rm.pt", f"--seed={1337 + seed}"], True),
        ("dpo", train + ["dpo.py", f"--policy={out}/sft.pt", f"--data={out}/comparisons_train.jsonl",
                         f"--val={out}/comparisons_val.jsonl", f"--out={out}/dpo.pt", f"--seed={1337 + seed}"], True),
        ("ppo", train + ["ppo.py", f"--policy={out}/sft.pt", f"--rm={out}/rm.pt", f"--prompts={out}/ppo_prompts.jsonl",
                         "--ptx_data=", f"--out={out}/ppo.pt", f"--seed={1337 + seed}"], True),
    ]
    models = f"base={cfg.init},sft={out}/sft.pt,ppo={out}/ppo.pt"
    logs = f"{out}/ppo_log.jsonl"
    if ptx:
        plan.append(("ppo_ptx", train + ["ppo.py", f"--policy={out}/sft.pt", f"--rm={out}/rm.pt",
                                         f"--prompts={out}/ppo_prompts.jsonl", f"--ptx_data={ptx}", "--ptx_coef=1.0",
                                         f"--out={out}/ppo_ptx.pt", f"--seed={1337 + seed}"], True))
        models += f",ppo_ptx={out}/ppo_ptx.pt"
        logs += f",{out}/ppo_ptx_log.jsonl"
    models += f",dpo={out}/dpo.pt"
    plan.append(("evaluate", py + ["evaluate.py", f"--models={models}", f"--prompts={out}/eval_prompts.jsonl",
                                   f"--rm={out}/rm.pt", "--probes=", "--fewshot=", f"--heldout_corpus={held}",
                                   f"--ppo_logs={logs}",
                                   f"--out_dir={out}", f"--seed={1337 + seed}"], False))
    return plan


def check(cfg):
    """Stop with a one-line error (exit 2) on a value no stage could use; make --preset=gpt2's
    paths absolute (the stages run in the repo root, you may not)."""
    if cfg.seed < 0:
        die(f"--seed={cfg.seed}: expected a non-negative integer", 2)
    if cfg.world not in ("v2", "facts"):
        die(f"--world={cfg.world}: expected 'v2' (the default) or 'facts' (World v1, the contrast)", 2)
    if cfg.preset not in ("world", "gpt2"):
        die(f"--preset={cfg.preset}: expected 'world' (the default: the synthetic world) or 'gpt2'", 2)
    if cfg.preset == "world":
        given = [k for k in GPT2_FIELDS if getattr(cfg, k) != getattr(PipelineConfig, k)]
        if given:
            die(f"--{given[0]} is an option of --preset=gpt2 (the world's run takes --quick, --seed=N, --out=DIR, "
                "--redo=STAGE, --world=v2|facts)", 2)
        return
    missing = [k for k in ("init", "sft_data", "comparisons") if not getattr(cfg, k)]
    if missing:
        die("--preset=gpt2 needs " + ", ".join(f"--{k}=" for k in missing) + " (a GPT-2 directory, "
            "demonstrations and comparisons: README, 'GPT-2 and your own data')", 2)
    for k in ("init", "sft_data", "comparisons", "ptx_data", "heldout"):
        path = getattr(cfg, k)
        if path and not os.path.exists(path):
            die(f"--{k}={path}: no such file or directory", 2)
        setattr(cfg, k, os.path.abspath(path) if path else "")
    if cfg.nproc < 1:
        die(f"--nproc={cfg.nproc}: expected a positive integer", 2)


def preset_overrides(names):
    """{stage: [--key=value, ...]} from presets/<name>.json, one after the other (later ones add)."""
    overrides = {}
    for name in names:
        with open(os.path.join(HERE, "presets", name + ".json")) as f:
            for stage, args in json.load(f).items():
                if not stage.startswith("_"):  # "_note": a comment
                    overrides[stage] = overrides.get(stage, []) + args
    return overrides


def main(argv):
    cfg = parse_config(PipelineConfig(), argv)  # --help lists the options
    check(cfg)
    gpt2 = cfg.preset == "gpt2"
    out = cfg.out or (("out/gpt2" if gpt2 else "out") + ("/facts" if cfg.world == "facts" else "")
                      + ("/quick" if cfg.quick else "") + (f"/seed{cfg.seed}" if cfg.seed else ""))
    if gpt2:
        world, plan = None, gpt2_stages(out, cfg)
    else:
        world = os.path.join(out, "world") if cfg.quick or cfg.seed or cfg.world != "v2" else "data/world"
        plan = stages(out, world, cfg.seed, cfg.world)
    names = [n for n, _, _ in plan]
    if cfg.redo and cfg.redo not in names:
        die(f"--redo={cfg.redo}: no such stage; stages are {', '.join(names)}", 2)
    overrides = preset_overrides((["gpt2"] if gpt2 else []) + (["gpt2_quick" if gpt2 else "quick"] if cfg.quick else []))
    done_dir = os.path.join(out, ".done")
    os.makedirs(done_dir, exist_ok=True)
    fresh = set(names[names.index(cfg.redo):]) if cfg.redo else set()
    for n in fresh:  # redo this stage and every stage after it, from scratch (not resumed)
        if os.path.exists(os.path.join(done_dir, n)):
            os.remove(os.path.join(done_dir, n))

    print(f"pipeline: {'quick' if cfg.quick else 'default'} {cfg.preset} run -> {out}/"
          + (f" (world in {world}/)" if world else ""))
    times, t_all = [], time.time()
    for name, cmd, resumable in plan:
        stamp = os.path.join(done_dir, name)
        if os.path.exists(stamp):
            with open(stamp) as f:
                times.append((name, float(f.read() or 0), "done earlier"))
            print(f"=== {name}: done earlier, skipping (--redo={name} to rerun)")
            continue
        cmd = cmd + overrides.get(name, []) + (["--resume=True"] if resumable and name not in fresh else [])
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd, cwd=HERE)
        dt = time.time() - t0
        if rc != 0:
            die(f"pipeline: stage '{name}' failed (exit {rc}) after {dt:.0f}s; fix it and rerun -- finished "
                "stages are kept and this one resumes", rc)
        with open(stamp, "w") as f:
            f.write(f"{dt:.1f}")
        times.append((name, dt, "ran"))
        print(f"=== {name}: {dt:.0f}s", flush=True)

    print("\nstage        seconds")
    for name, dt, how in times:
        print(f"{name:<12} {dt:7.0f}  {how}")
    print(f"{'total':<12} {sum(t for _, t, _ in times):7.0f}  (this invocation: {time.time() - t_all:.0f}s)")
    print(f"\nreport: {out}/report.md")


if __name__ == "__main__":
    main(sys.argv[1:])
