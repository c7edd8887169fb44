"""The benchmark's --quick mode runs end to end and reports sane numbers (no timing assertions)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER_ROWS = {"answer", "make_grid", "payload"}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("bench") / "tmp.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    # The timeout only guards against a hang; nothing here checks how fast anything is.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_quick_run_prints_the_table_and_every_target(quick):
    stdout, data = quick
    assert "resnet18 @ 128 px" in stdout and "targets" in stdout
    assert data["meta"]["quick"] is True and data["meta"]["repeats"] == 1
    names = {t["target"] for t in data["targets"]}
    assert {"first_view_vs_forward", "codes_per_tile_pixel", "kept_vs_float32"} <= names
    for t in data["targets"]:
        assert isinstance(t["pass"], bool) and math.isfinite(t["measured"])
        status = "PASS" if t["pass"] else "MISS"
        assert re.search(rf"{status}\s+{t['target']}\s+{re.escape(t['case'])}", stdout), t


def test_quick_run_has_every_row_with_sane_numbers(quick):
    _, data = quick
    (case,) = data["cases"]
    assert (case["model"], case["size"]) == ("resnet18", 128)
    rows = case["rows"]
    assert {r["row"] for r in rows if "channels" not in r} == {"forward", "first_view", "export"}
    for want in (64, 256, 2048):
        mine = {r["row"] for r in rows if r.get("channels") == want}
        assert LAYER_ROWS <= mine, (want, mine)
    assert any(r["row"] == "matplotlib" and r["channels"] == 64 for r in rows)
    for r in rows:
        assert r["runs"] and all(_positive(v) for v in r["runs"]), r
        assert _positive(r["median"]), r
        for key in ("ratio_forward", "speedup", "codes_per_pixel"):
            if key in r:
                assert _positive(r[key]), r
    # resnet18's conv1 at 128 px is 64x64x64: the whole layer is one grid, one byte per tile pixel
    first = next(r for r in rows if r["row"] == "answer" and r["channels"] == 64)
    assert first["shape"] == [64, 64, 64] and first["tiles"] == 64
    pay = next(r for r in rows if r["row"] == "payload" and r["channels"] == 64)
    assert pay["codes"] == 64 * 64 * 64 and pay["codes_per_pixel"] == 1.0
    # base64 makes 4 bytes of 3; the ranges and field names add a little
    assert 4 / 3 * pay["codes"] < pay["median"] < 4 / 3 * pay["codes"] + 8000
    export = next(r for r in rows if r["row"] == "export")
    assert export["file_bytes"] > 4 / 3 * export["codes_bytes"] > 0


def test_quick_run_measures_memory(quick):
    _, data = quick
    mem = data["cases"][0]["memory"]
    for key in ("forward_peak", "explorer_peak", "model_rss", "kept_bytes", "float32_bytes"):
        assert _positive(mem[key]), (key, mem)
    assert mem["over_forward"] == mem["explorer_peak"] - mem["forward_peak"]
    # uint8 codes are a quarter of the float32 size; per-channel ranges add a little on top
    assert 0.25 <= mem["kept_ratio"] < 0.3
