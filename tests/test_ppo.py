"""ppo.py: GAE, whitening, clipped losses, KL estimators and reward placement, and a learning test."""
import math
from dataclasses import replace

import pytest
import torch

from model import GPT, GPTConfig, ScalarModel
from model import response_logprobs
from ppo import (PPOConfig, check_config, compute_advantages, gae, health_warnings, k3, kl_rewards, learning_rates,
                 masked_mean, masked_whiten, minibatch_loss, policy_loss, ppo_update, rollout, rollout_stats,
                 value_loss)


def test_gae_hand_worked_example():
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.5, 0.5]]), torch.ones(1, 3), 1.0, 1.0)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.5, 0.5]]))
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0, 1.0]]))
    # gamma = 1, lambda = 0.5: deltas [0.1, 0.2, 0.5] for values [0.4, 0.5, 0.7] ... by hand:
    # d0 = 0 + 0.5 - 0.4 = 0.1, d1 = 0 + 0.7 - 0.5 = 0.2, d2 = 1 - 0.7 = 0.3
    # A2 = 0.3, A1 = 0.2 + 0.5 * 0.3 = 0.35, A0 = 0.1 + 0.5 * 0.35 = 0.275
    adv, _ = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.4, 0.5, 0.7]]), torch.ones(1, 3), 1.0, 0.5)
    assert torch.allclose(adv, torch.tensor([[0.275, 0.35, 0.3]]))


def gae_reference(rewards, values, gamma, lam):
    """Textbook GAE on one unpadded row: A_t = sum_l (gamma lam)^l delta_{t+l}."""
    n = len(rewards)
    v = list(values) + [0.0]
    deltas = [rewards[t] + gamma * v[t + 1] - v[t] for t in range(n)]
    return [sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t)) for t in range(n)]


def test_gae_padded_rows_match_reference():
    torch.manual_seed(0)
    lengths = [5, 2, 7]
    R = 7
    rewards, values = torch.randn(3, R), torch.randn(3, R)
    mask = torch.tensor([[1.0] * n + [0.0] * (R - n) for n in lengths])
    adv, ret = gae(rewards, values, mask, 0.9, 0.8)
    for i, n in enumerate(lengths):
        ref = gae_reference(rewards[i, :n].tolist(), values[i, :n].tolist(), 0.9, 0.8)
        assert torch.allclose(adv[i, :n], torch.tensor(ref), atol=1e-5)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all()
        assert torch.allclose(ret[i, :n], adv[i, :n] + values[i, :n])


def test_whitening_biased_and_masked():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    w = masked_whiten(x, mask)
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    expect = (vals - vals.mean()) / vals.std(unbiased=False)  # biased variance; masked entries ignored
    assert torch.allclose(w[mask.bool()], expect, atol=1e-5)
    assert (w[~mask.bool()] == 0).all()


def test_policy_loss_zero_grad_where_clipped():
    old = torch.zeros(1, 4)
    # ratios 1.5 and 0.5 lie outside [0.8, 1.2]; 1.1 and 0.9 inside
    new = torch.log(torch.tensor([[1.5, 1.1, 0.5, 0.9]])).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clipfrac, _, _ = policy_loss(new, old, adv, torch.ones(1, 4), 0.2)
    loss.backward()
    g = new.grad[0]
    assert g[0] == 0 and g[2] == 0  # positive advantage above 1+eps, negative below 1-eps: clipped
    assert g[1] != 0 and g[3] != 0
    assert abs(clipfrac.item() - 0.5) < 1e-6
    # on the other side of the clip the gradient is NOT zero (the pessimistic bound)
    new2 = torch.log(torch.tensor([[0.5]])).requires_grad_(True)
    policy_loss(new2, torch.zeros(1, 1), torch.tensor([[1.0]]), torch.ones(1, 1), 0.2)[0].backward()
    assert new2.grad.item() != 0


def test_value_loss_clipping():
    vpred = torch.tensor([[2.0]], requires_grad=True)
    loss, frac = value_loss(vpred, torch.tensor([[0.0]]), torch.tensor([[3.0]]), torch.ones(1, 1), 0.2)
    # clipped prediction is 0.2: (0.2 - 3)^2 = 7.84 > (2 - 3)^2 = 1 -> the loss is the clipped one, no grad
    assert abs(loss.item() - 0.5 * 7.84) < 1e-5
    loss.backward()
    assert vpred.grad.item() == 0


