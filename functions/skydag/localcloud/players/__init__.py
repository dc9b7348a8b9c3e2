"""The service players: one per AWS service skydag dispatches to (see ``base``)."""

from __future__ import annotations

from skydag.localcloud.players.base import ServicePlayer


def all_players() -> list[ServicePlayer]:
    """A fresh player for every service kind (imported here: each patches moto)."""
    from skydag.localcloud.players.batch import BatchPlayer
    from skydag.localcloud.players.ecs import EcsPlayer
    from skydag.localcloud.players.emr import EmrPlayer
    from skydag.localcloud.players.emr_serverless import EmrServerlessPlayer
    from skydag.localcloud.players.lambda_ import LambdaPlayer
    from skydag.localcloud.players.stepfunctions import StepFunctionsPlayer

    return [
        BatchPlayer(),
        EmrPlayer(),
        EmrServerlessPlayer(),
        StepFunctionsPlayer(),
        LambdaPlayer(),
        EcsPlayer(),
    ]
