"""The JMA codes the dispatcher needs, in the project's own tables, and small pure helpers over them.

Generated name tables live in `code_tables.py`; this module holds the hand-written facts on top of them: which
prefecture(s) each tsunami coast touches, the order of intensity classes, tsunami kind severity and the kinds
that are 特別警報. Prefectures come from `directory.regions.PREFECTURES` so there is one list in the project.
"""

from __future__ import annotations

import enum

from directory.regions import PREFECTURES, Prefecture
from safety.jma.code_tables import EARTHQUAKE_AREAS, MUNICIPALITIES, TSUNAMI_AGGREGATES, TSUNAMI_AREAS

__all__ = [
    "EARTHQUAKE_AREAS",
    "INTENSITY_ORDER",
    "MUNICIPALITIES",
    "PREFECTURES",
    "SPECIAL_WARNING_KINDS",
    "SPECIAL_WARNING_STATUSES",
    "TSUNAMI_AGGREGATES",
    "TSUNAMI_AREAS",
    "TSUNAMI_AREA_PREFECTURES",
    "TSUNAMI_KIND_SEVERITY",
    "Prefecture",
    "TsunamiSeverity",
    "earthquake_area_prefecture",
    "intensity_at_least",
    "intensity_rank",
    "municipality_prefecture",
    "tsunami_area_prefectures",
    "tsunami_severity",
]

# Seismic intensity classes (震度階級) as they appear in MaxInt / Int, weakest first. Compare through this order only.
INTENSITY_ORDER: list[str] = ["1", "2", "3", "4", "5-", "5+", "6-", "6+", "7"]
_INTENSITY_RANK = {value: rank for rank, value in enumerate(INTENSITY_ORDER)}


def intensity_rank(value: str) -> int | None:
    """Ordinal of an intensity class (0 for "1" … 8 for "7"), or None for anything else (e.g. "不明", "")."""
    return _INTENSITY_RANK.get(value.strip())


def intensity_at_least(value: str | None, threshold: str) -> bool:
    """True when the intensity class `value` is `threshold` or stronger. Unknown values never reach a threshold.

    >>> intensity_at_least("5+", "5-")
    True
    """
    threshold_rank = intensity_rank(threshold)
    if threshold_rank is None:
        raise ValueError(f"unknown intensity threshold {threshold!r}; expected one of {INTENSITY_ORDER}")
    if value is None:
        return False
    rank = intensity_rank(value)
    return rank is not None and rank >= threshold_rank


class TsunamiSeverity(enum.IntEnum):
    """How serious a tsunami kind (警報等情報要素／津波警報・注意報・予報) is, comparable with < and >."""

    NONE = 0  # 00 津波なし, 50/60 解除, 71-73 津波予報（若干の海面変動）
    ADVISORY = 1  # 62 津波注意報
    WARNING = 2  # 51 津波警報
    MAJOR = 3  # 52 大津波警報, 53 大津波警報：発表


TSUNAMI_KIND_SEVERITY: dict[str, TsunamiSeverity] = {
    "00": TsunamiSeverity.NONE,
    "50": TsunamiSeverity.NONE,
    "51": TsunamiSeverity.WARNING,
    "52": TsunamiSeverity.MAJOR,
    "53": TsunamiSeverity.MAJOR,
    "60": TsunamiSeverity.NONE,
    "62": TsunamiSeverity.ADVISORY,
    "71": TsunamiSeverity.NONE,
    "72": TsunamiSeverity.NONE,
    "73": TsunamiSeverity.NONE,
}


def tsunami_severity(kind_code: str) -> TsunamiSeverity:
    """Severity of a tsunami Category/Kind/Code; codes not in the table count as NONE."""
    return TSUNAMI_KIND_SEVERITY.get(kind_code.strip(), TsunamiSeverity.NONE)


# 気象警報・注意報 kinds that the code table names 特別警報 (WeatherWarning: 32 暴風雪, 33 大雨, 35 暴風, 36 大雪,
# 37 波浪, 38 高潮, 39 土砂災害 (R06)). In force when Kind/Status is one of SPECIAL_WARNING_STATUSES.
SPECIAL_WARNING_KINDS: dict[str, str] = {
    "32": "暴風雪特別警報",
    "33": "大雨特別警報",
    "35": "暴風特別警報",
    "36": "大雪特別警報",
    "37": "波浪特別警報",
    "38": "高潮特別警報",
    "39": "土砂災害特別警報",
}
SPECIAL_WARNING_STATUSES: frozenset[str] = frozenset({"発表", "継続"})

