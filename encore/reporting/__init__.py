"""The report rule: tables and figures from collected results, the paper's numbers and claims, publishing a study."""