def test_k3_nonnegative_and_agrees_with_k1_in_expectation():
    torch.manual_seed(0)
    lp, ref = torch.randn(1000), torch.randn(1000)
    assert (k3(lp, ref) >= 0).all()
    p = torch.distributions.Categorical(logits=torch.tensor([1.0, 0.0, -1.0, 0.5]))
    q = torch.distributions.Categorical(logits=torch.tensor([0.0, 0.3, 0.0, 0.0]))
    x = p.sample((200000,))
    lp, lq = p.log_prob(x), q.log_prob(x)
    exact = torch.distributions.kl_divergence(p, q).item()
    assert abs((lp - lq).mean().item() - exact) < 0.01  # k1
    assert abs(k3(lp, lq).mean().item() - exact) < 0.01  # k3


def test_kl_reward_placement():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    lp = torch.tensor([[0.5, 0.5, 0.5, 9.0], [0.2, 9.0, 9.0, 9.0]])
    ref = torch.zeros(2, 4)
    rewards, kl = kl_rewards(lp, ref, torch.tensor([2.0, -1.0]), mask, 0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.05, -0.05, 1.95, 0.0], [-1.02, 0.0, 0.0, 0.0]]))
    assert (kl[mask == 0] == 0).all()


class Tok:
    eot_id, pad_id = 14, 15


def tiny_models():
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=32, vocab_size=16, n_layer=1, n_head=2, n_embd=32)
    policy, ref, value = GPT(cfg), GPT(cfg), ScalarModel(cfg)
    ref.load_state_dict(policy.state_dict())
    return policy, ref, value


