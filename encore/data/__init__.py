"""The data an experiment edits and scores: data files, record schemas and edit requests.

* ``datasets``: the registered data files (local data directory or download, checksummed), the loaders of
  CounterFact, zsRE, WikiText-2 and the downstream tasks, and ``EditRecord``.
* ``record_formats``: JSON records in the ROME, MEND and EasyEdit schemas, detected per file.
* ``requests``: the records of a data set (or of ``records_files``) in the authors' order, with their provenance.
"""
