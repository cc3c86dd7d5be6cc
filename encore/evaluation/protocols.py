"""Protocol tags: the ``protocol`` column of every metric and record row says what was scored and how (docs/evaluation.md).

A tag is ``<family>/<facts or corpus>/<method>``. The evaluation builds tags only with the names below, and the
reports select rows only with them, so each tag is spelled once, here:

  counterfact/<subset>/nll-comparison   ES, PS, NS, S (percent), *_diff, p_new / p_true (algorithms.md §7.2)
  counterfact/<subset>/top1             ES_top1, PS_top1, NS_top1: every answer token is the argmax
  <dataset>/<subset>/greedy-exact-match ES_gen, PS_gen (percent), n_records: greedy output starts with target_new (§7.6)
  zsre/<subset>/token-top1              ES, PS, NS (percent, §7.3)
  generation/<subset>/top5-sampling-100-tokens  GE: weighted 2/3-gram entropy of sampled text, x100 (§7.2)
  table1/<subset>/known-true-facts      the unedited model's probability of the true facts it knows (Table 1)
  downstream/generate-3-tokens/weighted-f1-invalid-wrong, downstream/label-loglik   the six tasks (§8)
  perplexity/<corpus>/tokens<N>/window<W>  perplexity, nll_per_token on held-out text (perplexity.py)
  analysis/down-proj-frobenius/all-layers, analysis/activation-norm-share/<prompts>   norms and shares (§9)
  timing                                the evaluation's own seconds

Subsets: ``edited-so-far`` (every fact edited up to the snapshot), ``authors-20pct`` (the reference's seeded 20% of
them), ``to-be-edited`` (the unedited model on the facts the run will edit).
"""

from __future__ import annotations

EDITED_SO_FAR, AUTHORS_SUBSET, TO_BE_EDITED = "edited-so-far", "authors-20pct", "to-be-edited"

DOWNSTREAM_GENERATE = "downstream/generate-3-tokens/weighted-f1-invalid-wrong"  # the paper's protocol
DOWNSTREAM_LOGLIK = "downstream/label-loglik"  # ours: the label with the highest log-likelihood
DOWNSTREAM = "downstream/"  # the prefix of both
NORMS = "analysis/down-proj-frobenius/all-layers"
TIMING = "timing"

# The editing scores ES, PS, NS (CounterFact's probability comparison; zsRE's token accuracy), as patterns
EDITING_METHOD = r"(?:nll-comparison|token-top1)$"
EDITING_EVERY_FACT = rf"^(?:counterfact|zsre)/(?:{EDITED_SO_FAR}|{TO_BE_EDITED})/{EDITING_METHOD}"
EDITING_SAMPLED = rf"^(?:counterfact|zsre)/{AUTHORS_SUBSET}/{EDITING_METHOD}"
EDITING_SNAPSHOT = rf"^(?:counterfact|zsre)/(?:{EDITED_SO_FAR}|{AUTHORS_SUBSET})/{EDITING_METHOD}"
EDITING_FAMILIES = ("counterfact/", "zsre/")


def counterfact(subset: str) -> str:
    return f"counterfact/{subset}/nll-comparison"


def counterfact_top1(subset: str) -> str:
    return f"counterfact/{subset}/top1"


def zsre(subset: str) -> str:
    return f"zsre/{subset}/token-top1"


def generation_efficacy(dataset: str, subset: str) -> str:
    return f"{dataset}/{subset}/greedy-exact-match"


def generation(subset: str) -> str:
    return f"generation/{subset}/top5-sampling-100-tokens"


def known_facts(subset: str) -> str:
    return f"table1/{subset}/known-true-facts"


def perplexity(corpus: str, tokens: int, window: int) -> str:
    return f"perplexity/{corpus}/tokens{tokens}/window{window}"


def activation_shares(prompts: str) -> str:
    return f"analysis/activation-norm-share/{prompts}"
