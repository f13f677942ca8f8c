"""pipeline.py's command line without running any stage: --seed reaches every stage, --redo reruns
from scratch (no --resume), bad arguments are one-line errors."""
import os
from dataclasses import fields

import pytest

import pipeline
from common import _field_comments


def plan_args(seed):
    return {name: cmd for name, cmd, _ in pipeline.stages("out/x", "out/x/world", seed)}


def test_seed_changes_the_world_and_every_training_seed():
    p0, p2 = plan_args(0), plan_args(2)
    assert "--seed=0" in p0["world"] and "--seed=2" in p2["world"]
    for name in ("base", "base_large", "sft", "collect", "reward", "dpo", "ppo", "ppo_ptx", "ppo_beta0", "evaluate"):
        assert "--seed=1337" in p0[name] and "--seed=1339" in p2[name], name
    assert "--seed=1339" not in p2["world"]  # the world takes the seed itself


def run_main(monkeypatch, tmp_path, argv):
    calls = []
    monkeypatch.setattr(pipeline.subprocess, "call", lambda cmd, cwd: calls.append(cmd) or 0)
    monkeypatch.chdir(tmp_path)
    pipeline.main(argv)
    return {cmd[1] if cmd[1] != "-m" else cmd[2]: cmd for cmd in calls}, calls


def test_redo_reruns_the_stage_and_what_follows_from_scratch(monkeypatch, tmp_path, capsys):
    out = str(tmp_path / "o")
    _, calls = run_main(monkeypatch, tmp_path, [f"--out={out}"])
    assert len(calls) == 12 and all("--resume=True" in c for c in calls if c[1] in ("sft.py", "reward.py", "dpo.py"))
    _, calls = run_main(monkeypatch, tmp_path, [f"--out={out}"])
    assert calls == []  # everything is done
    _, calls = run_main(monkeypatch, tmp_path, [f"--out={out}", "--redo=ppo_beta0"])
    assert [c[1] for c in calls] == ["ppo.py", "ppo.py", "evaluate.py"]  # ppo_beta0, ppo_oracle, evaluate
    assert not any("--resume=True" in c for c in calls)  # a redo must not resume the finished checkpoint
    assert os.path.exists(os.path.join(out, ".done", "ppo_beta0"))


def test_world_facts_builds_world_v1_in_its_own_folders(monkeypatch, tmp_path):
    by_script, _ = run_main(monkeypatch, tmp_path, ["--world=facts"])
    assert "--world=facts" in by_script["data.world"] and "--out=out/facts/world" in by_script["data.world"]
    assert "--out=out/facts/sft.pt" in by_script["sft.py"]
    by_script, _ = run_main(monkeypatch, tmp_path, [])
    assert "--world=v2" in by_script["data.world"] and "--out=data/world" in by_script["data.world"]


def test_oracle_stage_is_labelled_and_alone_reads_the_gold_judge():
    """The ORACLE diagnostic is its own stage; no stage of the real pipeline trains on gold."""
    plan = plan_args(0)
    assert "--reward=gold" in plan["ppo_oracle"] and "--out=out/x/ppo_oracle.pt" in plan["ppo_oracle"]
    assert not any("--reward=gold" in cmd for name, cmd in plan.items() if name != "ppo_oracle")
    assert "ppo_oracle=out/x/ppo_oracle.pt" in " ".join(plan["evaluate"])


def test_seed_picks_its_own_out_dir_and_world(monkeypatch, tmp_path):
    by_script, _ = run_main(monkeypatch, tmp_path, ["--seed=1"])
    assert "--out=out/seed1/world" in by_script["data.world"] and "--seed=1" in by_script["data.world"]
    assert "--out=out/seed1/sft.pt" in by_script["sft.py"]


@pytest.mark.parametrize("argv, msg", [
    (["--seed=x"], "'--seed' expects int"), (["--seed=-1"], "--seed=-1: expected a non-negative integer"),
    (["--bogus"], "unknown option '--bogus' (options: --quick, --seed, --out, --redo, --world, --preset"),
    (["--seeds=1"], "did you mean seed?"), (["quick"], "unexpected argument 'quick': options are --key=value"),
    (["--redo=nope"], "--redo=nope: no such stage; stages are world, base"), (["--redo"], "expected --redo=value"),
    (["--world=v3"], "--world=v3: expected 'v2'"), (["--preset=gpt3"], "--preset=gpt3: expected 'world'"),
    (["--init=gpt2_dir"], "--init is an option of --preset=gpt2"), (["--nproc=2"], "--nproc is an option of --preset=gpt2"),
    (["--preset=gpt2"], "--preset=gpt2 needs --init=, --sft_data=, --comparisons="),
])
def test_bad_arguments(monkeypatch, tmp_path, capsys, argv, msg):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        pipeline.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "out")  # nothing was started


