"""The fraud-detection project. Stores and engine come from the profile in mlforge.yaml:

- `local` (the default): LocalStore + PySpark on this machine;
- `databricks-dev` / `databricks-prod`: Unity Catalog (+ Online Tables in prod) on the
  workspace's Spark (the `databricks` extra: `pip install -e '../..[databricks]'` from
  this folder of the mlforge repository).
"""

import features

import mlforge as mlf

defs = mlf.Definitions(name="fraud-detection", features=[features])
