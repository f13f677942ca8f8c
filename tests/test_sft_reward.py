"""sft.py and reward.py: masks, the C(K,2) loss against a brute-force oracle, score position, overfitting."""
import math

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, ScalarModel, left_pad
from reward import comparison_loss
from data import ranked_pairs
from policy import rm_batch
from sft import sft_batch
from tokenizer import Tokenizer, render, train_bpe

TEXT = "the cat sat on the mat. where does anna live? anna lives in paris. " * 30


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(train_bpe(TEXT, 280))


def tiny_cfg(tok):
    return GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)


def brute_force_loss(scores, groups):
    """The paper's formula, literally: loop over prompts, loop over every pair."""
    total = 0.0
    for offset, ranking in groups:
        K = len(ranking)
        s = 0.0
        for a in range(K):
            for b in range(a + 1, K):
                w, l = ranking[a] + offset, ranking[b] + offset  # ranking[a] beat ranking[b]
                s = s + -torch.log(torch.sigmoid(scores[w] - scores[l]))
        total = total + s / math.comb(K, 2)
    return total / len(groups)


def test_ranked_pairs():
    assert ranked_pairs([2, 0, 1]) == [(2, 0), (2, 1), (0, 1)]
    assert len(ranked_pairs(list(range(9)))) == 36


def test_comparison_loss_equals_brute_force_values_and_grads():
    torch.manual_seed(0)
    groups = [(0, [3, 1, 0, 2]), (4, [1, 0]), (6, [4, 2, 0, 1, 3, 5, 6, 7, 8])]  # K = 4, 2, 9
    s1 = torch.randn(15, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    fast, acc = comparison_loss(s1, groups)
    slow = brute_force_loss(s2, groups)
    assert torch.allclose(fast, slow, atol=1e-6)
    fast.backward()
    slow.backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-6)
    assert 0 <= acc <= 1


def test_comparison_loss_at_equal_scores_is_log2():
    assert abs(comparison_loss(torch.zeros(6), [(0, [0, 1, 2, 3, 4, 5])])[0].item() - math.log(2)) < 1e-6


def test_score_read_at_last_real_token_left_and_right_padding(tok):
    torch.manual_seed(0)
    rm = ScalarModel(tiny_cfg(tok)).eval()
    seqs = [render(tok, "where does anna live?", "paris")[0], render(tok, "cat", "the mat. the cat sat")[0]]
    # right padding (how reward.py batches)
    ids, attn, resp = rm_batch(tok, ["where does anna live?", "cat"], ["paris", "the mat. the cat sat"], "cpu")
    # left padding (how PPO rollouts are laid out)
    lids, lattn = left_pad(seqs, tok.pad_id)
    with torch.no_grad():
        alone = [rm(torch.tensor([s]))[0, -1] for s in seqs]  # unpadded: the last position
        right = rm.score(ids, attn)
        left = rm.score(lids, lattn)
    for i in range(2):
        assert abs(right[i] - alone[i]) < 1e-5 and abs(left[i] - alone[i]) < 1e-5


def test_sft_targets_only_on_response(tok):
    x, y = sft_batch(tok, ["where does anna live?"], ["anna lives in paris."], "cpu")
    ids, mask = render(tok, "where does anna live?", "anna lives in paris.")
    n_resp = sum(mask)
    assert (y != -1).sum().item() == n_resp  # response tokens + EOT, nothing else
    assert y[0, -1].item() == tok.eot_id
    assert x.shape == y.shape and x.shape[1] == len(ids) - 1


def test_sft_loss_ignores_prompt_and_padding(tok):
    torch.manual_seed(0)
    m = GPT(tiny_cfg(tok)).eval()
    prompts, responses = ["where does anna live?", "cat"], ["paris.", "the mat"]
    x, y = sft_batch(tok, prompts, responses, "cpu")
    with torch.no_grad():
        logits, loss = m(x, y)
        # by hand: cross-entropy over exactly the response positions of each unpadded row
        terms = []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            ids, mask = render(tok, p, r)
            for t in range(len(ids) - 1):
                if mask[t + 1]:
                    terms.append(F.cross_entropy(logits[i, t][None], torch.tensor([ids[t + 1]])))
        assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-6)
        # changing what sits at a padding position (end of the shorter row) changes nothing
        x2 = x.clone()
        x2[1, -1] = 7
        assert torch.allclose(loss, m(x2, y)[1])
        # ... nor does changing a prompt position's target to anything, because it is -1 by construction
        assert (y[0, : len(render(tok, prompts[0])[0]) - 1] == -1).all()


