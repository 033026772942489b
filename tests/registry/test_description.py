"""Version descriptions: one bordered table per version, links that survive MLflow's sanitizer,
release state, and no gap-closed value where nothing was closed."""

from __future__ import annotations

import json
import re

from fct_registry.registry import description as descriptions
from fct_registry.registry import tags as fct_tags

GATE = {
    fct_tags.GATE_VERDICT: "pass",
    fct_tags.GATE_REPORT: json.dumps(
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
        fct_tags.EMBEDDING_DIM: "128",
        fct_tags.CLASSES: "[0, 1, 2, 3, 4]",
        fct_tags.SIDE_INFO: "fam-side-info/1",
        fct_tags.TOP1: "82.5",
        fct_tags.PIPELINE_KEY: "2",
        **GATE,
    }
    edge = descriptions.Linked(
        "fam-transformations",
        4,
        {fct_tags.SOURCE: "1", fct_tags.TARGET: "2", fct_tags.TOP1: "81.46"},
    )
    chain = descriptions.Linked(
        "fam-transformations",
        7,
        {
            fct_tags.SOURCE: "2",
            fct_tags.TARGET: "4",
            fct_tags.ROLE: fct_tags.ROLE_CHAIN,
            fct_tags.HOPS: "5,6",
            fct_tags.TOP1: "80",
        },
    )
    text = descriptions.embedding_description(
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
    tags = {
        fct_tags.ROLE: fct_tags.ROLE_CHAIN,
        fct_tags.SOURCE: "1",
        fct_tags.TARGET: "3",
        fct_tags.HOPS: "1,3",
        fct_tags.TOP1: "85",
    }
    text = descriptions.transformation_description("fam", 9, tags)
    assert "chain of 2 transformations, measured end to end" in text
    for hop in (1, 3):
        assert f'<a href="#/models/fam-transformations/versions/{hop}">' in text
    assert (
        '<a href="#/models/fam/versions/1">fam/1</a> → <a href="#/models/fam/versions/3">' in text
    )


def test_missing_numbers_show_a_dash_not_a_made_up_gap():
    text = descriptions.transformation_description(
        "fam", 1, {fct_tags.SOURCE: "1", fct_tags.TARGET: "2"}
    )
    assert "old→new gap closed" in text and "top-1 —% · mAP —%" in text


def test_long_pages_are_cut_inside_the_box():
    many = [
        descriptions.Linked(
            "fam-transformations",
            i,
            {fct_tags.SOURCE: "1", fct_tags.TARGET: str(i), fct_tags.TOP1: "50"},
        )
        for i in range(2, 200)
    ]
    text = descriptions.embedding_description("fam", 1, {}, into=[], out_of=many)
    assert (
        len(text) <= descriptions.MAX_DESCRIPTION
        and text.count("<pre>") == text.count("</pre>") == 1
    )
    lines = _visible(text)
    assert lines[0].startswith("┌") and lines[-1].startswith("└")
    assert "table shortened" in text


def test_the_lead_line_reads_as_plain_text_in_mlflow_version_lists():
    """MLflow's version tables show the description raw and cut short: the first line carries
    no markdown (``**``, backticks, links), so it reads the same there and on the page."""
    tags = {
        fct_tags.SOURCE: "1",
        fct_tags.TARGET: "2",
        fct_tags.KIND: "fct",
        fct_tags.SIDE_INFO: "fam-side-info/1",
    }
    chain = {
        fct_tags.SOURCE: "1",
        fct_tags.TARGET: "3",
        fct_tags.ROLE: fct_tags.ROLE_CHAIN,
        fct_tags.HOPS: "4,5",
    }
    texts = {
        "fam@2: embedding model": descriptions.embedding_description(
            "fam", 2, {}, into=[], out_of=[]
        ),
        "fam@1 → fam@2: FCT transformation (fct)": descriptions.transformation_description(
            "fam", 4, tags
        ),
        "fam@1 → fam@3: chain of 2": descriptions.transformation_description("fam", 6, chain),
        "fam-side-info/1: side-info extractor": descriptions.side_info_description(
            "fam", 1, {}, readers=[]
        ),
    }
    for start, text in texts.items():
        lead = text.split("\n", 1)[0]
        assert lead.startswith(start), lead
        assert not re.search(r"\*\*|`|\[|<", lead), lead
