"""The test and benchmark harness: a federation as local processes, an isolated compose stack, the slow fault
cases (scripts/check_slow_cases.py). Not used by the deployment itself."""
