"""The one place where ``ray.remote(...)`` options are applied.

Every valux actor is *named*, *detached* (it outlives the process that created
it, so restarting the API never touches a position), lives in the configured
namespace, is restarted by Ray without limit when its process dies
(``max_restarts=-1``) and asks for zero CPUs, so a 2-core machine can host
many of them. On a cluster, ``placement`` pins kinds to the nodes that offer their
custom resources and spreads agent hosts; a restart after a node is lost lands on
another node that qualifies. Calls are not retried by Ray (``max_task_retries=0``): valux's
own ids make retries safe where they are needed.
"""

from __future__ import annotations

from typing import Any

import ray

from valux.actors.agent_host import AgentHost
from valux.actors.evaluator import StopLossEvaluator
from valux.actors.exchange import PaperExchangeHost
from valux.actors.price_feed import PriceFeed
from valux.config.settings import PlacementSettings

_CLASSES: dict[str, type] = {
    "agent": AgentHost,
    "evaluator": StopLossEvaluator,
    "exchange": PaperExchangeHost,
    "feed": PriceFeed,
}
_remote_cache: dict[str, Any] = {}


def remote_class(kind: str) -> Any:
    if kind not in _remote_cache:
        if kind == "supervisor":
            from valux.supervisors.supervisor import Supervisor

            cls: type = Supervisor
        elif kind == "root":
            from valux.supervisors.root import RootSupervisor

            cls = RootSupervisor
        else:
            cls = _CLASSES[kind]
        _remote_cache[kind] = ray.remote(cls)
    return _remote_cache[kind]


def spawn(kind: str, name: str, namespace: str, *args: Any, placement: PlacementSettings) -> Any:
    """Create the named actor, or return the running one of that name (re-adoption).

    ``placement``: the custom resources this kind asks for (only nodes offering them run
    it) and, for agent hosts, Ray's ``SPREAD`` strategy over the nodes that may."""
    options: dict[str, Any] = {}
    resources = placement.resources.get(kind)  # type: ignore[call-overload]
    if resources:
        options["resources"] = dict(resources)
    if kind == "agent" and placement.spread_agent_hosts:
        options["scheduling_strategy"] = "SPREAD"
    return (
        remote_class(kind)
        .options(
            name=name,
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            num_cpus=0,
            max_concurrency=1000,
            **options,
        )
        .remote(*args)
    )