def tiny_ppo_run(iters=3, batch_size=16, max_new_tokens=5, **cfg_kw):
    """A few PPO iterations of a tiny policy on the toy reward 'say token 7' (the fraction of
    response tokens that are 7), each the three steps main() takes -> (list of (stats,
    rollout) per iteration, policy, optimizer)."""
    policy, ref, value = tiny_models()
    ppo_cfg = replace(PPOConfig(), iters=iters, batch_size=batch_size, minibatch_size=8, ppo_epochs=2, lr=1e-2,
                      vf_lr=1e-2, max_new_tokens=max_new_tokens, eos_trick=False, value_warmup=0, kl_coef=0.01,
                      **cfg_kw)
    opt = torch.optim.AdamW([dict(params=list(policy.parameters())), dict(params=list(value.parameters()))],
                            lr=ppo_cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    history = []
    for it in range(iters):
        roll = compute_advantages(rollout(policy, ref, value, [[1, 2, 3]] * batch_size, toy_reward, ppo_cfg, Tok, gen),
                          ppo_cfg)
        stats = rollout_stats(roll)
        stats.update(ppo_update(policy, value, opt, roll, ppo_cfg, it))
        history.append((stats, roll))
    return history, policy, opt


def toy_reward(out):
    """The fraction of response tokens equal to 7."""
    return ((out["response"] == 7).float() * out["response_mask"]).sum(1) / out["response_mask"].sum(1)


def test_ratio_is_one_on_first_minibatch_and_toy_reward_is_learned():
    """PPO on a toy reward -- 'say token 7' -- raises it within a few iterations, KL finite;
    before any update the ratio pi / pi_old is exactly 1 (the old log-probs are the sampler's)."""
    policy, ref, value = tiny_models()
    cfg = replace(PPOConfig(), max_new_tokens=6, eos_trick=False, value_warmup=0)
    roll = compute_advantages(rollout(policy, ref, value, [[1, 2, 3]] * 8, toy_reward, cfg, Tok,
                                      torch.Generator().manual_seed(0)), cfg)
    _, st = minibatch_loss(policy, value, roll, torch.arange(8), cfg)
    assert abs(st["ratio_max"].item() - 1) < 1e-5 and st["clipfrac"].item() == 0
    history, _, _ = tiny_ppo_run(iters=12, batch_size=32, max_new_tokens=6)
    stats = history[-1][0]
    scores = [toy_reward(out).mean().item() for _, out in history]
    assert all(math.isfinite(st["kl"]) for st, _ in history)
    assert sum(scores[-3:]) / 3 > sum(scores[:2]) / 2 + 0.3
    assert stats["kl"] > 0


def test_the_sampler_log_probs_are_the_recomputed_ones_at_the_same_temperature():
    """PPO keeps the sampler's log-probs as the old ones: a fresh forward at the sampling
    temperature gives them back to fp32 rounding; at another temperature it does not (the
    classic bug, which the negative-KL warning catches in a run)."""
    policy, ref, value = tiny_models()
    cfg = replace(PPOConfig(), max_new_tokens=5, temperature=0.7)
    roll = rollout(policy, ref, value, [[1, 2, 3]] * 8, toy_reward, cfg, Tok, torch.Generator().manual_seed(0))

    def gap(temperature):
        fresh = response_logprobs(policy, roll["tokens"], roll["attn_mask"], roll["prompt_len"], temperature)
        return ((roll["logprobs"] - fresh).abs() * roll["mask"]).max().item()
    assert gap(0.7) < 1e-4 and gap(1.0) > 1e-2
    assert health_warnings(dict(kl=-1.0)) and not health_warnings(dict(kl=0.3, ratio_max=1.2))


def test_lr_warmup_ramps_the_policy_steps_only():
    """learning_rates: both lrs decay linearly over the iterations; the policy's also ramps up
    over its first --lr_warmup optimizer steps, so Adam's sign-sized first step is 1/N of
    the full one. In the value warm-up (policy_step <= 0) there is no ramp (no policy step)."""
    cfg = replace(PPOConfig(), iters=10, lr=1.0, vf_lr=2.0, lr_warmup=4)
    assert learning_rates(cfg, 0, 1) == (0.25, 2.0)
    assert learning_rates(cfg, 5, 2) == (0.25, 1.0)  # half-way: decay 0.5, ramp 2/4
    assert learning_rates(cfg, 5, 9) == (0.5, 1.0)  # ramp done
    assert learning_rates(cfg, 0, -3) == (1.0, 2.0)
    assert learning_rates(replace(cfg, lr_warmup=0, vf_lr=0.0), 5, 1) == (0.5, 0.5)  # vf_lr 0: the policy's
    h_warm, _, _ = tiny_ppo_run(iters=1, lr_warmup=1000)
    h_cold, _, _ = tiny_ppo_run(iters=1, lr_warmup=0)
    assert h_warm[0][0]["ratio_max"] < 1.01 < h_cold[0][0]["ratio_max"]  # the ramp keeps the first steps small


def test_value_warmup_moves_only_the_value_model():
    """Iterations before --value_warmup: the policy's weights stay bit-identical and it does
    not even run (no policy loss is computed and thrown away); the value model learns, and
    its loss is not clipped; a normal iteration from the same start clips."""
    policy, ref, value = tiny_models()
    with torch.no_grad():
        value.head.bias.fill_(5.0)  # far from the returns (1.0)
    start = {k: v.clone() for k, v in value.state_dict().items()}
    ppo_cfg = replace(PPOConfig(), batch_size=16, minibatch_size=8, ppo_epochs=4, lr=1e-2, max_new_tokens=5,
                      eos_trick=False, value_warmup=3, kl_coef=0.0)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    reward_fn = lambda out: torch.ones(out["tokens"].shape[0])  # noqa: E731

    def run(its):
        opt = torch.optim.Adam([dict(params=list(policy.parameters())), dict(params=list(value.parameters()))],
                               lr=ppo_cfg.lr)
        gen = torch.Generator().manual_seed(0)
        for it in its:
            roll = compute_advantages(rollout(policy, ref, value, [[1, 2, 3]] * 16, reward_fn, ppo_cfg, Tok, gen), ppo_cfg)
            stats = ppo_update(policy, value, opt, roll, ppo_cfg, it)
        return stats, roll

    stats, out = run(range(3))
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert stats["vf_clipfrac"] == 0.0 and "pg_loss" not in stats and "entropy" not in stats
    with torch.no_grad():
        v_after = value(out["tokens"], out["attn_mask"])[:, out["prompt_len"] - 1 : -1]  # (B, R)
    assert masked_mean(v_after, out["mask"]).item() < 4.0  # moved toward the returns (1.0)
    value.load_state_dict(start)
    stats, _ = run([3])  # a PPO iteration from the same far-off value: the clip is active
    assert stats["vf_clipfrac"] > 0.1 and "pg_loss" in stats


def test_check_config_divides_the_batch_over_the_ranks(capsys):
    """Under torchrun (here 3 ranks) a batch whose prompts or minibatch do not divide over the
    ranks stops with a clear error: unequal shares would leave the ranks out of step."""
    check_config(PPOConfig(), world=1)  # one process: 16 prompts, minibatch 16
    with pytest.raises(SystemExit) as e:
        check_config(PPOConfig(), world=3)
    assert e.value.code == 2 and "ranks x --samples_per_prompt (3 x 4)" in capsys.readouterr().err
    check_config(replace(PPOConfig(), batch_size=48, minibatch_size=12), world=3)  # 4 prompts each, minibatch 4
