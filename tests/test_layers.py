"""Layers point one way (../shared/DESIGN.md): firmware/ imports only itself;
sim/ imports firmware/; host/ and models/ import sim/ and firmware/.

Read from the source with ``ast`` (every import statement, also the ones inside
functions), so a lazy upward import is caught as well as a top-level one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_firmware_portability import imported_roots

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("firmware", "sim", "host", "models")
#: The project packages each layer may import (besides itself and third parties).
ALLOWED = {
    "firmware": set(),
    "sim": {"firmware"},
    "host": {"firmware", "sim"},
    "models": {"firmware", "sim"},
}


def project_imports(path: Path) -> set[str]:
    """The project layers ``path`` imports (any depth: lazy imports count)."""
    return imported_roots(path) & set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_points_up_or_sideways(layer: str) -> None:
    bad = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        wrong = project_imports(path) - ALLOWED[layer] - {layer}
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert bad == {}


def test_the_checker_sees_a_lazy_upward_import(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from host.ecg import read_channel\n    import sim.faults\n")
    assert project_imports(src) == {"host", "sim"}
