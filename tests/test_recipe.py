"""Recipe validation: strict keys, types, ranges and --set overrides, with exact messages."""

import pytest

import tiny_model  # noqa: F401  (registers the test model)
from natgan import recipe
from natgan.errors import ConfigError


def write(tmp_path, text, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = '[model]\nname = "_tiny_test"\nresolution = 8\n'


def test_loads_defaults_and_values(tmp_path):
    r = recipe.load(write(tmp_path, BASE + "[train]\nbatch = 8\nd_lr = 1\n"))
    assert r.model_name == "_tiny_test" and r.model.resolution == 8
    assert r.train.batch == 8 and r.train.d_lr == 1.0 and isinstance(r.train.d_lr, float)
    assert r.train.r1_every == 16 and r.eval.mode == "legacy_pytorch"


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, BASE + "[train]\nbacth = 8\n")
    with pytest.raises(ConfigError) as exc:
        recipe.load(path)
    assert str(exc.value).startswith(f"{path}: unknown key 'train.bacth' (did you mean 'batch'?)")


def test_wrong_type_exact_message(tmp_path):
    path = write(tmp_path, BASE + '[train]\nbatch = "eight"\n')
    with pytest.raises(ConfigError) as exc:
        recipe.load(path)
    assert str(exc.value) == f"{path}: key 'train.batch': expected int, got 'eight'"


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'train.batch': expected int, got True"):
        recipe.load(write(tmp_path, BASE + "[train]\nbatch = true\n"))


def test_out_of_range(tmp_path):
    path = write(tmp_path, BASE + "[train]\nbatch = 0\n")
    with pytest.raises(ConfigError) as exc:
        recipe.load(path)
    assert str(exc.value) == f"{path}: key 'train.batch': expected int >= 1, got 0"


def test_literal_choice(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'train.precision': expected 'fp32' \| 'tf32' \| 'bf16', got 'fp16'"):
        recipe.load(write(tmp_path, BASE + '[train]\nprecision = "fp16"\n'))


def test_unknown_section_and_model_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section '\[trian\]'"):
        recipe.load(write(tmp_path, BASE + "[trian]\nbatch = 8\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'model.widht' \(did you mean 'width'\?\)"):
        recipe.load(write(tmp_path, BASE + "widht = 3\n"))
    with pytest.raises(ConfigError, match=r"key 'model.name': unknown model 'nope'"):
        recipe.load(write(tmp_path, '[model]\nname = "nope"\n'))


def test_cross_field_validation(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'train.batch_per_gpu': expected int <= train.batch \(8\), got 16"):
        recipe.load(write(tmp_path, BASE + "[train]\nbatch = 8\nbatch_per_gpu = 16\n"))


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        recipe.load(write(tmp_path, "[model\n"))
    with pytest.raises(ConfigError, match="recipe file not found"):
        recipe.load(tmp_path / "missing.toml")


def test_set_overrides_are_typed_and_validated(tmp_path):
    path = write(tmp_path, BASE)
    r = recipe.load(path, ["train.batch=16", "train.precision=bf16", "model.width=4", "train.bcr=false"])
    assert (r.train.batch, r.train.precision, r.model.width, r.train.bcr) == (16, "bf16", 4, False)
    with pytest.raises(ConfigError) as exc:
        recipe.load(path, ["train.batch=big"])
    assert str(exc.value) == "--set train.batch=big: key 'train.batch': expected int, got 'big'"
    with pytest.raises(ConfigError, match=r"--set train.bath=3: unknown key 'train.bath'"):
        recipe.load(path, ["train.bath=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        recipe.load(path, ["train.batch"])
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        recipe.load(path, ["batch=3"])


def test_round_trip_through_dict_and_toml(tmp_path):
    r = recipe.load(write(tmp_path, BASE), ["train.batch=4"])
    again = recipe.from_dict(r.to_dict())
    assert again.to_dict() == r.to_dict()
    reread = recipe.load(write(tmp_path, r.to_toml(), "resolved.toml"))
    assert reread.to_dict() == r.to_dict()
