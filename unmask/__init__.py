"""unmask: fast training-free decoding for masked diffusion LMs (LLaDA, Dream).

The package root re-exports nothing yet; the engine lives in generate.py, models in models/.
"""
