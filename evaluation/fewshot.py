"""
The paper's "prompted GPT-3" baseline, for evaluate.py: a base model given a few-shot page
of Q&A examples (data/world/fewshot.txt) before each prompt. It never saw the chat tokens
that tokenizer.render adds, so it is asked in the page's own format ("Question: <prompt>" /
"Answer:") and its answer is the rest of that line.

    prefix, k = fit_fewshot(tok, page, "Where does Mepol live?", room=200)  # k whole examples fit
    texts = sample_prompted(model, tok, prompts, [prefix] * len(prompts), 48, 0.7, seed=0)
"""
import torch

from common import autocast, sampling_generator
from data.world import QA_A, QA_Q
from model import generate
from tokenizer import decode_response


def fewshot_examples(text):
    """Split a few-shot page into examples, each starting at a "Question: " line."""
    blocks = []
    for line in text.splitlines(keepends=True):
        if line.startswith(QA_Q) or not blocks:
            blocks.append("")
        blocks[-1] += line
    return blocks


def qa_prompt(fewshot, prompt):
    """The prompted base model's input: the few-shot page, then the question, then "Answer:"."""
    return f"{fewshot}{QA_Q}{prompt}\n{QA_A.rstrip()}"


def fit_fewshot(tok, fewshot, prompt, room):
    """The longest run of leading few-shot examples with which `prompt` fits in `room`
    tokens -> (prefix, n_examples). Never cut mid-example: that would teach a broken format.

        fit_fewshot(tok, "Question: a\nAnswer: b\nQuestion: c\nAnswer: d\n", "Hi?", 12)
        -> ("Question: a\nAnswer: b\n", 1)   # if only one example leaves room for "Hi?"
    """
    blocks = fewshot_examples(fewshot)
    for k in range(len(blocks), 0, -1):
        prefix = "".join(blocks[:k])
        if len(tok.encode(qa_prompt(prefix, prompt))) <= room:
            return prefix, k
    return "", 0


@torch.no_grad()
def sample_prompted(model, tok, prompts, prefixes, max_new_tokens, temperature, seed):
    """Few-shot prompting of a base model: each prompt after its few-shot page (a list, one
    per prompt), continue the Q&A page and keep the rest of the "Answer:" line."""
    device = next(model.parameters()).device
    model.eval()
    g = sampling_generator(device, seed)
    ids = [tok.encode(qa_prompt(f, p)) for f, p in zip(prefixes, prompts)]
    with autocast(device.type):
        out = generate(model, ids, max_new_tokens, tok.eot_id, tok.pad_id, temperature=temperature, generator=g)
    texts = []
    for r, m in zip(out["response"].tolist(), out["response_mask"].tolist()):
        text = decode_response(tok, r, m)
        texts.append(text.strip().split("\n", 1)[0].strip())  # then it goes on with the next "Question:"
    return texts
