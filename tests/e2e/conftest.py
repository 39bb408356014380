"""The e2e tests tear down what they start on any exit they can see: tests/e2e/stack_teardown.py."""

from stack_teardown import remove_this_runs_stacks  # noqa: F401  (autouse, session scope)
