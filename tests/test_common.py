"""common.py: parse_config (--key=value, a bare --flag; every user mistake exits 2 with one
line), the lr schedule every stage shares, and resume."""
import math
from dataclasses import dataclass

import pytest
import torch

from common import lr_at, parse_config, resume, save_checkpoint


@dataclass
class Cfg:
    lr: float = 1e-3  # the peak learning rate
    epochs: int = 2
    name: str = "x"
    flag: bool = False


def test_overrides_later_ones_win():
    cfg = parse_config(Cfg(), ["--epochs=7", "--flag=True", "--name=123", "--lr=3e-4", "--epochs=8"])
    assert (cfg.lr, cfg.epochs, cfg.flag, cfg.name) == (3e-4, 8, True, "123")  # --name=123 stays a string
    assert parse_config(Cfg(), ["--lr=1", "--flag=0"]).lr == 1.0 and type(Cfg().lr) is float


def test_bare_flag_sets_a_bool_to_true():
    assert parse_config(Cfg(), ["--flag"]).flag is True
    assert parse_config(Cfg(flag=True), ["--flag=False"]).flag is False
    assert parse_config(Cfg(), ["--flag", "--flag=false"]).flag is False  # later wins here too


@pytest.mark.parametrize("argv, msg", [
    (["--lr=fast"], "'--lr' expects float (default 0.001), got 'fast'"),
    (["--flag=maybe"], "'--flag' expects bool"),
    (["--epochs=2.5"], "'--epochs' expects int"),
    (["--epoch=3"], "unknown option '--epoch' (did you mean epochs?)"),
    (["--zzz=1"], "unknown option '--zzz' (options: --lr, --epochs, --name, --flag)"),  # a short list in full
    (["--lr"], "argument '--lr': expected --lr=value"),  # bare options are for booleans only
    (["nope.txt"], "unexpected argument 'nope.txt': options are --key=value"),  # preset files are gone
    (["out/sft.pt"], "unexpected argument 'out/sft.pt'"),  # e.g. a checkpoint path without --init=
    (["-x"], "unexpected argument '-x'"),
])
def test_mistakes_are_one_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg(), argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and err.count("\n") == 1, err


def test_help_lists_every_option_with_default_and_comment(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg(), ["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--lr=0.001" in out and "the peak learning rate" in out and "--flag=False" in out


def test_lr_at_by_hand():
    # linear (RM, DPO, PPO): the lower of the warmup ramp and the decay to 0
    assert lr_at(0, 10, 1.0, warmup=2) == 0.5 and lr_at(1, 10, 1.0, warmup=2) == 0.9  # ramp 1, decay 0.9
    assert lr_at(2, 10, 1.0, warmup=4) == 0.75  # ramp 3/4 < decay 0.8
    assert lr_at(5, 10, 1.0) == 0.5 and lr_at(0, 10, 1.0) == 1.0 and lr_at(9, 10, 1.0) == pytest.approx(0.1)
    # cosine (pretraining, SFT): ramp, peak at the end of warmup, half way at the middle, floor at the end
    assert lr_at(0, 12, 1.0, warmup=2, floor=0.1) == 0.5
    assert lr_at(2, 12, 1.0, warmup=2, floor=0.1) == 1.0
    assert lr_at(7, 12, 1.0, warmup=2, floor=0.1) == pytest.approx(0.55)
    assert lr_at(12, 12, 1.0, warmup=2, floor=0.1) == pytest.approx(0.1) == lr_at(20, 12, 1.0, warmup=2, floor=0.1)


def test_lr_at_is_bit_identical_to_the_stages_former_schedules():
    """pretrain.py's nanoGPT schedule and reward.py's / dpo.py's linear one, as they were
    written before they moved here: every value equal, not just close."""
    def pretrain_old(it, lr, warmup, max_iters, min_lr):
        if it < warmup:
            return lr * (it + 1) / warmup
        frac = (it - warmup) / max(1, max_iters - warmup)
        return min_lr + 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))) * (lr - min_lr)
    for it in range(900):
        assert lr_at(it, 900, 3e-3, 50, floor=3e-4) == pretrain_old(it, 3e-3, 50, 900, 3e-4), it
    for total, warmup in ((13, 10), (169, 10), (5, 2)):
        for step in range(total):
            assert lr_at(step, total, 3e-4, warmup) == 3e-4 * min((step + 1) / warmup, 1 - step / total)
            assert lr_at(step, total, 1e-4, 0) == 1e-4 * min((step + 1) / max(1, 0), 1 - step / total)


def test_resume_restores_model_and_optimizer(tmp_path, capsys):
    path = str(tmp_path / "x.pt.last")
    assert resume(path, "sft", "cpu") is None  # nothing to resume: a fresh start
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_checkpoint(dict(stage="sft", model=model.state_dict(), optimizer=opt.state_dict(), epoch=3), path)
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    ck = resume(path, "sft", "cpu", fresh, fresh_opt)
    assert ck["epoch"] == 3 and "resumed from" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh_opt.state_dict()["state"][0]["step"] == 1
    with pytest.raises(SystemExit) as e:
        resume(path, "reward_partial", "cpu")
    assert e.value.code == 1 and "is a 'sft' checkpoint, not a 'reward_partial' one" in capsys.readouterr().err
