"""Makes plain `lm_eval --model unmask ...` work.

lm-eval 0.4 finds models only through its own import list (no entry points), so a model from
another package is unknown to its CLI. `python -m unmask.lm_eval_plugin install` writes a
one-line `.pth` file into this environment's site-packages; at interpreter start it imports this
module (which imports nothing heavy: no torch, no lm_eval) and installs an import hook. When
lm-eval's model list `lm_eval.models` is imported, the hook registers `unmask` there as a lazy
placeholder, so the adapter (and torch) load only when `--model unmask` is asked for.
`python -m unmask.lm_eval_plugin uninstall` removes the file. `make setup` installs it.
"""

from __future__ import annotations

import importlib.abc
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "unmask_lm_eval.pth"
# One line, run by `site` at start-up; does nothing once unmask is uninstalled.
PTH_LINE = (
    "import importlib.util as _u; "
    "_u.find_spec('unmask') and __import__('unmask.lm_eval_plugin').lm_eval_plugin.watch()\n"
)
MODEL_NAME = "unmask"
TARGET = "unmask.lm_eval_adapter:UnmaskLM"
WATCHED = "lm_eval.models"


def register() -> None:
    """Add `unmask` to lm-eval's model registry as a lazy "module:Class" placeholder."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)


class _Watcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of `lm_eval.models` to register after it."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib's signature
        if name != WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module) -> None:  # noqa: ANN001
            run(module)
            try:
                register()
            except Exception as err:  # never break lm-eval itself
                print(f"unmask: could not register with lm-eval: {err}", file=sys.stderr)

        loader.exec_module = exec_module
        return spec


def watch() -> None:
    """Install the hook (idempotent); registers at once if lm-eval's models are already in."""
    if WATCHED in sys.modules:
        register()
        return
    if not any(isinstance(f, _Watcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _Watcher())


def pth_path() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / PTH_NAME


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["install"], ["uninstall"], ["status"]):
        print("usage: python -m unmask.lm_eval_plugin install|uninstall|status", file=sys.stderr)
        return 2
    path = pth_path()
    if args == ["install"]:
        path.write_text(PTH_LINE)
        print(f"installed {path}: `lm_eval --model unmask` now works in this environment")
    elif args == ["uninstall"]:
        path.unlink(missing_ok=True)
        print(f"removed {path}")
    else:
        print(f"{path}: {'installed' if path.exists() else 'not installed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
