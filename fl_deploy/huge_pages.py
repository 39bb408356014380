"""What the host's transparent huge pages (THP) give the containers' malloc. Standard library only.

glibc >= 2.35's `glibc.malloc.hugetlb=1` tunable (GLIBC_TUNABLES) makes malloc madvise(MADV_HUGEPAGE) its large
mappings, so the kernel backs them with 2 MiB pages: one fault per 2 MiB in place of 512 (the exchange's fresh
buffers, docs/benchmarks/exchange-pace.md). The kernel honours that only with THP in `madvise` or `always`
(Documentation/admin-guide/mm/transhuge.rst); with `never` the tunable is a no-op and malloc keeps 4 KiB pages:
everything still works, only without the saving. Containers share the host's kernel setting.
"""

import re

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_ENABLED) -> str:
    """The selected THP mode ('always', 'madvise' or 'never'), from the bracketed word; None where the kernel has
    no THP (the file is missing)."""
    try:
        with open(path) as f:
            m = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def thp_warning(mode: str) -> str:
    """One line for check_host.py when malloc's huge pages cannot work on this host, else None."""
    if mode in ("always", "madvise"):
        return None
    what = "has no transparent huge pages" if mode is None else f"has transparent huge pages '{mode}'"
    return (f"this host {what}: the containers' malloc falls back to 4 KiB pages (glibc.malloc.hugetlb=1 has no "
            "effect; the exchange works, with more page faults); for huge pages: "
            f"echo madvise | sudo tee {THP_ENABLED}")
