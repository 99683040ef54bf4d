"""Tests for the command line as a whole: `superres --help` starts without loading torch.

Start-up time is not asserted (timings never decide a test here); what makes it slow is: a
sub-command module that imports torch, directly or through a pipeline, at the top.
"""

from __future__ import annotations

import subprocess
import sys


def test_building_the_parser_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from superres.cli import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(name for name in ('torch', 'numpy', 'PIL') if name in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"superres --help imports {result.stdout.strip()}"
