"""lm-evaluation-harness adapter: the `unmask` model for `generate_until` tasks, and
`python -m unmask.lm_eval_adapter ARGS` = lm-eval's own CLI with that model registered.

No decoding logic here: requests go to `unmask.generate`; needs the `lmeval` extra installed.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from unmask.generate import generate
from unmask.models.load import load
from unmask.recipe import parse

eval_logger = logging.getLogger(__name__)
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default when a task sets no max_gen_toks


@register_model("unmask")
class UnmaskLM(LM):
    """`--model_args model=DIR_OR_NAME,recipe=SPEC[,device=cuda,gen_len=N,block_len=N]`.

    Prompts arrive already formatted (lm-eval applies the chat template itself when asked with
    --apply_chat_template, through `apply_chat_template` below), so they are decoded raw.
    Decoding follows the recipe: a task's temperature/do_sample is not applied over it. A
    recipe spec holding commas needs lm-eval's JSON form of --model_args.
    """

    def __init__(
        self,
        model: str = "tiny-llada",
        recipe: str = "vanilla",
        device: str | None = None,
        gen_len: int | None = None,
        block_len: int | None = None,
        batch_size: int | str | None = 1,
        **_ignored: Any,  # lm-eval passes max_batch_size and the like to every model
    ) -> None:
        super().__init__()
        import torch

        from unmask.dist import launched, rank_device, setup

        self.recipe = parse(str(recipe))
        if not device or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            # lm-eval's --device defaults to cuda whether or not the machine has one.
            if device:
                eval_logger.warning("unmask: no CUDA device here; running on cpu")
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # lm-eval's data parallelism (`accelerate launch -m lm_eval ...` or torchrun): lm-eval
        # splits the requests by rank and gathers through the hooks below.
        if launched() is not None:
            device = rank_device(str(device).split(":")[0])
        self._group = setup(str(device))
        if self._group is not None:
            self._rank, self._world_size = self._group.rank, self._group.size
        self._device = torch.device(device)
        self.lm = load(str(model), device=device)
        self._model_name = str(model)
        self.gen_len = int(gen_len) if gen_len is not None else None
        self.block_len = int(block_len) if block_len is not None else None
        # "auto" (lm-eval's memory probe) has no meaning here: one prompt at a time then.
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 1

    @property
    def device(self):
        return self._device

    def all_gather(self, tensor):
        if self.world_size <= 1:
            return tensor
        import torch
        import torch.distributed as dist

        parts = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    def gather_object(self, obj, dst=0):
        if self.world_size <= 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    @property
    def tokenizer_name(self) -> str:
        return self._model_name.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.lm.tokenizer.chat_template or ""

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.lm.tokenizer.apply_chat_template(
            chat_history, add_generation_prompt=add_generation_prompt
        )

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Batches of consecutive requests that share generation settings, answers in order."""
        results: list[str] = []
        batch: list[str] = []
        key: tuple | None = None
        for request in tqdm(requests, disable=disable_tqdm, desc="unmask"):
            context, gen_kwargs = request.args
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_gen = int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            this = (tuple(until), self.gen_len or max_gen)
            if batch and (this != key or len(batch) == self.batch_size):
                results += self._decode(batch, *key)
                batch = []
            key = this
            batch.append(context)
        if batch:
            results += self._decode(batch, *key)
        return results

    def _decode(self, contexts: list[str], until: tuple[str, ...], gen_len: int) -> list[str]:
        outs = generate(
            self.lm,
            contexts,
            self.recipe,
            gen_len=gen_len,
            block_len=self.block_len,
            chat=False,
            stop=list(until) or None,
        )
        return [o.text for o in outs]

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list:
        raise NotImplementedError(
            "unmask serves generate_until tasks only (a masked diffusion LM has no left-to-right "
            "likelihood to score choices with)"
        )

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list:
        return self.loglikelihood(requests, disable_tqdm)


def main() -> None:
    """lm-eval's CLI, with `--model unmask` available (lm-eval finds models only by import)."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm_eval"
    cli_evaluate()


if __name__ == "__main__":
    main()
