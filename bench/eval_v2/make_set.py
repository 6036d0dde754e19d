"""Write eval set v2 (catalog, queries, sessions, chit-chat) from the hand-written spec.

    .venv/bin/python -m bench.eval_v2.make_set [--check]

Deterministic (seeded): running it again writes the same files. ``--check`` only verifies
that the files on disk are what the spec makes (CI can run it). Every query is labelled
``hard`` by a mechanical test: no jieba word (stop words and punctuation left out) is shared
with any of its relevant items' texts (title, category, tags, description).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.eval_v2.kinds import Concept, Item
from bench.eval_v2.spec_beauty import BEAUTY
from bench.eval_v2.spec_health import HEALTH
from bench.eval_v2.spec_muying import MUYING

HERE = Path(__file__).parent
CONCEPTS: list[Concept] = [*MUYING, *BEAUTY, *HEALTH]
PROVIDERS = ["cd-01", "wh-01", "xa-01", "hz-02", "sz-03"]
BASE_TS = 1_790_000_000  # 2026-09-22, the first day of every session
DAY = 86_400
SEED = 20261202

# Near-duplicate trap variants: the same product in another pack, never recommendable.
SOLDOUT_PACKS = ["旅行装", "尝鲜装", "家庭装", "限定礼盒", "升级款", "大容量装"]
INACTIVE_PACKS = ["旧包装", "停产款", "2024款", "老版", "换新前款", "清仓款"]

# Catalog filler no query asks for (the rest of a real mall's shelf).
FILLER: list[tuple[str, str, str, list[str], int]] = [
    ("原木抽纸 3层 24包", "原生木浆，柔韧不掉屑，家庭装。", "日用百货/纸品", ["纸巾"], 49),
    ("厨房湿巾 80抽", "去油污，一擦即净，灶台油烟机可用。", "日用百货/家居清洁", ["家居清洁"], 19),
    ("加厚垃圾袋 100只", "加厚不易破，抽绳式。", "日用百货/家居清洁", ["垃圾袋"], 15),
    ("浴室防滑拖鞋", "EVA材质，漏水防滑，男女款。", "日用百货/家居", ["拖鞋"], 29),
    ("Type-C快充数据线 1.5m", "编织线身，支持60W快充。", "日用百货/数码配件", ["数据线"], 25),
    ("磁吸车载手机支架", "出风口安装，单手取放。", "汽车/车载电子", ["车载用品"], 59),
    ("汽车玻璃水 4瓶", "冬季防冻-25℃，去油膜。", "汽车/保养", ["保养"], 39),
    ("全合成机油 5W-30 4L", "SP级全合成，适合涡轮增压发动机。", "汽车/保养", ["机油", "保养"], 289),
    ("车载香薰 木质香", "固体香膏，持续60天。", "汽车/内饰", ["车载用品"], 69),
    ("猫砂 豆腐砂 6L", "低尘结团快，可冲厕所。", "宠物/猫砂", ["宠物用品"], 35),
    ("成猫粮 鸡肉味 2kg", "高蛋白无谷配方。", "宠物/主粮", ["宠物用品"], 99),
    ("狗狗磨牙洁齿骨", "清洁牙齿，减少口臭。", "宠物/零食", ["宠物用品"], 29),
    ("不粘炒锅 32cm", "麦饭石涂层，少油烟，电磁炉通用。", "日用百货/厨具", ["厨具"], 159),
    ("密封保鲜盒 5件套", "玻璃材质，可微波加热。", "日用百货/厨具", ["收纳"], 79),
    ("真空压缩袋 8件套", "换季棉被衣物收纳，节省空间。", "日用百货/收纳", ["收纳"], 49),
    ("洗碗机专用洗涤块 60颗", "多效合一，去油亮碟。", "日用百货/家居清洁", ["家居清洁"], 89),
    ("浓缩洗衣凝珠 52颗", "护色留香，一颗洗一桶。", "日用百货/家居清洁", ["洗衣液", "家居清洁"], 59),
    ("硅藻泥浴室地垫", "秒吸水，速干防霉。", "日用百货/家居", ["地垫"], 45),
    ("乳胶枕 人体工学", "天然乳胶，护颈透气。", "日用百货/床品", ["枕头"], 199),
    ("四件套 纯棉 1.8m床", "60支长绒棉，亲肤柔软。", "日用百货/床品", ["床品"], 299),
    ("电热水壶 1.7L", "304不锈钢，自动断电。", "日用百货/厨房电器", ["小家电"], 89),
    ("智能体脂秤", "连手机看体脂率、BMI等13项数据。", "日用百货/个护健康", ["体重秤"], 99),
    ("颈部按摩仪", "低频脉冲加热敷，缓解肩颈酸痛。", "日用百货/个护健康", ["按摩"], 259),
    ("电动牙刷 成人款", "声波震动，4种模式，续航60天。", "日用百货/个护健康", ["牙刷"], 199),
    ("牙线棒 300支", "细滑牙线，清洁牙缝。", "日用百货/个护健康", ["口腔护理"], 19),
    ("漱口水 500ml", "清新口气，无酒精配方。", "日用百货/个护健康", ["口腔护理"], 35),
    ("精酿啤酒 12罐", "小麦白啤，麦香浓郁。", "食品/酒水", ["零食饮品"], 89),
    ("挂耳咖啡 手冲 20包", "中深烘焙，云南小粒。", "食品/饮品", ["咖啡"], 69),
    ("自热小火锅 3盒", "麻辣牛肉，15分钟即食。", "食品/速食", ["速食"], 45),
    ("螺蛳粉 5袋", "正宗柳州风味，酸笋足。", "食品/速食", ["速食"], 59),
    ("冻干水果脆 混合装", "草莓、黄桃、苹果冻干，非油炸。", "食品/零食", ["零食饮品"], 39),
    ("手撕牛肉干 250g", "内蒙古风干牛肉，香辣味。", "食品/零食", ["零食饮品"], 79),
    ("有机纯牛奶 12盒", "有机牧场奶源，3.8g蛋白。", "食品/乳品", ["牛奶"], 79),
    ("五常大米 5kg", "稻花香2号，当季新米。", "食品/粮油", ["大米"], 89),
    ("压榨花生油 5L", "物理压榨一级，浓香。", "食品/粮油", ["食用油"], 129),
    ("零添加生抽 1L", "酿造180天，无添加防腐剂。", "食品/调味", ["调味品"], 25),
    ("儿童雨衣 带书包位", "防水透气，反光条设计。", "母婴/童装", ["童装"], 69),
    ("儿童保温水杯 吸管款", "316内胆，防漏防摔。", "母婴/喂养", ["水杯"], 89),
    ("婴儿湿巾 80抽 6包", "纯水湿巾，手口可用。", "母婴/洗护", ["湿巾"], 49),
    ("儿童口罩 30只", "3D立体，耳带柔软。", "母婴/健康护理", ["口罩"], 29),
    ("儿童书包 护脊", "减负护脊，大容量。", "母婴/文具", ["书包"], 199),
    ("儿童水彩笔 36色", "可水洗，无毒配方。", "母婴/文具", ["文具"], 29),
    ("瑜伽垫 加厚 10mm", "TPE材质，防滑回弹。", "运动/健身", ["瑜伽垫"], 79),
    ("跳绳 计数款", "轴承顺滑，电子计数。", "运动/健身", ["跳绳"], 39),
    ("运动速干T恤", "吸湿排汗，轻盈透气。", "运动/服装", ["运动服"], 89),
    ("登山杖 碳纤维", "三节伸缩，防滑杖尖。", "运动/户外", ["户外"], 129),
    ("露营折叠椅", "铝合金支架，承重150kg。", "运动/户外", ["露营", "自驾游"], 119),
    ("户外帐篷 3-4人", "自动速开，防雨防晒。", "运动/户外", ["露营", "自驾游"], 399),
    ("蓝牙耳机 降噪", "主动降噪，续航30小时。", "数码/耳机", ["耳机"], 299),
    ("充电宝 20000mAh", "22.5W快充，可带上飞机。", "数码/配件", ["充电宝"], 99),
    ("护眼台灯 AA级", "无频闪，色温可调。", "日用百货/灯具", ["台灯"], 199),
    ("香薰蜡烛 礼盒", "大豆蜡，无花果香，燃烧40小时。", "日用百货/家居", ["香薰", "送礼"], 129),
    ("羊毛围巾", "澳洲美利奴羊毛，保暖不扎。", "服饰/配件", ["送礼"], 259),
    ("真丝眼罩", "桑蚕丝，遮光助眠。", "日用百货/个护健康", ["眼罩"], 69),
    ("暖宝宝 贴 20片", "持续发热12小时，冬季保暖。", "日用百货/个护健康", ["保暖"], 25),
    ("足浴盆 恒温加热", "按摩滚轮，一键恒温。", "日用百货/个护健康", ["泡脚", "健康养生"], 259),
    ("艾草足贴 30片", "艾草竹醋，睡前贴足底。", "日用百货/个护健康", ["健康养生"], 39),
    ("花草茶 玫瑰花茶 50g", "平阴重瓣玫瑰，花香浓郁。", "食品/茶饮", ["花茶"], 39),
    ("普洱茶饼 357g", "云南古树熟茶，醇厚回甘。", "食品/茶饮", ["茶叶"], 199),
    ("西湖龙井 100g", "明前头采，豆香清新。", "食品/茶饮", ["茶叶", "送礼"], 268),
    ("月饼礼盒 8枚", "莲蓉蛋黄、五仁、豆沙多口味。", "食品/糕点", ["送礼"], 158),
    ("坚果礼盒 年货", "八种坚果果干，送礼体面。", "食品/零食", ["送礼", "坚果"], 198),
    ("电动剃须刀", "三刀头浮动，全身水洗。", "日用百货/个护健康", ["剃须"], 229),
    ("吹风机 负离子", "高速马达，快干不伤发。", "日用百货/个护健康", ["吹风机"], 299),
    ("卷发棒 32mm", "陶瓷釉面，不伤发。", "美妆护肤/美发工具", ["美发工具"], 129),
    ("指甲油 12色", "水性可撕，快干。", "美妆护肤/美甲", ["美甲"], 59),
    ("假睫毛 自然款 5对", "手工编织，轻盈自然。", "美妆护肤/彩妆工具", ["彩妆"], 29),
    ("化妆镜 带灯", "三色补光，桌面折叠。", "美妆护肤/彩妆工具", ["化妆镜"], 79),
    ("洗脸巾 一次性 100抽", "棉柔加厚，干湿两用。", "美妆护肤/工具", ["洗脸巾"], 29),
    ("棉签 双头 500支", "纯棉头，不掉絮。", "日用百货/个护健康", ["棉签"], 12),
    # Near-duplicate distractors: the same words, another audience (pets, cars, home).
    ("宠物益生菌粉 猫狗通用", "调理宠物肠道，改善软便和便秘，拌粮即可。", "宠物/保健", ["益生菌", "宠物用品"], 69),
    ("狗狗皮肤湿疹喷剂", "缓解宠物湿疹、瘙痒、红疹，舔舐无害。", "宠物/保健", ["湿疹", "宠物用品"], 59),
    ("猫咪化毛膏", "帮助排出毛球，润肠通便。", "宠物/保健", ["宠物用品", "便秘"], 45),
    ("宠物驱虫滴剂", "体外驱跳蚤蜱虫，一月一次。", "宠物/保健", ["驱虫", "宠物用品"], 89),
    ("宠物沐浴露 低敏", "温和无泪，去异味。", "宠物/洗护", ["宠物用品", "沐浴露"], 49),
    ("汽车防晒遮阳挡", "前挡遮阳，夏天车内降温。", "汽车/内饰", ["防晒", "车载用品"], 39),
    ("汽车隔热防晒膜", "前挡隔热膜，阻隔紫外线99%。", "汽车/美容", ["贴膜", "防晒"], 899),
    ("车载加湿器 香薰", "USB供电，车内补水。", "汽车/车载电子", ["加湿器", "车载用品"], 69),
    ("车载空气净化器", "除甲醛除异味，负离子。", "汽车/车载电子", ["车载用品"], 299),
    ("汽车座椅按摩垫", "腰背按摩加热，长途驾驶缓解疲劳。", "汽车/内饰", ["座椅改装", "按摩"], 259),
    ("汽车儿童安全带调节器", "防勒脖，适合4岁以上。", "汽车/安全", ["安全座椅"], 39),
    ("汽车补胎液", "应急补胎，自动充气。", "汽车/安全", ["轮胎"], 79),
    ("汽车电瓶搭电宝", "应急启动电源，兼充电宝。", "汽车/车载电子", ["电瓶"], 299),
    ("成人纸尿裤 L码", "老人失禁护理，防侧漏。", "日用百货/个护健康", ["纸尿裤", "中老年"], 89),
    ("产妇卫生巾 产褥期", "加长加大，产后恶露专用。", "母婴/产后", ["产后恢复"], 39),
    ("孕妇枕 U型", "侧睡托腹，缓解孕期腰酸。", "母婴/孕产", ["孕期", "睡眠"], 199),
    ("哺乳内衣 无钢圈", "前开扣，方便喂奶。", "母婴/孕产", ["母乳喂养"], 89),
    ("婴儿理发器", "静音防水，陶瓷刀头。", "母婴/洗护", ["宝宝洗护"], 99),
    ("宝宝指甲剪 套装", "防夹肉，新生儿可用。", "母婴/洗护", ["宝宝洗护"], 29),
    ("儿童防晒衣 UPF50+", "冰丝面料，户外防晒。", "母婴/童装", ["防晒", "童装"], 99),
    ("成人维生素D3 软胶囊", "促进钙吸收，成人每日一粒。", "健康食品/膳食补充", ["维生素D", "补钙"], 59),
    ("男士防脱生发液", "米诺地尔外用，需遵医嘱。", "药品/外用", ["防脱生发"], 168),
    ("卸妆湿巾 便携 25片", "出差旅行一擦即净。", "美妆护肤/卸妆", ["卸妆清洁"], 19),
    ("美妆蛋 3只装", "干湿两用，上妆服帖。", "美妆护肤/彩妆工具", ["彩妆"], 29),
    ("男士香水 木质调", "雪松与琥珀，沉稳持久。", "美妆护肤/香水", ["香水"], 299),
    ("儿童益智拼图 100片", "恐龙主题，纸质环保。", "母婴/玩具", ["玩具", "拼图"], 49),
    ("婴儿床铃 音乐旋转", "黑白卡配色，安抚入睡。", "母婴/玩具", ["玩具", "睡眠"], 129),
    ("宝宝餐椅 可折叠", "五点式安全带，高度可调。", "母婴/喂养", ["辅食添加"], 299),
    ("辅食剪刀 不锈钢", "外出剪面条剪肉，带保护套。", "母婴/喂养", ["辅食添加"], 35),
    ("代糖 赤藓糖醇 500g", "0卡代糖，烘焙冲饮。", "食品/调味", ["控糖"], 39),
]

CHITCHAT = [
    "哈哈哈笑死我了", "今天降温了大家多穿点", "早上好呀各位姐妹☀️", "周末有人一起去爬山吗",
    "刚抢到一个红包，谢谢老板", "这个视频太搞笑了你们快看", "晚安啦明天见",
    "我家楼下新开了一家火锅店，味道一般", "群主辛苦了🌹", "今天地铁又挤成沙丁鱼",
    "收到收到", "有人知道明天几点开会吗", "哈哈我也是这么想的", "下雨了没带伞好惨",
    "恭喜恭喜！新年快乐", "你们看昨晚的球赛了吗", "孩子放学了我先去接一下", "[表情][表情]",
    "接龙：3号 李姐 +1", "这天气热得人都要化了",
]


def _tokens(text: str, tok: Any, stop: frozenset[str]) -> set[str]:
    return {w for w in tok.lcut(text.lower())
            if w.strip() and any(c.isalnum() for c in w) and w not in stop}


def _bigrams(text: str) -> set[str]:
    t = "".join(c for c in text.lower() if c.isalnum())
    return {t[i:i + 2] for i in range(len(t) - 1)}


def _availability(rng: random.Random) -> list[dict[str, Any]]:
    """Realistic regional availability: a third everywhere, the rest at 1–4 providers, some
    of them listed with stock 0 (sold out there)."""
    if rng.random() < 0.3:
        return []
    chosen = rng.sample(PROVIDERS, rng.randint(1, 4))
    rows = [{"provider_id": p, "price_cents": 0, "stock": rng.choice([0, 5, 12, 30, 80, 200])}
            for p in chosen]
    if all(r["stock"] == 0 for r in rows):
        rows[0]["stock"] = rng.choice([6, 25, 60])
    return rows


def _row(item_id: str, it: Item, *, availability: list[dict[str, Any]], active: bool = True,
         title: str | None = None) -> dict[str, Any]:
    price = it.price * 100
    for a in availability:
        a["price_cents"] = price - 100 * (it.price // 20) if a["provider_id"] in ("cd-01", "xa-01") else price
    kind = it.kind
    prefix = "c" if kind == "course" else "p"
    return {"id": item_id, "kind": kind, "title": title or it.title, "description": it.description,
            "category": it.category, "tags": list(it.tags), "price_cents": price,
            "url": f"https://shop.example.cn/{prefix}/{item_id}",
            "image_url": f"https://img.example.cn/{item_id}.jpg", "availability": availability,
            "active": active, "updated_at": "2026-09-20T02:00:00Z"}


def _with_pack(title: str, pack: str) -> str:
    return f"{title} {pack}" if not pack.endswith("款") else f"{title}（{pack}）"


def build_catalog(rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, list[str]],
                                                dict[str, list[str]]]:
    """Return the catalog rows, each concept's recommendable items and its trap items."""
    rows: list[dict[str, Any]] = []
    good: dict[str, list[str]] = {}
    traps: dict[str, list[str]] = {}
    n = 0

    def next_id(kind: str) -> str:
        nonlocal n
        n += 1
        return f"{'crs' if kind == 'course' else 'sp'}-{30000 + n}"

    for c in CONCEPTS:
        good[c.key] = []
        traps[c.key] = []
        for it in c.items:
            iid = next_id(it.kind)
            rows.append(_row(iid, it, availability=_availability(rng)))
            good[c.key].append(iid)
        base = c.items[0]
        if base.kind == "product":
            # Sold out at every provider that lists it: must never be recommended.
            iid = next_id(base.kind)
            sold = [{"provider_id": p, "price_cents": 0, "stock": 0}
                    for p in rng.sample(PROVIDERS, rng.randint(1, 3))]
            rows.append(_row(iid, base, availability=sold,
                             title=_with_pack(base.title, rng.choice(SOLDOUT_PACKS))))
            traps[c.key].append(iid)
        # Inactive (delisted): must never be recommended either.
        last = c.items[-1]
        iid = next_id(last.kind)
        rows.append(_row(iid, last, availability=_availability(rng), active=False,
                         title=_with_pack(last.title, rng.choice(INACTIVE_PACKS))))
        traps[c.key].append(iid)
    for title, desc, cat, tags, price in FILLER:
        it = Item(title, desc, cat, tags, price)
        rows.append(_row(next_id("product"), it, availability=_availability(rng)))
    return rows, good, traps


def _stocked_at(row: dict[str, Any], provider: str) -> bool:
    avail = row["availability"]
    return bool(row["active"]) and (not avail or any(
        a["provider_id"] == provider and a["stock"] > 0 for a in avail))


def build_queries(catalog: dict[str, dict[str, Any]], good: dict[str, list[str]],
                  traps: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Return the labelled queries, each flagged hard by the mechanical jieba test."""
    import jieba

    jieba.setLogLevel(60)
    tok = jieba.Tokenizer()
    stop = frozenset((Path(__file__).parents[2] / "nlp" / "dicts" / "stopwords.txt")
                     .read_text(encoding="utf-8").split())
    out: list[dict[str, Any]] = []
    n = 0
    for c in CONCEPTS:
        texts = [_item_text(catalog[i]) for i in good[c.key]]
        words = set().union(*(_tokens(t, tok, stop) for t in texts))
        grams = set().union(*(_bigrams(t) for t in texts))
        for q, written_hard in [*((q, False) for q in c.direct), *((q, True) for q in c.hard)]:
            n += 1
            shared = sorted(_tokens(q, tok, stop) & words)
            out.append({"id": f"q{n:03d}", "text": q, "concept": c.key, "domain": c.domain,
                        "relevant": good[c.key], "traps": traps[c.key], "hard": not shared,
                        "written_hard": written_hard, "shared_words": shared,
                        "no_shared_bigram": not (_bigrams(q) & grams)})
    return out


def _item_text(row: dict[str, Any]) -> str:
    return "\n".join([row["title"], row["category"], " ".join(row["tags"]), row["description"]])


def build_sessions(rng: random.Random, catalog: dict[str, dict[str, Any]],
                   good: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Return member sessions: multi-day chat of one need (a third at a provider), and
    members who moved from one need to another."""
    chatty = [c for c in CONCEPTS if len(c.chat) >= 3]
    out: list[dict[str, Any]] = []
    n = 0

    def msgs(lines: Iterable[str], days: list[int]) -> list[dict[str, Any]]:
        return [{"ts": BASE_TS + d * DAY + rng.randint(9, 22) * 3600 + rng.randint(0, 3599),
                 "text": t} for t, d in zip(lines, days, strict=True)]

    for j, c in enumerate(chatty):
        n += 1
        days = sorted(rng.sample(range(4), 3))
        m = msgs(c.chat, days)
        m.insert(rng.randint(0, len(m)), {"ts": m[0]["ts"] + 600, "text": rng.choice(CHITCHAT)})
        m.sort(key=lambda x: x["ts"])
        provider = None
        relevant = list(good[c.key])
        if j % 3 == 1:
            at = {p: [i for i in good[c.key] if _stocked_at(catalog[i], p)] for p in PROVIDERS}
            options = [p for p in PROVIDERS if at[p] and len(at[p]) < len(good[c.key])] or \
                [p for p in PROVIDERS if at[p]]
            provider = rng.choice(options)
            relevant = at[provider]
        out.append({"id": f"s{n:03d}", "user_id": f"m-{n:03d}", "provider_id": provider,
                    "messages": m, "concept": c.key, "relevant": relevant, "moved": False,
                    "old_concept": None, "old_relevant": []})
    pairs = rng.sample([(a, b) for a in chatty for b in chatty if a.domain != b.domain
                        or a.key[:2] != b.key[:2] or a.key != b.key], 400)
    movers: list[tuple[Concept, Concept]] = []
    used: set[str] = set()
    for a, b in pairs:
        if a.key == b.key or a.key in used or b.key in used:
            continue
        movers.append((a, b))
        used |= {a.key, b.key}
        if len(movers) == 16:
            break
    for k, (a, b) in enumerate(movers):
        n += 1
        m = msgs(a.chat, [0, 1, 2]) + msgs(b.chat[:2], [6, 7])
        provider = PROVIDERS[k % len(PROVIDERS)] if k % 4 == 3 else None
        relevant = list(good[b.key])
        if provider is not None:
            relevant = [i for i in relevant if _stocked_at(catalog[i], provider)]
            if not relevant:
                provider = None
                relevant = list(good[b.key])
        out.append({"id": f"s{n:03d}", "user_id": f"m-{n:03d}", "provider_id": provider,
                    "messages": m, "concept": b.key, "relevant": relevant, "moved": True,
                    "old_concept": a.key, "old_relevant": list(good[a.key])})
    return out


def build() -> dict[str, list[dict[str, Any]]]:
    """Return every file's rows."""
    rng = random.Random(SEED)
    rows, good, traps = build_catalog(rng)
    catalog = {r["id"]: r for r in rows}
    queries = build_queries(catalog, good, traps)
    sessions = build_sessions(rng, catalog, good)
    chit = [{"id": f"c{i + 1:02d}", "text": t} for i, t in enumerate(CHITCHAT)]
    return {"catalog": rows, "queries": queries, "sessions": sessions, "chitchat": chit}


def _dump(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    """Write (or --check) the files."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    files = build()
    stale = []
    for name, rows in files.items():
        path = HERE / f"{name}.jsonl"
        text = _dump(rows)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    q = files["queries"]
    s = files["sessions"]
    cat = files["catalog"]
    print(f"catalog {len(cat)} items ({sum(1 for r in cat if not r['active'])} inactive, "
          f"{sum(1 for r in cat if r['kind'] == 'course')} courses); queries {len(q)} "
          f"({sum(1 for x in q if x['hard'])} hard; written hard but sharing a word: "
          f"{sum(1 for x in q if x['written_hard'] and not x['hard'])}); sessions {len(s)} "
          f"({sum(1 for x in s if x['provider_id'])} with a provider, "
          f"{sum(1 for x in s if x['moved'])} moved on); chit-chat {len(files['chitchat'])}")
    if stale:
        sys.exit(f"stale: {', '.join(stale)} (run python -m bench.eval_v2.make_set)")


if __name__ == "__main__":
    main()
