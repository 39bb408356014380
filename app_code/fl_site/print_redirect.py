"""Keep print()'s own destinations while NVFlare sends the client script's prints to the job log.

NVFlare's in-process client runs client.py under TaskScriptRunner, which replaces builtins.print with a function
that logs ``" ".join(args)`` as "TaskScriptRunner - INFO - ..." and ignores print's ``file=`` argument and any
redirection of sys.stdout (nvflare/app_common/executors/task_script_runner.py, ``log_print``). Code that prints
into a buffer then gets nothing back, and the buffer's content lands in the site's job log instead. One such
caller runs whenever TRL's SFTTrainer prepares a dataset: `datasets` hashes the tokenising function with dill,
whose ``dill.detect.nestedglobals`` prints ``dis.dis(func)`` into a captured sys.stdout to find the globals the
function uses. The job log got 200-370 lines of bytecode (``LOAD_FAST`` ...) per site, and dill found no globals.

``keep_print_destinations()`` wraps NVFlare's print once more: a print to the process's stdout as it was when
installed (no ``file=``, stdout not redirected) still goes to the job log; every other print goes where it was
addressed, through the real built-in print.
"""

import builtins
import sys


def _builtin_print():
    """The interpreter's own print: NVFlare keeps it as task_script_runner.print_fn when it replaces it."""
    runner = sys.modules.get("nvflare.app_common.executors.task_script_runner")
    return getattr(runner, "print_fn", None) or builtins.print


def keep_print_destinations():
    """Wrap whatever builtins.print is now (NVFlare's redirect, or the built-in itself). Idempotent."""
    current = builtins.print
    if getattr(current, "keeps_destinations", False):
        return
    real_print, job_stdout = _builtin_print(), sys.stdout

    def print_(*args, file=None, **kwargs):
        if (file is None or file is job_stdout) and sys.stdout is job_stdout:
            return current(*args, **kwargs)
        return real_print(*args, file=file, **kwargs)

    print_.keeps_destinations = True
    builtins.print = print_
