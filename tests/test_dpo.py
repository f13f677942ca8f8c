"""dpo.py: the loss by hand and against a brute-force pair loop, its gradient's sign, the
summed answer log-probs it trains on, and tiny end-to-end runs (with an exact resume)."""
import math

import pytest
import torch

from conftest import interrupt, run  # and the `files` fixture: a tiny base model and comparisons
from dpo import dpo_loss, ranked_dpo_loss
from model import GPT, GPTConfig, response_logprobs
from policy import load_policy, pair_batch
from tokenizer import Tokenizer, render, train_bpe


def test_dpo_loss_is_log2_when_policy_equals_reference():
    torch.manual_seed(0)
    chosen, rejected = -20 * torch.rand(7), -20 * torch.rand(7)
    losses, r_w, r_l = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=0.1)
    assert torch.allclose(losses, torch.full((7,), math.log(2)))
    assert (r_w == 0).all() and (r_l == 0).all()


def test_dpo_loss_hand_worked_example():
    """The docstring's example: rewards +0.2 and -0.1, loss log(1 + e^-0.3) = 0.5544."""
    t = lambda x: torch.tensor([x])  # noqa: E731
    losses, r_w, r_l = dpo_loss(t(-10.0), t(-15.0), t(-12.0), t(-14.0), beta=0.1)
    assert r_w.item() == pytest.approx(0.2) and r_l.item() == pytest.approx(-0.1)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-0.3)), abs=1e-6)
    assert losses.item() == pytest.approx(0.5544, abs=1e-4)


def brute_force_dpo(logps, ref_logps, groups, beta):
    """The formula, literally: loop over prompts, loop over every pair (a beat b)."""
    total = 0.0
    for offset, ranking in groups:
        K = len(ranking)
        s = 0.0
        for a in range(K):
            for b in range(a + 1, K):
                w, l = ranking[a] + offset, ranking[b] + offset
                z = beta * ((logps[w] - ref_logps[w]) - (logps[l] - ref_logps[l]))
                s = s + -torch.log(torch.sigmoid(z))
        total = total + s / math.comb(K, 2)
    return total / len(groups)


def test_dpo_loss_equals_a_per_pair_loop():
    torch.manual_seed(0)
    pc, pr, rc, rr = (-10 * torch.rand(9) for _ in range(4))
    pc1, pr1 = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
    pc2, pr2 = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
    losses, _, _ = dpo_loss(pc1, pr1, rc, rr, beta=0.3)
    loop = torch.stack([-torch.log(torch.sigmoid(0.3 * ((pc2[i] - rc[i]) - (pr2[i] - rr[i])))) for i in range(9)])
    assert torch.allclose(losses, loop, atol=1e-6)
    losses.sum().backward()
    loop.sum().backward()
    assert torch.allclose(pc1.grad, pc2.grad, atol=1e-6) and torch.allclose(pr1.grad, pr2.grad, atol=1e-6)


def test_ranked_dpo_loss_equals_brute_force_values_and_grads():
    torch.manual_seed(0)
    groups = [(0, [3, 1, 0, 2]), (4, [1, 0]), (6, [4, 2, 0, 1, 3, 5, 6, 7, 8])]  # K = 4, 2, 9
    ref = -30 * torch.rand(15)
    lp1 = (ref + torch.randn(15)).requires_grad_(True)
    lp2 = lp1.detach().clone().requires_grad_(True)
    fast, sums = ranked_dpo_loss(lp1, ref, torch.ones(15), groups, beta=0.5)
    slow = brute_force_dpo(lp2, ref, groups, beta=0.5)
    assert torch.allclose(fast, slow, atol=1e-6)
    fast.backward()
    slow.backward()
    assert torch.allclose(lp1.grad, lp2.grad, atol=1e-6)
    assert sums["pairs"] == 6 + 1 + 36 and sums["prompts"] == 3 and 0 <= sums["correct"] <= sums["pairs"]


