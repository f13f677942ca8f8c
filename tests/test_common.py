"""common.parse_config: --key=value and preset files; every user mistake exits 2 with one line."""
from dataclasses import dataclass

import pytest

from common import parse_config


@dataclass
class Cfg:
    lr: float = 1e-3
    epochs: int = 2
    name: str = "x"
    flag: bool = False


def test_overrides_and_presets(tmp_path):
    preset = tmp_path / "p.txt"
    preset.write_text("# a comment\nlr = 3e-4\n\nepochs = 5  # trailing comment\n")
    cfg = parse_config(Cfg(), [str(preset), "--epochs=7", "--flag=True", "--name=123"])
    assert (cfg.lr, cfg.epochs, cfg.flag, cfg.name) == (3e-4, 7, True, "123")


@pytest.mark.parametrize("argv, msg", [
    (["--lr=fast"], "'lr' expects float"),
    (["--epoch=3"], "unknown config key 'epoch' (did you mean epochs?)"),
    (["--lr"], "expected --key=value"),
    (["nope.txt"], "preset file 'nope.txt' not found"),
])
def test_mistakes_are_one_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg(), argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_preset_file_mistakes_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("lr = 1e-4\nepochs 3\n")
    with pytest.raises(SystemExit):
        parse_config(Cfg(), [str(bad)])
    assert f"{bad}:2: expected 'key = value'" in capsys.readouterr().err
    binary = tmp_path / "model.pt"  # e.g. a checkpoint path given without --init=
    binary.write_bytes(b"PK\x03\x04\x80\xff\x00")
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg(), [str(binary)])
    assert e.value.code == 2 and "is not UTF-8 text" in capsys.readouterr().err
