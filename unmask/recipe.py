"""Recipe = one policy per role + gen_len, temperature, seed; spec strings and named presets.

A recipe spec is a preset name and/or `role=policy-spec` items joined by `+`, e.g.
`vanilla`, `fast-dllm+unmask=threshold:tau=0.7`, `blocks=fixed:len=16+refresh=none+...`.
An item naming the policy a role already has changes only the parameters it gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unmask.policies import blocks, refresh, scoring, unmasking
from unmask.policies.base import Policy, SpecError, build, fmt_float, fresh

ROLES = {
    "blocks": blocks.REGISTRY,
    "refresh": refresh.REGISTRY,
    "scorer": scoring.REGISTRY,
    "unmask": unmasking.REGISTRY,
}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


_bool.__name__ = "true/false"
SCALARS = {"gen_len": int, "temperature": float, "seed": int, "eos_exit": _bool}

# Each preset reproduces one method of the field with its authors' defaults (METHODS.md).
PRESETS: dict[str, str] = {
    "vanilla": "blocks=fixed+refresh=none+scorer=maxprob+unmask=quota",
    # Fast-dLLM (Wu et al. 2025): block 32, threshold 0.9 or factor 1.0; dual cache by default.
    "fast-dllm": "blocks=fixed:len=32+refresh=dual+scorer=maxprob+unmask=threshold:tau=0.9",
    "fast-dllm-prefix": "fast-dllm+refresh=prefix",
    "fast-dllm-factor": "fast-dllm+unmask=factor:factor=1.0",
    # dKV-Cache-Decode (Ma et al. 2025): LLaDA low-confidence decoding, refresh every 8 steps.
    "dkv-cache": "vanilla+refresh=dkv:interval=8",
    # Its Dream setting (dream_generate.py --decode --cache-steps 4): refresh every 4 steps.
    "dkv-cache-dream": "vanilla+refresh=dkv:interval=4",
    # dLLM-Cache (Liu et al. 2025), LLaDA-8B-Instruct GSM8K script: block 8, Kp 50, Kr 7, rho 0.25.
    # Layer 0 always recomputed, as the authors' current code does.
    "dllm-cache": "vanilla+blocks=fixed:len=8+refresh=dllm-cache:kp=50,kr=7,rho=0.25,"
    "layer0_full=true",
    # Dynamic-dLLM (Wu et al. 2026), paper form: block 32, DCU budget = window = max(32, gen_len/8),
    # x proxy, proportional layer budgets; APD tau 0.9, alpha 0.001, beta 0.0008 per token.
    # Layer 0 is recomputed in full every step (METHODS 3.6), V of every response row is fresh.
    "dynamic-dllm": "vanilla+blocks=fixed:len=32+refresh=dcu:layer0_full=true+unmask=apd",
    "dynamic-dllm-dcu": "vanilla+blocks=fixed:len=32+refresh=dcu:layer0_full=true",
    # The released code's settings: block 8, fixed schedule, V proxy, uniform budgets of 32,
    # window 32, layer 0 always recomputed, prompt/response refresh intervals 5000 (never).
    "dynamic-dllm-code": "vanilla+blocks=fixed:len=8+refresh=dcu:budget=32,window=32,proxy=v,"
    "alloc=uniform,layer0_full=true,prompt_interval=5000,gen_interval=5000",
    # CadLLM (Shen et al. 2026), released LLaDA GSM8K script: B 24 in [4, 64], S 24..90, top-V
    # confidence, tau sawtooth 0.85 -> 0.40, over Fast-dLLM's dual cache.
    "cadllm": "vanilla+blocks=cadllm:init_len=24,min_len=4,max_len=64,init_steps=24,max_steps=90"
    "+refresh=dual+scorer=topv+unmask=cadllm",
    # The released Dream scripts: B 24 (the scripts' 16 is never forwarded) in [8, 48], S 24..70.
    "cadllm-dream": "cadllm+blocks=cadllm:init_len=24,min_len=8,max_len=48,init_steps=24,"
    "max_steps=70",
    # The paper's leave-one-out ablation: each controller off alone.
    "cadllm-no-block": "cadllm+blocks=cadllm:adaptive_len=false",
    "cadllm-no-steps": "cadllm+blocks=cadllm:adaptive_steps=false",
    "cadllm-no-vocab": "cadllm+scorer=topv:adaptive=false",
    "cadllm-no-threshold": "cadllm+unmask=quota",
}


@dataclass
class Recipe:
    name: str
    blocks: blocks.BlockSchedule = field(default_factory=blocks.FixedBlocks)
    refresh: refresh.RefreshPolicy = field(default_factory=refresh.NoCache)
    scorer: scoring.Scorer = field(default_factory=scoring.MaxProb)
    unmask: unmasking.UnmaskRule = field(default_factory=unmasking.Quota)
    gen_len: int | None = None  # None: the caller's default (a task's, or 64)
    temperature: float = 0.0
    seed: int = 0
    # Stop a row once everything before its first revealed EOS/EOT is revealed (fill with EOS).
    eos_exit: bool = False

    @property
    def policies(self) -> list[Policy]:
        return [self.blocks, self.refresh, self.scorer, self.unmask]

    @property
    def spec(self) -> str:
        """The fully expanded spec: building it again gives the same recipe."""
        items = [f"{p.role}={p.spec}" for p in self.policies]
        if self.gen_len is not None:
            items.append(f"gen_len={self.gen_len}")
        items += [f"temperature={fmt_float(self.temperature)}", f"seed={self.seed}"]
        if self.eos_exit:
            items.append("eos_exit=true")
        return "+".join(items)

    def fresh(self) -> Recipe:
        """Same hyperparameters, clean per-request policy state."""
        return Recipe(
            self.name,
            *(fresh(p) for p in self.policies),
            gen_len=self.gen_len,
            temperature=self.temperature,
            seed=self.seed,
            eos_exit=self.eos_exit,
        )


def parse(spec: str) -> Recipe:
    """Build a recipe from a preset name and/or `key=value` items joined by `+`."""
    spec = spec.strip()
    if not spec:
        raise SpecError("empty recipe spec")
    items = [s.strip() for s in spec.split("+")]
    if "=" in items[0]:
        recipe = Recipe(spec)
    else:
        if items[0] not in PRESETS:
            raise SpecError(f"unknown recipe {items[0]!r}; presets: {', '.join(PRESETS)}")
        recipe = parse(PRESETS[items[0]])  # a preset may build on another one
        recipe.name = spec  # the preset name, or what the user wrote with overrides
        items = items[1:]
    given: set[str] = set()
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise SpecError(f"recipe item {item!r} is not key=value (a preset comes first only)")
        if key in given:
            raise SpecError(f"recipe key {key!r} is given twice")
        given.add(key)
        if key in ROLES:
            setattr(recipe, key, build(ROLES[key], key, value, base=getattr(recipe, key)))
        elif key in SCALARS:
            try:
                setattr(recipe, key, SCALARS[key](value))
            except ValueError:
                raise SpecError(f"{key}={value!r} is not a valid {SCALARS[key].__name__}") from None
        else:
            raise SpecError(f"unknown recipe key {key!r}; keys: {', '.join([*ROLES, *SCALARS])}")
    if recipe.gen_len is not None and recipe.gen_len <= 0:
        raise SpecError(f"gen_len must be > 0, got {recipe.gen_len}")
    if not 0 <= recipe.temperature < float("inf"):  # NaN and inf too
        raise SpecError(f"temperature must be >= 0, got {recipe.temperature}")
    if not 0 <= recipe.seed < 2**63:
        raise SpecError(f"seed must be in [0, 2^63 - 1], got {recipe.seed}")
    return recipe


def split_specs(text: str) -> list[str]:
    """A comma-separated list of recipe specs, where a comma that continues a policy's
    parameters (`dcu:budget=16,window=8`) stays inside its spec."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        first = piece.split("+", 1)[0]
        key = first.split("=", 1)[0].strip() if "=" in first else None
        starts_recipe = key is None or key in ROLES or key in SCALARS
        if specs and not starts_recipe:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs
