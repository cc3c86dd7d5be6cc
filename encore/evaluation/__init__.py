"""The evaluate rule: metric rows of one model state (CounterFact, zsRE, fluency, downstream tasks, analyses)."""