# Which prefecture(s) each 津波予報区 (forecast region) touches, by 2-digit prefecture code. Written by hand from
# the region names and geography, cross-checked against JMA's 結合表現 rows (e.g. 482 神奈川県 = 312 + 330,
# 783 佐賀県 = 712 + 720): 東京湾内湾 reaches 千葉県・東京都・神奈川県; 伊勢・三河湾 愛知県・三重県;
# 有明・八代海 福岡・佐賀・長崎・熊本.
TSUNAMI_AREA_PREFECTURES: dict[str, tuple[str, ...]] = {
    "100": ("01",),  # 北海道太平洋沿岸東部
    "101": ("01",),  # 北海道太平洋沿岸中部
    "102": ("01",),  # 北海道太平洋沿岸西部
    "110": ("01",),  # 北海道日本海沿岸北部
    "111": ("01",),  # 北海道日本海沿岸南部
    "120": ("01",),  # オホーツク海沿岸
    "200": ("02",),  # 青森県日本海沿岸
    "201": ("02",),  # 青森県太平洋沿岸
    "202": ("02",),  # 陸奥湾
    "210": ("03",),  # 岩手県
    "220": ("04",),  # 宮城県
    "230": ("05",),  # 秋田県
    "240": ("06",),  # 山形県
    "250": ("07",),  # 福島県
    "300": ("08",),  # 茨城県
    "310": ("12",),  # 千葉県九十九里・外房
    "311": ("12",),  # 千葉県内房
    "312": ("12", "13", "14"),  # 東京湾内湾
    "320": ("13",),  # 伊豆諸島
    "321": ("13",),  # 小笠原諸島
    "330": ("14",),  # 相模湾・三浦半島
    "340": ("15",),  # 新潟県上中下越
    "341": ("15",),  # 佐渡
    "350": ("16",),  # 富山県
    "360": ("17",),  # 石川県能登
    "361": ("17",),  # 石川県加賀
    "370": ("18",),  # 福井県
    "380": ("22",),  # 静岡県
    "390": ("23",),  # 愛知県外海
    "391": ("23", "24"),  # 伊勢・三河湾
    "400": ("24",),  # 三重県南部
    "500": ("26",),  # 京都府
    "510": ("27",),  # 大阪府
    "520": ("28",),  # 兵庫県北部
    "521": ("28",),  # 兵庫県瀬戸内海沿岸
    "522": ("28",),  # 淡路島南部
    "530": ("30",),  # 和歌山県
    "540": ("31",),  # 鳥取県
    "550": ("32",),  # 島根県出雲・石見
    "551": ("32",),  # 隠岐
    "560": ("33",),  # 岡山県
    "570": ("34",),  # 広島県
    "580": ("36",),  # 徳島県
    "590": ("37",),  # 香川県
    "600": ("38",),  # 愛媛県宇和海沿岸
    "601": ("38",),  # 愛媛県瀬戸内海沿岸
    "610": ("39",),  # 高知県
    "700": ("35",),  # 山口県日本海沿岸
    "701": ("35",),  # 山口県瀬戸内海沿岸
    "710": ("40",),  # 福岡県瀬戸内海沿岸
    "711": ("40",),  # 福岡県日本海沿岸
    "712": ("40", "41", "42", "43"),  # 有明・八代海
    "720": ("41",),  # 佐賀県北部
    "730": ("42",),  # 長崎県西方
    "731": ("42",),  # 壱岐・対馬
    "740": ("43",),  # 熊本県天草灘沿岸
    "750": ("44",),  # 大分県瀬戸内海沿岸
    "751": ("44",),  # 大分県豊後水道沿岸
    "760": ("45",),  # 宮崎県
    "770": ("46",),  # 鹿児島県東部
    "771": ("46",),  # 種子島・屋久島地方
    "772": ("46",),  # 奄美群島・トカラ列島
    "773": ("46",),  # 鹿児島県西部
    "800": ("47",),  # 沖縄本島地方
    "801": ("47",),  # 大東島地方
    "802": ("47",),  # 宮古島・八重山地方
}


def tsunami_area_prefectures(code: str) -> tuple[str, ...]:
    """Prefecture codes a tsunami forecast region touches; an aggregate (結合/領域表現) gives its members' union."""
    code = code.strip()
    if code in TSUNAMI_AREA_PREFECTURES:
        return TSUNAMI_AREA_PREFECTURES[code]
    if code in TSUNAMI_AGGREGATES:
        prefs: list[str] = []
        for member in TSUNAMI_AGGREGATES[code][1]:
            prefs.extend(p for p in TSUNAMI_AREA_PREFECTURES.get(member, ()) if p not in prefs)
        return tuple(sorted(prefs))
    return ()


def earthquake_area_prefecture(code: str) -> str | None:
    """Prefecture code of a 地震情報／細分区域 (3-digit Area/Code), or None when the code is unknown."""
    entry = EARTHQUAKE_AREAS.get(code.strip())
    return entry[1] if entry else None


def municipality_prefecture(code: str) -> str | None:
    """Prefecture code of a 7-digit municipality code: its first two digits, when they name a prefecture."""
    code = code.strip()
    if len(code) != 7 or not code.isdigit() or code[:2] not in PREFECTURES:
        return None
    return code[:2]
