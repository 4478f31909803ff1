"""`wordy`: arith's chained word problems, each solved in a wording drawn at random per example.

The solution steps are arith's; how they are written is not. Each step draws a lead-in connective,
one of several equivalent forms of its equation (operand order, symbols or words, a verb), an
optional unit, and an optional restatement of the running total before or after the equation; the
answer may close on a summary sentence before its `#### N` line. So the model learns a
*distribution* over phrasings, and where a later token lands stays uncertain until the text
before it is written, as in real text: that uncertainty is what keeps real dLLMs close to
left-to-right order, and what adaptive thresholds, block sizes and partial refresh react to.

`variation` in [0, 1] is the chance that a choice is drawn from all its options rather than taking
the first (arith's own form): at 0 the reference is arith's reference exactly. Scoring is arith's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from unmask.tasks.synthetic import Arith, Chain, Problem, Step

Options = tuple[tuple[int, str], ...]  # (weight, template); the first is the plain form

FIRST_LEADS: Options = ((5, ""), (3, "First, "), (2, "To start, "))
LEADS: Options = ((4, ""), (2, "Then "), (2, "Next, "), (1, "Now "), (1, "After that, "))
ADD_FORMS: Options = (
    (45, "{v} + {a} = {r}"),
    (20, "{a} + {v} = {r}"),
    (20, "{v} plus {a} {is} {r}"),
    (15, "adding {a} to {v} {is} {r}"),
)
SUB_FORMS: Options = (
    (50, "{v} - {a} = {r}"),
    (30, "{v} minus {a} {is} {r}"),
    (20, "taking {a} from {v} leaves {r}"),
)
VERBS: Options = ((5, "is"), (3, "makes"), (2, "gives"))
UNITS: Options = ((7, ""), (3, " {item}"))
# Where the running total is restated: not at all, after the equation, or before it.
RESTATE_AT: Options = ((6, ""), (3, "after"), (1, "before"))
AFTER: Options = (
    (2, "{Who} has {r} {item} now."),
    (1, "{Who} now has {r}."),
    (1, "That {makes} {r}."),
)
BEFORE: Options = ((1, "{who} has {r} {item} now, since "), (1, "{who} now has {r}, since "))
WHO: Options = ((1, "pronoun"), (1, "name"))
CLOSES: Options = ((7, ""), (2, " The answer is {r}."), (1, " So {name} has {r} {item}."))


@dataclass(frozen=True)
class Wording:
    """Draws each choice: the plain form with probability 1 - variation, else any option."""

    rng: random.Random
    variation: float

    def pick(self, options: Options) -> str:
        if self.variation <= 0 or self.rng.random() >= self.variation:
            return options[0][1]
        weights = [w for w, _ in options]
        return self.rng.choices([t for _, t in options], weights)[0]


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


class Wordy(Arith):
    """Arith's problems, worded at random: "First, 12 plus 7 makes 19 apples. Then 19 - 5 = 14.
    He now has 14. ... The answer is 17.\\n#### 17" is one of many references to one question.

    `extract` is arith's: the number after the last "####" (commas dropped, "17.0" read as 17),
    None when the text has no "####" followed by a number; whatever else the text says, malformed
    or not, is ignored, so a garbled chain with the right final line scores.
    """

    name = "wordy"

    def __init__(
        self,
        n_ops: int = 4,
        max_operand: int = 20,
        ops: str = "+-",
        variation: float = 1.0,
        shots: int = 1,
        gen_len: int = 128,
        block_len: int = 32,
    ) -> None:
        super().__init__(
            n_ops=n_ops,
            max_operand=max_operand,
            ops=ops,
            shots=shots,
            gen_len=gen_len,
            block_len=block_len,
        )
        if not 0.0 <= variation <= 1.0:  # also refuses NaN
            raise ValueError(f"variation must be in [0, 1], got {variation}")
        self.variation = variation

    def _problem(self, rng: random.Random) -> Problem:
        chain = self._chain(rng)
        return Problem(chain.question, self.word(chain, rng), chain.answer)

    def word(self, chain: Chain, rng: random.Random) -> str:
        """One reference for `chain`, its wording drawn from `rng`."""
        w = Wording(rng, self.variation)
        sentences = [self._sentence(chain, step, k, w) for k, step in enumerate(chain.steps)]
        close = w.pick(CLOSES).format(r=chain.answer, name=chain.name, item=chain.item)
        return " ".join(sentences) + close + f"\n#### {chain.answer}"

    def _sentence(self, chain: Chain, step: Step, k: int, w: Wording) -> str:
        lead = w.pick(FIRST_LEADS if k == 0 else LEADS)
        form = w.pick(ADD_FORMS if step.op == "+" else SUB_FORMS)
        fields = {"v": step.value, "a": step.amount, "r": step.result, "item": chain.item}
        core = form.format(**fields, **{"is": w.pick(VERBS)}) + w.pick(UNITS).format(**fields)
        at = w.pick(RESTATE_AT)
        if not at:
            return _capitalised(lead + core) + "."
        who = chain.pronoun if w.pick(WHO) == "pronoun" else chain.name
        # Mid-sentence after a lead-in, a pronoun is lower-case: "Then he has 19 now, since ...".
        mid = who.lower() if lead and who == chain.pronoun else who
        restate = {**fields, "Who": who, "who": mid, "makes": w.pick(VERBS[1:])}
        if at == "before":
            return _capitalised(lead + w.pick(BEFORE).format(**restate)) + core + "."
        return _capitalised(lead + core) + ". " + w.pick(AFTER).format(**restate)