def test_overfit_one_batch_sft(tok):
    torch.manual_seed(0)
    m = GPT(tiny_cfg(tok))
    x, y = sft_batch(tok, ["where does anna live?", "cat?"], ["anna lives in paris.", "the cat sat on the mat."],
                     "cpu")
    opt = m.configure_optimizer(3e-3, 0.0)
    for _ in range(150):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_overfit_rm_accuracy_to_one(tok):
    torch.manual_seed(0)
    rm = ScalarModel(tiny_cfg(tok))
    comps = [("where does anna live?", ["paris.", "the cat.", "mat mat mat", "anna lives in paris."], [3, 0, 1, 2]),
             ("cat?", ["the cat sat.", "where?", "on the mat."], [0, 2, 1])]
    prompts = [p for p, rs, _ in comps for _ in rs]
    responses = [r for _, rs, _ in comps for r in rs]
    ids, attn, _ = rm_batch(tok, prompts, responses, "cpu")
    groups = [(0, comps[0][2]), (4, comps[1][2])]
    opt = torch.optim.Adam(rm.parameters(), lr=3e-3)
    for _ in range(100):
        loss, acc = comparison_loss(rm.score(ids, attn), groups)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert acc == 1.0 and loss.item() < 0.1


def test_unseen_token_rows_do_not_move(tok):
    """SFT's fix for the alignment-tax artefact: embedding rows of tokens absent from the
    demonstrations stay bit-identical under AdamW (tied unembedding and all), the rest train."""
    from sft import unseen_token_mask
    torch.manual_seed(0)
    m = GPT(tiny_cfg(tok))
    demos = [{"prompt": "where does anna live?", "response": "anna lives in paris."}]
    unseen = unseen_token_mask(tok, demos, m.config.vocab_size)
    used = set(render(tok, demos[0]["prompt"], demos[0]["response"])[0])
    assert all(unseen[t] == (t not in used) for t in range(m.config.vocab_size))
    m.transformer.wte.weight.register_hook(lambda g: g.masked_fill(unseen[:, None], 0.0))
    before = m.transformer.wte.weight.detach().clone()
    opt = m.configure_optimizer(1e-2, 0.0)
    x, y = sft_batch(tok, [demos[0]["prompt"]], [demos[0]["response"]], "cpu")
    for _ in range(5):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.transformer.wte.weight.detach()
    assert torch.equal(after[unseen], before[unseen])
    assert (after[~unseen] - before[~unseen]).abs().amax(1).min() > 0  # every used row moved


def test_sft_pairs_only_keeps_the_ranking_order():
    from reward import sft_pairs_only
    c = {"prompt": "p", "responses": ["d", "a", "b", "base", "c"], "sources": ["demo", "sft@0.7", "sft@1.0",
                                                                            "base@1.0", "sft@0.7"],
         "ranking": [0, 4, 3, 1, 2]}  # best first: d > c > base > a > b
    (out,) = sft_pairs_only([c])
    assert out["responses"] == ["a", "b", "c"]
    assert out["ranking"] == [2, 0, 1]  # c > a > b
    assert sft_pairs_only([{**c, "sources": ["demo", "sft", "base", "base", "demo"]}]) == []  # < 2 left
    plain = {"prompt": "p", "responses": ["x", "y"], "ranking": [1, 0]}
    assert sft_pairs_only([plain]) == [plain]  # no sources: all kept


def test_likelihood_term_of_the_reward_by_hand_and_under_any_padding(tok):
    """score = head at the last token + lm_coef * mean log p(response tokens), p from the trunk's
    own LM head; the same number for right padding (reward.py) and left padding (PPO rollouts)."""
    torch.manual_seed(0)
    rm = ScalarModel(tiny_cfg(tok)).eval()
    with torch.no_grad():
        rm.lm_coef.fill_(0.7)
    pairs = [("where does anna live?", "paris"), ("cat", "the mat. the cat sat")]
    ids, attn, resp = rm_batch(tok, [p for p, _ in pairs], [r for _, r in pairs], "cpu")
    seqs = [render(tok, p, r) for p, r in pairs]
    lids, lattn = left_pad([s for s, _ in seqs], tok.pad_id)
    lresp, _ = left_pad([m for _, m in seqs], 0)
    with torch.no_grad():
        right, left = rm.score(ids, attn, resp), rm.score(lids, lattn, lresp)
        for i, (s, m) in enumerate(seqs):
            x = torch.tensor([s])
            head = rm(x)[0, -1]
            logp = torch.log_softmax(rm.trunk(x)[0][0], -1)  # (T, V)
            terms = [logp[t - 1, s[t]] for t in range(1, len(s)) if m[t]]  # response tokens and the EOT
            want = head + 0.7 * torch.stack(terms).mean()
            assert abs(right[i] - want) < 1e-4 and abs(left[i] - want) < 1e-4
    with pytest.raises(ValueError):
        rm.score(ids, attn)  # a likelihood term needs to know which tokens are the response


