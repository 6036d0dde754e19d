"""Normalisation and jieba tokenising with the taxonomy's user dictionary."""

from __future__ import annotations

import subprocess
import sys

from nlp.taxonomy import Taxonomy
from nlp.tokenize import Tokenizer, normalize, strip_noise, to_simplified


def test_traditional_is_converted_before_matching() -> None:
    assert to_simplified("寶寶發燒38度多，要不要吃退燒藥") == "宝宝发烧38度多，要不要吃退烧药"
    assert to_simplified("敏感肌，這款精華會不會刺激") == "敏感肌，这款精华会不会刺激"
    assert normalize("ＳＰＦ５０ 防曬") == "spf50 防晒"
    simplified = "宝宝六个月了，辅食先加什么好？"
    assert to_simplified(simplified) is simplified  # the fast path returns the same object


def test_official_opencc_converts_traditional_sentences() -> None:
    # Issue 13: the official C++ OpenCC is the one t2s implementation (phrases included).
    import opencc

    assert hasattr(opencc, "__version__")  # the official package; the reimplementation has none
    cases = {
        "乾隆年間的瓷器，頭一回見": "乾隆年间的瓷器，头一回见",  # a phrase keeps 乾
        "頭髮乾燥分岔，有沒有推薦的護髮精油？": "头发干燥分岔，有没有推荐的护发精油？",
        "車子的電瓶沒電了，週末去保養廠換": "车子的电瓶没电了，周末去保养厂换",
        "Lily說：防曬乳SPF50，敏感肌可以用嗎": "Lily说：防晒乳SPF50，敏感肌可以用吗",
    }
    for traditional, simplified in cases.items():
        assert to_simplified(traditional) == simplified


def test_noise_is_stripped() -> None:
    assert strip_noise("[捂脸]哈哈😂 https://a.example/x?y=1 @小美 你好！").split() == ["哈哈", "你好"]


def test_taxonomy_terms_stay_one_token_and_stop_words_go() -> None:
    tok = Tokenizer(terms=Taxonomy.load().terms())
    tokens = tok.tokens("我是敏感肌，宝宝开始辅食添加了，怎么办呢")
    assert "敏感肌" in tokens and "辅食添加" in tokens
    assert not {"我", "是", "了", "怎么", "呢"} & set(tokens)


def test_catalog_terms_can_be_added_later() -> None:
    tok = Tokenizer()
    assert "高铁米粉" not in tok.tokens("想买有机高铁米粉")
    tok.add_terms(["高铁米粉"])
    assert "高铁米粉" in tok.tokens("想买有机高铁米粉")


def test_tokenizers_do_not_share_words() -> None:
    a, b = Tokenizer(terms=["星空顶棚"]), Tokenizer()
    assert "星空顶棚" in a.tokens("想装星空顶棚")
    assert "星空顶棚" not in b.tokens("想装星空顶棚")


def test_jieba_prints_nothing() -> None:
    code = ("from nlp.tokenize import Tokenizer; t = Tokenizer(terms=['辅食添加']); "
            "print(t.tokens('辅食添加'))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "['辅食添加']"
    assert run.stderr == ""
