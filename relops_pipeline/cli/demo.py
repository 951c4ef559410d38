"""`relops demo`: generate the demo world and run its story through Dagster (the story itself
is relops_pipeline/demo/story.py)."""

from __future__ import annotations

from relops_pipeline.cli.common import CommandResult, Commands, positive_float


def cmd_demo(args) -> CommandResult:
    from relops_pipeline.demo.story import run_story

    result = run_story(args.home, seed=args.seed, scale=args.scale)
    return CommandResult(result.data, result.text)


def register(add: Commands) -> None:
    """Register demo on the `relops` parser."""
    p = add("demo", cmd_demo, "generate the demo world and run the story through Dagster")
    p.add_argument("--scale", type=positive_float, default=1.0, help="volume multiplier (10 = millions of spans)")
    p.add_argument("--seed", type=int, default=7)
