"""
Time one PPO iteration of ours (ppo.rollout + ppo.advantages + ppo.ppo_update) against one of TRL's PPOTrainer.
Needs `pip install -r bench/requirements-bench.txt` (trl==1.12.0): a bench-only extra (it brings accelerate
and datasets, so the tests do not install it), never
imported by the pipeline. Offline: every model and the tokenizer are built here, in memory.

    python bench/bench_trl.py                                    # 4 layers, width 256, this machine
    OMP_NUM_THREADS=1 python bench/bench_trl.py --repeats=2 --n_layer=2 --n_head=2 --n_embd=128 --batch_size=8 \
        --minibatch_size=4 --prompt_len=16 --response_len=16     # smoke run, seconds
    python bench/bench_trl.py --device=cuda --n_layer=12 --n_head=12 --n_embd=768 --batch_size=64 --minibatch_size=16

Measured: the wall time of one iteration -- sample response_len tokens for batch_size prompts
of prompt_len tokens, RM scores, reference log-probs, values, GAE, whitening, then ppo_epochs
passes of optimizer steps on minibatch_size rollouts (policy and value model). Ours: the
three calls of one iteration of ppo.main. TRL: trainer.train() with total_episodes = batch_size (one iteration), from
on_train_begin to on_train_end (a callback): the whole loop body, none of the set-up. The two
alternate, `repeats` times each after one warm-up each. Printed: episodes/s median [min, max],
ours/TRL as the median [min, max] of the per-repeat ratios.

The same on both sides: random GPT-2-shaped weights made once by transformers (GPT2LMHeadModel:
policy, reference; GPT2ForSequenceClassification, num_labels=1: RM, value) and loaded into ours
(GPT.from_hf_dir, the RM head copied; max |delta| printed); the same prompts; temperature 1, no
top-k/top-p; no EOS (TRL: stop_token=None, its pad and EOS ids lie outside the vocabulary, never
sampled; ours: eot_id=-1): every response is exactly response_len tokens, so TRL pads nothing;
kl_coef 0.05 (k1), gamma 1, lambda 0.95, clips 0.2, vf_coef 0.1, constant lr, no EOS penalty;
one optimizer step per minibatch (both counted and printed). Precision: fp32 on the CPU; on
CUDA bf16 autocast (common.autocast) inside ours, around trainer.train().

What differs inside an iteration (each library as it is):
1. Old log-probs: TRL takes them from generate's output scores (it keeps the (B, R, V) logits);
   ours from the sampler's own log-softmax (B, R), as ppo.py does. The first "ours" row times
   that; the second one an iteration with one more policy forward, what recomputing the old
   log-probs every iteration would cost (an exercise in docs/exercises.md).
2. Sampling: TRL calls transformers' generate (DynamicCache, logits processors); ours a loop
   over a preallocated KV cache. TRL rebuilds attention masks and positions from
   `!= pad_token_id` in every forward; ours carries explicit masks.
3. TRL runs policy and value as one module (PolicyAndValueWrapper, output_hidden_states=True);
   ours calls them one after the other. Same work.
4. Entropy: ours from the training forward's log-softmax (logged only, no backward through
   it); TRL after each step, no_grad.
   TRL also fills stats tensors, logs them, gc.collect()s twice per iteration and empties the
   CUDA cache after the rollout and every minibatch. On CUDA under bf16, TRL's log-softmax
   gather loops over rows (selective_log_softmax); ours does one fp32 log_softmax.
5. Ours clips the gradient norm (1.0) before each step; TRL's PPO loop does not clip.
6. Whitening: ours the biased variance, TRL the unbiased one. TRL steps through accelerate's
   accumulate(): with this one-batch dataset its end_of_dataloader flag makes every minibatch
   a real step (with gradient_accumulation_steps > 1 and a larger dataset, one step per epoch),
   and the loss is divided by gradient_accumulation_steps.
7. Optimizer: ours as ppo.py builds it (torch AdamW, foreach, betas 0.9/0.95, eps 1e-5); TRL
   the Trainer's default fused AdamW (0.9/0.999, eps 1e-8); no weight decay in either.
   Minibatch order: ours torch.randperm, TRL np.random.permutation.
"""

import contextlib
import copy
import io
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

# run as `python bench/bench_trl.py` from the repository root (or from anywhere): the modules it measures
# (model.py, common.py, data/, ...) live one folder up, so put that folder first on the path
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
          "HF_HUB_DISABLE_PROGRESS_BARS", "TRL_EXPERIMENTAL_SILENCE"):
    os.environ[k] = "1"  # nothing is downloaded; set before transformers is imported
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renamed TrainingArguments

import torch

from bench.bench import fmt
from common import autocast, get_device, parse_config, print_config, precision_name
from model import GPT, ScalarModel

LR = 1e-6


