"""Every e2e test tears down what it started, on any exit it can see (a pytest plugin: tests/e2e/conftest.py loads
it; `pytest -p stack_teardown` loads it elsewhere).

Each module's fixture tears its own stack down in a `finally`; this covers what that cannot:
  * SIGTERM / SIGHUP (a CI timeout, a closed terminal) become KeyboardInterrupt, so pytest still runs the
    fixtures' finalisers, as it does on Ctrl-C;
  * at the end of the session, every compose stack and image named with this process's pid
    (fl_deploy.harness.compose_stack.TEST_STACK) is removed, whatever a failed set-up left half made.
A SIGKILLed run leaves its stacks; scripts/test.sh removes those (their process is gone) before it starts.
"""

import os
import signal

import pytest

from fl_deploy.harness.compose_stack import remove_test_stacks


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _interrupt)


@pytest.fixture(scope="session", autouse=True)
def remove_this_runs_stacks():
    yield
    remove_test_stacks(pid=os.getpid())
