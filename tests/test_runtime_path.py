"""The runtime path must not import torch or transformers."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_encoder_imports_no_torch(tiny_artifact):
    code = (
        "import sys\n"
        "from edgeembed import Encoder\n"
        f"e = Encoder.load({str(tiny_artifact)!r})\n"
        "v = e.encode(['hello world'])\n"
        "assert v.shape == (1, 16), v.shape\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout
