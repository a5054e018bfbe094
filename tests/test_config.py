from pathlib import Path

import pytest

from autointerp.config import load_config
from autointerp.selection import parse_feature_spec
from autointerp.errors import ConfigError

MINIMAL = '[sae]\npath = "sae"\n[corpus]\nvectors = "v.npy"\nitems = "i.csv"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_paths_resolve_against_the_config_folder(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.sae.path == tmp_path / "sae"
    assert config.corpus.items == tmp_path / "i.csv"
    assert config.db_url == f"sqlite:///{tmp_path / 'autointerp-out' / 'autointerp.db'}"


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "[llm]\nprovder = 'openai'\n", "unknown key 'provder' in [llm] (expected one of: api_key_env,"),
    (MINIMAL + "[mine]\nn_top = 'ten'\n", "[mine] n_top = 'ten': Input should be a valid integer"),
    (MINIMAL + "[llm]\nprovider = 'claude'\n", "[llm] provider = 'claude': not a registered provider: use one of offline, mock, "),
    (MINIMAL + "[llm.prices]\nm = [nan, 1.0]\n", "price of 'm' must be [input, output] or [input, output, audio]: finite"),
    (MINIMAL + "[llm.prices]\nm = [1.0, -2.0]\n", "0 or more, not [1.0, -2.0]"),
    (MINIMAL + "[llm.prices]\nm = [1.0, inf, 3.0]\n", "finite USD per million tokens"),
    (MINIMAL + "[llm]\nprovider = 'mock'\n[llm.options]\nx = 1\n", "provider 'mock' takes no options"),
    (MINIMAL + "[llm]\nmax_retry_wait_s = -1\n", "[llm] max_retry_wait_s = -1"),
    (MINIMAL + "[llm]\nstructured = 'xml'\n", "[llm] structured = 'xml'"),
    ('[corpus]\nvectors = "v.npy"\nitems = "i.csv"\n', "missing section [sae]"),
    ('[sae]\nformat = "auto"\n[corpus]\nvectors = "v.npy"\nitems = "i.csv"\n', "missing key 'path' in [sae]"),
    (MINIMAL + "[extra]\n", "unknown key 'extra' in the top level"),
    (MINIMAL + "[select]\nfeatures = '5-2'\n", "bad feature range '5-2'"),
    (MINIMAL + "[select]\nfeatures = [4, -1]\n", "[select] features = [4, -1]: bad feature range '-1'"),
    (MINIMAL + "[select]\nfeatures = [4, true]\n", "[select] features = [4, True]: Input should be a valid string"),
    (MINIMAL + "[output]\ndb = 'sqlite://'\n", "[output] db = 'sqlite://': an in-memory database keeps nothing"),
    (MINIMAL + "[output]\ndir = ''\n", "[output] dir = '': an empty path: name a file or folder"),
    (MINIMAL + "[output]\ndb = 'sqlite+pysqlite:///:memory:'\n", "an in-memory database keeps nothing after the run"),
    (MINIMAL + "[output]\ndb = 'sqlite:///file:x?mode=memory&uri=true'\n", "an in-memory database keeps nothing"),
    (MINIMAL + "[mine]\nn_top = '" + "m" * 5000 + "'\n", "[mine] n_top = '" + "m" * 118 + "…: Input should be"),
    ("[sae\n", "is not valid TOML"),
    (MINIMAL + "[mine]\nn_top = 10.0\n", "[mine] n_top = 10.0: Input should be a valid integer"),
    (MINIMAL + "[llm]\nbatch = 'true'\n", "[llm] batch = 'true': Input should be a valid boolean"),
    (MINIMAL + "[llm]\nmax_cost = inf\n", "[llm] max_cost = inf: Input should be a finite number"),
    (MINIMAL + "[output]\naudio_budget_mb = nan\n", "[output] audio_budget_mb = nan: Input should be a finite number"),
    (MINIMAL + "[explain]\nprompts_dir = ''\n", "[explain] prompts_dir = '': an empty path"),
    (MINIMAL.replace('"v.npy"', '[]'), "[corpus] vectors = []: an empty list"),
    (MINIMAL + "[llm]\napi_key_env = 'MY KEY'\n", "not an environment variable name"),
    (MINIMAL + "[llm]\nbase_url = 'ftp://host/v1'\n", "not an http:// or https:// URL"),
    (MINIMAL + "[score]\nmethods = []\n", "[score] methods = []: name each scorer once, at least one"),
    (MINIMAL + "[score]\nmethods = ['detection', 'detection']\n", "name each scorer once"),
    (MINIMAL + "[llm]\nmodel = '  '\n", "[llm] model = '  ': a model name with spaces around it"),
    (MINIMAL + "[llm]\nmodel = 'gpt-4.1-mini '\n", "a model name with spaces around it"),
    (MINIMAL + "[[taxonomy.groups]]\nname = 'a'\ntags = ['x', ' ']\n", "a blank tag name"),
    (MINIMAL + "[llm]\nmax_output_tokens = 9223372036854775807\n", "[llm] max_output_tokens = 9223372036854775807: "
                                                                   "Input should be less than or equal to 2147483647"),
])
def test_bad_configs_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path / "c.toml") in str(err.value)
    assert "\n" not in str(err.value)


def test_a_byte_order_mark_is_not_part_of_the_toml(tmp_path):
    """Windows editors start UTF-8 files with a BOM; the config reads as without it."""
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    config = load_config(path)
    assert config.sae.path == tmp_path / "sae" and config.corpus.items == tmp_path / "i.csv"


def test_a_folder_as_config(tmp_path):
    with pytest.raises(ConfigError, match="config file .* is a folder: pass the path of a TOML file"):
        load_config(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.toml not found"):
        load_config(tmp_path / "nope.toml")


def test_overrides_win_and_are_validated(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), {"llm.provider": "mock", "select.limit": 3, "llm.model": None})
    assert config.llm.provider == "mock" and config.select.limit == 3
    with pytest.raises(ConfigError, match=r"\[select\] limit = -1"):
        load_config(write(tmp_path, MINIMAL), {"select.limit": -1})


def test_a_list_of_feature_indices_selects_them(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + "[select]\nfeatures = [42, 3, 17]\n"))
    assert parse_feature_spec(config.select.features) == {3, 17, 42}


def test_feature_spec():
    assert parse_feature_spec("") is None
    assert parse_feature_spec("0-3, 7") == {0, 1, 2, 3, 7}


def test_example_configs_are_valid():
    examples = Path(__file__).parent.parent / "examples"
    files = sorted(examples.glob("*.toml"))
    assert {f.stem for f in files} >= {"demo", "openai", "gemini", "local_server"}
    for path in files:
        config = load_config(path)
        assert config.sae.path.is_absolute()
