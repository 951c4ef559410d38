"""`relops demo`: generate the demo world and run its story through Dagster (the story itself
is relops_pipeline/demo/story.py)."""

from __future__ import annotations


def cmd_demo(args) -> dict:
    from relops_pipeline.demo.story import run_story

    result = run_story(args.home, seed=args.seed, scale=args.scale)
    return {**result.data, "_text": result.text}


def register(add) -> None:
    """Register demo on the `relops` parser."""
    p = add("demo", cmd_demo, "generate the demo world and run the story through Dagster")
    p.add_argument("--scale", type=float, default=1.0, help="volume multiplier (10 = millions of spans)")
    p.add_argument("--seed", type=int, default=7)
