"""skydag's CDK app: the reusable ``Skydag`` construct and the ``SkydagStack`` around it."""

from skydag_infra.construct import Skydag
from skydag_infra.permissions import DispatchTargets
from skydag_infra.stack import SkydagStack

__all__ = ["DispatchTargets", "Skydag", "SkydagStack"]
