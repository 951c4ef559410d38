"""Registry operations on a relops home (open the warehouse, read the workflow's policy)."""

from __future__ import annotations

import os
from typing import Any

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.registry.rollout import sync_pointer
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline.lib.workflows import WorkflowError, load_workflow


def sync_pointer_at_home(home: str | os.PathLike | Home | None, workflow: str) -> dict[str, Any]:
    """`sync_pointer` for a workflow of a home: re-deliver the state recorded in the home's
    warehouse with the workflow's configured deployer (the pointer file when the workflow has
    no file or no `rollout.deployer`)."""
    h = home if isinstance(home, Home) else Home.resolve(home)
    try:
        policy: Any = load_workflow(h.workflows_dir, workflow)
    except WorkflowError:
        policy = None
    with open_warehouse(h.warehouse_path) as con:
        return sync_pointer(con, h.registry_dir, workflow, policy=policy)
