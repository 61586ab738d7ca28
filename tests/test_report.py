"""The results table comes from the ledger, its sources are citable, and reader text speaks to readers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from companion import report
from companion.lab import results as lab_results

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_table_equals_what_the_ledger_gives():
    assert report.readme_section(ROOT / "README.md") == report.markdown(), (
        "README.md's results table differs from the committed results: "
        "run python -m companion report --write README.md")


def test_every_row_has_a_verdict_its_ledger_files_and_a_source_for_each_paper_number():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for f in report.FINDINGS:
        assert f.verdict in report.VERDICTS
        assert f.chapter in report.CHAPTERS
        for entry in f.ledger:
            assert (ROOT / "results" / f"{entry}.json").is_file(), entry
        if f.paper != "—":
            assert f.source in keys, f"{f.measured!r}: paper number without a bibliography source ({f.source!r})"
        assert re.search(r"\d", f.ours()), f"{f.measured!r}: no number in our column"


def test_chapter_tables_hold_only_that_chapters_rows():
    table = report.markdown("pyramidkv", citations="myst")
    assert "{cite}`cai2024pyramidkv`" in table
    body = table.splitlines()[2:]
    assert len(body) == len(report.findings("pyramidkv"))
    with pytest.raises(ValueError, match="chapter"):
        report.markdown("nope")


def test_a_missing_result_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(lab_results, "RESULTS_DIR", tmp_path)
    with pytest.raises(report.MissingResult, match="results/lab/perplexity.json"):
        report.markdown("lab")


def test_write_and_check_round_trip(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.START}\nstale\n{report.END}\n\nafter\n")
    assert report.write_readme(readme)
    assert report.readme_section(readme) == report.markdown()
    assert readme.read_text().endswith("\n\nafter\n")
    assert not report.write_readme(readme)
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no generated results table"):
        report.readme_section(readme)


# Words about how the project is run, which mean nothing to a reader (the project's own planning vocabulary).
PLANNING = re.compile(
    r"\b(the issue|this issue|issue's|an issue's|(paper )?brief|briefs|tickets?|a user of the code"
    r"|the target was|target \(issue\)|(issue|brief)'s target)\b", re.IGNORECASE)


def _reader_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "book").rglob("*.md"))]


def test_reader_text_has_no_planning_words():
    hits = []
    for path in _reader_files():
        if "_vendor" in path.parts:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PLANNING.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "planning words in reader text:\n" + "\n".join(hits)


def test_the_planning_word_scan_catches_what_it_should():
    for text in ("The issue's target was 10%.", "the paper brief says", "reported by a user of the code"):
        assert PLANNING.search(text), text
    for text in ("the target sparsity 1 - k/E", "ReMoE's λ reaches the target"):
        assert not PLANNING.search(text), text

