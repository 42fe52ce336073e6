"""kill -9 at random moments of a short run loses nothing: the small version of experiments/kill9_trials.py."""

import json
import subprocess
import sys

from configs.settings import REPO_ROOT


def test_kill9_at_random_moments_loses_nothing():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "kill9_trials.py"), "--trials", "2",
                           "--iterations", "3", "--seed", "1"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["trials"] == 2 and report["lost_nothing"] == 2, report
    assert all(r["loads"] and r["resumed_equal"] for r in report["results"] if r["checkpoint_iteration"] is not None)
