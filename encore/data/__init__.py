"""The data an experiment edits and scores: data files, record schemas and edit requests.

* ``files``: the registered data files (local data directory or download) checked against their sha256.
* ``datasets``: ``EditRecord``, the loaders of CounterFact and zsRE, the authors' orderings, corpus and held-out texts.
* ``record_formats``: JSON records in the ROME, MEND and EasyEdit schemas, detected per file.
* ``requests``: the records of a data set (or of ``records_files``) in the authors' order, with their provenance.
"""
