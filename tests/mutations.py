"""
Do the math tests fail when the math is wrong? Each case breaks one formula in a COPY of the
repository and runs the test that names it; every case must print CAUGHT.

    python tests/mutations.py        # ~2 min; not part of pytest (it edits files, in a temp copy)
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (file, the correct line, a plausible bug, test file, -k selection)
cases = [
 ("ppo.py", "last = delta + gamma * lam * last", "last = delta + gamma * last", "tests/test_ppo.py", "gae"),
 ("ppo.py", "delta = rewards[:, t] + gamma * next_value - values[:, t]", "delta = rewards[:, t] + next_value - values[:, t]", "tests/test_ppo.py", "gae"),
 ("ppo.py", "var = ((x - mean) ** 2 * mask).sum() / n  # biased", "var = ((x - mean) ** 2 * mask).sum() / (n - 1)  # biased", "tests/test_ppo.py", "whiten"),
 ("ppo.py", "pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)", "pg_loss = masked_mean(pg_losses, mask)", "tests/test_ppo.py", "clipped"),
 ("ppo.py", "vf_losses = torch.max((vpred - returns) ** 2, (vclipped - returns) ** 2)", "vf_losses = (vpred - returns) ** 2", "tests/test_ppo.py", "value_loss"),
 ("ppo.py", "return torch.expm1(log_r) - log_r", "return torch.expm1(log_r)", "tests/test_ppo.py", "k3"),
 ("ppo.py", "rewards[torch.arange(len(scores)), last] += scores", "rewards[:, -1] += scores", "tests/test_ppo.py", "placement"),
 ("reward.py", "losses.append(-F.logsigmoid(diff).mean())", "losses.append(-F.logsigmoid(diff).sum())", "tests/test_sft_reward.py", "brute_force"),
 ("data/loaders.py", "return [(ranking[a], ranking[b]) for a in range(len(ranking)) for b in range(a + 1, len(ranking))]", "return [(ranking[a], ranking[b]) for a in range(len(ranking)) for b in range(a, len(ranking))]", "tests/test_sft_reward.py", "ranked_pairs"),
 ("reward.py", "keep = [i for i, s in enumerate(c[\"sources\"]) if s.startswith(\"sft\")]", "keep = [i for i, s in enumerate(c[\"sources\"]) if not s.startswith(\"demo\")]", "tests/test_sft_reward.py", "sft_pairs_only"),
 ("sft.py", "unseen[render(tok, d[\"prompt\"], d[\"response\"])[0]] = False", "unseen[render(tok, d[\"prompt\"])[0]] = False", "tests/test_sft_reward.py", "unseen"),
 # several processes: the gradients averaged over the ranks; the RM's head initialised alike on every rank
 ("common.py", "            dist.all_reduce(p.grad)  # the sum over the ranks ...", "            pass", "tests/test_ddp.py", "sft_and_reward"),
 ("reward.py", "    seed_everything(cfg.seed)\n    rm, tok = reward_model_from(cfg, device)", "    rm, tok = reward_model_from(cfg, device)", "tests/test_ddp.py", "sft_and_reward"),
 # a diverging run stops: a finite but exploding loss counts too
 ("common.py", "    if not math.isfinite(value) or abs(value) > LOSS_LIMIT:", "    if not math.isfinite(value):", "tests/test_failures.py", "absurd"),
 # PPO's policy lr ramp and its unclipped value warm-up; the sampler's log-probs are the old ones
 ("model.py", "lp = torch.log_softmax(logits.float() / lp_temp, -1)", "lp = torch.log_softmax(logits.float(), -1)", "tests/test_ppo.py", "sampler_log_probs"),
 ("ppo.py", "ramp = min(1.0, policy_step / cfg.lr_warmup) if cfg.lr_warmup and policy_step > 0 else 1.0", "ramp = 1.0", "tests/test_ppo.py", "lr_warmup"),
 ("ppo.py", "float(\"inf\") if value_only else cfg.cliprange)", "cfg.cliprange)", "tests/test_ppo.py", "value_warmup"),
 # DPO: the reference inside the loss, its sign, the per-prompt mean, where the answer starts
 ("dpo.py", "rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # (N,)", "rejected_rewards = beta * policy_rejected_logps  # (N,)", "tests/test_dpo.py", "dpo_loss"),
 ("dpo.py", "losses = -F.logsigmoid(chosen_rewards - rejected_rewards)  # (N,)", "losses = -F.logsigmoid(rejected_rewards - chosen_rewards)  # (N,)", "tests/test_dpo.py", "dpo_loss"),
 ("dpo.py", "weights += [1.0 / (len(pr) * len(groups))] * len(pr)", "weights += [1.0 / len(groups)] * len(pr)", "tests/test_dpo.py", "brute_force"),
 ("policy.py", "cut = [m.index(1) for _, m in seqs]", "cut = [m.index(1) + 1 for _, m in seqs]", "tests/test_dpo.py", "pair_batch"),
 # the world's difficulty knob must reach the demonstrations
 ("data/world.py", "T.write_demo(rec, lab, drng, ix, boost=demo_flaws)", "T.write_demo(rec, lab, drng, ix)", "tests/test_world.py", "demo_flaws"),
 # World v2's rubric: a broken explicit constraint is a major failure; its demonstrators share documented rates
 ("data/labelers.py", "kept = 1.0 - lab[\"constraint\"] * (a[\"constraint_ok\"] is False)", "kept = 1.0 - 0.2 * (a[\"constraint_ok\"] is False)", "tests/test_world.py", "orders_flaws"),
 ("data/tasks.py", "q = {k: min(0.9, v * boost) for k, v in prof[\"demo_flaws\"][get_labeler(labeler)[\"name\"]].items()}", "q = {k: min(0.9, v * boost) for k, v in PROFILES[\"facts\"][\"demo_flaws\"][get_labeler(labeler)[\"name\"]].items()}", "tests/test_world.py", "demonstrations_good"),
 # the expected win rate: the logistic of the utility gap in units of the labeler's own noise
 ("evaluation/metrics.py", "z = (utility(r, a, lab) - utility(r, b, lab)) / lab[\"noise\"]", "z = utility(r, a, lab) - utility(r, b, lab)", "tests/test_evaluate.py", "expected_win"),
]


def main():
    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "repo")
        shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", "out", "data/world", "__pycache__"))
        for f, old, new, test, k in cases:
            path = os.path.join(repo, f)
            src = open(path).read()
            assert old in src, f"{f}: the line to break is gone, update this case: {old!r}"
            open(path, "w").write(src.replace(old, new, 1))
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test, "-k", k],
                               cwd=repo, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            open(path, "w").write(src)
            caught = r.returncode == 1
            missed += not caught
            print(f"{'CAUGHT' if caught else 'MISSED'} {f}: {new[:70]!r} ({test} -k {k})")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
