"""The paper's claims beside what a study measured, from its collected CSVs alone (docs/results/<study>/results.md).

Each claim is a rule fixed before the runs it judges: the paper's sentence and its table or figure, the
quantity compared, a threshold labelled as the paper's number or ours, the edit count it is judged at beside
the paper's, and an outcome, one of "reproduced", "not reproduced", "inconclusive" (the 95% bootstrap interval
straddles the threshold), "not testable at this scale" (a measured precondition fails), "not run" (a run it
needs is absent) and "no data: <what>" (the runs exist, the data to judge them were not published, and the
published aggregates leave the answer open).
Modules: ``base`` (the Claim row, ``StudyResults``: a study's collected CSVs, and the pairing of facts across
runs at the same edit count), the rules in ``editing`` (scores), ``norms`` (norms, shares, steps) and ``general``
(downstream, perplexity, fluency, zsRE), the bootstrap intervals and outcomes in ``intervals``, and ``results``
(every rule applied to a study, written as results.md with its CSVs).
"""