def test_gradient_raises_the_chosen_and_lowers_the_rejected_log_prob():
    """d loss / d log pi(y_w) = -beta * sigmoid(-z) < 0: a descent step raises the chosen
    answer's log-prob and lowers the rejected one's, by beta / 2 each at the start (z = 0)."""
    pc, pr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-6.0], requires_grad=True)
    losses, _, _ = dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-6.0]), beta=0.1)
    losses.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.05) and pr.grad.item() == pytest.approx(0.05)
    # and through a model: a few small steps on one pair widen the chosen-minus-rejected log-ratio
    tok = Tokenizer(train_bpe("the cat sat on the mat. where does anna live? anna lives in paris. " * 30, 280))
    torch.manual_seed(0)
    policy = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32))
    ref = GPT(policy.config).eval()
    ref.load_state_dict(policy.state_dict())
    tokens, attn, P, mask = pair_batch(tok, ["where does anna live?"] * 2, ["anna lives in paris.", "the cat sat."],
                                       "cpu")
    with torch.no_grad():
        ref_lp = (response_logprobs(ref, tokens, attn, P) * mask).sum(1)  # (2,): chosen, rejected
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    ratios = []
    for _ in range(3):
        lp = (response_logprobs(policy, tokens, attn, P) * mask).sum(1)
        ratios.append((lp - ref_lp).detach())
        loss, _ = ranked_dpo_loss(lp, ref_lp, torch.ones(2), [(0, [0, 1])], beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ratios[0].abs().max() < 1e-6  # starts at the reference
    assert ratios[1][0] > 0 > ratios[1][1]  # the first step: chosen up, rejected down
    assert ratios[2][0] - ratios[2][1] > ratios[1][0] - ratios[1][1] > 0


def test_pair_batch_answer_logprobs_sum_the_answer_tokens_only():
    """pair_batch's layout (prompts left-padded, answers right-padded after them) through
    response_logprobs, summed under its mask = the sum of log pi over render's loss mask of
    each unpadded row, done by hand (the answer and its EOT; prompt and padding left out)."""
    tok = Tokenizer(train_bpe("the cat sat on the mat. where does anna live? anna lives in paris. " * 30, 280))
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)).eval()
    pairs = [("where does anna live?", "paris"), ("cat", "the mat. the cat sat"), ("cat sat?", "the")]
    with torch.no_grad():
        tokens, attn, P, mask = pair_batch(tok, [p for p, _ in pairs], [r for _, r in pairs], "cpu")
        assert mask.sum(1).tolist() == [sum(render(tok, p, r)[1]) for p, r in pairs]  # answer tokens + EOT
        got = (response_logprobs(m, tokens, attn, P) * mask).sum(1)
        for i, (p, r) in enumerate(pairs):
            ids, mask = render(tok, p, r)
            logp = torch.log_softmax(m(torch.tensor([ids]))[0][0], -1)  # (T, V)
            want = sum(logp[t - 1, ids[t]] for t in range(1, len(ids)) if mask[t])
            assert abs(got[i] - want) < 1e-4


def test_dpo_end_to_end_and_exact_resume(files, tmp_path):
    """dpo.py on the tiny comparisons: logs every step, checkpoint with stage "dpo" that
    evaluate.py loads as a policy of the "dpo" family; the implicit reward learns its pairs;
    a run killed mid-way and resumed ends bit-identical to an uninterrupted one."""
    import evaluate

    d = files
    args = [f"--policy={d}/base.pt", f"--data={d}/comps.jsonl", f"--val={d}/comps.jsonl", "--batch_size=4",
            "--epochs=2", "--warmup_steps=1", "--lr=3e-3", "--log_interval=1", "--n_samples=2", "--max_new_tokens=4"]
    log = run("dpo.py", args + [f"--out={tmp_path}/a.pt"])
    assert "step 0/10 | val_loss 0.6931 | val_acc 0.5000" in log  # policy == reference at the start
    assert "step 10/10 | loss" in log and "val_acc" in log.split("step 10/10")[1] and "implicit reward" in log
    model, tok, ck = load_policy(f"{tmp_path}/a.pt")
    assert ck["stage"] == "dpo" and evaluate.model_family("dpo", ck) == "dpo"
    assert {"model", "model_config", "tokenizer", "config"} <= set(ck) and ck["config"]["beta"] == 0.1
    assert ck["report"]["val_acc"] > 0.6 and ck["report"]["val_loss"] < math.log(2)  # it learned the (training) pairs

    left = interrupt("dpo.py", args + ["--epochs=6", f"--out={tmp_path}/b.pt"], f"{tmp_path}/b.pt.last")
    assert 1 <= left["step"] < 30  # killed mid-run: the .last file of a finished interval is all that is left
    log = run("dpo.py", args + ["--epochs=6", f"--out={tmp_path}/b.pt", "--resume=True"])
    assert "resumed from" in log and f"step {left['step']}/30" not in log and "step 30/30" in log
    c = run("dpo.py", args + ["--epochs=6", f"--out={tmp_path}/c.pt"])  # the same run, never interrupted
    b, c = torch.load(f"{tmp_path}/b.pt", weights_only=True), torch.load(f"{tmp_path}/c.pt", weights_only=True)
    for k, v in c["model"].items():  # DPO draws no random numbers while training: the same weights
        assert torch.equal(v, b["model"][k]), k
    assert [h["step"] for h in b["history"]] == list(range(31))
