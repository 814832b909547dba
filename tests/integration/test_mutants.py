"""Mutation check: chosen learning and report tests FAIL when lnl is broken on purpose (`helpers.mutants`).

Each mutant runs its subset in a fresh pytest subprocess with `LNL_MUTANT` set; every listed test must fail (a
test that still passes under a mutant cannot see what the mutant breaks). The same tests pass unmutated in the
rest of the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers.paths import ROOT

SUBSETS = {
    "no_optim_step": [  # nothing learns: the step oracles, the "it moved" guards and the accuracy floors fail
        "tests/unit/methods/test_mlc.py::test_one_step_is_the_official_meta_step_written_out[jvp]",
        "tests/unit/methods/test_emlc.py::test_jvp_equals_unrolled_through_the_method[plain]",
        "tests/unit/methods/test_l2rw.py::test_jvp_equals_unrolled_through_the_method[sgd]",
        "tests/unit/methods/test_mwnet.py::test_jvp_equals_unrolled_through_the_method[sgd]",
        "tests/integration/test_cli.py::test_quickstart_writes_config_labels_results_and_checkpoints",
    ],
    "noise_score": [  # the issue score knows nothing: the AUROC floor and the report columns' meaning fail
        "tests/integration/report/test_report_run.py::test_corrected_labels_train_back_and_lnl_report_reproduces_the_fit",
    ],
}


def outcomes(junit: Path) -> dict[str, str]:
    """`path::name` → passed / failed / skipped / error from a pytest JUnit XML report."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        result[f"{path}::{case.get('name')}"] = (
            {"failure": "failed"}.get(kinds[0], kinds[0]) if kinds else "passed"
        )
    return result


@pytest.mark.slow
@pytest.mark.parametrize("mutant", list(SUBSETS))
def test_learning_and_report_tests_fail_under_a_mutant(mutant: str, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    env = os.environ | {"LNL_MUTANT": mutant, "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *SUBSETS[mutant],
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seen = outcomes(junit)
    assert len(seen) == len(SUBSETS[mutant]), proc.stdout[-3000:]
    survivors = [name for name, outcome in seen.items() if outcome != "failed"]
    assert not survivors, f"{mutant}: these tests did not fail: {survivors}\n{proc.stdout[-3000:]}"
    assert proc.returncode == 1