def test_quick_is_a_bare_flag_and_every_option_has_a_comment(monkeypatch, tmp_path, capsys):
    by_script, calls = run_main(monkeypatch, tmp_path, ["--quick"])
    assert "--out=out/quick/world" in by_script["data.world"] and "--scale=0.1" in by_script["data.world"]
    assert by_script["pretrain.py"][-6:-4] == ["--size=small", "--max_iters=60"]  # quick.json's base_large overrides
    (tmp_path / "again").mkdir()
    _, same = run_main(monkeypatch, tmp_path / "again", ["--quick=True"])
    assert same == calls
    with pytest.raises(SystemExit) as e:
        pipeline.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    comments = _field_comments(pipeline.PipelineConfig)
    for f in fields(pipeline.PipelineConfig):
        assert f"--{f.name}=" in out and comments.get(f.name), f.name


def test_gpt2_preset_plan(monkeypatch, tmp_path):
    """--preset=gpt2: absolute paths (the stages run in the repo root), torchrun for the training
    stages with --nproc, presets/gpt2.json and then gpt2_quick.json's overrides, PPO-ptx only with
    --ptx_data."""
    (tmp_path / "gpt2").mkdir()
    for f in ("sft.jsonl", "comps.jsonl", "text.txt"):
        (tmp_path / f).write_text("")
    args = ["--preset=gpt2", "--init=gpt2", "--sft_data=sft.jsonl", "--comparisons=comps.jsonl", "--out=o"]
    _, calls = run_main(monkeypatch, tmp_path, args + ["--nproc=2", "--quick", "--ptx_data=text.txt"])
    by_stage = {next(a for a in c if a.endswith(".py") or a == "public_data.split"): c for c in calls}
    assert [c[1:5] for c in calls if c[1] == "-m" and c[2] != "public_data.split"] == [
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]] * 5  # sft reward dpo ppo ppo_ptx
    assert set(by_stage) == {"public_data.split", "sft.py", "reward.py", "dpo.py", "ppo.py", "evaluate.py"}
    assert f"--init={tmp_path}/gpt2" in by_stage["sft.py"] and f"--ptx_data={tmp_path}/text.txt" in by_stage["sft.py"]
    sft = by_stage["sft.py"]
    assert sft.index("--epochs=2") < sft.index("--epochs=1")  # gpt2.json, then gpt2_quick.json: the quick one wins
    assert sum(c[-1] == "--resume=True" for c in calls) == 5  # sft, reward, dpo, ppo, ppo_ptx
    _, calls = run_main(monkeypatch, tmp_path, args + ["--redo=split"])
    assert [c[1] if c[1] != "-m" else c[2] for c in calls] == ["public_data.split", "sft.py", "reward.py", "dpo.py", "ppo.py",
                                                                "evaluate.py"]  # no ptx_data: no PPO-ptx, no torchrun


def test_every_stage_reads_its_own_world():
    """With another world (a seed, or --quick), no stage may fall back to a default under
    data/world/: that file belongs to the seed-0 world, or does not exist at all. So every
    config field whose DEFAULT points into data/world/ must be set on the command line."""
    from dataclasses import fields

    import collect, dpo, evaluate, ppo, pretrain, reward, sft  # noqa: E401
    configs = {"pretrain.py": pretrain.PretrainConfig, "sft.py": sft.SFTConfig, "collect.py": collect.CollectConfig,
               "reward.py": reward.RewardConfig, "dpo.py": dpo.DPOConfig, "ppo.py": ppo.PPOConfig,
               "evaluate.py": evaluate.EvalConfig}
    for name, cmd, _ in pipeline.stages("out/x", "out/x/world", 3):
        assert not any("data/world" in a for a in cmd), name
        if cmd[1] not in configs:
            continue
        given = {a.split("=", 1)[0][2:] for a in cmd if a.startswith("--")}
        for f in fields(configs[cmd[1]]):
            unread = f.name == "ptx_data" and cmd[1] == "ppo.py" and "ptx_coef" not in given  # plain PPO
            if isinstance(f.default, str) and "data/world/" in f.default and not unread:
                assert f.name in given, f"stage {name}: --{f.name} falls back to {f.default}"
