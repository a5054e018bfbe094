"""Prompt templates: the bundled ones render, a user folder overrides them file by file (and changes
the template hash), and a broken or unknown-variable template is one ConfigError naming the file."""

import pytest

from autointerp.errors import ConfigError
from autointerp.llm.prompts import Prompts


def test_override_one_file_and_the_hash_follows(tmp_path):
    bundled = Prompts().render("detect", title="T", description="D", examples=[], threshold=5)
    (tmp_path / "detect_user.j2").write_text("Label {{ title }}: {{ description }} ({{ threshold }})")
    mine = Prompts(tmp_path).render("detect", title="T", description="D", examples=[], threshold=5)
    assert mine.user == "Label T: D (5)" and mine.system == bundled.system
    assert mine.template_hash != bundled.template_hash and len(mine.template_hash) == 64


@pytest.mark.parametrize("text, says", [("{{ title ", "detect_user.j2 line 1"),
                                        ("{{ no_such_thing }}", "no_such_thing")])
def test_broken_templates_are_one_config_error(tmp_path, text, says):
    (tmp_path / "detect_user.j2").write_text(text)
    with pytest.raises(ConfigError, match=says):
        Prompts(tmp_path).render("detect", title="T", description="D", examples=[], threshold=5)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="prompts folder"):
        Prompts(tmp_path / "nope")
