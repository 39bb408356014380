"""The host's transparent huge pages as check_host.py reports them (fl_deploy/huge_pages.py)."""

from fl_deploy import huge_pages


def test_thp_mode_is_the_bracketed_word_and_none_without_thp(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert huge_pages.thp_mode(str(f)) == "madvise"
    f.write_text("always madvise [never]\n")
    assert huge_pages.thp_mode(str(f)) == "never"
    assert huge_pages.thp_mode(str(tmp_path / "missing")) is None


def test_one_line_warning_with_the_fallback_and_the_fix_only_where_huge_pages_cannot_work():
    assert huge_pages.thp_warning("madvise") is None and huge_pages.thp_warning("always") is None
    for mode in ("never", None):
        line = huge_pages.thp_warning(mode)
        assert "\n" not in line and "falls back to 4 KiB pages" in line
        assert "echo madvise | sudo tee /sys/kernel/mm/transparent_hugepage/enabled" in line
