"""sim.tools.run: the processor-time limit (what bounds nextpnr's runs whatever the load)."""
import subprocess
import sys

import pytest

from sim import tools


def test_a_tool_past_its_processor_time_limit_is_stopped_as_a_timeout():
    spin = tools.Tool("python", sys.executable)
    with pytest.raises(subprocess.TimeoutExpired):
        tools.run(spin, ["-c", "while True: pass"], cpu_limit_s=1)


def test_a_tool_within_its_limit_runs_and_a_sleeping_one_uses_none_of_it():
    py = tools.Tool("python", sys.executable)
    assert tools.run(py, ["-c", "print(sum(range(1000)))"], cpu_limit_s=5).strip() == "499500"
    # waiting is not processor time: a limit of 1 s lets a 2 s sleep finish
    assert tools.run(py, ["-c", "import time; time.sleep(2); print('woke')"],
                     cpu_limit_s=1).strip() == "woke"