def test_ranking_agreement_by_hand():
    """Two labelers' rankings of the same responses: the share of the first one's C(K,2) pairs
    the second orders the same way; comparisons without a second ranking are skipped."""
    from reward import ranking_agreement
    same = {"ranking": [2, 0, 1], "second_ranking": [2, 0, 1]}
    flipped = {"ranking": [0, 1], "second_ranking": [1, 0]}
    one_swap = {"ranking": [0, 1, 2], "second_ranking": [0, 2, 1]}  # (0,1) (0,2) agree, (1,2) does not
    assert ranking_agreement([same]) == (1.0, 3)
    assert ranking_agreement([flipped]) == (0.0, 1)
    assert ranking_agreement([one_swap, {"ranking": [1, 0]}]) == (2 / 3, 3)
    assert ranking_agreement([same, flipped, one_swap]) == (5 / 7, 7)
    agree, n = ranking_agreement([{"ranking": [0, 1]}])
    assert n == 0 and agree != agree  # nan: nothing to measure


def test_reward_batch_loss_goes_through_the_given_score(tok):
    """reward.batch_loss scores every response of its prompts in one forward of `score` (rm.score
    or it compiled) and takes the C(K,2) loss of each prompt."""
    from reward import batch_loss
    torch.manual_seed(0)
    rm = ScalarModel(tiny_cfg(tok)).eval()
    comps = [{"prompt": "where does anna live?", "responses": ["paris.", "the cat.", "mat"], "ranking": [0, 2, 1]},
             {"prompt": "cat?", "responses": ["the cat sat.", "where?"], "ranking": [1, 0]}]
    calls = []
    score = lambda *a: calls.append(len(a[0])) or rm.score(*a)  # noqa: E731
    with torch.no_grad():
        loss, acc = batch_loss(score, tok, [comps[1], comps[0]], "cpu")  # prompt 1, then prompt 0
        s = rm.score(*rm_batch(tok, ["cat?"] * 2 + ["where does anna live?"] * 3,
                               ["the cat sat.", "where?", "paris.", "the cat.", "mat"], "cpu"))
        want, want_acc = comparison_loss(s, [(0, [1, 0]), (2, [0, 2, 1])])
        assert calls == [5] and torch.allclose(loss, want) and acc == want_acc


def test_sft_and_reward_resume_continue_their_counters(files, tmp_path):
    """sft.py and reward.py write out.last after every epoch; --resume=True with more epochs
    picks up the epoch, step and history there instead of starting over."""
    from conftest import run
    d = files
    sft = [f"--init={d}/base.pt", f"--data={d}/demos.jsonl", "--batch_size=8", "--ptx_data=", "--heldout=",
           "--n_eval=2", "--max_new_tokens=4", "--warmup_steps=1", f"--out={tmp_path}/sft.pt"]
    run("sft.py", sft + ["--epochs=1"])
    log = run("sft.py", sft + ["--epochs=2", "--resume=True"])
    last = torch.load(f"{tmp_path}/sft.pt.last", weights_only=True)
    assert "resumed from" in log and "step 0/2" not in log and "step 2/2" in log
    assert (last["epoch"], last["step"], [h["epoch"] for h in last["history"]]) == (2, 8, [0, 1, 2])
    rm = [f"--init={tmp_path}/sft.pt", f"--data={d}/comps.jsonl", "--val=", "--val_heldout=", f"--demos={d}/demos.jsonl",
          "--batch_size=4", "--warmup_steps=1", f"--out={tmp_path}/rm.pt"]
    run("reward.py", rm + ["--epochs=1"])
    log = run("reward.py", rm + ["--epochs=2", "--resume=True"])
    last = torch.load(f"{tmp_path}/rm.pt.last", weights_only=True)
    assert "resumed from" in log and "step 1/2" not in log and "step 2/2" in log
    assert (last["epoch"], last["step"], [h["epoch"] for h in last["history"]]) == (2, 10, [1, 2])
    assert torch.load(f"{tmp_path}/rm.pt", weights_only=True)["stage"] == "reward"
