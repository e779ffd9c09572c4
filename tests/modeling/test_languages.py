"""ISO 639-1 <-> XMOD codes and per-text detection (no model needed)."""
import logging

import pytest

from colxm.errors import LanguageError
from colxm.modeling.languages import LanguageRouter

# The 81 adapters of facebook/xmod-base, which ColBERT-XM's config.json lists.
XMOD81 = ("en_XX id_ID vi_VN ru_RU fa_IR sv_SE ja_XX fr_XX de_DE ro_RO ko_KR hu_HU es_XX fi_FI uk_UA "
          "da_DK pt_XX no_XX th_TH pl_PL bg_BG nl_XX zh_CN he_IL el_GR it_IT sk_SK hr_HR tr_TR ar_AR "
          "cs_CZ lt_LT hi_IN zh_TW ca_ES ms_MY sl_SI lv_LV ta_IN bn_IN et_EE az_AZ sq_AL sr_RS kk_KZ "
          "ka_GE tl_XX ur_PK is_IS hy_AM ml_IN mk_MK be_BY la_EU te_IN eu_ES gl_ES mn_MN kn_IN ne_NP "
          "sw_KE si_LK mr_IN af_ZA gu_IN cy_GB eo_EO km_KH ky_KG uz_UZ ps_AF pa_IN ga_IE ha_NG am_ET "
          "lo_LA ku_TR so_SO my_MM or_IN sa_IN").split()


def test_every_xmod_language_is_reachable_by_iso_and_xmod_code():
    r = LanguageRouter(XMOD81)
    assert len(XMOD81) == 81
    for i, code in enumerate(XMOD81):
        assert r.index(code) == i
        if code != "zh_TW":
            assert r.index(code.split("_")[0]) == i, code
            assert r.index(code.split("_")[0].upper()) == i, code
    assert r.index("zh") == XMOD81.index("zh_CN")
    assert r.index("zh-TW") == r.index("zh_tw") == XMOD81.index("zh_TW")
    assert r.index("nb") == r.index("nn") == XMOD81.index("no_XX")
    assert r.index("de-AT") == XMOD81.index("de_DE")


def test_unknown_codes():
    r = LanguageRouter(["en_XX", "de_DE"])
    for bad in ("fr", "xx_YY", "klingon", "", "  "):
        with pytest.raises(LanguageError):
            r.index(bad)
    with pytest.raises(LanguageError, match="one per text"):
        r.resolve(["en"], ["a", "b"])
    with pytest.raises(LanguageError):
        r.resolve(42, ["a"])


def test_fallback(caplog):
    r = LanguageRouter(["en_XX", "de_DE"], fallback="de")
    with caplog.at_level(logging.WARNING, logger="colxm"):
        assert r.resolve(["fr", "en", "fr"], ["x", "y", "z"]) == [1, 0, 1]
    assert caplog.text.count("no adapter") == 1  # warned once per language


def test_auto_detection_per_text():
    r = LanguageRouter(XMOD81)
    texts = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "Der schnelle braune Fuchs springt über den faulen Hund am Flussufer.",
             "Le renard brun rapide saute par-dessus le chien paresseux près de la rivière.",
             "Быстрая коричневая лиса прыгает через ленивую собаку у реки.",
             "敏捷的棕色狐狸跳过了河边那只懒惰的狗。",
             "La volpe marrone veloce salta sopra il cane pigro vicino al fiume."]
    got = [XMOD81[i] for i in r.resolve("auto", texts)]
    assert got == ["en_XX", "de_DE", "fr_XX", "ru_RU", "zh_CN", "it_IT"]
    mixed = r.resolve(["auto", "es", "auto"], texts[:3])
    assert [XMOD81[i] for i in mixed] == ["en_XX", "es_XX", "fr_XX"]
