"""The demo world, apart from the product: its production traces (traces.py), the simulated
LLM its evals call (llm.py) and the story `relops demo` tells (story.py). The product (lib/)
never imports this package; the demo uses lib/."""