@dataclass
class BenchTRLConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    vocab_size: int = 50260  # GPT-2's 50257 + our 3 special tokens (tokenizer.py)
    batch_size: int = 16  # rollouts per iteration
    minibatch_size: int = 8  # rollouts per optimizer step
    ppo_epochs: int = 1
    prompt_len: int = 32
    response_len: int = 32  # every response exactly this long (no EOS on either side)
    repeats: int = 5  # timed repeats of each side, alternating, after one warm-up each
    device: str = "auto"


def now(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # the GPU's queued work belongs to the interval it was queued in
    return time.perf_counter()


def build_models(cfg, device, tmp):
    """-> (hf: policy, ref, rm, value as transformers models, ours: the same weights in model.py)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel
    V = cfg.vocab_size
    hc = GPT2Config(vocab_size=V, n_positions=1024, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, num_labels=1, pad_token_id=V,
                    bos_token_id=V + 1, eos_token_id=V + 1)  # pad and EOS outside the vocabulary: never sampled
    torch.manual_seed(0)
    policy, rm = GPT2LMHeadModel(hc), GPT2ForSequenceClassification(hc)
    policy.save_pretrained(f"{tmp}/policy")
    rm.transformer.save_pretrained(f"{tmp}/rm")  # the trunk alone: a GPT-2 directory from_hf_dir reads
    hf = SimpleNamespace(policy=policy, ref=copy.deepcopy(policy).eval(), rm=rm.eval(), value=copy.deepcopy(rm))

    o_policy = GPT.from_hf_dir(f"{tmp}/policy")
    o_rm = ScalarModel(o_policy.config)
    o_rm.trunk = GPT.from_hf_dir(f"{tmp}/rm")
    o_rm.head.weight.data.copy_(rm.score.weight.data)  # HF's score has no bias; ours is zeroed at init
    ours = SimpleNamespace(policy=o_policy, ref=copy.deepcopy(o_policy).eval().requires_grad_(False),
                           rm=o_rm.eval().requires_grad_(False), value=copy.deepcopy(o_rm).train())
    ours.value.lm_coef.requires_grad_(False)
    for m in (*vars(hf).values(), *vars(ours).values()):
        m.to(device)
    x = torch.randint(0, V, (2, 16), device=device)
    with torch.no_grad():
        d_lm = (ours.policy(x)[0] - hf.policy(x).logits).abs().max().item()
        d_rm = (ours.rm.score(x, torch.ones_like(x)) - hf.rm(x).logits[:, 0]).abs().max().item()
    return hf, ours, d_lm, d_rm


def ours_step(cfg, m, prompts, device, check=False):
    from model import response_logprobs
    from ppo import PPOConfig, compute_advantages, ppo_update, rollout
    pcfg = PPOConfig(batch_size=cfg.batch_size, minibatch_size=cfg.minibatch_size, ppo_epochs=cfg.ppo_epochs,
                     samples_per_prompt=1, max_new_tokens=cfg.response_len, temperature=1.0, eos_trick=False,
                     lr_warmup=0, value_warmup=0, kl_coef=0.05)  # iteration 0 every time: a constant lr, as TRL's
    opt = torch.optim.AdamW([dict(params=list(m.policy.parameters())),  # as ppo.py builds it
                             dict(params=[p for p in m.value.parameters() if p.requires_grad])],
                            lr=LR, betas=(0.9, 0.95), weight_decay=0.0, eps=1e-5)
    opt.register_step_post_hook(lambda *_: setattr(step, "opt_steps", step.opt_steps + 1))
    tok = SimpleNamespace(eot_id=-1, pad_id=cfg.vocab_size - 1)  # eot -1: never sampled, every row runs to the end
    gen = torch.Generator(device=device).manual_seed(0)

    def reward_fn(out):
        resp = torch.cat([torch.zeros_like(out["attn_mask"][:, : out["prompt_len"]]), out["response_mask"]], 1)
        return m.rm.score(out["tokens"], out["attn_mask"], resp)

    def step():
        t0 = now(device)
        roll = compute_advantages(rollout(m.policy, m.ref, m.value, prompts, reward_fn, pcfg, tok, gen), pcfg)
        if check:  # one more policy forward over the rollouts: the recomputed old log-probs
            with torch.no_grad(), autocast(device):
                response_logprobs(m.policy, roll["tokens"], roll["attn_mask"], roll["prompt_len"], pcfg.temperature)
        ppo_update(m.policy, m.value, opt, roll, pcfg, 0)
        dt = now(device) - t0
        assert roll["mask"].sum(1).min().item() == cfg.response_len  # no row stopped early
        return dt
    step.opt_steps = 0
    return step, opt


def byte_tokenizer(V):
    """A byte-level tokenizer made in memory (256 byte tokens, no merges) with <|pad|> = V and
    <|endoftext|> = V + 1: TRL needs one for padding and its ids; the text itself is never read."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({"<|pad|>": V, "<|endoftext|>": V + 1})
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer, t.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<|pad|>", eos_token="<|endoftext|>")


def trl_step(cfg, hf, prompts, device, tmp):
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    n_mb = cfg.batch_size // cfg.minibatch_size
    args = PPOConfig(
        output_dir=f"{tmp}/trl", report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        per_device_train_batch_size=cfg.minibatch_size, gradient_accumulation_steps=n_mb, num_mini_batches=n_mb,
        total_episodes=cfg.batch_size, num_ppo_epochs=cfg.ppo_epochs, local_rollout_forward_batch_size=cfg.batch_size,
        response_length=cfg.response_len, stop_token=None, missing_eos_penalty=None, temperature=1.0, kl_coef=0.05,
        num_sample_generations=0, learning_rate=LR, lr_scheduler_type="constant", gradient_checkpointing=False,
        bf16=False, fp16=False, use_cpu=device == "cpu", seed=0)

    class Clock(TrainerCallback):  # the loop body of train(): one iteration, nothing of its set-up
        def on_train_begin(self, *a, **k):
            self.t0 = now(device)

        def on_train_end(self, *a, **k):
            self.dt = now(device) - self.t0

    clock = Clock()
    trainer = PPOTrainer(args=args, processing_class=byte_tokenizer(cfg.vocab_size), model=hf.policy,
                         ref_model=hf.ref, reward_model=hf.rm, value_model=hf.value, callbacks=[clock],
                         train_dataset=Dataset.from_dict({"input_ids": prompts}))  # one batch: see docstring 6.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.optimizer.optimizer.register_step_post_hook(lambda *_: setattr(step, "opt_steps", step.opt_steps + 1))

    def step():
        with contextlib.redirect_stdout(io.StringIO()), autocast(device):  # its "===training policy===" line
            trainer.train()
        return clock.dt
    step.opt_steps = 0
    return step, trainer.optimizer.optimizer


def spread(xs):
    return fmt(xs, f=".2f")  # bench.py's 'median [min, max]'


def main():
    cfg = parse_config(BenchTRLConfig())
    if cfg.batch_size % cfg.minibatch_size or cfg.repeats < 1:
        raise SystemExit("error: --batch_size must be a multiple of --minibatch_size, and --repeats >= 1")
    device = get_device(cfg.device)
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # TRL's Accelerator would otherwise take a GPU if there is one
    import transformers
    import trl
    transformers.logging.set_verbosity_error()
    print_config(cfg)
    torch.manual_seed(0)
    prompts = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.prompt_len)).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        hf, ours, d_lm, d_rm = build_models(cfg, device, tmp)
        n = sum(p.numel() for p in ours.policy.parameters())
        print(f"device {device} | precision {precision_name(device)} | threads {torch.get_num_threads()} | "
              f"torch {torch.__version__} | transformers {transformers.__version__} | trl {trl.__version__}")
        print(f"models: {n / 1e6:.1f}M parameters each x 4 per side, random weights, HF attention "
              f"{hf.policy.config._attn_implementation}; ours vs HF max |delta| logits {d_lm:.1e}, RM score {d_rm:.1e}")
        o_step, o_opt = ours_step(cfg, ours, prompts, device)
        r_step, _ = ours_step(cfg, ours, prompts, device, check=True)  # one more policy forward
        t_step, t_opt = trl_step(cfg, hf, prompts, device, tmp)
        for name, o in (("ours", o_opt), ("TRL ", t_opt)):
            g = o.param_groups[0]
            print(f"optimizer {name}: {type(o).__name__} lr {g['lr']:g} betas {g['betas']} eps {g['eps']:g} fused "
                  f"{g['fused']} weight decay {[x['weight_decay'] for x in o.param_groups]}")
        o_step(), r_step(), t_step()  # warm-up
        steps = (o_step.opt_steps, t_step.opt_steps)
        ours_t, recomp_t, trl_t = [], [], []
        for _ in range(cfg.repeats):  # alternate, so drifts of the machine hit both sides alike
            ours_t.append(o_step())
            recomp_t.append(r_step())
            trl_t.append(t_step())
    want = cfg.ppo_epochs * cfg.batch_size // cfg.minibatch_size
    print(f"optimizer steps per iteration: ours {steps[0]}, TRL {steps[1]} (want {want})")
    eps = lambda ts: [cfg.batch_size / t for t in ts]  # noqa: E731  episodes/s
    print(f"\none PPO iteration, episodes/s, median [min, max] of {cfg.repeats} repeats:")
    print(f"  ours (ppo.py's 3 steps)    {spread(eps(ours_t))}   (the sampler's log-probs, as TRL)")
    print(f"  ours + the sampler check   {spread(eps(recomp_t))}   (one more policy forward)")
    print(f"  TRL  (PPOTrainer)          {spread(eps(trl_t))}")
    print(f"  ours / TRL                 {spread([b / a for a, b in zip(ours_t, trl_t)])}  (per-repeat ratios)")
    print(f"  ours (+ check) / TRL       {spread([b / a for a, b in zip(recomp_t, trl_t)])}")


if __name__ == "__main__":
    main()
