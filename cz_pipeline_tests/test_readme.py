"""The README documents what the code does: the CBF mapping and every setting."""

import re
from pathlib import Path

from cz_pipeline.lib.cbf import DEFAULT_GRAIN, mapping_doc
from cz_pipeline.lib.models import canonical_model_name

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_the_mapping_table_is_the_code_s_mapping() -> None:
    for column, _source, reason in mapping_doc(DEFAULT_GRAIN):
        row = next((line for line in README.splitlines() if line.startswith(f"| `{column}` |")), "")
        assert row, f"README lacks a mapping row for {column}"
        assert row.rstrip().endswith(f"| {reason} |"), row


def test_the_model_name_examples_are_the_code_s_names() -> None:
    section = README.split("#### Model names", 1)[1].split("\n#### ", 1)[0]
    rows = re.findall(r"^\| [^|]+ \| `([^`]+)` \| `([^`]*)` \| `([^`]+)` \|$", section, re.M)
    assert len(rows) >= 8
    for model, provider, name in rows:
        assert canonical_model_name(model, provider) == name, model


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "cz_pipeline").rglob("*.py"))
    names = set(re.findall(r"[\"']((?:CZ|LITELLM|CLOUDZERO)_[A-Z_]+)[\"']", code))
    example = (ROOT / ".env.example").read_text()
    assert len(names) > 10
    assert sorted(n for n in names if n not in README) == []
    assert sorted(n for n in names if f"{n}=" not in example) == []
