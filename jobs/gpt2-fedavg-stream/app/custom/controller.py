"""Server workflow: NVFlare's FedAvg, with rounds that end.

NVFlare's FedAvg sends each round's task with no timeout and waits for every sampled site. A site that dies
mid-round (container killed, host lost) comes back without the job, so the round, and the job, would wait forever.
Here each round waits at most ``round_timeout`` seconds for all sites, then aggregates what arrived if at least
``min_sites`` answered; with fewer, the job stops with a reason that names the silent sites.
"""

from nvflare.app_common.workflows.fedavg import FedAvg


class FedAvgWithDeadline(FedAvg):
    def __init__(self, *args, round_timeout: int = 0, min_sites: int = 1, **kwargs):
        """
        Args:
            round_timeout: seconds a round waits for the sites' results (0 = forever, NVFlare's behaviour).
            min_sites: fewest results a round may aggregate after the timeout; fewer stops the job.
        """
        super().__init__(*args, **kwargs)
        self.round_timeout = round_timeout
        self.min_sites = min_sites
        self._targets, self._answered = [], set()

    def send_model(self, task_name="train", data=None, targets=None, min_responses=None, timeout=0, callback=None):
        self._targets, self._answered = list(targets or []), set()
        super().send_model(task_name=task_name, data=data, targets=targets, min_responses=min_responses,
                           timeout=timeout or self.round_timeout, callback=callback)

    def _aggregate_one_result(self, result) -> bool:
        self._answered.add((result.meta or {}).get("client_name"))
        return super()._aggregate_one_result(result)

    def _get_aggregated_result(self):
        silent = sorted(set(self._targets) - self._answered)
        if silent:
            summary = (f"round {self.current_round + 1}: {self._received_count} of {len(self._targets)} sites "
                       f"answered within {self.round_timeout}s; no result from {', '.join(silent)}")
            if self._received_count < self.min_sites:
                reason = f"{summary} (min_sites={self.min_sites}): stopping the job"
                self.panic(reason)
                raise RuntimeError(reason)
            self.warning(f"{summary}; aggregating the others")
        return super()._get_aggregated_result()
