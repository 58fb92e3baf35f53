"""Assembles the code location: `assets_defs.definitions:defs`. Nothing else happens here."""

from __future__ import annotations

import dagster as dg

from assets_defs import nerf, rag, rag_answer, recsys, reports, runs, schedules
from assets_defs.resources import resources_for

DOMAINS = {
    "rag": [rag, rag_answer],
    "recsys": [recsys],
    "nerf": [nerf],
    "reports": [reports],
}

defs = dg.Definitions(
    assets=[
        asset
        for group, modules in DOMAINS.items()
        for asset in dg.load_assets_from_modules(modules, group_name=group)
    ],
    asset_checks=dg.load_asset_checks_from_modules(
        [module for modules in DOMAINS.values() for module in modules]
    ),
    jobs=schedules.JOBS,
    schedules=schedules.SCHEDULES,
    sensors=schedules.SENSORS,
    resources=resources_for(),
    # Every run first clears runs whose process died, so their pool slots do not block it.
    executor=runs.multiprocess,
)
