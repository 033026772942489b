"""Version descriptions: one bordered table per version, links that survive MLflow's sanitizer,
release state, and no gap-closed value where nothing was closed."""

from __future__ import annotations

import json
import re

from fct_registry.registry import description as D
from fct_registry.registry import tags as T

GATE = {
    T.GATE_VERDICT: "pass",
    T.GATE_REPORT: json.dumps(
        {
            "verdict": "pass",
            "baseline": 1,
            "checks": {"a": {"status": "pass"}, "b": {"status": "pass"}, "c": {"status": "fail"}},
            "at": "2026-11-29T18:00:00Z",
        }
    ),
}


def _visible(text: str) -> list[str]:
    table = text.split("<pre>\n", 1)[1].split("\n</pre>", 1)[0]
    return [re.sub(r"<[^>]+>", "", line) for line in table.splitlines()]


def test_embedding_page_shows_release_state_and_links():
    tags = {
        T.EMBEDDING_DIM: "128",
        T.CLASSES: "[0, 1, 2, 3, 4]",
        T.SIDE_INFO: "fam-side-info/1",
        T.TOP1: "82.5",
        T.PIPELINE_KEY: "2",
        **GATE,
    }
    edge = D.Linked("fam-transformations", 4, {T.SOURCE: "1", T.TARGET: "2", T.TOP1: "81.46"})
    chain = D.Linked(
        "fam-transformations",
        7,
        {T.SOURCE: "2", T.TARGET: "4", T.ROLE: T.ROLE_CHAIN, T.HOPS: "5,6", T.TOP1: "80"},
    )
    text = D.embedding_description(
        "fam", 2, tags, into=[edge], out_of=[chain], aliases=["production"]
    )
    lines = _visible(text)
    assert len({len(line) for line in lines}) == 1  # a closed box
    assert any(
        "release gate" in line and "PASS against @1: 2 rules passed, 1 failed" in line
        for line in lines
    )
    assert any("@production (serving)" in line for line in lines)
    assert any("trained on classes" in line and "0–4" in line for line in lines)
    assert any("@2 → @4 chain, top-1 80.0" in line for line in lines)
    assert '<a href="#/models/fam-transformations/versions/7">' in text
    assert "[compatibility page](fct/family/fam)" in text


def test_chain_page_links_every_hop_and_shows_no_kind():
    tags = {T.ROLE: T.ROLE_CHAIN, T.SOURCE: "1", T.TARGET: "3", T.HOPS: "1,3", T.TOP1: "85"}
    text = D.transformation_description("fam", 9, tags)
    assert "chain of 2 transformations, measured end to end" in text
    for hop in (1, 3):
        assert f'<a href="#/models/fam-transformations/versions/{hop}">' in text
    assert (
        '<a href="#/models/fam/versions/1">fam/1</a> → <a href="#/models/fam/versions/3">' in text
    )


def test_missing_numbers_show_a_dash_not_a_made_up_gap():
    text = D.transformation_description("fam", 1, {T.SOURCE: "1", T.TARGET: "2"})
    assert "old→new gap closed" in text and "top-1 —% · mAP —%" in text


def test_long_pages_are_cut_inside_the_box():
    many = [
        D.Linked("fam-transformations", i, {T.SOURCE: "1", T.TARGET: str(i), T.TOP1: "50"})
        for i in range(2, 200)
    ]
    text = D.embedding_description("fam", 1, {}, into=[], out_of=many)
    assert len(text) <= D.MAX_DESCRIPTION and text.count("<pre>") == text.count("</pre>") == 1
    lines = _visible(text)
    assert lines[0].startswith("┌") and lines[-1].startswith("└")
    assert "table shortened" in text


def test_the_lead_line_reads_as_plain_text_in_mlflow_version_lists():
    """MLflow's version tables show the description raw and cut short: the first line carries
    no markdown (``**``, backticks, links), so it reads the same there and on the page."""
    tags = {T.SOURCE: "1", T.TARGET: "2", T.KIND: "fct", T.SIDE_INFO: "fam-side-info/1"}
    chain = {T.SOURCE: "1", T.TARGET: "3", T.ROLE: T.ROLE_CHAIN, T.HOPS: "4,5"}
    texts = {
        "fam@2: embedding model": D.embedding_description("fam", 2, {}, into=[], out_of=[]),
        "fam@1 → fam@2: FCT transformation (fct)": D.transformation_description("fam", 4, tags),
        "fam@1 → fam@3: chain of 2": D.transformation_description("fam", 6, chain),
        "fam-side-info/1: side-info extractor": D.side_info_description("fam", 1, {}, readers=[]),
    }
    for start, text in texts.items():
        lead = text.split("\n", 1)[0]
        assert lead.startswith(start), lead
        assert not re.search(r"\*\*|`|\[|<", lead), lead
