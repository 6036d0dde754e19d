"""The taxonomy: the shipped default, replacement and extension files, catalog tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlp.taxonomy import CATALOG_INDUSTRY, Taxonomy


def test_default_covers_the_seed_industries() -> None:
    tax = Taxonomy.load()
    assert len(tax) >= 60
    by = {i: [t.tag for t in tax.tags if t.industry == i] for i in tax.industries()}
    assert {"beauty", "muying", "car", "retail"} <= set(by)
    for name in ("敏感肌", "泛红修复", "祛痘", "防晒", "抗老", "辅食添加", "睡眠", "奶粉", "早教",
                 "孕期", "定制内饰", "保养", "新能源充电"):
        assert name in tax
    for t in tax.tags:
        assert t.keywords and t.description and len(t.examples) >= 5, t.tag
    assert len(tax.offtopic) >= 50


def _write(path: Path, tags: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"tags": tags}, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_deployment_replaces_or_extends_it(tmp_path: Path) -> None:
    own = _write(tmp_path / "own.json", [
        {"tag": "钓鱼", "industry": "outdoor", "keywords": ["鱼竿", "打窝"],
         "description": "喜欢钓鱼，关心鱼竿、鱼饵和钓点。"}])
    replaced = Taxonomy.load(own)
    assert replaced.names() == ["钓鱼"]
    extra = _write(tmp_path / "extra.json", [
        {"tag": "钓鱼", "industry": "outdoor", "keywords": ["路亚"], "description": "钓鱼。",
         "examples": ["周末去水库甩两竿"]},
        {"tag": "睡眠", "industry": "muying", "keywords": ["睡渣"], "description": "宝宝睡眠。"}])
    extended = Taxonomy.load(extra=extra)
    assert len(extended) == len(Taxonomy.load()) + 1
    sleep = extended.get("睡眠")
    assert sleep is not None and "睡渣" in sleep.keywords and "哄睡" in sleep.keywords
    fish = extended.get("钓鱼")
    assert fish is not None and fish.examples == ("周末去水库甩两竿",)


def test_prototypes_say_each_tag_by_description_then_examples(tmp_path: Path) -> None:
    own = _write(tmp_path / "own.json", [
        {"tag": "钓鱼", "industry": "outdoor", "keywords": ["鱼竿"], "description": "喜欢钓鱼。",
         "examples": ["周末去水库甩两竿"]}])
    assert Taxonomy.load(own).prototypes() == {"钓鱼": ["钓鱼：喜欢钓鱼。", "周末去水库甩两竿"]}
    shipped = Taxonomy.load()
    protos = shipped.prototypes()
    assert list(protos) == shipped.names()
    sleep = shipped.get("睡眠")
    assert sleep is not None and protos["睡眠"] == [f"睡眠：{sleep.description}", *sleep.examples]


def test_catalog_tags_become_tags_and_categories_become_words() -> None:
    tax = Taxonomy.load()
    before = tax.version
    added = tax.extend_from_catalog(tags=["辅食添加", "有机米粉", "6月+", "A", "有机米粉"],
                                    categories=["母婴/辅食/米粉", "汽车>内饰"])
    assert added == ["有机米粉"]
    t = tax.get("有机米粉")
    assert t is not None and t.industry == CATALOG_INDUSTRY
    assert tax.version > before
    assert {"有机米粉", "母婴", "辅食", "米粉", "内饰"} <= tax.terms()
    assert tax.extend_from_catalog(tags=["有机米粉"]) == []
    # A catalog tag never overrides what the taxonomy says about a tag of the same name.
    sleep = tax.get("睡眠")
    assert sleep is not None and sleep.industry == "muying"


def test_a_broken_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"tags": [{"tag": "x", "keywords": "not-a-list"}]}', encoding="utf-8")
    with pytest.raises(ValueError, match="keywords"):
        Taxonomy.load(bad)
